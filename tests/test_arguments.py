"""Bad arguments are one clear error naming the argument and the fix, raised before any work.

Each case used to raise a raw error from deep inside (AttributeError, a bare MemoryError,
SeedSequence's TypeError) or was accepted and gave a wrong run (a negative tolerance ran to
max_iter, ``throw="yes"`` was true, fractional record steps were truncated, a NaN
attribute table gave NaN records).
"""

from __future__ import annotations

import numpy as np
import pytest

import ufm
from ufm import InputCoupledUFM, UFMProblem
from ufm._checks import ArgumentTypeError

P = UFMProblem(K=3, n=2, d=4, lam_W=1e-2, lam_H=1e-2)
IMBALANCED = UFMProblem(K=3, counts=[1, 2, 3], d=4, lam_W=1e-2, lam_H=1e-2)     # no closed form: prox runs


def _refused(fn, *fragments, kind=ValueError):
    with pytest.raises(kind) as err:
        fn()
    for fragment in fragments:
        assert fragment in str(err.value), str(err.value)
    return err.value


# -- 2. raw errors -----------------------------------------------------------------------------
@pytest.mark.parametrize("setting, hint", [
    ("factorial", "for the setting named 'factorial' pass ufm.settings.named_setting('factorial')"),
    (None, "build one, e.g. ufm.factorial((2, 2, 2))"),
])
def test_from_setting_refuses_what_is_not_a_setting(setting, hint):
    err = _refused(lambda: InputCoupledUFM.from_setting(setting, sigma=1.0),
                   f"setting must be a Setting (ufm.settings), got {type(setting).__name__}", hint, kind=TypeError)
    assert isinstance(err, ValueError)           # every bad argument of ufm is a ValueError too


@pytest.mark.parametrize("problem, hint", [
    (None, "build one first, e.g. ufm.UFMProblem(K=4, n=3, d=6, lam_W=1e-2, lam_H=1e-2)"),
    ({}, "a dict is not a problem: build one from its keywords, e.g. ufm.UFMProblem(**keywords)"),
    ({"K": 3, "n": 2, "d": 4}, "ufm.UFMProblem(**keywords)"),
])
def test_solve_refuses_what_is_not_a_problem(problem, hint):
    _refused(lambda: ufm.solve(problem), "ufm.solve: problem must be a UFMProblem, InputCoupledUFM or "
             f"LayerPeeledProblem (ufm.problems), got {type(problem).__name__}", hint, kind=TypeError)


def test_solve_still_takes_every_model():
    s = ufm.factorial((2, 2))
    m2 = InputCoupledUFM.from_setting(s, sigma=1.0, lam_W=1e-2, lam_A=1e-2)
    anchored = ufm.AnchoredUFM(K=3, n=2, d=4, lam_W=1e-2, lam_H=1e-2, H_anchor=np.zeros((4, 6)), beta=0.1)
    assert ufm.solve(P).success and ufm.solve(m2).success
    assert ufm.solve(ufm.LayerPeeledProblem(K=3, n=2, d=4)).success
    assert ufm.solve(anchored).status.name == "no_method"        # a model, but no method covers it: a result


@pytest.mark.parametrize("seed", ["a", 1.5, True, [1, 2], object()])
def test_simulate_refuses_a_seed_of_the_wrong_type(seed):
    _refused(lambda: ufm.simulate(P, steps=5, lr=0.1, seed=seed, progress=False),
             "seed must be an integer >= 0, a np.random.SeedSequence, a np.random.Generator or None",
             f"got {seed!r}", "pass e.g. seed=0", kind=TypeError)


def test_simulate_refuses_a_negative_seed():
    _refused(lambda: ufm.simulate(P, steps=5, lr=0.1, seed=-1, progress=False),
             "seed must be an integer >= 0, got -1", "pass e.g. seed=0")


