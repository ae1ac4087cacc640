"""Saving never destroys a file, and loading never returns a damaged or edited one.

A save writes a temporary file beside the target and renames it over (``ufm._atomic``): a
save killed at any moment leaves the earlier file or the new one, complete. ``ufm.load``
refuses a file whose content hash is missing or wrong and gives one clean error for any
damaged file, whatever part of it a flipped byte hit.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ufm
from ufm.bridge.io import load_run, save_run
from ufm.results import Run

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
ENV = {**os.environ, "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
       "PYTHONPATH": str(ROOT)}
UNREADABLE = "is not a readable ufm result file"


def _trajectory(steps=200, n_records=30):
    p = ufm.UFMProblem(K=4, n=2, d=8, lam_W=1e-3, lam_H=1e-3)
    return ufm.simulate(p, steps=steps, lr=0.1, seeds=2, record=("objective", "W", "H"), n_records=n_records,
                        progress=False)


def _sweep():
    return ufm.sweep(ufm.simulate, {"steps": [10, 20], "init_scale": [0.1, 0.2]}, problem="ufm",
                     fixed=dict(K=3, n=1, d=4, lr=0.1, record=("objective", "W")), backend="sequential",
                     progress=False)


def _run():
    tr = ufm.simulate(ufm.InputCoupledUFM.from_setting(ufm.factorial((2, 2)), sigma=2.0, d=8, lam_W=1e-3,
                                                       lam_A=1e-3),
                      steps=200, lr=0.5, mode="flow", record=("gram_means",), n_records=12, progress=False)
    return Run(steps=tr.steps, grams=tr.records["gram_means"][0], labels=np.arange(4), counts=np.ones(4, int),
               attributes=ufm.factorial((2, 2)).attributes, name="old")


SOURCES = {"Trajectory": lambda: _trajectory(steps=50, n_records=8), "SweepResult": _sweep,
           "FitResult": lambda: ufm.load(DATA / "schema1" / "fit.npz"), "Run (.npz)": _run, "Run (.h5)": _run}


def _saved(tmp_path, kind):
    """A saved file of ``kind`` (what a user saves) and the function that loads it."""
    res = SOURCES[kind]()
    if kind.startswith("Run"):
        return save_run(res, tmp_path / ("run" + kind[5:-1])), load_run
    return res.save(tmp_path / f"{kind}.npz"), ufm.load


# -- a save stopped half-way -------------------------------------------------------------------
def test_a_save_stopped_by_ctrl_c_half_way_keeps_the_earlier_file(tmp_path, monkeypatch):
    tr = _trajectory()
    path = tr.save(tmp_path / "t.npz")
    before = open(path, "rb").read()
    newer = tr.replace(meta={**tr.meta, "note": "newer"})
    real = np.savez_compressed

    def stopped_half_way(fh, **arrays):
        real(fh, **dict(list(arrays.items())[:2]))       # part of the file is written, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez_compressed", stopped_half_way)
    with pytest.raises(KeyboardInterrupt):
        newer.save(path)
    monkeypatch.undo()
    assert open(path, "rb").read() == before
    assert ufm.load(path).meta["content_hash"] == tr.meta["content_hash"]
    assert sorted(os.listdir(tmp_path)) == ["t.npz"]            # the temporary file is gone


def test_a_save_replaces_a_symlink_and_leaves_the_file_it_pointed_to(tmp_path):
    tr = _trajectory()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = tr.save(elsewhere / "only_copy.npz")
    before = open(target, "rb").read()
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    newer = tr.replace(meta={**tr.meta, "note": "newer"})
    assert newer.save(link) == str(link)
    assert not link.is_symlink() and ufm.load(link).meta["note"] == "newer"
    assert open(target, "rb").read() == before                 # the file the link pointed to is unchanged


def test_a_save_where_no_file_can_be_made_names_the_path_and_keeps_nothing_half_written(tmp_path):
    tr = _trajectory(steps=20, n_records=3)
    with pytest.raises(ValueError, match=r"cannot write /proc/x\.npz: .*; a file already there is unchanged"):
        tr.save("/proc/x.npz")
    with pytest.raises(ValueError, match="cannot write /proc/x.npz"):
        save_run(_run(), "/proc/x.npz")


# -- kill -9 during a save ---------------------------------------------------------------------
# The child loads the source, changes it and saves it over the target. Every write to the temporary
# file, the fsync, the rename and the folder sync is a "moment"; at moment k the child stops itself
# (SIGSTOP) and the test kills it with SIGKILL, so each trial ends the save at a known place.
KILL_CHILD = textwrap.dedent(r"""
    import os, signal, sys
    import ufm
    from ufm.bridge.io import load_run, save_run

    kind, source, target, stop_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    moments = [0]

    def moment():
        moments[0] += 1
        if moments[0] == stop_at:
            os.kill(os.getpid(), signal.SIGSTOP)     # the parent kill -9s us here

    class Watched:                                    # the temporary file, each write a moment
        def __init__(self, fh):
            self._fh = fh
        def write(self, data):
            moment()
            return self._fh.write(data)
        def __getattr__(self, name):
            return getattr(self._fh, name)
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            return self._fh.__exit__(*exc)

    def watched(real):
        def call(*args, **kwargs):
            moment()
            return real(*args, **kwargs)
        return call

    fdopen = os.fdopen
    os.fdopen = lambda *a, **k: Watched(fdopen(*a, **k))
    os.fsync, os.replace = watched(os.fsync), watched(os.replace)
    if kind.startswith("Run"):
        run = load_run(source)
        save_run(run.replace(name="new"), target)
    else:
        res = ufm.load(source)
        res.replace(meta={**res.meta, "note": "new"}).save(target)
    print("moments", moments[0], flush=True)
