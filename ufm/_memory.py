"""One memory guard for every entry point: estimate the peak, refuse before allocating.

Each long computation (``ufm.simulate``, the settings' N x N tables, ``ufm.fit``, each
run of a sweep worker, a problem's labels) adds up what it will hold at its peak, in bytes,
by named part (state, records, workspace, transient copies) and calls :func:`check` before
allocating anything large. The budget is half the memory this process may still use,
divided by the number of workers that share it (:data:`WORKERS`, set by ``ufm.sweep`` in
its workers), so a sweep of ``n_jobs`` runs at once is refused as a whole, not one worker
at a time.

The memory this process may still use is the tightest of (:func:`limits`):

* ``MemAvailable`` of ``/proc/meminfo``: free pages plus the page cache and other memory
  the kernel can reclaim (free pages alone, ``MemFree``, refuse runs that fit on a host
  whose memory is mostly cache); ``sysconf`` free pages where there is no ``/proc``;
* the cgroup memory limit of this process (what a container is killed at): cgroup v2
  ``memory.max`` less ``memory.current``, cgroup v1 ``memory.limit_in_bytes`` less
  ``memory.usage_in_bytes`` (reclaimable ``inactive_file`` cache not counted as used), at
  this process's cgroup (read from ``/proc/self/cgroup``, its mount from
  ``/proc/self/mountinfo``) and every cgroup above it;
* the address-space limit (``ulimit -v``, ``RLIMIT_AS``) less this process's address space
  (``VmSize`` of ``/proc/self/status``).

The error of a refused run names the limit that refused it. The files are read through
:data:`SOURCES`, so tests point the guard at fixture files.

``benchmarks/bench_memory.py`` compares the estimates with the peak resident memory
measured in a fresh process per size.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass

__all__ = ["WORKERS", "SOURCES", "Limit", "Sources", "available", "budget", "check", "free_bytes", "gib", "limits"]

#: Processes or threads of one sweep sharing this machine's memory (set in sweep workers).
WORKERS = 1

#: Bytes assumed where no limit can be read (a platform without ``/proc`` or ``sysconf``).
ASSUMED = 1 << 34

#: cgroup v1 writes "no limit" as a huge number (``PAGE_COUNTER_MAX`` pages); anything above is no limit.
_V1_UNLIMITED = 1 << 60


@dataclass(frozen=True)
class Sources:
    """Where the guard reads the limits of this process (tests point these at fixture files).

    Parameters
    ----------
    meminfo : str
        The kernel's memory counters (``MemAvailable``).
    cgroup : str
        This process's cgroups, one ``id:controllers:path`` line per hierarchy.
    mountinfo : str
        The mounts, where the cgroup file systems are.
    status : str
        This process's status (``VmSize``, its address space).
    rlimit_as : int, optional
        The soft address-space limit in bytes (``resource.RLIM_INFINITY`` for none);
        ``None`` (default): ``resource.getrlimit(resource.RLIMIT_AS)``.
    """

    meminfo: str = "/proc/meminfo"
    cgroup: str = "/proc/self/cgroup"
    mountinfo: str = "/proc/self/mountinfo"
    status: str = "/proc/self/status"
    rlimit_as: int | None = None


#: The files the guard reads.
SOURCES = Sources()


@dataclass(frozen=True)
class Limit:
    """What one limit leaves this process.

    Attributes
    ----------
    nbytes : int
        Bytes still usable under this limit.
    name : str
        The limit, for messages (e.g. ``"the cgroup v2 limit memory.max"``).
    detail : str
        Its value and what is in use, for messages.
    """

    nbytes: int
    name: str
    detail: str = ""

    def describe(self) -> str:
        """``name (detail)``, for messages."""
        return f"{self.name} ({self.detail})" if self.detail else self.name


def _read(path: str) -> str | None:
    try:
        with open(path) as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError):
        return None


def _fields(text: str | None, key_suffix: str = "") -> dict:
    """``name value`` (or ``name: value kB``) lines as ``{name: int}``; unreadable lines are skipped."""
    out = {}
    for line in (text or "").splitlines():
        parts = line.replace(":", " ").split()
        if len(parts) >= 2:
            try:
                out[parts[0]] = int(parts[1]) * (1024 if parts[2:3] == ["kB"] else 1)
            except ValueError:
                pass
    return out


_MEMINFO = re.compile(r"^(MemAvailable|MemTotal):\s+(\d+) kB", re.M)


def _physical(src: Sources) -> Limit | None:
    text = _read(src.meminfo) or ""
    info = {m.group(1): int(m.group(2)) * 1024 for m in _MEMINFO.finditer(text)}
    if "MemAvailable" in info:
        total = f", of {gib(info['MemTotal'])} in all" if "MemTotal" in info else ""
        return Limit(info["MemAvailable"], "the available memory", f"MemAvailable of {src.meminfo}{total}")
    try:
        free = int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None
    return Limit(free, "the free memory", "free physical pages, sysconf") if free > 0 else None


@functools.lru_cache(maxsize=8)
def _cgroup_dirs(src: Sources) -> tuple:
    """``(version, directory)`` of this process's memory cgroup and of every cgroup above it, innermost first, with
    a limit file (read once per process and sources: a process does not change cgroups while it computes)."""
    mounts = []            # (version, mount root, mount point)
    for line in (_read(src.mountinfo) or "").splitlines():
        left, sep, right = line.partition(" - ")
        parts, tail = left.split(), right.split()
        if not sep or len(parts) < 5 or len(tail) < 3:
            continue
        if tail[0] == "cgroup2":
            mounts.append((2, parts[3], parts[4]))
        elif tail[0] == "cgroup" and "memory" in tail[2].split(","):
            mounts.append((1, parts[3], parts[4]))
    out = []
    for line in (_read(src.cgroup) or "").splitlines():
        hid, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        version = 2 if hid == "0" and controllers == "" else 1 if "memory" in controllers.split(",") else None
        for v, root, point in mounts:
            if v != version:
                continue
            point = os.path.normpath(point)
            inside = path == root or path.startswith(root.rstrip("/") + "/")
            rel = os.path.relpath(path, root) if inside else path.lstrip("/")
            here = os.path.normpath(os.path.join(point, rel))
            if ".." in rel.split(os.sep) or not os.path.isdir(here):
                here = point            # a path of another cgroup namespace: the mount is this cgroup
            limit_file = "memory.max" if v == 2 else "memory.limit_in_bytes"
            while True:
                if os.path.exists(os.path.join(here, limit_file)):
                    out.append((v, here))
                if here == point or os.path.dirname(here) == here:
                    break
                here = os.path.dirname(here)
            break
    return tuple(out)


def _cgroup(src: Sources) -> Limit | None:
    """The tightest cgroup memory limit over this process's cgroup and its ancestors (v2 and v1)."""
    best = None
    for version, where in _cgroup_dirs(src):
        names = ("memory.max", "memory.current", "inactive_file") if version == 2 else \
            ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
        text = _read(os.path.join(where, names[0]))
        if text is None or text.strip() == "max":
            continue
        try:
            limit = int(text.strip())
        except ValueError:
            continue
        if version == 1 and limit >= _V1_UNLIMITED:
            continue
        try:
            used = int((_read(os.path.join(where, names[1])) or "0").strip())
        except ValueError:
            used = 0
        used -= min(used, _fields(_read(os.path.join(where, "memory.stat"))).get(names[2], 0))
        left = max(limit - used, 0)
        if best is None or left < best.nbytes:
            best = Limit(left, f"the cgroup v{version} limit {names[0]}",
                         f"{gib(limit)} at {where}, {gib(used)} in use")
    return best


