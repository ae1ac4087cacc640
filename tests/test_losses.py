"""Losses and gradients of ufm.losses: Taylor slopes, stability, soft labels."""

import numpy as np
import pytest

from ufm import losses
from ufm.problems import UFMProblem

PROBLEMS = [
    dict(K=3, n=2, d=4, loss="ce"),
    dict(K=3, counts=[3, 1, 2], d=2, loss="ce", bias=True, lam_W=0.1, lam_H=0.2, lam_b=0.3),
    dict(K=4, n=1, d=5, loss="mse", lam_W=0.05, lam_H=0.01),
    dict(K=2, counts=[1, 4], d=3, loss="mse", bias=True),
]


def _random_point(p, rng):
    b = rng.standard_normal(p.K) if p.bias else None
    return rng.standard_normal((p.K, p.d)), rng.standard_normal((p.d, p.N)), b


@pytest.mark.parametrize("kw", PROBLEMS)
def test_gradient_taylor_slope(kw):
    """f(x + t v) - f(x) - t <g, v> = O(t^2): the log-log slope of the remainder is 2."""
    p = UFMProblem(**kw)
    rng = np.random.default_rng(0)
    W, H, b = _random_point(p, rng)
    vW, vH, vb = _random_point(p, rng)
    dW, dH, db = losses.gradients(p, W, H, b)
    f0 = losses.objective(p, W, H, b)
    slope_dir = np.sum(dW * vW) + np.sum(dH * vH) + (np.sum(db * vb) if p.bias else 0.0)
    ts = np.logspace(-1, -4, 7)
    rem = []
    for t in ts:
        bt = b + t * vb if p.bias else None
        rem.append(abs(losses.objective(p, W + t * vW, H + t * vH, bt) - f0 - t * slope_dir))
    slopes = np.diff(np.log(rem)) / np.diff(np.log(ts))
    assert np.all(np.abs(slopes - 2) < 0.1), slopes


def test_soft_label_ce_gradient_and_entropy():
    rng = np.random.default_rng(1)
    Y = rng.dirichlet(np.ones(5), size=7).T
    p = UFMProblem(labels=Y, d=3)
    # at Z = log Y (plus any column constant) CE equals the entropy and the gradient vanishes
    Z = np.log(Y) + rng.standard_normal(7)[None, :]
    entropy = -np.mean(np.sum(Y * np.log(Y), axis=0))
    assert losses.ce(Z, Y) == pytest.approx(entropy, rel=1e-12)
    assert np.abs(losses.ce_grad(Z, Y)).max() < 1e-15
    assert p.soft and p.N == 7


def test_ce_is_stable_for_huge_logits():
    Y = np.eye(3)
    Z = 1e4 * (2 * np.eye(3) - 1)
    assert losses.ce(Z, Y) == 0.0
    assert losses.ce(-Z, Y) == pytest.approx(2e4 + np.log(2), rel=1e-14)  # two wrong logits tie at 1e4
    assert np.all(np.isfinite(losses.ce_grad(-Z, Y)))


def test_shape_errors_name_the_array():
    p = UFMProblem(K=3, n=2, d=4)
    with pytest.raises(ValueError, match=r"W must be K x d = 3 x 4"):
        losses.objective(p, np.zeros((4, 3)), np.zeros((4, 6)))
    with pytest.raises(ValueError, match=r"H must be d x N = 4 x 6"):
        losses.gradients(p, np.zeros((3, 4)), np.zeros((4, 5)))
    pb = UFMProblem(K=3, n=2, d=4, bias=True)
    with pytest.raises(ValueError, match=r"b must have shape \(3,\)"):
        losses.objective(pb, np.zeros((3, 4)), np.zeros((4, 6)), None)


def test_stationarity_residual_detects_non_critical_points():
    p = UFMProblem(K=3, n=2, d=4, lam_W=0.1, lam_H=0.1)
    W, H, _ = _random_point(p, np.random.default_rng(2))
    res = losses.stationarity_residuals(p, W, H)
    assert min(res.values()) > 1e-3
