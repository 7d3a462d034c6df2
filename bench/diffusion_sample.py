"""Benchmark of block-wise weight diffusion: an init for a big model, whole in a fresh process.

Run with ``.venv/bin/python bench/diffusion_sample.py`` (``--models``, ``--steps``,
``--generator``, ``--task``, ``--chunk``, ``--hidden``, ``--layers``, ``--window``,
``--group``, ``--token-hidden``, ``--window-batch``, ``--json PATH``).

It takes a trained generator (``--generator``, a folder or shipped name; ``--task`` the
classes of a task for a task-conditioned one) or saves an untrained windowed
:class:`hyperinit.WeightDiffusion` (the default ``DiffusionConfig`` unless the size flags
change it; speed does not depend on training), then for each model (10 classes) and each
DDIM step count times a fresh ``python`` that imports hyperinit, loads the generator,
samples one init (``hyperinit.diffusion.sample``) and saves it with safetensors, and reports
its wall time, the sampling time inside it and its peak RSS. The baseline, measured in the
same run: a fresh ``python`` that builds the same torchvision model with PyTorch's default
init and saves it with ``safetensors.torch.save_model``; **ratio** is diffusion / default.

Sampling runs window batch by window batch, so memory beyond the sampled values does not
grow with the model: compare **RSS beyond default** of a model and one twice its size (the
default process already holds the model's tensors once). Goal on the project's 2-core CPU:
ResNet-18 under 30 s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("resnet18", "resnet34")
SIZES = ("chunk", "hidden", "layers", "window", "group", "token_hidden")
SAMPLE = """
import json, resource, sys, time
from safetensors.torch import save_file
from hyperinit.diffusion import load_diffusion, sample
name, folder, task, steps, batch, out = sys.argv[1:]
model = load_diffusion(folder)
began = time.perf_counter()
(state,) = sample(f"torchvision:{name}", model, num_classes=10, steps=int(steps),
                  window_batch=int(batch), task=task or None)
sampled = time.perf_counter()
save_file(state, out)
print(json.dumps({"sample_s": sampled - began,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""
DEFAULT = """
import json, resource, sys
import torchvision
from safetensors.torch import save_model
name, out = sys.argv[1:]
model = getattr(torchvision.models, name)(num_classes=10)
save_model(model, out)
print(json.dumps({"params": sum(p.numel() for p in model.parameters()),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run(script: str, *args: str) -> dict[str, Any]:
    """Wall time of a fresh ``python -c script args`` and the JSON its last line prints."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    return {"seconds": time.perf_counter() - start,
            **json.loads(out.stdout.strip().splitlines()[-1])}


def generator(trained: str | None, sizes: dict[str, int], tmp: Path,
              ) -> tuple[str, dict[str, Any]]:
    """The generator to time: ``trained`` (a folder or shipped name) as it is, or else an
    untrained windowed WeightDiffusion of ``sizes`` (else defaults) saved in ``tmp``; returns
    where it is and its config and parameter count."""
    import torch

    from hyperinit.diffusion import DiffusionConfig, WeightDiffusion, load_diffusion

    if trained:
        folder, model = trained, load_diffusion(trained)
    else:
        torch.manual_seed(0)
        folder, model = str(tmp / "generator"), WeightDiffusion(DiffusionConfig(**sizes))
        model.save_pretrained(folder)
    return folder, {"config": vars(model.config),
                    "params": sum(p.numel() for p in model.parameters())}


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | parameters | DDIM steps | diffusion s | of which sampling s | "
             "peak RSS MB | default init + save s | peak RSS MB | ratio | RSS beyond default MB |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        d, b = r["diffusion"], r["default"]
        lines.append(
            f"| {r['model']} | {r['params']:,} | {r['steps']} | {d['seconds']:.1f} | "
            f"{d['sample_s']:.1f} | {d['peak_rss_mb']:.0f} | {b['seconds']:.1f} | "
            f"{b['peak_rss_mb']:.0f} | {d['seconds'] / b['seconds']:.1f} | "
            f"{d['peak_rss_mb'] - b['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from hyperinit.diffusion import DDIM_STEPS, WINDOW_BATCH

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS),
                        help="torchvision model names (10 classes)")
    parser.add_argument("--steps", nargs="+", type=int, default=[DDIM_STEPS],
                        help=f"DDIM step counts (default: the sampler's, {DDIM_STEPS})")
    parser.add_argument("--generator", help="a trained weight-diffusion generator (folder or "
                        "shipped name) instead of an untrained one of the size flags")
    parser.add_argument("--task", default="", help="the task to sample for (a "
                        "task-conditioned generator): its classes, e.g. 0,1,3,5,9 or "
                        "cat,dog,ship")
    for size in SIZES:
        parser.add_argument(f"--{size.replace('_', '-')}", type=int, help=f"untrained "
                            f"generator's {size} (default: DiffusionConfig's)")
    parser.add_argument("--window-batch", type=int, default=WINDOW_BATCH,
                        help="windows sampled at once")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    sizes = {k: getattr(args, k) for k in SIZES if getattr(args, k) is not None}
    if args.generator and sizes:
        parser.error("size flags make an untrained generator: give them or --generator")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder, info = generator(args.generator, sizes, Path(tmp))
        print(f"{'trained' if args.generator else 'untrained'} WeightDiffusion, "
              f"{info['params']:,} parameters: {info['config']}", flush=True)
        for name in args.models:
            default = run(DEFAULT, name, str(Path(tmp) / "default.safetensors"))
            for steps in args.steps:
                diffusion = run(SAMPLE, name, folder, args.task, str(steps),
                                str(args.window_batch), str(Path(tmp) / "init.safetensors"))
                rows.append({"model": f"torchvision:{name}", "params": default["params"],
                             "steps": steps, "diffusion": diffusion, "default": default,
                             "generator": info})
                print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
