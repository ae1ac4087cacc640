"""The theory ships in the repository: every "THEORY §x" citation resolves to a target of docs/theory.md.

The code cites docs/theory.md by section (``THEORY §8.2``), equation (``THEORY (0.1)``), test
vector (``TV6``) and appendix (``Appendix A.0``). docs/theory_refs.py maps each citation to a
MyST target of theory.md (``(theory-8-2)=`` above the heading of §8.2) and turns the citations of
rendered docstrings into links; these tests check every citation of the source tree, rendered or
not, and that the targets are the stable anchors of the headings they name.
"""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
THEORY = ROOT / "docs" / "theory.md"
SOURCES = sorted(p for d in ("ufm", "derivations", "examples") for p in (ROOT / d).rglob("*.py"))


def _theory_refs():
    spec = importlib.util.spec_from_file_location("theory_refs", ROOT / "docs" / "theory_refs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


refs = _theory_refs()


def _targets(text: str) -> dict[str, str]:
    """MyST targets of theory.md -> the line they stand above (a heading or an equation)."""
    lines = text.split("\n")
    out = {}
    for i, line in enumerate(lines):
        m = re.fullmatch(r"\s*\((theory[\w-]*)\)=", line)
        if m:
            nxt = next(l for l in lines[i + 1:] if not re.fullmatch(r"\s*\(theory[\w-]*\)=", l))
            out[m.group(1)] = nxt.strip()
    return out


TARGETS = _targets(THEORY.read_text())


def _cited() -> dict[str, set[str]]:
    cited: dict[str, set[str]] = {}
    for path in SOURCES:
        for label in refs.citations(path.read_text()):
            cited.setdefault(label, set()).add(str(path.relative_to(ROOT)))
    return cited


def test_every_citation_in_the_code_resolves_to_a_target_of_theory_md():
    cited = _cited()
    # the tree cites the theory hundreds of times; a parser that finds none is broken, not green
    assert sum(len(v) for v in cited.values()) > 100 and len(cited) > 30
    missing = {label: sorted(files) for label, files in cited.items() if label not in TARGETS}
    assert not missing, f"citations without a target in docs/theory.md: {missing}"


@pytest.mark.parametrize("text, labels", [
    ("THEORY §8.2 (c)", ["theory-8-2"]),
    ("THEORY §8.2b, §8.2", ["theory-8-2b", "theory-8-2"]),       # a lettered subsection has its own target
    ("THEORY.md §5.3, §6.1-6.5, §7.4", ["theory-5-3", "theory-6-1", "theory-6-5", "theory-7-4"]),
    ("the objective (THEORY (0.1))", ["theory-eq-0-1"]),
    ("THEORY TV5b/TV7a", ["theory-tv5", "theory-tv7"]),
    ("Appendix A.0", ["theory-a-0"]),
    ("Appendix C.2", ["theory-c-2"]),
    ("(THEORY 8.2)", ["theory-8-2"]),
    ("Tirer et al. arXiv 2210.16658 §3", []),          # a paper's own section, not THEORY's
])
def test_citation_parser(text, labels):
    assert refs.citations(text) == labels


def test_every_numbered_heading_has_its_stable_anchor():
    lines = THEORY.read_text().split("\n")
    for i, line in enumerate(lines):
        m = re.match(r"#{2,3} (?:(\d+)\.(\d+[a-z]?)?|A\.(\d+)|Appendix ([ABC])\.|C\.(\d+))", line)
        if not m:
            continue
        above = lines[i - 1]
        if m.group(1):
            want = "theory-" + m.group(1) + (f"-{m.group(2)}" if m.group(2) else "")
        elif m.group(3):
            want = f"theory-a-{m.group(3)}"
            above = lines[i - 2] if lines[i - 1].startswith("(theory-tv") else above
        elif m.group(5):
            want = f"theory-c-{m.group(5)}"
        else:
            want = f"theory-{m.group(4).lower()}"
        assert above == f"({want})=", f"heading {line!r} lacks the target ({want})= right above it"


def test_targets_name_what_they_stand_above():
    for label, line in TARGETS.items():
        if re.fullmatch(r"theory-\d+(-\d+[a-z]?)?", label):
            number = label.removeprefix("theory-").replace("-", ".")
            assert re.match(rf"#{{2,3}} {re.escape(number)}[. ]", line), (label, line)
        elif label.startswith("theory-eq-"):
            tag = label.removeprefix("theory-eq-").replace("-", ".")
            assert line == "$$", (label, line)
            block = THEORY.read_text().split(f"({label})=\n", 1)[1].split("$$")[1]
            assert rf"\tag{{{tag}}}" in block, (label, block)
        elif label.startswith("theory-tv"):
            assert re.match(rf"### A\.\d+ TV{label.removeprefix('theory-tv')}:", line), (label, line)
    # all equations the text numbers carry a target
    assert {f"theory-eq-{t}" for t in ("0-1", "1-1", "2-1", "3-1", "3-2", "4-1", "5-1", "5-2", "8-1", "8-2")} <= set(TARGETS)
