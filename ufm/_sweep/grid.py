"""The points of a sweep's grid."""

from __future__ import annotations

import itertools

from .._util import canonical_json
from ..results import record_value

__all__ = ["RESERVED", "grid_points"]

#: Record keys that the sweep sets itself (a grid may not use them).
RESERVED = ("seed", "seed_index", "ok", "error")


def _param(value, where: str):
    try:
        return record_value(value, where)
    except ValueError:
        pass
    raise ValueError(f"{where} is a {type(value).__name__}; grid values must be numbers, strings, booleans, None "
                     "or lists of those (they go into the records). To sweep over objects such as problems, put "
                     "their keywords in the grid with problem=..., or sweep an index and look the object up in "
                     "your task.")


def grid_points(grid) -> list[dict]:
    """The points of a grid, in order.

    ``grid`` is a dict ``{name: list of values}`` (the Cartesian product, last
    name varying fastest, like ``itertools.product``) or a list of dicts (each
    one point, as given). ``{}`` is one point without parameters.
    """
    if isinstance(grid, dict):
        axes = {}
        for name, values in grid.items():
            if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__iter__"):
                raise ValueError(f"grid[{name!r}] must be a list of values, got {values!r}; write [{values!r}] "
                                 "for a single value (or pass it in fixed=).")
            values = list(values)
            if not values:
                raise ValueError(f"grid[{name!r}] is empty; give at least one value.")
            axes[str(name)] = [_param(v, f"grid[{name!r}][{i}]") for i, v in enumerate(values)]
        points = [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]
    elif isinstance(grid, (list, tuple)):
        if not grid:
            raise ValueError("grid is an empty list; give at least one point (a dict), or a dict of lists.")
        points = []
        for i, point in enumerate(grid):
            if not isinstance(point, dict):
                raise ValueError(f"grid[{i}] must be a dict of parameters, got {type(point).__name__}.")
            points.append({str(k): _param(v, f"grid[{i}][{k!r}]") for k, v in point.items()})
    else:
        raise ValueError(f"grid must be a dict of parameter lists or a list of dicts, got {type(grid).__name__}.")
    seen = {}
    for i, point in enumerate(points):
        for name in point:
            if name in RESERVED:
                raise ValueError(f"grid parameter {name!r} is set by the sweep itself; use seeds= (runs per point) "
                                 f"and seed= (base seed) instead.")
        text = canonical_json(point, "grid")
        if text in seen:
            raise ValueError(f"grid points {seen[text]} and {i} are the same ({point}); remove the duplicate.")
        seen[text] = i
    return points

