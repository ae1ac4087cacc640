"""Run every script in derivations/ and require a clean exit.

Each script re-derives a closed form of ufm.symbolic from its defining problem
(THEORY §1.2, §1.3, §2.2, §4, §5.3, §6.3-6.5, §7.4) and ends in assertions, so a wrong
expression in ufm.symbolic makes its script exit non-zero.
"""

import subprocess
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
}


def test_expected_derivations_present():
    found = {p.name for p in SCRIPTS}
    missing = EXPECTED - found
    assert not missing, f"derivation scripts missing from {DERIVATIONS}: {sorted(missing)}"


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_derivation_script_passes(script):
    proc = subprocess.run([sys.executable, str(script)], check=False, capture_output=True,
                          text=True, timeout=300, cwd=DERIVATIONS.parent)
    assert proc.returncode == 0, (
        f"{script.name} exited {proc.returncode}\n--- stdout ---\n{proc.stdout[-3000:]}"
        f"\n--- stderr ---\n{proc.stderr[-3000:]}")
    assert "OK:" in proc.stdout, f"{script.name} printed no 'OK:' line"
