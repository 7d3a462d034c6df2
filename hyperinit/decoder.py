"""LoGAH-style low-rank decoder that builds every tensor at its exact shape, with no maximum.

A tensor is viewed as a matrix (rows x cols): a linear weight as itself, a conv kernel
``(out, in, kh, kw)`` as ``(out*kh, in*kw)``, leading singleton dims dropped. Its rows come
from ``A = basis(rows) @ U`` and its columns from ``B = basis(cols) @ V``, so ``W = A @ B.T``
has rank ``r``. ``U`` and ``V`` (``features x r``) are generated from the owning node's
embedding plus embeddings of the parameter's role and shape. The basis
(:class:`IndexBasis`) gives each of the first ``features`` indices its own row of ``U``, so
any rank-r matrix up to that width is in the family (a trained network's weights, projected
there, keep their accuracy: ``bench/family.py``), and mixes those rows with fixed Fourier
weights beyond, so any width works, including widths never seen in training. No tensor is a
tiled copy of a block of itself (GHN-2/3 tile a fixed block). Vectors (biases, norm weights)
are ``basis(i) @ u``.

The raw output is then scaled to what the layer needs (see :func:`scale`): fan-in aware
weights, norm weights near 1, small biases, embeddings with std about 0.02.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from graphs import ROLES
from graphs.graph import ROLE_INDEX

from .encoder import BUCKETS, log_bucket

ROLE_ROWS = 32


def _squeezed(shape: tuple[int, ...]) -> list[int]:
    """``shape`` without its leading singleton dims (one dim is always kept)."""
    dims = list(shape)
    while len(dims) > 1 and dims[0] == 1:
        dims.pop(0)
    return dims


def matrix_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The (rows, cols), (length,) or () view a tensor of ``shape`` is generated in."""
    dims = _squeezed(shape)
    if len(dims) <= 2:
        return tuple(dims) if dims != [1] else ()
    rows = dims[0] * dims[2]
    return rows, math.prod(dims) // rows


def to_matrix(w: torch.Tensor) -> torch.Tensor:
    """``w`` in the view it is generated in (:func:`matrix_shape`): a conv kernel
    ``(out, in, kh, kw…)`` as ``(out*kh, in*kw…)``; the inverse of :func:`from_matrix`."""
    dims = _squeezed(tuple(w.shape))
    w = w.reshape(dims)
    if len(dims) > 2:
        w = w.movedim(2, 1)
    return w.reshape(matrix_shape(tuple(dims)))


def from_matrix(w: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`to_matrix`: ``(out*kh, in*kw…)`` back to ``(out, in, kh, …)``."""
    dims = _squeezed(shape)
    if len(dims) > 2:
        w = w.reshape(dims[0], dims[2], dims[1], *dims[3:]).movedim(2, 1)
    return w.reshape(shape)


def fan_in(shape: tuple[int, ...]) -> int:
    return max(1, math.prod(shape[1:])) if len(shape) >= 2 else max(1, shape[0] if shape else 1)


class IndexFeatures(nn.Module):
    """Random Fourier features of integer positions: ``sin/cos(i * w_k + b_k)``.

    Frequencies are spread over ``(0, pi]`` (fixed seed), so features of different
    indices are nearly orthogonal: rows of a predicted matrix are decorrelated like those
    of a random init (slow, smooth features alone would make every row alike and a layer
    would sum its inputs coherently), and no two rows repeat with a period that divides
    the tensor.
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1234)
        k = features // 2
        self.register_buffer("freqs", math.pi * (1 - torch.rand(k, generator=g)))
        self.register_buffer("shifts", 2 * math.pi * torch.rand(k, generator=g))
        self._cache: dict[tuple, torch.Tensor] = {}  # features depend on fixed buffers only

    def forward(self, n: int) -> torch.Tensor:
        # Many tensors share a width: compute each once.
        key = (n, self.freqs.device)
        if key not in self._cache:
            if len(self._cache) >= 256:
                self._cache.clear()
            i = torch.arange(n, device=self.freqs.device, dtype=torch.float32)[:, None]
            angle = i * self.freqs + self.shifts
            self._cache[key] = torch.cat([angle.sin(), angle.cos()], dim=1) / math.sqrt(
                self.freqs.numel())
        return self._cache[key]

    def expand(self, coefficients: torch.Tensor, n: int) -> torch.Tensor:
        """``phi(0..n-1) @ coefficients``: the ``(n, r)`` factor of a dimension of size n."""
        return self(n).to(coefficients.dtype) @ coefficients


