"""The README's first session runs as written, and its commented values hold."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_opens_with_the_two_commands():
    text = README.read_text()
    first_block = re.search(r"```\n(.*?)```", text, re.S).group(1).split("\n")
    assert first_block[0].startswith("make demo") and first_block[1].startswith("make test")


def test_readme_python_block_runs():
    first, second, third, fourth = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    ns = {}
    exec(compile(first, str(README), "exec"), ns)
    sol = ns["sol"]
    assert (sol.loss, sol.status) == (pytest.approx(0.26133639, abs=1e-8), "etf")
    assert sol.meta["s"] == pytest.approx(4.00250385, abs=1e-8)
    assert ns["metrics"].etf_distance(sol.gram_W) < 1e-12
    assert ns["Phi"].shape == (6 + 8, 8)
    assert ns["gd"].loss[:, -1] == pytest.approx([0.26133639] * 4, abs=1e-8)
    gap = ns["tr"].semantic_gap[0]
    assert gap.max() == pytest.approx(0.41, abs=0.01) and gap[0] < gap.max() - 0.2 and gap[-1] < gap.max() - 0.1
    assert ns["flow"].status == "completed" and ns["flow"].meta["time_variable"] == "log(1+t)"
    exec(compile(second, str(README), "exec"), ns)                 # the imbalanced example
    assert ns["sol"].meta["auto"]["method"] == "prox"
    assert ns["metrics"].cosine_matrix(ns["sol"].gram_W)[2, 3] == pytest.approx(1.0, abs=1e-3)
    exec(compile(third, str(README), "exec"), ns)                  # structure before collapse: the phase diagram
    assert ns["res"].column("end_etf_distance") == pytest.approx([0.41, 0.11], abs=0.01)
    assert ns["res"].column("peak_gap") == pytest.approx([0.43, 0.24], abs=0.01)


def test_readme_bridge_block_runs(tmp_path, monkeypatch):
    fourth = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[3]
    monkeypatch.chdir(tmp_path)
    ns = {}
    exec(compile(fourth, str(README), "exec"), ns)
    f = ns["f"]
    assert f.params["sigma"] == pytest.approx(2.0, rel=0.05) and f.best_model == "input_coupled"
    assert f.gof["input_coupled"]["gap_r2"] > 0.95
    assert (tmp_path / "run.npz").exists()
