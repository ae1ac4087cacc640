"""Exact global solvers (ufm.convex) against closed forms, each other, simulations and THEORY test vectors."""

import numpy as np
import pytest

import ufm
from ufm.results import Status
from ufm import convex, losses, metrics
from ufm.problems import AnchoredUFM, InputCoupledUFM, UFMProblem

# prox certifies the objective; its iterates (Grams) are accurate to about sqrt(tol), hence the tight tol
METHODS = [("convex", {}), ("convex", {"solver": "SCS"}), ("prox", {"tol": 1e-10})]
IDS = ["clarabel", "scs", "prox"]


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-300)


CLOSED = [
    UFMProblem(K=4, n=3, d=6, loss="ce", lam_W=0.01, lam_H=0.01),                          # TV1
    UFMProblem(K=4, n=3, d=6, loss="ce", lam_W=0.01, lam_H=0.01, bias=True, lam_b=0.01),
    UFMProblem(K=4, n=3, d=6, loss="ce", lam_W=0.2, lam_H=0.2),                              # zero regime
    UFMProblem(K=4, n=3, d=6, loss="mse", lam_W=0.01, lam_H=0.02),                           # TV2
    UFMProblem(K=4, n=3, d=6, loss="mse", lam_W=0.01, lam_H=0.02, bias=True),
    UFMProblem(K=4, n=3, d=6, loss="mse", lam_W=0.01, lam_H=0.02, bias=True, lam_b=0.2),
    UFMProblem(K=3, counts=[4, 2, 1], d=4, loss="mse", lam_W=0.03, lam_H=0.02),             # SVT, imbalanced
]


@pytest.mark.parametrize("method,opts", METHODS, ids=IDS)
@pytest.mark.parametrize("problem", CLOSED, ids=[f"case{i}" for i in range(len(CLOSED))])
def test_exact_solvers_equal_the_closed_forms(problem, method, opts):
    ref = ufm.solve(problem, method="closed_form")
    sol = ufm.solve(problem, method=method, **opts)
    assert sol.success, sol.message
    assert rel(sol.objective, ref.objective) < 1e-6
    assert sol.meta["rel_duality_gap"] <= 1e-6
    np.testing.assert_allclose(sol.gram_W, ref.gram_W, atol=1e-5 * max(1, np.abs(ref.gram_W).max()))
    assert rel(losses.objective(problem, sol.W, sol.H, sol.b), ref.objective) < 1e-6
    if ref.regime != "zero":
        assert max(sol.meta["stationarity"].values()) < 1e-3


HARD = [
    UFMProblem(K=4, counts=[3, 3, 1, 1], d=4, loss="ce", lam_W=0.01, lam_H=0.01),
    UFMProblem(K=3, counts=[5, 2, 1], d=3, loss="ce", bias=True, lam_W=0.02, lam_H=0.01),
    UFMProblem(K=3, counts=[5, 2, 1], d=3, loss="ce", bias=True, lam_b=0.1, lam_W=0.02, lam_H=0.01),
    UFMProblem(labels=np.random.default_rng(1).dirichlet(0.5 * np.ones(5), size=7).T, d=5, loss="ce",
               lam_W=0.02, lam_H=0.01, bias=True, lam_b=0.1),
    UFMProblem(labels=np.random.default_rng(2).dirichlet(np.ones(4), size=6).T, d=4, loss="mse",
               lam_W=0.02, lam_H=0.03, bias=True),
]


@pytest.mark.parametrize("problem", HARD, ids=[f"case{i}" for i in range(len(HARD))])
def test_clarabel_scs_and_prox_agree_without_a_closed_form(problem):
    sols = [ufm.solve(problem, method=m, **o) for m, o in METHODS]
    assert all(s.success for s in sols), [s.message for s in sols]
    values = [s.objective for s in sols]
    assert max(values) - min(values) < 1e-6 * max(1.0, abs(values[0]))
    for s in sols[1:]:
        np.testing.assert_allclose(s.Z, sols[0].Z, atol=1e-3 * max(1.0, np.abs(sols[0].Z).max()))
    # the nonconvex objective at the recovered factors is the convex optimum (d >= rank)
    for s in sols:
        assert rel(losses.objective(problem, s.W, s.H, s.b), s.objective) < 1e-9


def test_long_gradient_descent_ends_at_the_convex_optimum():
    p = UFMProblem(K=4, counts=[3, 3, 1, 1], d=4, loss="ce", lam_W=0.01, lam_H=0.01, bias=True, lam_b=0.05)
    sol = ufm.solve(p, method="prox", tol=1e-8)
    tr = ufm.simulate(p, steps=60000, lr=1.0, init_scale=0.1, seeds=3, record=("objective", "gram_W"))
    np.testing.assert_allclose(tr.objective[:, -1], sol.objective, rtol=1e-7)
    for i in range(3):
        np.testing.assert_allclose(tr.gram_W[i, -1], sol.gram_W, atol=1e-4)


