"""Closed forms against independent numerical solutions (THEORY §1-§4, TV1-TV3).

Every closed form is checked three ways: the published test vector, the
first-order conditions of THEORY §4 at the returned (W, H, b), and an
independent L-BFGS (or plain gradient descent) run on the nonconvex objective.
"""

import math

import numpy as np
import pytest

import ufm
from ufm import closed_form, losses
from ufm.problems import LayerPeeledProblem, UFMProblem
from ufm import NoMethodApplies
from ufm.results import Status

from conftest import nonconvex_minimize

P = lambda K: np.eye(K) - np.ones((K, K)) / K  # noqa: E731


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-300)


def assert_critical(problem, sol, tol=1e-10):
    res = losses.stationarity_residuals(problem, sol.W, sol.H, sol.b)
    assert max(res.values()) < tol, res
    assert rel(losses.objective(problem, sol.W, sol.H, sol.b), sol.objective) < 1e-12


# -- balanced cross-entropy ---------------------------------------------------------
def test_tv1_balanced_ce_numbers():
    p = UFMProblem(K=4, n=3, d=6, loss="ce", lam_W=0.01, lam_H=0.01)
    sol = ufm.solve(p, method="closed_form")
    assert sol.regime == "etf" and sol.success and sol.method == "closed_form"
    m = sol.meta
    assert m["gamma"] == pytest.approx(0.0173205, abs=1e-7)
    assert m["s"] == pytest.approx(4.002504, abs=1e-6)
    assert m["t"] == pytest.approx(3.001878, abs=1e-6)
    assert m["w_sq"] == pytest.approx(5.199405, abs=1e-6)
    assert m["h_sq"] == pytest.approx(1.733135, abs=1e-6)
    assert sol.objective == pytest.approx(0.2613364, abs=1e-7)
    # the matrices carry what the scalars say
    np.testing.assert_allclose(np.sum(sol.W**2, axis=1), m["w_sq"], rtol=1e-12)
    np.testing.assert_allclose(np.sum(sol.H**2, axis=0), m["h_sq"], rtol=1e-12)
    cos = sol.gram_W / m["w_sq"]
    np.testing.assert_allclose(cos, np.eye(4) + (1 - np.eye(4)) * (-1 / 3), atol=1e-12)
    np.testing.assert_allclose(np.linalg.svd(sol.Z, compute_uv=False)[:3], m["s"] * math.sqrt(3), rtol=1e-12)
    # h = sqrt(lam_W/(n lam_H)) w_k (NC1 + NC3)
    np.testing.assert_allclose(sol.H, math.sqrt(0.01 / (3 * 0.01)) * sol.W.T @ p.Y, atol=1e-12)
    assert_critical(p, sol)


CE_CASES = [
    dict(K=4, n=3, d=6, lam_W=0.01, lam_H=0.01),
    dict(K=3, n=2, d=2, lam_W=0.05, lam_H=0.02),                    # d = K-1
    dict(K=5, n=1, d=7, lam_W=0.1, lam_H=0.03),
    dict(K=4, n=2, d=4, lam_W=0.02, lam_H=0.01, bias=True, lam_b=0.3),
    dict(K=4, n=3, d=6, lam_W=0.2, lam_H=0.2),                      # zero regime, K gamma = 1.386
    dict(K=3, n=2, d=3, lam_W=0.3, lam_H=0.25, bias=True, lam_b=0.1),  # zero regime with bias
]


@pytest.mark.slow
@pytest.mark.parametrize("kw", CE_CASES)
def test_balanced_ce_matches_nonconvex_solver(kw):
    p = UFMProblem(loss="ce", **kw)
    sol = ufm.solve(p, method="closed_form")
    assert sol.regime == ("zero" if p.K * p.gamma >= 1 else "etf") and sol.status is Status.exact
    assert_critical(p, sol)
    f, W, H, b = nonconvex_minimize(p, seed=1)
    assert rel(f, sol.objective) < 1e-6
    # the optimum's Grams are unique (rotations aside)
    np.testing.assert_allclose(W @ W.T, sol.gram_W, atol=1e-4 * max(1.0, np.abs(sol.gram_W).max()))
    np.testing.assert_allclose(H.T @ H, sol.gram_H, atol=1e-4 * max(1.0, np.abs(sol.gram_H).max()))


