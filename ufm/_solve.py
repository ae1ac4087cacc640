"""``ufm.solve``: one entry point for every global solver (dispatch only).

The module is private (``ufm._solve``) so that the function ``ufm.solve`` is
never shadowed by a submodule of the same name.

Each method is registered in :data:`METHODS` as a module path and two names:
the function that solves and the function that says whether it applies
(``applies(problem) -> (bool, str)``). Adding a solver means writing its
module and adding one line here.
"""

from __future__ import annotations

import importlib

import numpy as np

from ._checks import check_bool, check_problem
from .convex import form_of
from .problems import InputCoupledUFM, LayerPeeledProblem, UFMProblem
from .results import NoMethodApplies, Solution

__all__ = ["solve", "METHODS", "NoMethodApplies"]

#: method name -> (module, solve function, applies function)
METHODS: dict[str, tuple[str, str, str]] = {
    "closed_form": ("ufm.closed_form", "solve", "applies"),
    "convex": ("ufm.convex", "convex", "applies_convex"),
    "prox": ("ufm.convex", "prox", "applies_prox"),
    "svm": ("ufm.convex", "svm", "applies_svm"),
}


#: The models ``ufm.solve`` takes (AnchoredUFM is a UFMProblem).
_MODELS = (UFMProblem, InputCoupledUFM, LayerPeeledProblem)


def _method(name: str):
    module, fn, check = METHODS[name]
    mod = importlib.import_module(module)
    return getattr(mod, fn), getattr(mod, check)


def solve(problem, method: str = "auto", *, throw: bool = False, **options):
    """Solve a UFM problem to global optimality.

    Parameters
    ----------
    problem : UFMProblem, AnchoredUFM, InputCoupledUFM or LayerPeeledProblem
        The problem (see :mod:`ufm.problems` for the objective and its conventions:
        halved regularizers, means over the N examples).
    method : str
        ``"auto"`` or a name in :data:`METHODS`, e.g. ``"closed_form"`` (THEORY
        §1-§3). ``"auto"`` takes the closed form when one applies, else the
        certified proximal solver on the convex form (THEORY §4; tolerance 1e-9
        unless given), else the max-margin program (``"svm"``); ``cvxpy``
        (``"convex"``) is never chosen automatically: it is the independent check.
    throw : bool
        Raise instead of returning a result with ``success=False``:
        :class:`~ufm.results.NoMethodApplies` when the method (or, for
        ``"auto"``, every method) does not cover the problem,
        :class:`~ufm.results.NotConverged` when the solver stops short (``err.result`` holds the result).
    **options
        Passed to the method.

    Returns
    -------
    Solution
        Frozen result with ``W, H, b, Z, loss, success, status, message, regime,
        method, nit, nfev, meta``; ``meta["auto"]`` records the choice when
        ``method="auto"``. When the method does not cover the problem (or none
        does): ``status`` ``no_method``, the message says why per method and
        names the registered methods that do apply, ``W, H, Z`` are NaN.

    Raises
    ------
    ValueError
        For a ``problem`` that is not a model of :mod:`ufm.problems` (a ``TypeError`` too),
        an unknown method, an option the method does not take, or a bad option value
        (e.g. ``tol <= 0``), before any work.
    """
    check_problem(problem, _MODELS, "ufm.solve")
    throw = check_bool("throw", throw)
    if method != "auto" and method not in METHODS:
        raise ValueError(f"method must be 'auto' or one of {sorted(METHODS)}, got {method!r}.")
    try:
        sol = _auto(problem, options) if method == "auto" else _solve(problem, method, options)
    except NoMethodApplies as err:      # found while solving, e.g. d below the rank of the optimum
        sol = Solution.unsolved(problem, method, "no_method", str(err))
    return sol.raise_on_failure() if throw else sol


def _solve(problem, method, options):
    reasons = {}
    run, applies = _method(method)
    _check_options(repr(method), run, options)
    ok, why = applies(problem)
    if ok:
        return run(problem, **options)
    reasons[method] = why
    others = [m for m in METHODS if m not in reasons and _method(m)[1](problem)[0]]
    hint = (f" Methods that do apply: {others}." if others else
            f" No registered method ({sorted(METHODS)}) applies to this problem.")
    detail = "\n".join(f"[{k}] {v}" for k, v in reasons.items())
    return Solution.unsolved(problem, method, "no_method", f"method={method!r} cannot solve {problem!r}.{hint}\n{detail}")


def option_names() -> set:
    """Every option some method of :data:`METHODS` takes: what ``ufm.solve(problem, **options)`` can accept.

    Returns
    -------
    set of str
        The names (``ufm.sweep`` refuses a grid or fixed name outside them, and ``method``, before any run).
    """
    return set().union(*(_options_of(_method(name)[0]) or () for name in METHODS))


def _options_of(run) -> list | None:
    """The options ``run`` takes after the problem (``throw`` aside); ``None`` when it takes any (``**kwargs``)."""
    import inspect

    params = inspect.signature(run).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return None
    return [n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
            and n != "throw"][1:]


def _check_options(method, run, options):
    """Options the method does not take are refused by name, with the ones it does take."""
    known = _options_of(run)
    if known is None:
        return
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"method={method} takes no option {', '.join(map(repr, unknown))}; its options are "
                         f"{known or 'none'}" + (". The closed form is exact: it has no tolerance or iteration "
                                                 "limit." if "closed_form" in method else "."))


def _auto(problem, options):
    """Closed form when one applies; else the certified proximal solver on the convex form; else the
    max-margin program. The choice and the reason go to ``meta["auto"]``."""
    reasons = {}
    ok, why = _method("closed_form")[1](problem)
    if ok:
        choice, reason = "closed_form", f"a closed form applies ({why})"
    else:
        reasons["closed_form"] = why
        ok, why = _method("prox")[1](problem)
        if ok:
            entries = int(np.prod(form_of(problem).shape))
            choice, reason = "prox", (f"no closed form; the convex form ({entries} entries) is solved by the "
                                      "certified proximal solver, faster than cvxpy at every size benchmarked "
                                      "(benchmarks/RESULTS.md); method='convex' gives an independent check")
        else:
            reasons["prox"] = why
            ok, why = _method("svm")[1](problem)
            if not ok:
                reasons["svm"] = why
                detail = "\n".join(f"[{k}] {v}" for k, v in reasons.items())
                return Solution.unsolved(problem, "auto", "no_method", f"no method solves {problem!r}:\n{detail}")
            choice, reason = "svm", f"no closed form and no minimizer; the max-margin limit applies ({why})"
    _check_options(f"auto (which chose {choice!r})", _method(choice)[0], options)
    if choice == "prox":
        # auto is for "the answer": a 1e-9 certified objective gap puts the geometry (Grams) at ~3e-5
        options = {"tol": 1e-9, **options}
    sol = _method(choice)[0](problem, **options)
    return sol.replace(meta={**sol.meta, "auto": {"method": choice, "why": reason}})
