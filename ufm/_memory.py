"""One memory guard for every entry point: estimate the peak, refuse before allocating.

Each long computation (``ufm.simulate``, the settings' N x N tables, ``ufm.fit``, each
run of a sweep worker) adds up what it will hold at its peak, in bytes, by named part
(state, records, workspace, transient copies) and calls :func:`check` before allocating
anything large. The budget is half the free physical memory, divided by the number of
workers that share this machine (:data:`WORKERS`, set by ``ufm.sweep`` in its workers), so
a sweep of ``n_jobs`` runs at once is refused as a whole, not one worker at a time.

``benchmarks/bench_memory.py`` compares the estimates with the peak resident memory
measured in a fresh process per size.
"""

from __future__ import annotations

from ._checks import available_bytes

__all__ = ["WORKERS", "budget", "check", "free_bytes", "gib"]

#: Processes or threads of one sweep sharing this machine's memory (set in sweep workers).
WORKERS = 1


def free_bytes() -> int:
    """Free physical memory in bytes (16 GiB where the platform does not say)."""
    free = available_bytes()
    return 1 << 34 if free is None or free <= 0 else free


def budget(free: int | None = None) -> int:
    """Bytes one computation may use: half the free memory (or of ``free``) over :data:`WORKERS`.

    Parameters
    ----------
    free : int, optional
        Free bytes to assume (default: :func:`free_bytes`).

    Returns
    -------
    int
        The budget in bytes.
    """
    return (free_bytes() if free is None else int(free)) // 2 // max(int(WORKERS), 1)


def gib(nbytes: float) -> str:
    """``nbytes`` in GiB (or MiB below 1 GiB), for messages."""
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def check(parts: dict, what: str, fix: str, free: int | None = None) -> int:
    """Total of ``parts`` (name -> bytes); a ``ValueError`` naming the largest parts and ``fix`` when over budget.

    Parameters
    ----------
    parts : dict of str -> int
        The estimated peak, split by what holds the memory.
    what : str
        The computation, for the message (e.g. ``"ufm.simulate"``).
    fix : str
        Which argument to reduce, and how.
    free : int, optional
        Free bytes to assume (default: :func:`free_bytes`).

    Returns
    -------
    int
        The total estimate in bytes.
    """
    total = int(sum(parts.values()))
    limit = budget(free)
    if total > limit:
        big = sorted(parts, key=parts.get, reverse=True)[:3]
        share = "" if WORKERS <= 1 else f" shared by {WORKERS} sweep workers"
        raise ValueError(f"{what} needs about {gib(total)} at its peak, more than half the free memory"
                         f"{share} ({gib(limit)}); the largest parts: "
                         + ", ".join(f"{name} {gib(parts[name])}" for name in big) + f". {fix}")
    return total
