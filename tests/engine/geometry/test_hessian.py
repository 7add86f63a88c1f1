"""Hessian spectrum (worker/engine/geometry/hessian.py, lanczos.py) against closed forms.

The quadratic L(w) = 1/2 (w - w*)^T H (w - w*) has Hessian H everywhere, so every estimate has
an exact answer from torch.linalg on H (float64): top-k eigenvalues, trace, spectral moments.
Statistical estimates are checked against their own standard errors, with the seed fixed.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from server.analysis_spec import Spectrum
from worker.engine.geometry.hessian import (
    gauss_quadrature,
    gradient_share,
    hutchinson_trace,
    lanczos,
    network_hvp,
    slq_density,
    spectrum,
    top_eigen,
)

F64 = torch.float64


def _orthogonal(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=F64))
    return q


def _sym(eigs: list[float] | torch.Tensor, seed: int = 0) -> torch.Tensor:
    lam = torch.as_tensor(eigs, dtype=F64)
    u = _orthogonal(lam.numel(), seed)
    h = u @ torch.diag(lam) @ u.T
    return (h + h.T) / 2


def _hessian_like(n: int = 200, seed: int = 0) -> torch.Tensor:
    """A few outliers (one near-degenerate pair), a bulk around 0, a negative outlier."""
    gen = torch.Generator().manual_seed(seed + 1)
    bulk = torch.rand(n - 6, generator=gen, dtype=F64) * 2 - 1
    outliers = torch.tensor([50.0, 30.0, 20.0, 10.001, 10.0, -20.0], dtype=F64)
    return _sym(torch.cat([outliers, bulk]), seed)


class Counted:
    """A matrix as an operator, counting its calls."""

    def __init__(self, h: torch.Tensor) -> None:
        self.h, self.calls = h, 0

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.h.to(v.dtype) @ v


# -- top-k ------------------------------------------------------------------------------------


def test_top_k_equals_eigvalsh_full_krylov_space() -> None:
    eigs = [7.0, 3.0, 3.0 + 1e-6, 1.0, -0.5, -4.0, -9.0] + [0.1 * i for i in range(33)]
    h = _sym(eigs, seed=3)
    n = h.shape[0]
    top = top_eigen(Counted(h), n, 5, n, seed=1)
    exact = torch.linalg.eigvalsh(h).flip(0)[:5]
    assert top.values == sorted(top.values, reverse=True)
    assert torch.allclose(torch.tensor(top.values, dtype=F64), exact, rtol=0, atol=1e-6)
    assert top.values[0] == pytest.approx(7.0, abs=1e-10)  # algebraic, not |-9|


def test_top_k_with_fewer_steps_than_parameters() -> None:
    h = _hessian_like()
    op = Counted(h)
    top = top_eigen(op, 200, 5, 40, seed=0)
    exact = torch.linalg.eigvalsh(h).flip(0)[:5]
    assert torch.allclose(torch.tensor(top.values, dtype=F64), exact, rtol=0, atol=1e-6)
    assert top.values[3] - top.values[4] == pytest.approx(0.001, abs=1e-6)  # near-degenerate
    assert op.calls == top.hvps == 40 <= math.ceil(1.2 * 40)


def test_ritz_vectors_are_eigenvectors_with_reported_residuals() -> None:
    h = _hessian_like(seed=5)
    top = top_eigen(Counted(h), 200, 5, 40, seed=2)
    y = top.vectors
    assert torch.allclose(y @ y.T, torch.eye(5, dtype=F64), atol=1e-10)
    true_res = (y @ h - torch.tensor(top.values, dtype=F64)[:, None] * y).norm(dim=1)
    assert float(true_res.max()) < 1e-6 * 50
    # The free residual estimate |beta_m s_{m,i}| is the true one.
    assert torch.allclose(torch.tensor(top.residuals, dtype=F64), true_res, atol=1e-9)
    # Partly converged pairs too: a short run's residuals are large and still exact.
    short = top_eigen(Counted(h), 200, 5, 8, seed=2)
    res8 = (short.vectors @ h - torch.tensor(short.values, dtype=F64)[:, None] * short.vectors)
    assert max(short.residuals) > 1e-3
    assert torch.allclose(torch.tensor(short.residuals, dtype=F64), res8.norm(dim=1), atol=1e-8)


def test_lanczos_needs_a_seed() -> None:
    with pytest.raises(ValueError, match="seed"):
        lanczos(Counted(torch.eye(3, dtype=F64)), 3, 2)


def test_exact_multiplicity_found_by_restart() -> None:
    # A single Krylov space sees each distinct eigenvalue once; the restart at the invariant
    # subspace must find the second copy of 5.0.
    h = _sym([5.0, 5.0, 2.0, 1.0, 0.0, -1.0], seed=7)
    top = top_eigen(Counted(h), 6, 3, 6, seed=0)
    assert top.values == pytest.approx([5.0, 5.0, 2.0], abs=1e-10)
    plain = lanczos(Counted(h), 6, 6, seed=0, restart=False)
    assert plain.steps == 5  # stopped at the invariant subspace: 5 distinct eigenvalues


def test_without_reorthogonalisation_ghosts_appear() -> None:
    # The reason for full reorthogonalisation: the plain recurrence run long repeats the
    # converged top eigenvalue (a "ghost"), which the reorthogonalised run never does.
    h = _hessian_like(seed=1)
    plain = lanczos(Counted(h), 200, 120, seed=0, reorthogonalize=False)
    full = lanczos(Counted(h), 200, 120, seed=0)
    near_top = [(r.eigh()[0] - 50.0).abs().lt(1e-6).sum().item() for r in (plain, full)]
    assert near_top[0] >= 2 and near_top[1] == 1
    q = full.basis
    assert torch.allclose(q @ q.T, torch.eye(120, dtype=F64), atol=1e-12)


def test_float32_operator_keeps_float64_recurrence() -> None:
    h = _hessian_like(seed=2)
    op32 = Counted(h.float())
    top = top_eigen(op32, 200, 5, 40, seed=0, dtype=torch.float32)
    exact = torch.linalg.eigvalsh(h).flip(0)[:5]
    assert torch.allclose(torch.tensor(top.values, dtype=F64), exact, rtol=1e-5, atol=0)


def test_float32_operator_runs_long_without_ghosts_in_a_float32_basis() -> None:
    """A float32 operator gets a float32 basis (half the Gram-Schmidt reads): run long past
    convergence, it stays semi-orthogonal (well under sqrt(eps32) ~ 2.4e-4, which is what Ritz
    values as accurate as the operator need: Simon 1984) and never repeats the top eigenvalue,
    while alpha and beta stay float64 (T is float64)."""
    h = _hessian_like(seed=1)
    res = lanczos(Counted(h.float()), 200, 120, seed=0, dtype=torch.float32)
    q = res.basis
    assert q.dtype == torch.float32 and res.alphas.dtype == F64
    gram = q.double() @ q.double().T
    assert torch.allclose(gram, torch.eye(120, dtype=F64), atol=6e-5)  # sqrt(eps32) / 4
    theta = res.eigh()[0]
    assert (theta - 50.0).abs().lt(1e-3).sum().item() == 1
    top = top_eigen(Counted(h.float()), 200, 5, 120, seed=0, dtype=torch.float32)
    exact = torch.linalg.eigvalsh(h).flip(0)[:5]
    assert torch.allclose(torch.tensor(top.values, dtype=F64), exact, rtol=1e-5, atol=0)
    assert top.vectors.dtype == F64
    for value, vec in zip(top.values, top.vectors, strict=True):
        assert torch.linalg.vector_norm(h @ vec - value * vec) < 1e-4 * abs(value)


# -- trace ------------------------------------------------------------------------------------


def test_hutchinson_within_three_standard_errors_and_shrinks() -> None:
    h = _hessian_like(n=60, seed=4)
    tr = float(h.trace())
    off = float((h**2).sum() - (h.diagonal() ** 2).sum())
    est = hutchinson_trace(Counted(h), 60, 1600, seed=0)
    assert est.hvps == est.probes == 1600
    assert abs(est.mean - tr) < 3 * est.stderr
    # Rademacher: Var(v^T H v) = 2 sum_{i != j} H_ij^2; SE^2 p estimates it (rel. sd ~4%).
    assert est.stderr**2 * 1600 == pytest.approx(2 * off, rel=0.15)
    small = hutchinson_trace(Counted(h), 60, 100, seed=0)
    assert 3.0 < small.stderr / est.stderr < 5.3  # 1/sqrt(p): sqrt(16) = 4


def test_hutchinson_exact_for_a_diagonal_matrix() -> None:
    d = torch.tensor([3.0, -1.0, 0.5, 2.0, -7.0], dtype=F64)
    est = hutchinson_trace(Counted(torch.diag(d)), 5, 10, seed=3)
    assert est.mean == pytest.approx(float(d.sum()), abs=1e-12) and est.stderr == 0.0


# -- density ----------------------------------------------------------------------------------


def test_gauss_quadrature_exact_for_polynomials() -> None:
    h = _hessian_like(n=40, seed=6) / 50
    q = torch.randn(40, generator=torch.Generator().manual_seed(9), dtype=F64)
    q = q / q.norm()
    m = 6
    nodes, weights = gauss_quadrature(lanczos(Counted(h), 40, m, seed=0, start=q))
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-12)
    hk = q.clone()
    for k in range(2 * m):  # exact up to degree 2m - 1
        assert float((weights * nodes**k).sum()) == pytest.approx(float(q @ hk), abs=1e-10)
        hk = h @ hk
    assert abs(float((weights * nodes ** (2 * m)).sum()) - float(q @ hk)) > 1e-8  # not beyond


def test_slq_moments_exact_on_a_diagonal_hessian() -> None:
    # For diagonal H every Rademacher q gives q^T H^k q = tr(H^k) / n: exact per vector.
    d = torch.tensor([4.0, -2.0, 1.0, 1.0 + 1e-7, 0.0, 0.3, -0.7, 9.0], dtype=F64)
    dens = slq_density(Counted(torch.diag(d)), 8, 5, 3, seed=0, broadening=0.01, points=256)
    for nodes, weights in zip(dens.nodes, dens.weights, strict=True):
        th, w = torch.tensor(nodes, dtype=F64), torch.tensor(weights, dtype=F64)
        assert float(w.sum()) == pytest.approx(1.0, abs=1e-12)
        assert float((w * th).sum()) == pytest.approx(float(d.mean()), abs=1e-10)
        assert float((w * th**2).sum()) == pytest.approx(float((d**2).mean()), abs=1e-10)


def test_slq_moments_statistical() -> None:
    n, vectors = 40, 300
    h = _hessian_like(n=n, seed=8) / 10
    dens = slq_density(Counted(h), n, 6, vectors, seed=1, broadening=0.02, points=512)
    assert dens.hvps == 6 * vectors
    th = torch.tensor(dens.nodes, dtype=F64)
    w = torch.tensor(dens.weights, dtype=F64)
    for power in (1, 2):
        hp = torch.linalg.matrix_power(h, power)
        per_vector = (w * th**power).sum(1)
        # Var(q^T A q) for Rademacher q / sqrt(n): 2 sum_{i != j} A_ij^2 / n^2.
        sd = math.sqrt(2 * float((hp**2).sum() - (hp.diagonal() ** 2).sum())) / n
        assert abs(float(per_vector.mean()) - float(hp.trace()) / n) < 4 * sd / math.sqrt(vectors)
        assert float(per_vector.std()) == pytest.approx(sd, rel=0.25)


def test_density_integrates_to_one_with_the_broadening_asked() -> None:
    h = _hessian_like(n=60, seed=9)
    dens = slq_density(Counted(h), 60, 20, 4, seed=0, broadening=0.01, points=4096)
    x, y = torch.tensor(dens.grid, dtype=F64), torch.tensor(dens.density, dtype=F64)
    assert float(torch.trapezoid(y, x)) == pytest.approx(1.0, abs=1e-12)
    assert bool((y >= 0).all())
    th = torch.tensor(dens.nodes, dtype=F64)
    w = torch.tensor(dens.weights, dtype=F64) / len(dens.nodes)
    lo, hi = float(th.min()), float(th.max())
    sigma = 0.01 * (hi - lo)
    assert x[0].item() == pytest.approx(lo - 5 * sigma) and x[-1].item() == pytest.approx(
        hi + 5 * sigma)
    # A mixture of Gaussians at the nodes: mean sum w theta, second moment + sigma^2.
    m1, m2 = float((w * th).sum()), float((w * th**2).sum())
    assert float(torch.trapezoid(x * y, x)) == pytest.approx(m1, abs=1e-3 * (hi - lo))
    assert float(torch.trapezoid(x**2 * y, x)) == pytest.approx(m2 + sigma**2, rel=1e-3)


# -- gradient share ---------------------------------------------------------------------------


def test_gradient_share_one_inside_zero_outside() -> None:
    h = _hessian_like(seed=10)
    top = top_eigen(Counted(h), 200, 5, 40, seed=0)
    coef = torch.tensor([0.3, -2.0, 1.0, 0.5, 4.0], dtype=F64)
    inside = coef @ top.vectors
    other = torch.randn(200, generator=torch.Generator().manual_seed(1), dtype=F64)
    outside = other - top.vectors.T @ (top.vectors @ other)
    assert gradient_share(inside, top.vectors) == pytest.approx(1.0, abs=1e-12)
    assert gradient_share(outside, top.vectors) == pytest.approx(0.0, abs=1e-12)
    mixed = 3 * top.vectors[0] + 4 * outside / outside.norm()
    assert gradient_share(mixed.float(), top.vectors) == pytest.approx(9 / 25, abs=1e-6)
    assert math.isnan(gradient_share(torch.zeros(200), top.vectors))


# -- networks ---------------------------------------------------------------------------------


def _quadratic_loss(h: torch.Tensor, w_star: torch.Tensor):
    def loss(p: dict[str, torch.Tensor]) -> torch.Tensor:
        d = p["w"] - w_star
        return 0.5 * d @ (h @ d)
    return loss


def test_quadratic_through_network_hvp_matches_the_matrix() -> None:
    h = _hessian_like(n=80, seed=11)
    w_star = torch.randn(80, generator=torch.Generator().manual_seed(2), dtype=F64)
    w = torch.zeros(80, dtype=F64)
    op, n = network_hvp(_quadratic_loss(h, w_star), {"w": w})
    assert n == 80
    net = top_eigen(op, n, 5, 30, seed=4)
    direct = top_eigen(Counted(h), 80, 5, 30, seed=4)
    assert net.values == pytest.approx(direct.values, abs=1e-9)
    assert torch.allclose(torch.tensor(net.values[:3], dtype=F64),
                          torch.linalg.eigvalsh(h).flip(0)[:3], atol=1e-6)
    assert torch.allclose(op.gradient(), h @ (w - w_star), atol=1e-12)
    assert op.hvps == 30
    # spectrum() takes the operator's own dtype: float32 parameters give float32 HVPs.
    op32, _ = network_hvp(_quadratic_loss(h.float(), w_star.float()), {"w": w.float()})
    assert op32(torch.ones(80, dtype=F64)).dtype == torch.float32
    cfg = Spectrum(top_k=3, lanczos_steps=30, trace_probes=20, slq_steps=8, slq_vectors=2)
    got, want = spectrum(op32, 80, cfg, seed=1), spectrum(Counted(h), 80, cfg, seed=1)
    assert got["top_eigenvalues"] == pytest.approx(want["top_eigenvalues"], rel=1e-5)
    assert got["trace"] == pytest.approx(want["trace"], rel=1e-5)


def _mlp() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)  # test data only; the code under test never draws from it
    net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    gen = torch.Generator().manual_seed(3)
    return net, torch.randn(12, 3, generator=gen, dtype=F64), torch.randn(12, 2,
                                                                           generator=gen, dtype=F64)


def test_network_hvp_equals_autograd_hessian_on_an_mlp() -> None:
    net, x, y = _mlp()
    params = {k: v.detach().clone() for k, v in net.named_parameters()}
    shapes = [(k, v.shape, v.numel()) for k, v in params.items()]

    def loss_of(p):
        return ((functional_call(net, p, (x,)) - y) ** 2).mean()

    def flat_loss(flat):
        chunks = torch.split(flat, [s[2] for s in shapes])
        return loss_of({k: c.view(shape) for (k, shape, _), c in zip(shapes, chunks,
                                                                       strict=True)})

    theta = torch.cat([v.reshape(-1) for v in params.values()])
    full = torch.autograd.functional.hessian(flat_loss, theta)
    grad = torch.autograd.functional.jacobian(flat_loss, theta)

    # The same loss as a sum over two evaluation batches weighted by batch size.
    def batched(p):
        parts = [((functional_call(net, p, (x[s],)) - y[s]) ** 2).mean() * len(x[s]) / len(x)
                 for s in (slice(0, 5), slice(5, 12))]
        return sum(parts)

    for fn in (loss_of, batched):
        op, n = network_hvp(fn, params)
        assert n == theta.numel() == 32
        gen = torch.Generator().manual_seed(5)
        for _ in range(3):
            v = torch.randn(n, generator=gen, dtype=F64)
            hv = op(v)
            assert hv.dtype == F64 and hv.shape == (n,)
            assert torch.allclose(hv, full @ v, rtol=0, atol=1e-12)
        assert torch.allclose(op.gradient(), grad, atol=1e-12)
        assert op.loss == pytest.approx(float(flat_loss(theta)), rel=1e-12)
    assert all(torch.equal(params[k], dict(net.named_parameters())[k]) for k in params)


def test_network_hvp_unused_and_linear_parameters_have_zero_rows() -> None:
    w = torch.tensor([1.0, 2.0], dtype=F64)

    def loss(p):  # quadratic in w, linear in b (constant gradient), c unused
        return (p["w"] ** 2).sum() * 1.5 + 3.0 * p["b"].sum()

    op, n = network_hvp(loss, {"w": w, "b": torch.zeros(3, dtype=F64),
                              "c": torch.zeros(2, dtype=F64)})
    v = torch.arange(1.0, 8.0, dtype=F64)
    expected = torch.tensor([3.0, 6.0, 0, 0, 0, 0, 0], dtype=F64)
    assert torch.equal(op(v), expected)
    assert torch.equal(op.gradient(), torch.tensor([3.0, 6.0, 3, 3, 3, 0, 0], dtype=F64))


# -- the analysis's entry point ---------------------------------------------------------------


def test_spectrum_dict_is_complete_deterministic_and_leaves_global_rng() -> None:
    h = _hessian_like(n=50, seed=12)
    cfg = Spectrum(top_k=3, lanczos_steps=20, trace_probes=30, slq_steps=10, slq_vectors=2,
                   broadening=0.05, density_points=64)
    g = torch.randn(50, generator=torch.Generator().manual_seed(0), dtype=F64)
    rng = torch.get_rng_state()
    op = Counted(h)
    out = spectrum(op, 50, cfg, seed=7, grad=g)
    assert torch.equal(torch.get_rng_state(), rng)
    json.dumps(out, allow_nan=False)
    assert out["hvps"] == op.calls == 20 + 30 + 2 * 10
    top = top_eigen(Counted(h), 50, 3, 20, seed=7)
    assert out["top_eigenvalues"] == top.values
    assert out["lanczos_residuals"] == top.residuals
    assert out["gradient_share"] == gradient_share(g, top.vectors)
    tr = hutchinson_trace(Counted(h), 50, 30, seed=7)
    assert (out["trace"], out["trace_stderr"], out["trace_probes"]) == (tr.mean, tr.stderr, 30)
    assert len(out["density"]["x"]) == len(out["density"]["y"]) == 64
    assert spectrum(Counted(h), 50, cfg, seed=7, grad=None)["gradient_share"] is None
    assert spectrum(Counted(h), 50, cfg, seed=8, grad=g)["trace"] != out["trace"]


def test_spectrum_of_a_diverged_network_is_nan_not_an_error() -> None:
    cfg = Spectrum(top_k=2, lanczos_steps=4, trace_probes=3, slq_steps=3, slq_vectors=1,
                   density_points=16)
    out = spectrum(lambda v: torch.full_like(v, math.nan), 10, cfg, seed=0)
    assert all(math.isnan(x) for x in out["top_eigenvalues"]) and math.isnan(out["trace"])
    assert all(math.isnan(x) for x in out["density"]["y"])
