"""Problem data for the unconstrained features model (UFM).

A problem is data only: it is validated when built and never changes. Solvers
(:mod:`ufm.closed_form`, :func:`ufm.solve`) and simulators read it.

Conventions (THEORY §0.1)
-------------------------
* Shapes: ``W`` is K x d, ``H`` is d x N (one column per example), ``b`` has
  length K, logits ``Z = W H + b 1_N^T`` are K x N.
* Columns are ordered class-major when labels are built from class counts:
  column ``(k, i)`` is sample ``i`` of class ``k``.
* Objective, with *halved* regularizers ("Zhu normalization", THEORY (0.1))::

      f(W, H, b) = g(W H + b 1^T) + lam_W/2 ||W||_F^2 + lam_H/2 ||H||_F^2 + lam_b/2 ||b||^2

  where ``g`` is the mean cross-entropy over the N examples (``loss="ce"``)
  or ``1/(2N) ||Z - Y||_F^2`` (``loss="mse"``, THEORY §2.2), or any loss of
  :data:`ufm.loss_registry.LOSSES` (a problem holds its loss object). Papers that write
  ``lam ||W||^2`` without the 1/2 use twice our ``lam``.
* Soft labels (THEORY §5, next-token prediction) are a K x N column-stochastic
  matrix; cross-entropy then reads ``logsumexp(z_j) - p_j^T z_j`` per column.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ._checks import check_int as _check_int, check_nonneg as _check_nonneg
from ._checks import ArgumentTypeError as _ArgumentTypeError
from ._util import numerical_rank
from . import losses as _losses
from . import _memory
from .loss_registry import get_loss
from .losses import CrossEntropy, Loss

__all__ = ["Labels", "UFMProblem", "LayerPeeledProblem", "AnchoredUFM", "InputCoupledUFM"]


def _counts_from(K, n, counts, who: str) -> tuple[int, ...]:
    if n is not None and counts is not None:
        raise ValueError(f"{who}: pass either n (balanced classes) or counts (one count per class), not both.")
    if n is None and counts is None:
        raise ValueError(f"{who}: pass n=<samples per class> for balanced classes or counts=[n_1, ..., n_K].")
    if n is not None:
        n = _check_int("n", n, 1)
        return (n,) * K
    try:
        c = tuple(counts)
    except TypeError:
        raise ValueError(f"counts must be a sequence of K={K} positive integers, got {counts!r}.") from None
    if len(c) != K:
        raise ValueError(f"counts must have one entry per class: K={K} but len(counts)={len(c)}.")
    return tuple(_check_int(f"counts[{i}]", ci, 1) for i, ci in enumerate(c))


#: Labels smaller than this (bytes) are made without asking the memory guard (which reads ``/proc``: 0.2 ms).
_SMALL_LABELS = 1 << 26


def _label_memory(who: str, K: int, N: int) -> None:
    """Refuse labels whose arrays (K counts, N class indices) do not fit in memory, before making them."""
    if 8 * N + 24 * K < _SMALL_LABELS:
        return
    _memory.check({"the class of each example (N int64)": 8 * N, "the class indices and counts (K)": 24 * K},
                  f"{who}(K={K}, N={N})", "Use fewer classes (K) or examples per class (n, counts).")


@dataclass(frozen=True, eq=False)
class Labels:
    """The labels of a model, parsed once: hard (a class per example) or soft (K x N probabilities).

    Every model of this module holds one (``problem.label_set``) and reads its class
    structure from it. Build it with :meth:`build`.

    Parameters
    ----------
    K : int
        Number of classes.
    y : ndarray of int (N,) or None
        Class of each example (hard labels; read-only), else ``None``.
    soft_matrix : ndarray (K, N) or None
        Column-stochastic soft labels (read-only), else ``None``.
    counts : tuple of int or None
        Examples per class (hard labels), else ``None``.
    """

    K: int
    y: np.ndarray | None
    soft_matrix: np.ndarray | None
    counts: tuple[int, ...] | None

    @classmethod
    def build(cls, K=None, n=None, counts=None, labels=None, who: str = "UFMProblem") -> "Labels":
        """Parse the label arguments of a model.

        Parameters
        ----------
        K : int, optional
            Number of classes (read from ``labels`` when omitted).
        n : int, optional
            Samples per class, class-major order (without ``labels``).
        counts : sequence of int, optional
            One count per class, class-major order (without ``labels``).
        labels : array, optional
            A 1-D integer vector (hard labels in any order) or a K x N column-stochastic
            matrix (soft labels).
        who : str
            The model, for messages.

        Returns
        -------
        Labels
            The parsed labels.
        """
        if labels is None:
            if K is None:
                raise ValueError("K (number of classes) is required unless labels are given.")
            K = _check_int("K", K, 2)
            if n is not None and counts is None:       # refused before the K counts are made
                _label_memory(who, K, K * _check_int("n", n, 1))
            c = _counts_from(K, n, counts, who)
            _label_memory(who, K, sum(c))
            return cls._hard(K, c, np.repeat(np.arange(K), c))
        lab = np.asarray(labels)
        if lab.ndim == 1:
            return cls._from_vector(lab, K, n, counts, who)
        if lab.ndim == 2:
            return cls._soft(lab, K, n, counts)
        raise ValueError(
            f"labels must be a 1-D integer vector (hard labels) or a K x N column-stochastic matrix "
            f"(soft labels), got an array with shape {lab.shape}."
        )

    @classmethod
    def _hard(cls, K, counts, y) -> "Labels":
        y = np.asarray(y, dtype=np.int64)
        y.setflags(write=False)
        return cls(K=K, y=y, soft_matrix=None, counts=tuple(int(c) for c in counts))

    @classmethod
    def _from_vector(cls, lab, K, n, counts_given, who) -> "Labels":
        if not np.issubdtype(lab.dtype, np.integer):
            if np.issubdtype(lab.dtype, np.floating) and np.all(np.isfinite(lab)) and np.all(lab == np.round(lab)):
                lab = lab.astype(np.int64)
            else:
                raise ValueError("labels (1-D) must hold integer class indices 0..K-1.")
        if lab.size == 0:
            raise ValueError("labels is empty; give at least one example per class.")
        if lab.min() < 0:
            raise ValueError(f"labels must be class indices >= 0, found {lab.min()}.")
        K = int(lab.max()) + 1 if K is None else _check_int("K", K, 2)
        if K < 2:
            raise ValueError("labels name a single class; a UFM needs K >= 2 classes.")
        if lab.max() >= K:
            raise ValueError(f"labels contain class {lab.max()} but K={K}; labels must lie in 0..K-1.")
        counts = np.bincount(lab, minlength=K)
        if np.any(counts == 0):
            missing = np.flatnonzero(counts == 0).tolist()
            raise ValueError(f"classes {missing} have no example in labels; every class needs at least one.")
        if n is not None or counts_given is not None:
            given = _counts_from(K, n, counts_given, who)
            if tuple(given) != tuple(counts):
                raise ValueError(
                    f"n/counts {given} disagree with the counts read from labels {tuple(counts.tolist())}; "
                    "pass labels alone."
                )
        return cls._hard(K, tuple(counts.tolist()), lab)

    @classmethod
    def _soft(cls, lab, K_given, n, counts) -> "Labels":
        if n is not None or counts is not None:
            raise ValueError("soft labels (a K x N matrix) fix N themselves; omit n and counts.")
        lab = np.array(lab, dtype=np.float64)
        if not np.all(np.isfinite(lab)):
            raise ValueError("labels contain NaN or inf; soft labels must be finite probabilities.")
        K, N = lab.shape
        if K_given is not None and _check_int("K", K_given, 2) != K:
            raise ValueError(f"K={K_given} but soft labels have {K} rows; one row per class.")
        if K < 2:
            raise ValueError("soft labels need K >= 2 rows (classes).")
        if lab.min() < 0:
            raise ValueError(f"soft labels must be non-negative, found {lab.min():.3g}.")
        colsum = lab.sum(0)
        bad = np.flatnonzero(np.abs(colsum - 1.0) > 1e-9)
        if bad.size:
            raise ValueError(
                f"soft labels must be column-stochastic (each column sums to 1); column {bad[0]} sums to "
                f"{colsum[bad[0]]:.6g}. Normalize with labels / labels.sum(0)."
            )
        lab.setflags(write=False)
        return cls(K=K, y=None, soft_matrix=lab, counts=None)

    @property
    def N(self) -> int:
        """Number of examples."""
        return int(self.soft_matrix.shape[1]) if self.soft else int(sum(self.counts))

    @property
    def soft(self) -> bool:
        """True for soft labels."""
        return self.soft_matrix is not None

    @property
    def n(self) -> int | None:
        """Samples per class when the hard labels are balanced, else ``None``."""
        return self.counts[0] if self.counts is not None and len(set(self.counts)) == 1 else None

    @property
    def class_major(self) -> bool:
        """True for hard labels in class-major order (what ``n``/``counts`` build)."""
        return not self.soft and np.array_equal(self.y, np.repeat(np.arange(self.K), self.counts))

    @property
    def Y(self) -> np.ndarray:
        """The K x N label matrix: one-hot columns or the soft labels (read-only, built once)."""
        if self.soft:
            return self.soft_matrix
        Y = self.__dict__.get("_Y_onehot")
        if Y is None:
            Y = _one_hot(self.y, self.K)
            object.__setattr__(self, "_Y_onehot", Y)
        return Y

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_Y_onehot", None)          # rebuilt on demand: a sweep ships problems to its workers
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)


@dataclass(frozen=True, eq=False)
class UFMProblem:
    """The standard unconstrained features model (UFM), validated and frozen.

    Parameters
    ----------
    K : int
        Number of classes, ``K >= 2``. May be omitted when ``labels`` is given.
    n : int, optional
        Samples per class (balanced classes). Give ``n`` or ``counts``.
    counts : sequence of int, optional
        Samples per class, one entry per class (imbalanced classes).
    d : int
        Feature dimension (rows of ``H``, columns of ``W``).
    loss : str or Loss
        A name of :data:`ufm.loss_registry.LOSSES`: ``"ce"`` (mean cross-entropy over the N
        examples, THEORY (0.1)), ``"mse"`` (``1/(2N) ||Z - Y||_F^2``, THEORY §2.2),
        ``"ls_ce"`` (label-smoothed cross-entropy, THEORY §1.5); ``"ls_ce(eps=0.05)"``
        sets a parameter; or a loss object such as ``LabelSmoothedCE(eps=0.05)``.
        Held as the loss object (``problem.loss``).
    bias : bool
        Whether the logits carry a bias ``b`` (off by default).
    lam_W, lam_H, lam_b : float
        Weight decays, halved convention: the objective adds
        ``lam_W/2 ||W||_F^2 + lam_H/2 ||H||_F^2 + lam_b/2 ||b||^2`` (THEORY §0.1).
        ``lam_b`` needs ``bias=True``; ``lam_b = 0`` with a bias means a free bias.
    labels : array, optional
        ``None`` (default): hard labels, class-major, from ``n``/``counts``.
        A 1-D integer array of length N: hard labels in any order (counts are
        read from it). A K x N array with non-negative columns summing to 1:
        soft labels (THEORY §5); ``n``/``counts`` must then be omitted.

    Attributes
    ----------
    N : int
        Number of examples (columns of ``H``).
    counts : tuple of int or None
        Per-class counts for hard labels; ``None`` for soft labels.
    n : int or None
        Samples per class when balanced, else ``None``.
    label_set : Labels
        The parsed labels, the same kind of value every model holds.

    Examples
    --------
    >>> p = UFMProblem(K=4, n=3, d=6, loss="ce", lam_W=0.01, lam_H=0.01)
    >>> round(p.gamma, 7)   # sqrt(n lam_W lam_H), THEORY §1.2
    0.0173205

    References
    ----------
    Zhu et al. 2021, arXiv 2105.02375 (objective (0.1)); THEORY.md §0.1, §2.2, §5.
    """

    K: int | None = None
    n: int | None = None
    counts: tuple[int, ...] | None = None
    d: int | None = None
    loss: str | Loss = "ce"
    bias: bool = False
    lam_W: float = 0.0
    lam_H: float = 0.0
    lam_b: float = 0.0
    labels: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        set_("loss", get_loss(self.loss))
        if not isinstance(self.bias, (bool, np.bool_)):
            raise ValueError(f"bias must be True or False, got {self.bias!r}.")
        set_("bias", bool(self.bias))
        if self.d is None:
            raise ValueError("d (feature dimension) is required, e.g. UFMProblem(K=4, n=3, d=6).")
        set_("d", _check_int("d", self.d, 1))
        for name in ("lam_W", "lam_H", "lam_b"):
            set_(name, _check_nonneg(name, getattr(self, name)))
        if not self.bias and self.lam_b != 0.0:
            raise ValueError(f"lam_b={self.lam_b} regularizes a bias, but bias=False; pass bias=True or drop lam_b.")

        self._set_labels(Labels.build(self.K, self.n, self.counts, self.labels, "UFMProblem"))

    def _set_labels(self, lab: Labels):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        set_("label_set", lab)
        set_("K", lab.K)
        set_("counts", lab.counts)
        set_("n", lab.n)
        set_("labels", lab.soft_matrix)

    # -- derived quantities ---------------------------------------------------
    @property
    def N(self) -> int:
        """Number of examples (columns of ``H`` and of the logits)."""
        return self.label_set.N

    @property
    def soft(self) -> bool:
        """True when the labels are soft (a K x N probability matrix)."""
        return self.label_set.soft

    @property
    def balanced(self) -> bool:
        """True for hard labels with equal class counts."""
        return self.n is not None

    @property
    def y(self) -> np.ndarray:
        """Integer class of each example (hard labels only; read-only)."""
        if self.label_set.soft:
            raise ValueError("this problem has soft labels; use .Y (the K x N label matrix) instead of .y.")
        return self.label_set.y

    @property
    def Y(self) -> np.ndarray:
        """The K x N label matrix: one-hot columns, or the soft labels (read-only).

        The one-hot matrix is built on first access and kept (not pickled with the problem).
        """
        return self.label_set.Y

    @property
    def mu(self) -> float:
        """``sqrt(lam_W lam_H)``: the nuclear-norm weight of the convex form (THEORY (4.1))."""
        return math.sqrt(self.lam_W * self.lam_H)

    @property
    def gamma(self) -> float:
        """``sqrt(n lam_W lam_H)`` for balanced classes (THEORY §1.2); zero regime iff ``K gamma >= 1``."""
        if not self.balanced:
            raise ValueError("gamma = sqrt(n lam_W lam_H) is defined for balanced classes only.")
        return math.sqrt(self.n * self.lam_W * self.lam_H)

    @property
    def free_bias(self) -> bool:
        """True when the bias is present and unregularized (``lam_b = 0``)."""
        return self.bias and self.lam_b == 0.0

    def _init_kwargs(self) -> dict:
        """Keyword arguments that rebuild this problem (labels kept exactly)."""
        kw = dict(K=self.K, d=self.d, loss=self.loss, bias=self.bias,
                  lam_W=self.lam_W, lam_H=self.lam_H, lam_b=self.lam_b)
        if self.soft:
            kw["labels"] = self.labels
        elif not self.label_set.class_major:
            kw["labels"] = np.asarray(self.label_set.y)
        elif self.balanced:
            kw["n"] = self.n
        else:
            kw["counts"] = self.counts
        return kw

    # -- what solvers and simulators ask the model -----------------------------------
    model = "ufm"

    def blocks(self) -> dict:
        """Names and shapes of the trainable blocks: ``{"W": (K, d), "H": (d, N)}`` (+ ``"b": (K,)``).

        Returns
        -------
        dict
            Block name -> shape, in a fixed order.
        """
        out = {"W": (self.K, self.d), "H": (self.d, self.N)}
        if self.bias:
            out["b"] = (self.K,)
        return out

    def features(self, state: dict) -> np.ndarray:
        """The features ``H`` (d x N) of a state (a dict of the blocks of :meth:`blocks`).

        Parameters
        ----------
        state : dict of ndarray
            The blocks of :meth:`blocks`.

        Returns
        -------
        ndarray (d, N)
            ``state["H"]``.
        """
        return state["H"]

    def objective(self, state: dict) -> float:
        """The objective at a state (:func:`ufm.losses.objective`).

        Parameters
        ----------
        state : dict of ndarray
            The blocks of :meth:`blocks`.

        Returns
        -------
        float
            The regularized objective.
        """
        return _losses.objective(self, state["W"], state["H"], state.get("b"))

    def gradients(self, state: dict) -> dict:
        """Gradients of :meth:`objective`, one entry per block (:func:`ufm.losses.gradients`).

        Parameters
        ----------
        state : dict of ndarray
            The blocks of :meth:`blocks`.

        Returns
        -------
        dict of ndarray
            Same keys as ``state``.
        """
        dW, dH, db = _losses.gradients(self, state["W"], state["H"], state.get("b"))
        out = {"W": dW, "H": dH}
        if db is not None:
            out["b"] = db
        return out

    @property
    def has_weight_decay(self) -> bool:
        """True when some block is regularized (the flow then runs in plain time)."""
        return self.lam_W > 0 or self.lam_H > 0 or self.lam_b > 0

    def kernel_binding(self, Y: np.ndarray, loss_id: int, dtype) -> "_UFMKernels":
        """How the compiled kernels (:mod:`ufm._kernels`) run this model, on targets ``Y``.

        Parameters
        ----------
        Y : ndarray (K, N)
            The loss's targets, in ``dtype``.
        loss_id : int
            The compiled loss (the loss's ``kernel_id``).
        dtype : numpy dtype
            Floating type of the run.

        Returns
        -------
        _UFMKernels
            GD on a batch of seeds and the flow's velocity.
        """
        return _UFMKernels(self, Y, loss_id, dtype)

    def kernel_workspace(self, mode: str) -> dict:
        """Floats of this model's own buffers, for the memory guard of :func:`ufm.simulate`.

        Parameters
        ----------
        mode : {"gd", "flow"}
            GD (per running seed) or the flow (one seed).

        Returns
        -------
        dict
            ``{"kernel": floats the kernel holds beyond the logits, "features": floats of
            computing the features once}`` (``H`` is a view: 0).
        """
        d, N = self.d, self.N
        # above N, the GD kernel works on H^T: a transposed copy and its gradient
        kernel = d * N + (2 * d * N if d > N else 0) if mode == "gd" else 0
        return {"kernel": kernel, "features": 0}

    def convex_form(self, reduce="auto"):
        """The convex form (4.1) of this problem (:func:`ufm.convex.form_of`).

        Parameters
        ----------
        reduce : "auto", True or False
            Class-collapse hard labels (``"auto"``, ``True``) or keep one column per example.

        Returns
        -------
        ufm.convex.Form
            The form.
        """
        from .convex import Form, require_attained

        mu = self.mu
        require_attained(self.loss, mu, "lam_W and lam_H")
        if (self.lam_W > 0) != (self.lam_H > 0):
            from .closed_form import NotApplicable

            raise NotApplicable("lam_W and lam_H must be both positive (with one of them 0 the infimum is not "
                                "attained)")
        bias = "none" if not self.bias else ("free" if self.lam_b == 0 else "regularized")
        if reduce not in ("auto", True, False):
            raise ValueError(f"reduce must be 'auto', True or False, got {reduce!r}.")
        if reduce is True and self.soft:
            raise ValueError("reduce=True needs hard labels; soft labels have no class-collapsed form.")
        if not self.soft and reduce in ("auto", True):
            counts = np.asarray(self.counts, dtype=float)
            return Form(self, "collapsed", self.loss.targets(np.eye(self.K)), counts / self.N, mu, self.loss, bias,
                        self.lam_b, 1.0 / np.sqrt(counts), None)
        return Form(self, "full", self.loss.targets(self.Y), np.full(self.N, 1.0 / self.N), mu, self.loss, bias,
                    self.lam_b, None, None)

    def svm_applies(self) -> tuple[bool, str]:
        """Whether the max-margin program (:func:`ufm.convex.svm`) is this problem's limit, and why."""
        if "svm" not in self.loss.closed_forms or self.lam_W > 0 or self.lam_H > 0 or self.bias:
            return False, "svm is the limit of CE without weight decay and without bias"
        return True, "nuclear-norm SVM"

    def replace(self, **changes):
        """A copy with some fields changed (validated again); keeps the class of ``self``.

        Parameters
        ----------
        **changes
            Constructor arguments to change.

        Returns
        -------
        UFMProblem
            The new problem (same class as ``self``).
        """
        kw = self._init_kwargs()
        if {"n", "counts", "labels"} & changes.keys():
            for key in ("n", "counts", "labels"):
                kw.pop(key, None)
        if "labels" in changes:
            kw.pop("K")
        return type(self)(**{**kw, **changes})

    def as_dict(self) -> dict:
        """Scalar parameters as a JSON-friendly dict (soft labels are not included)."""
        out = dict(K=self.K, d=self.d, loss=str(self.loss), bias=self.bias,
                   lam_W=self.lam_W, lam_H=self.lam_H, lam_b=self.lam_b)
        if self.balanced:
            out["n"] = self.n
        elif self.counts is not None:
            out["counts"] = list(self.counts)
        return out

    def __repr__(self) -> str:
        size = f"n={self.n}" if self.balanced else (f"counts={list(self.counts)}" if self.counts else f"soft N={self.N}")
        bias = f", bias=True, lam_b={self.lam_b:g}" if self.bias else ""
        return (f"UFMProblem(K={self.K}, {size}, d={self.d}, loss={str(self.loss)!r}, "
                f"lam_W={self.lam_W:g}, lam_H={self.lam_H:g}{bias})")


@dataclass(frozen=True, eq=False)
class LayerPeeledProblem:
    """Layer-peeled model with norm constraints (Fang et al. 2021; THEORY §1.3).

    ``min_{W,H} (1/N) sum CE(W h_{k,i}, k)`` subject to
    ``(1/K) sum_k ||w_k||^2 <= E_W`` and ``(1/K) sum_k (1/n_k) sum_i ||h_{k,i}||^2 <= E_H``.
    No bias, no weight decay: the energies play their role.

    Parameters
    ----------
    K : int
        Number of classes, ``K >= 2``.
    n, counts : int or sequence of int
        Balanced count per class, or one count per class.
    d : int
        Feature dimension.
    E_W, E_H : float
        Energy budgets (> 0) of the classifier rows and of the features.

    References
    ----------
    Fang, He, Long, Su, arXiv 2101.12699 (PNAS 2021); THEORY.md §1.3, §3.1.
    """

    K: int | None = None
    n: int | None = None
    counts: tuple[int, ...] | None = None
    d: int | None = None
    E_W: float = 1.0
    E_H: float = 1.0

    loss = CrossEntropy()
    bias = False
    model = "layer_peeled"

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        if self.K is None:
            raise ValueError("K (number of classes) is required.")
        K = _check_int("K", self.K, 2)
        if self.d is None:
            raise ValueError("d (feature dimension) is required.")
        set_("d", _check_int("d", self.d, 1))
        lab = Labels.build(K, self.n, self.counts, None, "LayerPeeledProblem")
        set_("label_set", lab)
        set_("K", lab.K)
        set_("counts", lab.counts)
        set_("n", lab.n)
        for name in ("E_W", "E_H"):
            v = _check_nonneg(name, getattr(self, name))
            if v == 0:
                raise ValueError(f"{name} must be > 0 (an energy budget), got 0.")
            set_(name, v)

    @property
    def N(self) -> int:
        return int(sum(self.counts))

    @property
    def balanced(self) -> bool:
        return self.n is not None

    @property
    def soft(self) -> bool:
        return False

    def blocks(self) -> dict:
        """Names and shapes of the blocks: ``{"W": (K, d), "H": (d, N)}``."""
        return {"W": (self.K, self.d), "H": (self.d, self.N)}

    def features(self, state: dict) -> np.ndarray:
        """The features ``H`` (d x N) of a state.

        Parameters
        ----------
        state : dict of ndarray
            The blocks of :meth:`blocks`.

        Returns
        -------
        ndarray (d, N)
            ``state["H"]``.
        """
        return state["H"]

    @property
    def y(self) -> np.ndarray:
        return self.label_set.y

    @property
    def Y(self) -> np.ndarray:
        return self.label_set.Y

    def as_dict(self) -> dict:
        """Scalar parameters as a JSON-friendly dict.

        Returns
        -------
        dict
            ``K``, ``d``, ``E_W``, ``E_H`` and ``n`` or ``counts``.
        """
        out = dict(K=self.K, d=self.d, E_W=self.E_W, E_H=self.E_H)
        if self.balanced:
            out["n"] = self.n
        else:
            out["counts"] = list(self.counts)
        return out



def _one_hot(y, K) -> np.ndarray:
    """The K x N one-hot matrix of the labels ``y`` (read-only)."""
    Y = np.zeros((K, len(y)))
    Y[y, np.arange(len(y))] = 1.0
    Y.setflags(write=False)
    return Y


def _finite_matrix(name: str, value, ndim: int = 2) -> np.ndarray:
    arr = np.array(value, dtype=np.float64)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array, got shape {arr.shape}.")
    if arr.size == 0:
        raise ValueError(f"{name} is empty.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf; pass finite values.")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class AnchoredUFM(UFMProblem):
    """Anchored UFM (M1, THEORY §8.1): the standard UFM plus a pull toward fixed features.

    Objective (halved convention, THEORY §0.1)::

        g(W H + b 1^T) + lam_W/2 ||W||^2 + lam_H/2 ||H||^2 + lam_b/2 ||b||^2 + beta/2 ||H - H_anchor||_F^2

    ``H_anchor`` (d x N) plays the role of input or intermediate features;
    large ``beta`` ties ``H`` to them (a simple map from inputs to features),
    small ``beta`` frees it (an expressive map); ``beta = 0`` is the plain UFM.
    All other parameters are those of :class:`UFMProblem`; ``d`` defaults to
    ``H_anchor.shape[0]``.

    The model of Tirer, Huang, Niles-Weed (arXiv 2210.16658, Eq. 2) writes the
    MSE version as ``1/(2Kn)||WH-Y||^2 + lam_W/(2K)||W||^2 + lam_H/(2Kn)||H||^2 +
    beta/(2Kn)||H-H_0||^2``; with ``loss="mse"`` it equals this objective with
    ``lam_W -> lam_W/K``, ``lam_H -> lam_H/(Kn)``, ``beta -> beta/(Kn)``.

    Parameters
    ----------
    K, n, counts, d, loss, bias, lam_W, lam_H, lam_b, labels
        As in :class:`UFMProblem`.
    H_anchor : array (d, N)
        The anchor features ``H_0``.
    beta : float
        Strength of the pull toward ``H_anchor`` (``beta >= 0``).

    References
    ----------
    THEORY.md §8.1 (M1); Tirer, Huang, Niles-Weed 2023, arXiv 2210.16658.
    """

    H_anchor: np.ndarray | None = field(default=None, repr=False)
    beta: float = 0.0

    def __post_init__(self):
        if self.H_anchor is None:
            raise ValueError("H_anchor (d x N fixed features) is required for an AnchoredUFM.")
        H0 = _finite_matrix("H_anchor", self.H_anchor)
        object.__setattr__(self, "H_anchor", H0)
        if self.d is None:
            object.__setattr__(self, "d", H0.shape[0])
        super().__post_init__()
        object.__setattr__(self, "beta", _check_nonneg("beta", self.beta, "the anchor strength"))
        if H0.shape != (self.d, self.N):
            raise ValueError(f"H_anchor must be d x N = {self.d} x {self.N}, got {H0.shape}.")

    def as_dict(self) -> dict:
        """Scalar parameters as a JSON-friendly dict (the anchor is not included).

        Returns
        -------
        dict
            The parameters of :meth:`UFMProblem.as_dict` plus ``beta`` and ``model="anchored"``.
        """
        return {**super().as_dict(), "beta": self.beta, "model": "anchored"}

    def _init_kwargs(self) -> dict:
        return {**super()._init_kwargs(), "H_anchor": self.H_anchor, "beta": self.beta}

    model = "anchored"

    @property
    def has_weight_decay(self) -> bool:
        """True when some block is regularized or the anchor pulls (``beta > 0``)."""
        return super().has_weight_decay or self.beta > 0

    def kernel_binding(self, Y, loss_id, dtype) -> "_UFMKernels":
        """The standard UFM's kernels with the anchor term (see :meth:`UFMProblem.kernel_binding`).

        Parameters
        ----------
        Y : ndarray (K, N)
            The loss's targets.
        loss_id : int
            The compiled loss.
        dtype : numpy dtype
            Floating type of the run.

        Returns
        -------
        object
            GD on a batch of seeds and the flow's velocity.
        """
        return _UFMKernels(self, Y, loss_id, dtype, self.H_anchor if self.beta > 0 else None, self.beta)

    def convex_form(self, reduce="auto"):
        """None: the pull toward ``H_anchor`` is not a function of ``W H`` (raises ``NotApplicable``).

        Parameters
        ----------
        reduce : "auto", True or False
            As in :meth:`UFMProblem.convex_form`.

        Returns
        -------
        ufm.convex.Form
            The form.
        """
        from .closed_form import NotApplicable

        raise NotApplicable("the anchored UFM has no nuclear-norm form (the pull toward H_anchor is not a "
                            "function of W H); simulate it or solve it by block-coordinate descent")

    def svm_applies(self) -> tuple[bool, str]:
        """``(False, why)``: no max-margin program for the anchored UFM here."""
        return False, "the anchored UFM has no max-margin program here"

    def plain(self) -> UFMProblem:
        """The same problem without the anchor term, as a :class:`UFMProblem`."""
        kw = super()._init_kwargs()
        return UFMProblem(**kw)

    def __repr__(self) -> str:
        return UFMProblem.__repr__(self).replace("UFMProblem(", "AnchoredUFM(", 1)[:-1] + f", beta={self.beta:g})"


@dataclass(frozen=True, eq=False)
class InputCoupledUFM:
    """Input-coupled (input-linear) UFM (M2, THEORY §8.2): features ``H = A Phi``.

    Objective (halved convention, ``g`` the mean loss over the N examples)::

        g(W A Phi) + lam_W/2 ||W||_F^2 + lam_H/2 ||A Phi||_F^2 + lam_A/2 ||A||_F^2

    with fixed input encodings ``Phi`` (p x N), trainable ``A`` (d x p) and
    ``W`` (K x d). No bias. Gradient flow on ``(W, A)`` is the UFM flow with the
    feature update preconditioned by the input kernel ``K_x = Phi^T Phi``
    (THEORY §8.2 (c)); ``Phi = I`` gives back the standard UFM. With
    ``Phi = [attribute one-hots; sigma I]`` (:meth:`from_setting`), ``sigma`` is
    the per-item capacity: semantic modes (large singular values of ``Phi``)
    are learned first, and a large ``sigma`` lets the end state approach the ETF.

    ``lam_H`` penalizes the features themselves, as networks trained with a
    feature decay do (M2-H, THEORY §8.2b); ``lam_H = 0`` (the default) is M2.
    With ``lam_A = 0``, ``lam_H > 0`` and ``Phi`` of full column rank the end
    state is the standard UFM optimum with ``lam_W``, ``lam_H`` (the simplex ETF
    for balanced CE) whatever ``Phi`` is: the input kernel shapes only the path.

    Parameters
    ----------
    Phi : array (p, N)
        Fixed input encodings, one column per example.
    d : int
        Feature dimension (rows of ``A``).
    loss : str or Loss
        As in :class:`UFMProblem` (a name of :data:`ufm.loss_registry.LOSSES` or a loss object).
    lam_W, lam_A : float
        Weight decays (halved) of ``W`` and ``A``.
    labels : array, optional
        ``None`` (default): one distinct class per column of ``Phi`` (K = N).
        Otherwise as in :class:`UFMProblem` (integer vector or soft K x N).
    attributes : array (N, F), optional
        Latent attributes of the items, for semantic metrics while simulating.
    sigma : float, optional
        The capacity used to build ``Phi`` (informational, kept in ``meta``).
    lam_H : float
        Feature penalty (halved): ``lam_H/2 ||A Phi||_F^2`` (THEORY §8.2b). Default 0 (M2).

    References
    ----------
    THEORY.md §8.2 (M2), §8.2b (M2-H), §6.3; Saxe, McClelland, Ganguli 2019, arXiv 1810.10531.
    """

    Phi: np.ndarray | None = field(default=None, repr=False)
    d: int | None = None
    loss: str | Loss = "ce"
    lam_W: float = 0.0
    lam_A: float = 0.0
    labels: np.ndarray | None = field(default=None, repr=False)
    attributes: np.ndarray | None = field(default=None, repr=False)
    sigma: float | None = None
    lam_H: float = 0.0

    bias = False

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        if self.Phi is None:
            raise ValueError("Phi (p x N input encodings) is required, e.g. setting.encoding(sigma).")
        Phi = _finite_matrix("Phi", self.Phi)
        set_("Phi", Phi)
        N = Phi.shape[1]
        if self.d is None:
            raise ValueError("d (feature dimension, rows of A) is required.")
        set_("d", _check_int("d", self.d, 1))
        set_("loss", get_loss(self.loss))
        if self.labels is None:
            if N < 2:
                raise ValueError("Phi has a single column; distinct labels need N >= 2 items.")
            lab = Labels.build(K=N, n=1, who="InputCoupledUFM")
        else:
            lab = Labels.build(labels=self.labels, who="InputCoupledUFM")
        if lab.N != N:
            raise ValueError(f"labels describe N={lab.N} examples but Phi has {N} columns; one label per column.")
        set_("label_set", lab)
        for name in ("lam_W", "lam_A", "lam_H"):
            set_(name, _check_nonneg(name, getattr(self, name)))
        if self.attributes is not None:
            att = np.array(self.attributes)
            if att.ndim != 2 or att.shape[0] != N or not np.issubdtype(att.dtype, np.integer):
                raise ValueError(f"attributes must be an integer N x F table with N={N} rows, got "
                                 f"{att.dtype} array of shape {att.shape}.")
            att.setflags(write=False)
            set_("attributes", att)
        if self.sigma is not None:
            set_("sigma", _check_nonneg("sigma", self.sigma, "the per-item capacity"))

    @classmethod
    def from_setting(cls, setting, sigma: float, d: int | None = None, loss: str | Loss = "ce", *,
                     lam_W: float = 0.0, lam_A: float = 0.0, strengths=None,
                     lam_H: float = 0.0) -> "InputCoupledUFM":
        """The M2 model of a synthetic setting: ``Phi = setting.encoding(sigma)``, distinct labels.

        ``d`` defaults to ``N`` (enough for any optimum: rank <= min(K, N)).
        ``strengths`` weights the attribute blocks (see ``Setting.encoding``).

        Parameters
        ----------
        setting : Setting
            A synthetic setting (:mod:`ufm.settings`).
        sigma : float
            Per-item capacity.
        d : int, optional
            Feature dimension.
        loss : str or Loss
            The loss (as in :class:`UFMProblem`).
        lam_W, lam_A : float
            Weight decays (halved) of ``W`` and ``A``.
        strengths : float or sequence of float, optional
            Weights of the attribute blocks.
        lam_H : float
            Feature penalty ``lam_H/2 ||A Phi||_F^2`` (halved, THEORY §8.2b).

        Returns
        -------
        InputCoupledUFM
            The model, with ``attributes`` and ``sigma`` of the setting.
        """
        from .settings import Setting

        if not isinstance(setting, Setting):
            named = "" if not isinstance(setting, str) else (
                f"; for the setting named {setting!r} pass ufm.settings.named_setting({setting!r})")
            raise _ArgumentTypeError(f"setting must be a Setting (ufm.settings), got {type(setting).__name__}: build "
                                     f"one, e.g. ufm.factorial((2, 2, 2)){named}.")
        Phi = setting.encoding(sigma, strengths=strengths)
        return cls(Phi=Phi, d=setting.N if d is None else d, loss=loss, lam_W=lam_W, lam_A=lam_A,
                   labels=np.asarray(setting.labels), attributes=setting.attributes, sigma=sigma, lam_H=lam_H)

    # label structure: the shared Labels value
    K = property(lambda self: self.label_set.K, doc="Number of classes.")
    N = property(lambda self: self.label_set.N, doc="Number of examples (columns of Phi).")
    Y = property(lambda self: self.label_set.Y, doc="K x N label matrix.")
    y = property(UFMProblem.y.fget, doc="Integer labels (hard labels only).")
    soft = property(lambda self: self.label_set.soft)
    counts = property(lambda self: self.label_set.counts)
    balanced = property(lambda self: self.label_set.n is not None)

    @property
    def p(self) -> int:
        """Input dimension (rows of ``Phi``)."""
        return int(self.Phi.shape[0])

    @property
    def input_kernel(self) -> np.ndarray:
        """``K_x = Phi^T Phi`` (N x N), the preconditioner of the feature flow."""
        return self.Phi.T @ self.Phi

    @property
    def mu(self) -> float:
        """The nuclear-norm weight of the convex form: ``sqrt(lam_W lam_A)`` (THEORY §8.2 (b)); with a
        feature penalty (``lam_H > 0``) ``sqrt(lam_W)``, the weight on the reduced encoding of
        :meth:`convex_encoding` (THEORY §8.2b)."""
        return math.sqrt(self.lam_W * self.lam_A) if self.lam_H == 0 else math.sqrt(self.lam_W)

    def convex_encoding(self, rtol: float = 1e-10):
        """The encoding, lift and block decay of the convex form (THEORY §8.2 (b), §8.2b).

        The convex form is ``min_M g(M Phi_c) + sqrt(lam_W lam_c) ||M||_*`` over ``M`` (K x rows of
        ``Phi_c``); the balanced split ``M = W B`` with decays ``(lam_W, lam_c)`` gives
        ``A = B R`` (``A = B`` when ``R`` is ``None``).

        * ``lam_H = 0``: ``Phi_c = Phi``, ``R = None``, ``lam_c = lam_A`` (M2 as it is).
        * ``lam_H > 0``: with the thin SVD ``Phi = U diag(s) V^T`` (the ``r`` singular values above
          ``rtol * s_1``), the penalty ``1/2 tr(A (lam_A I + lam_H Phi Phi^T) A^T)`` is least at
          ``A = C U^T``; with ``c_i = sqrt(lam_A + lam_H s_i^2)`` and ``B = C diag(c)`` it is
          ``||B||^2/2`` and ``A Phi = B Phi_c``, so ``Phi_c = diag(s_i/c_i) V^T`` (r x N),
          ``R = diag(1/c_i) U^T`` (r x p) and ``lam_c = 1``.

        Parameters
        ----------
        rtol : float
            Singular values of ``Phi`` at most ``rtol * s_1`` count as zero.

        Returns
        -------
        Phi_c : ndarray
            The encoding of the convex form.
        R : ndarray or None
            The lift from the split's second block to ``A``.
        lam_c : float
            The decay of the split's second block.
        """
        if self.lam_H == 0:
            return self.Phi, None, self.lam_A
        U, sv, Vt = np.linalg.svd(self.Phi, full_matrices=False)
        r = numerical_rank(sv, rtol)
        U, sv, Vt = U[:, :r], sv[:r], Vt[:r]
        c = np.sqrt(self.lam_A + self.lam_H * sv * sv)
        return (sv / c)[:, None] * Vt, (1.0 / c)[:, None] * U.T, 1.0

    def convex_state(self, M) -> dict:
        """The state ``{"W", "A"}`` of least objective with logits ``M Phi_c`` (:meth:`convex_encoding`).

        ``W, B`` is the balanced split of ``M`` (THEORY §4) with decays ``(lam_W, lam_c)``, and
        ``A = B R``; at an optimum ``M`` of the convex form the objective of this state equals the
        convex value (THEORY §8.2 (b), §8.2b).

        Parameters
        ----------
        M : ndarray
            A point of the convex form (K x rows of ``Phi_c``).

        Returns
        -------
        dict of ndarray
            ``{"W": (K, d), "A": (d, p)}``.

        Raises
        ------
        NotApplicable
            If ``d`` is below the rank of ``M``.
        """
        from .closed_form import balanced_split

        _, R, lam_c = self.convex_encoding()
        W, B = balanced_split(M, self.d, self.lam_W, lam_c, rank_tol=1e-10, floor=1e-300, name="M*")
        return {"W": W, "A": B if R is None else B @ R}

    # -- what solvers and simulators ask the model -----------------------------------
    model = "input_coupled"

    def blocks(self) -> dict:
        """Names and shapes of the trainable blocks: ``{"W": (K, d), "A": (d, p)}``.

        Returns
        -------
        dict
            Block name -> shape, in a fixed order.
        """
        return {"W": (self.K, self.d), "A": (self.d, self.p)}

    def features(self, state: dict) -> np.ndarray:
        """The features ``H = A Phi`` (d x N) of a state.

        Parameters
        ----------
        state : dict of ndarray
            The blocks of :meth:`blocks`.

        Returns
        -------
        ndarray (d, N)
            ``A Phi``.
        """
        return state["A"] @ self.Phi

    def objective(self, state: dict) -> float:
        """The objective at a state (:func:`ufm.losses.input_coupled_objective`).

        Parameters
        ----------
        state : dict of ndarray
            The blocks of :meth:`blocks`.

        Returns
        -------
        float
            The regularized objective.
        """
        return _losses.input_coupled_objective(self, state["W"], state["A"])

    def gradients(self, state: dict) -> dict:
        """Gradients of :meth:`objective` (:func:`ufm.losses.input_coupled_gradients`).

        Parameters
        ----------
        state : dict of ndarray
            The blocks of :meth:`blocks`.

        Returns
        -------
        dict of ndarray
            ``{"W": dW, "A": dA}``.
        """
        dW, dA = _losses.input_coupled_gradients(self, state["W"], state["A"])
        return {"W": dW, "A": dA}

    @property
    def has_weight_decay(self) -> bool:
        """True when ``W``, ``A`` or the features ``A Phi`` are regularized."""
        return self.lam_W > 0 or self.lam_A > 0 or self.lam_H > 0

    def kernel_binding(self, Y, loss_id, dtype) -> "_InputCoupledKernels":
        """How the compiled kernels run this model (see :meth:`UFMProblem.kernel_binding`).

        Parameters
        ----------
        Y : ndarray (K, N)
            The loss's targets.
        loss_id : int
            The compiled loss.
        dtype : numpy dtype
            Floating type of the run.

        Returns
        -------
        object
            GD on a batch of seeds and the flow's velocity.
        """
        return _InputCoupledKernels(self, Y, loss_id, dtype)

    def kernel_workspace(self, mode: str) -> dict:
        """Floats of this model's own buffers (see :meth:`UFMProblem.kernel_workspace`); ``A Phi`` is computed.

        Parameters
        ----------
        mode : {"gd", "flow"}
            GD (per running seed) or the flow (one seed).

        Returns
        -------
        dict
            ``{"kernel": floats, "features": floats}``.
        """
        dN = self.d * self.N
        return {"kernel": 2 * dN + (self.d * self.p if mode == "gd" else 0), "features": 2 * dN}

    def convex_form(self, reduce="auto"):
        """The convex form ``min_M g(M Phi_c) + mu ||M||_*`` (:func:`ufm.convex.form_of`).

        Without a feature penalty it is (8.2b), ``Phi_c = Phi`` and ``mu = sqrt(lam_W lam_A)``
        (THEORY §8.2 (b)); with ``lam_H > 0`` it is the reduced form of THEORY §8.2b,
        ``Phi_c = diag(s_i / sqrt(lam_A + lam_H s_i^2)) V^T`` and ``mu = sqrt(lam_W)``
        (:meth:`convex_encoding`), which needs ``lam_W > 0``.

        Parameters
        ----------
        reduce : "auto", True or False
            As in :meth:`UFMProblem.convex_form` (no effect here: one column per example).

        Returns
        -------
        ufm.convex.Form
            The form.
        """
        from .convex import Form, require_attained

        if self.lam_H > 0 and self.lam_W == 0:
            from .closed_form import NotApplicable

            raise NotApplicable("with a feature penalty (lam_H > 0) lam_W must be > 0 too: with lam_W = 0 the "
                                "infimum is approached by growing W and shrinking A, and never attained")
        require_attained(self.loss, self.mu, "lam_W and lam_A")
        return Form(self, "input_coupled", self.loss.targets(self.Y), np.full(self.N, 1.0 / self.N), self.mu,
                    self.loss, "none", 0.0, None, self.convex_encoding()[0])

    def svm_applies(self) -> tuple[bool, str]:
        """Whether the input-coupled max-margin program is this problem's limit, and why."""
        if "svm" not in self.loss.closed_forms or self.mu > 0 or self.lam_H > 0 or self.soft:
            return False, "svm needs an unregularized CE input-coupled problem with hard labels"
        return True, "input-coupled max margin"

    def as_dict(self) -> dict:
        """Scalar parameters as a JSON-friendly dict (``Phi`` and the labels are not included).

        Returns
        -------
        dict
            ``model``, ``K``, ``N``, ``p``, ``d``, ``loss``, ``lam_W``, ``lam_A``, ``lam_H``, ``sigma``.
        """
        return dict(model="input_coupled", K=self.K, N=self.N, p=self.p, d=self.d, loss=str(self.loss),
                    lam_W=self.lam_W, lam_A=self.lam_A, lam_H=self.lam_H, sigma=self.sigma)

    def __repr__(self) -> str:
        sig = "" if self.sigma is None else f", sigma={self.sigma:g}"
        feat = f", lam_H={self.lam_H:g}" if self.lam_H > 0 else ""
        return (f"InputCoupledUFM(K={self.K}, N={self.N}, p={self.p}, d={self.d}, loss={str(self.loss)!r}, "
                f"lam_W={self.lam_W:g}, lam_A={self.lam_A:g}{feat}{sig})")


# -- how the compiled kernels run a model (ufm.simulate asks the model for this) ----------
class _UFMKernels:
    """GD and gradient flow of the standard (and anchored) UFM on :mod:`ufm._kernels` (blocks W, H, b)."""

    def __init__(self, problem, Y, loss_id, dtype, H_anchor=None, beta=0.0):
        self.problem, self.Y, self.loss_id = problem, Y, loss_id
        self.Hanc = np.ascontiguousarray(H_anchor if H_anchor is not None else np.zeros((1, 1)), dtype=dtype)
        self.beta = float(beta) if H_anchor is not None else 0.0
        self._drop_b = False

    def prepare(self, batch: dict) -> None:
        """The kernels always take a bias block: a zero one is added (and dropped by :meth:`states`)."""
        if "b" not in batch:
            batch["b"] = np.zeros((batch["W"].shape[0], self.problem.K), dtype=batch["W"].dtype)
            self._drop_b = True

    def gd(self, batch: dict, lr: float, n_steps: int, recording=None) -> np.ndarray:
        from . import _kernels as k

        p = self.problem
        return k.ufm_gd(batch["W"], batch["H"], batch["b"], self.Y, self.Hanc, p.lam_W, p.lam_H, p.lam_b, self.beta,
                        self.loss_id, p.bias, lr, n_steps, recording)

    def states(self, batch: dict) -> dict:
        batch = dict(batch)
        if self._drop_b:
            batch.pop("b")
        return batch

    def flow(self):
        """``(rhs, data)`` of the flow's velocity for the integrator."""
        from . import _kernels as k

        p = self.problem
        data = (p.K, p.d, p.N, self.Y, self.Hanc, float(p.lam_W), float(p.lam_H), float(p.lam_b),
                float(self.beta), self.loss_id, bool(p.bias))
        return k.ufm_flow_rhs, data


class _InputCoupledKernels:
    """GD and gradient flow of the input-coupled UFM on :mod:`ufm._kernels` (blocks W, A)."""

    def __init__(self, problem, Y, loss_id, dtype):
        self.problem, self.Y, self.loss_id = problem, Y, loss_id
        self.Phi = np.ascontiguousarray(problem.Phi, dtype=dtype)

    def prepare(self, batch: dict) -> None:
        """Nothing to add: the kernels take exactly the blocks W and A."""

    def gd(self, batch: dict, lr: float, n_steps: int, recording=None) -> np.ndarray:
        from . import _kernels as k

        p = self.problem
        return k.icm_gd(batch["W"], batch["A"], self.Phi, self.Y, p.lam_W, p.lam_A, p.lam_H, self.loss_id, lr,
                        n_steps, recording)

    def states(self, batch: dict) -> dict:
        return dict(batch)

    def flow(self):
        """``(rhs, data)`` of the flow's velocity for the integrator."""
        from . import _kernels as k

        p = self.problem
        data = (p.K, p.d, p.p, np.ascontiguousarray(p.Phi), self.Y, float(p.lam_W), float(p.lam_A), float(p.lam_H),
                self.loss_id)
        return k.icm_flow_rhs, data
