"""Argument checks shared by every module: each error names the argument and the fix."""

from __future__ import annotations

import math
import os

import numpy as np

__all__ = ["available_bytes", "check_int", "check_nonneg", "check_positive"]


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


def available_bytes() -> int | None:
    """Free physical memory in bytes, or ``None`` where the platform does not say."""
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None
