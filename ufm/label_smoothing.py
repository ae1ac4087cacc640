"""Label-smoothed cross-entropy: the cross-entropy against ``(1 - eps) y + eps/K`` (THEORY §1.5).

The whole loss lives in this file; one line of :data:`ufm.loss_registry.LOSSES` registers it.
It is a :class:`~ufm.losses.CrossEntropy` whose targets are smoothed, so everything a
cross-entropy knows carries over unchanged: the compiled kernels evaluate it as the
cross-entropy of the smoothed target matrix (kernel id 0 takes any column-stochastic
targets), its convex conjugate is the negative entropy on the simplex shifted to the
smoothed target, ``-l*(v; t) = Entropy(t + v)`` (the certified duality gap of
:func:`ufm.convex.prox`), and its cvxpy expression is the cross-entropy's.

What changes is the geometry: the smoothed target is a probability vector with no zero
entry, so ``lse(z) - t^T z`` attains its minimum at ``z = log t + c 1``: without weight
decay the optimum has finite logits (the convex form is solved with ``mu = 0``), and no
closed form of the plain cross-entropy (ETF scale, SELI, max margin, mode theory) applies.
For balanced hard labels the optimum is a simplex ETF whose logit margin is
:meth:`LabelSmoothedCE.etf_margin` (THEORY §1.5).

Use it as ``loss="ls_ce"`` (``eps = 0.1``), ``loss="ls_ce(eps=0.05)"`` or
``loss=LabelSmoothedCE(eps=0.05)``::

    >>> import ufm
    >>> p = ufm.UFMProblem(K=4, n=3, d=6, loss="ls_ce(eps=0.05)")
    >>> p.loss
    LabelSmoothedCE(eps=0.05)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .losses import CrossEntropy

__all__ = ["LabelSmoothedCE"]


@dataclass(frozen=True)
class LabelSmoothedCE(CrossEntropy):
    """Cross-entropy against the smoothed targets ``(1 - eps) y + eps/K`` (THEORY §1.5).

    ``(1/N) sum_j [logsumexp(z_j) - t_j^T z_j]`` with ``t_j = (1 - eps) y_j + (eps/K) 1``
    (``y_j`` one-hot or soft): the loss of ``torch.nn.CrossEntropyLoss(label_smoothing=eps)``.

    Parameters
    ----------
    eps : float
        Smoothing, ``0 < eps < 1`` (``eps = 0`` is ``loss="ce"``).

    Examples
    --------
    >>> loss = LabelSmoothedCE(eps=0.1)
    >>> round(loss.etf_margin(K=4), 6)      # log(1 + K (1 - eps)/eps), THEORY §1.5
    3.610918
    """

    eps: float = 0.1

    name = "ls_ce"
    closed_forms = frozenset()        # none of the plain cross-entropy's; see etf_margin

    def __post_init__(self):
        try:
            eps = float(self.eps)
        except (TypeError, ValueError):
            eps = math.nan
        if not 0.0 < eps < 1.0:
            raise ValueError(f"eps (label smoothing) must lie in (0, 1), got {self.eps!r}; eps = 0 is loss='ce'.")
        object.__setattr__(self, "eps", eps)

    def targets(self, Y: np.ndarray) -> np.ndarray:
        """``(1 - eps) Y + eps/K``: column-stochastic with every entry at least ``eps/K``.

        Parameters
        ----------
        Y : ndarray (K, m)
            Label columns (one-hot or column-stochastic).

        Returns
        -------
        ndarray (K, m)
            The smoothed targets.
        """
        Y = np.asarray(Y, dtype=np.float64)
        return (1.0 - self.eps) * Y + self.eps / Y.shape[0]

    def why_not_without_decay(self, names: str) -> None:
        """``None``: the minimum is attained at finite logits, so the convex form is solved with ``mu = 0``.

        Parameters
        ----------
        names : str
            The weight decays (unused).

        Returns
        -------
        None
            Always.
        """
        return None

    def etf_margin(self, K: int, gamma: float = 0.0) -> float:
        """Logit margin ``z_y - z_c`` of the optimum for ``K`` balanced classes (THEORY §1.5).

        ``s* = log(1/q - (K - 1))`` with ``q = gamma + eps/K`` and ``gamma = sqrt(n lam_W lam_H)``;
        0 (the zero solution) when ``K q >= 1``. Without weight decay
        ``s* = log(1 + K (1 - eps)/eps)``, where ``softmax(z) = t`` exactly; ``eps -> 0`` gives
        the cross-entropy's ``log(1/gamma - (K - 1))`` of THEORY §1.2.

        Parameters
        ----------
        K : int
            Number of classes.
        gamma : float
            ``sqrt(n lam_W lam_H)`` (0: no weight decay).

        Returns
        -------
        float
            The margin ``s*``.
        """
        q = float(gamma) + self.eps / K
        return math.log(1.0 / q - (K - 1)) if K * q < 1.0 else 0.0

    def __repr__(self) -> str:
        return f"LabelSmoothedCE(eps={self.eps:g})"
