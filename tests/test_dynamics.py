"""ufm.dynamics: theory curves against ufm.simulate and against the derived formulas.

What is pinned here (THEORY section):

1. The numbers of ufm.dynamics are the expressions that derivations/ derived
   (ufm.symbolic: logistic_mode, mse_decay_mode, random_init_mode,
   ce_linearized_mode, two_level_peak) and the TV7a table (§6.3, §8.2).
2. The linear phase (§5.3, §6.3): for one run's initialization the predicted
   mode outputs match the flow exactly while the logits are small, for MSE and
   for the linearized CE.
3. The mode-restricted CE flow (§6.5, §8.2) from an aligned start: exact along
   the whole transient for factorial and hierarchy settings, within 1% for
   ntp_contexts.
4. The semantic transient from a random start: for the
   three settings at sigma = 4 (sigma^2 = 16 well above F <= 3 factors) the
   simulated gap rises to a clear peak and falls; the predicted peak time
   matches the mean simulated one (MSE and CE), and for MSE the transition time.
4b. Which start the theory assumes: from one run's start
   (W0, A0) the core model follows that run (gap to 1e-5, peak/rise/transition
   read off the same grid to 1e-3) where the wide-limit curve is off by tens of
   percent; spread samples are ufm.simulate's starts; the isotropic start is
   the wide limit; rise times t50/t90 on a plateau (sigma 1.5), with no
   RuntimeWarning; transient_times on a curve with known crossings; the plot
   names the start and shades the spread.
5. End states: the model's own end state equals the exact global one of
   ufm.solve (TV7b max-margin, TV8 convex optimum).
6. The symmetric-subspace flows of the standard UFM (§6.4, §6.5) against
   ufm.simulate; TheoryCurve save/load.

Not repeated here (already in tests/test_simulate_theory.py): simulate against
the closed-form aligned MSE modes and TV7a/TV5c/TV5d/TV13 on the simulation side.

Conventions: mean losses over the N examples and halved weight decays; time is
the gradient-flow time t = steps * lr of ufm.simulate.
"""

import math

import numpy as np
import pytest
from scipy.optimize import brentq

import ufm
from ufm import dynamics, symbolic
from ufm.results import Status, TheoryCurve

SETTINGS = {
    "factorial": lambda: ufm.factorial((2, 2, 2)),
    "hierarchy": lambda: ufm.hierarchy(2, depth=3),
    "ntp_contexts": lambda: ufm.ntp_contexts(),
}


def _unit_centred(G):
    G = G - G.mean(-1, keepdims=True) - G.mean(-2, keepdims=True) + G.mean((-1, -2), keepdims=True)
    return G / np.linalg.norm(G, axis=(-2, -1), keepdims=True)


def _refined_argmax(t, g):
    """Peak of samples g(t) on a uniform grid, refined by a parabola through the top three points."""
    j = int(np.argmax(g))
    if not 0 < j < len(g) - 1:
        return float(t[j])
    y0, y1, y2 = g[j - 1:j + 2]
    return float(t[j] + 0.5 * (t[1] - t[0]) * (y0 - y2) / (y0 - 2 * y1 + y2))


# =====================================================================================
# 1. the formulas (no simulation)
# =====================================================================================
def test_mse_modes_are_the_derived_logistic_laws():
    m = ufm.InputCoupledUFM.from_setting(ufm.factorial((2, 2)), sigma=0.5, d=8, loss="mse")
    times = np.array([0.0, 1.0, 5.0, 10.0, 30.0, 80.0])
    c = dynamics.mode_curves(m, times, z0=1e-3)
    np.testing.assert_allclose(c.singular_values, [2.0615528, 1.5, 1.5, 0.5], atol=1e-7)       # TV5b singular values
    z = symbolic.logistic_mode()["z"]
    for j, t in enumerate(times):
        expect = [symbolic.numeric(z, z0=1e-3, d_alpha=dv, N=4, t=t) for dv in c.singular_values]
        np.testing.assert_allclose(c.z[j], expect, rtol=1e-12)
    np.testing.assert_allclose(c.z[times == 30.0][0], [1.0, 1.0, 1.0, 0.644109], atol=1e-6)   # TV5b, t = 30
    np.testing.assert_allclose(c.z_linear, 1e-3 * np.exp(np.outer(times, c.rate)), rtol=1e-12)
    assert c.meta["solution"] == "closed_form" and c.meta["init"] == "aligned"
    # equal weight decays: logistic with carrying capacity 1 - lam N/d (the mode d = 0.5 dies out)
    lam = 0.15
    md = dynamics.mode_curves(m.__class__(Phi=m.Phi, d=8, loss="mse", lam_W=lam, lam_A=lam), times, z0=1e-3)
    zd = symbolic.mse_decay_mode()["z"]
    for j, t in enumerate(times):
        expect = [symbolic.numeric(zd, z0=1e-3, d_alpha=dv, N=4, t=t, lam=lam) for dv in md.singular_values]
        np.testing.assert_allclose(md.z[j], expect, rtol=1e-10)
    assert md.z[-1, -1] < 1e-3 and md.z[-1, 0] == pytest.approx(1 - lam * 4 / md.singular_values[0], rel=1e-6)
    # unequal decays go through the mode ODE; as lam_A -> lam_W it must reach the closed form
    mu = dynamics.mode_curves(m.__class__(Phi=m.Phi, d=8, loss="mse", lam_W=lam, lam_A=lam * (1 + 1e-9)), times,
                              z0=1e-3, rtol=1e-11)
    assert mu.meta["solution"] == "ode"
    np.testing.assert_allclose(mu.z, md.z, rtol=1e-6, atol=1e-12)


