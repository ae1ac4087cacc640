"""Sphinx extension: the "THEORY §x" citations of ufm's docstrings become links into theory.md.

Every docstring cites the theory by section (``THEORY §8.2``), test vector (``TV6``), appendix
(``Appendix A.0``) or equation (``THEORY (0.1)``). This turns each citation into a cross-reference
to the matching target of ``docs/theory.md`` (``(theory-8-2)=``, ``(theory-tv6)=``, ...), so the
API pages link to the formula they implement, and a citation without a target fails the build
(``-W``): a broken reference is a warning. ``tests/test_docs_theory.py`` checks the same for
every citation in the source tree, rendered or not.
"""

from __future__ import annotations

import re

#: One citation token; ``label()`` maps a match to its target in theory.md.
TOKEN = re.compile(
    r"(?P<theory>\bTHEORY(?:\.md)?)(?:(?P<eq>\s+\((?P<eqn>\d+\.\d+)\))|\s+(?P<bare>\d+\.\d+[a-z]?)\b)?"
    r"|§\s?(?P<sec>\d+(?:\.\d+[a-z]?)?)(?:(?P<dash>\s*[-–]\s*)(?P<sec2>\d+\.\d+[a-z]?))?"
    r"|\b(?P<tv>TV(?P<tvn>\d+)[a-d]?)\b"
    r"|\b(?P<app>Appendix\s+(?P<appl>[ABC])(?:\.(?P<appn>\d+))?)\b"
)

_LITERAL = re.compile(r"(``.*?``|`[^`]*`)")


def section_label(number: str) -> str:
    """Target of a section number: ``"8.2"`` -> ``"theory-8-2"``, ``"8.2b"`` -> ``"theory-8-2b"``."""
    return "theory-" + number.replace(".", "-")


def _ref(text: str, label: str) -> str:
    return f":ref:`{text} <{label}>`"


#: A section sign right after a paper's arXiv number cites that paper, not THEORY.
_PAPER = re.compile(r"(arXiv\s*)?\d{4}\.\d{4,5}(v\d+)?,?\s*$")


def _is_paper_section(m: re.Match) -> bool:
    return bool(m.group("sec")) and bool(_PAPER.search(m.string[max(0, m.start() - 30):m.start()]))


def label(m: re.Match) -> list[str]:
    """The theory.md targets one citation token refers to (empty for "THEORY" alone)."""
    if _is_paper_section(m):
        return []
    if m.group("theory"):
        if m.group("bare"):
            return [section_label(m.group("bare"))]
        return ["theory-eq-" + m.group("eqn").replace(".", "-")] if m.group("eq") else []
    if m.group("sec"):
        out = [section_label(m.group("sec"))]
        return out + ([section_label(m.group("sec2"))] if m.group("sec2") else [])
    if m.group("tv"):
        return [f"theory-tv{m.group('tvn')}"]
    return ["theory-" + m.group("appl").lower() + (f"-{m.group('appn')}" if m.group("appn") else "")]


def citations(text: str) -> list[str]:
    """Every theory.md target cited in ``text`` (a docstring or a whole source file)."""
    return [lab for m in TOKEN.finditer(text) for lab in label(m)]


def _replace(m: re.Match) -> str:
    if _is_paper_section(m):
        return m.group(0)
    if m.group("theory"):
        out = ":doc:`THEORY </theory>`"
        if m.group("eq"):
            eqn = m.group("eqn")
            out += " " + _ref(f"({eqn})", "theory-eq-" + eqn.replace(".", "-"))
        elif m.group("bare"):
            out += " " + _ref(m.group("bare"), section_label(m.group("bare")))
        return out
    if m.group("sec"):
        out = _ref("§" + m.group("sec"), section_label(m.group("sec")))
        if m.group("sec2"):
            out += m.group("dash") + _ref(m.group("sec2"), section_label(m.group("sec2")))
        return out
    if m.group("tv"):
        return _ref(m.group("tv"), f"theory-tv{m.group('tvn')}")
    label = "theory-" + m.group("appl").lower() + (f"-{m.group('appn')}" if m.group("appn") else "")
    return _ref(m.group("app"), label)


def link_line(line: str) -> str:
    """Rewrite the citations of one reST line, leaving inline literals and roles untouched."""
    parts = _LITERAL.split(line)
    for i in range(0, len(parts), 2):
        parts[i] = TOKEN.sub(_replace, parts[i])
    return "".join(parts)


_UNDERLINE = re.compile(r"^\s*([=\-~^\"'`#*+<>])\1+\s*$")


def link_lines(lines: list[str]) -> list[str]:
    """Rewrite a docstring (list of reST lines); literal blocks and directive bodies are skipped."""
    out: list[str] = []
    skip_indent = None  # indentation of the line that opened a literal block / directive
    for k, line in enumerate(lines):
        indent = len(line) - len(line.lstrip())
        if skip_indent is not None:
            if not line.strip() or indent > skip_indent:
                out.append(line)
                continue
            skip_indent = None
        stripped = line.strip()
        if stripped.endswith("::") or stripped.startswith(".. "):
            skip_indent = indent
            # the text before a trailing "::" is ordinary text; directives are left alone
            out.append(line if stripped.startswith(".. ") else link_line(line))
            continue
        new = link_line(line)
        if new != line and k + 1 < len(lines) and _UNDERLINE.match(lines[k + 1]):
            new = line  # a section title: keep its length matched to the underline
        out.append(new)
    return out


def _process(app, what, name, obj, options, lines):
    lines[:] = link_lines(list(lines))


def setup(app):
    # after numpydoc (priority 500) has turned the numpydoc sections into reST
    app.connect("autodoc-process-docstring", _process, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
