"""Benchmark of graph extraction: time and memory to turn a named architecture into a graph.

Run with ``.venv/bin/python bench/extraction.py`` (``--json PATH`` also writes the rows).

For each model (ResNet-50, ViT-B/16, ConvNeXt-Tiny from torchvision, GPT-2 and GPT-2 Large
from ``transformers`` configs) it measures, in a fresh subprocess so memory peaks are
separate:

* **build-model s**: ``graphs.resolve`` + ``spec.build()`` (the model on ``meta``) and its
  example inputs;
* **extract s**: ``graphs.build(model, inputs)``, the fake-tensor forward pass and the
  autograd walk;
* **features s**: ``graph.distances`` (all-pairs shortest paths) and ``graph.to_data()``;
* **peak RSS MB**: growth of the process's peak resident memory (``ru_maxrss``) over all of
  the above.

Times are warm: each subprocess first builds, traces and featurizes a small model of the
same source, so imports (torch_geometric, the ``transformers`` modeling module) are not
counted; each time is the best of ``--repeat`` runs.

Goals, on a 2-core machine: ResNet-50 extraction under 0.5 s, GPT-2 Large (774M parameters)
under 2 s, and peak memory that does not grow with the parameter count (weights are never
allocated: GPT-2 Large in fp32 would be 3 GB).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

MODELS = (
    "torchvision:resnet50",
    "torchvision:vit_b_16",
    "torchvision:convnext_tiny",
    "hf:gpt2",
    "hf:gpt2-large",
)
# A small model per source, built and traced first so that imports are not timed.
WARMUP: dict[str, tuple[str, dict[str, Any]]] = {
    "torchvision": ("torchvision:resnet18", {}),
    "hf": ("hf:gpt2", {"n_layer": 1}),
    "timm": ("timm:resnet18", {}),
}
# Goals from the module docstring: spec -> longest acceptable extraction time in seconds.
GOALS = {"torchvision:resnet50": 0.5, "hf:gpt2-large": 2.0}
COLUMNS = ("model", "parameters", "nodes", "edges", "build-model s", "extract s",
           "features s", "peak RSS MB")


def _peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (ru_maxrss is KiB on Linux,
    bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def measure(spec_str: str, repeat: int) -> dict[str, Any]:
    """Time and memory of one model, in this process (call it in a fresh one)."""
    import graphs

    source = spec_str.partition(":")[0]
    warm_name, warm_kwargs = WARMUP.get(source, ("torchvision:resnet18", {}))
    warm = graphs.build(graphs.resolve(warm_name, **warm_kwargs))
    warm.to_data()
    before = _peak_rss_mb()

    build_s = extract_s = features_s = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        spec = graphs.resolve(spec_str)
        model = spec.build()
        inputs = spec.example_inputs()
        t1 = time.perf_counter()
        graph = graphs.build(model, inputs, name=spec.label)
        t2 = time.perf_counter()
        _ = graph.distances
        graph.to_data()
        t3 = time.perf_counter()
        build_s, extract_s, features_s = (min(build_s, t1 - t0), min(extract_s, t2 - t1),
                                          min(features_s, t3 - t2))
        del model
    return {
        "model": spec_str,
        "parameters": graph.num_params,
        "nodes": graph.num_nodes,
        "edges": len(graph.edges),
        "build-model s": round(build_s, 3),
        "extract s": round(extract_s, 3),
        "features s": round(features_s, 3),
        "peak RSS MB": round(_peak_rss_mb() - before, 1),
        "baseline RSS MB": round(before, 1),
        "unrecognized": graph.unrecognized,
    }


def run_isolated(spec_str: str, repeat: int) -> dict[str, Any]:
    """:func:`measure` in a fresh interpreter, so each model's peak memory is its own."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", spec_str,
           "--repeat", str(repeat)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark of {spec_str} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _format(column: str, value: Any) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.1f}" if column.endswith("MB") else f"{value:.3f}"
    return str(value)


def markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as a markdown table with :data:`COLUMNS`."""
    lines = ["| " + " | ".join(COLUMNS) + " |",
             "|" + "|".join("---" if c == "model" else "--:" for c in COLUMNS) + "|"]
    lines += ["| " + " | ".join(_format(c, r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=list(MODELS),
                        help=f"specs to measure (default: {' '.join(MODELS)})")
    parser.add_argument("--json", metavar="PATH", help="also write the rows to this JSON file")
    parser.add_argument("--repeat", type=int, default=3,
                        help="timed runs per model; the best is kept (default: 3)")
    parser.add_argument("--one", metavar="SPEC", help=argparse.SUPPRESS)  # subprocess worker
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one, max(1, args.repeat))))
        return 0

    rows = []
    for spec_str in args.models:
        print(f"measuring {spec_str} ...", file=sys.stderr, flush=True)
        rows.append(run_isolated(spec_str, max(1, args.repeat)))
    print(markdown(rows))
    print()
    for row in rows:
        if row["model"] in GOALS:
            goal = GOALS[row["model"]]
            verdict = "met" if row["extract s"] < goal else "MISSED"
            print(f"goal: {row['model']} extraction under {goal} s: {verdict} "
                  f"({row['extract s']:.3f} s, {os.cpu_count()} cores)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
