"""The registry of losses: the names a problem's ``loss=`` understands.

One line per loss. A loss lives in a file of its own (:mod:`ufm.losses` holds the protocol,
:class:`~ufm.losses.CrossEntropy` and :class:`~ufm.losses.SquaredError`;
:mod:`ufm.label_smoothing` the label-smoothed cross-entropy), and this dict makes it
reachable by name. ``docs/guide/adding_a_loss.md`` walks through adding one.
"""

from __future__ import annotations

import re

from .label_smoothing import LabelSmoothedCE
from .losses import CrossEntropy, Loss, SquaredError

__all__ = ["LOSSES", "get_loss"]

#: Registered losses by name: the ``loss=`` of a problem (a name takes the default parameters).
LOSSES: dict[str, type] = {
    "ce": CrossEntropy,
    "mse": SquaredError,
    "ls_ce": LabelSmoothedCE,
}


def get_loss(spec) -> Loss:
    """The loss object of ``spec``: a :class:`~ufm.losses.Loss`, a name of :data:`LOSSES`, or ``"name(p=v, ...)"``.

    Parameters
    ----------
    spec : Loss or str
        E.g. ``"ce"``, ``"ls_ce"`` (default ``eps``), ``"ls_ce(eps=0.05)"`` (what ``str(loss)``
        gives, so a problem's ``as_dict()`` rebuilds it) or ``LabelSmoothedCE(eps=0.05)``.

    Returns
    -------
    Loss
        The loss.

    Raises
    ------
    ValueError
        For an unknown name or a malformed parameter list.
    """
    if isinstance(spec, Loss):
        return spec
    if not isinstance(spec, str):
        raise ValueError(f"loss must be a name of {sorted(LOSSES)} or a Loss object, got {spec!r}.")
    m = re.fullmatch(r"\s*(\w+)\s*(?:\((.*)\))?\s*", spec)
    if m is None or m.group(1) not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)} (or a Loss object), got {spec!r}.")
    kwargs = {}
    for item in filter(None, (s.strip() for s in (m.group(2) or "").split(","))):
        key, sep, val = item.partition("=")
        try:
            kwargs[key.strip()] = float(val)
        except ValueError:
            sep = ""
        if not sep:
            raise ValueError(f"loss {spec!r}: parameters are written name=number, e.g. 'ls_ce(eps=0.1)'.")
    try:
        return LOSSES[m.group(1)](**kwargs)
    except TypeError as err:
        raise ValueError(f"loss {spec!r}: {err}.") from None
