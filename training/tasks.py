"""Classification tasks over subsets of CIFAR-10's classes: the tasks a zoo spans.

A :class:`Task` is a set of ``k`` of the ten classes; a model for it has ``k`` outputs, in
the order of the task's classes. Every ``k``-way task is one of ``C(10, k)`` (252 five-way
tasks), so an unseen task is as well defined as a seen one, and its :meth:`Task.descriptor`
(which classes it holds, as a ten-dimensional 0/1 vector) is what a generator is
conditioned on. :func:`held_out_tasks` fixes the evaluation tasks, which no zoo may train
on; :func:`training_tasks` are all the others.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import torch

from hyperinit.generator import class_indices

from .data import CIFAR10_CLASSES

HELD_OUT_PER_WAY = 12  # held-out tasks of each size k
HELD_OUT_SEED = "cifar10-tasks-held-out"


@dataclass(frozen=True, order=True)
class Task:
    """``k`` distinct CIFAR-10 class indices, sorted: a ``k``-way classification task."""

    classes: tuple[int, ...]

    def __post_init__(self) -> None:
        classes = tuple(self.classes)
        if (len(classes) < 2 or len(set(classes)) != len(classes)
                or any(not 0 <= c < len(CIFAR10_CLASSES) for c in classes)):
            raise ValueError(f"a task needs 2 to {len(CIFAR10_CLASSES)} distinct class "
                             f"indices in 0..{len(CIFAR10_CLASSES) - 1}, got {classes}")
        object.__setattr__(self, "classes", tuple(sorted(classes)))

    @classmethod
    def parse(cls, text: str) -> Task:
        """A task from its :attr:`name` or a comma-separated list of class names or indices
        (``"cifar10-0-3-5"``, ``"airplane,cat,dog"``, ``"0,3,5"``)."""
        return cls(tuple(class_indices(text.removeprefix("cifar10-"), CIFAR10_CLASSES)))

    @property
    def name(self) -> str:
        """``"cifar10-<i>-<j>-..."``, which :meth:`parse` reads back."""
        return "cifar10-" + "-".join(map(str, self.classes))

    @property
    def ways(self) -> int:
        return len(self.classes)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(CIFAR10_CLASSES[c] for c in self.classes)

    def descriptor(self) -> torch.Tensor:
        """Which of the ten classes the task holds: a float 0/1 vector of length 10."""
        out = torch.zeros(len(CIFAR10_CLASSES))
        out[list(self.classes)] = 1.0
        return out

    def select(self, images: torch.Tensor, labels: torch.Tensor,
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """The task's examples of a CIFAR-10 split, labels renumbered ``0..k-1`` in the order
        of :attr:`classes`, on the device of ``labels``."""
        lookup = torch.full((len(CIFAR10_CLASSES),), -1, dtype=torch.long, device=labels.device)
        lookup[list(self.classes)] = torch.arange(self.ways, device=labels.device)
        mapped = lookup[labels.long()]
        keep = mapped >= 0
        return images[keep], mapped[keep]


EVERY_CLASS = Task(tuple(range(len(CIFAR10_CLASSES))))  # the ten-way task: all of CIFAR-10


def all_tasks(ways: int) -> list[Task]:
    """Every ``ways``-way task, in lexicographic order of their classes."""
    if not 2 <= ways <= len(CIFAR10_CLASSES):
        raise ValueError(f"ways must be 2 to {len(CIFAR10_CLASSES)}, got {ways}")
    return [Task(c) for c in itertools.combinations(range(len(CIFAR10_CLASSES)), ways)]


def held_out_tasks(ways: int) -> list[Task]:
    """The fixed evaluation tasks of size ``ways`` (a seeded draw, the same everywhere);
    none where there are too few tasks to spare any (``ways`` 9 and 10)."""
    tasks = all_tasks(ways)
    if len(tasks) <= 2 * HELD_OUT_PER_WAY:
        return []
    return sorted(random.Random(f"{HELD_OUT_SEED}-{ways}").sample(tasks, HELD_OUT_PER_WAY))


def training_tasks(ways: int) -> list[Task]:
    """Every ``ways``-way task that is not held out."""
    held = set(held_out_tasks(ways))
    return [t for t in all_tasks(ways) if t not in held]