@pytest.mark.slow
def test_balanced_ce_plain_gradient_descent_tv1():
    """Plain GD (step 1, as in THEORY TV1) lands on the closed form."""
    p = UFMProblem(K=4, n=3, d=6, loss="ce", bias=True, lam_W=0.01, lam_H=0.01, lam_b=0.01)
    rng = np.random.default_rng(0)
    W, H, b = 0.1 * rng.standard_normal((4, 6)), 0.1 * rng.standard_normal((6, 12)), 0.1 * rng.standard_normal(4)
    for _ in range(30000):
        dW, dH, db = losses.gradients(p, W, H, b)
        W, H, b = W - dW, H - dH, b - db
    sol = ufm.solve(p)
    assert rel(losses.objective(p, W, H, b), sol.objective) < 1e-9
    np.testing.assert_allclose(np.sum(W**2, axis=1), sol.meta["w_sq"], rtol=1e-6)
    assert np.linalg.norm(b) < 1e-8


@pytest.mark.slow
def test_ce_zero_threshold_is_sharp():
    """Zero iff K gamma >= 1: just below, the nonconvex optimum beats log K; at it, it does not."""
    K, n = 4, 3
    lam_at = 1 / (K * math.sqrt(n))          # K gamma = 1 with lam_W = lam_H
    below = UFMProblem(K=K, n=n, d=4, lam_W=0.9 * lam_at, lam_H=0.9 * lam_at)
    at = UFMProblem(K=K, n=n, d=4, lam_W=lam_at * 1.0000001, lam_H=lam_at * 1.0000001)
    assert ufm.solve(below).regime == "etf" and ufm.solve(at).regime == "zero"
    assert nonconvex_minimize(below, seed=2)[0] < math.log(K) - 1e-4
    assert nonconvex_minimize(at, seed=2)[0] == pytest.approx(math.log(K), abs=1e-9)
    th = closed_form.thresholds(at)
    assert th["zero"] and th["mu_zero"] == pytest.approx(1 / (K * math.sqrt(n)), rel=1e-12)
    assert not closed_form.thresholds(below)["zero"]


# -- layer-peeled --------------------------------------------------------------------
@pytest.mark.slow
def test_layer_peeled_against_constrained_minimization():
    K, n, d, E_W, E_H = 4, 2, 5, 2.0, 0.7
    p = LayerPeeledProblem(K=K, n=n, d=d, E_W=E_W, E_H=E_H)
    sol = ufm.solve(p)
    np.testing.assert_allclose(np.sum(sol.W**2, axis=1), E_W, rtol=1e-12)
    np.testing.assert_allclose(np.sum(sol.H**2, axis=0), E_H, rtol=1e-12)
    ce = losses.ce(sol.Z, p.Y)
    assert rel(ce, sol.objective) < 1e-12
    # independent: the energy constraints are active at the optimum (CE falls with scale), so
    # W = sqrt(K E_W) U/||U||, H = sqrt(N E_H) V/||V|| turns it into an unconstrained problem.
    from scipy.optimize import minimize

    rng = np.random.default_rng(3)
    N = K * n

    def unpack(x):
        U, V = x[:K * d].reshape(K, d), x[K * d:].reshape(d, N)
        return math.sqrt(K * E_W) * U / np.linalg.norm(U), math.sqrt(N * E_H) * V / np.linalg.norm(V)

    best = min(minimize(lambda x: losses.ce(np.dot(*unpack(x)), p.Y), rng.standard_normal(K * d + d * N),
                        method="BFGS", options={"gtol": 1e-12, "maxiter": 20000}).fun for _ in range(3))
    assert rel(best, sol.objective) < 1e-6


# -- SELI -----------------------------------------------------------------------------
def test_tv3_seli_numbers():
    p = UFMProblem(K=4, counts=[3, 3, 1, 1], d=6, loss="ce")
    sol = ufm.solve(p)
    assert sol.regime == "seli"
    np.testing.assert_allclose(sol.Z, P(4) @ p.Y, atol=1e-12)
    assert sol.objective == pytest.approx(4.146264, abs=1e-6)
    assert 0.5 * (np.sum(sol.W**2) + np.sum(sol.H**2)) == pytest.approx(sol.objective, rel=1e-12)
    G = sol.gram_W
    norms = np.sqrt(np.diag(G))
    np.testing.assert_allclose(norms, [1.10435, 1.10435, 0.92388, 0.92388], atol=1e-5)
    C = G / np.outer(norms, norms)
    assert C[0, 1] == pytest.approx(-0.42020, abs=1e-5)
    assert C[0, 2] == pytest.approx(-0.34653, abs=1e-5)
    assert C[2, 3] == pytest.approx(-0.17157, abs=1e-5)
    idx = [0, 3, 6, 7]
    Hm = sol.gram_H[np.ix_(idx, idx)]
    np.testing.assert_allclose(np.sqrt(np.diag(Hm)), [0.68224, 0.68224, 0.82266, 0.82266], atol=1e-5)
    # margins are exactly 1 for every example and every wrong class (the SVM constraints are tight)
    margins = sol.Z[p.y, np.arange(p.N)][None, :] - sol.Z
    margins[p.y, np.arange(p.N)] = np.inf
    assert margins.min() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("counts", [[3, 3, 1, 1], [5, 1, 1], [2, 4, 1, 3, 2], [2, 2, 2]])
