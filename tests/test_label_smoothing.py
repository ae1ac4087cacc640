"""Label-smoothed cross-entropy (ufm.label_smoothing, THEORY §1.5) through every solver.

The loss enters ufm through its own file and one registry line; these tests check that
``simulate`` (GD and flow), ``solve(method="prox")`` with its certified duality gap and the
stationarity check work for it, and that its optimum has the finite margin of THEORY (1.2)
without weight decay and ``log(1/q - (K-1))``, ``q = gamma + eps/K``, with it.
"""

import math

import numpy as np
import pytest
from scipy.special import log_softmax

import ufm
from ufm import closed_form, convex, loss_registry, losses
from ufm.label_smoothing import LabelSmoothedCE
from ufm.problems import UFMProblem
from ufm.results import Status


def margins(problem, Z):
    """z_y - z_c for every example and every wrong class c."""
    idx = np.arange(problem.N)
    zy = Z[problem.y, idx]
    out = zy[None, :] - Z
    out[problem.y, idx] = np.inf
    return out[np.isfinite(out)]


# -- the loss itself ------------------------------------------------------------------
def test_value_is_the_cross_entropy_against_smoothed_targets():
    rng = np.random.default_rng(0)
    K, N, eps = 5, 7, 0.2
    Z = 3 * rng.standard_normal((K, N))
    y = rng.integers(0, K, N)
    Y = np.eye(K)[:, y]
    T = (1 - eps) * Y + eps / K                    # the definition, written out
    loss = LabelSmoothedCE(eps=eps)
    assert loss.value(Z, Y) == pytest.approx(-np.mean(np.sum(T * log_softmax(Z, axis=0), axis=0)), rel=1e-13)
    G = loss.grad(Z, Y)
    V = rng.standard_normal((K, N))
    h = 1e-6
    fd = (loss.value(Z + h * V, Y) - loss.value(Z - h * V, Y)) / (2 * h)
    assert np.sum(G * V) == pytest.approx(fd, rel=1e-7)
    # its minimum is at softmax(z) = t, with the entropy of t as value
    Zmin = np.log(T) + rng.standard_normal(N)      # any column shift
    assert np.abs(loss.grad(Zmin, Y)).max() < 1e-15
    assert loss.value(Zmin, Y) == pytest.approx(-np.mean(np.sum(T * np.log(T), axis=0)), rel=1e-13)


def test_named_spellings_and_bad_eps():
    p = UFMProblem(K=3, n=2, d=4, loss="ls_ce(eps=0.05)")
    assert p.loss == LabelSmoothedCE(eps=0.05) and p.loss != LabelSmoothedCE(eps=0.1)
    assert UFMProblem(K=3, n=2, d=4, loss="ls_ce").loss == LabelSmoothedCE(eps=0.1)
    assert p.as_dict()["loss"] == "ls_ce(eps=0.05)"
    assert UFMProblem(**p.as_dict()).loss == p.loss                  # the spec rebuilds the loss
    assert loss_registry.LOSSES["ls_ce"] is LabelSmoothedCE
    for bad in (0.0, 1.0, -0.1, "x"):
        with pytest.raises(ValueError, match="eps"):
            LabelSmoothedCE(eps=bad)
    with pytest.raises(ValueError, match="loss must be one of"):
        UFMProblem(K=3, n=2, d=4, loss="smooth")
    with pytest.raises(ValueError, match="name=number"):
        UFMProblem(K=3, n=2, d=4, loss="ls_ce(0.1)")


def test_no_closed_form_of_plain_ce_is_claimed():
    p = UFMProblem(K=4, n=3, d=6, loss="ls_ce", lam_W=0.01, lam_H=0.01)
    assert not closed_form.applies(p)[0]
    assert not convex.applies_svm(p.replace(lam_W=0.0, lam_H=0.0))[0]
    assert ufm.solve(p).meta["auto"]["method"] == "prox"


# -- the optimum: prox, certified, against THEORY §1.5 ------------------------------
@pytest.mark.parametrize("K, n, eps", [(4, 3, 0.1), (3, 2, 0.3)])
def test_optimum_without_weight_decay_has_the_finite_margin_of_theory(K, n, eps):
    p = UFMProblem(K=K, n=n, d=K, loss=LabelSmoothedCE(eps=eps))
    sol = ufm.solve(p, method="prox", tol=1e-13)
    assert sol.success and sol.meta["rel_duality_gap"] < 1e-12
    s0 = math.log(1 + K * (1 - eps) / eps)                          # THEORY (1.2)
    assert p.loss.etf_margin(K) == pytest.approx(s0, rel=1e-15)
    np.testing.assert_allclose(margins(p, sol.Z), s0, rtol=1e-6)
    # the weights stay finite: ||W||^2 = ||H||^2 = (K-1) s0 sqrt(n) (balanced split, THEORY §1.5)
    assert np.sum(sol.W ** 2) == pytest.approx((K - 1) * s0 * math.sqrt(n), rel=1e-6)
    assert np.sum(sol.H ** 2) == pytest.approx((K - 1) * s0 * math.sqrt(n), rel=1e-6)
    assert max(sol.meta["stationarity"].values()) < 1e-6           # ~0.5 at a random start
    # the value is the entropy of the smoothed target
    t = np.full(K, eps / K)
    t[0] += 1 - eps
    assert sol.objective == pytest.approx(-np.sum(t * np.log(t)), rel=1e-12)


