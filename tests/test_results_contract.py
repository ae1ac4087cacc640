"""One result contract for every public entry point, successes and failures alike.

Each case calls one entry point and names the status it must end with. Every result has
``success`` (a bool field equal to ``status.success``), ``status`` (a :class:`Status`
member whose value is its message), ``message`` (starting with that message), lists its
fields in ``dir()``, and raises its failure on request (``raise_on_failure``, what
``throw=True`` does).
"""

from __future__ import annotations

import dataclasses
import inspect
import pathlib

import numpy as np
import pytest

import ufm
from ufm import closed_form, convex, dynamics
from ufm._integrate import integrate
from ufm.phase import phase_point, transient_models
from ufm.results import NoMethodApplies, NotConverged, Result, Status, UFMError

S = Status
BALANCED = dict(K=3, n=2, d=4, loss="ce", lam_W=1e-2, lam_H=1e-2)
IMBALANCED = dict(K=3, counts=[3, 1, 1], d=3, loss="ce", lam_W=1e-2, lam_H=1e-2)


def _problem(**kw):
    return ufm.UFMProblem(**kw)


def _coupled():
    return ufm.InputCoupledUFM.from_setting(ufm.factorial((2, 2)), sigma=2.0, d=8, lam_W=1e-3, lam_A=1e-3)


def _interrupted_simulation():
    calls = {"n": 0}

    def tripwire(problem, state):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return 0.0

    return ufm.simulate(_problem(**BALANCED), steps=1000, lr=0.1, record={"trip": tripwire}, n_records=30,
                        on_interrupt="return")


def _failed_kernel_flow():
    """The kernel flow with an ODE solver that gives up."""
    from unittest import mock

    class GaveUp:
        success, message = False, "Required step size is less than spacing between numbers."

    with mock.patch("scipy.integrate.solve_ivp", lambda *args, **kwargs: GaveUp()):
        return dynamics.kernel_flow(ufm.factorial((2, 2)), np.eye(4), np.linspace(0, 5, 6), loss="ce")


def _sweep_task(a, seed=0):
    if a == 2:
        raise ValueError("a = 2 is refused")
    return {"double": 2.0 * a}


def _interrupting_task(a, seed=0):
    """A run that reports Ctrl-C from the second point on, as an interrupted simulation does."""
    if a == 0:
        return {"a": a}
    return ufm.Trajectory(steps=[0], times=[0.0], records={"objective": [[1.0]]}, status="interrupted",
                          message="stopped at step 0;", mode="gd")


def _fit():
    st = ufm.factorial((2, 2))
    tr = ufm.simulate(ufm.InputCoupledUFM.from_setting(st, sigma=2.0, d=8), steps=2000, lr=0.05,
                      record=("gram_H",), n_records=12)
    return ufm.fit(tr.records["gram_H"][0], attributes=st.attributes, models=("static",))


def _decay_rhs():
    import numba

    @numba.njit
    def decay(y, data, out):
        out[:] = -data[0] * y

    return decay


def _blow_up_rhs():
    import numba

    @numba.njit
    def blow_up(y, data, out):
        out[:] = y * y

    return blow_up


