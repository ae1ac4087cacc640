"""Bring-your-own examples run as a user runs them: a plain torch loop and a plain NumPy network, fitted by ufm."""

import sys
from pathlib import Path

import numpy as np
import pytest

import ufm
from ufm.metrics import semantic_gap

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import bridge_byo_numpy  # noqa: E402


@pytest.mark.slow
def test_numpy_network_grams_are_fitted_from_arrays():
    steps, grams, fit = bridge_byo_numpy.main(max_iter=60)
    X, attributes = bridge_byo_numpy.make_inputs((2, 2, 2))
    gap = np.array([semantic_gap(g, attributes) for g in grams])
    assert gap.max() > gap[0] + 0.05 and gap[-1] < 0.5 * gap.max()          # the network shows the transient
    assert fit.transitions["observed"]["step"] is not None
    assert fit.params["m2_kernel"] == "inputs" and "sigma" not in fit.params
    assert fit.meta["source"].startswith("array of") and len(fit.steps) == len(grams)
    assert fit.verdict and all(np.isfinite(fit.gof[m]["gap_r2"]) for m in fit.gof)
    # the same Grams with ufm's encoding (sigma fitted): M2 reproduces the gap curve
    enc = ufm.fit(grams, steps=steps, attributes=attributes, models=("input_coupled",), max_iter=100)
    assert enc.gof["input_coupled"]["gap_r2"] > 0.9


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
                models=("input_coupled",))
    assert f.params["m2_engine"] == "dense"                     # the noisy inputs are not constant on patterns
    assert abs(f.params["lam"] / 1e-3 - 1) < 0.05 and abs(f.params["init_scale"] / 1e-2 - 1) < 0.05
    assert f.gof["input_coupled"]["gram_r2_full"] > 0.999


@pytest.mark.slow
def test_torch_training_loop_recorded_with_a_hook_and_fitted_with_its_inputs():
    import bridge_byo_torch

    run, fit = bridge_byo_torch.main([], levels=(2, 2, 2), steps=600, max_iter=40)
    X, attributes, _, _ = bridge_byo_torch.make_data((2, 2, 2))
    assert run.K == 8 and run.W is not None and run.within is not None and np.all(run.counts == 8)
    np.testing.assert_array_equal(run.attributes, attributes)
    assert run.loss[-1] < run.loss[0]
    assert fit.params["m2_kernel"] == "inputs" and fit.params["m2_engine"] == "dense"
    assert "NC1 trace ratio" in fit.message                   # within-class traces of 8 examples per class
    assert fit.curves["observed_nc1_trace_ratio"][-1] < fit.curves["observed_nc1_trace_ratio"][0]
    assert fit.verdict
    summary = ufm.bridge.gap_summary(run)                       # the run summary carries the within-class metrics
    np.testing.assert_allclose(summary["nc1"], fit.curves["observed_nc1_trace_ratio"])
    assert summary["nc1_end"] < summary["nc1_start"] and summary["cdnv"].shape == (run.T,)
