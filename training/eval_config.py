"""What ``hyperinit eval`` evaluates: the held-out architectures, init arms and seeds, on top
of the training recipe (:class:`training.recipe.RecipeConfig`)."""

from __future__ import annotations

from dataclasses import dataclass

from .config import as_tuple
from .recipe import RecipeConfig

ARMS = ("predicted", "default", "orthogonal", "mimetic")


@dataclass
class EvalConfig(RecipeConfig):
    """What to evaluate, and the recipe (:class:`training.recipe.RecipeConfig`) to train it
    with. ``None`` recipe options take the task's default.

    Lists can be given as JSON (``ks=[0,50]``) or comma-separated (``arms=default,predicted``).
    """

    generator: str | None = None  # checkpoint folder or shipped name; None: hyperinit's default
    out: str = "runs/eval"
    archs: tuple[str, ...] | None = None  # held-out names; None: all of held_out(task)
    max_archs: int | None = None  # keep only the first N of them
    arms: tuple[str, ...] = ARMS
    seeds: tuple[int, ...] = (0, 1, 2)
    noise: float | None = None  # the predicted arm's hyperinit.predict noise; None: the generator's

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.archs is not None:
            self.archs = as_tuple(self.archs)
        self.arms = as_tuple(self.arms)
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or not self.arms:
            raise ValueError(f"unknown arm(s) {unknown}: arms are {', '.join(ARMS)}")
        self.seeds = as_tuple(int(s) for s in as_tuple(self.seeds))
        if not self.seeds:
            raise ValueError(f"need at least one seed, got seeds={self.seeds}")
        if self.max_archs is not None and self.max_archs < 1:
            raise ValueError(f"max_archs must be at least 1, got {self.max_archs}")
