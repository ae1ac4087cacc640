"""The content hash of a result is taken when first read, and is the hash a saved file is checked against.

A result's ``meta["content_hash"]`` is SHA-256 over its arrays and the rest of its content. It
is computed when something first reads it, not when the result is made (the records of a
simulation can be hundreds of megabytes). These tests pin down that the lazy value is the
file's own hash, that every way of reading ``meta`` sees it, that ``meta`` is read-only, and
that a pending hash does not keep a result alive.
"""

from __future__ import annotations

import copy
import gc
import json
import pickle
import weakref

import numpy as np
import pytest

import ufm
from ufm import results
from ufm.results import _file_hash

PROBLEM = dict(K=4, n=2, d=6, loss="ce", lam_W=1e-3, lam_H=1e-3)


def _trajectory(steps=30):
    return ufm.simulate(ufm.UFMProblem(**PROBLEM), steps=steps, lr=0.1, seed=3,
                        record=("objective", "gram_means", "gram_W"), progress=False)


def _hash_of_saved_file(result, tmp_path) -> str:
    """What ``load`` checks a file against: the hash of the saved arrays and header."""
    path = result.save(tmp_path / "r.npz")
    with np.load(path, allow_pickle=False) as data:
        header = json.loads(str(data["__header__"]))
        return _file_hash(header, data)


@pytest.fixture
def hash_calls(monkeypatch):
    """Counts the arrays fed to SHA-256."""
    calls = []
    feed = results._hash_array

    def counting(h, arr):
        calls.append(np.shape(arr))
        feed(h, arr)
    monkeypatch.setattr(results, "_hash_array", counting)
    return calls


def test_making_a_result_hashes_nothing_and_reading_the_hash_hashes_each_array_once(hash_calls):
    tr = _trajectory()
    assert hash_calls == []
    first = tr.meta["content_hash"]
    n = len(hash_calls)
    assert n >= 3                                   # steps, times and the records at least
    assert tr.meta["content_hash"] == first and len(hash_calls) == n      # computed once


def test_the_lazy_hash_is_the_hash_of_the_saved_file(tmp_path):
    tr = _trajectory()
    assert tr.meta["content_hash"] == _hash_of_saved_file(tr, tmp_path)
    back = results.load(tmp_path / "r.npz")
    assert back.meta["content_hash"] == tr.meta["content_hash"]


def test_loading_a_file_hashes_each_array_once(tmp_path, hash_calls):
    tr = _trajectory()
    tr.save(tmp_path / "r.npz")
    saved = len(hash_calls)
    back = results.load(tmp_path / "r.npz")
    assert len(hash_calls) - saved == saved             # checked against the stored hash: one pass
    assert back.meta["content_hash"] == tr.meta["content_hash"]


def test_replace_does_not_hash_the_result_it_copies(hash_calls):
    tr = _trajectory()
    copy_ = tr.replace(status=tr.status)
    assert hash_calls == []
    assert copy_.meta["content_hash"] == tr.meta["content_hash"]


def test_two_equal_runs_have_equal_hashes_and_a_different_run_does_not():
    assert _trajectory().meta["content_hash"] == _trajectory().meta["content_hash"]
    assert _trajectory(steps=31).meta["content_hash"] != _trajectory().meta["content_hash"]


READS = {
    "[key]": lambda m: m["content_hash"],
    "get": lambda m: m.get("content_hash"),
    "in, then [key]": lambda m: ("content_hash" in m) and m["content_hash"],
    "dict(meta)": lambda m: dict(m)["content_hash"],
    "{**meta}": lambda m: {**m}["content_hash"],
    "f(**meta)": lambda m: (lambda **kw: kw)(**m)["content_hash"],
    "meta | {}": lambda m: (m | {})["content_hash"],
    "copy()": lambda m: m.copy()["content_hash"],
    "items()": lambda m: dict(m.items())["content_hash"],
    "keys() and values()": lambda m: dict(zip(m.keys(), m.values()))["content_hash"],
    "iteration": lambda m: [k for k in m if k == "content_hash"] and m["content_hash"],
    "json.dumps": lambda m: json.loads(json.dumps(m))["content_hash"],
    "json.dumps(indent)": lambda m: json.loads(json.dumps(m, indent=1))["content_hash"],
    "pickle": lambda m: pickle.loads(pickle.dumps(m))["content_hash"],
    "deepcopy": lambda m: copy.deepcopy(m)["content_hash"],
    "repr": lambda m: eval(repr(m))["content_hash"],          # noqa: S307 - the repr of a dict of literals
}