#: id -> (entry point call, the status it must end with)
CASES = {
    # solvers -> Solution
    "solve closed form": (lambda: ufm.solve(_problem(**BALANCED)), S.exact),
    "closed_form.solve": (lambda: closed_form.solve(_problem(**BALANCED)), S.exact),
    "solve prox": (lambda: ufm.solve(_problem(**IMBALANCED), method="prox", tol=1e-8), S.optimal),
    "convex.prox": (lambda: convex.prox(_problem(**IMBALANCED), tol=1e-8), S.optimal),
    "solve convex": (lambda: ufm.solve(_problem(**IMBALANCED), method="convex"), S.optimal),
    "solve svm": (lambda: ufm.solve(_problem(K=3, counts=[2, 1, 1], d=3, loss="ce"), method="svm"), S.optimal),
    "solve prox not converged": (lambda: ufm.solve(_problem(**IMBALANCED), method="prox", max_iter=3, tol=1e-12),
                                 S.max_iter),
    "solve no closed form": (lambda: ufm.solve(_problem(**IMBALANCED), method="closed_form"), S.no_method),
    "closed_form.solve none applies": (lambda: closed_form.solve(_problem(**IMBALANCED)), S.no_method),
    "solve auto, d below the rank": (lambda: ufm.solve(_problem(K=4, n=3, d=2, lam_W=0.01, lam_H=0.01)),
                                     S.no_method),
    "convex.prox, d below the rank": (lambda: convex.prox(_problem(K=4, n=3, d=2, lam_W=0.01, lam_H=0.01)),
                                      S.no_method),
    "solve svm infeasible margins": (lambda: ufm.solve(ufm.InputCoupledUFM.from_setting(
        ufm.hierarchy(2, 2), sigma=0.0, d=4), method="svm"), S.solver_failed),
    # simulations -> Trajectory
    "simulate gd": (lambda: ufm.simulate(_problem(**BALANCED), steps=50, lr=0.1), S.completed),
    "simulate flow": (lambda: ufm.simulate(_coupled(), steps=100, lr=1.0, mode="flow", record=("objective", "gram_H")),
                      S.completed),
    "simulate diverged": (lambda: ufm.simulate(_problem(K=3, n=2, d=3, loss="mse"), steps=400, lr=50.0),
                          S.nonfinite),
    "simulate flow out of steps": (lambda: ufm.simulate(_coupled(), steps=100, lr=1e3, mode="flow", max_steps=3),
                                   S.max_steps),
    "simulate interrupted (return)": (_interrupted_simulation, S.interrupted),
    # theory -> TheoryCurve, PhasePoint, TransientModels
    "dynamics.mode_curves": (lambda: dynamics.mode_curves(_coupled(), np.linspace(0, 5, 6), z0=1e-3), S.completed),
    "dynamics.symmetric_flow": (lambda: dynamics.symmetric_flow(_problem(K=3, n=2, d=4, loss="mse"),
                                                                np.linspace(0, 5, 6), p0=1e-3), S.completed),
    "dynamics.kernel_flow": (lambda: dynamics.kernel_flow(ufm.factorial((2, 2)), np.eye(4), np.linspace(0, 5, 6),
                                                          loss="mse", Z0=np.zeros((4, 4))), S.completed),
    "dynamics.kernel_flow, ODE fails": (_failed_kernel_flow, S.solver_failed),
    "phase_point": (lambda: phase_point("factorial", sigma=3.0), S.completed),
    "transient_models": (lambda: transient_models("factorial", horizon=100.0, n_records=8), S.completed),
    # many runs -> SweepResult
    "sweep": (lambda: ufm.sweep(_sweep_task, {"a": [1, 3]}, backend="sequential", progress=False), S.completed),
    "sweep with a failed run": (lambda: ufm.sweep(_sweep_task, {"a": [1, 2, 3]}, backend="sequential",
                                                  progress=False), S.runs_failed),
    "sweep interrupted (return)": (lambda: ufm.sweep(_interrupting_task, {"a": [0, 1, 2]}, backend="sequential",
                                                     progress=False, on_interrupt="return"), S.interrupted),
    # the bridge -> FitResult
    "fit": (_fit, S.completed),
    # the ODE integrator -> IntegrateResult
    "integrate": (lambda: integrate(_decay_rhs(), [1.0], (2.0,), np.array([0.0, 1.0])), S.completed),
    "integrate blow-up": (lambda: integrate(_blow_up_rhs(), [1.0], (0.0,), np.array([0.0, 2.0])),
                          (S.nonfinite, S.step_underflow)),
    "integrate out of steps": (lambda: integrate(_decay_rhs(), [1.0], (2.0,), np.array([0.0, 1e6]), max_steps=3),
                               S.max_steps),
}


@pytest.fixture(scope="module", params=sorted(CASES), ids=sorted(CASES))
def case(request):
    call, expected = CASES[request.param]
    return call(), expected


def test_status_is_an_enumeration_whose_value_is_its_message():
    assert len({s.value for s in Status}) == len(Status)        # distinct messages, no aliases
    for s in Status:
        assert isinstance(s.message, str) and s.message and s.message == s.value
        assert isinstance(s.success, bool) and Status[s.name] is s and Status(s.message) is s
    assert {s for s in Status if s.success} == {S.exact, S.optimal, S.completed}
    assert issubclass(NoMethodApplies, UFMError) and issubclass(NotConverged, UFMError)


def test_core_fields(case):
    res, expected = case
    expected = expected if isinstance(expected, tuple) else (expected,)
    assert res.status in expected, (res.status, res.message)
    assert isinstance(res.status, Status)
    assert isinstance(res.success, bool) and res.success is res.status.success
    assert isinstance(res.message, str) and res.message.startswith(res.status.message)
    assert len(res.message) >= len(res.status.message)
    for name in ("success", "status", "message"):
        assert name in dir(res)


def test_iteration_counts_where_they_exist(case):
    res, _ = case
    if isinstance(res, ufm.Solution):
        assert isinstance(res.nit, int) and isinstance(res.nfev, int) and res.nit >= 0
        assert isinstance(res.regime, str) and (res.regime or not res.success or res.method != "closed_form")
        if res.method == "prox" and res.success:
            assert res.nit > 0
    elif isinstance(res, ufm.Trajectory):
        assert res.nit == int(res.steps[-1]) and "nit" in dir(res) and "nfev" in dir(res)
        assert res.nfev == (max(res.meta["nfev"]) if res.mode == "flow" else res.nit)
    elif type(res).__name__ == "IntegrateResult":
        assert isinstance(res.nfev, int) and res.nfev > 0