def test_tv11_minority_collapse():
    """TV11: mu = 0.01, two majority classes of R samples, two minority classes of one."""
    table = {1: (-0.3333, -0.3333, 0.16770), 5: (0.0129, -0.5166, 0.24859), 50: (1.0000, -0.6600, 0.51013)}
    for R, (cmin, cmaj, obj) in table.items():
        p = UFMProblem(K=4, counts=[R, R, 1, 1], d=4, loss="ce", lam_W=0.01, lam_H=0.01)
        sol = ufm.solve(p, method="convex")
        C = metrics.cosine_matrix(sol.gram_W)
        assert C[2, 3] == pytest.approx(cmin, abs=2e-4) and C[0, 1] == pytest.approx(cmaj, abs=2e-4)
        assert sol.objective == pytest.approx(obj, abs=1e-5)
        assert sol.meta["form"] == "collapsed"


def test_tv8_input_coupled_optimum():
    s = ufm.factorial((2, 2, 2))
    m = InputCoupledUFM.from_setting(s, sigma=2.0, d=16, lam_W=1e-3, lam_A=1e-3)
    for method in ("convex", "prox"):
        sol = ufm.solve(m, method=method)
        assert sol.objective == pytest.approx(0.02631712, abs=1e-8)
        G = sol.H.T @ sol.H
        assert metrics.semantic_gap(G, s.attributes) == pytest.approx(0.1643, abs=1e-4)
        assert metrics.etf_distance(G) == pytest.approx(0.4064, abs=1e-4)
        np.testing.assert_allclose(sol.H, sol.A @ m.Phi, atol=1e-12)
        assert rel(losses.input_coupled_objective(m, sol.W, sol.A), sol.objective) < 1e-9


@pytest.mark.parametrize("counts", [[3, 3, 1, 1], [5, 1, 1], [2, 4, 1, 3, 2], [4, 4, 4]])
def test_svm_is_seli(counts):
    p = UFMProblem(K=len(counts), counts=counts, d=len(counts), loss="ce")
    sol = ufm.solve(p, method="svm")
    np.testing.assert_allclose(sol.Z, (np.eye(p.K) - 1 / p.K) @ p.Y, atol=1e-6)
    assert rel(sol.objective, ufm.solve(p, method="closed_form").objective) < 1e-7


def test_tv4_ntp_svm_and_in_support_logits():
    V, m = 6, 5
    supp = [[0, 1], [0, 1], [2, 3], [3, 4], [5]]
    prob = [[.7, .3], [.2, .8], [.5, .5], [.6, .4], [1.0]]
    P = np.zeros((V, m))
    for j, (s, q) in enumerate(zip(supp, prob)):
        P[s, j] = q
    sol = ufm.solve(UFMProblem(labels=P, d=6, loss="ce"), method="svm")
    assert sol.regime == "ntp_svm" and sol.objective == pytest.approx(4.42650, abs=1e-4)
    assert sol.meta["cos_to_proxy"] == pytest.approx(0.99218, abs=1e-4)
    assert sol.meta["nuclear_proxy"] == pytest.approx(4.45573, abs=1e-5)
    Lmm = sol.Z
    np.testing.assert_allclose(Lmm[:, 0], Lmm[:, 1], atol=1e-5)             # subspace collapse
    assert Lmm[3, 4] == pytest.approx(-0.449, abs=1e-3)
    Lin = np.array(sol.meta["L_in"])
    np.testing.assert_allclose(Lin[[0, 1], 0], [0.4236, -0.4236], atol=1e-4)
    np.testing.assert_allclose(Lin[[3, 4], 3], [0.2027, -0.2027], atol=1e-4)
    # one-hot supports: the NTP-SVM is the ETF logit matrix P_V, and the proxy is exact
    one = ufm.solve(UFMProblem(labels=np.eye(4), d=4, loss="ce"), method="svm")
    np.testing.assert_allclose(one.Z, np.eye(4) - 0.25, atol=1e-6)
    assert one.meta["cos_to_proxy"] == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("sigma,gap,etf", [(0.5, 0.4444, 0.8311), (2.0, 0.0670, 0.1721)])
