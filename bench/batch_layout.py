"""Benchmark of the image batch memory layout: one training step of sampled CNNs on CIFAR-10
batches stored contiguous (NCHW) against channels-last (NHWC, what ``training.data``
yields).

Run with ``.venv/bin/python bench/batch_layout.py`` (``--seeds``, ``--batch-size``,
``--repeat``). For each architecture of ``training.samplers.mixed("image")`` at the given
seeds it times forward + backward + cross-entropy of one batch in both layouts, in the same
process and interleaved (best of ``--repeat``), and prints a markdown table with the ratio
(contiguous / channels-last: above 1 means channels-last is faster) and the total over all
architectures. The values and shapes are identical; only the strides differ.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from training import samplers


def step_seconds(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    start = time.perf_counter()
    F.cross_entropy(model(x), y).backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(12)))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 3, 32, 32)
    y = torch.randint(0, 10, (args.batch_size,))
    layouts = {"contiguous": x, "channels-last": x.contiguous(memory_format=torch.channels_last)}
    print(f"threads: {torch.get_num_threads()}, batch {args.batch_size}, best of {args.repeat}\n")
    print("| arch | contiguous s | channels-last s | ratio |")
    print("|---|--:|--:|--:|")
    totals = dict.fromkeys(layouts, 0.0)
    for seed in args.seeds:
        name, model = samplers.mixed("image").sample(seed)
        model.train()
        step_seconds(model, x, y)  # warm-up
        best = dict.fromkeys(layouts, float("inf"))
        for _ in range(args.repeat):
            for layout, batch in layouts.items():
                best[layout] = min(best[layout], step_seconds(model, batch, y))
        totals = {layout: totals[layout] + best[layout] for layout in layouts}
        print(row(name, best))
    print(row("**all (a meta-batch's worth)**", totals))


def row(label: str, seconds: dict[str, float]) -> str:
    contiguous, channels_last = seconds["contiguous"], seconds["channels-last"]
    ratio = contiguous / channels_last
    return f"| {label} | {contiguous:.3f} | {channels_last:.3f} | {ratio:.2f} |"


if __name__ == "__main__":
    main()
