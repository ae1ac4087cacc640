"""Synthetic settings: items with latent semantic factors and distinct one-hot labels.

The motivating setting of "Structure Before Collapse" (Zhao, Papadimitriou,
Thrampoulidis, arXiv 2606.26749; THEORY §6.3, §8): every item (input) carries
latent categorical attributes, yet each item has its *own* one-hot label, so the
labels alone say nothing about which items are alike. Semantic structure enters
through fixed input encodings (THEORY §8.2, model M2)::

    Phi = [Phi_attr; sigma * I_N]        (p x N),
    K_x = Phi^T Phi = Phi_attr^T Phi_attr + sigma^2 I_N,

where ``Phi_attr`` stacks one one-hot block per factor and ``sigma`` is the
per-item capacity. Shared-attribute directions of ``Phi`` have large singular
values and are learned first (THEORY §6.3); as ``sigma`` grows the kernel nears
a multiple of the identity and the optimum nears the simplex ETF (THEORY §8.2).

Three generators return a frozen :class:`Setting`:

* :func:`factorial` -- every combination of categorical factors is one item;
* :func:`hierarchy` -- the leaves of a taxonomy, attributes are their ancestors;
* :func:`ntp_contexts` -- token contexts of a tiny grammar (subject verb), each
  seen once with its own next token (an object); verbs select object classes.

A :class:`Setting` can also be built directly from any attribute table.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from ufm import _memory
from ufm._checks import check_int as _check_int, check_nonneg
from ufm.problems import UFMProblem

__all__ = ["MAX_ITEMS", "NAMED_SETTINGS", "NamedSetting", "Setting", "factorial", "generator_of", "hierarchy",
           "named_setting", "ntp_contexts"]

#: Largest number of items a setting may have (the N x N matrices grow as N^2).
MAX_ITEMS = 10_000


# -- small helpers --------------------------------------------------------------
class _ReadOnlyDict(dict):
    """A ``dict`` that refuses changes (still JSON-serializable and picklable)."""

    def _refuse(self, *args, **kwargs):
        raise TypeError("Setting.params is read-only; build a new setting with the changed arguments instead.")

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self):
        return (_ReadOnlyDict, (dict(self),))


#: What to do when a table of a setting would not fit in memory.
_FEWER = "Use a setting with fewer items."


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def _names(arg: str, value, count: int, default) -> tuple[str, ...]:
    """Validate an optional sequence of ``count`` distinct strings."""
    if value is None:
        return tuple(default(i) for i in range(count))
    if isinstance(value, str):
        raise ValueError(f"{arg} must be a sequence of {count} strings, got the single string {value!r}.")
    try:
        out = tuple(value)
    except TypeError:
        raise ValueError(f"{arg} must be a sequence of {count} strings, got {value!r}.") from None
    if len(out) != count:
        raise ValueError(f"{arg} must have {count} entries (one per {_ONE_PER[arg]}), got {len(out)}.")
    if not all(isinstance(s, str) for s in out):
        raise ValueError(f"{arg} must hold strings, got {out!r}.")
    if len(set(out)) != len(out):
        dup = sorted({s for s in out if out.count(s) > 1})
        raise ValueError(f"{arg} must be distinct, but {dup} repeat; rename them.")
    return out


_ONE_PER = {"factor_names": "factor", "items": "item", "position_names": "token position", "vocab": "token id"}


def _check_count(name: str, n: int, fix: str) -> None:
    if n > MAX_ITEMS:
        raise ValueError(f"{name} gives {n} items, more than the maximum {MAX_ITEMS} (the N x N kernels grow as "
                         f"N^2); {fix}.")


def _params(**kwargs) -> dict:
    """The generator's arguments, for ``Setting.params`` (``name`` only when given)."""
    if kwargs.get("name") is None:
        kwargs.pop("name", None)
    return kwargs


def _seed_sequence(seed) -> np.random.SeedSequence:
    if seed is None:
        return np.random.SeedSequence()
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0 or None (fresh entropy, recorded in params), got {seed!r}.")
    return np.random.SeedSequence(int(seed))