def test_seli_solves_the_nuclear_norm_svm(counts):
    """P_K Y solves min ||Z||_* s.t. margins >= 1 (3.2): compare with a cvxpy solution."""
    import cvxpy as cp

    p = UFMProblem(K=len(counts), counts=counts, d=len(counts), loss="ce")
    sol = ufm.solve(p)
    K, N, y = p.K, p.N, p.y
    Z = cp.Variable((K, N))
    cons = [Z[y[i], i] - Z[c, i] >= 1 for i in range(N) for c in range(K) if c != y[i]]
    prob = cp.Problem(cp.Minimize(cp.normNuc(Z)), cons)
    prob.solve(solver=cp.CLARABEL)
    assert prob.status == cp.OPTIMAL
    assert rel(prob.value, sol.objective) < 1e-6
    np.testing.assert_allclose(Z.value, sol.Z, atol=1e-4)
    if len(set(counts)) == 1:  # balanced: ETF, W W^T = sqrt(n) P_K
        np.testing.assert_allclose(sol.gram_W, math.sqrt(counts[0]) * P(K), atol=1e-12)


# -- MSE ------------------------------------------------------------------------------
TV2 = [  # lam_b (None = no bias), f*, W W^T diag, offdiag
    (None, 0.09317959, 2.209490, 0.0),
    (0.0, 0.06988469, 1.657117, -0.552372),
    (0.1, 0.08124833, None, None),
    (0.2, 0.08717959, 1.909490, -0.300000),
    (1.0, 0.09197959, 2.149490, -0.060000),
]


@pytest.mark.parametrize("lam_b,f,diag,off", TV2)
def test_tv2_mse_numbers_and_nonconvex_solver(lam_b, f, diag, off):
    bias = lam_b is not None
    p = UFMProblem(K=4, n=3, d=6, loss="mse", lam_W=0.01, lam_H=0.02, bias=bias, lam_b=lam_b or 0.0)
    sol = ufm.solve(p)
    assert sol.objective == pytest.approx(f, abs=5e-9)
    if diag is not None:
        assert sol.gram_W[0, 0] == pytest.approx(diag, abs=1e-6)
        assert sol.gram_W[0, 1] == pytest.approx(off, abs=1e-6)
    assert_critical(p, sol)
    fn, W, H, b = nonconvex_minimize(p, seed=4)
    assert rel(fn, sol.objective) < 1e-8
    np.testing.assert_allclose(W @ W.T, sol.gram_W, atol=1e-5)
    if bias:
        np.testing.assert_allclose(b, sol.b, atol=1e-5)


def test_mse_bias_regime_change_at_lam_b_star():
    K, n, lW, lH = 4, 3, 0.01, 0.02
    base = UFMProblem(K=K, n=n, d=6, loss="mse", lam_W=lW, lam_H=lH, bias=True, lam_b=1.0)
    star = closed_form.thresholds(base)["lam_b_star"]
    assert star == pytest.approx(0.108622, abs=1e-6)
    lo, hi = (ufm.solve(base.replace(lam_b=star * (1 + e))) for e in (-1e-9, 1e-9))
    assert lo.regime == "etf" and hi.regime == "etf_to_orthogonal_frame"
    assert lo.objective == pytest.approx(hi.objective, abs=1e-9)  # continuous across the threshold
    np.testing.assert_allclose(lo.b, hi.b, atol=1e-9)
    # above lam_b*, the classifier Gram leaves the ETF and tends to the orthogonal frame as lam_b grows
    off = [ufm.solve(base.replace(lam_b=lb)).gram_W[0, 1] for lb in (0.05, 0.2, 1.0, 10.0, 1e4)]
    assert off[0] < off[1] < off[2] < off[3] < off[4] < 0
    assert off[-1] == pytest.approx(0.0, abs=1e-3)


@pytest.mark.parametrize("bias", [False, True])
def test_mse_svt_imbalanced_and_soft_labels(bias):
    rng = np.random.default_rng(5)
    for p in (UFMProblem(K=3, counts=[4, 2, 1], d=4, loss="mse", lam_W=0.03, lam_H=0.02, bias=bias),
              UFMProblem(labels=rng.dirichlet(np.ones(4) * 0.5, size=6).T, d=5, loss="mse",
                         lam_W=0.02, lam_H=0.05, bias=bias)):
        sol = ufm.solve(p)
        assert_critical(p, sol)
        f, *_ = nonconvex_minimize(p, seed=6)
        assert rel(f, sol.objective) < 1e-8


