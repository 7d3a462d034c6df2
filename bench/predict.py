"""Benchmark of prediction: architecture name in, safetensors init on disk out.

Run with ``.venv/bin/python bench/predict.py`` (``--models``, ``--sizes``, ``--no-warm``,
``--no-cli``, ``--llama-7b``, ``--json PATH``).

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

Then, unless ``--no-cli``, whole processes as users run them, each model in turn:

* **hyperinit predict s**: the ``hyperinit predict SPEC --out FILE`` command with the shipped
  default generator and its default noise, from start-up (imports included) to exit, and
  its **peak RSS MB**;
* **default init + save s**: a fresh ``python`` that builds the model with PyTorch's default
  init and saves it with ``safetensors.torch.save_model`` (tied tensors once), and its peak
  RSS; **ratio** is the command's time over this one's.

``--llama-7b`` adds a 7B Llama-shaped init (``hf:llama``, hidden 4096, intermediate 11008,
32 layers, vocabulary 32000, ``--dtype bfloat16``, a sharded folder) to that table, without
the default-init column (27 GB of float32 parameters do not fit a small machine).

Goals, on a 2-core machine: ResNet-50 end to end under 0.5 s; GPT-2 Large predicted and
written in under 20 s with peak RSS under 2 GB beyond the generator; the GPT-2 Large
command in 8 s (a quarter of default init + save) with peak RSS under 1 GB beyond the
generator; the 7B command in 60 s with peak RSS under 3 GB.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
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
LLAMA_7B = {"model": "hf:llama", "config": {"hidden_size": 4096, "intermediate_size": 11008,
                                            "num_hidden_layers": 32, "num_attention_heads": 32,
                                            "num_key_value_heads": 32, "vocab_size": 32000},
            "dtype": "bfloat16", "label": "hf:llama 7B (bfloat16)"}
SAVE_DEFAULT = """
import sys, json
import graphs
from safetensors.torch import save_model
spec, config, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
save_model(graphs.resolve(spec, **config).build(meta=False), out)
"""


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


def measure_process(kind: str, spec: str, config: str, dtype: str) -> dict[str, Any]:
    """Runs inside a worker process: wall time and peak RSS of one child process, the
    ``hyperinit predict`` command (``kind`` "cli") or default init + save ("default")."""
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "cli":
            command = shutil.which("hyperinit", path=Path(sys.executable).parent)
            out = Path(tmp) / ("init" if dtype else "init.safetensors")
            argv = [command, "predict", spec, "--config", config, "--out", str(out)]
            argv += ["--dtype", dtype] if dtype else []
        else:
            out = Path(tmp) / "default.safetensors"
            argv = [sys.executable, "-c", SAVE_DEFAULT, spec, config, str(out)]
        start = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, check=True, capture_output=True)
        seconds = time.perf_counter() - start
        files = [out] if out.is_file() else list(out.iterdir())
        file_mb = sum(f.stat().st_size for f in files) / 1e6
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the one child
    return {"seconds": seconds, "peak_rss_mb": rss, "file_mb": file_mb}


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


def process_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | hyperinit predict s | peak RSS MB | file MB | default init + save s | "
             "peak RSS MB | file MB | ratio |", "|---|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        cli, default = r["cli"], r.get("default")
        base = (f"{default['seconds']:.2f} | {default['peak_rss_mb']:.0f} | "
                f"{default['file_mb']:.0f} | {cli['seconds'] / default['seconds']:.2f}"
                if default else "— | — | — | —")
        lines.append(f"| {r['model']} | {cli['seconds']:.2f} | {cli['peak_rss_mb']:.0f} | "
                     f"{cli['file_mb']:.0f} | {base} |")
    return "\n".join(lines)


def process_rows(models: list[str], llama_7b: bool) -> list[dict[str, Any]]:
    """The whole-process table: each model's command, then its default init + save."""
    cases = [{"model": m, "config": {}, "dtype": "", "label": m} for m in models]
    rows = []
    for case in [*cases, *([LLAMA_7B] if llama_7b else [])]:
        args = [case["model"], json.dumps(case["config"]), case["dtype"]]
        row = {"model": case["label"], "cli": _worker(["process", "cli", *args])}
        if case is not LLAMA_7B:
            row["default"] = _worker(["process", "default", *args])
        rows.append(row)
        print(process_markdown([row]).splitlines()[-1], file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--sizes", nargs="+", default=["T", "L"], choices=list(SIZES))
    parser.add_argument("--no-warm", action="store_true",
                        help="skip the warm save_init table")
    parser.add_argument("--no-cli", action="store_true",
                        help="skip the whole-process table (hyperinit predict, default init)")
    parser.add_argument("--llama-7b", action="store_true",
                        help="add the 7B Llama-shaped init to the whole-process table")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        kind, *rest = args.worker
        if kind == "process":
            result = measure_process(*rest)
        else:
            result = measure_predict(*rest) if kind == "predict" else measure_default(*rest)
        print(json.dumps(result))
        return 0
    rows = [] if args.no_warm else warm_rows(args.models, args.sizes)
    if rows:
        print(markdown(rows))
    processes = [] if args.no_cli else process_rows(args.models, args.llama_7b)
    if processes:
        print(("\n" if rows else "") + process_markdown(processes))
    if args.json:
        Path(args.json).write_text(json.dumps({"warm": rows, "process": processes}, indent=2))
    return 0


def warm_rows(models: list[str], sizes: list[str]) -> list[dict[str, Any]]:
    """The warm save_init table: each model against its in-process default init build."""
    rows = []
    for spec in models:
        default = _worker(["default", spec])["seconds"]
        for size in sizes:
            row = {"model": spec, "size": size, **_worker(["predict", spec, size]),
                   "default_seconds": default}
            rows.append(row)
            print(markdown([row]).splitlines()[-1], file=sys.stderr, flush=True)
    return rows


if __name__ == "__main__":
    sys.exit(main())
