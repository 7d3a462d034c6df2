"""Shared command-line arguments that name an architecture."""

from __future__ import annotations

import argparse
import json


def add_arch_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("arch", help="architecture spec: torchvision:NAME, hf:MODEL_TYPE, timm:NAME, "
                                "or python:package.module:Class")
    p.add_argument("--num-classes", type=int, help="classifier size (num_labels for hf)")
    p.add_argument("--config", type=json_object, default={}, metavar="JSON",
                   help="constructor keyword arguments or transformers config overrides, as JSON")


def add_init_options(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Options of every command that predicts an init: generator, seed, noise, dtype, task,
    sharding."""
    p.add_argument("--generator", help="generator that predicts the init: shipped name, "
                                       "checkpoint folder or hub:OWNER/NAME@REVISION "
                                       "(default: the first shipped ghn-*)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the init's randomness (default 0): the noise, and a diffusion "
                        "generator's sampling; other seeds give other, equally good inits")
    p.add_argument("--noise", type=float, default=None, metavar="FRACTION",
                   help="fraction of each weight's variance replaced by Gaussian noise, 0 to 1 "
                        "(0: the prediction itself; default: the generator's own, see its card)")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"),
                   help="dtype of floating-point tensors (default: the model's)")
    p.add_argument("--task", type=task_argument, metavar="TASK",
                   help="the task the init is for, for a generator conditioned on tasks (a "
                        f"weight-diffusion model trained on a zoo over tasks): {TASK_FORMS} "
                        "(default: no task)")
    p.add_argument("--max-shard-size", type=int, default=None, metavar="BYTES",
                   help="shard a folder output above this many bytes (default 5 GB)")


TASK_FORMS = ("a task name (cifar10-3-5-8), CIFAR-10 class names (cat,dog,ship) or class "
              "indices 0-9 (3,5,8)")


def task_argument(text: str):
    """An argparse type: ``text`` read by ``training.tasks.Task.parse``, else a usage error
    saying what was wrong and which forms are accepted."""
    from training.tasks import Task  # only when --task is given: it imports torch

    try:
        return Task.parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{err}; a task is {TASK_FORMS}") from err


def task_note(args: argparse.Namespace) -> str:
    """``", task NAME"`` for a command's report line when ``--task`` was given, else ``""``."""
    return f", task {args.task.name}" if args.task is not None else ""


def json_object(text: str) -> dict:
    """An argparse type: ``text`` parsed as a JSON object, else a clear usage error."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err.msg}): {text!r}") from err
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object like '{{\"n_layer\": 4}}', "
                                         f"got {text!r}")
    return value


def shard_size(args: argparse.Namespace) -> int:
    """``--max-shard-size``, or the default when it is not given (0 is an error, not the
    default: the API checks it)."""
    from hyperinit.safetensors_io import DEFAULT_MAX_SHARD_SIZE

    return DEFAULT_MAX_SHARD_SIZE if args.max_shard_size is None else args.max_shard_size


def spec_from_args(args: argparse.Namespace):
    import graphs

    return graphs.resolve(args.arch, num_classes=args.num_classes, **args.config)