class IndexBasis(nn.Module):
    """Per-index factors up to ``rows``; beyond, fixed Fourier mixtures of them.

    Index ``i < rows`` has its own row of coefficients (the basis vector ``e_i``), so a
    dimension of at most ``rows`` entries gets any factor at all: the decoder's family
    then holds any rank-r matrix, as a trained network needs (``bench/family.py``). A
    wider dimension, never a maximum, gives each index ``i >= rows`` the unit-norm random
    Fourier features ``phi(i)`` of :class:`IndexFeatures` over the same ``rows``
    coefficients.
    """

    def __init__(self, rows: int) -> None:
        super().__init__()
        self.rows = rows
        self.tail = IndexFeatures(rows)

    def forward(self, n: int) -> torch.Tensor:
        """The ``(n, rows)`` basis: identity rows, then Fourier features."""
        head = torch.eye(min(n, self.rows), self.rows, device=self.tail.freqs.device)
        return torch.cat([head, self.tail(n)[self.rows:]]) if n > self.rows else head

    def expand(self, coefficients: torch.Tensor, n: int) -> torch.Tensor:
        """``basis(n) @ coefficients`` without the identity's multiply."""
        head = coefficients[:n]
        if n <= self.rows:
            return head
        tail = self.tail(n)[self.rows:].to(coefficients.dtype) @ coefficients
        return torch.cat([head, tail])


BASES = {"index": IndexBasis, "fourier": IndexFeatures}