def _address_space(src: Sources) -> Limit | None:
    soft = src.rlimit_as
    try:
        import resource
    except ImportError:          # not a Unix
        return None
    if soft is None:
        try:
            soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        except (OSError, ValueError):
            return None
    if soft == resource.RLIM_INFINITY or soft < 0:
        return None
    used = _fields(_read(src.status)).get("VmSize", 0)
    return Limit(max(int(soft) - used, 0), "the address-space limit (ulimit -v, RLIMIT_AS)",
                 f"{gib(soft)}, {gib(used)} of address space in use")


def limits(sources: Sources | None = None) -> list:
    """Every limit on the memory this process may still use that can be read here.

    Parameters
    ----------
    sources : Sources, optional
        Where to read them (default: :data:`SOURCES`).

    Returns
    -------
    list of Limit
        The available physical memory, the cgroup limit and the address-space limit,
        those that apply.
    """
    src = SOURCES if sources is None else sources
    return [lim for lim in (_physical(src), _cgroup(src), _address_space(src)) if lim is not None]


def available(sources: Sources | None = None) -> Limit:
    """The tightest of :func:`limits` (16 GiB assumed when none can be read).

    Parameters
    ----------
    sources : Sources, optional
        Where to read the limits (default: :data:`SOURCES`).

    Returns
    -------
    Limit
        The limit that leaves this process the least memory.
    """
    found = limits(sources)
    if not found:
        return Limit(ASSUMED, "the memory assumed", "no limit can be read on this platform")
    return min(found, key=lambda lim: lim.nbytes)


def free_bytes() -> int:
    """Bytes this process may still use: :func:`available`'s.

    Returns
    -------
    int
        The bytes.
    """
    return available().nbytes


def _limit(free) -> Limit:
    if free is None:
        return available()
    if isinstance(free, Limit):
        return free
    return Limit(int(free), "the free memory given")


def budget(free: int | Limit | None = None) -> int:
    """Bytes one computation may use: half of what :func:`available` leaves (or of ``free``) over :data:`WORKERS`.

    Parameters
    ----------
    free : int or Limit, optional
        Free bytes to assume (default: :func:`available`).

    Returns
    -------
    int
        The budget in bytes.
    """
    return _limit(free).nbytes // 2 // max(int(WORKERS), 1)


def gib(nbytes: float) -> str:
    """``nbytes`` in GiB (or MiB below 1 GiB), for messages."""
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def check(parts: dict, what: str, fix: str, free: int | Limit | None = None) -> int:
    """Total of ``parts`` (name -> bytes); over budget, a ``ValueError`` naming the limit, the largest parts and ``fix``.

    Parameters
    ----------
    parts : dict of str -> int
        The estimated peak, split by what holds the memory.
    what : str
        The computation, for the message (e.g. ``"ufm.simulate"``).
    fix : str
        Which argument to reduce, and how.
    free : int or Limit, optional
        Free bytes to assume (default: :func:`available`, the tightest limit of this process).

    Returns
    -------
    int
        The total estimate in bytes.
    """
    total = int(sum(parts.values()))
    lim = _limit(free)
    cap = budget(lim)
    if total > cap:
        big = sorted(parts, key=parts.get, reverse=True)[:3]
        share = "" if WORKERS <= 1 else f", shared by {WORKERS} sweep workers"
        raise ValueError(f"{what} needs about {gib(total)} at its peak, more than its budget of {gib(cap)}: half "
                         f"of the {gib(lim.nbytes)} that {lim.describe()} leaves{share}; the largest parts: "
                         + ", ".join(f"{name} {gib(parts[name])}" for name in big) + f". {fix}")
    return total