def test_simulate_takes_the_seeds_numpy_documents():
    """An int, a SeedSequence (the root itself), a Generator (a spawned child) or None; meta says how to repeat it."""
    run = lambda seed: ufm.simulate(P, steps=3, lr=0.1, seed=seed, record=("W",), n_records=2,  # noqa: E731
                                    progress=False)
    by_int = run(7)
    assert by_int.meta["seed"] == 7
    by_seq = run(np.random.SeedSequence(7))
    np.testing.assert_array_equal(by_seq.records["W"], by_int.records["W"])
    assert by_seq.meta["seed"] == {"entropy": 7, "spawn_key": []}
    rng = np.random.default_rng(7)
    first, second = run(rng), run(rng)
    assert not np.array_equal(first.records["W"], second.records["W"])      # as two draws of one Generator differ
    again = run(np.random.SeedSequence(**first.meta["seed"]))
    np.testing.assert_array_equal(again.records["W"], first.records["W"])
    fresh = run(None)
    np.testing.assert_array_equal(run(np.random.SeedSequence(**fresh.meta["seed"])).records["W"],
                                  fresh.records["W"])


# -- 3. accepted but wrong --------------------------------------------------------------------
@pytest.mark.parametrize("tol", [-1, 0, float("nan"), "small"])
def test_prox_refuses_a_tolerance_that_is_not_positive(tol):
    _refused(lambda: ufm.solve(IMBALANCED, method="prox", tol=tol), "tol must be a",
             "(the target relative duality gap, e.g. 1e-6)")
    _refused(lambda: ufm.solve(IMBALANCED, method="auto", tol=tol), "tol must be a")


def test_prox_and_convex_check_their_options_before_solving():
    _refused(lambda: ufm.convex.prox(IMBALANCED, max_iter=0), "max_iter must be an integer >= 1, got 0")
    _refused(lambda: ufm.convex.prox(IMBALANCED, check_every=2.5), "check_every must be an integer >= 1")
    _refused(lambda: ufm.convex.convex(IMBALANCED, tol=-1e-9), "tol must be a finite number > 0",
             "(the solver tolerance, e.g. 1e-9)")
    _refused(lambda: ufm.convex.convex(IMBALANCED, polish=-1.0), "polish must be a finite number > 0", "None skips")
    _refused(lambda: ufm.convex.svm(IMBALANCED, solver=3), "solver must be one of")


def _entry_points():
    """Every entry point that takes throw=, called with the given value."""
    s = ufm.factorial((2, 2))
    m2 = InputCoupledUFM.from_setting(s, sigma=1.0, lam_W=1e-2, lam_A=1e-2)
    t = np.array([0.0, 1.0])
    return {
        "solve": lambda throw: ufm.solve(P, throw=throw),
        "closed_form.solve": lambda throw: ufm.closed_form.solve(P, throw=throw),
        "convex.prox": lambda throw: ufm.convex.prox(IMBALANCED, throw=throw),
        "convex.convex": lambda throw: ufm.convex.convex(IMBALANCED, throw=throw),
        "convex.svm": lambda throw: ufm.convex.svm(UFMProblem(K=3, n=2, d=4), throw=throw),
        "simulate": lambda throw: ufm.simulate(P, steps=3, lr=0.1, progress=False, throw=throw),
        "dynamics.mode_curves": lambda throw: ufm.dynamics.mode_curves(m2, t, throw=throw),
        "sweep": lambda throw: ufm.sweep(ufm.solve, {"lam_W": [1e-2]}, problem="ufm", backend="sequential",
                                         fixed=dict(K=3, n=2, d=4, lam_H=1e-2), progress=False, throw=throw),
    }


@pytest.mark.parametrize("name", sorted(_entry_points()))
@pytest.mark.parametrize("throw", ["yes", 1, None])
def test_throw_must_be_a_bool(name, throw):
    _refused(lambda: _entry_points()[name](throw), f"throw must be True or False, got {throw!r}",
             "pass throw=True or throw=False", kind=TypeError)


