"""Frozen result objects shared by every solver and simulator.

Each result is a frozen dataclass whose array fields are read-only and whose
scalar fields and ``meta`` are JSON-friendly, so ``save`` writes one ``.npz``
file (``allow_pickle=False``) and ``load`` gives back an equal object.
``meta`` carries the parameters, the solver and the package versions; it is read-only
like the rest (``result.replace(meta=...)`` makes a changed copy).
``meta["content_hash"]`` is a SHA-256 over the arrays and the other fields, computed
when first read (saving reads it), not when the result is made.

Every result answers the same three questions, with the names of
``scipy.optimize.OptimizeResult``: ``success`` (bool), ``status`` (a
:class:`Status`, whose value is its message) and ``message`` (str, starting
with the status's message). Bad input raises ``ValueError``; a computation
that did not succeed (no method applies, not converged, diverged, interrupted)
is a result with ``success=False``, and the entry points that take
``throw=True`` raise a :class:`UFMError` subclass carrying it instead.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import json
import math
import os
import platform
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ._atomic import write_npz
from ._util import canonical_json

__all__ = ["FitResult", "NoMethodApplies", "NotConverged", "PhasePoint", "Result", "Run", "Solution", "Status",
           "SweepResult", "TheoryCurve", "Trajectory", "TransientModels", "UFMError", "distinct_values", "load",
           "package_versions"]

_SCHEMA = 3     # 2: ``status`` is a Status name, the geometry of a Solution is in ``regime``;
                # 3: the objective value is ``objective`` (a Solution field, a Trajectory record), not ``loss``;
                # 1 and 2 are read and upgraded


class Status(enum.Enum):
    """How a computation ended. The value of a member is its message; ``member.success`` says whether
    it is a success.

    One enumeration serves every result: a solver's answer (``exact``, ``optimal``, ``max_iter``,
    ``inaccurate``, ``solver_failed``, ``no_method``), a run (``completed``, ``interrupted``,
    ``nonfinite``, ``max_steps``, ``step_underflow``) and a sweep (``runs_failed``). Look a
    member up by name with ``Status["max_iter"]``.

    Attributes
    ----------
    message : str
        What the status means (the member's value).
    success : bool
        Whether a result with this status succeeded.
    """

    def __new__(cls, message: str, success: bool):
        member = object.__new__(cls)
        member._value_ = message
        member.success = success
        return member

    @property
    def message(self) -> str:
        """What the status means, in words (the member's value)."""
        return self.value

    def __repr__(self) -> str:
        return f"Status.{self.name}"

    exact = ("Exact optimum from a closed form.", True)
    optimal = ("Optimal: the certificate meets the tolerance.", True)
    completed = ("Completed.", True)
    max_iter = ("Not converged: the iteration limit was reached before the tolerance.", False)
    inaccurate = ("Inaccurate: the solver stopped but its certificate misses the tolerance.", False)
    solver_failed = ("Solver failed: it returned no solution.", False)
    no_method = ("No method applies to this problem.", False)
    interrupted = ("Interrupted (Ctrl-C): the work done so far is kept.", False)
    nonfinite = ("Diverged: a value became inf or NaN; the records before it are kept.", False)
    max_steps = ("Not finished: the integrator used its whole step budget (max_steps).", False)
    step_underflow = ("Not finished: the integrator's step size underflowed.", False)
    runs_failed = ("Completed, but some runs failed.", False)


def as_status(value) -> Status:
    """A :class:`Status` from a member or its name; a ValueError naming the known ones otherwise.

    Parameters
    ----------
    value : Status or str
        A member or a member's name (``"completed"``).

    Returns
    -------
    Status
        The member.
    """
    if isinstance(value, Status):
        return value
    try:
        return Status[value]
    except (KeyError, TypeError):
        raise ValueError(f"status must be a ufm.results.Status or one of its names {[s.name for s in Status]}, "
                         f"got {value!r}.") from None


class UFMError(Exception):
    """Base of the exceptions ``throw=True`` raises for a result that did not succeed.

    Parameters
    ----------
    message : str
        The result's message.
    result : Result or None
        The result that did not succeed (``None`` when raised before one existed).
    """

    def __init__(self, message: str = "", result=None):
        super().__init__(message)
        self.result = result


class NoMethodApplies(UFMError):
    """No method (or no closed form) covers the problem; the message says why, per method.

    Parameters
    ----------
    message : str
        Why, per method.
    result : Solution or None
        The result with status ``no_method`` (``None`` when a closed-form case raises it).
    """


class NotConverged(UFMError):
    """A solver or a run stopped without success: iteration limit, inaccurate certificate, divergence.

    Parameters
    ----------
    message : str
        The result's message.
    result : Result or None
        The result that did not succeed.
    """


def package_versions() -> dict:
    """Versions of Python, ufm and the core numerical packages (for ``meta``).

    Read once per process (reading package metadata took 13 ms, more than a small simulation).
    """
    return dict(_package_versions())


@functools.lru_cache(maxsize=1)
def _package_versions() -> dict:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("ufm", "numpy", "scipy", "sympy", "cvxpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:  # running from a source tree
            out[name] = None
    return out


def jsonable(x):
    """``x`` as a JSON header holds it: tuples as lists, numpy scalars and arrays as Python numbers and lists,
    a :class:`Status` as its name.

    Parameters
    ----------
    x : object
        A value of ``meta`` or a scalar field.

    Returns
    -------
    object
        The JSON-friendly value.
    """
    if isinstance(x, Status):
        return x.name
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, (np.bool_,)):
        return bool(x)
    return x


def _frozen(value, dtype) -> np.ndarray:
    """``value`` as a read-only array of ``dtype``.

    An array that already has that dtype and is read-only is taken as it is (no copy: a
    simulation hands over its records this way); anything else is copied, so the
    caller's own arrays are never frozen or aliased.
    """
    if isinstance(value, np.ndarray) and value.dtype == dtype and not value.flags.writeable:
        return value
    arr = np.array(value, dtype=dtype)
    arr.setflags(write=False)
    return arr


_HASH_BLOCK = 1 << 24      # bytes per piece when a non-contiguous array is hashed


def _hash_array(h, arr) -> None:
    """Feed the C-order float64 bytes of ``arr`` to ``h`` (what ``arr.tobytes()`` gives) without copying it whole."""
    a = np.asarray(arr)
    if a.dtype != np.float64:
        a = a.astype(np.float64)
    if a.flags.c_contiguous:
        h.update(memoryview(a.reshape(-1)).cast("B"))
        return
    if a.ndim == 0 or a.nbytes <= _HASH_BLOCK:
        h.update(np.ascontiguousarray(a).tobytes())
        return
    for sub in a:             # C order: the leading index varies slowest
        _hash_array(h, sub)


_HASH_KEY = "content_hash"


def _pending_hash(feed, described: bytes):
    """The content hash, to be computed later: SHA-256 over the arrays (``feed(h)``), then ``described``
    (the scalar fields and ``meta`` as they were at construction)."""
    def compute() -> str:
        h = hashlib.sha256()
        feed(h)
        h.update(described)
        return h.hexdigest()
    return compute


def _frozen_json(x):
    """A JSON-friendly value whose dicts and lists refuse changes (the entries of a result's ``meta``)."""
    if isinstance(x, dict):
        return _FrozenDict({k: _frozen_json(v) for k, v in x.items()})
    if isinstance(x, list):
        return _FrozenList(_frozen_json(v) for v in x)
    return x


class _Meta(dict):
    """The ``meta`` dict of a result, whose ``"content_hash"`` entry is computed when first read.

    A simulation that records Grams at every step holds hundreds of megabytes of records, and
    SHA-256 reads them at about 1.4 GB/s: as much time as computing a Gram. So the hash is
    taken when something reads it (``meta["content_hash"]``, ``get``, ``in``, iterating,
    ``items()``/``keys()``/``values()``, ``dict(meta)``, ``{**meta}``, ``json.dumps``, ``==``,
    ``repr``, pickling, ``save``), over the arrays (read-only) and a snapshot of the scalar
    fields and ``meta`` taken at construction: the value is the one an eager hash would have
    given. Read-only, like the rest of a result, nested dicts and lists included (a change would
    make a saved file fail its hash check on load): ``result.replace(meta={**result.meta, ...})`` makes a changed copy.
    ``meta.copy()`` and ``dict(meta)`` are plain dicts with the hash in them; a pickled copy
    (a result sent to another process) stays read-only, with the hash computed.
    """

    __slots__ = ("_pending",)

    def __init__(self, entries=(), pending=None):
        super().__init__(entries)
        self._pending = pending

    @staticmethod
    def entries(meta) -> dict:
        """The entries of ``meta`` as a plain dict, without computing a pending hash (a pending hash is left out)."""
        if isinstance(meta, _Meta):
            return {k: v for k, v in dict.items(meta)}
        return dict(meta)

    def _resolve(self) -> None:
        compute = self._pending
        if compute is not None:
            dict.__setitem__(self, _HASH_KEY, compute())
            self._pending = None          # after the value is in: an interrupted hash is taken again next time

    def __missing__(self, key):
        if key == _HASH_KEY and self._pending is not None:
            self._resolve()
            return dict.__getitem__(self, key)
        raise KeyError(key)

    def __contains__(self, key):
        return (key == _HASH_KEY and self._pending is not None) or dict.__contains__(self, key)

    def __len__(self):
        return dict.__len__(self) + (self._pending is not None)

    def _refuse(self, *args, **kwargs):
        raise TypeError("a result's meta cannot change after construction (its content_hash covers it, and a "
                        "saved file would no longer load); make a changed copy: "
                        "result.replace(meta={**result.meta, 'note': ...}).")

    __setitem__ = __delitem__ = pop = popitem = setdefault = update = clear = __ior__ = _refuse

    def get(self, key, default=None):
        if key == _HASH_KEY:
            self._resolve()
        return dict.get(self, key, default)

    # Every read of the whole dict takes the hash first. ``dict(meta)``, ``{**meta}`` and ``f(**meta)``
    # go through ``keys()`` and ``meta[key]`` because ``__iter__`` is overridden; ``json.dumps``
    # calls ``items()`` of a dict subclass.
    def __iter__(self):
        self._resolve()
        return dict.__iter__(self)

    def __reversed__(self):
        self._resolve()
        return dict.__reversed__(self)

    def keys(self):
        self._resolve()
        return dict.keys(self)

    def items(self):
        self._resolve()
        return dict.items(self)

    def values(self):
        self._resolve()
        return dict.values(self)

    def __repr__(self):
        self._resolve()
        return dict.__repr__(self)

    def __or__(self, other):
        return self.copy() | other

    def __ror__(self, other):
        return other | self.copy()

    def __eq__(self, other):
        self._resolve()
        if isinstance(other, _Meta):
            other._resolve()
        return dict.__eq__(self, other)

    def __ne__(self, other):
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = None

    def copy(self) -> dict:
        self._resolve()
        return dict(dict.items(self))

    def __reduce__(self):
        return (_Meta, (self.copy(),))

    @classmethod
    def fromkeys(cls, keys, value=None):
        return dict.fromkeys(keys, value)


def check_save_path(path) -> str:
    """The ``.npz`` file ``save`` writes for ``path``; a ValueError (naming the path and the fix) for a folder,
    a missing parent folder or one that cannot be written, before anything is computed or written.

    Parameters
    ----------
    path : str or path-like
        The file; ``.npz`` is appended when missing.

    Returns
    -------
    str
        The path that will be written.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"{path} is a folder; pass a file name inside it, e.g. {os.path.join(path, 'result.npz')}.")
    if not path.endswith(".npz"):
        path += ".npz"
    if os.path.isdir(path):
        raise ValueError(f"{path} is a folder; pass another file name.")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ValueError(f"cannot write {path}: the folder {parent} does not exist; create it first.")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"cannot write {path}: the folder {parent} is not writable; choose another place.")
    return path


def _write_result(path: str, header: dict, arrays: dict) -> str:
    """The ``.npz`` file of a result: its JSON ``__header__`` and its arrays, written whole or not at all."""
    return write_npz(path, {"__header__": np.array(json.dumps(header)), **arrays})


class _Frozen:
    """The frozen-container base of every result and of :class:`Run`: read-only arrays and dicts,
    a content hash in ``meta``, ``save``/``load``, ``replace``, and the entries of the dict fields
    named in ``_LOOKUP`` readable as attributes and listed by ``dir()`` (tab completion)."""

    _ARRAYS: ClassVar[tuple[str, ...]] = ()
    _DICTS: ClassVar[tuple[str, ...]] = ()     # fields holding {name: array}
    _INT_ARRAYS: ClassVar[tuple[str, ...]] = ()
    _LOOKUP: ClassVar[tuple[tuple[str, str], ...]] = ()   # (dict field, singular): entries readable as attributes
    _UNSAVED: ClassVar[tuple[str, ...]] = ()   # fields left out of the hash and the file (live objects)
    _RENAMED: ClassVar[dict[str, str]] = {}    # old attribute name -> what to read instead

    def __getattr__(self, name):
        for group, _ in type(self)._LOOKUP:
            values = self.__dict__.get(group)
            if values is not None and name in values:
                return values[name]
        if name in type(self)._RENAMED:
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r}: {type(self)._RENAMED[name]}.")
        if not type(self)._LOOKUP:
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r}.")
        what = " or ".join(single for _, single in type(self)._LOOKUP)
        have = ", ".join(f"{group}: {sorted(self.__dict__.get(group) or {})}" for group, _ in type(self)._LOOKUP)
        raise AttributeError(f"{type(self).__name__} has no {what} {name!r}; {have}.")

    def __dir__(self):
        names = set(super().__dir__()) | {f.name for f in dataclasses.fields(self)}
        for group, _ in type(self)._LOOKUP:
            names.update(k for k in (self.__dict__.get(group) or {}) if k.isidentifier())
        return sorted(names)

    def __post_init__(self):
        for name in self._ARRAYS:
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _frozen(value, np.int64 if name in self._INT_ARRAYS else np.float64))
        for name in self._DICTS:
            frozen = {str(key): _frozen(value, np.float64) for key, value in getattr(self, name).items()}
            object.__setattr__(self, name, _FrozenDict(frozen))
        meta = jsonable(_Meta.entries(self.meta))
        meta.pop(_HASH_KEY, None)
        meta.setdefault("versions", package_versions())
        pending = _pending_hash(self._feed_arrays(), self._described(meta))
        object.__setattr__(self, "meta", _Meta(_frozen_json(meta), pending))

    def _scalars(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.init and f.name not in self._ARRAYS + self._DICTS + self._UNSAVED and f.name != "meta"}

    def _all_arrays(self) -> dict:
        out = {name: getattr(self, name) for name in self._ARRAYS if getattr(self, name) is not None}
        for name in self._DICTS:
            for key, arr in getattr(self, name).items():
                out[f"{name}/{key}"] = arr
        return out

    def _feed_arrays(self):
        """A function ``feed(h)`` that feeds this result's arrays, with their names, to the hash ``h``.

        It holds the (read-only) arrays, not ``self``: the pending hash in ``meta`` must not keep the
        result alive through a reference cycle (records can be gigabytes)."""
        arrays = self._all_arrays()

        def feed(h):
            for name, arr in arrays.items():
                h.update(name.encode())
                _hash_array(h, arr)
        return feed

    def _described(self, meta: dict) -> bytes:
        """The scalar fields and ``meta`` (less the hash and the versions) as the hash reads them, taken now."""
        rest = {k: v for k, v in meta.items() if k not in (_HASH_KEY, "versions")}
        return (json.dumps(jsonable(self._scalars()), sort_keys=True)
                + json.dumps(rest, sort_keys=True)).encode()

    def replace(self, **changes):
        """A copy with some fields changed (``meta`` gets a fresh content hash)."""
        return dataclasses.replace(self, **changes)

    def save(self, path: str | os.PathLike) -> str:
        """Write this result to ``path`` (``.npz``, no pickles), replacing a file there only once the new one is whole.

        The file is written beside ``path`` under a temporary name, flushed to the disk and
        renamed over ``path`` (:func:`ufm._atomic.write_atomically`): a save stopped by
        Ctrl-C, SIGTERM, ``kill -9`` or a full disk leaves the earlier file complete. A
        symbolic link at ``path`` is replaced by the file, not written through.

        Parameters
        ----------
        path : str or path-like
            The file; ``.npz`` is appended when missing. A folder, or a file in a
            folder that does not exist or cannot be written, is a ValueError.

        Returns
        -------
        str
            The path written.
        """
        path = check_save_path(path)
        header = {"schema": _SCHEMA, "type": type(self).__name__,
                  "scalars": jsonable(self._scalars()), "meta": self.meta}
        return _write_result(path, header, self._all_arrays())

    @classmethod
    def _upgrade(cls, fields: dict, schema: int) -> dict:
        """The constructor arguments of a file written with an older ``schema`` (no changes by default)."""
        return fields


_Result = _Frozen


@dataclass(frozen=True, eq=False, kw_only=True)
class Result(_Frozen):
    """The base of every result: the core fields of ``scipy.optimize.OptimizeResult``.

    Attributes
    ----------
    success : bool
        Whether the computation succeeded: ``status.success`` (not an argument).
    status : Status
        How it ended (a member name such as ``"completed"`` is accepted and converted).
    message : str
        What happened, in words; it starts with ``status.message`` (prepended
        when the given text does not), so the reason always comes first.
    """

    status: Status = Status.completed
    message: str = ""
    success: bool = field(init=False, default=True)

    def __post_init__(self):
        status = as_status(self.status)
        detail = str(self.message or "")
        message = detail if detail.startswith(status.message) else f"{status.message} {detail}".strip()
        object.__setattr__(self, "status", status)
        object.__setattr__(self, "success", status.success)
        object.__setattr__(self, "message", message)
        super().__post_init__()

    def replace(self, **changes):
        """A copy with some fields changed (``meta`` gets a fresh content hash).

        A new ``status`` keeps the message's details (the text after the old status's message) under the new one.

        Parameters
        ----------
        **changes
            Field values (``success`` follows ``status``).

        Returns
        -------
        Result
            The copy, of the same type.
        """
        if "status" in changes:
            message = changes.get("message", self.message)
            if message.startswith(self.status.message):
                changes["message"] = message[len(self.status.message):].strip()
        return dataclasses.replace(self, **changes)

    def raise_on_failure(self):
        """This result when it succeeded; else raise it as :class:`NoMethodApplies` (status ``no_method``)
        or :class:`NotConverged` (any other failure), with ``err.result`` set. What ``throw=True`` does.

        Returns
        -------
        Result
            ``self``, when ``success``.
        """
        if self.success:
            return self
        error = NoMethodApplies if self.status is Status.no_method else NotConverged
        raise error(self.message, self)


@dataclass(frozen=True, eq=False)
class Solution(Result):
    """A solution of a UFM problem, in the style of ``scipy.optimize.OptimizeResult``.

    Attributes
    ----------
    W : ndarray (K, d)
        Classifier.
    H : ndarray (d, N)
        Features, one column per example.
    b : ndarray (K,) or None
        Bias (``None`` when the problem has none).
    Z : ndarray (K, N)
        Logits ``W H + b 1^T``.
    objective : float
        The value of the objective that the method minimizes (``meta["objective"]``
        says which: the regularized objective (0.1), with the halved weight decays,
        for regularized problems, the max-margin value for the unregularized
        limits); ``nan`` when there is no answer. ``problem.loss`` is the loss
        function inside it.
    success : bool
        Whether ``W, H, b`` is a global minimizer to the stated accuracy.
    status : Status
        How the method ended: ``exact`` (a closed form), ``optimal`` (certified
        to the tolerance), ``max_iter``, ``inaccurate``, ``solver_failed`` or
        ``no_method`` (then ``W, H, Z`` are NaN).
    message : str
        Human-readable account of what was found and which regime applies.
    regime : str
        The geometry of the answer, e.g. ``"etf"``, ``"zero"``,
        ``"orthogonal_frame"``, ``"svt"``, ``"seli"``, ``"max_margin"``
        (``""`` when there is no answer).
    method : str
        The method that produced it (e.g. ``"closed_form"``).
    nit : int
        Iterations used (0 for closed forms).
    nfev : int
        Objective/gradient evaluations (0 for closed forms and cvxpy, which does not report them).
    meta : dict
        Problem parameters, regime quantities, certificates (duality gap,
        stationarity residuals), versions and ``content_hash``.
    citation : str
        The THEORY tags and papers behind the result.
    A : ndarray (d, p) or None
        The input map of an input-coupled UFM (``H = A Phi``); ``None`` otherwise.
    """

    W: np.ndarray
    H: np.ndarray
    b: np.ndarray | None
    Z: np.ndarray
    objective: float
    method: str
    regime: str = ""
    nit: int = 0
    nfev: int = 0
    meta: dict = field(default_factory=dict)
    citation: str = ""
    A: np.ndarray | None = None

    _ARRAYS: ClassVar[tuple[str, ...]] = ("W", "H", "b", "Z", "A")
    _RENAMED: ClassVar[dict[str, str]] = {
        "loss": "the value of the minimized objective is 'objective' (problem.loss is the loss function)"}

    #: statuses of schema-1 files that named how a solver stopped (every other one named the geometry)
    _V1_SOLVER_WORDS: ClassVar[tuple[str, ...]] = (
        "optimal", "inaccurate", "max_iter", "infeasible", "unbounded", "infeasible_inaccurate",
        "unbounded_inaccurate", "optimal_inaccurate", "solver_error", "user_limit")

    @classmethod
    def _upgrade(cls, fields: dict, schema: int) -> dict:
        if schema == 1:
            old = fields.pop("status")
            ok = fields.pop("success")
            fields["regime"] = "" if old in cls._V1_SOLVER_WORDS else old
            if ok:
                fields["status"] = "exact" if fields["method"] == "closed_form" else "optimal"
            else:
                fields["status"] = {"max_iter": "max_iter", "inaccurate": "inaccurate"}.get(old, "solver_failed")
        fields["objective"] = fields.pop("loss")     # schemas 1 and 2 called the objective value "loss"
        return fields

    @classmethod
    def unsolved(cls, problem, method: str, status, message: str, **meta) -> "Solution":
        """The answer of a method that has none: ``W, H, Z`` of the problem's shapes filled with NaN.

        Parameters
        ----------
        problem : object
            The problem (its ``K``, ``d``, ``N`` and ``as_dict()`` are used).
        method : str
            The method that was asked.
        status : Status or str
            Why there is no answer (``no_method``, ``solver_failed``, ...).
        message : str
            The details.
        **meta
            Added to ``meta``.

        Returns
        -------
        Solution
            With ``success=False`` and ``objective = nan``.
        """
        K, d, N = problem.K, problem.d, problem.N
        return cls(W=np.full((K, d), np.nan), H=np.full((d, N), np.nan), b=None, Z=np.full((K, N), np.nan),
                   objective=math.nan, method=method, status=status, message=message,
                   meta={"problem": problem.as_dict(), **meta})

    @property
    def gram_H(self) -> np.ndarray:
        """Feature Gram ``H^T H`` (N x N)."""
        return self.H.T @ self.H

    @property
    def gram_W(self) -> np.ndarray:
        """Classifier Gram ``W W^T`` (K x K)."""
        return self.W @ self.W.T

    def __repr__(self) -> str:
        return (f"Solution(method={self.method!r}, status={self.status!r}, regime={self.regime!r}, "
                f"success={self.success}, objective={self.objective:.10g}, W{self.W.shape}, H{self.H.shape})")


class _FrozenDict(dict):
    """A dict that refuses changes (results are immutable)."""

    def _refuse(self, *args, **kwargs):
        raise TypeError("results are frozen; copy the dict to change it.")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self):
        return (_FrozenDict, (dict(self),))


@dataclass(frozen=True, eq=False)
class Trajectory(Result):
    """A recorded simulation: what :func:`ufm.simulate` returns.

    Attributes
    ----------
    steps : int array (T,)
        The recorded steps, always including 0 and the last step reached.
    times : float array (T,)
        Gradient-flow time of each record: ``steps * lr`` (GD with step ``lr``
        approximates the flow at ``t = k lr``; in flow mode these are the exact times).
    records : dict of name -> array (seeds, T, ...)
        One array per recorded quantity (``"objective"``, ``"W"``, ``"gram_H"``,
        metric names, ...); also reachable as attributes: ``traj.objective``.
    success : bool
        Whether the run completed (``status`` is ``completed``).
    status : Status
        ``completed``, ``interrupted`` (Ctrl-C), ``nonfinite`` (a state
        overflowed; the records before it are kept) or ``max_steps`` (the
        flow integrator hit its step budget).
    message : str
        What happened, in words.
    nit, nfev : int
        The last step reached (GD steps taken; in flow mode the step of the last
        record) and the gradient evaluations per seed (``nit`` for GD, the
        integrator's count in flow mode).
    mode : str
        ``"gd"`` (plain gradient descent) or ``"flow"`` (adaptive integration
        of the gradient flow; ``meta["time_variable"]`` says ``"t"`` or ``"log(1+t)"``).
    meta : dict
        Problem, lr, seeds, init, dtype, versions, integrator statistics, content hash.
    """

    steps: np.ndarray
    times: np.ndarray
    records: dict
    mode: str
    meta: dict = field(default_factory=dict)
    citation: str = ""

    _ARRAYS: ClassVar[tuple[str, ...]] = ("steps", "times")
    _INT_ARRAYS: ClassVar[tuple[str, ...]] = ("steps",)
    _DICTS: ClassVar[tuple[str, ...]] = ("records",)
    _LOOKUP: ClassVar[tuple[tuple[str, str], ...]] = (("records", "record"),)
    _RENAMED: ClassVar[dict[str, str]] = {
        "loss": "the full objective (halved weight decays) is recorded as 'objective'"}

    @property
    def n_seeds(self) -> int:
        return next(iter(self.records.values())).shape[0] if self.records else 0

    @property
    def nit(self) -> int:
        """The last step reached (GD steps taken; in flow mode the step of the last record)."""
        return int(self.steps[-1]) if len(self.steps) else 0

    @property
    def nfev(self) -> int:
        """Gradient evaluations per seed: one per GD step; in flow mode the integrator's (the most over the seeds)."""
        if self.mode == "flow" and self.meta.get("nfev"):
            return int(max(self.meta["nfev"]))
        return self.nit

    @classmethod
    def _upgrade(cls, fields: dict, schema: int) -> dict:
        fields.pop("success", None)
        records = fields["records"]     # schemas 1 and 2 recorded the full objective as "loss"
        fields["records"] = {("objective" if k == "loss" else k): v for k, v in records.items()}
        return fields

    def __repr__(self) -> str:
        return (f"Trajectory(mode={self.mode!r}, status={self.status!r}, records={sorted(self.records)}, "
                f"seeds={self.n_seeds}, T={len(self.steps)}, last step={int(self.steps[-1])})")


@dataclass(frozen=True, eq=False)
class TheoryCurve(Result):
    """A predicted curve on a time grid: what :mod:`ufm.dynamics` returns.

    Attributes
    ----------
    times : float array (T,)
        Gradient-flow times, in the convention of :func:`ufm.simulate`
        (``t = steps * lr``, mean losses), so ``dynamics.*(problem, traj.times)``
        lines up with a :class:`Trajectory`.
    records : dict of name -> array (T, ...)
        One array per predicted quantity (no seed axis), e.g. ``"z"`` (mode
        outputs), ``"gram_H"``, ``"semantic_gap"``, ``"etf_distance"``, ``"p"``;
        also reachable as attributes: ``curve.semantic_gap``.
    kind : str
        ``"modes"``, ``"semantic"`` or ``"symmetric_flow"``.
    constants : dict of name -> array
        Time-independent arrays of the prediction (singular values ``"d"``,
        modes ``"Q"``, ``"z0"``, ``"peak_gram"``, ``"end_gram"``, ...); also
        reachable as attributes.
    peak_time, peak_value, transition_time : float or None
        For ``kind="semantic"``: time and value of the semantic-gap maximum,
        and the first time after it at which the Gram is closer to the end
        state than to the peak (``None`` when not reached or not defined).
    success, status, message :
        As in every result; a curve that could be computed is ``completed``.
    meta : dict
        Problem, model and approximation used, initialization, versions, content hash.
    """

    times: np.ndarray
    records: dict
    kind: str
    constants: dict = field(default_factory=dict)
    peak_time: float | None = None
    peak_value: float | None = None
    transition_time: float | None = None
    meta: dict = field(default_factory=dict)
    citation: str = ""

    _ARRAYS: ClassVar[tuple[str, ...]] = ("times",)
    _DICTS: ClassVar[tuple[str, ...]] = ("records", "constants")
    _LOOKUP: ClassVar[tuple[tuple[str, str], ...]] = (("records", "record"), ("constants", "constant"))
    _RENAMED: ClassVar[dict[str, str]] = {"loss": "the objective value is recorded as 'objective'"}

    @classmethod
    def _upgrade(cls, fields: dict, schema: int) -> dict:
        records = fields["records"]     # schemas 1 and 2 recorded the objective value as "loss"
        fields["records"] = {("objective" if k == "loss" else k): v for k, v in records.items()}
        return fields

    def __repr__(self) -> str:
        extra = "" if self.peak_time is None else f", peak_time={self.peak_time:.6g}"
        extra += "" if self.transition_time is None else f", transition_time={self.transition_time:.6g}"
        return f"TheoryCurve(kind={self.kind!r}, records={sorted(self.records)}, T={len(self.times)}{extra})"


@dataclass(frozen=True, eq=False)
class PhasePoint(Result):
    """One point of the structure-before-collapse phase diagram: what :func:`ufm.phase.phase_point` returns.

    Attributes
    ----------
    gap_init, peak_gap, peak_time : float
        Semantic gap at ``t = 0`` and at its maximum, and the time of the maximum (theory).
    transition_time : float
        First time the Gram is closer to the end state than to the peak (theory; ``nan`` when not reached).
    end_gap, end_etf_distance : float
        Semantic gap and ETF distance of the exact end state.
    end_method : str
        The method that gave the end state.
    rises : bool
        ``peak_gap > 1.5 gap_init`` and ``peak_gap > 1.5 end_gap``.
    sim_peak_gap, sim_peak_time, sim_end_gap, sim_end_etf_distance, sim_horizon : float or None
        The simulated gradient flow's numbers (``None`` without ``simulate=True``).
    success, status, message :
        ``completed``, or the status of the end-state solve or of the simulation when one did not succeed.
    meta : dict
        The point's parameters, versions and content hash.
    """

    gap_init: float
    peak_gap: float
    peak_time: float
    transition_time: float
    end_gap: float
    end_etf_distance: float
    end_method: str
    rises: bool
    sim_peak_gap: float | None = None
    sim_peak_time: float | None = None
    sim_end_gap: float | None = None
    sim_end_etf_distance: float | None = None
    sim_horizon: float | None = None
    meta: dict = field(default_factory=dict)
    citation: str = "THEORY §8.2 (input-coupled UFM), Appendix C"

    def __repr__(self) -> str:
        return (f"PhasePoint(status={self.status!r}, peak_gap={self.peak_gap:.4g}, peak_time={self.peak_time:.4g}, "
                f"end_gap={self.end_gap:.4g}, end_etf_distance={self.end_etf_distance:.4g}, rises={self.rises})")


@dataclass(frozen=True, eq=False)
class TransientModels(Result):
    """The semantic transient of several models side by side: what :func:`ufm.phase.transient_models` returns.

    Attributes
    ----------
    times, semantic_gap, etf_distance : dict of model name -> 1-D array
        Each model's time grid and curves (item Gram for simulated models, logit Gram for a kernel flow).
    runs : dict of model name -> Trajectory or TheoryCurve
        The results behind the curves (not saved by ``save``).
    success, status, message :
        ``completed``, or the status of the first model whose run did not succeed.
    meta : dict
        Parameters, versions and content hash.
    """

    times: dict
    semantic_gap: dict
    etf_distance: dict
    runs: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    citation: str = "THEORY §8.1-8.3"

    _DICTS: ClassVar[tuple[str, ...]] = ("times", "semantic_gap", "etf_distance")
    _UNSAVED: ClassVar[tuple[str, ...]] = ("runs",)

    @property
    def models(self) -> tuple:
        """The model names, in order."""
        return tuple(self.times)

    def __repr__(self) -> str:
        return f"TransientModels(status={self.status!r}, models={list(self.models)})"


# -- sweeps ----------------------------------------------------------------------------
def record_value(value, name: str = "value"):
    """A record entry in its stored form: a JSON scalar, a tuple of them, or a read-only array.

    numpy scalars become Python numbers, lists and tuples of scalars become
    tuples (so a record compares equal after a save/load round trip), and
    arrays are copied and made read-only. Anything else is refused.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, (list, tuple)):
        if all(v is None or isinstance(v, (bool, str, int, float, np.generic, list, tuple)) for v in value):
            return tuple(record_value(v, name) for v in value)
        value = np.asarray(value)
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise ValueError(f"{name}: arrays of Python objects cannot be stored without pickles; "
                             "store numbers, strings or booleans.")
        if value.ndim == 0:
            return record_value(value.item(), name)
        arr = np.array(value)
        arr.setflags(write=False)
        return arr
    raise ValueError(f"{name}: cannot store a {type(value).__name__} in a record; use a number, string, boolean, "
                     "None, a list of those, or a numpy array.")


def _from_json(value):
    """Undo the JSON encoding of a record value (lists back to tuples)."""
    if isinstance(value, list):
        return tuple(_from_json(v) for v in value)
    return value


def pack_records(records, prefix: str = "records"):
    """Split records into JSON rows (arrays replaced by ``{"__array__": name}``) and a dict of arrays."""
    rows, arrays = [], {}
    for i, rec in enumerate(records):
        row = {}
        for j, (key, value) in enumerate(rec.items()):
            if isinstance(value, np.ndarray):
                name = f"{prefix}/{i}/{j}"
                arrays[name] = value
                row[key] = {"__array__": name}
            else:
                row[key] = jsonable(value)
        rows.append(row)
    return rows, arrays


def unpack_records(rows, data) -> list:
    """Inverse of :func:`pack_records`; ``data`` maps array names to arrays (e.g. an open ``.npz``)."""
    out = []
    for row in rows:
        rec = {}
        for key, value in row.items():
            if isinstance(value, dict) and "__array__" in value:
                rec[key] = np.array(data[value["__array__"]])
            else:
                rec[key] = _from_json(value)
        out.append(rec)
    return out


def _hash_records(rows, arrays, h=None):
    h = hashlib.sha256() if h is None else h
    h.update(json.dumps(rows, sort_keys=True).encode())
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{arr.dtype.str}|{arr.shape}".encode())
        h.update(arr.tobytes())
    return h


class _FrozenList(list):
    """A list that refuses changes (results are immutable)."""

    def _refuse(self, *args, **kwargs):
        raise TypeError("results are frozen; copy the list to change it.")

    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = extend = insert = pop = remove = clear = sort = reverse = _refuse

    def __reduce__(self):
        return (_FrozenList, (list(self),))


def distinct_values(records, name: str) -> list:
    """The distinct values of ``name`` over ``records`` (sweep records or grid points), in first-seen order.

    Parameters
    ----------
    records : iterable of dict
        Records (or grid points); those without ``name`` are skipped.
    name : str
        A grid parameter.

    Returns
    -------
    list
        Each value once (values are compared by their canonical form, so ``1`` and ``1.0`` differ, arrays
        compare by content).
    """
    seen = {}
    for record in records:
        if name in record:
            seen.setdefault(canonical_json(record[name], name), record[name])
    return list(seen.values())


@dataclass(frozen=True, eq=False)
class SweepResult(Result):
    """Tidy results of :func:`ufm.sweep`: one record per (grid point, seed), in grid order.

    Attributes
    ----------
    records : list of dict
        One dict per finished run (read-only), in grid order with the seeds of a
        point next to each other. Keys: the grid parameters, ``seed_index``,
        ``seed`` (the integer the task was given), ``ok``, ``error`` (``None`` when
        ``ok``, else ``"Type: message"``), then what the task returned
        (see :func:`ufm.sweep`). Values are Python scalars, tuples or read-only arrays.
    task : str
        The task that ran, ``"module:function"``.
    axes : tuple of str
        The grid parameters, in grid order.
    seeds : int
        Seeds per grid point.
    success : bool
        Whether every run finished and none failed (``status`` is ``completed``).
    status : Status
        ``completed`` (every run has a record and none failed), ``runs_failed``
        (every run has a record, some failed) or ``interrupted`` (Ctrl-C; the
        finished runs are kept, and a rerun with the same ``cache_dir`` computes
        only the missing ones).
    message : str
        What happened, with the number of failed runs and their errors.
    meta : dict
        Backend, seeds, fixed arguments, counts (``n_runs``, ``n_cached``,
        ``n_computed``, ``n_failed``), ``errors`` (message -> count), the first
        ``tracebacks``, ``elapsed`` seconds, versions, ``records_hash`` (a SHA-256
        over the records only: equal records give equal hashes whatever the
        backend) and ``content_hash``.
    """

    records: list
    task: str
    axes: tuple
    seeds: int
    meta: dict = field(default_factory=dict)
    citation: str = ""

    def __post_init__(self):
        frozen = _FrozenList(
            _FrozenDict({str(k): record_value(v, f"records[{i}][{k!r}]") for k, v in rec.items()})
            for i, rec in enumerate(self.records))
        object.__setattr__(self, "records", frozen)
        object.__setattr__(self, "axes", tuple(self.axes))
        rows, arrays = pack_records(frozen)
        meta = _Meta.entries(self.meta)
        meta["records_hash"] = _hash_records(rows, arrays).hexdigest()
        object.__setattr__(self, "meta", meta)
        super().__post_init__()

    def axis_values(self, name: str) -> list:
        """The values grid parameter ``name`` takes over the records, in grid order.

        Parameters
        ----------
        name : str
            A grid parameter (one of :attr:`axes`).

        Returns
        -------
        list
            Each value once (see :func:`distinct_values`).
        """
        if name not in self.axes:
            raise ValueError(f"{name!r} is not a grid parameter of this sweep; axes: {list(self.axes)}.")
        return distinct_values(self.records, name)

    def _scalars(self) -> dict:
        return {"task": self.task, "axes": list(self.axes), "seeds": self.seeds, "status": self.status.name,
                "message": self.message, "citation": self.citation}

    @classmethod
    def _upgrade(cls, fields: dict, schema: int) -> dict:
        if schema == 1 and fields["status"] == "completed" and not all(r["ok"] for r in fields["records"]):
            fields["status"] = "runs_failed"
        return fields

    def _feed_arrays(self):
        records = self.records           # packed when the hash is read, not at construction

        def feed(h):
            _hash_records(*pack_records(records), h)
        return feed

    def save(self, path: str | os.PathLike) -> str:
        """Write the sweep to ``path`` (``.npz``, no pickles), whole or not at all (as :meth:`Result.save`).

        Parameters
        ----------
        path : str or path-like
            The file; ``.npz`` is appended when missing (checked as in :func:`check_save_path`).

        Returns
        -------
        str
            The path written.
        """
        path = check_save_path(path)
        rows, arrays = pack_records(self.records)
        header = {"schema": _SCHEMA, "type": type(self).__name__, "scalars": self._scalars(),
                  "records": rows, "meta": self.meta}
        return _write_result(path, header, arrays)

    @classmethod
    def _fields_from_file(cls, header, data) -> dict:
        return {**header["scalars"], "records": unpack_records(header["records"], data)}

    # -- views ----------------------------------------------------------------------
    @property
    def n_failed(self) -> int:
        """Number of runs whose task raised (or whose worker died too often)."""
        return sum(1 for r in self.records if not r["ok"])

    @property
    def failed(self) -> list:
        """The records of the failed runs."""
        return [r for r in self.records if not r["ok"]]

    def column(self, name: str, *, ok_only: bool = False) -> np.ndarray:
        """Values of one key across records (``NaN`` where a record lacks it, e.g. failed runs).

        Parameters
        ----------
        name : str
            The record key (a grid parameter or a task output).
        ok_only : bool
            Keep only the runs that finished without error.

        Returns
        -------
        ndarray
            One entry per record, in grid order: a float array for numbers, an object
            array otherwise.
        """
        rows = [r for r in self.records if r["ok"] or not ok_only]
        if not any(name in r for r in rows):
            known = sorted({k for r in self.records for k in r})
            raise ValueError(f"no record has {name!r}; keys: {known}.")
        values = [r.get(name, np.nan) for r in rows]
        if all(isinstance(v, (int, float, bool)) and not isinstance(v, np.ndarray) for v in values):
            return np.array(values, dtype=np.float64)
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out

    def to_pandas(self):
        """The records as a ``pandas.DataFrame`` (one row per run; array values stay arrays).

        pandas is optional: ``pip install pandas``.
        """
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("SweepResult.to_pandas needs pandas: pip install pandas "
                              "(or use result.records, a list of dicts).") from None
        return pd.DataFrame([dict(r) for r in self.records])

    def summary(self) -> str:
        """The message, with the most common errors (up to 5)."""
        lines = [self.message]
        for err, count in list(self.meta.get("errors", {}).items())[:5]:
            lines.append(f"  {count} x {err}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"SweepResult(task={self.task!r}, status={self.status!r}, records={len(self.records)}, "
                f"axes={list(self.axes)}, seeds={self.seeds}, failed={self.n_failed})")


# -- observed runs (the bridge format) ----------------------------------------------------
RUN_SCHEMA = 1   # version of the bridge format (the fields of Run); load refuses other versions


def _run_error(field_name: str, problem: str, fix: str):
    return ValueError(f"bridge run field {field_name!r}: {problem}; {fix}.")


def run_array(name: str, value, *, integer: bool = False, ndim: int | None = None) -> np.ndarray:
    """``value`` checked as the Run field ``name`` (finite numbers, ``ndim`` axes), as float64 or int64.

    Parameters
    ----------
    name : str
        The field, for the ValueError.
    value : array-like
        Its data.
    integer : bool
        An integer field (int64).
    ndim : int, optional
        The number of axes it must have.

    Returns
    -------
    ndarray
        The checked array.
    """
    try:
        arr = np.asarray(value)
    except Exception as err:  # ragged lists, objects
        raise _run_error(name, f"cannot be read as an array ({err})", "pass a numeric array") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise _run_error(name, f"has dtype {arr.dtype}", "pass numbers")
    if np.iscomplexobj(arr):
        raise _run_error(name, "is complex", "pass real numbers")
    if ndim is not None and arr.ndim != ndim:
        raise _run_error(name, f"has {arr.ndim} dimensions (shape {arr.shape}), expected {ndim}",
                         "check the array's layout in the file")
    if integer:
        if np.issubdtype(arr.dtype, np.floating):
            if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
                raise _run_error(name, "holds non-integer values", "pass integers")
        return arr.astype(np.int64)
    arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise _run_error(name, f"holds {int(bad.sum())} NaN/inf entries (first at index {idx})",
                         "record finite values only (a diverged run cannot be fitted)")
    return arr


@dataclass(frozen=True, eq=False)
class Run(_Frozen):
    """Features of a trained network (or any model) recorded over training: the bridge format.

    One record per entry of ``steps``. The classes are the columns of the Gram
    matrices, in the order of ``labels``; for the synthetic settings of
    :mod:`ufm.settings` class ``k`` is item ``k`` (distinct labels).
    Every field is validated on construction (so also on load): a failure is
    a ``ValueError`` naming the field and the fix.

    Attributes
    ----------
    steps : int array (T,)
        Training steps of the records, strictly increasing, ``>= 0``.
    grams : float array (T, K, K)
        Class-mean Gram ``G_t = M_t^T M_t`` of the penultimate features, with
        ``M_t`` (d x K) the class means (uncentred, unnormalized: fitting
        centres and normalizes, THEORY §8.6). Symmetric PSD (checked to a
        relative tolerance ``1e-6`` of the largest diagonal entry).
    labels : int array (K,)
        The label id of each class (distinct), e.g. the next-token id.
    counts : int array (K,)
        Examples per class (``>= 1``) the means were taken over.
    attributes : int array (K, F) or None
        Latent attribute table of the classes (THEORY §7.4): ``attributes[k, f]``
        is the level of factor ``f`` for class ``k``; needed by the semantic
        metrics and the fit (or pass a ``setting`` there).
    means : float array (T, d, K) or None
        Class means ``M_t`` (optional; ``grams`` must equal ``M_t^T M_t``).
    W : float array (T, K, d) or None
        Classifier (last linear layer) at each record (optional).
    within : float array (T, K) or None
        Within-class trace: mean over the class's examples of
        ``||h_i - mu_k||^2`` (0 for a class with one example).
    loss : float array (T,) or None
        Training loss at each record (the network's own loss convention).
    name : str
        A short description of the run.
    meta : dict
        How the run was made (setting, network, optimizer, seed, ...),
        ``"schema"`` (the bridge format version, :data:`RUN_SCHEMA`), versions
        and ``content_hash``.

    References
    ----------
    THEORY.md §7 (metrics on Grams), §8.6 (Gram-matrix bridge).
    """

    steps: np.ndarray
    grams: np.ndarray
    labels: np.ndarray
    counts: np.ndarray
    attributes: np.ndarray | None = None
    means: np.ndarray | None = None
    W: np.ndarray | None = None
    within: np.ndarray | None = None
    loss: np.ndarray | None = None
    name: str = ""
    meta: dict = field(default_factory=dict)
    citation: str = "THEORY.md §8.6 (Gram-matrix bridge)"

    _ARRAYS: ClassVar[tuple[str, ...]] = ("steps", "grams", "labels", "counts", "attributes", "means", "W",
                                          "within", "loss")
    _INT_ARRAYS: ClassVar[tuple[str, ...]] = ("steps", "labels", "counts", "attributes")

    def __post_init__(self):
        self._validate()
        meta = _Meta.entries(self.meta)
        schema = meta.setdefault("schema", RUN_SCHEMA)
        if schema != RUN_SCHEMA:
            raise _run_error("schema", f"is {schema!r}, this ufm reads version {RUN_SCHEMA}",
                             "convert the file with the ufm version that wrote it")
        object.__setattr__(self, "meta", meta)
        super().__post_init__()

    def _validate(self):
        steps = run_array("steps", self.steps, integer=True, ndim=1)
        T = len(steps)
        if T < 1:
            raise _run_error("steps", "is empty", "record at least one step")
        if np.any(steps < 0) or np.any(np.diff(steps) <= 0):
            raise _run_error("steps", f"must be >= 0 and strictly increasing, got {steps[:8].tolist()}...",
                             "sort the records by step and drop repeats")
        grams = run_array("grams", self.grams, ndim=3)
        if grams.shape[0] != T or grams.shape[1] != grams.shape[2]:
            raise _run_error("grams", f"has shape {grams.shape}, expected (T, K, K) with T = len(steps) = {T}",
                             "store one square class-mean Gram per recorded step")
        K = grams.shape[1]
        if K < 2:
            raise _run_error("grams", f"has K = {K} classes", "record at least 2 classes")
        scale = max(float(np.max(np.abs(np.diagonal(grams, axis1=1, axis2=2)))), 1e-300)
        asym = float(np.max(np.abs(grams - np.swapaxes(grams, 1, 2))))
        if asym > 1e-8 * scale:
            raise _run_error("grams", f"is not symmetric (max |G - G^T| = {asym:.3g}, scale {scale:.3g})",
                             "store G = M^T M of the class means M")
        sym = 0.5 * (grams + np.swapaxes(grams, 1, 2))
        low = np.linalg.eigvalsh(sym)[:, 0]
        t_bad = int(np.argmin(low))
        if low[t_bad] < -1e-6 * scale:
            raise _run_error("grams", f"is not positive semidefinite (eigenvalue {low[t_bad]:.3g} at record "
                             f"{t_bad}, step {int(steps[t_bad])}; scale {scale:.3g})",
                             "store G = M^T M of the class means M, not a centred or distance matrix")
        labels = run_array("labels", self.labels, integer=True, ndim=1)
        if labels.shape != (K,) or len(np.unique(labels)) != K:
            raise _run_error("labels", f"must hold K = {K} distinct label ids, got shape {labels.shape} with "
                             f"{len(np.unique(labels))} distinct", "give one label id per Gram row")
        counts = run_array("counts", self.counts, integer=True, ndim=1)
        if counts.shape != (K,) or np.any(counts < 1):
            raise _run_error("counts", f"must be K = {K} counts >= 1, got {counts.tolist()[:8]}",
                             "count the examples behind each class mean")
        if self.attributes is not None:
            A = run_array("attributes", self.attributes, integer=True, ndim=2)
            if A.shape[0] != K or np.any(A < 0):
                raise _run_error("attributes", f"must be a (K = {K}, F) table of levels >= 0, got shape {A.shape}",
                                 "give one row of factor levels per class, in label order")
        d = None
        if self.means is not None:
            M = run_array("means", self.means, ndim=3)
            if M.shape[0] != T or M.shape[2] != K:
                raise _run_error("means", f"has shape {M.shape}, expected (T = {T}, d, K = {K})",
                                 "store the class means as columns")
            d = M.shape[1]
            G = np.einsum("tdk,tdl->tkl", M, M)
            err = float(np.max(np.abs(G - grams)))
            if err > 1e-6 * max(scale, 1.0):
                raise _run_error("grams", f"differs from means^T means by {err:.3g}",
                                 "store grams computed from the stored means")
        if self.W is not None:
            W = run_array("W", self.W, ndim=3)
            if W.shape[0] != T or W.shape[1] != K or (d is not None and W.shape[2] != d):
                raise _run_error("W", f"has shape {W.shape}, expected (T = {T}, K = {K}, d"
                                 + (f" = {d})" if d is not None else ")"), "store the classifier rows in label order")
        if self.within is not None:
            V = run_array("within", self.within, ndim=2)
            if V.shape != (T, K) or np.any(V < 0):
                raise _run_error("within", f"must be (T = {T}, K = {K}) traces >= 0, got shape {V.shape}",
                                 "store the mean squared distance to the class mean per class")
        if self.loss is not None:
            loss = run_array("loss", self.loss, ndim=1)
            if loss.shape != (T,):
                raise _run_error("loss", f"has shape {loss.shape}, expected (T = {T},)", "store one loss per record")

    @property
    def T(self) -> int:
        return len(self.steps)

    @property
    def K(self) -> int:
        return self.grams.shape[1]

    def __repr__(self) -> str:
        extra = [n for n in ("attributes", "means", "W", "within", "loss") if getattr(self, n) is not None]
        return (f"Run(name={self.name!r}, T={self.T}, K={self.K}, steps {int(self.steps[0])}..{int(self.steps[-1])}, "
                f"with {extra})")


# -- a Run as a file: what ufm.bridge.io writes to safetensors and HDF5 as Run.save does to .npz ------
#: Array fields of :class:`Run`, in order, and those that hold integers.
RUN_ARRAYS = Run._ARRAYS
RUN_INT_ARRAYS = Run._INT_ARRAYS


def run_file(run: Run) -> tuple[dict, dict]:
    """The JSON header and the arrays of ``run`` as :meth:`Run.save` writes them.

    Parameters
    ----------
    run : Run
        The run.

    Returns
    -------
    header : dict
        ``schema`` (the file layout version), ``type``, ``scalars``, ``meta``.
    arrays : dict
        Field name -> array, for the fields that are not ``None``.
    """
    header = {"schema": _SCHEMA, "type": "Run", "scalars": jsonable(run._scalars()), "meta": run.meta}
    return header, run._all_arrays()


def check_run_file(header: dict) -> str | None:
    """What is wrong with the header of a Run file (``None``: nothing): ``"'field' problem; fix"``.

    Parameters
    ----------
    header : dict
        The file's JSON header.

    Returns
    -------
    str or None
        The problem, or ``None`` for a Run file of the layout this ufm writes.
    """
    kind = header.get("type")
    if kind != "Run":
        if kind in _TYPES:
            return (f"'type' is {kind!r}: the file holds a ufm {kind}, not a bridge Run; read it with "
                    "ufm.results.load, or pass a file written by Exporter.save / save_run")
        return (f"'type' is the unknown result type {kind!r} (expected 'Run'); pass a file written by "
                "Exporter.save / save_run")
    if header.get("schema") not in range(1, _SCHEMA + 1):     # a Run reads the same in every schema
        return (f"'schema' is {header.get('schema')!r}, this ufm reads file schemas 1 to {_SCHEMA}; convert the "
                "file with the ufm version that wrote it")
    return None


@dataclass(frozen=True, eq=False)
class FitResult(Result):
    """UFM models fitted to observed Gram trajectories: what :func:`ufm.fit` returns (THEORY §8.6).

    Attributes
    ----------
    params : dict
        Fitted values (JSON-friendly, read-only). ``"model"`` names the *quoted*
        M2-family model (the best accepted one, else the best fitted one) whose
        values follow: ``"sigma"``, ``"strengths"``, ``"lam"``, ``"init_scale"``,
        and for a declared clock ``"time_scale"``, ``"time_exponent"``
        (``tau = time_scale * step^time_exponent``) and ``"gram_scale"``
        (``"engine"``, ``"start"``, ``"kernel"``, ``"simulations"``, ``"clock"``
        say how it was simulated); ``"beta_start"``, ``"beta_end"`` (anchored
        M1), ``"a_end"``, ``"b_end"`` and their ``*_ci`` intervals,
        ``"ratio_end"`` (static decomposition at the last record),
        ``"outside_patterns"`` and ``"outside_patterns_change"`` (share of the
        unit Grams, and of their change over training, that no attribute model
        can produce).
    intervals : dict
        The quoted model's fitted parameters -> ``[low, high]`` at the fit's
        ``level`` (``"strengths"``: a list of pairs, ``None`` for a block held
        at 1); empty without a bootstrap. ``estimates[model]["interval_method"]``
        names the method.
    identifiable : dict
        Same keys: False where the records cannot pin the parameter down (its
        interval is then the flat range, clipped to the search box).
    estimates : dict
        Each fitted M2-family model -> ``{"params", "intervals", "identifiable",
        "interval_method", "clock", "engine", "start", "kernel", "simulations",
        "cost", "weights", "time_maps", "bootstrap"}`` (intervals only for the
        quoted model).
    gof : dict
        Model name -> ``{"gap_r2", "gap_rmse", "etf_r2", "etf_rmse", "gram_r2"
        (matched representation), "gram_r2_patterns", "gram_r2_full",
        "gram_distance", "n_params", "n_data", "explains", "accepted"}``
        (``"saturated"`` for the static model). See :mod:`ufm.bridge.fitting`.
    steps : float array (T,)
        The observed clock (training steps, or flow times for a Trajectory).
    curves : dict of name -> array
        Observed and fitted curves over the records (``"observed_gap"``,
        ``"observed_etf_distance"``, ``"outside_patterns"``,
        ``"observed_nc1_trace_ratio"`` and ``"observed_cdnv"`` when the run
        kept within-class traces, ``"<model>_gap"``,
        ``"<model>_etf_distance"``, ``"time_map"``, ``"beta_path"``, static
        coefficients and intervals, the model's own ``"model_times"`` /
        ``"model_gap"`` / ``"model_etf_distance"``).
    grams : dict of name -> array (T, K, K)
        Centred, unit-norm Grams: ``"observed"``, ``"observed_patterns"`` and
        each fitted model's at the aligned times.
    best_model : str or None
        The accepted dynamical model with the highest Gram R^2; ``None`` when
        no model meets the minimum quality (``ufm.bridge.fitting.ACCEPT``).
    predicted_transition : float or None
        ``transitions["predicted"]["transition"]["step"]``: the step at which
        the accepted model's Gram turns towards its end state; ``None`` when no
        model is accepted or it is not determined (the entry says why).
    transitions : dict
        ``"observed"`` and ``"predicted"``, each with ``"peak"`` (the gap's
        peak), ``"transition"`` (the Gram's turn towards the end state) and
        ``"collapse"`` (the first record with ETF distance at most the fit's
        ``collapse``): ``{"step", "reason"}``, and for a prediction ``"low"``,
        ``"high"`` (its interval). Only an accepted model predicts.
    verdict : str
        One line: what the models explain and what nothing here explains.
    success, status : bool, Status
        A fit that ran to the end is ``completed`` (whether a model explains the
        run is ``best_model`` and ``gof``, not a failure); ``interrupted`` after
        Ctrl-C (the parameters are the best found before it).
    message : str
        The fit table in words.
    meta : dict
        Source, options, timing, notes, versions, content hash.
    """

    params: dict
    gof: dict
    steps: np.ndarray
    curves: dict
    grams: dict
    best_model: str | None
    predicted_transition: float | None = None
    transitions: dict = field(default_factory=dict)
    verdict: str = ""
    intervals: dict = field(default_factory=dict)
    identifiable: dict = field(default_factory=dict)
    estimates: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    citation: str = "THEORY.md §8.6 (Gram-matrix bridge), §8.1 (M1), §8.2 (M2)"

    _ARRAYS: ClassVar[tuple[str, ...]] = ("steps",)
    _DICTS: ClassVar[tuple[str, ...]] = ("curves", "grams")
    _LOOKUP: ClassVar[tuple[tuple[str, str], ...]] = (("curves", "curve"),)

    def __post_init__(self):
        object.__setattr__(self, "params", _FrozenDict(jsonable(dict(self.params))))
        object.__setattr__(self, "gof", _FrozenDict({k: _FrozenDict(jsonable(dict(v)))
                                                     for k, v in dict(self.gof).items()}))
        object.__setattr__(self, "transitions", _FrozenDict({k: _FrozenDict(jsonable(dict(v)))
                                                             for k, v in dict(self.transitions).items()}))
        for name in ("intervals", "identifiable", "estimates"):
            object.__setattr__(self, name, _FrozenDict(jsonable(dict(getattr(self, name)))))
        super().__post_init__()

    @property
    def forecast(self) -> dict:
        """The predicted gap peak and collapse: ``{"peak": (step, low, high) or None, "collapse": ...,
        "reason": {"peak": str, "collapse": str}, "until": step or None}``.

        Read from ``transitions["predicted"]`` (one value per quantity); with ``fit(until=STEP)`` the model
        saw only the records up to STEP. ``low``/``high`` are ``None`` without a bootstrap."""
        pred = self.transitions.get("predicted", {})
        out = {"reason": {}, "until": self.meta.get("until")}
        for k in ("peak", "collapse"):
            e = pred.get(k) or {}
            out[k] = None if e.get("step") is None else (e["step"], e.get("low"), e.get("high"))
            out["reason"][k] = e.get("reason", "not fitted")
        return out

    def __str__(self) -> str:
        return self.message[len(self.status.message):].strip() if self.success else self.message

    def __repr__(self) -> str:
        sig = self.params.get("sigma")
        extra = "" if sig is None else f", sigma={sig:.4g}"
        return f"FitResult(best_model={self.best_model!r}{extra}, models={sorted(self.gof)}, T={len(self.steps)})"


_TYPES = {"Solution": Solution, "Trajectory": Trajectory, "TheoryCurve": TheoryCurve, "SweepResult": SweepResult,
          "Run": Run, "FitResult": FitResult, "PhasePoint": PhasePoint, "TransientModels": TransientModels}


def load(path: str | os.PathLike):
    """Load a result written by ``save``; checks the schema and the content hash.

    Parameters
    ----------
    path : str or path-like
        A ``.npz`` file written by a result's ``save``.

    Returns
    -------
    Solution, Trajectory, TheoryCurve, SweepResult, Run or FitResult
        The result, of the type that was saved. A file of an older format is
        checked against its stored hash and upgraded: schema 1 (before ``regime``
        and :class:`Status`): a Solution's old ``status`` becomes its ``regime``
        (or its status, when it named how a solver stopped); schemas 1 and 2: the
        objective value called ``loss`` (a Solution field, a Trajectory record)
        becomes ``objective``.

    Raises
    ------
    ValueError
        ``"<path> does not exist"``, or ``"<path> is not a readable ufm result file
        (...)"`` with the reason: a truncated or corrupted file (whatever part a
        flipped byte hit: the zip directory, a compressed entry, the header), a file
        of another program, an unknown result type or schema, a header without its
        ``content_hash`` (every file ufm writes has one, so a missing hash means an
        edited file) or a hash that does not match the content. Edited data is
        never returned.
    """
    if not os.path.exists(path):
        raise ValueError(f"{path} does not exist.")
    try:
        return _load(path)
    except _Unreadable as err:
        raise ValueError(f"{path} is not a readable ufm result file: {err}") from None
    except MemoryError:
        raise
    except Exception as err:  # noqa: BLE001 - zipfile, zlib, numpy and json raise many types on a damaged file
        raise ValueError(f"{path} is not a readable ufm result file ({type(err).__name__}: {err}); it is truncated, "
                         f"corrupted or not an .npz written by ufm.") from None


class _Unreadable(Exception):
    """Why :func:`load` refuses a file that it could read (the message follows ``"<path> is not a readable ..."``)."""


def _load(path):
    """:func:`load` once the file exists: any exception means the file cannot be read as a ufm result."""
    data = np.load(path, allow_pickle=False)
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise _Unreadable("it holds a single array, not a ufm result (.npz with a __header__).")
    with data:
        if "__header__" not in data:
            raise _Unreadable("no __header__ entry; it is not an .npz written by ufm.")
        header = json.loads(str(data["__header__"]))
        cls = _TYPES.get(header.get("type"))
        if cls is None:
            raise _Unreadable(f"unknown result type {header.get('type')!r}; known: {sorted(_TYPES)}.")
        schema = header.get("schema")
        if schema not in range(1, _SCHEMA + 1):
            raise _Unreadable(f"schema {schema} not supported (this ufm reads 1 to {_SCHEMA}); load it with the ufm "
                              f"version that wrote it.")
        meta = header["meta"]
        stored = meta.get(_HASH_KEY)
        if not isinstance(stored, str):
            raise _Unreadable(f"its header has no {_HASH_KEY!r}, so its content cannot be checked (every file ufm "
                              f"writes has one: this one was edited); save the result again from its source.")
        if schema < _SCHEMA and _file_hash(header, data) != stored:
            # an old file is checked on its own content: the upgraded object hashes differently
            raise _Unreadable("content hash mismatch; the file was changed or corrupted.")
        if hasattr(cls, "_fields_from_file"):     # results with their own layout (SweepResult)
            fields = cls._fields_from_file(header, data)
        else:
            fields = {name: (np.array(data[name]) if name in data else None) for name in cls._ARRAYS}
            for name in cls._DICTS:
                prefix = name + "/"
                fields[name] = {key[len(prefix):]: np.array(data[key]) for key in data.files
                                if key.startswith(prefix)}
            fields.update(header["scalars"])
    if schema < _SCHEMA:     # checked above; the upgraded object gets a new hash (the stored one is dropped)
        return cls(**cls._upgrade(fields, schema), meta=meta)
    obj = cls(**fields, meta=meta)      # a current file: the object's own hash is the file's
    if obj.meta[_HASH_KEY] != stored:
        raise _Unreadable("content hash mismatch; the file was changed or corrupted.")
    return obj


def _file_hash(header: dict, data) -> str:
    """The content hash of a saved file, from its own arrays and header (as ``save`` computed it)."""
    arrays = {name: data[name] for name in data.files if name != "__header__"}
    if "records" in header:             # the SweepResult layout
        h = _hash_records(header["records"], arrays)
    else:
        h = hashlib.sha256()
        for name, arr in arrays.items():
            h.update(name.encode())
            _hash_array(h, arr)
    rest = {k: v for k, v in header["meta"].items() if k not in ("content_hash", "versions")}
    h.update(json.dumps(header["scalars"], sort_keys=True).encode())
    h.update(json.dumps(rest, sort_keys=True).encode())
    return h.hexdigest()


Solution.load = staticmethod(load)  # Solution.load(path) reads a saved Solution
Trajectory.load = staticmethod(load)
TheoryCurve.load = staticmethod(load)
SweepResult.load = staticmethod(load)
Run.load = staticmethod(load)
FitResult.load = staticmethod(load)
PhasePoint.load = staticmethod(load)
TransientModels.load = staticmethod(load)
