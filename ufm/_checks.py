"""Argument checks shared by every module: each error names the argument and the fix."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["ArgumentTypeError", "check_attributes", "check_bool", "check_int", "check_nonneg", "check_positive", "check_problem"]


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type: a ``TypeError``, and a ``ValueError`` as every bad argument of ``ufm`` is."""


def check_int(name: str, value, minimum: int) -> int:
    """``value`` as an int ``>= minimum``; bools and non-integers are refused."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r} ({type(value).__name__}).")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}.")
    return int(value)


def _real(name: str, value, requirement: str) -> float:
    """``float(value)``; bools and non-numbers are refused with "must be a real number <requirement>"."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be a real number {requirement}, got {value!r}.")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number {requirement}, got {value!r}.") from None


def check_nonneg(name: str, value, meaning: str = "a weight decay") -> float:
    """``value`` as a finite float ``>= 0``; ``meaning`` says what it is, for the message."""
    v = _real(name, value, f">= 0 ({meaning})")
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}; pass a finite value >= 0.")
    if v < 0:
        raise ValueError(f"{name} must be >= 0 ({meaning}), got {v}; pass its absolute value or 0.")
    return v


def check_positive(name: str, value, meaning: str) -> float:
    """``value`` as a finite float ``> 0``; ``meaning`` says what it is, for the message."""
    v = _real(name, value, f"> 0 ({meaning})")
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite number > 0 ({meaning}), got {value!r}.")
    return v


def check_attributes(attributes, K: int | None = None, rows: str | None = None) -> np.ndarray:
    """``attributes`` as an int64 K x F table of factor levels (whole floats and bools converted; NaN refused).

    Parameters
    ----------
    attributes : array (K, F)
        One row per class, one column per factor.
    K : int, optional
        The number of rows required.
    rows : str, optional
        Where ``K`` comes from, for the message (default: ``"gram is K x K"``).

    Returns
    -------
    ndarray of int64 (K, F)
        The table.
    """
    A = np.asarray(attributes)
    if A.ndim != 2:
        raise ValueError(
            f"attributes must be a K x F table (one row per class, one column per factor), got shape {A.shape}; "
            "for a single factor pass attributes[:, None]."
        )
    if A.size == 0:
        raise ValueError(f"attributes is empty (shape {A.shape}); give at least one factor column.")
    if A.dtype == np.bool_:
        A = A.astype(np.int64)
    if np.issubdtype(A.dtype, np.floating):
        if not (np.all(np.isfinite(A)) and np.all(A == np.round(A))):
            raise ValueError("attributes must hold integer factor levels; found non-integer or non-finite values "
                             "(NaN or inf). Pass one integer level per class and factor, e.g. setting.attributes.")
        A = A.astype(np.int64)
    elif not np.issubdtype(A.dtype, np.integer):
        raise ValueError(f"attributes must hold integer factor levels, got dtype {A.dtype}.")
    if K is not None and A.shape[0] != K:
        raise ValueError(
            f"attributes must have one row per class: {rows or f'gram is {K} x {K}'} but attributes has "
            f"{A.shape[0]} rows; pass a K x F table, one row of factor levels per class."
        )
    return A


def check_bool(name: str, value) -> bool:
    """``value`` as a bool; only ``True``/``False`` (or a numpy bool) are accepted, never a string or a number."""
    if not isinstance(value, (bool, np.bool_)):
        raise ArgumentTypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__}); "
                                f"pass {name}=True or {name}=False.")
    return bool(value)


def check_problem(problem, models: tuple, who: str):
    """``problem`` if it is an instance of one of ``models``; else an error saying how to build one.

    Parameters
    ----------
    problem : object
        The argument.
    models : tuple of type
        The model classes ``who`` takes (from :mod:`ufm.problems`).
    who : str
        The entry point, for the message (e.g. ``"ufm.solve"``).

    Returns
    -------
    object
        ``problem``, unchanged.
    """
    if isinstance(problem, models):
        return problem
    names = ", ".join(m.__name__ for m in models[:-1]) + f" or {models[-1].__name__}" if len(models) > 1 \
        else models[0].__name__
    if isinstance(problem, dict):
        hint = f"a dict is not a problem: build one from its keywords, e.g. ufm.{models[0].__name__}(**keywords)"
    elif isinstance(problem, str):
        hint = ("a name is not a problem: build one, e.g. ufm.UFMProblem(K=4, n=3, d=6, lam_W=1e-2, lam_H=1e-2), "
                "or the model of a named setting, ufm.InputCoupledUFM.from_setting("
                f"ufm.settings.named_setting({problem!r}), sigma=1.0)")
    else:
        hint = "build one first, e.g. ufm.UFMProblem(K=4, n=3, d=6, lam_W=1e-2, lam_H=1e-2)"
    raise ArgumentTypeError(f"{who}: problem must be a {names} (ufm.problems), got {type(problem).__name__}; "
                            f"{hint}.")