def test_tv7b_input_coupled_max_margin(sigma, gap, etf):
    s = ufm.factorial((2, 2, 2))
    m = InputCoupledUFM.from_setting(s, sigma=sigma, d=8)
    sol = ufm.solve(m, method="svm")
    G = sol.H.T @ sol.H
    assert metrics.semantic_gap(G, s.attributes) == pytest.approx(gap, abs=2e-4)
    assert metrics.etf_distance(G) == pytest.approx(etf, abs=2e-4)
    margins = sol.Z[m.y, np.arange(m.N)][None, :] - sol.Z
    assert (margins + np.eye(m.N) * 10).min() == pytest.approx(1.0, abs=1e-5)


def test_certificate_is_a_valid_bound():
    p = HARD[2]
    form = convex.form_of(p)
    sol = ufm.solve(p, method="prox", tol=1e-7)
    rng = np.random.default_rng(0)
    for _ in range(5):   # weak duality: every dual value lies below the optimum, every primal above
        Xr = rng.standard_normal(form.shape)
        c = convex.certificate(form, Xr, rng.standard_normal(p.K))
        assert c["dual"] <= sol.objective + 1e-12 <= c["primal"] + 2e-12
        assert c["gap"] > 1e-3
    assert sol.meta["rel_duality_gap"] <= 1e-7


def test_zero_optimum_is_detected_exactly():
    p = UFMProblem(K=3, counts=[3, 1, 1], d=3, loss="ce", lam_W=0.5, lam_H=0.5)
    for method in ("convex", "prox"):
        sol = ufm.solve(p, method=method)
        assert sol.regime == "zero" and not np.any(sol.W) and sol.meta["duality_gap"] < 1e-12


def test_errors_and_unsuccessful_results_say_what_to_change():
    cases = [(UFMProblem(K=3, counts=[2, 1, 1], d=3, loss="ce"), "convex", "max-margin direction"),
             (AnchoredUFM(H_anchor=np.ones((3, 3)), beta=1.0, K=3, n=1, lam_W=0.1, lam_H=0.1), "prox",
              "anchored UFM has no nuclear-norm form"),
             (UFMProblem(K=4, counts=[3, 3, 1, 1], d=2, lam_W=0.01, lam_H=0.01), "convex", "d=2 is below rank")]
    for problem, method, why in cases:
        sol = ufm.solve(problem, method=method)
        assert sol.status is Status.no_method and not sol.success and why in sol.message, sol.message
        with pytest.raises(ufm.NoMethodApplies, match=why):
            ufm.solve(problem, method=method, throw=True)
    sol = convex.prox(cases[1][0])          # the method itself, called directly, answers the same way
    assert sol.status is Status.no_method and cases[1][2] in sol.message
    with pytest.raises(ValueError, match="solver must be one of"):
        ufm.solve(HARD[0], method="convex", solver="ECOS")
    sol = ufm.solve(HARD[1], method="prox", max_iter=3, tol=1e-12)
    assert not sol.success and sol.status is Status.max_iter and "raise max_iter" in sol.message
    with pytest.raises(ufm.NotConverged, match="raise max_iter") as err:
        ufm.solve(HARD[1], method="prox", max_iter=3, tol=1e-12, throw=True)
    assert err.value.result.nit == sol.nit == 3 and np.isfinite(err.value.result.objective)


def test_auto_records_its_choice():
    small = ufm.solve(HARD[0])
    assert small.method == "prox" and "entries" in small.meta["auto"]["why"]
    big = UFMProblem(K=60, counts=list(range(1, 61)), d=60, loss="ce", lam_W=1e-3, lam_H=1e-3)
    sol = ufm.solve(big)
    assert sol.method == "prox" and sol.success and sol.meta["auto"]["method"] == "prox"
    assert ufm.solve(CLOSED[0]).meta["auto"]["method"] == "closed_form"


def test_infeasible_margins_are_explained():
    """Two items with the same encoding (sigma = 0, siblings of a hierarchy) cannot be separated."""
    s = ufm.hierarchy(2, 2)
    m = InputCoupledUFM.from_setting(s, sigma=0.0, d=4)
    sol = ufm.solve(m, method="svm")
    assert sol.status is Status.solver_failed and not sol.success and "margins cannot be met" in sol.message
    with pytest.raises(ufm.NotConverged, match="margins cannot be met"):
        ufm.solve(m, method="svm", throw=True)


# -- how prox thresholds: exchangeable classes, leading triplets, full SVDs ------------------------
def _topic_labels(V, N, T, seed):
    """Soft labels mixing T topic distributions: a logit optimum of low rank with a spectral gap."""
    rng = np.random.default_rng(seed)
    return rng.dirichlet(0.1 * np.ones(V), size=T).T @ rng.dirichlet(np.ones(T), size=N).T


