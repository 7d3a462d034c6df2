"""Evaluate initializations: train held-out architectures briefly from each init and compare.

For every held-out architecture (``training.samplers.held_out``), init "arm" and seed, the
model is built, initialized, trained with the fixed recipe of :mod:`training.recipe` for
``max(ks)`` steps, and measured on the test split at every step count in ``ks`` (0 = the
init itself, zero-shot, with BatchNorm statistics calibrated on training batches).
The arms:

* ``predicted``: parameters from the generator, as ``hyperinit.predict`` gives them with the
  run's seed and ``noise`` (default: the generator's own);
* ``default``: the freshly built module, i.e. PyTorch's (or the model's own) default init;
* ``orthogonal``: ``nn.init.orthogonal_`` (gain 1) on every weight of two or more dimensions,
  zero biases; norm layers and other parameters (positions, class tokens) keep their default;
* ``mimetic``: default init, then the attention weights of Trockman & Kolter (2023), for
  models with self-attention only (for others the row is recorded as skipped).

Everything random is a function of the seed alone, never of the arm: the module is built
after ``torch.manual_seed(seed)``, the RNG is re-seeded before training (dropout), and the
batch stream is ``ImageBatches``/``TextBatches`` with ``seed=seed``. So the arms of a seed
differ only in their initial parameters.

Results are appended to ``OUT/results.jsonl`` as each (arch, arm, seed) finishes, and a
restarted run skips the rows already there (:mod:`training.results`). At the end
``results.json``, ``table.md`` and ``curves.png`` summarize them
(:mod:`training.eval_report`).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

import graphs
import hyperinit
from hyperinit.predict import resolve_noise

from . import samplers
from .eval_config import EvalConfig
from .eval_report import write_reports
from .recipe import EvalData, RecipeConfig, resolve_device, train_and_measure
from .results import RESULTS, check_resumable, load_rows

# Trockman & Kolter (2023): W_q W_k^T ~ a1 Z1 + b1 I and W_v W_proj ~ a2 Z2 - b2 I.
MIMETIC = {"alpha1": 0.7, "beta1": 0.7, "alpha2": 0.4, "beta2": 0.4}
# Options that change the numbers of a row: a resumed run must keep them. "generator_id"
# is the generator's name and weights hash, so a folder retrained in place is not mixed in.
ROW_OPTIONS = ("task", "generator", "generator_id", "data", "ks", "epoch",
               "calibration_batches", "noise", "batch_size", "block_size", "lr", "weight_decay",
               "grad_clip", "train_samples", "test_samples", "amp")


# ----- architectures and inits -------------------------------------------------------------
def select_archs(cfg: EvalConfig) -> list[samplers.HeldOut]:
    """The held-out entries named by ``cfg.archs`` (all if None), cut to ``cfg.max_archs``."""
    entries = samplers.held_out(cfg.task)
    if cfg.archs is not None:
        by_name = {e.name: e for e in entries}
        unknown = [a for a in cfg.archs if a not in by_name]
        if unknown:
            raise ValueError(f"unknown {cfg.task} architecture(s) {', '.join(unknown)}: "
                             f"held-out names are {', '.join(by_name)}")
        entries = [by_name[a] for a in cfg.archs]
    return entries[:cfg.max_archs]


@torch.no_grad()
def orthogonal_(model: nn.Module) -> nn.Module:
    """Orthogonal weights (every ``*weight`` of 2+ dims) and zero biases; the rest as built."""
    for name, p in model.named_parameters():
        leaf = name.rpartition(".")[2]
        if leaf.endswith("weight") and p.dim() >= 2:
            nn.init.orthogonal_(p)
        elif leaf.endswith("bias"):
            nn.init.zeros_(p)
    return model


def attention_layers(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
    """``(qkv, proj, heads)`` of each self-attention layer, as ``(out, in)`` weight views.

    ``qkv`` is ``(3d, d)`` with rows ``[q; k; v]`` and heads contiguous within each, ``proj``
    is ``(d, d)``. Found by structure: the samplers' ``SelfAttention``, torch's
    ``nn.MultiheadAttention`` (torchvision's ViT), and GPT-2's ``c_attn``/``c_proj``, whose
    ``Conv1D`` weights are stored ``(in, out)`` and so are returned transposed.
    """
    found = []
    for m in model.modules():
        if isinstance(m, samplers.SelfAttention):
            found.append((m.qkv.weight, m.proj.weight, m.heads))
        elif isinstance(m, nn.MultiheadAttention) and m.in_proj_weight is not None:
            found.append((m.in_proj_weight, m.out_proj.weight, m.num_heads))
        elif (hasattr(m, "c_attn") and hasattr(m, "c_proj") and hasattr(m, "num_heads")
              and not getattr(m, "is_cross_attention", False)):
            found.append((m.c_attn.weight.T, m.c_proj.weight.T, m.num_heads))
    return found


def _factor(m: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L, R)``, both ``(d, rank)``: ``L @ R.T`` is the best rank-``rank`` approximation."""
    u, s, vh = torch.linalg.svd(m)
    root = s[:rank].sqrt()
    return u[:, :rank] * root, vh[:rank].T * root


@torch.no_grad()
def mimetic_(model: nn.Module, alpha1: float = 0.7, beta1: float = 0.7, alpha2: float = 0.4,
             beta2: float = 0.4) -> int:
    """Mimetic init (Trockman & Kolter 2023) of every self-attention layer; returns how many.

    Trained attention has ``W_q W_k^T`` close to a positive identity (tokens attend to
    similar tokens) and ``W_v W_proj`` close to a negative one. Per head, ``W_q W_k^T`` is
    set to the best rank-``head_dim`` approximation of ``alpha1 Z1 + beta1 I``; over all
    heads together ``W_v W_proj = alpha2 Z2 - beta2 I`` exactly, with ``Z ~ N(0, I/d)``
    (row-vector convention ``x W``; torch stores ``W^T``). Biases keep their values.
    """
    layers = attention_layers(model)
    for qkv, proj, heads in layers:
        d = proj.shape[0]
        head_dim, eye = d // heads, torch.eye(d)
        q, k, v = qkv[:d], qkv[d:2 * d], qkv[2 * d:]
        for h in range(heads):
            wq, wk = _factor(alpha1 * torch.randn(d, d) / math.sqrt(d) + beta1 * eye, head_dim)
            rows = slice(h * head_dim, (h + 1) * head_dim)
            q[rows], k[rows] = wq.T, wk.T
        wv, wproj = _factor(alpha2 * torch.randn(d, d) / math.sqrt(d) - beta2 * eye, d)
        v.copy_(wv.T)
        proj.copy_(wproj)
    return len(layers)


def init_(model: nn.Module, arm: str, seed: int, noise: float | None,
          generator: hyperinit.Generator | None) -> str | None:
    """Apply ``arm``'s init to a freshly built ``model``; the reason if it does not apply."""
    if arm == "predicted":
        hyperinit.predict(model, generator, seed=seed, noise=noise)
    elif arm == "orthogonal":
        orthogonal_(model)
    elif arm == "mimetic" and mimetic_(model, **MIMETIC) == 0:
        return "no self-attention layers"
    return None


def run_one(cfg: EvalConfig, entry: samplers.HeldOut, arm: str, seed: int,
            generator: hyperinit.Generator | None, eval_data: EvalData,
            device: torch.device) -> dict[str, Any]:
    """One result row: build, init, train and measure ``entry`` with ``arm`` and ``seed``."""
    row: dict[str, Any] = {"arch": entry.name, "arm": arm, "seed": seed}
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = entry.build()
    skipped = init_(model, arm, seed, cfg.noise, generator)
    if skipped:
        return {**row, "skipped": skipped}
    if arm == "predicted":
        row["generator"] = generator.id
        row["noise"] = resolve_noise(generator, cfg.noise)
    row["params"] = sum(p.numel() for p in model.parameters())
    torch.manual_seed(seed)  # dropout and the like: the same stream for every arm
    points = train_and_measure(model.to(device), cfg, eval_data, seed, device)
    return {**row, "seconds": round(time.perf_counter() - start, 2), "at": points}


# ----- the run ------------------------------------------------------------------------------
def evaluate(cfg: EvalConfig) -> list[dict[str, Any]]:
    """Run every (arch, arm, seed) not yet in ``OUT/results.jsonl``; write the reports.

    Returns the rows of this config's selection, in (arch, arm, seed) order.
    """
    entries = select_archs(cfg)
    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    generator = hyperinit.load_generator(cfg.generator) if "predicted" in cfg.arms else None
    noise = cfg.noise if generator is None else resolve_noise(generator, cfg.noise)
    weights = None if generator is None else generator.id
    check_resumable({**cfg.to_dict(), "noise": noise, "generator_id": weights}, out, ROW_OPTIONS)
    done = load_rows(out / RESULTS, ("arch", "arm", "seed"))
    jobs = [(e, arm, seed) for e in entries for arm in cfg.arms for seed in cfg.seeds]
    todo = [j for j in jobs if (j[0].name, j[1], j[2]) not in done]
    if todo:
        eval_data = EvalData(cfg, device)
        bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc=f"eval {cfg.task}")
        with open(out / RESULTS, "a") as f:
            for entry, arm, seed in todo:
                bar.set_postfix_str(f"{entry.name} {arm} seed {seed}")
                row = run_one(cfg, entry, arm, seed, generator, eval_data, device)
                f.write(json.dumps(row) + "\n")
                f.flush()
                done[entry.name, arm, seed] = row
                bar.update(1)
        bar.close()
    rows = [done[e.name, arm, seed] for e, arm, seed in jobs]
    write_reports(cfg, rows, out)
    return rows



