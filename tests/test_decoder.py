"""The low-rank decoder's family: what it can express, and that old checkpoints keep theirs."""

from __future__ import annotations

import json

import pytest
import torch

import hyperinit
from hyperinit.decoder import (
    IndexBasis,
    IndexFeatures,
    LowRankDecoder,
    best_in_span,
    from_matrix,
    to_matrix,
)


def _rank(r: int, rows: int, cols: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(rows * cols)
    return torch.randn(rows, r, generator=g) @ torch.randn(r, cols, generator=g)


@pytest.mark.parametrize("shape", [(8, 4, 3, 3), (8, 1, 3, 3), (1, 1, 5), (7, 5), (6,),
                                   (4, 3, 2, 5, 7)])
def test_to_matrix_is_the_generated_view_and_from_matrix_undoes_it(shape):
    w = torch.randn(shape)
    view = to_matrix(w)
    assert torch.equal(from_matrix(view, shape), w)
    if len(shape) == 4:  # rows are (out, kh), columns (in, kw)
        assert torch.equal(view[1 * shape[2] + 2], w[1, :, 2, :].reshape(-1))


@pytest.mark.parametrize("n", [1, 7, 8, 9, 300])
def test_index_basis_expand_is_the_basis_times_the_coefficients(n):
    basis, coefficients = IndexBasis(8), torch.randn(8, 3)
    full = basis(n)
    assert full.shape == (n, 8)
    assert torch.allclose(basis.expand(coefficients, n), full @ coefficients, atol=1e-6)
    assert torch.equal(full[:min(n, 8)], torch.eye(8)[:min(n, 8)])
    assert torch.allclose(full.norm(dim=1), torch.ones(n), atol=1e-5)  # unit rows throughout


def test_the_index_family_holds_any_rank_r_matrix_up_to_its_rows():
    decoder = LowRankDecoder(16, rank=4, features=32)
    target = _rank(4, 30, 20)
    assert torch.allclose(decoder.project(target), target, atol=1e-4)


def test_the_fourier_family_cannot_hold_a_matrix_wider_than_its_features():
    # The 0.2 decoder: rank 4 in 8 fixed features per side, so most of a random rank-4
    # 30 x 20 matrix lies outside it; the index basis of the same size keeps more of it.
    target = _rank(4, 30, 20)
    fourier = LowRankDecoder(16, rank=4, features=8, basis="fourier").project(target)
    index = LowRankDecoder(16, rank=4, features=8).project(target)
    error = {name: ((m - target).norm() / target.norm()).item()
             for name, m in (("fourier", fourier), ("index", index))}
    assert error["fourier"] > 0.5 and error["index"] < error["fourier"]


def test_best_in_span_is_the_truncated_svd_without_bases():
    w = torch.randn(12, 9, dtype=torch.float64)
    u, s, vh = torch.linalg.svd(w)
    assert torch.allclose(best_in_span(w, None, None, 3), (u[:, :3] * s[:3]) @ vh[:3])
    phi = IndexFeatures(4)(12).double()
    inside = best_in_span(w, phi, None, 9)
    assert torch.allclose(inside, phi @ torch.linalg.lstsq(phi, inside).solution, atol=1e-8)


def test_predictions_of_a_trained_width_use_its_own_factor_rows():
    # With the index basis every row of a factor up to `features` is its own output of the
    # head: changing the head's rows for index 5 changes row 5 (and only row 5) of A.
    ghn = hyperinit.GraphHyperNetwork(hyperinit.GHNConfig(hidden=16, layers=1, heads=2,
                                                          rank=4, features=8)).eval()
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    before = hyperinit.predict_state_dict(model, ghn)["0.weight"]
    with torch.no_grad():  # the head's bias rows of U (side 0) at index 5
        ghn.decoder.uv.bias.view(2, 8, 4)[0, 5] += 10.0
    after = hyperinit.predict_state_dict(model, ghn)["0.weight"]
    # The tensor is standardized as a whole, so the other rows change by one common
    # scale and shift; row 5 does not follow them.
    others = [i for i in range(8) if i != 5]
    x = torch.stack([before[others].reshape(-1), torch.ones(len(others) * 6)], dim=1)
    fit = torch.linalg.lstsq(x, after[others].reshape(-1, 1)).solution
    assert torch.allclose(x @ fit, after[others].reshape(-1, 1), atol=1e-5)
    predicted_row5 = fit[0] * before[5] + fit[1]
    assert (predicted_row5 - after[5]).abs().max() > 1e-2


def test_a_config_without_decoder_is_the_fourier_decoder_of_0_2(tmp_path):
    size = {"hidden": 16, "layers": 1, "heads": 2, "rank": 4, "features": 8}
    old = hyperinit.GraphHyperNetwork(hyperinit.GHNConfig(**size, decoder="fourier"))
    old.save_pretrained(tmp_path / "old")
    config = tmp_path / "old" / "config.json"
    config.write_text(json.dumps({k: v for k, v in json.loads(config.read_text()).items()
                                  if k != "decoder"}))  # as hyperinit 0.2 wrote it
    loaded = hyperinit.load_generator(tmp_path / "old")
    assert loaded.config.decoder == "fourier" and isinstance(loaded.decoder.phi, IndexFeatures)
    model = torch.nn.Linear(5, 3)
    assert torch.equal(hyperinit.predict_state_dict(model, loaded)["weight"],
                       hyperinit.predict_state_dict(model, old.eval())["weight"])
    new = hyperinit.GraphHyperNetwork(hyperinit.GHNConfig(**size))
    new.save_pretrained(tmp_path / "new")
    assert json.loads((tmp_path / "new" / "config.json").read_text())["decoder"] == "index"
    assert isinstance(hyperinit.load_generator(tmp_path / "new").decoder.phi, IndexBasis)


def test_an_unknown_basis_is_refused():
    with pytest.raises(ValueError, match="basis must be one of index, fourier, got 'dct'"):
        LowRankDecoder(16, rank=4, features=8, basis="dct")
