"""M2-H: the input-coupled UFM with a feature penalty lam_H/2 ||A Phi||^2 (THEORY §8.2b).

Objective (halved decays, mean loss over the N examples):
``g(W A Phi) + lam_W/2 ||W||^2 + lam_H/2 ||A Phi||^2 + lam_A/2 ||A||^2``. The tests pin the
model (lam_H = 0 is M2 exactly), the flow through H and its closed product system against
``ufm.simulate(mode="flow")``, the convex form with the reduced encoding against cvxpy and the
recovered state, the closed form (lam_A = 0, full column rank: the standard UFM optimum) against
the convex solvers and long simulations, and the early growth rate against a simulated start.
"""

import math

import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.linalg import expm
from scipy.special import softmax

import ufm
from ufm import dynamics, losses, metrics, symbolic
from ufm.problems import InputCoupledUFM
from ufm.results import Status

SETTING = ufm.factorial((2, 2, 2))


def _m2h(sigma=2.0, d=16, loss="ce", **lams):
    return InputCoupledUFM.from_setting(SETTING, sigma=sigma, d=d, loss=loss, **lams)


def _random_phi(p=12, N=8, rank=None, seed=4):
    rng = np.random.default_rng(seed)
    if rank is None:
        return rng.standard_normal((p, N))
    return rng.standard_normal((p, rank)) @ rng.standard_normal((rank, N))


def _ce_standard_optimum(K, lam_W, lam_H):
    """THEORY §1.2 with n = 1 (balanced CE, distinct labels): margin and objective of the ETF."""
    gamma = math.sqrt(lam_W * lam_H)
    s = math.log(1 / gamma - (K - 1))
    return s, -math.log(1 - (K - 1) * gamma) + (K - 1) * gamma * s


def _rel(a, b):
    return abs(a - b) / max(abs(b), 1e-300)


# -- the model ---------------------------------------------------------------------------------
def test_lam_H_zero_is_m2_exactly():
    m = _m2h(lam_W=1e-3, lam_A=2e-3)
    assert m.lam_H == 0.0 and m.as_dict()["lam_H"] == 0.0 and "lam_H" not in repr(m)
    assert m.convex_encoding()[0] is m.Phi and m.mu == math.sqrt(1e-3 * 2e-3)
    rng = np.random.default_rng(0)
    W, A = rng.standard_normal((m.K, m.d)), rng.standard_normal((m.d, m.p))
    H = A @ m.Phi
    G = losses.data_grad(m, W @ H)
    dW, dA = losses.input_coupled_gradients(m, W, A)
    np.testing.assert_array_equal(dA, (W.T @ G) @ m.Phi.T + m.lam_A * A)
    np.testing.assert_array_equal(dW, G @ H.T + m.lam_W * W)
    f = losses.data_loss(m, W @ H) + 0.5 * m.lam_W * np.sum(W * W) + 0.5 * m.lam_A * np.sum(A * A)
    assert losses.input_coupled_objective(m, W, A) == f