@pytest.mark.slow
def test_optimum_with_weight_decay_and_the_zero_regime():
    K, n, eps, lam = 4, 3, 0.1, 0.005
    p = UFMProblem(K=K, n=n, d=6, loss=LabelSmoothedCE(eps=eps), lam_W=lam, lam_H=lam)
    sol = ufm.solve(p, method="prox", tol=1e-12)
    assert sol.success and sol.meta["rel_duality_gap"] < 1e-11
    q = p.gamma + eps / K
    s = math.log(1 / q - (K - 1))
    assert p.loss.etf_margin(K, p.gamma) == pytest.approx(s, rel=1e-15)
    np.testing.assert_allclose(margins(p, sol.Z), s, rtol=1e-7)
    assert s < p.loss.etf_margin(K) < math.log(1 / p.gamma - (K - 1))   # below both the no-decay and CE margins
    # independent check of the optimum value: cvxpy on the same convex form
    cvx = ufm.solve(p, method="convex")
    assert cvx.objective == pytest.approx(sol.objective, rel=1e-8)
    # K gamma + eps >= 1: the zero solution, exactly as the theory's threshold says
    lam0 = (1 - eps) / K / math.sqrt(n) * 1.01
    z = ufm.solve(p.replace(lam_W=lam0, lam_H=lam0), method="prox")
    assert z.regime == "zero" and z.status is Status.optimal and np.all(z.Z == 0)
    below = ufm.solve(p.replace(lam_W=lam0 / 1.03, lam_H=lam0 / 1.03), method="prox")
    assert below.regime != "zero" and below.success and np.abs(below.Z).max() > 0


# -- simulate: GD and flow on the compiled kernels, stationarity -----------------------
@pytest.mark.slow
def test_gd_and_flow_reach_the_certified_optimum():
    p = UFMProblem(counts=[3, 1, 2], K=3, d=4, loss="ls_ce(eps=0.2)", bias=True, lam_W=0.01, lam_H=0.02,
                   lam_b=0.01)
    sol = ufm.solve(p, method="prox", tol=1e-12)
    assert sol.success and sol.meta["rel_duality_gap"] < 1e-11
    gd = ufm.simulate(p, steps=30_000, lr=1.0, seeds=2, record=("objective", "W", "H", "b"))
    assert gd.status is Status.completed and "ls_ce(eps=0.2) targets" in gd.meta["loss_kernel"]
    np.testing.assert_allclose(gd.objective[:, -1], sol.objective, rtol=1e-9)
    for i in range(2):
        W, H, b = gd.W[i, -1], gd.H[i, -1], gd.b[i, -1]
        res = losses.stationarity_residuals(p, W, H, b)
        assert max(res.values()) < 1e-7, res
        np.testing.assert_allclose(losses.logits(W, H, b), sol.Z, atol=1e-5)
    # the kernel's recorded loss is the NumPy objective of the same state
    assert gd.objective[0, -1] == pytest.approx(losses.objective(p, gd.W[0, -1], gd.H[0, -1], gd.b[0, -1]), rel=1e-12)
    fl = ufm.simulate(p, steps=100, lr=300.0, mode="flow", record=("objective",))
    assert fl.status is Status.completed
    assert fl.objective[0, -1] == pytest.approx(sol.objective, rel=1e-8)


def test_gd_without_weight_decay_stops_at_the_finite_margin():
    K, n, eps = 4, 3, 0.1
    p = UFMProblem(K=K, n=n, d=6, loss=LabelSmoothedCE(eps=eps))
    start = ufm.simulate(p, steps=1, lr=2.0, record=("W", "H"))
    W0, H0 = start.W[0, 0], start.H[0, 0]
    res0 = max(losses.stationarity_residuals(p, W0, H0).values())
    tr = ufm.simulate(p, steps=20_000, lr=2.0, record=("objective", "W", "H"))
    W, H = tr.W[0, -1], tr.H[0, -1]
    res = max(losses.stationarity_residuals(p, W, H).values())
    assert res0 > 0.1 and res < 1e-10
    s0 = math.log(1 + K * (1 - eps) / eps)
    np.testing.assert_allclose(margins(p, W @ H), s0, rtol=1e-8)
    # the norms stopped growing: the last tenth of the run moved the weights by almost nothing
    j = np.searchsorted(tr.steps, 18_000)
    assert np.linalg.norm(tr.W[0, -1] - tr.W[0, j]) < 1e-6 * np.linalg.norm(W)


def test_compiled_gd_steps_equal_the_numpy_reference():
    """The kernel runs the CE loss on the smoothed targets: step for step the NumPy gradient of the loss object."""
    p = UFMProblem(K=3, counts=[2, 3, 1], d=5, loss="ls_ce(eps=0.3)", bias=True, lam_W=0.01, lam_H=0.02)
    tr = ufm.simulate(p, steps=50, lr=0.5, record=("W", "H", "b"), record_steps=[0, 50], init_scale=0.5)
    start = {"W": tr.W[0, 0], "H": tr.H[0, 0], "b": tr.b[0, 0]}
    end, _ = losses.gd_reference(p, start, lr=0.5, steps=50)
    for name in ("W", "H", "b"):
        np.testing.assert_allclose(getattr(tr, name)[0, -1], end[name], rtol=1e-11, atol=1e-13)
    plain = p.replace(loss="ce")             # a different loss really moves differently
    other, _ = losses.gd_reference(plain, start, lr=0.5, steps=50)
    assert np.abs(other["W"] - end["W"]).max() > 1e-3


@pytest.mark.slow
def test_the_loss_module_imports_first_in_a_fresh_interpreter():
    """No import cycle: the loss's own file, the registry and the protocol import in any order."""
    import subprocess
    import sys

    for first in ("ufm.label_smoothing", "ufm.loss_registry", "ufm.losses", "ufm.problems"):
        code = f"import {first}; from ufm.loss_registry import LOSSES; assert sorted(LOSSES) == ['ce', 'ls_ce', 'mse']"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode == 0, (first, out.stderr)