class LowRankDecoder(nn.Module):
    """Node embedding + parameter role/shape -> tensor of that exact shape.

    ``basis`` is how an index turns into a row of the low-rank factors: ``"index"``
    (:class:`IndexBasis`, per-index factors up to ``features`` rows; the default) or
    ``"fourier"`` (:class:`IndexFeatures`, ``features`` fixed Fourier features for every
    index: the decoder of hyperinit 0.2, whose family cannot hold a trained network, kept
    for the checkpoints trained with it).
    """

    def __init__(self, dim: int, rank: int, features: int, basis: str = "index") -> None:
        super().__init__()
        if len(ROLES) > ROLE_ROWS:
            raise ValueError(f"{len(ROLES)} parameter roles exceed the {ROLE_ROWS} embedding rows")
        if basis not in BASES:
            raise ValueError(f"basis must be one of {', '.join(BASES)}, got {basis!r}")
        self.rank, self.features = rank, features
        self.role = nn.Embedding(ROLE_ROWS, dim)
        self.dims = nn.ModuleList(nn.Embedding(BUCKETS, dim) for _ in range(2))
        self.ndim = nn.Embedding(8, dim)
        # The factor head is (width x 2 * features * rank): the index basis's many rows
        # take a narrower width than the Fourier basis's 8 * dim.
        width = 4 * dim if basis == "index" else 8 * dim
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 4 * dim), nn.GELU(),
                                 nn.Linear(4 * dim, width), nn.GELU())
        self.uv = nn.Linear(width, 2 * features * rank)  # low-rank factors of matrices
        self.vector = nn.Linear(width, features + 1)  # vectors, and scalars (last entry)
        self.gain = nn.Linear(width, 1)  # log-gain around the layer's default scale
        for head in (self.vector, self.gain):
            nn.init.zeros_(head.bias)
            head.weight.data.mul_(0.1)
        self.phi = BASES[basis](features)

    def project(self, matrix: torch.Tensor) -> torch.Tensor:
        """The best member of this decoder's family for ``matrix`` (in the view of
        :func:`to_matrix`): rank ``rank``, rows and columns in the span of the basis."""
        return best_in_span(matrix, self.phi(matrix.shape[0]), self.phi(matrix.shape[1]),
                            self.rank)

    def hidden(self, node_emb: torch.Tensor, roles: list[str],
               shapes: list[tuple[int, ...]]) -> torch.Tensor:
        """One hidden vector per parameter (batched over all parameters of the request)."""
        dev = node_emb.device
        mats = [matrix_shape(s) for s in shapes]
        dims = torch.tensor([(list(m) + [0, 0])[:2] for m in mats], device=dev)
        h = node_emb + self.role(torch.tensor([ROLE_INDEX[r] for r in roles], device=dev))
        h = h + self.dims[0](log_bucket(dims[:, 0])) + self.dims[1](log_bucket(dims[:, 1]))
        h = h + self.ndim(torch.tensor([min(len(s), 7) for s in shapes], device=dev))
        return self.mlp(h)

    def heads(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Low-rank factors ``(P, 2, features, rank)``, vector coefficients ``(P, features
        + 1)`` and log-gains ``(P,)`` of every parameter, in one batched pass."""
        uv = self.uv(hidden).view(-1, 2, self.features, self.rank)
        return uv, self.vector(hidden), self.gain(hidden)[:, 0]

    def tensor(self, uv: torch.Tensor, vector: torch.Tensor, log_gain: torch.Tensor, role: str,
               shape: tuple[int, ...], transposed: bool = False) -> torch.Tensor:
        """Build and scale one tensor from its row of :meth:`heads`; ``transposed`` (a
        matrix stored ``(in, out)``) gives its transpose, contiguous."""
        view = matrix_shape(shape)
        if len(view) == 2:
            a = self.phi.expand(uv[0], view[0])
            b = self.phi.expand(uv[1], view[1])
            if role not in BOUNDED_ROLES:
                std = target_std(role, shape, log_gain)
                if transposed and len(shape) == 2:  # B @ A.T is the transpose: no copy
                    return normalized_product(b, a, std)
                return _transpose(from_matrix(normalized_product(a, b, std), shape),
                                  transposed)
            raw = from_matrix(a @ b.T, shape)
        elif len(view) == 1:
            raw = self.phi.expand(vector[:-1], view[0]).reshape(shape)
        else:
            raw = vector[-1].reshape(shape)
        return _transpose(scale(raw, role, shape, log_gain), transposed)


def _transpose(tensor: torch.Tensor, transposed: bool) -> torch.Tensor:
    return tensor.T.contiguous() if transposed else tensor


def best_in_span(w: torch.Tensor, rows: torch.Tensor | None, cols: torch.Tensor | None,
                 rank: int) -> torch.Tensor:
    """Best rank-``rank`` approximation of ``w`` (Frobenius) whose column space lies in the
    span of ``rows`` and whose row space in the span of ``cols`` (``None``: anywhere)."""
    core = w.double()
    qr = torch.linalg.qr(rows.double())[0] if rows is not None else None
    qc = torch.linalg.qr(cols.double())[0] if cols is not None else None
    if qr is not None:
        core = qr.T @ core
    if qc is not None:
        core = core @ qc
    u, s, vh = torch.linalg.svd(core, full_matrices=False)
    low = (u[:, :rank] * s[:rank]) @ vh[:rank]
    if qr is not None:
        low = qr @ low
    if qc is not None:
        low = low @ qc.T
    return low.to(w.dtype)


BOUNDED_ROLES = ("norm_weight", "scale", "bias", "norm_bias")  # squashed, not standardized


def scale(raw: torch.Tensor, role: str, shape: tuple[int, ...],
          log_gain: torch.Tensor) -> torch.Tensor:
    """Map a raw tensor to the statistics its layer needs.

    * weights: zero-mean, std ``gain / sqrt(fan_in)`` (``gain`` learned, ``e^[-2, 2]``);
    * norm weights and multiplicative scales: ``2 * sigmoid(raw / 2)``, so ``raw = 0``
      gives 1 (the GHN-2 rule);
    * biases and norm biases: ``0.1 * tanh(raw)``;
    * embeddings, positional embeddings and tokens: std ``0.02 * gain``.
    """
    if role in ("norm_weight", "scale"):
        return 2 * torch.sigmoid(raw / 2)
    if role in ("bias", "norm_bias"):
        return 0.1 * torch.tanh(raw)
    if raw.numel() < 2:
        return raw
    unit = (raw - raw.mean()) / (raw.std() + 1e-8)
    return unit * target_std(role, shape, log_gain)


def target_std(role: str, shape: tuple[int, ...], log_gain: torch.Tensor) -> torch.Tensor:
    """The std a standardized tensor of ``role`` is scaled to (see :func:`scale`)."""
    gain = torch.exp(2 * torch.tanh(log_gain))
    if role in ("embedding", "pos_embedding", "token"):
        return 0.02 * gain
    return gain / math.sqrt(fan_in(shape))


def normalized_product(a: torch.Tensor, b: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``a @ b.T`` shifted to zero mean and scaled to ``std`` (unbiased, as ``Tensor.std``).

    The mean and variance of a rank-r product come from the factors in O((m + n) r^2),
    and the shift and scale fold into a single matrix multiply, so a large tensor is
    written once instead of being read and rewritten by each normalization step.
    """
    n = a.shape[0] * b.shape[0]
    a64, b64 = a.double(), b.double()  # sums of many products: no low-precision statistics
    mean = a64.sum(0) @ b64.sum(0) / n
    sum_sq = ((a64.T @ a64) * (b64.T @ b64)).sum()
    var = ((sum_sq - n * mean**2) / max(n - 1, 1)).clamp_min(0)
    factor = (std / (var.sqrt() + 1e-8)).to(a.dtype)
    return torch.addmm((-mean.to(a.dtype) * factor).reshape(1, 1), a * factor, b.T)