""")


def _save_in_child(script, kind, source, target, stop_at):
    """Run the child; kill -9 it when it stops at moment ``stop_at``. Returns ``(killed, stdout)``."""
    proc = subprocess.Popen([sys.executable, str(script), kind, str(source), str(target), str(stop_at)],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status = os.waitpid(proc.pid, os.WUNTRACED)
    if os.WIFSTOPPED(status):
        os.kill(proc.pid, signal.SIGKILL)
        os.waitpid(proc.pid, 0)
        proc.returncode = -signal.SIGKILL
        proc.stdout.close()
        proc.stderr.close()
        return True, ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    out, err = proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    return False, out


@pytest.mark.slow
def test_kill_9_at_any_moment_of_a_save_leaves_the_old_or_the_new_file_complete(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(KILL_CHILD)
    outcome = {"old": 0, "new": 0}
    trials = 0
    for kind in SOURCES:                 # 5 kinds x 6 moments
        source, load = _saved(tmp_path, kind)
        old = load(source)
        target = tmp_path / ("target" + os.path.splitext(source)[1])
        killed, out = _save_in_child(script, kind, source, target, stop_at=0)      # no kill: count the moments
        assert not killed
        n = int(out.split()[-1])
        new_hash = load(target).meta["content_hash"]
        assert n >= 4 and new_hash != old.meta["content_hash"]
        # the first write, two in the middle, the file's fsync, just before the rename, just after it
        for stop_at in np.unique(np.r_[np.linspace(1, n - 2, 4).round(), n - 1, n]).astype(int):
            old.save(target) if not kind.startswith("Run") else save_run(old, target)   # the earlier, complete file
            killed, _ = _save_in_child(script, kind, source, target, stop_at)
            assert killed
            got = load(target).meta["content_hash"]                              # loads completely ...
            assert got in (old.meta["content_hash"], new_hash), (kind, stop_at)   # ... as the old or the new file
            outcome["old" if got == old.meta["content_hash"] else "new"] += 1
            trials += 1
            leftovers = [f for f in os.listdir(tmp_path) if f.startswith(".target")]
            assert all(f.endswith(".tmp") for f in leftovers)                  # only hidden temporary files
            for f in leftovers:
                os.unlink(tmp_path / f)
    assert trials == 30 and outcome["old"] > 0 and outcome["new"] > 0, outcome


# -- loading: a missing hash, a damaged file ----------------------------------------------------
def _edit(path, out, change):
    data = dict(np.load(path, allow_pickle=False))
    header = json.loads(str(data["__header__"]))
    change(header, data)
    data["__header__"] = np.array(json.dumps(header))
    np.savez_compressed(out, **data)
    return out


def test_a_file_whose_content_hash_was_deleted_is_refused(tmp_path):
    path = _trajectory().save(tmp_path / "t.npz")

    def forge(header, data):             # edit the data and drop the hash that would reveal it
        header["meta"]["lr"] = 999
        data["records/objective"] = np.zeros_like(data["records/objective"])
        del header["meta"]["content_hash"]

    forged = _edit(path, tmp_path / "forged.npz", forge)
    with pytest.raises(ValueError, match=r"forged.npz is not a readable ufm result file: its header has no "
                                         r"'content_hash'.*was edited"):
        ufm.load(forged)
    old = _edit(DATA / "schema1" / "traj.npz", tmp_path / "old.npz", lambda h, d: h["meta"].pop("content_hash"))
    with pytest.raises(ValueError, match="old.npz is not a readable ufm result file: its header has no"):
        ufm.load(old)                    # every ufm version wrote the hash: old schemas too
    run = save_run(_run(), tmp_path / "run.npz")
    unhashed = _edit(run, tmp_path / "unhashed.npz", lambda h, d: h["meta"].pop("content_hash"))
    with pytest.raises(ValueError, match=r"field 'content_hash' is missing from the header"):
        load_run(unhashed)
    with pytest.raises(ValueError, match="unhashed.npz is not a readable ufm result file: its header has no"):
        ufm.load(unhashed)


@pytest.mark.parametrize("kind", ["Trajectory", "SweepResult", "Run (.npz)"])
def test_a_byte_flipped_anywhere_gives_the_clean_error_or_the_unchanged_result(tmp_path, kind):
    path, _ = _saved(tmp_path, kind)
    original = ufm.load(path)
    raw = open(path, "rb").read()
    flipped = tmp_path / "flipped.npz"
    counts = {"refused": 0, "unchanged": 0}
    for pos in range(0, len(raw), 5):        # header, compressed entries, zip directory, end record
        damaged = bytearray(raw)
        damaged[pos] ^= 0xFF
        flipped.write_bytes(bytes(damaged))
        try:
            back = ufm.load(flipped)
        except ValueError as err:
            assert f"flipped.npz {UNREADABLE}" in str(err), (pos, str(err))
            counts["refused"] += 1
            continue
        # the flip hit a byte nothing reads (a zip timestamp, a copy of a field): the same content, never edited
        assert back.meta["content_hash"] == original.meta["content_hash"], pos
        counts["unchanged"] += 1
    assert counts["refused"] > 0.7 * sum(counts.values()), counts


def test_a_truncated_file_gives_the_clean_error_at_every_length(tmp_path):
    path = _trajectory(steps=50, n_records=5).save(tmp_path / "t.npz")
    raw = open(path, "rb").read()
    cut = tmp_path / "cut.npz"
    for n in range(0, len(raw), 97):
        cut.write_bytes(raw[:n])
        with pytest.raises(ValueError, match=f"cut.npz {UNREADABLE}"):
            ufm.load(cut)