def test_dir_lists_fields_and_recorded_names(case):
    res, _ = case
    names = dir(res)
    if isinstance(res, Result):
        for f in dataclasses.fields(res):
            assert f.name in names
        for group, _ in type(res)._LOOKUP:
            for key in getattr(res, group):
                assert key in names and getattr(res, key) is getattr(res, group)[key]
    else:
        assert set(res._fields) <= set(names)


def test_failures_raise_on_request_and_successes_return_themselves(case):
    res, _ = case
    if res.success:
        assert res.raise_on_failure() is res if isinstance(res, Result) else True
        return
    if not isinstance(res, Result):
        return
    error = NoMethodApplies if res.status is S.no_method else NotConverged
    with pytest.raises(error) as err:
        res.raise_on_failure()
    assert err.value.result is res and str(err.value) == res.message
    if isinstance(res, ufm.Solution):
        if res.status in (S.no_method, S.solver_failed):
            assert np.isnan(res.objective) and np.isnan(res.W).all() and np.isnan(res.Z).all()
        else:
            assert np.isfinite(res.objective)


def test_results_are_frozen_and_round_trip_with_their_status(case, tmp_path):
    res, _ = case
    if not isinstance(res, Result):
        return
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.status = S.completed
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.success = not res.success
    back = ufm.load(res.save(tmp_path / "res"))
    assert type(back) is type(res)
    assert (back.status, back.success, back.message) == (res.status, res.success, res.message)
    assert back.meta["content_hash"] == res.meta["content_hash"]


def test_throw_raises_the_documented_exception():
    with pytest.raises(NoMethodApplies, match="imbalanced") as err:
        ufm.solve(_problem(**IMBALANCED), method="closed_form", throw=True)
    assert err.value.result.status is S.no_method
    with pytest.raises(NotConverged, match="iteration limit") as err:
        ufm.solve(_problem(**IMBALANCED), method="prox", max_iter=3, tol=1e-12, throw=True)
    assert err.value.result.nit == 3
    with pytest.raises(NotConverged, match="Diverged") as err:
        ufm.simulate(_problem(K=3, n=2, d=3, loss="mse"), steps=400, lr=50.0, throw=True)
    assert err.value.result.status is S.nonfinite and len(err.value.result.steps) >= 1
    assert ufm.simulate(_problem(**BALANCED), steps=5, lr=0.1, throw=True).success
    assert ufm.solve(_problem(**BALANCED), throw=True).success
    with pytest.raises(ValueError, match="method must be"):             # bad input is still a ValueError
        ufm.solve(_problem(**BALANCED), method="newton", throw=True)


def test_throw_on_theory_curves_sweeps_and_fits():
    """throw=True turns a failed curve or sweep into NotConverged carrying the result; a success returns."""
    from unittest import mock

    class GaveUp:
        success, message = False, "Required step size is less than spacing between numbers."

    with mock.patch("scipy.integrate.solve_ivp", lambda *args, **kwargs: GaveUp()):
        with pytest.raises(NotConverged, match="step size") as err:
            dynamics.kernel_flow(ufm.factorial((2, 2)), np.eye(4), np.linspace(0, 5, 6), loss="ce", throw=True)
    assert err.value.result.status is S.solver_failed and err.value.result.records == {}
    ok = dynamics.kernel_flow(ufm.factorial((2, 2)), np.eye(4), np.linspace(0, 5, 6), loss="ce", throw=True)
    assert ok.success
    with pytest.raises(NotConverged) as err:
        ufm.sweep(_sweep_task, {"a": [1, 2, 3]}, backend="sequential", progress=False, throw=True)
    assert err.value.result.status is S.runs_failed and err.value.result.n_failed == 1
    assert ufm.sweep(_sweep_task, {"a": [1, 3]}, backend="sequential", progress=False, throw=True).success
    for entry in (ufm.fit, dynamics.mode_curves, dynamics.semantic_curve, dynamics.symmetric_flow):
        assert inspect.signature(entry).parameters["throw"].default is False, entry.__name__


def test_a_status_can_be_given_by_name_and_replace_keeps_the_details():
    tr = ufm.simulate(_problem(**BALANCED), steps=5, lr=0.1)
    gave_up = tr.replace(status="max_steps")
    assert gave_up.status is S.max_steps and not gave_up.success
    assert gave_up.message == f"{S.max_steps.message} ran 5 GD steps."
    with pytest.raises(ValueError, match="one of its names"):
        tr.replace(status="finished")


