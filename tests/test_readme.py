"""The README: the two commands, a first session that runs as written, the docs, the module map.

The longer examples (imbalanced classes, the phase diagram, the bridge) live in the docs' guide
pages, whose code tests/test_docs_guide.py runs.
"""

import pathlib
import re

import pytest

import ufm

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def test_readme_opens_with_the_two_commands():
    text = README.read_text()
    first_block = re.search(r"```\n(.*?)```", text, re.S).group(1).strip().split("\n")
    assert len(first_block) == 2
    assert first_block[0].startswith("make demo") and first_block[1].startswith("make test")


def test_readme_first_session_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) == 1, "the README keeps one example; the others belong in the docs"
    ns = {}
    exec(compile(blocks[0], str(README), "exec"), ns)
    sol = ns["sol"]
    assert (sol.objective, sol.regime, sol.status.name) == (pytest.approx(0.26133639, abs=1e-8), "etf", "exact")
    assert sol.meta["s"] == pytest.approx(4.00250385, abs=1e-8)
    assert ns["metrics"].etf_distance(sol.gram_W) < 1e-12
    assert ns["gd"].objective[:, -1] == pytest.approx([0.26133639] * 4, abs=1e-8)
    gap = ns["tr"].semantic_gap[0]
    assert gap.max() == pytest.approx(0.42, abs=0.015) and gap[0] < gap.max() - 0.2 and gap[-1] < gap.max() - 0.1


def test_readme_points_to_the_docs_and_the_theory():
    text = README.read_text()
    assert "make docs" in text and "docs/_build/html/index.html" in text
    assert "docs/theory.md" in text and (ROOT / "docs" / "theory.md").exists()
    assert "docs/guide/glossary.md" in text and (ROOT / "docs" / "guide" / "glossary.md").exists()


def test_module_map_lists_every_public_module_and_entry_point():
    text = README.read_text()
    table = text[text.index("## What is here"):]
    listed = set(re.findall(r"^\| `(ufm\.\w+)`", table, re.M))
    public = {f"ufm.{m}" for m in ufm._MODULES} | {"ufm.solve", "ufm.simulate", "ufm.sweep"}
    assert public <= listed, f"missing from the README's module map: {sorted(public - listed)}"
