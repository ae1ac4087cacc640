"""The code of the documentation pages runs as written, and the values its comments state hold.

Every ```python block of docs/index.md and docs/guide/*.md is executed, page by page in one
namespace (a page's blocks build on each other), in a temporary folder. Blocks shown but not run
(shell commands, code that needs a cluster) are written as ```{code-block}.
"""

import re
from pathlib import Path

import numpy as np
import pytest

from ufm.results import Status

pytestmark = pytest.mark.slow          # trains, runs subprocesses or reads the built site: `make test-fast` skips it

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = [DOCS / "index.md"] + sorted((DOCS / "guide").glob("*.md"))


def _run(page: Path) -> dict:
    blocks = re.findall(r"^```python\n(.*?)^```", page.read_text(), re.S | re.M)
    ns: dict = {}
    for k, block in enumerate(blocks):
        exec(compile(block, f"{page.name}[block {k}]", "exec"), ns)
    return ns


def _check_index(ns):
    assert ns["sol"].regime == "etf" and ns["sol"].objective == pytest.approx(0.26133639, abs=1e-8)
    assert ns["sol"].meta["s"] == pytest.approx(4.00250385, abs=1e-8)
    gap = ns["tr"].semantic_gap[0]
    assert gap.max() == pytest.approx(0.42, abs=0.015) and gap[-1] < gap.max() - 0.1


def _check_standard_ufm(ns):
    assert ns["p"].gamma == pytest.approx(0.0173205, abs=1e-7) and ns["shuffled"].counts == (3, 3, 3, 3)
    sol = ns["sol"]
    assert sol.meta["auto"]["method"] == "prox" and sol.success and sol.meta["rel_duality_gap"] < 1e-9
    assert ns["ufm"].metrics.cosine_matrix(sol.gram_W)[2, 3] == pytest.approx(1.0, abs=1e-3)
    assert type(ns["same"]).__name__ == "Solution" and ns["same"].objective == sol.objective


def _check_simulating(ns):
    assert ns["gd"].status is Status.completed
    assert ns["gd"].objective[:, -1] == pytest.approx([0.26133639] * 4, abs=1e-8)
    assert ns["flow"].meta["time_variable"] == "log(1+t)" and ns["flow"].status is Status.completed
    assert ns["norms"].w_norm.shape[0] == 1
    assert np.array_equal(ns["a"].W[0], ns["b"].W[0])
    assert np.array_equal(ns["first"].W, ns["again"].W) and isinstance(ns["first"].meta["seed"]["entropy"], int)


def _check_theory_curves(ns):
    assert np.abs(ns["traj"].gram_W[0] - ns["sym"].gram_W).max() < 1e-6
    assert ns["sym"].p[-1] == pytest.approx(ns["ufm"].solve(ns["p"]).meta["s"], rel=1e-6)
    curve = ns["curve"]
    assert curve.peak_value == pytest.approx(0.332, abs=2e-3)
    assert curve.peak_time == pytest.approx(12.6, rel=0.02) and curve.transition_time == pytest.approx(534, rel=0.02)
    rates = ns["modes"].constants["rate"]
    assert rates[0] == pytest.approx(2 * ns["modes"].constants["singular_values"][0] / 8)


def _check_semantic_models(ns):
    gap = ns["gap"]
    assert gap.max() == pytest.approx(0.42, abs=0.015) and gap[-1] == pytest.approx(0.16, abs=0.02)
    assert ns["metrics"].semantic_gap(ns["end"].gram_H, ns["s"].attributes) == pytest.approx(0.164, abs=1e-3)
    assert ns["Phi"].shape == (14, 8)
    assert (ns["end_h"].method, ns["end_h"].regime) == ("closed_form", "etf")
    assert ns["metrics"].etf_distance(ns["end_h"].gram_H) < 1e-9
    assert ns["gap_h"].max() == pytest.approx(0.42, abs=0.015) and abs(ns["gap_h"][-1]) < 1e-6


def _check_sweeps(ns):
    assert (ns["again"].meta["n_cached"], ns["again"].meta["n_computed"]) == (2, 0)
    assert ns["res"].column("end_etf_distance") == pytest.approx([0.41, 0.11], abs=0.01)
    assert ns["res"].column("peak_gap") == pytest.approx([0.43, 0.24], abs=0.01)


def _check_bridge(ns):
    f = ns["f"]
    assert f.params["model"] in ("input_coupled", "feature_penalty")       # lam = 0: the two coincide
    assert f.gof["input_coupled"]["gap_r2"] > 0.95 and f.gof["anchored"]["gap_r2"] < 0.5
    lo, hi = f.intervals["sigma"]
    assert abs(f.params["sigma"] - 2.0) < 0.1 and lo <= 2.0 <= hi                  # as the comments say
    assert f.identifiable["lam"] is False and f.intervals["lam"][1] < 1e-6
    assert Path("run.npz").exists() and "input_coupled" in f.message


def _check_results(ns):
    assert (ns["sol"].success, ns["sol"].status, ns["sol"].regime) == (False, Status.no_method, "")
    assert "imbalanced" in ns["sol"].message and ns["failed"].status is Status.no_method


def _check_adding_a_loss(ns):
    s0 = np.log(1 + 4 * 0.9 / 0.1)                       # THEORY (1.2)
    np.testing.assert_allclose(ns["margin"], s0, rtol=1e-6)
    assert ns["sol"].success and ns["sol"].meta["rel_duality_gap"] < 1e-10
    assert ns["gd"].objective[0, -1] == pytest.approx(ns["sol"].objective, rel=1e-12)
    assert max(ns["res"].values()) < 1e-10


CHECKS = {"index": _check_index, "guide/results": _check_results, "guide/adding_a_loss": _check_adding_a_loss,
          "guide/standard_ufm": _check_standard_ufm, "guide/simulating": _check_simulating,
          "guide/theory_curves": _check_theory_curves, "guide/semantic_models": _check_semantic_models,
          "guide/sweeps": _check_sweeps, "guide/bridge": _check_bridge}


def _name(page: Path) -> str:
    return page.relative_to(DOCS).with_suffix("").as_posix()


@pytest.mark.parametrize("page", [p for p in PAGES if "```python" in p.read_text()], ids=_name)
def test_page_code_runs(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    CHECKS[_name(page)](_run(page))


def test_every_page_with_code_has_its_checks():
    with_code = {_name(p) for p in PAGES if "```python" in p.read_text()}
    assert with_code <= set(CHECKS), f"pages whose code no check covers: {sorted(with_code - set(CHECKS))}"
    assert len(with_code) >= 6
