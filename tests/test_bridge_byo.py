"""Bring-your-own examples run as a user runs them: a plain torch loop and a plain NumPy network, fitted by ufm."""

import sys
from pathlib import Path

import numpy as np
import pytest

import ufm
from ufm.bridge.fitting import ACCEPT
from ufm.metrics import semantic_gap

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import bridge_byo_numpy  # noqa: E402


@pytest.mark.slow
def test_numpy_relu_network_is_not_explained_by_its_raw_inputs_and_the_fit_says_so():
    """A ReLU network's effective kernel is not its inputs': with inputs= nothing is accepted; ufm's encoding
    with a fitted sigma follows the gap curve far better."""
    steps, grams, fit = bridge_byo_numpy.main(bootstrap=0)
    X, attributes = bridge_byo_numpy.make_inputs((2, 2, 2))
    gap = np.array([semantic_gap(g, attributes) for g in grams])
    assert gap.max() > gap[0] + 0.05 and gap[-1] < 0.5 * gap.max()          # the network shows the transient
    assert fit.transitions["observed"]["peak"]["step"] is not None
    assert fit.params["kernel"] == "inputs" and "sigma" not in fit.params
    assert fit.meta["source"].startswith("array of") and len(fit.steps) == len(grams)
    assert fit.best_model is None and "nothing here explains" in fit.verdict
    assert all(e["step"] is None and "no model is accepted" in e["reason"]
               for e in fit.transitions["predicted"].values())
    enc = ufm.fit(grams, steps=steps, attributes=attributes, models=("input_coupled", "feature_penalty"),
                  clock="linear", bootstrap=0)
    assert max(enc.gof[m]["gap_r2"] for m in enc.gof) > 0.8 > max(fit.gof[m]["gap_r2"] for m in fit.gof
                                                                    if m != "static")


@pytest.mark.slow
def test_inputs_given_to_m2_recover_its_weight_decay_and_start():
    """A run of M2 with real-valued inputs (not ufm's encoding) is fitted back exactly when the inputs are given."""
    from ufm.bridge.fitting import isotropic_init
    from ufm.problems import InputCoupledUFM

    s = ufm.factorial((2, 2, 2))
    Phi = np.vstack([s.encoding(2.0), 0.5 * np.random.default_rng(0).standard_normal((5, 8))])
    prob = InputCoupledUFM(Phi=Phi, d=Phi.shape[0] + 8, loss="ce", lam_W=1e-3, lam_A=1e-3, labels=np.arange(8))
    tr = ufm.simulate(prob, steps=10**6, lr=0.05, mode="flow", record=("gram_H",), n_records=30,
                      **isotropic_init(prob, 1e-2))
    f = ufm.fit(np.asarray(tr.records["gram_H"][0]), steps=tr.times, attributes=s.attributes, inputs=Phi,
                models=("input_coupled",), clock="linear", bootstrap=0)
    assert f.params["engine"] == "dense"                        # the noisy inputs are not constant on patterns
    assert abs(f.params["lam"] / 1e-3 - 1) < 0.05 and abs(f.params["init_scale"] / 1e-2 - 1) < 0.05
    assert abs(f.params["time_scale"] - 1) < 0.02                # tau = step: the arrays' steps are flow times
    assert f.gof["input_coupled"]["gram_r2_full"] > 0.999


@pytest.mark.slow
def test_torch_training_loop_on_given_inputs_is_fitted_with_them_and_the_model_reproduces_the_rise():
    """A torch network written as a user writes it, trained on real-valued inputs with the UFM's penalties and
    SGD, recorded with a hook and fitted with inputs= its own class-mean inputs: M2-H is accepted (a clock
    that is not degenerate, the rise, the end), and its fitted feature decay, start scale and SGD step are the
    network's."""
    import bridge_byo_torch

    run, fit = bridge_byo_torch.main([], levels=(2, 2, 2), steps=3000, bootstrap=12)
    X, attributes, _, _ = bridge_byo_torch.make_data((2, 2, 2))
    assert run.K == 8 and run.W is not None and run.within is not None and np.all(run.counts == 8)
    np.testing.assert_array_equal(run.attributes, attributes)
    assert run.loss[-1] < run.loss[0]
    assert fit.params["kernel"] == "inputs" and fit.params["engine"] == "dense"
    assert fit.best_model == "feature_penalty"
    g = fit.gof["feature_penalty"]
    assert "degenerate_clock" not in g and g["rise_r2"] >= ACCEPT["rise_r2"] and g["gap_r2"] >= ACCEPT["gap_r2"]
    assert abs(fit.params["lam"] / 1e-3 - 1) < 0.2                # the network's feature and classifier decay
    assert abs(fit.params["init_scale"] / (1e-3 * 64 ** 0.5) - 1) < 0.2   # std 1e-3 in width 64
    assert abs(fit.params["time_scale"] / 0.5 - 1) < 0.1          # SGD's step: tau = lr * step
    assert "NC1 trace ratio" in fit.message                     # within-class traces of 8 examples per class
    assert fit.curves["observed_nc1_trace_ratio"][-1] < fit.curves["observed_nc1_trace_ratio"][0]
    summary = ufm.bridge.gap_summary(run)                       # the run summary carries the within-class metrics
    np.testing.assert_allclose(summary["nc1"], fit.curves["observed_nc1_trace_ratio"])
    assert summary["nc1_end"] < summary["nc1_start"] and summary["cdnv"].shape == (run.T,)


def test_a_degenerate_time_map_is_a_failure_the_verdict_names():
    """Grams the model cannot follow at all: the fitted clock collapses the records onto the model's start, and
    the verdict says the fit says nothing instead of reporting parameters as if it did."""
    s = ufm.factorial((2, 2, 2))
    rng = np.random.default_rng(0)
    G = np.array([(lambda X: X.T @ X)(rng.standard_normal((8, 8))) for _ in range(20)])
    r = ufm.fit(G, setting=s, steps=np.arange(20.0) * 10, models=("input_coupled",), inputs=s.encoding(1.0),
                clock="linear", bootstrap=0, progress=False)
    g = r.gof["input_coupled"]
    assert "degenerate time map" in g["degenerate_clock"] and not g["accepted"] and not g["explains"]["clock"]
    assert "degenerate time map" in r.verdict and r.best_model is None