def test_random_init_calibration_and_linear_ce_rates():
    m = ufm.InputCoupledUFM.from_setting(ufm.factorial((2, 2, 2)), sigma=3.0, d=20, loss="ce")
    times = np.array([0.0, 0.5, 2.0])
    c = dynamics.mode_curves(m, times, init_scale=1e-2)
    RI = symbolic.random_init_mode()
    z_mean = symbolic.numeric(RI["z_mean"], d_alpha=1.0, dim=20, sigma0=1e-2)
    np.testing.assert_allclose(c.z0, c.singular_values * z_mean, rtol=1e-12)                    # z0 = d_a d sigma0^2 / 2
    for j, t in enumerate(times):
        expect = [symbolic.numeric(RI["Ez"], d_alpha=dv, dim=20, sigma0=1e-2, N=m.N, t=t) for dv in c.singular_values]
        np.testing.assert_allclose(c.z_linear[j], expect, rtol=1e-12, atol=1e-300)
    # CE modes are those of the centred inputs; the linearized rate is the MSE rate 2 d/N
    Xc = m.Phi - m.Phi.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(c.singular_values, np.linalg.svd(Xc, compute_uv=False)[:m.N - 1], rtol=1e-12)
    rate = symbolic.ce_linearized_mode()["early_rate"]
    np.testing.assert_allclose(c.rate, [symbolic.numeric(rate, d_alpha=dv, N=m.N) for dv in c.singular_values], rtol=1e-12)
    assert np.allclose(c.Q.sum(axis=0), 0, atol=1e-12)                            # centred modes: q_a orthogonal to 1


def test_semantic_curve_reproduces_tv7a():
    """THEORY TV7a: MSE, factorial(2, 2), sigma = 0.5, aligned z0 = 1e-3: gap and ETF distance of the item Gram."""
    m = ufm.InputCoupledUFM.from_setting(ufm.factorial((2, 2)), sigma=0.5, d=8, loss="mse")
    times = [0.0, 5.0, 10.0, 20.0, 40.0, 80.0, 1e4]
    c = dynamics.semantic_curve(m, times, z0=1e-3)
    np.testing.assert_allclose(c.semantic_gap, [0.2857, 0.4790, 0.4953, 0.4683, 0.2937, 0.2857, 0.2857], atol=1e-4)
    np.testing.assert_allclose(c.etf_distance, [0.3816, 0.5866, 0.6016, 0.5767, 0.3912, 0.3816, 0.3816], atol=1e-4)
    assert 5.0 < c.peak_time < 20.0 and c.peak_value >= 0.4953
    assert c.meta["end_state_semantic_gap"] == pytest.approx(0.2857142857, abs=1e-9)
    # the end state is (X^T X)^{1/2}, centred; the transition lies between the peak and t = 40
    w, V = np.linalg.eigh(m.input_kernel)
    np.testing.assert_allclose(c.end_gram, _unit_centred(V @ np.diag(np.sqrt(w)) @ V.T), atol=1e-12)
    assert c.peak_time < c.transition_time < 40.0


def test_peak_of_a_two_level_spectrum_solves_the_derived_condition():
    """factorial(2x2x2): centred levels d_s (3 factor modes) and d_i = sigma (4 interactions), THEORY §7.4."""
    m = ufm.InputCoupledUFM.from_setting(ufm.factorial((2, 2, 2)), sigma=4.0, d=32, loss="mse")
    c = dynamics.semantic_curve(m, [0.0], init_scale=1e-3)
    ds, di = math.sqrt(16 + 4), 4.0
    z0s, z0i = ds * 32 * 1e-6 / 2, di * 32 * 1e-6 / 2
    TP = symbolic.two_level_peak()
    cond = lambda t: symbolic.numeric(TP["condition"], d_s=ds, d_i=di, z0_s=z0s, z0_i=z0i, N=8, t=t)  # noqa: E731
    t_star = brentq(cond, 1.0, 30.0, xtol=1e-12)
    assert c.peak_time == pytest.approx(t_star, rel=1e-5)     # the random-init decaying part shifts it by < 1e-6
    assert c.meta["peak"] == "interior maximum" and c.peak_value > c.meta["gap_at_0"] + 0.1


