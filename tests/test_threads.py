"""ufm._threads: thread counts that respect the environment, the CPUs, the cgroup quota and worker pools."""

import os

import numba
import pytest

from ufm import _threads


@pytest.fixture
def clean(monkeypatch):
    """No thread variables, not a pytest-xdist worker, two usable CPUs, no quota, numba at 2 threads."""
    for var in _threads.THREAD_VARS + ("PYTEST_XDIST_WORKER",):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(_threads, "usable_cpus", lambda: 2)
    monkeypatch.setattr(_threads, "pool_worker", lambda: None)
    monkeypatch.setattr(numba, "get_num_threads", lambda: 2)
    return monkeypatch


def test_all_cores_when_nothing_says_otherwise(clean):
    assert _threads.seed_threads() == 2


@pytest.mark.parametrize("var", _threads.THREAD_VARS)
def test_an_explicit_thread_variable_is_respected(clean, var):
    clean.setenv(var, "1")
    assert _threads.seed_threads() == 1
    clean.setenv(var, "8")                       # never more than numba's threads or the usable CPUs
    assert _threads.seed_threads() == 2


def test_numba_variable_wins_over_omp(clean):
    clean.setenv("OMP_NUM_THREADS", "1")
    clean.setenv("NUMBA_NUM_THREADS", "2")
    assert _threads.seed_threads() == 2


def test_inside_a_worker_pool_one_thread_unless_the_worker_says(clean):
    clean.setattr(_threads, "pool_worker", lambda: "process pool")
    assert _threads.seed_threads() == 1
    clean.setenv("OMP_NUM_THREADS", "2")         # e.g. joblib's inner_max_num_threads
    assert _threads.seed_threads() == 2


def test_pool_detection(monkeypatch):
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    assert _threads.pool_worker() == "pytest-xdist"
    monkeypatch.delenv("PYTEST_XDIST_WORKER")
    assert _threads.pool_worker() is None        # this test process is nobody's worker


def test_affinity_and_quota_cap_the_usable_cpus(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(_threads, "cgroup_cpu_limit", lambda: None)
    assert _threads.usable_cpus() == 4
    monkeypatch.setattr(_threads, "cgroup_cpu_limit", lambda: 1.5)
    assert _threads.usable_cpus() == 2           # a quota of 1.5 cores: 2 threads, rounded up
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})
    assert _threads.usable_cpus() == 1


def test_cgroup_files_are_read(tmp_path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("150000 100000\n")
    assert _threads.cgroup_cpu_limit(str(v2)) == 1.5
    (v2 / "cpu.max").write_text("max 100000\n")
    _threads.cgroup_cpu_limit.cache_clear()
    assert _threads.cgroup_cpu_limit(str(v2)) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert _threads.cgroup_cpu_limit(str(v1)) == 0.5
    assert _threads.cgroup_cpu_limit(str(tmp_path / "missing")) is None
    _threads.cgroup_cpu_limit.cache_clear()


def test_kernels_use_the_chosen_count(clean):
    """The seed blocks follow seed_threads: one block under NUMBA_NUM_THREADS=1."""
    import numpy as np
    from ufm import _kernels as k

    seen = []

    def kernel(*args):
        seen.append(args[-4:-2])

    clean.setenv("NUMBA_NUM_THREADS", "1")
    k._in_blocks(kernel, 8)
    assert seen == [(0, 8)]
    seen.clear()
    clean.delenv("NUMBA_NUM_THREADS")
    k._in_blocks(kernel, 8)
    assert sorted(seen) == [(0, 4), (4, 8)]
    assert np.all(np.isfinite(k._in_blocks(lambda *a: a[-2].fill(0.0), 3)[0]))
