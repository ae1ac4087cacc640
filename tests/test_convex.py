"""Exact global solvers (ufm.convex) against closed forms, each other, simulations and THEORY test vectors."""

import numpy as np
import pytest

import ufm
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
    assert rel(sol.loss, ref.loss) < 1e-6
    assert sol.meta["rel_duality_gap"] <= 1e-6
    np.testing.assert_allclose(sol.gram_W, ref.gram_W, atol=1e-5 * max(1, np.abs(ref.gram_W).max()))
    assert rel(losses.objective(problem, sol.W, sol.H, sol.b), ref.loss) < 1e-6
    if ref.status != "zero":
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
    values = [s.loss for s in sols]
    assert max(values) - min(values) < 1e-6 * max(1.0, abs(values[0]))
    for s in sols[1:]:
        np.testing.assert_allclose(s.Z, sols[0].Z, atol=1e-3 * max(1.0, np.abs(sols[0].Z).max()))
    # the nonconvex objective at the recovered factors is the convex optimum (d >= rank)
    for s in sols:
        assert rel(losses.objective(problem, s.W, s.H, s.b), s.loss) < 1e-9


def test_long_gradient_descent_ends_at_the_convex_optimum():
    p = UFMProblem(K=4, counts=[3, 3, 1, 1], d=4, loss="ce", lam_W=0.01, lam_H=0.01, bias=True, lam_b=0.05)
    sol = ufm.solve(p, method="prox", tol=1e-8)
    tr = ufm.simulate(p, steps=60000, lr=1.0, init_scale=0.1, seeds=3, record=("loss", "gram_W"))
    np.testing.assert_allclose(tr.loss[:, -1], sol.loss, rtol=1e-7)
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
        assert sol.loss == pytest.approx(obj, abs=1e-5)
        assert sol.meta["form"] == "collapsed"


def test_tv8_input_coupled_optimum():
    s = ufm.factorial((2, 2, 2))
    m = InputCoupledUFM.from_setting(s, sigma=2.0, d=16, lam_W=1e-3, lam_A=1e-3)
    for method in ("convex", "prox"):
        sol = ufm.solve(m, method=method)
        assert sol.loss == pytest.approx(0.02631712, abs=1e-8)
        G = sol.H.T @ sol.H
        assert metrics.semantic_gap(G, s.attributes) == pytest.approx(0.1643, abs=1e-4)
        assert metrics.etf_distance(G) == pytest.approx(0.4064, abs=1e-4)
        np.testing.assert_allclose(sol.H, sol.A @ m.Phi, atol=1e-12)
        assert rel(losses.input_coupled_objective(m, sol.W, sol.A), sol.loss) < 1e-9


@pytest.mark.parametrize("counts", [[3, 3, 1, 1], [5, 1, 1], [2, 4, 1, 3, 2], [4, 4, 4]])
def test_svm_is_seli(counts):
    p = UFMProblem(K=len(counts), counts=counts, d=len(counts), loss="ce")
    sol = ufm.solve(p, method="svm")
    np.testing.assert_allclose(sol.Z, (np.eye(p.K) - 1 / p.K) @ p.Y, atol=1e-6)
    assert rel(sol.loss, ufm.solve(p, method="closed_form").loss) < 1e-7


def test_tv4_ntp_svm_and_in_support_logits():
    V, m = 6, 5
    supp = [[0, 1], [0, 1], [2, 3], [3, 4], [5]]
    prob = [[.7, .3], [.2, .8], [.5, .5], [.6, .4], [1.0]]
    P = np.zeros((V, m))
    for j, (s, q) in enumerate(zip(supp, prob)):
        P[s, j] = q
    sol = ufm.solve(UFMProblem(labels=P, d=6, loss="ce"), method="svm")
    assert sol.status == "ntp_svm" and sol.loss == pytest.approx(4.42650, abs=1e-4)
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
        assert c["dual"] <= sol.loss + 1e-12 <= c["primal"] + 2e-12
        assert c["gap"] > 1e-3
    assert sol.meta["rel_duality_gap"] <= 1e-7


def test_zero_optimum_is_detected_exactly():
    p = UFMProblem(K=3, counts=[3, 1, 1], d=3, loss="ce", lam_W=0.5, lam_H=0.5)
    for method in ("convex", "prox"):
        sol = ufm.solve(p, method=method)
        assert sol.status == "zero" and not np.any(sol.W) and sol.meta["duality_gap"] < 1e-12


def test_errors_and_unsuccessful_results_say_what_to_change():
    with pytest.raises(ValueError, match="max-margin direction"):
        ufm.solve(UFMProblem(K=3, counts=[2, 1, 1], d=3, loss="ce"), method="convex")
    with pytest.raises(ValueError, match="anchored UFM has no nuclear-norm form"):
        ufm.solve(AnchoredUFM(H_anchor=np.ones((3, 3)), beta=1.0, K=3, n=1, lam_W=0.1, lam_H=0.1), method="prox")
    with pytest.raises(ValueError, match="solver must be one of"):
        ufm.solve(HARD[0], method="convex", solver="ECOS")
    with pytest.raises(ValueError, match="d=2 is below rank"):
        ufm.solve(UFMProblem(K=4, counts=[3, 3, 1, 1], d=2, lam_W=0.01, lam_H=0.01), method="convex")
    sol = ufm.solve(HARD[1], method="prox", max_iter=3, tol=1e-12)
    assert not sol.success and sol.status == "max_iter" and "raise max_iter" in sol.message


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
    with pytest.raises(RuntimeError, match="margins cannot be met"):
        ufm.solve(m, method="svm")