SCHEMA1 = pathlib.Path(__file__).parent / "data" / "schema1"


def test_files_of_the_first_format_load_upgraded():
    """Files written before Status and regime (schema 1) are checked against their hash and upgraded."""
    sol = ufm.load(SCHEMA1 / "sol.npz")
    assert (sol.status, sol.regime, sol.success) == (S.exact, "etf", True)
    assert sol.message.startswith(S.exact.message) and sol.objective == pytest.approx(0.148331747, abs=1e-8)
    stopped = ufm.load(SCHEMA1 / "sol_maxiter.npz")
    assert (stopped.status, stopped.regime, stopped.success, stopped.nit) == (S.max_iter, "", False, 3)
    tr = ufm.load(SCHEMA1 / "traj.npz")
    assert tr.status is S.completed and tr.success and tr.objective.shape == (1, 21)
    sw = ufm.load(SCHEMA1 / "sweep.npz")
    assert sw.status is S.runs_failed and not sw.success and sw.n_failed == 1
    curve = ufm.load(SCHEMA1 / "curve.npz")
    assert curve.status is S.completed and curve.kind == "modes" and curve.z.shape[0] == 6 and "z" in dir(curve)
    fit = ufm.load(SCHEMA1 / "fit.npz")
    assert fit.status is S.completed and str(fit).startswith("fit of") and "static" in fit.gof


def test_a_changed_file_of_the_first_format_is_refused(tmp_path):
    import json

    data = dict(np.load(SCHEMA1 / "sol.npz", allow_pickle=False))
    header = json.loads(str(data["__header__"]))
    header["scalars"]["loss"] = 0.1
    data["__header__"] = np.array(json.dumps(header))
    np.savez(tmp_path / "bad.npz", **data)
    with pytest.raises(ValueError, match="content hash mismatch"):
        ufm.load(tmp_path / "bad.npz")
    header["schema"] = 9
    data["__header__"] = np.array(json.dumps(header))
    np.savez(tmp_path / "future.npz", **data)
    with pytest.raises(ValueError, match="schema 9 not supported"):
        ufm.load(tmp_path / "future.npz")


SCHEMA2 = pathlib.Path(__file__).parent / "data" / "schema2"


@pytest.mark.parametrize("folder", [SCHEMA1, SCHEMA2])
def test_files_that_called_the_objective_value_loss_load_it_as_objective(folder):
    """Schemas 1 and 2 stored the minimized value as ``Solution.loss`` and the full objective as the record
    ``"loss"``; they load with the new name, hash-checked, and the old name is not an attribute any more."""
    sol = ufm.load(folder / "sol.npz")
    assert sol.objective == pytest.approx(0.148331747, abs=1e-8) and str(sol.meta["problem"]["loss"]) == "ce"
    tr = ufm.load(folder / "traj.npz")
    assert "objective" in tr.records and "loss" not in tr.records
    assert np.all(np.isfinite(tr.objective)) and tr.objective[0, -1] < tr.objective[0, 0]
    for res in (sol, tr):
        with pytest.raises(AttributeError, match="objective"):
            res.loss


def test_a_theory_curve_of_schema_2_loads_its_objective_record():
    curve = ufm.load(SCHEMA2 / "curve.npz")
    assert curve.kind == "symmetric_flow" and sorted(curve.records) == ["a", "beta", "gram_W", "objective", "p"]
    p = ufm.UFMProblem(K=3, n=2, d=4, loss="ce", lam_W=0.01, lam_H=0.01)
    np.testing.assert_allclose(curve.objective, ufm.dynamics.symmetric_flow(p, curve.times, p0=0.1).objective,
                               rtol=1e-12)


def test_the_old_name_loss_for_the_objective_value_is_refused_with_the_new_one():
    p = ufm.UFMProblem(K=3, n=2, d=4, loss="ce", lam_W=0.01, lam_H=0.01)
    sol = ufm.solve(p)
    assert str(p.loss) == "ce" and sol.objective == pytest.approx(0.148331747, abs=1e-8)
    with pytest.raises(AttributeError, match="Solution has no attribute 'loss'.*'objective'"):
        sol.loss
    with pytest.raises(ValueError, match="cannot record 'loss'.*halved weight decays.*'objective'"):
        ufm.simulate(p, steps=5, lr=0.1, record=("loss", "gram_W"))
    tr = ufm.simulate(p, steps=5, lr=0.1, record=("objective",), progress=False)
    with pytest.raises(AttributeError, match="Trajectory has no attribute 'loss'.*'objective'"):
        tr.loss
    mine = ufm.simulate(p, steps=5, lr=0.1, record={"loss": lambda prob, st: 7.0}, progress=False)
    assert np.all(mine.loss == 7.0)      # a record the caller named "loss" is theirs to read