def compare_inits(spec: graphs.ArchSpec, init: str | Path, steps: int,
                  data_path: str | None = None) -> str:
    """Train ``spec`` from the init file and from PyTorch's default init, with the same data
    and seed, for ``steps`` SGD steps on CIFAR-10 (5,000 training and 1,000 test images),
    and return a small markdown table of test accuracy. A quick look, not an evaluation:
    ``hyperinit eval`` is that."""
    from hyperinit.safetensors_io import read_state

    if spec.source not in ("torchvision", "timm", "python"):
        raise ValueError(f"--compare trains CIFAR-10 image classifiers; {spec.label} is not one")
    cfg = RecipeConfig(task="image", data=data_path, ks=(0, steps), batch_size=64,
                       train_samples=5000, test_samples=1000, device="cpu")
    eval_data = EvalData(cfg, torch.device("cpu"))
    state = read_state([init])  # tied aliases restored
    results = {}
    for arm in ("predicted", "default"):
        torch.manual_seed(0)
        model = spec.build(meta=False)
        if arm == "predicted":
            model.load_state_dict(state, strict=True)
        results[arm] = train_and_measure(model, cfg, eval_data, 0, torch.device("cpu"))
    lines = [f"| init | test accuracy, no training | after {steps} steps |", "|---|--:|--:|"]
    for arm, points in results.items():
        lines.append(f"| {arm} | {100 * points['0']['accuracy']:.1f}% | "
                     f"{100 * points[str(steps)]['accuracy']:.1f}% |")
    return "\n".join(lines)
