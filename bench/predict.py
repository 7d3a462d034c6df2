"""Benchmark of prediction: architecture name in, safetensors init on disk out.

Run with ``.venv/bin/python bench/predict.py`` (``--models``, ``--sizes``, ``--json PATH``).

For each model and generator size it measures, each in a fresh subprocess so memory peaks
are separate:

* **predict+write s**: ``hyperinit.save_init`` end to end (resolve, build on meta, trace
  the graph, encode, decode every tensor, stream it to a ``.safetensors`` file);
* **default init s**: the baseline measured in the same run: building the same model on CPU
  with PyTorch's default initialization (what a user does without hyperinit);
* **ratio**: predict+write / default init (below 1: hyperinit is faster than default init);
* **Mparams/s**: parameters written per second;
* **peak RSS MB**: growth of peak resident memory over the prediction (weights are
  streamed tensor by tensor, so this stays near the largest tensor, not the model).

Times are warm: each subprocess first predicts a small model of the same source. The
generators are untrained networks (speed does not depend on training): ``T`` is the default
``GHNConfig`` (d=64, 3 layers, index decoder with 512 rows, rank 32), ``L`` is d=256, 6
layers, rank 64, and ``T-0.2`` is ``T`` with hyperinit 0.2's decoder (64 Fourier features),
the reference a decoder change is held to (within 1.5x).

Goals, on a 2-core machine: ResNet-50 end to end under 0.5 s; GPT-2 Large predicted and
written in under 20 s with peak RSS under 2 GB beyond the generator.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("torchvision:resnet18", "torchvision:resnet50", "torchvision:vit_b_16",
          "torchvision:convnext_tiny", "hf:gpt2", "hf:gpt2-large")
SIZES = {"T": {"hidden": 64, "layers": 3, "heads": 8, "rank": 32, "features": 512},
         "L": {"hidden": 256, "layers": 6, "heads": 8, "rank": 64, "features": 512},
         "T-0.2": {"hidden": 64, "layers": 3, "heads": 8, "rank": 32, "features": 64,
                   "decoder": "fourier"}}
WARMUP = {"torchvision": ("torchvision:resnet18", {}), "hf": ("hf:gpt2", {"n_layer": 1})}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_predict(spec: str, size: str) -> dict[str, Any]:
    """Runs inside a worker process: time and memory of one save_init."""
    import torch

    import hyperinit

    torch.manual_seed(0)
    ghn = hyperinit.GraphHyperNetwork(hyperinit.GHNConfig(**SIZES[size])).eval()
    with tempfile.TemporaryDirectory() as tmp:
        warm, kwargs = WARMUP[spec.split(":")[0]]
        hyperinit.save_init(warm, Path(tmp) / "warm.safetensors", ghn, **kwargs)
        before = _peak_rss_mb()
        start = time.perf_counter()
        [path] = hyperinit.save_init(spec, Path(tmp) / "init.safetensors", ghn)
        seconds = time.perf_counter() - start
        size_mb = path.stat().st_size / 1e6
    import graphs

    params = graphs.build(spec).num_params
    return {"seconds": seconds, "params": params, "file_mb": size_mb,
            "peak_rss_growth_mb": _peak_rss_mb() - before}


def measure_default(spec: str) -> dict[str, Any]:
    """Runs inside a worker process: building the model with PyTorch's default init."""
    import graphs

    resolved = graphs.resolve(spec)
    resolved.build(meta=False)  # warm: imports and first-call costs
    start = time.perf_counter()
    resolved.build(meta=False)
    return {"seconds": time.perf_counter() - start}


def _worker(args: list[str]) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--worker", *args], capture_output=True,
                         text=True, cwd=ROOT, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | generator | parameters | predict+write s | default init s | ratio | "
             "Mparams/s | file MB | peak RSS MB |", "|---|---|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['size']} | {r['params']:,} | {r['seconds']:.2f} | "
            f"{r['default_seconds']:.2f} | {r['seconds'] / r['default_seconds']:.2f} | "
            f"{r['params'] / r['seconds'] / 1e6:.0f} | {r['file_mb']:.0f} | "
            f"{r['peak_rss_growth_mb']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--sizes", nargs="+", default=["T", "L"], choices=list(SIZES))
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        kind, spec, *rest = args.worker
        result = measure_predict(spec, rest[0]) if kind == "predict" else measure_default(spec)
        print(json.dumps(result))
        return 0
    rows = []
    for spec in args.models:
        default = _worker(["default", spec])["seconds"]
        for size in args.sizes:
            row = {"model": spec, "size": size, **_worker(["predict", spec, size]),
                   "default_seconds": default}
            rows.append(row)
            print(markdown([row]).splitlines()[-1], file=sys.stderr, flush=True)
    print(markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