def test_mse_balanced_table_equals_svt_route():
    """The THEORY §2.2 table (lambdified sympy) and the general SVT formula give the same optimum."""
    for bias in (False, True):
        p = UFMProblem(K=5, n=2, d=6, loss="mse", lam_W=0.05, lam_H=0.01, bias=bias)
        sol = ufm.solve(p)
        Y = p.Y
        target = Y - Y.mean(axis=1, keepdims=True) if bias else Y
        U, S, Vt = np.linalg.svd(target, full_matrices=False)
        Z = (U * np.maximum(S - p.N * p.mu, 0)) @ Vt
        np.testing.assert_allclose(sol.W @ sol.H, Z, atol=1e-12)
        a = sol.meta["alpha"]
        np.testing.assert_allclose(sol.W @ sol.H, a * (P(5) @ Y if bias else Y), atol=1e-12)


def test_mse_zero_regime_and_threshold():
    p = UFMProblem(K=3, counts=[3, 1, 1], d=3, loss="mse", lam_W=0.5, lam_H=0.5)
    th = closed_form.thresholds(p)
    assert th["mu_zero"] == pytest.approx(np.linalg.norm(p.Y, 2) / p.N, rel=1e-12)
    assert th["zero"]
    sol = ufm.solve(p)
    assert sol.regime == "zero" and not np.any(sol.W) and not np.any(sol.H)
    assert_critical(p, sol)


# -- dispatch and errors ---------------------------------------------------------------
def unsolved(sol, *phrases):
    """``sol`` is a no-method result whose message gives every phrase; ``W, H, Z`` are NaN."""
    assert sol.status is Status.no_method and not sol.success and np.isnan(sol.objective), sol
    assert all(np.isnan(getattr(sol, name)).all() for name in ("W", "H", "Z"))
    for phrase in phrases:
        assert phrase in sol.message, (phrase, sol.message)
    return sol


def test_no_closed_form_names_the_reasons():
    p = UFMProblem(K=4, counts=[3, 3, 1, 1], d=6, loss="ce", lam_W=0.01, lam_H=0.01)
    unsolved(ufm.solve(p, method="closed_form"), "imbalanced", "closed_form")
    unsolved(closed_form.solve(p), "imbalanced")
    with pytest.raises(NoMethodApplies, match="imbalanced") as err:
        ufm.solve(p, method="closed_form", throw=True)
    assert err.value.result.status is Status.no_method and isinstance(err.value, ufm.UFMError)
    with pytest.raises(NoMethodApplies, match="imbalanced"):
        closed_form.solve(p, throw=True)
    with pytest.raises(ValueError, match="method must be"):
        ufm.solve(UFMProblem(K=3, n=1, d=3), method="newton")


def test_d_too_small_is_explained():
    unsolved(ufm.solve(UFMProblem(K=4, n=3, d=2, lam_W=0.01, lam_H=0.01), method="closed_form"),
             "d >= K-1 = 3, got d=2")
    unsolved(ufm.solve(UFMProblem(K=4, n=3, d=2, lam_W=0.01, lam_H=0.01)),   # auto falls through to convex
             "d=2 is below rank(Z*)=3")
    with pytest.raises(NoMethodApplies, match=r"d=3 is below rank"):
        ufm.solve(UFMProblem(K=4, n=3, d=3, loss="mse", lam_W=0.01, lam_H=0.01), throw=True)


def test_one_sided_weight_decay_is_refused_with_reason():
    unsolved(ufm.solve(UFMProblem(K=3, n=2, d=3, loss="mse", lam_W=0.1)), "both positive or both 0")
    unsolved(ufm.solve(UFMProblem(K=3, n=2, d=3, loss="ce", lam_H=0.1)), "infimum is not attained")


def test_solution_is_frozen_and_round_trips(tmp_path):
    sol = ufm.solve(UFMProblem(K=3, n=2, d=3, loss="mse", lam_W=0.01, lam_H=0.02, bias=True, lam_b=0.5))
    with pytest.raises(Exception):
        sol.objective = 0.0
    with pytest.raises(ValueError):
        sol.W[0, 0] = 1.0
    path = sol.save(tmp_path / "sol")
    back = ufm.load(path)
    assert type(back) is type(sol) and back.meta["content_hash"] == sol.meta["content_hash"]
    for name in ("W", "H", "b", "Z"):
        np.testing.assert_array_equal(getattr(back, name), getattr(sol, name))
    assert (back.objective, back.status, back.message) == (sol.objective, sol.status, sol.message)
    # a tampered file is refused
    data = dict(np.load(path, allow_pickle=False))
    data["W"] = data["W"] + 1.0
    np.savez(tmp_path / "bad.npz", **data)
    with pytest.raises(ValueError, match="content hash"):
        ufm.load(tmp_path / "bad.npz")
