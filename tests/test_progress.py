"""One progress protocol: tqdm when installed, else plain lines on stderr; never anything on stdout.

``no_tqdm`` (conftest) makes ``import tqdm`` fail, as on a machine without it.
"""

import numpy as np
import pytest

import ufm
from ufm._progress import Progress


def test_without_tqdm_lines_go_to_stderr_every_tenth(no_tqdm, capsys):
    bar = Progress(True, 20, "job", unit="run")
    for done in range(1, 21):
        bar.update(done)
    bar.note("halfway there", force=True)
    bar.close()
    bar.update(20)                                    # closed: silent
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert lines[0] == "job: 2/20 runs (10%)" and "job: 20/20 runs (100%)" in lines
    assert len([ln for ln in lines if "runs (" in ln]) == 10
    assert lines[-1].startswith("job: halfway there (")


def test_disabled_progress_writes_nothing(no_tqdm, capsys):
    with Progress(False, 5, "job") as bar:
        bar.advance(5)
        bar.note("x", force=True)
    assert capsys.readouterr() == ("", "")


def test_notes_are_rate_limited_unless_forced(no_tqdm, capsys):
    bar = Progress(True, None, "fit", every=3600.0)
    bar.note("first")                 # the first note always shows
    bar.note("second")                # within the hour: dropped
    bar.note("third", force=True)
    err = capsys.readouterr().err
    assert "fit: first" in err and "second" not in err and "fit: third" in err


def test_entry_points_report_on_stderr_only(no_tqdm, capsys, tmp_path):
    prob = ufm.UFMProblem(K=3, n=1, d=3)
    ufm.simulate(prob, steps=50, lr=0.1, progress=True)
    ufm.solve(ufm.UFMProblem(K=3, n=2, d=4, lam_W=1e-2, lam_H=1e-2), method="prox", progress=True)
    ufm.sweep(lambda x, seed: float(x), {"x": [1.0, 2.0]}, backend="sequential", progress=True)
    G = np.eye(4) - 0.25
    ufm.fit(np.stack([G, 2 * G]), attributes=np.array([[0], [0], [1], [1]]), models=("static",), progress=True)
    out, err = capsys.readouterr()
    assert out == ""
    for prefix in ("ufm.simulate (gd): 50/50 steps", "ufm.solve (prox): iteration", "ufm.sweep: 2/2 runs",
                   "ufm.fit: "):
        assert prefix in err


def test_progress_auto_is_every_default_and_waits_before_showing(no_tqdm, capsys, monkeypatch):
    """One default everywhere ('auto'); it shows nothing for short work and lines once the work runs long."""
    import inspect

    from ufm import _progress
    from ufm.bridge import train_network

    for entry in (ufm.simulate, ufm.fit, ufm.sweep, ufm.convex.prox, train_network, ufm.phase_diagram):
        assert inspect.signature(entry).parameters["progress"].default == "auto", entry.__name__
    p = ufm.UFMProblem(K=3, n=2, d=4, loss="ce", lam_W=0.01, lam_H=0.01)
    ufm.simulate(p, steps=200, lr=0.1)
    assert capsys.readouterr().err == ""                       # quicker than the delay: silent
    monkeypatch.setattr(_progress, "AUTO_DELAY", 0.0)          # as if it had run long
    ufm.simulate(p, steps=200, lr=0.1)
    captured = capsys.readouterr()
    assert "ufm.simulate (gd): 200/200 steps (100%)" in captured.err and captured.out == ""
    for bad in ("yes", 2, None):
        with pytest.raises(ValueError, match="progress must be 'auto'"):
            ufm.simulate(p, steps=10, lr=0.1, progress=bad)