def test_feature_penalty_terms_and_bookkeeping():
    m = _m2h(lam_W=1e-3, lam_A=2e-3, lam_H=0.05)
    m0 = _m2h(lam_W=1e-3, lam_A=2e-3)
    rng = np.random.default_rng(1)
    st = {"W": rng.standard_normal((m.K, m.d)), "A": rng.standard_normal((m.d, m.p))}
    H = st["A"] @ m.Phi
    assert m.objective(st) == pytest.approx(m0.objective(st) + 0.025 * np.sum(H * H), rel=1e-14)
    g, g0 = m.gradients(st), m0.gradients(st)
    np.testing.assert_allclose(g["A"], g0["A"] + 0.05 * H @ m.Phi.T, rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(g["W"], g0["W"])
    assert m.has_weight_decay and _m2h(lam_H=0.1).has_weight_decay and not _m2h().has_weight_decay
    assert m.as_dict()["lam_H"] == 0.05 and "lam_H=0.05" in repr(m)
    assert InputCoupledUFM(Phi=m.Phi, d=16, lam_W=1e-3, lam_A=2e-3, lam_H=0.05).objective(st) == m.objective(st)


@pytest.mark.parametrize("value, fragment", [(-0.1, "lam_H must be >= 0"), (float("nan"), "lam_H must be finite")])
def test_bad_lam_H_names_the_argument(value, fragment):
    with pytest.raises(ValueError, match=fragment):
        _m2h(lam_H=value)


def test_theory_curves_refuse_the_feature_penalty():
    with pytest.raises(ValueError, match="lam_H = 0"):
        dynamics.mode_curves(_m2h(sigma=1.0, d=8, lam_H=1e-3), [0.0, 1.0])


# -- the flow through H and the product system (THEORY §8.2b) --------------------------------------
def _flow_problem():
    return InputCoupledUFM.from_setting(ufm.factorial((2, 2)), sigma=1.0, d=5, loss="ce", lam_W=0.02, lam_A=0.01,
                                        lam_H=0.03)


def test_flow_kernel_matches_scipy_on_the_numpy_gradients():
    m = _flow_problem()
    tr = ufm.simulate(m, steps=300, lr=0.1, mode="flow", init_scale=0.4, seed=2, record=("W", "A"), n_records=7,
                      rtol=1e-11, atol=1e-13)
    assert tr.status is Status.completed and tr.meta["time_variable"] == "t"
    Kd, dp = m.K * m.d, m.d * m.p

    def f(_t, y):
        g = m.gradients({"W": y[:Kd].reshape(m.K, m.d), "A": y[Kd:].reshape(m.d, m.p)})
        return -np.concatenate([g["W"].ravel(), g["A"].ravel()])

    y0 = np.concatenate([tr.W[0, 0].ravel(), tr.A[0, 0].ravel()])
    ref = solve_ivp(f, [0, tr.times[-1]], y0, t_eval=tr.times, method="DOP853", rtol=1e-12, atol=1e-14)
    got = np.concatenate([tr.W[0].reshape(len(tr.times), Kd), tr.A[0].reshape(len(tr.times), dp)], axis=1)
    np.testing.assert_allclose(got, ref.y.T, rtol=1e-7, atol=1e-9)
    assert np.abs(got[-1] - got[0]).max() > 0.1                     # it moved


def test_product_system_matches_the_simulated_flow():
    """Z = W H, P = W W^T, S = H^T H follow the closed system of THEORY §8.2b."""
    m = _flow_problem()
    Kx, Y, N, lW, lH, lA = m.input_kernel, m.Y, m.N, m.lam_W, m.lam_H, m.lam_A
    tr = ufm.simulate(m, steps=400, lr=0.05, mode="flow", init_scale=0.4, seed=5, record=("W", "H"), n_records=6,
                      rtol=1e-11, atol=1e-13)
    W, H = tr.W[0], tr.H[0]
    K = m.K

    def rhs(_t, y, lH=lH):
        Z, P, S = y[:K * N].reshape(K, N), y[K * N:K * N + K * K].reshape(K, K), y[K * N + K * K:].reshape(N, N)
        G = (softmax(Z, axis=0) - Y) / N
        dZ = -G @ S - P @ G @ Kx - lH * Z @ Kx - (lW + lA) * Z
        dP = -(G @ Z.T + Z @ G.T) - 2 * lW * P
        dS = -(Kx @ G.T @ Z + Z.T @ G @ Kx) - lH * (Kx @ S + S @ Kx) - 2 * lA * S
        return np.concatenate([dZ.ravel(), dP.ravel(), dS.ravel()])

    def pack(Wj, Hj):
        return np.concatenate([(Wj @ Hj).ravel(), (Wj @ Wj.T).ravel(), (Hj.T @ Hj).ravel()])

    ref = solve_ivp(rhs, [0, tr.times[-1]], pack(W[0], H[0]), t_eval=tr.times, method="DOP853", rtol=1e-12,
                    atol=1e-14)
    got = np.stack([pack(W[j], H[j]) for j in range(len(tr.times))])
    np.testing.assert_allclose(got, ref.y.T, rtol=1e-7, atol=1e-9)
    # the same system without its lam_H terms (M2's) does not follow this flow: the terms are needed
    m2 = solve_ivp(rhs, [0, tr.times[-1]], pack(W[0], H[0]), t_eval=tr.times, method="DOP853", rtol=1e-12,
                   atol=1e-14, args=(0.0,))
    assert np.abs(m2.y.T[-1] - got[-1]).max() > 1e-2


# -- the convex form (THEORY §8.2b) ------------------------------------------------------------------
@pytest.mark.parametrize("rank", [None, 5])
def test_convex_encoding_is_the_least_penalty_reduction(rank):
    Phi = _random_phi(p=9, N=7, rank=rank)
    m = InputCoupledUFM(Phi=Phi, d=8, lam_W=0.1, lam_A=0.03, lam_H=0.2)
    Phi_c, R, lam_c = m.convex_encoding()
    r = 7 if rank is None else rank
    assert Phi_c.shape == (r, 7) and R.shape == (r, 9) and lam_c == 1.0
    sv = np.linalg.svd(Phi, compute_uv=False)[:r]
    weight = [symbolic.numeric(symbolic.feature_penalty_encoding()["weight"], sigma_i=s, lam_A=0.03, lam_H=0.2)
              for s in sv]
    np.testing.assert_allclose(np.linalg.svd(Phi_c, compute_uv=False), np.sort(weight)[::-1], rtol=1e-12)
    rng = np.random.default_rng(3)
    B = rng.standard_normal((8, r))
    A = B @ R
    pen = lambda A_: 0.5 * m.lam_H * np.sum((A_ @ Phi) ** 2) + 0.5 * m.lam_A * np.sum(A_ ** 2)  # noqa: E731
    np.testing.assert_allclose(A @ Phi, B @ Phi_c, atol=1e-12)
    assert pen(A) == pytest.approx(0.5 * np.sum(B * B), rel=1e-12)
    # any other map with the same features costs more (A + a component orthogonal to Phi's columns)
    U = np.linalg.svd(Phi, full_matrices=True)[0]
    other = A + rng.standard_normal((8, 9 - r)) @ U[:, r:].T
    np.testing.assert_allclose(other @ Phi, A @ Phi, atol=1e-12)
    assert pen(other) > pen(A) + 1e-3


def _certified(m, sol, tol):
    assert sol.success, sol.message
    st = {"W": sol.W, "A": sol.A}
    np.testing.assert_allclose(sol.H, sol.A @ m.Phi, atol=1e-12)
    assert _rel(m.objective(st), sol.objective) < tol
    g = m.gradients(st)
    scale = max(np.linalg.norm(sol.W), np.linalg.norm(sol.A), 1.0)
    assert max(np.linalg.norm(g["W"]), np.linalg.norm(g["A"])) < 1e-4 * scale
    return metrics.etf_distance(sol.gram_H)


@pytest.mark.parametrize("name, make", [
    ("factorial-lam_A", lambda: _m2h(lam_W=1e-3, lam_H=1e-3, lam_A=1e-3)),
    ("random-rank-deficient", lambda: InputCoupledUFM(Phi=_random_phi(rank=5), d=8, lam_W=2e-3, lam_H=5e-3)),
    ("factorial-mse", lambda: _m2h(loss="mse", lam_W=1e-2, lam_H=2e-2, lam_A=5e-3)),
])
def test_convex_solvers_agree_and_the_recovered_state_is_optimal(name, make):
    m = make()
    cv = ufm.solve(m, method="convex")
    px = ufm.solve(m, method="prox", tol=1e-11)
    assert cv.meta["form"] == "input_coupled" and _rel(px.objective, cv.objective) < 1e-8
    for sol in (cv, px):
        _certified(m, sol, 1e-10)
    np.testing.assert_allclose(px.gram_H, cv.gram_H, atol=1e-4 * np.abs(cv.gram_H).max())
    assert ufm.solve(m).meta["auto"]["method"] == "prox"           # no closed form: lam_A > 0 or rank < N


def test_feature_penalty_needs_a_classifier_decay():
    m = _m2h(lam_H=1e-3)
    for method in ("prox", "convex", "svm"):
        sol = ufm.solve(m, method=method)
        assert sol.status is Status.no_method and not sol.success
    assert "lam_W must be > 0" in ufm.solve(_m2h(loss="mse", lam_H=1e-3), method="prox").message


# -- the end state: the standard UFM optimum when lam_A = 0 and rank Phi = N -----------------------
@pytest.mark.parametrize("name, make", [
    ("factorial", lambda: _m2h(lam_W=1e-3, lam_H=1e-3)),
    ("random-phi", lambda: InputCoupledUFM(Phi=_random_phi(), d=16, lam_W=1e-3, lam_H=1e-3)),
])
def test_closed_form_is_the_standard_etf_whatever_phi(name, make):
    m = make()
    s_star, f_star = _ce_standard_optimum(m.K, 1e-3, 1e-3)
    cf = ufm.solve(m, method="closed_form")
    assert cf.status is Status.exact and cf.regime == "etf" and cf.method == "closed_form"
    assert cf.objective == pytest.approx(f_star, rel=1e-13) and cf.objective == pytest.approx(0.05532972958528068)
    assert cf.meta["s"] == pytest.approx(s_star, rel=1e-13) and cf.meta["standard_ufm"]["lam_H"] == 1e-3
    assert _certified(m, cf, 1e-12) < 1e-10
    np.testing.assert_allclose(cf.Z, s_star * (np.eye(m.K) - 1.0 / m.K), atol=1e-10)
    auto = ufm.solve(m)
    assert auto.meta["auto"]["method"] == "closed_form" and auto.objective == cf.objective
    for method, opts in (("convex", {}), ("prox", {"tol": 1e-12})):
        sol = ufm.solve(m, method=method, **opts)
        assert _rel(sol.objective, f_star) < 1e-9
        assert _certified(m, sol, 1e-9) < 1e-4
    # long gradient flow and gradient descent of ufm.simulate end there too, from a small random start
    fl = ufm.simulate(m, steps=10**5, lr=1.0, mode="flow", init_scale=1e-3, seed=1, time_variable="t",
                      record=("objective", "etf_distance", "semantic_gap"), n_records=40, rtol=1e-9, atol=1e-11,
                      attributes=SETTING.attributes)
    gd = ufm.simulate(m, steps=10**5, lr=0.5, init_scale=1e-3, seed=1, record=("objective", "etf_distance"),
                      n_records=20)
    for tr in (fl, gd):
        assert tr.status is Status.completed
        assert _rel(tr.objective[0, -1], f_star) < 1e-9 and tr.etf_distance[0, -1] < 1e-6
    if name == "factorial":   # the transient: the gap rises first, then the ETF removes it
        g = fl.semantic_gap[0]
        assert g.max() > 0.4 and g[0] < 0.2 and abs(g[-1]) < 1e-6


def test_closed_form_covers_the_zero_regime_and_mse_and_says_when_it_does_not_apply():
    zero = _m2h(lam_W=0.2, lam_H=0.2)                              # K gamma = 1.6 >= 1
    cf = ufm.solve(zero, method="closed_form")
    assert cf.regime == "zero" and cf.objective == pytest.approx(math.log(8), rel=1e-14)
    assert not np.any(cf.W) and not np.any(cf.A)
    assert ufm.solve(zero, method="prox").objective == pytest.approx(math.log(8), rel=1e-12)
    mse = _m2h(loss="mse", lam_W=1e-2, lam_H=1e-2)
    cf = ufm.solve(mse, method="closed_form")
    px = ufm.solve(mse, method="prox", tol=1e-12)
    assert cf.regime == "orthogonal_frame" and _rel(px.objective, cf.objective) < 1e-10
    _certified(mse, cf, 1e-12)
    with_A = ufm.solve(_m2h(lam_W=1e-3, lam_H=1e-3, lam_A=1e-3), method="closed_form")
    assert with_A.status is Status.no_method and "lam_A = 0" in with_A.message
    low_rank = ufm.solve(InputCoupledUFM(Phi=_random_phi(rank=5), d=8, lam_W=1e-3, lam_H=1e-3), method="closed_form")
    assert low_rank.status is Status.no_method and "rank 5 < N = 8" in low_rank.message
    m2 = ufm.solve(_m2h(lam_W=1e-3, lam_A=1e-3), method="closed_form")
    assert m2.status is Status.no_method                              # M2 itself: no closed form


def test_lam_A_moves_the_end_state_off_the_etf():
    """The feature penalty alone ends at the ETF; M2's decay on A leaves the semantic structure (TV8)."""
    ends = {}
    for key, lams in (("H", dict(lam_W=1e-3, lam_H=1e-3)), ("A", dict(lam_W=1e-3, lam_A=1e-3)),
                      ("HA", dict(lam_W=1e-3, lam_H=1e-3, lam_A=1e-3))):
        sol = ufm.solve(_m2h(**lams), method="convex")
        ends[key] = (sol.objective, metrics.semantic_gap(sol.gram_H, SETTING.attributes),
                     metrics.etf_distance(sol.gram_H))
    assert ends["H"][1] == pytest.approx(0.0, abs=1e-6) and ends["H"][2] < 1e-4
    assert ends["A"][0] == pytest.approx(0.02631712, abs=1e-8) and ends["A"][1] == pytest.approx(0.1643, abs=1e-4)
    assert ends["HA"][0] == pytest.approx(0.05979283, abs=1e-8) and ends["HA"][1] == pytest.approx(0.0221, abs=1e-4)


# -- the early rise (THEORY §8.2b) -----------------------------------------------------------------
def _centred_eigenspaces(Kx, N):
    """Eigenvalues and orthonormal bases of K_x restricted to the vectors orthogonal to 1."""
    P = np.eye(N) - 1.0 / N
    vals, vecs = np.linalg.eigh(P @ Kx @ P)
    keep = np.abs(vecs.sum(axis=0)) < 1e-8
    vals, vecs = vals[keep], vecs[:, keep]
    out = []
    for k in np.unique(np.round(vals, 8)):
        Q = vecs[:, np.abs(vals - k) < 1e-6]
        np.testing.assert_allclose(Kx @ Q, k * Q, atol=1e-10)       # eigenvectors of K_x itself
        out.append((float(k), Q))
    return out


def test_early_modes_follow_the_linear_system_and_its_rate():
    lW, lH, lA = 0.01, 0.05, 0.01
    m = _m2h(lam_W=lW, lam_H=lH, lam_A=lA)
    K, N = m.K, m.N
    times = np.array([0.0, 5.0, 10.0, 20.0, 25.0, 30.0])
    tr = ufm.simulate(m, steps=300, lr=0.1, mode="flow", init_scale=1e-5, seed=3, record=("W", "H", "semantic_gap"),
                      record_steps=np.rint(times / 0.1).astype(int), rtol=1e-11, atol=1e-16)
    np.testing.assert_allclose(tr.times, times)
    W, H = tr.W[0], tr.H[0]
    spaces = _centred_eigenspaces(m.input_kernel, N)
    assert [round(k, 8) for k, _ in spaces] == [4.0, 8.0]            # interactions sigma^2, main effects 4 + sigma^2
    mode = symbolic.feature_penalty_mode()
    rates = {}
    H_lin = np.zeros((len(times),) + H.shape[1:])
    for k, Q in spaces:
        M = np.array(mode["matrix"].subs({symbolic.K: K, symbolic.k_x: k, symbolic.lam_W: lW, symbolic.lam_H: lH,
                                         symbolic.lam_A: lA}), dtype=float)
        rho = symbolic.numeric(mode["rate"], K=K, k_x=k, lam_W=lW, lam_H=lH, lam_A=lA)
        assert rho == pytest.approx(np.linalg.eigvals(M).real.max(), rel=1e-12)
        x0 = np.stack([W[0].T @ Q, H[0] @ Q])                         # (2, d, m): classifier and feature amplitudes
        for j, t in enumerate(times):
            pred = np.tensordot(expm(M * t), x0, axes=1)
            got = np.stack([W[j].T @ Q, H[j] @ Q])
            assert np.abs(got - pred).max() <= 1e-4 * np.abs(pred).max(), (k, t)
            H_lin[j] += pred[1] @ Q.T
        # growth of the feature amplitude |H q|^2 once the decaying direction has died out: 2 rho
        amp = np.sum((H @ Q) ** 2, axis=(1, 2))
        slope = np.log(amp[-1] / amp[-3]) / (times[-1] - times[-3])
        assert slope == pytest.approx(2 * rho, rel=2e-3)
        rates[k] = rho
    # shared-attribute directions (k = 8) still grow first (order K^2 lam_H (lam_W - lam_A) = 0 < 1), more slowly
    # than without the feature penalty
    assert rates[8.0] > rates[4.0] > 0
    for k, rho in rates.items():
        assert rho < symbolic.numeric(mode["rate"], K=K, k_x=k, lam_W=lW, lam_H=0.0, lam_A=lA) - 0.05
    # the semantic gap rises as the linear prediction says (the mean direction 1 only decays)
    one = np.ones((N, 1)) / math.sqrt(N)
    for j, t in enumerate(times):
        k1 = (one.T @ m.input_kernel @ one).item()
        Hp = H_lin[j] + (H[0] @ one) * math.exp(-(lH * k1 + lA) * t) @ one.T
        assert metrics.semantic_gap(Hp.T @ Hp, SETTING.attributes) == pytest.approx(tr.semantic_gap[0, j], abs=1e-4)
    assert np.all(np.diff(tr.semantic_gap[0]) > 0)


def test_the_order_of_the_rise_flips_only_where_nothing_grows():
    """Above K^2 lam_H (lam_W - lam_A) = 1 the large-k directions grow slower, but every rate is <= 0."""
    mode = symbolic.feature_penalty_mode()
    ks = np.linspace(0.1, 40.0, 200)
    for lams, increasing in ((dict(lam_W=0.01, lam_H=0.05, lam_A=0.0), True),
                             (dict(lam_W=0.05, lam_H=0.5, lam_A=0.01), False)):
        order = symbolic.numeric(mode["order"], K=8, **lams)
        rho = np.array([symbolic.numeric(mode["rate"], K=8, k_x=k, **lams) for k in ks])
        assert (order < 1) == increasing
        assert np.all(np.diff(rho) > 0) if increasing else (np.all(np.diff(rho) < 0) and rho.max() <= 0)
        limit = symbolic.numeric(mode["rate_limit"], K=8, **lams)
        assert np.all(rho < limit) if increasing else np.all(rho > limit)


# -- the numbers of THEORY §8.2b ----------------------------------------------------------------------
# (lams, closed-form objective or None, convex objective, (rho(8), rho(4)), (peak, its time), gaps at
#  t = 10, 1e2, 1e3, 1e4, (end gap, end d_ETF))
TABLE_8_2B = [
    (dict(lam_W=1e-3, lam_H=1e-3), 0.0553297296, 0.0553297296, (0.3491, 0.2475), (0.4189, 18.8),
     (0.3653, 0.3600, 0.0954, 0.0000), (0.0, 0.0)),
    (dict(lam_W=1e-3, lam_H=0.05), 0.2933505598, 0.2933505598, (0.2055, 0.1686), (0.3085, 27.4),
     (0.1532, 0.0488, 0.0045, 0.0000), (0.0, 0.0)),
    (dict(lam_W=1e-3, lam_H=1e-3, lam_A=1e-3), None, 0.0597928270, (0.3486, 0.2470), (0.4190, 18.8),
     (0.3654, 0.3582, 0.1238, 0.0221), (0.0221, 0.0574)),
    (dict(lam_W=1e-3, lam_A=1e-3), None, 0.0263171171, (0.3526, 0.2490), (0.4201, 18.8),
     (0.3685, 0.4025, 0.3323, 0.2543), (0.1643, 0.4064)),
]


@pytest.mark.parametrize("row", TABLE_8_2B, ids=["H", "H-strong", "H-and-A", "M2-TV8"])
def test_the_numbers_of_theory_8_2b(row):
    lams, f_closed, f_convex, rates, (peak, t_peak), gaps, (gap_end, etf_end) = row
    m = _m2h(**lams)
    cf = ufm.solve(m, method="closed_form")
    if f_closed is None:
        assert cf.status is Status.no_method
    else:
        assert cf.objective == pytest.approx(f_closed, abs=1e-10)
    cv = ufm.solve(m, method="convex")
    assert cv.success and cv.objective == pytest.approx(f_convex, abs=1e-10)
    for k, rate in zip((8.0, 4.0), rates):
        full = {"lam_W": 0.0, "lam_H": 0.0, "lam_A": 0.0, **lams}
        assert symbolic.numeric(symbolic.feature_penalty_mode()["rate"], K=8, k_x=k, **full) == \
            pytest.approx(rate, abs=5e-5)
    rng = np.random.default_rng(0)                                     # TV8's start: W then A, scale 1e-3
    W0, A0 = rng.normal(size=(m.K, m.d)) * 1e-3, rng.normal(size=(m.d, m.p)) * 1e-3
    early = ufm.simulate(m, steps=1000, lr=0.1, mode="flow", W0=W0, A0=A0, time_variable="t",
                         record=("semantic_gap",), record_steps=np.arange(1001), rtol=1e-11, atol=1e-13)
    j = int(np.argmax(early.semantic_gap[0]))
    assert early.semantic_gap[0, j] == pytest.approx(peak, abs=5e-5) and early.times[j] == pytest.approx(t_peak)
    late = ufm.simulate(m, steps=10**5, lr=1.0, mode="flow", W0=W0, A0=A0, time_variable="t",
                        record=("semantic_gap", "objective"), record_steps=[10, 100, 1000, 10000, 100000],
                        rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(late.semantic_gap[0, 1:5], gaps, atol=5e-5)
    assert late.objective[0, -1] == pytest.approx(f_convex, abs=1e-8)
    assert metrics.semantic_gap(cv.gram_H, SETTING.attributes) == pytest.approx(gap_end, abs=5e-5)
    assert metrics.etf_distance(cv.gram_H) == pytest.approx(etf_end, abs=5e-5)