@pytest.mark.parametrize("name", ["solve", "simulate", "convex.prox"])
def test_throw_takes_numpy_bools(name):
    assert _entry_points()[name](np.bool_(True)).success


def test_throw_is_checked_by_the_theory_curves_too():
    s = ufm.factorial((2, 2))
    m2 = InputCoupledUFM.from_setting(s, sigma=1.0, lam_W=1e-2, lam_A=1e-2)
    t = np.array([0.0, 1.0])
    for call in (lambda: ufm.dynamics.semantic_curve(m2, t, throw="no"),
                 lambda: ufm.dynamics.symmetric_flow(UFMProblem(K=3, n=2, d=4, loss="mse"), t, throw="no"),
                 lambda: ufm.dynamics.kernel_flow(s, np.eye(s.N), t, throw="no")):
        _refused(call, "throw must be True or False, got 'no'", kind=TypeError)


@pytest.mark.parametrize("record_steps, fragment", [
    ([1.5, 2.7], "record_steps must be whole step numbers: record_steps[0] = 1.5 is not (2 such); pass integers"),
    ([2, float("nan")], "record_steps[1] = nan is not"),
    (["a", "b"], "record_steps must be a sequence of step numbers (integers), got ['a', 'b']"),
    ([True, False], "record_steps must be a sequence of step numbers"),
    ([], "record_steps is empty; pass the steps to record"),
    ([0, 11], "record_steps must lie in [0, steps=10], got values from 0 to 11; drop the steps outside or raise"),
    ([-1, 3], "record_steps must lie in [0, steps=10]"),
])
def test_record_steps_are_whole_steps_never_truncated(record_steps, fragment):
    _refused(lambda: ufm.simulate(P, steps=10, lr=0.1, record_steps=record_steps, progress=False), fragment)


def test_whole_float_record_steps_are_taken():
    tr = ufm.simulate(P, steps=10, lr=0.1, record_steps=[5.0, 2.0, 2], progress=False)
    assert tr.steps.tolist() == [0, 2, 5, 10]


@pytest.mark.parametrize("attributes, fragment", [
    (np.zeros((2, 2), dtype=int), "attributes must have one row per class: the problem has K=3 classes but "
                                  "attributes has 2 rows; pass a K x F table"),
    (np.array([[0.0], [np.nan], [1.0]]), "attributes must hold integer factor levels; found non-integer or "
                                         "non-finite values (NaN or inf). Pass one integer level per class"),
    (np.array([0, 1, 1]), "attributes must be a K x F table"),
    (np.array([["a"], ["b"], ["c"]]), "attributes must hold integer factor levels, got dtype <U1"),
])
@pytest.mark.parametrize("record", [("objective",), ("semantic_gap",)])
def test_simulate_checks_attributes_before_running(attributes, fragment, record):
    """Checked whatever is recorded (with 'semantic_gap', a bad table used to give NaN records and a warning)."""
    _refused(lambda: ufm.simulate(P, steps=5, lr=0.1, attributes=attributes, record=record, progress=False),
             fragment)


def test_good_attributes_are_recorded():
    tr = ufm.simulate(P, steps=5, lr=0.1, attributes=np.array([[0], [0], [1.0]]), record=("semantic_gap",),
                      progress=False)
    assert np.all(np.isfinite(tr.records["semantic_gap"])) and "warnings" not in tr.meta


def test_check_arguments_checks_what_a_sweep_can_pass():
    """ufm.sweep checks fixed and grid values with check_arguments before any run."""
    from ufm._simulate import check_arguments

    _refused(lambda: check_arguments(throw="yes"), "throw must be True or False", kind=ArgumentTypeError)
    _refused(lambda: check_arguments(record_steps=[0.5]), "record_steps must be whole step numbers")
    _refused(lambda: check_arguments(seed="a"), "seed must be an integer >= 0")
    assert check_arguments(steps=8, record_steps=[8.0, 3])["record_steps"].tolist() == [3, 8]