# -- the setting -------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Setting:
    """Items with latent categorical attributes, each with its own one-hot label.

    Built by :func:`factorial`, :func:`hierarchy` or :func:`ntp_contexts`, or
    directly from an attribute table. Item ``i`` has label ``i``
    (``labels = arange(N)``), so a UFM on a setting has ``K = N`` classes with
    one example each (:meth:`as_problem`).

    Parameters
    ----------
    attributes : array of int, shape (N, F)
        ``attributes[i, f]`` is the level of factor ``f`` for item ``i``, in
        ``0 .. levels[f] - 1``. ``F = 0`` (no latent structure) is allowed.
    name : str
        Short description, e.g. ``"factorial(2x2x2)"``.
    factor_names : sequence of str, optional
        One distinct name per factor (default ``"f0", "f1", ...``).
    levels : sequence of int, optional
        Number of levels ``L_f`` of each factor (default: ``max + 1`` per column).
    level_names : sequence of sequences of str, optional
        ``level_names[f][l]`` names level ``l`` of factor ``f`` (default ``"0", "1", ...``).
    items : sequence of str, optional
        Distinct human-readable item names. Default: the tokens joined by spaces
        for token settings, else the level names joined by ``"-"`` (or
        ``"item<i>"`` when those are not distinct).
    params : dict, optional
        The arguments of the generator that built the setting (read-only,
        JSON-friendly).
    tokens : array of int, shape (N, L), optional
        Token contexts (ids into ``vocab``). When given, the attribute block of
        the encoding is the bag-of-position token one-hot (see
        :meth:`attribute_encoding`) instead of the attribute one-hots.
    vocab : sequence of str, optional
        Token strings (required with ``tokens``; stored as a tuple).
    position_names : sequence of str, optional
        One name per token position (default ``"pos0", "pos1", ...``).
    next_tokens : array of int, shape (N,), optional
        The next token (id into ``vocab``) of each context; item ``i``'s label
        ``i`` stands for ``vocab[next_tokens[i]]``.

    Attributes
    ----------
    N, F : int
        Number of items and of latent factors.
    labels : ndarray, shape (N,)
        ``arange(N)``: distinct labels, in item order (read-only).
    share : ndarray, shape (N, N)
        ``share[i, j]`` = number of factors on which items ``i`` and ``j``
        agree; diagonal ``F`` (the matrix S / K_A of THEORY §7.4; read-only).
    blocks : tuple of str
        Names of the one-hot blocks of the attribute encoding: the factor names,
        or the position names for token settings.

    Notes
    -----
    Stored arrays are read-only; methods return fresh float64 arrays.
    ``share`` is computed on first use (it is N x N).

    References
    ----------
    Zhao, Papadimitriou, Thrampoulidis, "Structure Before Collapse",
    arXiv 2606.26749; THEORY.md §6.3 (distinct labels, structured inputs),
    §7.4 (attribute tables, shared-factor matrix), §8.2 (M2 encodings).
    """

    attributes: np.ndarray
    name: str = "custom"
    factor_names: tuple[str, ...] | None = None
    levels: tuple[int, ...] | None = None
    level_names: tuple[tuple[str, ...], ...] | None = None
    items: tuple[str, ...] | None = None
    params: dict = field(default_factory=dict)
    tokens: np.ndarray | None = field(default=None, repr=False)
    vocab: tuple[str, ...] | None = field(default=None, repr=False)
    position_names: tuple[str, ...] | None = None
    next_tokens: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        if not isinstance(self.name, str):
            raise ValueError(f"name must be a string, got {self.name!r}.")
        A = self._int_table("attributes", self.attributes, "N x F")
        N, F = A.shape
        if N < 2:
            raise ValueError(f"attributes has {N} row(s); a setting needs at least 2 items (one row per item).")
        _check_count("attributes", N, "use fewer items")
        if A.size and A.min() < 0:
            raise ValueError(f"attributes must hold levels 0..L_f-1, found {A.min()}; renumber the levels from 0.")
        set_("attributes", _readonly(A))

        seen = tuple(int(A[:, f].max()) + 1 for f in range(F))
        if self.levels is None:
            levels = seen
        else:
            try:
                levels = tuple(self.levels)
            except TypeError:
                raise ValueError(f"levels must be a sequence of F={F} integers, got {self.levels!r}.") from None
            if len(levels) != F:
                raise ValueError(f"levels must have one entry per factor: F={F} but len(levels)={len(levels)}.")
            levels = tuple(_check_int(f"levels[{f}]", L, 1) for f, L in enumerate(levels))
            for f in range(F):
                if seen[f] > levels[f]:
                    raise ValueError(f"attributes[:, {f}] has level {seen[f] - 1} but levels[{f}]={levels[f]}; "
                                     f"raise levels[{f}] to at least {seen[f]}.")
        set_("levels", levels)
        set_("factor_names", _names("factor_names", self.factor_names, F, lambda f: f"f{f}"))
        set_("level_names", self._check_level_names(levels))
        set_("params", _ReadOnlyDict(self.params or {}))

        if self.tokens is None:
            for arg in ("vocab", "position_names", "next_tokens"):
                if getattr(self, arg) is not None:
                    raise ValueError(f"{arg} describes token contexts; pass tokens=<N x L token ids> too, or drop {arg}.")
            codes, blocks = A, self.factor_names
            rows = tuple(f"{self.factor_names[f]}={s}" for f in range(F) for s in self.level_names[f])
            code_levels = levels
        else:
            codes, blocks, rows, code_levels = self._check_tokens(N)

        set_("_codes", _readonly(np.ascontiguousarray(codes, dtype=np.int64)))
        set_("_code_levels", tuple(code_levels))
        set_("blocks", tuple(blocks))
        set_("_row_names", rows)
        set_("items", self._check_items(N))
        set_("labels", _readonly(np.arange(N, dtype=np.int64)))

    def __setstate__(self, state):  # unpickling: keep the stored arrays read-only
        self.__dict__.update(state)
        for value in state.values():
            if isinstance(value, np.ndarray):
                value.setflags(write=False)

    # -- validation helpers ---------------------------------------------------
    @staticmethod
    def _int_table(arg: str, value, shape: str) -> np.ndarray:
        a = np.array(value)
        if a.ndim != 2:
            raise ValueError(f"{arg} must be a 2-D {shape} integer table, got an array with shape {a.shape}.")
        if not np.issubdtype(a.dtype, np.integer):
            if (np.issubdtype(a.dtype, np.floating) and np.all(np.isfinite(a)) and np.all(a == np.round(a))) \
                    or a.dtype == bool or a.size == 0:
                a = a.astype(np.int64)
            else:
                raise ValueError(f"{arg} must hold integers, got dtype {a.dtype}.")
        return a.astype(np.int64)

    def _check_level_names(self, levels) -> tuple[tuple[str, ...], ...]:
        F = len(levels)
        if self.level_names is None:
            return tuple(tuple(str(l) for l in range(L)) for L in levels)
        try:
            given = tuple(self.level_names)
        except TypeError:
            raise ValueError(f"level_names must be a sequence of F={F} sequences of strings, got "
                             f"{self.level_names!r}.") from None
        if len(given) != F:
            raise ValueError(f"level_names must have one entry per factor: F={F} but got {len(given)}.")
        out = []
        for f, names in enumerate(given):
            if isinstance(names, str):
                raise ValueError(f"level_names[{f}] must be a sequence of {levels[f]} strings, got the string "
                                 f"{names!r}; write e.g. ('small', 'large').")
            names = tuple(names)
            if len(names) != levels[f] or not all(isinstance(s, str) for s in names):
                raise ValueError(f"level_names[{f}] must be {levels[f]} strings (one per level of factor {f}), "
                                 f"got {names!r}.")
            if len(set(names)) != len(names):
                raise ValueError(f"level_names[{f}] must be distinct, got {names!r}.")
            out.append(names)
        return tuple(out)

    def _check_tokens(self, N):
        T = self._int_table("tokens", self.tokens, "N x L")
        if T.shape[0] != N or T.shape[1] < 1:
            raise ValueError(f"tokens must be N x L with N={N} rows (one context per item) and L >= 1, "
                             f"got shape {T.shape}.")
        if self.vocab is None:
            raise ValueError("tokens need vocab=<one string per token id>.")
        if isinstance(self.vocab, str):
            raise ValueError(f"vocab must be a sequence of token strings, got the single string {self.vocab!r}.")
        vocab = _names("vocab", self.vocab, len(tuple(self.vocab)), str)
        if T.min() < 0 or T.max() >= len(vocab):
            raise ValueError(f"tokens must be ids 0..{len(vocab) - 1} into vocab, found {T.min()}..{T.max()}.")
        object.__setattr__(self, "tokens", _readonly(T))
        object.__setattr__(self, "vocab", vocab)
        L = T.shape[1]
        pos = _names("position_names", self.position_names, L, lambda l: f"pos{l}")
        object.__setattr__(self, "position_names", pos)
        if self.next_tokens is not None:
            nt = np.array(self.next_tokens)
            if nt.shape != (N,) or not np.issubdtype(nt.dtype, np.integer) or nt.min() < 0 or nt.max() >= len(vocab):
                raise ValueError(f"next_tokens must be {N} integer ids into vocab (one per context), got {nt!r}.")
            object.__setattr__(self, "next_tokens", _readonly(nt.astype(np.int64)))
        # one block per position, over the tokens that occur there (vocab order)
        codes = np.empty_like(T)
        rows, sizes = [], []
        for l in range(L):
            seen, codes[:, l] = np.unique(T[:, l], return_inverse=True)
            rows += [f"{pos[l]}={vocab[t]}" for t in seen]
            sizes.append(len(seen))
        return codes, pos, tuple(rows), sizes

    def _check_items(self, N) -> tuple[str, ...]:
        if self.items is not None:
            return _names("items", self.items, N, str)
        if self.tokens is not None:
            names = [" ".join(self.vocab[t] for t in row) for row in self.tokens]
        elif self.F:
            names = ["-".join(self.level_names[f][a] for f, a in enumerate(row)) for row in self.attributes]
        else:
            names = []
        if len(set(names)) != N:
            names = [f"item{i}" for i in range(N)]
        return tuple(names)

    # -- sizes ----------------------------------------------------------------
    @property
    def N(self) -> int:
        """Number of items (= number of distinct labels)."""
        return int(self.attributes.shape[0])

    @property
    def F(self) -> int:
        """Number of latent factors (columns of ``attributes``)."""
        return int(self.attributes.shape[1])

    @property
    def block_sizes(self) -> tuple[int, ...]:
        """Rows of each one-hot block of :meth:`attribute_encoding` (their sum is ``p - N``)."""
        return self._code_levels

    @property
    def row_names(self) -> tuple[str, ...]:
        """One name per row of :meth:`attribute_encoding`, e.g. ``"size=small"`` or ``"verb=verb1.0"``."""
        return self._row_names

    @functools.cached_property
    def share(self) -> np.ndarray:
        """N x N count of shared attributes: ``share[i, j] = #{f : A[i, f] == A[j, f]}``; diagonal ``F``.

        The shared-factor matrix S of THEORY §7.4 (read-only, int64).
        """
        _memory.check({"share (N x N)": 8 * self.N**2}, "share (N x N)", _FEWER)
        S = np.zeros((self.N, self.N), dtype=np.int64)
        for col in self.attributes.T:
            S += col[:, None] == col[None, :]
        return _readonly(S)

    # -- encodings (THEORY §8.2) ---------------------------------------------
    def _strengths(self, strengths) -> np.ndarray:
        B = len(self.blocks)
        if strengths is None:
            return np.ones(B)
        s = np.array(strengths)
        if not np.issubdtype(s.dtype, np.number) or np.iscomplexobj(s):
            raise ValueError(f"strengths must be real numbers >= 0 (one per block {self.blocks}), got {strengths!r}.")
        s = np.broadcast_to(s.astype(np.float64), (B,)) if s.ndim == 0 else s.astype(np.float64)
        if s.shape != (B,):
            raise ValueError(f"strengths must be a scalar or have one entry per block {self.blocks} "
                             f"(length {B}), got shape {s.shape}.")
        if not np.all(np.isfinite(s)) or np.any(s < 0):
            raise ValueError(f"strengths must be finite and >= 0 (a weight per block), got {s.tolist()}.")
        return s

    def attribute_encoding(self, strengths=None) -> np.ndarray:
        """The attribute block ``Phi_attr`` of the encoding (THEORY §8.2), float64.

        One one-hot block per factor, stacked in factor order (rows of factor
        ``f`` = its levels ``0 .. L_f - 1``; see :attr:`row_names`). For token
        settings (:func:`ntp_contexts`) the blocks are the token positions
        instead: block ``l`` is the one-hot of the token at position ``l``, over
        the tokens that occur there ("bag of positions").

        Parameters
        ----------
        strengths : float or sequence of float, optional
            A weight ``eta_b >= 0`` per block (scalar: the same for all);
            block ``b`` is multiplied by ``eta_b``, so it adds
            ``eta_b^2 S_b`` to the kernel (THEORY §8.6 step 4). Default 1.

        Returns
        -------
        ndarray, shape (sum(block_sizes), N)
            The stacked blocks, one column per item.
        """
        s = self._strengths(strengths)
        out = np.zeros((sum(self._code_levels), self.N))
        offset, cols = 0, np.arange(self.N)
        for b, L in enumerate(self._code_levels):
            out[offset + self._codes[:, b], cols] = s[b]
            offset += L
        return out

    def attribute_kernel(self, strengths=None) -> np.ndarray:
        """``Phi_attr^T Phi_attr`` (N x N, float64), computed without building ``Phi``.

        Entry ``(i, j)`` is ``sum_b eta_b^2 [code_b(i) == code_b(j)]``. With unit
        strengths it equals :attr:`share` for attribute settings; for token
        settings it counts the positions holding the same token.

        Parameters
        ----------
        strengths : float or sequence of float, optional
            A weight per block, as in :meth:`attribute_encoding` (default 1).

        Returns
        -------
        ndarray, N x N
            The attribute kernel.
        """
        s = self._strengths(strengths)
        _memory.check({"the N x N kernel": 8 * self.N**2}, "the N x N kernel", _FEWER)
        Kx = np.zeros((self.N, self.N))
        for b, col in enumerate(self._codes.T):
            Kx += s[b] ** 2 * (col[:, None] == col[None, :])
        return Kx

    def encoding(self, sigma, strengths=None) -> np.ndarray:
        """Input encodings ``Phi = [Phi_attr; sigma I_N]`` (p x N, float64; THEORY §8.2, M2).

        Parameters
        ----------
        sigma : float
            Per-item capacity, ``>= 0``. ``sigma = 0`` keeps the N x N block (all
            zeros), so ``p = sum(block_sizes) + N`` for every ``sigma``; then
            items with equal attribute codes have equal encodings.
        strengths : float or sequence of float, optional
            Block weights, as in :meth:`attribute_encoding`.

        Returns
        -------
        ndarray, shape (sum(block_sizes) + N, N)
            Columns are the items. ``Phi^T Phi = attribute_kernel(strengths) + sigma^2 I``.

        Raises
        ------
        ValueError
            If ``sigma`` is negative, NaN, infinite or not a number.

        Examples
        --------
        >>> import numpy as np
        >>> s = factorial((2, 2))
        >>> np.round(np.linalg.svd(s.encoding(0.5), compute_uv=False), 4)  # THEORY TV5b
        array([2.0616, 1.5   , 1.5   , 0.5   ])
        """
        sigma = check_nonneg("sigma", sigma, "the per-item capacity")
        top = self.attribute_encoding(strengths)
        _memory.check({"the encoding Phi": 8 * (top.shape[0] + self.N) * self.N}, "the encoding Phi", _FEWER)
        return np.vstack([top, sigma * np.eye(self.N)])

    def input_kernel(self, sigma, strengths=None) -> np.ndarray:
        """The input kernel ``K_x = Phi^T Phi = Phi_attr^T Phi_attr + sigma^2 I_N`` (N x N; THEORY §8.2).

        Parameters
        ----------
        sigma : float
            Per-item capacity.
        strengths : float or sequence of float, optional
            A weight per attribute block, as in :meth:`attribute_encoding` (default 1).

        Returns
        -------
        ndarray, N x N
            ``K_x``.
        """
        sigma = check_nonneg("sigma", sigma, "the per-item capacity")
        Kx = self.attribute_kernel(strengths)
        Kx[np.diag_indices(self.N)] += sigma * sigma
        return Kx

    # -- bridges --------------------------------------------------------------
    def as_problem(self, d, loss: str = "ce", **lams) -> UFMProblem:
        """A standard UFM with one distinct class per item: ``UFMProblem(K=N, n=1, d=d, loss=loss, **lams)``.

        ``lams`` are passed on (``lam_W``, ``lam_H``, ``bias``, ``lam_b``; halved
        convention of THEORY §0.1). Column ``i`` of ``H`` is item ``i``.

        Parameters
        ----------
        d : int
            Feature dimension.
        loss : str or Loss
            A name of :data:`ufm.loss_registry.LOSSES` or a loss object.
        **lams
            ``lam_W``, ``lam_H``, ``bias``, ``lam_b`` (halved convention).

        Returns
        -------
        UFMProblem
            One class per item, ``K = N``.
        """
        return UFMProblem(K=self.N, n=1, d=d, loss=loss, **lams)

    def __repr__(self) -> str:
        return f"Setting({self.name!r}, N={self.N}, F={self.F}, factors={list(self.factor_names)})"


