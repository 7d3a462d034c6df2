"""`hyperinit eval --generator DIR [--config FILE] [key=value ...]`: compare inits.

Trains every held-out architecture for a few steps from each init (the generator's
prediction, PyTorch's default, orthogonal, mimetic) and seeds, and writes OUT/results.json,
OUT/table.md and OUT/curves.png. Options come from training.evaluate.EvalConfig; a TOML/YAML
file and key=value overrides set them (overrides win), e.g.
``hyperinit eval --generator runs/ghn/generator archs=vit-1000001,resnet-1000000 ks=[0,50]``.
An interrupted run resumes: rows already in OUT/results.jsonl are not run again.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from ._config import add_config_arguments


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="compare a generator's inits with baselines by training",
                       description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generator", help="checkpoint folder or shipped generator name "
                                       "(default: the config's, else the shipped default)")
    add_config_arguments(p, "EvalConfig", "task=text seeds=[0,1] ks=[0,100] out=runs/e")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from training.config import load_config
    from training.evaluate import EvalConfig, evaluate

    cfg = load_config(args.config, args.overrides, EvalConfig)
    if args.generator is not None:
        cfg = dataclasses.replace(cfg, generator=args.generator)
    evaluate(cfg)
    out = Path(cfg.out)
    print((out / "table.md").read_text())
    print(f"results in {out}/: results.json, table.md, curves.png")
    return 0