@pytest.mark.parametrize("how", list(READS))
def test_every_way_of_reading_meta_sees_the_hash(how, tmp_path):
    tr = _trajectory()
    seen = READS[how](tr.meta)
    assert isinstance(seen, str) and len(seen) == 64
    assert seen == _hash_of_saved_file(tr, tmp_path)


def test_meta_counts_and_compares_with_the_pending_hash():
    a, b = _trajectory(), _trajectory()
    assert len(a.meta) == len(dict(a.meta))
    assert a.meta == b.meta and not (a.meta != b.meta)
    assert a.meta == dict(b.meta)
    assert a.meta != _trajectory(steps=31).meta


CHANGES = {
    "[key] =": lambda m: m.__setitem__("note", 1),
    "[hash] =": lambda m: m.__setitem__("content_hash", "0" * 64),
    "del": lambda m: m.__delitem__("problem"),
    "update": lambda m: m.update(note=1),
    "|=": lambda m: m.__ior__({"note": 1}),
    "pop": lambda m: m.pop("problem"),
    "popitem": lambda m: m.popitem(),
    "setdefault": lambda m: m.setdefault("note", 1),
    "clear": lambda m: m.clear(),
}


@pytest.mark.parametrize("how", list(CHANGES))
def test_meta_is_read_only_and_says_how_to_make_a_changed_copy(how):
    tr = _trajectory()
    before = dict(tr.meta)
    with pytest.raises(TypeError, match=r"replace\(meta="):
        CHANGES[how](tr.meta)
    assert dict(tr.meta) == before


NESTED = {
    "dict item": lambda m: m["problem"].__setitem__("K", 5),
    "dict update": lambda m: m["problem"].update(K=5),
    "list append": lambda m: m["record"].append("gram_H"),
    "list item": lambda m: m["record"].__setitem__(0, "x"),
}


@pytest.mark.parametrize("how", list(NESTED))
def test_the_dicts_and_lists_inside_meta_are_read_only_too(how):
    tr = _trajectory()
    before = json.dumps(tr.meta, sort_keys=True)
    with pytest.raises(TypeError, match="frozen"):
        NESTED[how](tr.meta)
    assert json.dumps(tr.meta, sort_keys=True) == before


def test_a_changed_copy_has_its_own_hash_and_loads(tmp_path):
    tr = _trajectory()
    noted = tr.replace(meta={**tr.meta, "note": "seen in the lab book"})
    assert noted.meta["note"] == "seen in the lab book"
    assert noted.meta["content_hash"] != tr.meta["content_hash"]
    assert noted.meta["content_hash"] == _hash_of_saved_file(noted, tmp_path)
    assert results.load(tmp_path / "r.npz").meta["note"] == "seen in the lab book"


def test_a_pickled_result_keeps_a_read_only_meta_with_the_hash():
    tr = _trajectory()
    back = pickle.loads(pickle.dumps(tr))
    assert back.meta["content_hash"] == tr.meta["content_hash"]
    with pytest.raises(TypeError):
        back.meta["note"] = 1


def test_a_pending_hash_does_not_keep_the_result_alive():
    """The pending hash holds the arrays, not the result: without the cycle collector, dropping
    the last reference frees the result (and its records) at once."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        tr = _trajectory()
        gone = weakref.ref(tr)
        del tr
        assert gone() is None
    finally:
        if was_enabled:
            gc.enable()


def _square(a, seed):
    return {"a2": a * a, "v": np.full(3, float(a + seed))}


def test_a_sweep_result_is_hashed_when_read_too(tmp_path):
    res = ufm.sweep(_square, {"a": [1, 2, 3]}, seeds=2, backend="sequential", progress=False)
    assert "content_hash" in res.meta
    assert res.meta["content_hash"] == _hash_of_saved_file(res, tmp_path)
    assert results.load(tmp_path / "r.npz").meta["content_hash"] == res.meta["content_hash"]
