"""A small version of benchmarks/bench_calibration.py: ufm.fit's 90% intervals contain the truth of simulated M2
runs (random parameters, Gaussian starts of widths 16-64, only gram_H, lam unknown) at about their stated rate."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_calibration as calib  # noqa: E402


@pytest.mark.slow
def test_intervals_cover_the_truth_of_simulated_runs_and_sigma_is_measured_to_five_percent():
    runs = calib.truths(12, 12345)
    picked = [runs[i] for i in (0, 1, 2, 3, 5, 7, 9, 11)]          # 3 GD, 5 flow (the GD fits are the slower)
    rows = [(t, calib.fit_new(calib.simulate(t), t, hide_width=False, n_boot=20)) for t in picked]
    sc = calib.score(rows)
    assert sc["sigma"]["coverage"] >= 7 / 8 and sc["lam"]["coverage"] >= 6 / 8, sc
    assert sc["strengths"]["coverage"] >= 0.75 and sc["init_scale"]["coverage"] >= 6 / 8, sc
    assert sc["sigma"]["identifiable"] == 1.0 and sc["sigma"]["median_error"] <= 0.05, sc
    assert all("the run's own width" in f["method"] for _, f in rows)
