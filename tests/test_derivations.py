"""Run every script in derivations/ and require a clean exit.

Each script re-derives a closed form of ufm.symbolic from its defining problem
(THEORY §1.2, §1.3, §2.2, §4, §5.3, §6.3-6.5, §7.4, §8.2b) and ends in assertions, so a wrong
expression in ufm.symbolic makes its script exit non-zero.
"""

import contextlib
import io
import runpy
import sys
from pathlib import Path

import pytest

DERIVATIONS = Path(__file__).resolve().parents[1] / "derivations"
SCRIPTS = sorted(DERIVATIONS.glob("*.py"))
EXPECTED = {
    "ce_balanced.py",
    "layer_peeled.py",
    "mse_balanced.py",
    "nuclear_identity.py",
    "logistic_mode.py",
    "symmetric_flows.py",
    "mode_dynamics.py",
    "feature_penalty.py",
}


def test_expected_derivations_present():
    found = {p.name for p in SCRIPTS}
    missing = EXPECTED - found
    assert not missing, f"derivation scripts missing from {DERIVATIONS}: {sorted(missing)}"


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_derivation_script_passes(script, monkeypatch):
    """Run the script in this process (as ``python script.py`` would, without a new interpreter)."""
    monkeypatch.chdir(DERIVATIONS.parent)
    monkeypatch.setattr(sys, "argv", [str(script)])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_path(str(script), run_name="__main__")
        except SystemExit as err:
            assert err.code in (None, 0), f"{script.name} exited {err.code}\n{out.getvalue()[-3000:]}"
    assert "OK:" in out.getvalue(), f"{script.name} printed no 'OK:' line\n{out.getvalue()[-3000:]}"
