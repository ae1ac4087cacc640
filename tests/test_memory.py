"""ufm._memory: the guard reads what this process may still use (MemAvailable, cgroup v1/v2, ulimit -v).

Every limit is read from fixture files in ``tmp_path`` (``_memory.Sources``), so these tests
describe hosts and containers this machine is not.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import ufm
from ufm import _memory

GiB = 2**30
UNLIMITED_V1 = "9223372036854771712"


def _host(tmp_path, *, free=1 * GiB, avail=12 * GiB, cgroup="0::/\n", mounts=(), files=None, vmsize=0,
          rlimit=None):
    """Fixture files of a host: /proc/meminfo, /proc/self/cgroup, /proc/self/mountinfo, cgroup files."""
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "meminfo").write_text(f"MemTotal:       {16 * GiB // 1024} kB\nMemFree:        {free // 1024} kB\n"
                                  f"MemAvailable:   {avail // 1024} kB\nBuffers:          1024 kB\n")
    (proc / "cgroup").write_text(cgroup)
    lines = [f"{30 + i} 23 0:{40 + i} {root} {tmp_path / point} rw,relatime - {fs} {fs} {opts}"
             for i, (root, point, fs, opts) in enumerate(mounts)]
    (proc / "mountinfo").write_text("\n".join(["22 1 8:1 / / rw - ext4 /dev/sda1 rw"] + lines) + "\n")
    (proc / "status").write_text(f"Name:\tpython\nVmPeak:\t{2 * vmsize // 1024} kB\nVmSize:\t{vmsize // 1024} kB\n")
    for rel, text in (files or {}).items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    import resource

    return _memory.Sources(meminfo=str(proc / "meminfo"), cgroup=str(proc / "cgroup"),
                           mountinfo=str(proc / "mountinfo"), status=str(proc / "status"),
                           rlimit_as=resource.RLIM_INFINITY if rlimit is None else rlimit)


def test_the_guard_reads_available_memory_not_free_pages(tmp_path, monkeypatch):
    """A host whose memory is mostly page cache: 1 GiB free pages, 12 GiB available. A 3 GiB run fits (it used to be
    refused: the guard read free pages)."""
    src = _host(tmp_path, free=1 * GiB, avail=12 * GiB)
    lim = _memory.available(src)
    assert lim.nbytes == 12 * GiB and "MemAvailable" in lim.detail
    monkeypatch.setattr(_memory, "SOURCES", src)
    assert _memory.check({"records": 3 * GiB}, "ufm.simulate", "Lower n_records.") == 3 * GiB
    with pytest.raises(ValueError) as err:
        _memory.check({"records": 7 * GiB}, "ufm.simulate", "Lower n_records.")
    assert "budget of 6.00 GiB" in str(err.value) and "MemAvailable" in str(err.value)
    assert str(err.value).endswith("Lower n_records.")


def test_a_cgroup_v2_limit_refuses_what_the_container_would_kill(tmp_path, monkeypatch):
    """memory.max 2 GiB, 1.5 GiB in use of which 0.5 GiB is reclaimable file cache: 1 GiB left, budget 0.5 GiB, on a
    host with 12 GiB available."""
    files = {"cg2/jobs/run1/memory.max": f"{2 * GiB}\n", "cg2/jobs/run1/memory.current": f"{3 * GiB // 2}\n",
             "cg2/jobs/run1/memory.stat": f"anon {GiB}\nfile {GiB // 2}\ninactive_file {GiB // 2}\n",
             "cg2/jobs/memory.max": "max\n", "cg2/jobs/memory.current": f"{3 * GiB}\n"}
    src = _host(tmp_path, cgroup="0::/jobs/run1\n", mounts=[("/", "cg2", "cgroup2", "rw")], files=files)
    lim = _memory.available(src)
    assert lim.nbytes == GiB and lim.name == "the cgroup v2 limit memory.max"
    assert str(tmp_path / "cg2" / "jobs" / "run1") in lim.detail
    monkeypatch.setattr(_memory, "SOURCES", src)
    _memory.check({"state": GiB // 4}, "ufm.simulate", "Lower seeds.")
    with pytest.raises(ValueError, match=r"budget of 512\.0 MiB: half of the 1\.00 GiB that the cgroup v2 limit "
                                         r"memory\.max \(2\.00 GiB at .*run1, 1\.00 GiB in use\) leaves"):
        _memory.check({"state": 3 * GiB // 4}, "ufm.simulate", "Lower seeds.")


def test_a_cgroup_limit_set_on_a_parent_counts(tmp_path):
    """The process's own cgroup has no limit; the one above it has 4 GiB with 3.5 GiB in use."""
    files = {"cg2/a/b/memory.max": "max\n", "cg2/a/b/memory.current": f"{GiB}\n",
             "cg2/a/memory.max": f"{4 * GiB}\n", "cg2/a/memory.current": f"{7 * GiB // 2}\n"}
    src = _host(tmp_path, cgroup="0::/a/b\n", mounts=[("/", "cg2", "cgroup2", "rw,nsdelegate")], files=files)
    lim = _memory.available(src)
    assert lim.nbytes == GiB // 2 and lim.detail.startswith(f"4.00 GiB at {tmp_path / 'cg2' / 'a'},")