# =====================================================================================
# 2. the linear phase of one run, against the flow
# =====================================================================================
@pytest.mark.parametrize("loss, lams", [("mse", (0.0, 0.0)), ("ce", (0.0, 0.0)), ("ce", (0.05, 0.02))],
                         ids=["mse", "ce", "ce-unequal-decays"])
def test_linear_phase_of_one_run_matches_the_flow(loss, lams):
    m = ufm.InputCoupledUFM.from_setting(ufm.factorial((2, 2, 2)), sigma=4.0, d=32, loss=loss, lam_W=lams[0],
                                         lam_A=lams[1])
    rng = np.random.default_rng(0)
    W0, A0 = 1e-3 * rng.standard_normal((m.K, m.d)), 1e-3 * rng.standard_normal((m.d, m.p))
    times = np.array([0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    c = dynamics.mode_curves(m, times, W0=W0, A0=A0)
    tr = ufm.simulate(m, steps=600, lr=0.01, mode="flow", W0=W0, A0=A0, record=("Z",),
                      record_steps=np.round(times / 0.01).astype(int), time_variable="t", rtol=1e-10, atol=1e-14)
    assert tr.status is Status.completed
    z_sim = np.einsum("ia,tij,ja->ta", c.Q, tr.Z[0], c.Q)
    zmax = np.abs(c.z_linear).max(1)[1:]
    err_lin = np.abs(z_sim - c.z_linear).max(1)[1:] / zmax
    # exact linear phase: the error is the first nonlinear correction, O(z) relative (measured 1.1 z for MSE,
    # 0.13 z for CE, whose quadratic softmax term is smaller)
    assert np.all(err_lin <= 1.5 * zmax + 1e-6), (err_lin, zmax)
    # the nonlinear model continues the growing part: off only while the decaying part matters (t < 2)
    err = np.abs(z_sim - c.z).max(1) / np.abs(c.z).max(1)
    assert np.all(err[times >= 3.0] < 1e-2), err


def test_linear_phase_at_long_times_grows_without_nan():
    """Far past the linear phase the growing exponential leaves the float range: inf, never inf * 0 = nan."""
    m = ufm.InputCoupledUFM.from_setting(ufm.factorial((2, 2, 2)), sigma=4.0, d=32, loss="ce", lam_W=0.05,
                                         lam_A=0.02)
    times = np.array([0.0, 1.0, 1e3, 1e6])
    with np.errstate(invalid="raise", divide="raise"):
        c = dynamics.mode_curves(m, times, init_scale=1e-3)
    z = c.z_linear
    assert not np.isnan(z).any()
    assert np.all(np.isfinite(z[:2])) and np.all(z[-1] == np.inf)
    # the cosh/sinh form it replaces, where that form is finite
    lin = dynamics._LinearPhase(np.array([3.0]), m.N, 0.05, 0.02, *[np.asarray(x) for x in (1.0, 2.0, 0.3)])
    t = np.array([0.0, 0.5, 3.0])[:, None]
    ch, sh = np.cosh(lin.omega * t), np.sinh(lin.omega * t) / lin.omega
    Aw, B, Av = ch - lin.delta * sh, lin.s * sh, ch + lin.delta * sh
    ref = lin.sv * np.exp(2 * lin.m * t) * (Aw * B * 1.0 + B * Av * 2.0 + (Aw * Av + B * B) * 0.3)
    np.testing.assert_allclose(lin.z(t[:, 0]), ref, rtol=1e-12)


# =====================================================================================
# 3. the mode-restricted CE flow from an aligned start
# =====================================================================================
@pytest.mark.parametrize("name", list(SETTINGS))
def test_ce_mode_flow_from_an_aligned_start(name):
    st = SETTINGS[name]()
    m = ufm.InputCoupledUFM.from_setting(st, sigma=4.0, d=16, loss="ce")
    P, d, Q = dynamics.input_modes(m)
    R = np.linalg.qr(np.random.default_rng(1).standard_normal((m.d, m.d)))[0][:, :d.size]
    z0 = 1e-4
    u = np.sqrt(z0 / d)
    W0, A0 = Q @ np.diag(u) @ R.T, R @ np.diag(u) @ P.T
    times = np.array([0.0, 5.0, 8.0, 10.0, 12.0, 15.0, 20.0, 40.0, 100.0, 1000.0, 1e4])
    c = dynamics.semantic_curve(m, times, z0=z0)
    tr = ufm.simulate(m, steps=10**4, lr=1.0, mode="flow", W0=W0, A0=A0, record=("Z", "semantic_gap"),
                      record_steps=times.astype(int), rtol=1e-10, atol=1e-14)
    assert tr.status is Status.completed
    ZQ = np.einsum("ia,tij,jb->tab", Q, tr.Z[0], Q)
    z_sim = np.einsum("taa->ta", ZQ)
    off = np.abs(ZQ - np.einsum("ta,ab->tab", z_sim, np.eye(d.size))).max((1, 2)) / np.abs(z_sim).max(1)
    rel = np.abs(z_sim - c.z).max(1) / np.abs(c.z).max(1)
    if name == "ntp_contexts":      # measured: off-diagonal <= 0.54%, z within 0.07%, gap within 1e-3
        assert off.max() < 1e-2 and rel.max() < 5e-3
        np.testing.assert_allclose(tr.semantic_gap[0], c.semantic_gap, atol=3e-3)
    else:                           # the aligned family is invariant: exact up to the integrators
        assert off.max() < 1e-7 and rel.max() < 1e-6
        np.testing.assert_allclose(tr.semantic_gap[0], c.semantic_gap, atol=1e-6)


# =====================================================================================
# 4. the semantic transient from a random start: peak and transition times
# =====================================================================================
SIGMA, DIM, SEEDS = 4.0, 32, 4
#: measured ratio predicted / mean simulated peak time (sigma = 4, d = 32, 4 seeds, init_scale 1e-3)
MEASURED = {("mse", "factorial"): 0.99, ("mse", "hierarchy"): 0.97, ("mse", "ntp_contexts"): 0.99,
            ("ce", "factorial"): 0.99, ("ce", "hierarchy"): 0.98, ("ce", "ntp_contexts"): 0.99}


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["mse", "ce"])
@pytest.mark.parametrize("name", list(SETTINGS))
def test_semantic_peak_time_matches_simulation(loss, name):
    st = SETTINGS[name]()
    m = ufm.InputCoupledUFM.from_setting(st, sigma=SIGMA, d=DIM, loss=loss)
    pred = dynamics.semantic_curve(m, [0.0], init_scale=1e-3)
    horizon = 1.6 * pred.transition_time if loss == "mse" else 4.0 * pred.peak_time
    steps, n_rec = 2000, 400
    tr = ufm.simulate(m, steps=steps, lr=horizon / steps, mode="flow", init_scale=1e-3, seeds=SEEDS, seed=3,
                      record=("semantic_gap", "gram_H") if loss == "mse" else ("semantic_gap",),
                      record_steps=np.arange(0, steps + 1, steps // n_rec),
                      time_variable="t", rtol=1e-8, atol=1e-12)
    assert tr.status is Status.completed
    t, g = tr.times, tr.semantic_gap
    peaks = np.array([_refined_argmax(t, gi) for gi in g])
    for gi in g:                                      # every run rises to an interior peak ...
        j = int(np.argmax(gi))
        assert gi[j] > gi[0] + 0.04 and 0.1 * horizon < t[j] < 0.8 * horizon, (gi[0], gi[j], t[j])
    gm = g.mean(0)                                    # ... and the mean run clearly rises, then falls
    j = int(np.argmax(gm))                            # (CE falls log-slowly: horizon = 4 peak times here)
    assert gm[j] > gm[0] + 0.07 and gm[j] > gm[-1] + (0.05 if loss == "mse" else 0.03), (gm[0], gm[j], gm[-1])
    ratio = pred.peak_time / peaks.mean()
    print(f"{loss} {name}: predicted peak {pred.peak_time:.3f}, simulated {peaks.mean():.3f} +- {peaks.std():.3f}, "
          f"ratio {ratio:.3f}")
    # required: MSE within 15%, CE within 30%; measured (MEASURED) within 3% for both
    assert abs(ratio - 1) < 0.06, ratio
    assert abs(ratio - MEASURED[loss, name]) < 0.03
    # the predicted gap curve follows the mean simulated one
    curve = dynamics.semantic_curve(m, t, init_scale=1e-3)
    assert np.max(np.abs(curve.semantic_gap - g.mean(0))) < 0.06
    assert abs(curve.peak_value - g.max(1).mean()) < 0.04
    if loss == "mse":                                 # transition: closer to the end state than to the peak Gram
        E = curve.end_gram
        trans = []
        for i in range(SEEDS):
            Gh = _unit_centred(tr.gram_H[i])
            j = int(np.argmax(g[i]))
            D = np.linalg.norm(Gh - E, axis=(1, 2)) - np.linalg.norm(Gh - Gh[j], axis=(1, 2))
            trans.append(t[j + np.flatnonzero(D[j:] < 0)[0]])
        ratio_tr = curve.transition_time / np.mean(trans)
        print(f"   transition: predicted {curve.transition_time:.3f}, simulated {np.mean(trans):.3f}, "
              f"ratio {ratio_tr:.3f}")
        assert abs(ratio_tr - 1) < 0.12           # measured 0.93-0.97


# =====================================================================================
# 4b. which start the theory assumes: one run's start, the wide limit, the spread over runs;
#     rise times
# =====================================================================================
def _log_steps(steps, n):
    return np.unique(np.concatenate([[0], np.round(np.geomspace(1, steps, n)).astype(int)]))


@pytest.mark.slow
def test_run_start_predicts_each_runs_transition_and_spread_samples_are_the_runs():
    """A Gaussian start of small width (d = 9, factorial(3, 3), CE, lam 1e-3): the wide-limit curve misses runs'
    transitions by tens of percent; the core model from each run's start follows the run exactly."""
    m = ufm.InputCoupledUFM.from_setting(ufm.factorial((3, 3)), sigma=2.0, d=9, loss="ce", lam_W=1e-3, lam_A=1e-3)
    wide = dynamics.semantic_curve(m, [0.0], spread=3, spread_seed=2, keep_gram=False)
    assert wide.meta["start"] == "gaussian_wide_limit" and "wide limit" in wide.meta["start_label"]
    steps = 20000
    horizon = 2.5 * np.max(wide.spread_transition_time)
    tr = ufm.simulate(m, steps=steps, lr=horizon / steps, mode="flow", init_scale=1e-3, seeds=3, seed=2,
                      record=("semantic_gap", "gram_H", "W", "A"), record_steps=_log_steps(steps, 300),
                      time_variable="t", rtol=1e-9, atol=1e-13)
    assert tr.status is Status.completed
    sim = dynamics.transient_times(tr.times, tr.semantic_gap, tr.gram_H, wide.end_gram)
    assert np.all(np.isfinite(sim["transition_time"]))
    # the wide limit drops the overlaps of the random start: measured -18%, +1%, +73% of the runs' transitions
    assert np.max(np.abs(wide.transition_time / sim["transition_time"] - 1)) > 0.3
    for i in range(3):
        run = dynamics.semantic_curve(m, tr.times, W0=tr.W[i, 0], A0=tr.A[i, 0])
        assert run.meta["start"] == "run" and run.meta["solution"] == "core"
        # the same start as sample i of the spread (ufm.simulate's seeds): the same prediction
        assert run.transition_time == pytest.approx(wide.spread_transition_time[i], rel=1e-6)
        assert float(run.t90) == pytest.approx(wide.spread_t90[i], rel=1e-6)
        # like with like (the same time grid, the same reading): measured gap within 7e-7, times to 1e-5
        np.testing.assert_allclose(run.semantic_gap[1:], tr.semantic_gap[i, 1:], atol=1e-5)
        same = dynamics.transient_times(tr.times, run.semantic_gap, run.gram_H, run.end_gram)
        for key in ("peak_time", "t50", "t90", "transition_time"):
            assert same[key] == pytest.approx(sim[key][i], rel=1e-3), key
        # refined on the theory's own grid: rise and peak to 0.3%, transition within 12% (measured 0.5-9%:
        # the transition depends on which Gram is the peak reference, the peak sample or the refined peak)
        assert float(run.t50) == pytest.approx(sim["t50"][i], rel=3e-3)
        assert float(run.t90) == pytest.approx(sim["t90"][i], rel=3e-3)
        assert run.peak_time == pytest.approx(sim["peak_time"][i], rel=5e-3)
        assert run.transition_time == pytest.approx(sim["transition_time"][i], rel=0.12)
    q = wide.meta["spread"]
    assert q["n"] == 3 and q["transition_time_reached"] == 3
    np.testing.assert_allclose(q["transition_time"], np.quantile(wide.spread_transition_time, (0.1, 0.5, 0.9)))


@pytest.mark.slow
def test_isotropic_start_is_the_wide_limit_and_matches_simulation():
    """isotropic_init(s) (A0^T A0 = s^2 I, W0 W0^T = s^2 I, W0 A0 = 0) is the wide limit at init_scale s/sqrt(d)."""
    d, s = 22, 1e-3
    m = ufm.InputCoupledUFM.from_setting(ufm.factorial((2, 2, 2)), sigma=3.0, d=d, loss="ce", lam_W=1e-3, lam_A=1e-3)
    iso = ufm.bridge.fitting.isotropic_init(m, s)
    probe = dynamics.semantic_curve(m, [0.0], init_scale=s / math.sqrt(d), keep_gram=False)
    steps = 20000
    tr = ufm.simulate(m, steps=steps, lr=3 * probe.transition_time / steps, mode="flow", W0=iso["W0"], A0=iso["A0"],
                      record=("semantic_gap", "gram_H"), record_steps=_log_steps(steps, 300), time_variable="t",
                      rtol=1e-10, atol=1e-14)
    assert tr.status is Status.completed
    wide = dynamics.semantic_curve(m, tr.times, init_scale=s / math.sqrt(d))
    run = dynamics.semantic_curve(m, tr.times, W0=iso["W0"], A0=iso["A0"])
    np.testing.assert_allclose(wide.semantic_gap, run.semantic_gap, atol=1e-6)       # measured 2e-8
    assert wide.transition_time == pytest.approx(run.transition_time, rel=1e-5)
    sim = dynamics.transient_times(tr.times, tr.semantic_gap[0], tr.gram_H[0], wide.end_gram)
    np.testing.assert_allclose(wide.semantic_gap[1:], tr.semantic_gap[0, 1:], atol=1e-6)
    for key, value in (("transition_time", wide.transition_time), ("peak_time", wide.peak_time),
                       ("t50", float(wide.t50)), ("t90", float(wide.t90))):
        assert value == pytest.approx(sim[key], rel=2e-3), key       # measured within 6e-4


@pytest.mark.slow
def test_rise_times_on_a_plateau_without_runtime_warnings():
    """sigma = 1.5: the gap rises to a plateau (the peak time is arbitrary); t50/t90 are not. No RuntimeWarning."""
    import warnings

    m = ufm.InputCoupledUFM.from_setting(ufm.factorial((3, 3, 3)), sigma=1.5, loss="ce", lam_W=1e-3, lam_A=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # the mode ODE divided exp(lb)/exp(la) = 0/0 once a factor underflowed
        c = dynamics.semantic_curve(m, np.geomspace(1.0, 1e7, 40), keep_gram=False)
    assert np.all(np.isfinite(c.semantic_gap))                 # (and the late Grams were NaN)
    assert c.semantic_gap[-1] == pytest.approx(c.meta["end_state_semantic_gap"], abs=1e-6)
    t50, t90 = float(c.t50), float(c.t90)
    assert 0 < t50 < t90 < c.peak_time
    g0 = c.meta["gap_at_0"]
    plateau = dynamics.semantic_curve(m, np.geomspace(3 * t90, 30 * t90, 6), keep_gram=False).semantic_gap
    assert np.all(c.peak_value - plateau < 1e-3 * (c.peak_value - g0))      # flat for a decade: peak time arbitrary
    curve = dynamics.semantic_curve(m, [t50, t90], keep_gram=False).semantic_gap
    np.testing.assert_allclose(curve, g0 + np.array([0.5, 0.9]) * (c.peak_value - g0), rtol=1e-7)
    steps = 4000
    tr = ufm.simulate(m, steps=steps, lr=20 * t90 / steps, mode="flow", init_scale=1e-3, seeds=3, seed=0,
                      record=("semantic_gap",), record_steps=_log_steps(steps, 300), time_variable="t",
                      rtol=1e-9, atol=1e-13)
    sim = dynamics.transient_times(tr.times, tr.semantic_gap)
    # measured (d = 27, wide limit vs 3 Gaussian runs): t50 -1%, t90 -8% of the mean run
    assert t50 == pytest.approx(sim["t50"].mean(), rel=0.05)
    assert t90 == pytest.approx(sim["t90"].mean(), rel=0.12)


def test_transient_times_reads_a_curve():
    t = np.concatenate([[0.0], np.geomspace(1e-3, 50.0, 4000)])
    g = 0.2 + 0.3 * (1 - np.exp(-t)) - 1e-4 * np.log1p(t / 30)     # rises, then a slightly falling plateau
    out = dynamics.transient_times(t, g)
    j = int(np.argmax(g))
    top = g[j]
    for f, key in ((0.5, "t50"), (0.9, "t90")):       # exact crossing of 0.2 + f (top - 0.2) on this curve
        exact = brentq(lambda x: 0.3 * (1 - np.exp(-x)) - 1e-4 * np.log1p(x / 30) - f * (top - 0.2), 1e-3, 10.0)
        assert out[key] == pytest.approx(exact, rel=1e-5)
    assert out["peak_value"] == top and out["peak_time"] == pytest.approx(t[j], rel=3e-3)
    assert math.isnan(out["transition_time"])
    both = dynamics.transient_times(t, np.stack([g, g[::-1] * 0 + 0.2]))      # second row never rises
    assert both["t50"][0] == out["t50"] and math.isnan(both["t50"][1]) and math.isnan(both["t90"][1])
    with pytest.raises(ValueError, match="gap must have shape"):
        dynamics.transient_times(t, g[:-1])
    with pytest.raises(ValueError, match="both grams and end_gram"):
        dynamics.transient_times(t, g, grams=np.zeros((t.size, 2, 2)))


def test_plot_trajectory_names_the_start_and_shades_the_spread():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ufm.plotting import plot_trajectory

    m = ufm.InputCoupledUFM.from_setting(ufm.factorial((2, 2)), sigma=2.0, d=4, loss="ce", lam_W=1e-3, lam_A=1e-3)
    c = dynamics.semantic_curve(m, np.geomspace(0.1, 1e4, 50), spread=2)
    ax = plot_trajectory(None, "semantic_gap", theory=c)
    labels = [ln.get_label() for ln in ax.get_lines()]
    assert f"theory start: {c.meta['start_label']}" in labels and "wide limit" in c.meta["start_label"]
    band = [p for p in ax.patches if p.get_label().startswith("transition, 2 random starts")]
    assert len(band) == 1
    lo, _, hi = c.meta["spread"]["transition_time"]
    x0, width = band[0].get_x(), band[0].get_width()        # axvspan: a Rectangle in data x, axes y
    assert x0 == pytest.approx(lo) and x0 + width == pytest.approx(hi) and lo <= hi
    plt.close(ax.figure)


# =====================================================================================
# 5. end states: the model's own against ufm.solve (TV7b, TV8)
# =====================================================================================
@pytest.mark.slow
@pytest.mark.parametrize("lam, gap_star", [(0.0, 0.0670), (1e-3, 0.1643)], ids=["max-margin-TV7b", "decay-TV8"])
def test_ce_model_end_state_is_the_global_one(lam, gap_star):
    m = ufm.InputCoupledUFM.from_setting(ufm.factorial((2, 2, 2)), sigma=2.0, d=16, loss="ce", lam_W=lam, lam_A=lam)
    c = dynamics.semantic_curve(m, [0.0, 100.0])
    s = dynamics.semantic_curve(m, [0.0, 100.0], end_gram="solve")
    assert c.meta["end_state_semantic_gap"] == pytest.approx(gap_star, abs=1e-4)
    np.testing.assert_allclose(c.end_gram, s.end_gram, atol=2e-6)
    assert c.peak_value > 0.40 and 10 < c.peak_time < 30                      # TV7b/TV8: ~0.405 near t = 20-50
    if lam:
        assert c.transition_time is not None and c.transition_time == pytest.approx(s.transition_time, rel=1e-3)
    else:                                   # logarithmically slow: still closer to the peak at t = 1e6 * t_sat
        assert c.transition_time is None and "not reached" in c.meta["transition"]


# =====================================================================================
# 6. symmetric-subspace flows of the standard UFM, and TheoryCurve as a result
# =====================================================================================
def _symmetric_init(K, n, d, a, beta, seed=1):
    evals, evecs = np.linalg.eigh(np.eye(K) - 1.0 / K)
    E = evecs[:, evals > 0.5]
    R = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))[0][:, :K - 1]
    U = E @ R.T
    return a * U, beta * np.kron(U.T, np.ones((1, n)))


@pytest.mark.parametrize("case", ["mse-bias", "mse-decay", "ce", "ce-decay"])
def test_symmetric_flow_matches_simulate(case):
    K, n, d = (3, 4, 5) if case != "ce-decay" else (4, 3, 6)
    kw = {"mse-bias": dict(loss="mse", bias=True),
          "mse-decay": dict(loss="mse", bias=True, lam_W=0.02, lam_H=0.01, lam_b=0.05),
          "ce": dict(loss="ce"), "ce-decay": dict(loss="ce", lam_W=0.01, lam_H=0.01)}[case]
    p = ufm.UFMProblem(K=K, n=n, d=d, **kw)
    times = {"mse-bias": [6.0, 12.0, 24.0, 48.0], "mse-decay": [6.0, 24.0, 100.0, 400.0],
             "ce": [1.0, 10.0, 100.0, 400.0, 1e4], "ce-decay": [10.0, 100.0, 1000.0, 5000.0]}[case]
    times = np.array([0.0] + times)
    if case == "ce-decay":                      # TV13: a0 = 0.01 sqrt(n), beta0 = 0.01
        a0, b0_ = 0.01 * math.sqrt(n), 0.01
        curve = dynamics.symmetric_flow(p, times, a0=a0, beta0=b0_)
    else:
        curve = dynamics.symmetric_flow(p, times, p0=1e-3, b0=0.0)
        a0 = math.sqrt(math.sqrt(n) * 1e-3)
        b0_ = 1e-3 / a0
    W0, H0 = _symmetric_init(K, n, d, a0, b0_)
    lr = 0.01 if p.loss == "mse" else 1.0
    tr = ufm.simulate(p, steps=int(round(times[-1] / lr)), lr=lr, mode="flow", W0=W0, H0=H0,
                      b0=np.zeros(K) if p.bias else None, record=("Z", "gram_W", "objective") + (("b",) if p.bias else ()),
                      record_steps=np.round(times / lr).astype(int), rtol=1e-10, atol=1e-13)
    assert tr.status is Status.completed
    margin = tr.Z[0, :, 0, 0] - tr.Z[0, :, 1, 0]
    np.testing.assert_allclose(curve.p, margin, rtol=1e-6)
    np.testing.assert_allclose(curve.gram_W, tr.gram_W[0], rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(curve.objective, tr.objective[0], rtol=1e-8, atol=1e-12)
    if p.bias:
        np.testing.assert_allclose(curve.b, tr.b[0], atol=1e-9)
        assert curve.b[-1, 0] == pytest.approx(1 / (K * (1 + p.lam_b)), rel=1e-6)     # TV2: b* = 1/(K(1 + lam_b))
    if case == "mse-bias":
        assert curve.meta["solution"].startswith("closed form")
        assert curve.p[times == 24.0][0] == pytest.approx(0.74899, abs=1e-5)      # TV5c p(2), our t = 2 N
    if case == "ce":
        assert curve.p[times == 400.0][0] == pytest.approx(7.81188, abs=1e-5)     # TV5d
    if case == "ce-decay":
        assert curve.p[-1] == pytest.approx(4.00250385036169, rel=1e-7)           # s* = log(1/gamma - (K-1))


def test_theory_curve_save_load_and_frozen(tmp_path):
    m = ufm.InputCoupledUFM.from_setting(ufm.factorial((2, 2)), sigma=2.0, d=8, loss="mse")
    c = dynamics.semantic_curve(m, [0.0, 1.0, 10.0])
    path = c.save(tmp_path / "curve")
    back = ufm.load(path)
    assert isinstance(back, TheoryCurve) and TheoryCurve.load(path).meta["content_hash"] == c.meta["content_hash"]
    for name in c.records:
        np.testing.assert_array_equal(back.records[name], c.records[name])
    for name in c.constants:
        np.testing.assert_array_equal(getattr(back, name), c.constants[name])
    assert (back.kind, back.peak_time, back.transition_time) == (c.kind, c.peak_time, c.transition_time)
    with pytest.raises(ValueError):
        back.semantic_gap[0] = 1.0
    with pytest.raises(TypeError):
        back.records["x"] = np.zeros(3)
    with pytest.raises(AttributeError, match="no record or constant"):
        back.nope
    f = dynamics.symmetric_flow(ufm.UFMProblem(K=3, n=2, d=3, loss="ce"), [0.0, 1.0], p0=0.01)
    assert f.peak_time is None and ufm.load(f.save(tmp_path / "f.npz")).transition_time is None
    assert "TheoryCurve" in ufm.__all__ and ufm.TheoryCurve is TheoryCurve and ufm.dynamics is dynamics


def test_bad_input_is_refused_with_a_fix():
    st = ufm.factorial((2, 2))
    m = ufm.InputCoupledUFM.from_setting(st, sigma=1.0, d=4, loss="ce")
    with pytest.raises(ValueError, match="InputCoupledUFM"):
        dynamics.semantic_curve(st.as_problem(d=4), [0.0])
    with pytest.raises(ValueError, match="distinct one-hot"):
        dynamics.mode_curves(ufm.InputCoupledUFM(Phi=m.Phi, d=4, labels=np.array([0, 0, 1, 1])), [0.0])
    with pytest.raises(ValueError, match="one of z0"):
        dynamics.mode_curves(m, [0.0], z0=1e-3, init_scale=1e-3)
    with pytest.raises(ValueError, match="spread samples Gaussian starts"):
        dynamics.semantic_curve(m, [0.0], z0=1e-3, spread=2)
    with pytest.raises(ValueError, match="spread must be an integer"):
        dynamics.semantic_curve(m, [0.0], spread=-1)
    with pytest.raises(ValueError, match="non-decreasing"):
        dynamics.mode_curves(m, [1.0, 0.0])
    with pytest.raises(ValueError, match="attributes"):
        dynamics.semantic_curve(ufm.InputCoupledUFM(Phi=m.Phi, d=4), [0.0])
    with pytest.raises(ValueError, match="d >= K - 1"):
        dynamics.symmetric_flow(ufm.UFMProblem(K=4, n=1, d=2), [0.0], p0=1e-3)
    with pytest.raises(ValueError, match="p0"):
        dynamics.symmetric_flow(ufm.UFMProblem(K=3, n=1, d=2), [0.0])
