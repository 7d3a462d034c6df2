"""Shared command-line arguments that name an architecture."""

from __future__ import annotations

import argparse
import json


def add_arch_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("arch", help="architecture spec: torchvision:NAME, hf:MODEL_TYPE, timm:NAME, "
                                "or python:package.module:Class")
    p.add_argument("--num-classes", type=int, help="classifier size (num_labels for hf)")
    p.add_argument("--config", type=json.loads, default={}, metavar="JSON",
                   help="constructor keyword arguments or transformers config overrides, as JSON")


def spec_from_args(args: argparse.Namespace):
    import graphs

    if not isinstance(args.config, dict):
        raise ValueError(f"--config must be a JSON object, got {args.config!r}")
    return graphs.resolve(args.arch, num_classes=args.num_classes, **args.config)
