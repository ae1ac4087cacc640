"""Small helpers shared by several ufm modules (one place for each, no ufm imports).

* :func:`canonical`, :func:`canonical_json`: a stable, JSON-able form of a value
  (what sweep seeds, cache keys and grid axes are computed from);
* :func:`callable_name`: ``"module:qualname"`` of a function;
* :func:`check_output_folder`: an output folder that exists or can be created and written.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os

import numpy as np

__all__ = ["callable_name", "canonical", "canonical_json", "check_output_folder"]


def callable_name(fn) -> str:
    """``"module:qualname"`` of a function (of the function inside a ``functools.partial``)."""
    if isinstance(fn, functools.partial):
        return callable_name(fn.func)
    module = getattr(fn, "__module__", None) or type(fn).__module__
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}:{qualname}"


def canonical(x, where: str):
    """A JSON-able form of ``x`` that is equal for equal values and stable across processes.

    ``where`` names the argument ``x`` came from, for the ValueError raised when ``x``
    cannot be keyed (an object that is neither a number, string, array, importable
    function nor picklable).
    """
    if x is None or isinstance(x, (bool, str, int, float)):
        return x
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, (list, tuple)):
        return [canonical(v, where) for v in x]
    if isinstance(x, dict):
        return {str(k): canonical(v, where) for k, v in sorted(x.items(), key=lambda kv: str(kv[0]))}
    if isinstance(x, np.ndarray):
        arr = np.ascontiguousarray(x)
        return {"__ndarray__": hashlib.sha256(arr.tobytes()).hexdigest(), "dtype": arr.dtype.str,
                "shape": list(arr.shape)}
    if isinstance(x, np.dtype) or (isinstance(x, type) and issubclass(x, np.generic)):
        return {"__dtype__": np.dtype(x).str}
    if isinstance(x, functools.partial):
        return {"__partial__": canonical(x.func, where), "args": canonical(list(x.args), where),
                "keywords": canonical(dict(x.keywords), where)}
    if hasattr(x, "as_dict") and callable(x.as_dict):
        return {"__object__": type(x).__qualname__, "as_dict": canonical(x.as_dict(), where)}
    if callable(x):
        name = callable_name(x)
        code = getattr(x, "__code__", None)
        if "<" in name and code is not None:   # lambdas and local functions: the name alone is not unique
            name += "#" + hashlib.sha256(code.co_code + repr(code.co_consts).encode()).hexdigest()[:16]
        return {"__callable__": name}
    try:
        import pickle

        return {"__pickle__": hashlib.sha256(pickle.dumps(x, protocol=4)).hexdigest()}
    except Exception:
        raise ValueError(f"{where}: cannot key the cache on a {type(x).__name__}; pass numbers, strings, arrays "
                         "or importable functions.") from None


def canonical_json(x, where: str = "value") -> str:
    """:func:`canonical` of ``x`` as compact JSON with sorted keys (equal text for equal values)."""
    return json.dumps(canonical(x, where), sort_keys=True, separators=(",", ":"))


def check_output_folder(path, name: str) -> str:
    """``path`` as an output folder that exists or can be created and written; a ValueError naming ``name`` otherwise.

    Parameters
    ----------
    path : str or path-like
        The folder.
    name : str
        The argument or option that gave it, for the message (e.g. ``"--out"``).

    Returns
    -------
    str
        The path.
    """
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{name} {path} is a file, not a folder; pass a folder (it is created if missing).")
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(os.path.abspath(probe))
        if parent == os.path.abspath(probe):
            break
        probe = parent
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{name} {path}: {probe} is not a writable folder; choose another output folder.")
    return path


#: Singular values at most this fraction of the largest one count as zero (a matrix's numerical rank).
RANK_RTOL = 1e-12


def numerical_rank(s, rtol: float = RANK_RTOL, floor: float = 0.0) -> int:
    """How many of the singular values ``s`` (descending) exceed ``rtol * max(s[0], floor)``.

    ``floor`` keeps a tiny matrix from counting its rounding noise as rank (e.g. ``floor=1``
    for a matrix whose entries are of order one); an empty ``s`` has rank 0.
    """
    s = np.asarray(s, dtype=np.float64)
    top = max(float(s[0]) if s.size else 0.0, floor)
    return int(np.sum(s > rtol * top))
