"""What a sweep runs: tasks named by a string, problems built from keywords, the keywords each accepts."""

from __future__ import annotations

import importlib
import inspect

from .. import settings
from .._solve import option_names, solve
from .._util import callable_name
from ..problems import InputCoupledUFM

__all__ = ["PROBLEMS", "TASKS", "build_problem", "import_target", "problem_keys", "resolve_task", "signature_keys",
           "task_keys"]

#: Tasks that can be named by a string (``task="simulate"``); ``"module:function"`` names any other.
TASKS = {"simulate": "ufm._simulate:simulate", "solve": "ufm._solve:solve"}


def setting_problem(generator: str, **kw):
    """The input-coupled model M2 of ``settings.<generator>(...)``, each keyword going to the generator or to
    ``InputCoupledUFM.from_setting`` by name."""
    gen = getattr(settings, generator)
    names = set(inspect.signature(gen).parameters) - {"seed"}
    setting = gen(**{k: v for k, v in kw.items() if k in names})
    return InputCoupledUFM.from_setting(setting, **{k: v for k, v in kw.items() if k not in names})


def setting_keys(generator: str) -> set:
    """The keywords :func:`setting_problem` accepts for ``generator``."""
    names = set(inspect.signature(getattr(settings, generator)).parameters) - {"seed"}
    return names | (set(inspect.signature(InputCoupledUFM.from_setting).parameters) - {"setting", "cls"})


#: ``problem="kind"`` in :func:`ufm.sweep`: kind -> (builder, its keyword names).
PROBLEMS = {
    "ufm": ("ufm.problems:UFMProblem", None),
    "layer_peeled": ("ufm.problems:LayerPeeledProblem", None),
    **{name: ("ufm._sweep.tasks:setting_problem", name) for name in settings.NAMED_SETTINGS},
}


def build_problem(kind: str, **kwargs):
    """Build a problem from keywords: what ``problem="kind"`` does at each grid point.

    Parameters
    ----------
    kind : {"ufm", "layer_peeled", "factorial", "hierarchy", "ntp_contexts"}
        ``"ufm"``: ``UFMProblem(**kwargs)``; ``"layer_peeled"``:
        ``LayerPeeledProblem(**kwargs)``; a setting generator of
        :mod:`ufm.settings`: the input-coupled model M2 of that setting,
        ``InputCoupledUFM.from_setting(generator(...), sigma=..., ...)`` (THEORY §8.2),
        with each keyword going to the generator or to ``from_setting`` by name.
    **kwargs
        The problem's keywords, e.g. ``K=4, n=2, d=6, lam_W=1e-2, lam_H=1e-2`` or
        ``levels=(2, 2), sigma=0.3, lam_W=1e-3, lam_A=1e-3``.
    """
    if kind not in PROBLEMS:
        raise ValueError(f"problem kind must be one of {sorted(PROBLEMS)}, got {kind!r}; or pass a function "
                         "problem=f(**keywords) -> problem.")
    target, generator = PROBLEMS[kind]
    fn = import_target(target)
    return fn(generator, **kwargs) if generator else fn(**kwargs)


def problem_keys(kind: str) -> tuple[set, bool]:
    """Explicit keyword names of the problem kind ``kind`` and whether it takes any other keyword."""
    target, generator = PROBLEMS[kind]
    if generator:
        return setting_keys(generator), False
    return signature_keys(import_target(target))


def import_target(target: str):
    """The object ``"module:name"`` names (``name`` may be dotted)."""
    module, _, name = target.partition(":")
    if not module or not name:
        raise ValueError(f"a task or factory named by a string must read 'module:function', got {target!r}.")
    obj = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def signature_keys(fn) -> tuple[set, bool]:
    """Explicit keyword names of ``fn`` and whether it also takes ``**kwargs``."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return set(), True
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names, any(p.kind == p.VAR_KEYWORD for p in params)


def task_keys(fn) -> tuple[set, bool]:
    """Keyword names the task ``fn`` accepts and whether it takes any other.

    Its signature's (:func:`signature_keys`), except for ``ufm.solve``, whose ``**options``
    go to its methods: it accepts its own keywords and the options of some method
    (:func:`ufm._solve.option_names`), so a misspelled option is one error before any run.

    Parameters
    ----------
    fn : callable
        The task.

    Returns
    -------
    tuple of (set of str, bool)
        The explicit keyword names, and whether it also takes ``**kwargs``.
    """
    names, var = signature_keys(fn)
    if fn is solve:
        return names | option_names(), False
    return names, var


def resolve_task(task):
    """``(function, "module:function")`` of a task given as a function or a name."""
    if isinstance(task, str):
        target = TASKS.get(task, task)
        if ":" not in target:
            raise ValueError(f"task must be a function, one of {sorted(TASKS)}, or 'module:function'; got {task!r}.")
        try:
            return import_target(target), target
        except (ImportError, AttributeError) as err:
            raise ValueError(f"task {task!r}: cannot import {target!r} ({err}).") from None
    if not callable(task):
        raise ValueError(f"task must be a function (e.g. ufm.simulate) or its name, got {type(task).__name__}.")
    return task, callable_name(task)
