"""`hyperinit predict SPEC --out FILE`: predict an init and write it to safetensors."""

from __future__ import annotations

import argparse
import sys
import time

from ._arch import (
    add_arch_arguments,
    add_init_options,
    shard_size,
    spec_from_args,
    task_note,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict an init and write it to safetensors",
                       description=__doc__)
    add_arch_arguments(p)
    p.add_argument("--out", required=True,
                   help="a .safetensors file, or a folder (gets model.safetensors or shards)")
    add_init_options(p)
    p.add_argument("--compare", type=int, metavar="STEPS",
                   help="then train the model for STEPS SGD steps on CIFAR-10 from this init and "
                        "from PyTorch's default init, and print test accuracy side by side "
                        "(image classifiers with 10 classes; a quick look, not an evaluation)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import hyperinit

    start = time.perf_counter()
    generator = hyperinit.load_generator(args.generator)
    spec = spec_from_args(args)
    files = hyperinit.save_init(spec, args.out, generator, seed=args.seed, noise=args.noise,
                                dtype=args.dtype, task=args.task,
                                max_shard_size=shard_size(args))
    elapsed = time.perf_counter() - start
    size = sum(f.stat().st_size for f in files)
    from safetensors import safe_open

    with safe_open(files[0], "pt") as f:
        meta = f.metadata()
    print(f"predicted {args.arch} with {meta['hyperinit.generator']} (seed {args.seed}, "
          f"noise {meta['hyperinit.noise']}{task_note(args)}) "
          f"in {elapsed:.2f} s", file=sys.stderr)
    print(f"arch_hash {meta['hyperinit.arch_hash']}; wrote {size / 1e6:.1f} MB to "
          + ", ".join(str(f) for f in files))
    if args.compare:
        from training.evaluate import compare_inits

        print(compare_inits(spec, files[0], args.compare))
    return 0
