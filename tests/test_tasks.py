"""CIFAR-10 class-subset tasks: enumeration, the fixed held-out split, parsing, selection."""

import pytest
import torch

from training.data import CIFAR10_CLASSES, load_cifar10
from training.tasks import Task, all_tasks, held_out_tasks, training_tasks


def test_five_way_tasks_split_into_fixed_held_out_and_training():
    tasks = all_tasks(5)
    assert len(tasks) == 252 and len(set(tasks)) == 252
    held, train = held_out_tasks(5), training_tasks(5)
    assert len(held) == 12 and len(train) == 240
    assert not set(held) & set(train)
    assert held == held_out_tasks(5)  # the same draw every time
    assert held != held_out_tasks(4)[:12]


def test_too_few_tasks_hold_none_out():
    assert held_out_tasks(9) == [] and len(training_tasks(9)) == 10


@pytest.mark.parametrize("text", ["cifar10-0-3-5", "airplane,cat,dog", "5,3,0", "dog, cat,0"])
def test_parse_reads_names_indices_and_its_own_name(text):
    task = Task.parse(text)
    assert task.classes == (0, 3, 5)
    assert Task.parse(task.name) == task
    assert task.class_names == ("airplane", "cat", "dog")


@pytest.mark.parametrize("text, message", [("cat,cat", "distinct"), ("cat", "2 to 10"),
                                           ("cat,lion", "unknown class 'lion'"),
                                           ("0,10", "unknown class '10'.*indices 0-9")])
def test_bad_tasks_are_refused_with_what_is_accepted(text, message):
    with pytest.raises(ValueError, match=message):
        Task.parse(text)


def test_descriptor_marks_the_task_classes():
    d = Task((1, 4, 9)).descriptor()
    assert d.shape == (len(CIFAR10_CLASSES),)
    assert d.nonzero().flatten().tolist() == [1, 4, 9] and d.sum() == 3


def test_select_keeps_the_task_classes_renumbered(shared_data):
    images, labels = load_cifar10(shared_data / "cifar10-jpg.zip", "test")
    task = Task.parse("truck,cat,airplane")  # classes 0, 3, 9
    x, y = task.select(images, labels)
    for new, old in enumerate(task.classes):
        assert (y == new).sum() == (labels == old).sum() > 0
    assert len(x) == len(y) == sum(int((labels == c).sum()) for c in task.classes)
    assert torch.equal(x[y == 2][0], images[labels == 9][0])  # order kept within a class
