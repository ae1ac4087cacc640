"""ufm.sweep and ``ufm sweep CONFIG.toml``: what every run would refuse is one error up front.

A config names its task from the registry (an import path runs any function: ``os:system``
was run); a misspelled grid parameter is one error naming the accepted names; a Dask sweep
from a script without ``if __name__ == "__main__":`` says so instead of "Nanny failed to start".
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import ufm
from ufm import cli
from ufm._cli_sweep import run_config
from ufm._sweep import backends

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(ufm.__file__)))


# -- 5. configs name registered tasks --------------------------------------------------------------
@pytest.fixture
def own_task(tmp_path, monkeypatch):
    """A module of the user's, ``own_task:run``, that leaves a file behind when it is imported."""
    (tmp_path / "own_task.py").write_text(textwrap.dedent(f"""
        open({str(tmp_path / 'imported')!r}, "w").close()

        def run(a, seed):
            return {{"v": a}}
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "own_task", raising=False)
    return tmp_path


def _config(folder, task, allow_import=None):
    line = "" if allow_import is None else f"allow_import = {str(allow_import).lower()}\n"
    path = folder / "sweep.toml"
    path.write_text(f'task = "{task}"\nbackend = "sequential"\n{line}\n[grid]\na = [1, 2]\n')
    return path


@pytest.mark.parametrize("in_file, flag, missing", [
    (None, False, "missing: allow_import = true in the file and --allow-import on the command line"),
    (True, False, "missing: --allow-import on the command line (run_config(..., allow_import=True))."),
    (False, True, "missing: allow_import = true in the file."),
])
def test_an_import_path_in_a_config_needs_both_opt_ins(own_task, in_file, flag, missing):
    cfg = _config(own_task, "own_task:run", in_file)
    with pytest.raises(ValueError) as err:
        run_config(cfg, out=own_task / "out", figure=False, progress=False, echo=lambda *a: None,
                   allow_import=flag)
    msg = str(err.value)
    assert "task = 'own_task:run' is an import path, which would import and run any function named in the file; " \
           "a config names a registered task (['simulate', 'solve'])" in msg
    assert missing in msg and msg.endswith("Nothing was imported.")
    assert not (own_task / "imported").exists() and not (own_task / "out").exists()


def test_os_system_in_a_config_is_refused_by_the_command(tmp_path, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a) or 0)
    cfg = tmp_path / "evil.toml"
    cfg.write_text('task = "os:system"\nbackend = "sequential"\n\n[grid]\ncommand = ["echo pwned"]\n')
    assert cli.main(["sweep", str(cfg), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "task = 'os:system' is an import path" in capsys.readouterr().err and calls == []


def test_with_both_opt_ins_the_own_function_runs(own_task, capsys):
    cfg = _config(own_task, "own_task:run", True)
    code = cli.main(["sweep", str(cfg), "--out", str(own_task / "out"), "--quiet", "--no-figure",
                     "--allow-import"])
    assert code == 0 and "2 ok, 0 failed" in capsys.readouterr().out and (own_task / "imported").exists()
    assert ufm.load(own_task / "out" / "result.npz").column("v").tolist() == [1, 2]


@pytest.mark.parametrize("task, fragment", [
    ("simulat", "task = 'simulat' is not a registered task; name one of ['simulate', 'solve'] (did you mean "
                "'simulate'?)."),
    ("nothing_like_it", "task = 'nothing_like_it' is not a registered task; name one of ['simulate', 'solve']."),
])
def test_a_config_task_is_a_registered_name(tmp_path, task, fragment):
    with pytest.raises(ValueError) as err:
        run_config(_config(tmp_path, task), out=tmp_path / "o", figure=False, progress=False)
    assert fragment in str(err.value)


def test_allow_import_is_a_bool(tmp_path):
    cfg = _config(tmp_path, "own_task:run")
    cfg.write_text(cfg.read_text().replace('backend = "sequential"', 'backend = "sequential"\nallow_import = "yes"'))
    with pytest.raises(ValueError, match="allow_import must be true or false, got 'yes'"):
        run_config(cfg, out=tmp_path / "o", allow_import=True)
    with pytest.raises(TypeError, match="allow_import must be True or False, got 'yes'"):
        run_config(cfg, out=tmp_path / "o", allow_import="yes")


# -- 9. a misspelled grid parameter is one error --------------------------------------------------
SOLVE = dict(problem="ufm", backend="sequential", progress=False)


@pytest.mark.parametrize("grid, fixed, fragments", [
    ({"lam_WW": [1e-3, 1e-2]}, {"K": 3, "n": 2, "d": 4, "lam_W": 1e-2, "lam_H": 1e-2},
     ["grid parameter 'lam_WW' is not a keyword of the problem factory ('ufm') nor the task (ufm._solve:solve), so "
      "every run would fail; did you mean 'lam_W'?", "'lam_W'", "'tol'"]),
    ({"lam_W": [1e-3, 1e-2]}, {"K": 3, "n": 2, "d": 4, "lam_H": 1e-2, "tols": 1e-6},
     ["fixed['tols'] is not a keyword of the problem factory ('ufm') nor the task (ufm._solve:solve), so every run "
      "would fail; did you mean 'tol'? Accepted: the task takes ['check_every', 'max_iter', 'method',"]),
])
def test_a_misspelled_solve_option_is_one_error_before_any_run(grid, fixed, fragments):
    """ufm.solve passes **options to its methods; every run used to fail on the name, one at a time."""
    with pytest.raises(ValueError) as err:
        ufm.sweep(ufm.solve, grid, fixed=fixed, **SOLVE)
    for fragment in fragments:
        assert fragment in str(err.value), str(err.value)


def test_a_misspelled_simulate_parameter_names_what_the_task_and_problem_take():
    with pytest.raises(ValueError) as err:
        ufm.sweep(ufm.simulate, {"sigmaa": [1.0, 2.0]}, problem="factorial", backend="sequential", progress=False,
                  fixed=dict(levels=(2, 2), sigma=1.0, steps=10, lr=0.1))
    msg = str(err.value)
    assert msg.startswith("grid parameter 'sigmaa' is not a keyword of the problem factory ('factorial') nor the task "
                          "(ufm._simulate:simulate), so every run would fail; did you mean 'sigma'? Accepted: the "
                          "task takes ['A0', 'H0', 'W0',")
    assert "the problem ['d', 'factor_names', 'lam_A'," in msg and "'seed'" not in msg.split("the problem")[0]


def test_solve_options_of_any_method_are_accepted_in_a_grid():
    res = ufm.sweep(ufm.solve, {"tol": [1e-6, 1e-8]}, fixed={"K": 3, "counts": [1, 2, 3], "d": 4, "lam_W": 1e-2,
                                                            "lam_H": 1e-2, "method": "prox"}, **SOLVE)
    assert res.success and res.column("success").tolist() == [True, True]


# -- 9. a Dask sweep from an unguarded script ------------------------------------------------------
SCRIPT = '''
import ufm

def draw(a, seed):
    return {"v": a}

res = ufm.sweep(draw, {"a": [1, 2]}, backend="dask", n_jobs=1, progress=False)
print(res.message)
'''


def _run_script(path):
    env = {**os.environ, "PYTHONPATH": ROOT, "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True, env=env, cwd=path.parent)


def test_a_dask_sweep_from_an_unguarded_script_says_to_guard_it(tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text(SCRIPT)
    out = _run_script(script)
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("RuntimeError: Dask could not start its worker processes (RuntimeError: Nanny failed to "
                           "start.).")
    assert f"the script {script} runs ufm.sweep from its line 7, outside `if __name__ == \"__main__\":`" in last
    assert last.endswith("Put the script's work under `if __name__ == \"__main__\":` (see docs/guide/sweeps.md, "
                         "'A Dask cluster'), or pass client= a running cluster.")
    # the worker that imported the script stopped at the sweep with the same hint, not multiprocessing's error
    assert "this process is such a worker, and the script it imports calls ufm.sweep at its top level" in out.stderr


def test_the_same_script_guarded_runs(tmp_path):
    script = tmp_path / "guarded.py"
    body = SCRIPT.split("res = ")[1]
    script.write_text(SCRIPT.split("res = ")[0] + 'if __name__ == "__main__":\n    res = '
                      + body.replace("\nprint", "\n    print"))
    out = _run_script(script)
    assert out.returncode == 0, out.stderr
    assert "2 ok, 0 failed" in out.stdout


@pytest.mark.parametrize("source, line, guarded", [
    ('import ufm\nufm.sweep()\n', 2, False),
    ('if __name__ == "__main__":\n    main()\n', 2, True),
    ('if "__main__" == __name__:\n    x = 1\n    main()\n', 3, True),
    ('if __name__ != "__main__":\n    main()\n', 2, False),
    ('if __name__ == "__main__":\n    pass\nelse:\n    main()\n', 4, False),
    ('def main():\n    ufm.sweep()\n\nmain()\n', 4, False),
    ('def broken(:\n', 1, True),                          # unreadable: no claim is made
])
def test_the_guard_is_read_from_the_script(tmp_path, source, line, guarded):
    path = tmp_path / "script.py"
    path.write_text(source)
    assert backends._guarded(str(path), line) is guarded