def test_class_algebra_thresholds_like_a_full_svd():
    cl = convex._Classes([2, 5, 2, 1, 5, 5, 2, 7])              # groups of 3, 3, 1, 1 classes
    rng = np.random.default_rng(3)
    a, Q = rng.standard_normal(cl.G) * cl.multi, rng.standard_normal((cl.G, cl.G))
    X = cl.join(a, Q)
    a2, Q2 = cl.split(X)
    np.testing.assert_allclose(a2, a, atol=1e-14)
    np.testing.assert_allclose(Q2, Q, atol=1e-14)
    for tau in (0.1, 0.7, 3.0):
        Xs, nuc = cl.svt(X, tau)
        U, S, Vt = np.linalg.svd(X)
        np.testing.assert_allclose(Xs, (U * np.maximum(S - tau, 0)) @ Vt, atol=1e-12)
        assert nuc == pytest.approx(np.maximum(S - tau, 0).sum(), abs=1e-12)
    U, S, Vt = cl.svd(X)                                     # built from the parts, in O(K^2)
    np.testing.assert_allclose((U * S) @ Vt, X, atol=1e-12)
    np.testing.assert_allclose(U.T @ U, np.eye(8), atol=1e-12)
    np.testing.assert_allclose(Vt @ Vt.T, np.eye(8), atol=1e-12)
    np.testing.assert_allclose(S, np.linalg.svd(X, compute_uv=False), atol=1e-12)
    W, H = convex._split(U, S, Vt, 8, 0.02, 0.08)
    W0, H0 = ufm.closed_form.balanced_split(X, 8, 0.02, 0.08)
    np.testing.assert_allclose(W @ H, X, atol=1e-12)
    np.testing.assert_allclose(W @ W.T, W0 @ W0.T, atol=1e-12)
    np.testing.assert_allclose(H.T @ H, H0.T @ H0, atol=1e-12)
    A = rng.standard_normal((8, 8))                          # not invariant: the bound still holds
    assert cl.opnorm_bound(A) >= np.linalg.norm(A, 2) * (1 - 1e-15)
    assert cl.opnorm_bound(X) == pytest.approx(np.linalg.norm(X, 2), rel=1e-12)


def test_exchangeable_classes_give_the_full_svd_solution():
    p = UFMProblem(K=24, counts=[4] * 12 + [1] * 12, d=24, loss="ce", lam_W=5e-3, lam_H=5e-3, bias=True)
    sols = {m: ufm.solve(p, method="prox", tol=1e-9, svd=m) for m in ("auto", "full")}
    assert sols["auto"].meta["svd"]["mode"] == "classes" and sols["auto"].meta["svd"]["full"] == 0
    assert sols["full"].meta["svd"]["classes"] == 0
    assert all(s.success and s.meta["rel_duality_gap"] <= 1e-9 for s in sols.values())
    assert rel(sols["auto"].objective, sols["full"].objective) < 1e-9
    np.testing.assert_allclose(sols["auto"].Z, sols["full"].Z, atol=1e-5 * np.abs(sols["full"].Z).max())
    assert max(sols["auto"].meta["stationarity"].values()) < 1e-3


def test_partial_svd_gives_the_full_svd_solution_and_certificate():
    p = UFMProblem(labels=_topic_labels(80, 160, 3, 0), d=80, loss="ce", lam_W=3e-3, lam_H=3e-3)
    part = ufm.solve(p, method="prox", tol=1e-9, svd="partial")
    full = ufm.solve(p, method="prox", tol=1e-9, svd="full")
    st = part.meta["svd"]
    assert st["partial"] > 0.8 * part.nit and 0 < st["max_rank"] <= 20      # the leading triplets did the work
    assert full.meta["svd"]["partial"] == 0
    assert part.success and full.success and part.nit == full.nit
    assert part.meta["rel_duality_gap"] == pytest.approx(full.meta["rel_duality_gap"], rel=1e-3, abs=1e-13)
    assert rel(part.objective, full.objective) < 1e-12
    np.testing.assert_allclose(part.Z, full.Z, atol=1e-8)


def test_partial_svd_falls_back_to_full_svds_when_the_rank_is_large():
    # balanced CE: every iterate has rank K - 1, far above a quarter of K
    p = UFMProblem(K=64, n=1, d=64, loss="ce", lam_W=1e-3, lam_H=1e-3)
    part = ufm.solve(p, method="prox", tol=1e-8, svd="partial")
    st = part.meta["svd"]
    assert st["mode"] == "partial" and st["partial"] == 0 and st["full"] >= part.nit and st["max_rank"] == 63
    ref = ufm.solve(p, method="prox", tol=1e-8)                      # the class algebra
    assert ref.meta["svd"]["mode"] == "classes"
    assert part.success and rel(part.objective, ref.objective) < 1e-8
    with pytest.raises(ValueError, match="svd must be one of"):
        ufm.solve(p, method="prox", svd="lanczos")
