"""`hyperinit train [--config FILE] [key=value ...]`: train a generator.

Options come from training.config.TrainConfig; a TOML/YAML file and key=value overrides
set them (overrides win). ``generator=ghn`` (the default) trains the graph hypernetwork on
``task`` data; ``generator=diffusion zoo=DIR`` trains the weight-diffusion model on a model
zoo's checkpoints. A run resumes from OUT/checkpoint.pt when it exists. For many
processes or machines, launch with torchrun, e.g.
``torchrun --nproc_per_node 2 -m hyperinit.cli train out=runs/x``.
"""

from __future__ import annotations

import argparse

from ._config import add_config_arguments


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a generator (hypernetwork or weight diffusion)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p, "TrainConfig", "steps=200 task=text out=runs/text, or "
                                           "generator=diffusion zoo=runs/zoo")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from training.config import load_config
    from training.run import train

    exported = train(load_config(args.config, args.overrides))
    print(f"generator written to {exported} (use it with --generator {exported})")
    return 0