@pytest.mark.parametrize("path, mount_root, where", [
    ("/docker/abc", "/", "cg1/memory/docker/abc"),           # the host's view: the cgroup's own folder
    ("/docker/abc", "/docker/abc", "cg1/memory"),            # a container's view: its cgroup is the mount
    ("/kubepods/pod1/xyz", "/", "cg1/memory"),               # a path of another namespace: the mount
])
def test_a_cgroup_v1_limit_is_found_through_proc_self_cgroup(tmp_path, path, mount_root, where):
    files = {f"{where}/memory.limit_in_bytes": f"{4 * GiB}\n", f"{where}/memory.usage_in_bytes": f"{GiB}\n",
             f"{where}/memory.stat": f"cache 0\ninactive_file 0\ntotal_inactive_file {GiB // 4}\n"}
    if where != "cg1/memory":
        files["cg1/memory/memory.limit_in_bytes"] = UNLIMITED_V1 + "\n"       # the root: no limit
    src = _host(tmp_path, cgroup=f"12:pids:/\n4:memory:{path}\n0::/\n",
                mounts=[("/", "cg1/cpu", "cgroup", "rw,cpu"), (mount_root, "cg1/memory", "cgroup", "rw,memory")],
                files=files)
    lim = _memory.available(src)
    assert lim.name == "the cgroup v1 limit memory.limit_in_bytes"
    assert lim.nbytes == 4 * GiB - 3 * GiB // 4 and str(tmp_path / where) in lim.detail


def test_an_unlimited_cgroup_and_a_missing_one_leave_the_available_memory(tmp_path):
    files = {"cg1/memory/memory.limit_in_bytes": UNLIMITED_V1 + "\n", "cg1/memory/memory.usage_in_bytes": "5\n"}
    src = _host(tmp_path, avail=3 * GiB, cgroup="4:memory:/\n0::/\n",
                mounts=[("/", "cg1/memory", "cgroup", "rw,memory"), ("/", "cg2", "cgroup2", "rw")], files=files)
    assert [lim.name for lim in _memory.limits(src)] == ["the available memory"]
    assert _memory.available(src).nbytes == 3 * GiB


def test_an_address_space_limit_counts_what_is_mapped_already(tmp_path, monkeypatch):
    """ulimit -v 4 GiB with 1.5 GiB of address space mapped: 2.5 GiB left, on a host with 12 GiB available."""
    src = _host(tmp_path, rlimit=4 * GiB, vmsize=3 * GiB // 2)
    lim = _memory.available(src)
    assert lim.nbytes == 5 * GiB // 2 and "RLIMIT_AS" in lim.name and "ulimit -v" in lim.name
    monkeypatch.setattr(_memory, "SOURCES", src)
    with pytest.raises(ValueError, match=r"the address-space limit \(ulimit -v, RLIMIT_AS\) \(4\.00 GiB, 1\.50 GiB"):
        ufm.simulate(ufm.UFMProblem(K=10, n=10, d=50), steps=100, lr=0.1, seeds=2 * 10**5, progress=False)


def test_a_real_address_space_limit_is_read(tmp_path):
    """In a child process with ``ulimit -v`` set (RLIMIT_AS), the guard's tightest limit is that one."""
    code = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (2**30, resource.getrlimit("
            "resource.RLIMIT_AS)[1])); from ufm import _memory; lim = _memory.available(); "
            "print(lim.name, 0 < lim.nbytes < 2**30)")
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(ufm.__file__)))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip() == "the address-space limit (ulimit -v, RLIMIT_AS) True"


def test_the_tightest_limit_refuses_a_problem_and_a_simulation_by_name(tmp_path, monkeypatch):
    files = {"cg2/memory.max": f"{8 * 2**20}\n", "cg2/memory.current": "0\n"}
    monkeypatch.setattr(_memory, "SOURCES", _host(tmp_path, mounts=[("/", "cg2", "cgroup2", "rw")], files=files))
    with pytest.raises(ValueError) as err:
        ufm.UFMProblem(K=10**12, n=1, d=3)          # a bare MemoryError before: refused before the labels exist
    msg = str(err.value)
    assert msg.startswith("UFMProblem(K=1000000000000, N=1000000000000) needs about")
    assert "cgroup v2 limit memory.max" in msg and msg.endswith("Use fewer classes (K) or examples per class "
                                                                "(n, counts).")
    with pytest.raises(ValueError, match="cgroup v2 limit memory.max.*record Grams"):
        ufm.simulate(ufm.UFMProblem(K=10, n=10, d=50), steps=1000, lr=0.1, record=("H",), n_records=200,
                     progress=False)       # about 170 records of H (d x N): 6.8 MB, over the 4 MiB budget
    p = ufm.UFMProblem(K=10, n=10, d=50)             # small problems are built without reading the limits
    assert p.N == 100


def test_workers_share_the_budget_of_the_tightest_limit(tmp_path, monkeypatch):
    files = {"cg2/memory.max": f"{8 * GiB}\n", "cg2/memory.current": "0\n"}
    monkeypatch.setattr(_memory, "SOURCES", _host(tmp_path, mounts=[("/", "cg2", "cgroup2", "rw")], files=files))
    monkeypatch.setattr(_memory, "WORKERS", 4)
    assert _memory.budget() == GiB
    with pytest.raises(ValueError, match=r"memory\.max \(8\.00 GiB at .*\) leaves, shared by 4 sweep workers"):
        _memory.check({"records": 2 * GiB}, "ufm.simulate", "Lower n_records.")


def test_nothing_readable_assumes_16_gib(tmp_path, monkeypatch):
    def no_sysconf(name):
        raise ValueError(name)

    monkeypatch.setattr(os, "sysconf", no_sysconf)
    src = _memory.Sources(meminfo=str(tmp_path / "none"), cgroup=str(tmp_path / "none"),
                          mountinfo=str(tmp_path / "none"), status=str(tmp_path / "none"), rlimit_as=-1)
    assert _memory.limits(src) == []
    lim = _memory.available(src)
    assert lim.nbytes == 16 * GiB and lim.describe() == "the memory assumed (no limit can be read on this platform)"
