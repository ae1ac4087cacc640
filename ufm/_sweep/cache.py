"""The cache of finished runs: one ``.npz`` per run, written atomically, keyed by :func:`~ufm._sweep.keys.run_key`."""

from __future__ import annotations

import json
import os

import numpy as np

from .. import __version__
from .._atomic import write_npz
from ..results import pack_records, unpack_records

__all__ = ["read_cached", "write_cached"]


def _cache_path(cache_dir, key: str) -> str:
    return os.path.join(os.fspath(cache_dir), f"{key}.npz")


def write_cached(cache_dir, key: str, record: dict) -> str:
    """Write one finished run to ``cache_dir/<key>.npz``, whole or not at all (:func:`ufm._atomic.write_npz`)."""
    os.makedirs(cache_dir, exist_ok=True)
    rows, arrays = pack_records([record], prefix="r")
    header = json.dumps({"key": key, "ufm": __version__, "record": rows[0]})
    return write_npz(_cache_path(cache_dir, key), {"__record__": np.array(header), **arrays}, compressed=False)


def read_cached(cache_dir, key: str):
    """The cached record of ``key``, or ``None`` when missing or unreadable."""
    path = _cache_path(cache_dir, key)
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(str(data["__record__"]))
            if header.get("key") != key:
                return None
            return unpack_records([header["record"]], data)[0]
    except Exception:   # missing, truncated (zipfile.BadZipFile) or foreign: compute the run again
        return None

