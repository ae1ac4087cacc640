"""Seeds and cache keys: functions of a run's parameters, never of the order, the backend or the other runs."""

from __future__ import annotations

import hashlib

import numpy as np

from .. import __version__
from .._util import canonical, canonical_json

__all__ = ["RECORD_FORMAT", "call_id", "point_seed", "run_key"]


def point_seed(seed: int, params: dict, index: int, scope: str = "point") -> int:
    """The integer seed of run ``index`` at the grid point ``params``.

    ``SeedSequence(seed, spawn_key=(w_0, w_1, w_2, w_3, index))`` where the ``w``
    are the first 16 bytes of the SHA-256 of the point's parameters (canonical
    JSON, sorted keys); its first 64-bit word, halved to fit a signed 64-bit
    integer. With ``scope="sweep"`` the parameters are left out (spawn key
    ``(index,)``, i.e. child ``index`` of ``SeedSequence(seed)``): every point
    then shares the seeds of index ``i`` (common random numbers).
    """
    if scope == "point":
        digest = hashlib.sha256(canonical_json(dict(params), "grid").encode()).digest()[:16]
        key = tuple(int(w) for w in np.frombuffer(digest, dtype="<u4")) + (int(index),)
    elif scope == "sweep":
        key = (int(index),)
    else:
        raise ValueError(f"seed_scope must be 'point' or 'sweep', got {scope!r}.")
    state = np.random.SeedSequence(seed, spawn_key=key).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))


#: version of the summaries a run stores (2: statuses by Status name, a Solution's geometry under "regime";
#: 3: the objective value under "objective", not "loss"), part of the cache key so that a cache written with
#: another layout is recomputed, not mixed in
RECORD_FORMAT = 3


def run_key(call: str, params: dict, seed: int, index: int) -> str:
    """Cache key of one run: SHA-256 over the call (task, problem, fixed arguments, keep: :func:`call_id`), the
    point's parameters, the seed and its index, the ``ufm`` version and :data:`RECORD_FORMAT`."""
    payload = canonical_json({"call": call, "params": canonical(dict(params), "grid"), "seed": seed,
                              "seed_index": index, "ufm": __version__, "records": RECORD_FORMAT})
    return hashlib.sha256(payload.encode()).hexdigest()[:40]


def call_id(task_name: str, problem, fixed: dict, keep: tuple, seed_arg) -> str:
    """What every run of one sweep shares, as canonical JSON (part of each :func:`run_key`)."""
    return canonical_json({"task": task_name, "problem": canonical(problem, "problem"),
                           "fixed": canonical(fixed, "fixed"), "keep": list(keep), "seed_arg": seed_arg})