# -- generators ----------------------------------------------------------------------
def factorial(levels, factor_names=None, level_names=None, name=None) -> Setting:
    """Every combination of categorical factors is one item (THEORY §6.3, §8.2).

    Parameters
    ----------
    levels : sequence of int
        Levels per factor, each ``>= 2``; e.g. ``(2, 2, 2)`` gives 8 items.
    factor_names : sequence of str, optional
        E.g. ``("size", "rigidity", "animacy")``.
    level_names : sequence of sequences of str, optional
        E.g. ``(("small", "large"), ("rigid", "soft"), ("inanimate", "animate"))``;
        item names join them with ``"-"`` ("small-rigid-animate").
    name : str, optional
        Default ``"factorial(2x2x2)"``.

    Returns
    -------
    Setting
        Items in Cartesian-product order (last factor varies fastest), so
        ``attributes = list(itertools.product(*map(range, levels)))``.

    Examples
    --------
    >>> s = factorial((2, 2))
    >>> s.attributes.tolist()
    [[0, 0], [0, 1], [1, 0], [1, 1]]
    >>> s.share.tolist()[0]
    [2, 1, 1, 0]
    """
    if isinstance(levels, (int, np.integer)) and not isinstance(levels, (bool, np.bool_)):
        raise ValueError(f"levels must be a sequence (levels per factor), got the integer {levels}; "
                         f"write e.g. levels=({levels}, {levels}) for two factors.")
    try:
        lv = tuple(levels)
    except TypeError:
        raise ValueError(f"levels must be a sequence of integers >= 2 (levels per factor), got {levels!r}.") from None
    if not lv:
        raise ValueError("levels is empty; give at least one factor, e.g. levels=(2, 2).")
    for f, L in enumerate(lv):
        if isinstance(L, (bool, np.bool_)) or not isinstance(L, (int, np.integer)):
            raise ValueError(f"levels[{f}] must be an integer >= 2, got {L!r}.")
        if L < 2:
            raise ValueError(f"levels[{f}] = {L}: each factor needs at least 2 levels; drop that factor or use 2+.")
    lv = tuple(int(L) for L in lv)
    _check_count(f"levels={lv}", math.prod(lv), "use fewer factors or fewer levels per factor")
    A = np.stack(np.unravel_index(np.arange(math.prod(lv)), lv), axis=1)
    return Setting(
        attributes=A,
        name=name if name is not None else "factorial(" + "x".join(map(str, lv)) + ")",
        factor_names=factor_names,
        levels=lv,
        level_names=level_names,
        params=_params(levels=lv, factor_names=None if factor_names is None else tuple(factor_names),
                       level_names=None if level_names is None else tuple(tuple(x) for x in level_names),
                       name=name),
    )


def hierarchy(branching, depth=None, factor_names=None, name=None) -> Setting:
    """Leaves of a taxonomy; the attributes of a leaf are its ancestors.

    The root (depth 0) has ``branching[0]`` children, each node at depth ``k``
    has ``branching[k]`` children, and the items are the nodes at depth
    ``depth`` (``N = prod(branching)``, in lexicographic path order). There is
    one factor per internal level below the root (``F = depth - 1``): factor
    ``f`` is the index of the ancestor at depth ``f + 1`` among all nodes at
    that depth. Hence ``share[i, j]`` is the depth of the lowest common ancestor
    capped at ``F``: siblings share all ``F`` factors (only ``sigma I`` tells
    them apart in the encoding), cousins ``F - 1``, and so on. ``depth = 1``
    gives ``F = 0``: no latent structure (the plain UFM control).

    Parameters
    ----------
    branching : int or sequence of int
        Children per node, ``>= 2``: one value for all levels, or one per level
        (then ``depth`` defaults to its length).
    depth : int
        Depth of the leaves, ``>= 1``.
    factor_names : sequence of str, optional
        Default ``"depth1", ..., "depth<F>"``.
    name : str, optional
        Default ``"hierarchy(2x2x2)"`` (the per-level branching).

    Returns
    -------
    Setting
        Item names are leaf paths (``"0.1.1"``); level names are ancestor paths.

    Examples
    --------
    >>> s = hierarchy(2, depth=3)
    >>> s.N, s.F, s.share[0].tolist()
    (8, 2, [2, 2, 1, 1, 0, 0, 0, 0])
    """
    if isinstance(branching, (int, np.integer)) and not isinstance(branching, (bool, np.bool_)):
        if depth is None:
            raise ValueError("depth is required when branching is a single integer, e.g. hierarchy(2, depth=3).")
        depth = _check_int("depth", depth, 1)
        b = _check_int("branching", branching, 2)
        if b ** min(depth, 64) > MAX_ITEMS:  # before building the tuple: a huge depth must fail fast
            raise ValueError(f"branching={b}, depth={depth} gives {b}^{depth} items, more than the maximum "
                             f"{MAX_ITEMS} (the N x N kernels grow as N^2); lower branching or depth.")
        br = (b,) * depth
    else:
        try:
            br = tuple(branching)
        except TypeError:
            raise ValueError(f"branching must be an integer >= 2 or a sequence of them (one per level), "
                             f"got {branching!r}.") from None
        if not br:
            raise ValueError("branching is empty; give one integer >= 2 per level, e.g. branching=(3, 2).")
        br = tuple(_check_int(f"branching[{k}]", x, 2) for k, x in enumerate(br))
        if depth is None:
            depth = len(br)
        depth = _check_int("depth", depth, 1)
        if len(br) != depth:
            raise ValueError(f"branching has {len(br)} entries but depth={depth}; give one branching per level "
                             "or omit depth.")
    N = math.prod(br)
    _check_count(f"branching={br}", N, "lower branching or depth")
    F = depth - 1
    paths = np.stack(np.unravel_index(np.arange(N), br), axis=1)  # N x depth child indices
    A = np.stack([np.arange(N) // math.prod(br[f + 1:]) for f in range(F)], axis=1) if F else np.zeros((N, 0), int)
    levels = tuple(math.prod(br[: f + 1]) for f in range(F))
    path = lambda p: ".".join(map(str, p))  # noqa: E731
    level_names = tuple(
        tuple(path(np.unravel_index(l, br[: f + 1])) for l in range(levels[f])) for f in range(F)
    )
    return Setting(
        attributes=A,
        name=name if name is not None else "hierarchy(" + "x".join(map(str, br)) + ")",
        factor_names=factor_names if factor_names is not None else tuple(f"depth{f + 1}" for f in range(F)),
        levels=levels,
        level_names=level_names,
        items=tuple(path(p) for p in paths),
        params=_params(branching=br, depth=depth,
                       factor_names=None if factor_names is None else tuple(factor_names), name=name),
    )


def ntp_contexts(n_classes=3, objects_per_class=4, verbs_per_class=2, n_subjects=3, seed=0, name=None) -> Setting:
    """Contexts of a tiny grammar, each seen once with its own next token (THEORY §5, §8.2).

    Grammar: a context is ``subject verb`` (L = 2 tokens); its next token is an
    object. Objects fall into ``n_classes`` latent classes; each class has its
    own ``verbs_per_class`` verbs, and a verb selects (is followed only by)
    objects of its class. Every object is the next token of exactly one
    context, so ``N = n_classes * objects_per_class`` and the labels are
    distinct one-hots (item ``i`` -> object ``i``, class-major order).

    Random draws (``np.random.default_rng(SeedSequence(seed))``):

    * the verb of each context is drawn among the verbs of its object's class,
      balanced (each verb used ``floor`` or ``ceil`` of
      ``objects_per_class / verbs_per_class`` times);
    * the subjects are a random balanced assignment (every subject occurs)
      under which no two contexts are the same token sequence.

    Parameters
    ----------
    n_classes : int
        Latent object classes, ``>= 2``.
    objects_per_class : int
        Objects (= contexts) per class, ``>= 1``.
    verbs_per_class : int
        Verbs selecting each class, ``1 .. objects_per_class`` (every verb needs a context).
    n_subjects : int
        Subject tokens, ``1 .. N``, and at least ``ceil(objects_per_class /
        verbs_per_class)`` so that contexts sharing a verb differ in the subject.
    seed : int or None
        ``None`` draws fresh entropy and records it in ``params["seed"]``, so
        ``ntp_contexts(**setting.params)`` rebuilds the setting.
    name : str, optional
        Default ``"ntp_contexts(C=3, m=4, v=2, s=3, seed=0)"``.

    Returns
    -------
    Setting
        ``attributes`` columns ``("object_class", "verb", "subject")`` with
        levels ``(n_classes, n_classes * verbs_per_class, n_subjects)``; verb
        ``v`` selects class ``v // verbs_per_class``. ``tokens`` (N x 2 ids:
        subject, verb), ``vocab`` (``"subj<j>"``, ``"verb<c>.<j>"``,
        ``"obj<c>.<j>"``, in that order) and ``next_tokens`` (the object ids).
        The encoding's attribute block is the bag-of-position token one-hot,
        so the object class reaches ``Phi`` only through the verb; ``share``
        counts the shared latent factors.
    """
    C = _check_int("n_classes", n_classes, 2)
    m = _check_int("objects_per_class", objects_per_class, 1)
    v = _check_int("verbs_per_class", verbs_per_class, 1)
    ns = _check_int("n_subjects", n_subjects, 1)
    N = C * m
    _check_count(f"n_classes * objects_per_class = {C} * {m}", N, "lower n_classes or objects_per_class")
    if v > m:
        raise ValueError(f"verbs_per_class={v} > objects_per_class={m}: some verbs would select no context; "
                         f"lower verbs_per_class to <= {m}.")
    if ns > N:
        raise ValueError(f"n_subjects={ns} > N={N} contexts: some subjects would never occur; "
                         f"lower n_subjects to <= {N}.")
    per_verb = -(-m // v)
    if ns < per_verb:
        raise ValueError(f"n_subjects={ns} is too small: a verb has up to {per_verb} contexts, which need distinct "
                         f"subjects; raise n_subjects to >= {per_verb} or raise verbs_per_class.")
    ss = _seed_sequence(seed)
    rng = np.random.default_rng(ss)
    n_verbs = C * v

    cls = np.repeat(np.arange(C), m)
    verb = np.concatenate([c * v + rng.permutation(np.resize(np.arange(v), m)) for c in range(C)])
    # group contexts by verb (verbs in random order, random order inside a group), then deal subjects
    # cyclically from a random permutation: a group of <= n_subjects consecutive deals has distinct subjects.
    verb_rank = np.empty(n_verbs, dtype=np.int64)
    verb_rank[rng.permutation(n_verbs)] = np.arange(n_verbs)
    order = np.lexsort((rng.permutation(N), verb_rank[verb]))
    subject = np.empty(N, dtype=np.int64)
    subject[order] = np.resize(rng.permutation(ns), N)

    vocab = ([f"subj{j}" for j in range(ns)]
             + [f"verb{c}.{j}" for c in range(C) for j in range(v)]
             + [f"obj{c}.{j}" for c in range(C) for j in range(m)])
    tokens = np.stack([subject, ns + verb], axis=1)
    seed_rec = int(seed) if seed is not None else int(ss.entropy)
    return Setting(
        attributes=np.stack([cls, verb, subject], axis=1),
        name=name if name is not None else f"ntp_contexts(C={C}, m={m}, v={v}, s={ns}, seed={seed_rec})",
        factor_names=("object_class", "verb", "subject"),
        levels=(C, n_verbs, ns),
        level_names=(tuple(f"class{c}" for c in range(C)), tuple(vocab[ns:ns + n_verbs]), tuple(vocab[:ns])),
        params=_params(n_classes=C, objects_per_class=m, verbs_per_class=v, n_subjects=ns, seed=seed_rec,
                       name=name),
        tokens=tokens,
        vocab=tuple(vocab),
        position_names=("subject", "verb"),
        next_tokens=ns + n_verbs + np.arange(N),
    )


# -- the settings known by name ----------------------------------------------------------------
@dataclass(frozen=True)
class NamedSetting:
    """A setting generator known by name, with the sizes it is built with by default.

    Attributes
    ----------
    generator : str
        The function of this module (``"factorial"``, ...).
    arguments : tuple of str or None
        The arguments ``sizes`` fills, one number each (``ntp_contexts``); ``None``: ``sizes`` is the
        generator's one sequence argument (the levels of ``factorial``, the branching of ``hierarchy``).
    marker : str
        A parameter only this generator records (which generator built a setting).
    small : tuple of int
        Sizes for the theory and its checks (8 or 12 classes: the phase diagram, the demo).
    network : tuple of int
        Sizes a reference network is trained on (32 or 64 classes: ``ufm train-network``).
    """

    generator: str
    arguments: tuple | None
    marker: str
    small: tuple
    network: tuple

    def build(self, sizes=None, preset: str = "small") -> Setting:
        """The setting of ``sizes`` (default: the preset's).

        Parameters
        ----------
        sizes : sequence of int, optional
            Levels, branching, or the numbers of :attr:`arguments`.
        preset : {"small", "network"}
            Whose default sizes to use when ``sizes`` is omitted.

        Returns
        -------
        Setting
            A new instance.
        """
        if preset not in ("small", "network"):
            raise ValueError(f"preset must be 'small' or 'network', got {preset!r}.")
        sizes = getattr(self, preset) if sizes is None else tuple(sizes)
        make = globals()[self.generator]
        if self.arguments is None:
            return make(sizes)
        if len(sizes) != len(self.arguments):
            raise ValueError(f"{self.generator} takes {len(self.arguments)} sizes ({','.join(self.arguments)}), "
                             f"e.g. {','.join(map(str, self.network))}; got {len(sizes)}.")
        return make(**dict(zip(self.arguments, sizes)))


#: The one registry of named settings: ``ufm train-network --setting``, ``ufm fit --setting``, the
#: phase diagram and ``ufm.sweep(problem=...)`` all read it.
NAMED_SETTINGS = {
    "factorial": NamedSetting("factorial", None, "levels", small=(2, 2, 2), network=(2, 2, 2, 2, 2)),
    "hierarchy": NamedSetting("hierarchy", None, "branching", small=(2, 2, 2), network=(2, 2, 2, 2, 2)),
    "ntp_contexts": NamedSetting("ntp_contexts", ("n_classes", "objects_per_class", "verbs_per_class", "n_subjects"),
                                 "n_classes", small=(3, 4, 2, 3), network=(4, 8, 2, 32)),
}


def named_setting(name: str, sizes=None, preset: str = "small") -> Setting:
    """The setting called ``name`` (a key of :data:`NAMED_SETTINGS`), of ``sizes`` or the preset's sizes.

    Parameters
    ----------
    name : {"factorial", "hierarchy", "ntp_contexts"}
        The generator.
    sizes : sequence of int, optional
        Levels (factorial), branching per level (hierarchy), or ``n_classes, objects_per_class,
        verbs_per_class, n_subjects`` (ntp_contexts).
    preset : {"small", "network"}
        Default sizes: ``"small"`` (``factorial((2, 2, 2))``, ``hierarchy(2, depth=3)``,
        ``ntp_contexts()``) or ``"network"`` (``factorial((2,) * 5)``, ``hierarchy((2,) * 5)``,
        ``ntp_contexts(4, 8, 2, 32)``).

    Returns
    -------
    Setting
        A new instance.
    """
    if name not in NAMED_SETTINGS:
        raise ValueError(f"setting must be one of {sorted(NAMED_SETTINGS)}, got {name!r}.")
    return NAMED_SETTINGS[name].build(sizes, preset)


def generator_of(setting: Setting) -> str | None:
    """The name of the generator that built ``setting`` (from its recorded parameters), or ``None``.

    Parameters
    ----------
    setting : Setting
        A setting.

    Returns
    -------
    str or None
        A key of :data:`NAMED_SETTINGS`.
    """
    for name, named in NAMED_SETTINGS.items():
        if named.marker in setting.params:
            return name
    return None
