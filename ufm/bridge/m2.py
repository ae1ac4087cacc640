"""The input-coupled UFM (M2, THEORY §8.2) as a model of an observed Gram trajectory: its flow, its start, its fit.

What :func:`ufm.fit` simulates for ``"input_coupled"``
-------------------------------------------------------
One feature vector per class (the class means of a network are the items of
M2), distinct one-hot labels (``Y = I_K``), features ``H = A Phi`` and logits
``Z = W H``, loss ``g(Z)`` (mean CE or ``1/(2K) ||Z - Y||^2``) plus the
**halved** weight decays ``lam/2 (||W||^2 + ||A||^2)`` (THEORY §0.1), gradient
flow. Seen through ``H`` the flow is the *kernel flow*

    dW/dt = -G H^T - lam W,    dH/dt = -W^T G K_x - lam H,    G = grad_Z g(W H),

where only the input kernel ``K_x = Phi^T Phi`` enters. So the inputs may be
ufm's encoding ``Phi(sigma, strengths) = [attribute one-hots x strengths;
sigma I]`` (:meth:`ufm.settings.Setting.encoding`; then ``sigma`` and the
strengths are fitted), or the user's own inputs (p x K, one column per class)
or kernel (K x K), which are used as given.

The products ``P = W W^T``, ``S = H^T H`` (the feature Gram) and ``Z = W H``
obey a closed system (``dZ = -G S - P G K_x - 2 lam Z``,
``dP = -(G Z^T + Z G^T) - 2 lam P``, ``dS = -(K_x G^T Z + Z^T G K_x) - 2 lam S``),
so the feature dimension never matters beyond ``rank [W0^T, H0] <= 2K``.

Two engines integrate it with the compiled Dormand-Prince integrator of
:mod:`ufm._integrate`:

``"patterns"``
    When the attribute patterns form an association scheme
    (:class:`~ufm.bridge.patterns.PatternAlgebra`; factorial and regular
    hierarchy settings), ``K_x`` is constant on patterns and the start is in
    the algebra (the isotropic start below), ``P``, ``S`` and ``Z`` stay in the
    algebra and the system is ``3R`` scalar ODEs (``R`` patterns): exact, and
    ``O(R^2)`` per right-hand side instead of ``O(K^3)``.
``"dense"``
    ``(W, H)`` in a basis of ``span [W0^T, H0]``: any kernel, any start.

Starts (the scale ``s`` is fitted unless given):

``"isotropic"``
    The wide-layer limit ``W0 W0^T = s^2 I``, ``H0^T H0 = s^2 K_x``,
    ``W0 H0 = 0`` (``A0^T A0 = s^2 I``, ``W0 A0 = 0``).
``"observed"``
    The run's own first record: its class means and classifier rows when the
    run has them (``W0 H0`` included), else its first Gram with an isotropic
    classifier orthogonal to it; both multiplied by one factor so that
    ``||W0||^2 + ||H0||^2 = s^2 (K + tr K_x)``, as in the isotropic start. It
    carries the run's random initialization (the part of a finite-width start
    that shifts the peak and the transition); dense engine only.

References
----------
THEORY.md §0.1, §6.3, §8.2, §8.6; Saxe, McClelland, Ganguli, arXiv 1312.6120
(mode dynamics of two-layer linear networks); Zhao, Papadimitriou,
Thrampoulidis, "Structure Before Collapse", arXiv 2606.26749.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _interrupt
from .. import _kernels as kern
from .._integrate import integrate
from ..metrics import double_centre
from ..problems import InputCoupledUFM
from .patterns import project_patterns, psd_root

__all__ = ["ENGINES", "STARTS", "M2Model", "align_monotone", "align_refined", "at_fraction", "isotropic_init",
           "kernel_flow_rhs_numpy", "pattern_flow_rhs_numpy"]

STARTS = ("isotropic", "observed")

#: Step attempts of one model simulation (a few thousand are typical); a flow that needs more is too stiff
#: for the fit and counts as a failed point of the search.
MAX_STEPS = 50_000
ENGINES = ("auto", "patterns", "dense")


# -- numpy twins of the compiled right-hand sides ------------------------------------------
def _grad_logits(Z, loss_id):
    K = Z.shape[0]
    if loss_id == 0:
        E = np.exp(Z - Z.max(axis=0, keepdims=True))
        G = E / E.sum(axis=0, keepdims=True)
    else:
        G = Z.copy()
    G[np.diag_indices(K)] -= 1.0
    return G / K


def kernel_flow_rhs_numpy(y, data, out):
    """Plain-numpy twin of :func:`ufm._kernels.m2_kernel_flow_rhs` (the kernel flow of the module docstring).

    Parameters
    ----------
    y : array (K d + d K,)
        The state ``[W, H]``, flattened.
    data : tuple
        ``(K, d, K_x, lam_W, lam_A, loss_id)``; ``loss_id`` 0 is CE, 1 MSE (halved weight decays).
    out : array like ``y``
        Receives ``dy/dt``.
    """
    K, d, Kx, lam_W, lam_A, loss_id = data
    W = y[:K * d].reshape(K, d)
    H = y[K * d:].reshape(d, K)
    G = _grad_logits(W @ H, loss_id)
    out[:K * d] = (-G @ H.T - lam_W * W).ravel()
    out[K * d:] = (-(W.T @ G) @ Kx - lam_A * H).ravel()


def pattern_flow_rhs_numpy(y, data, out):
    """Plain-numpy twin of :func:`ufm._kernels.m2_pattern_flow_rhs` (the flow inside the pattern algebra).

    Parameters
    ----------
    y : array (3 R,)
        Eigenvalues ``[z, p, s]`` of ``W H``, ``W W^T`` and ``H^T H``.
    data : tuple
        ``(P, P_inv, valency, k, lam_W, lam_A, loss_id, K)``: the algebra's tables, the kernel's
        eigenvalues, the halved weight decays, the loss (0 CE, 1 MSE) and the number of classes.
    out : array like ``y``
        Receives ``dy/dt``.
    """
    P, Pinv, valency, k, lam_W, lam_A, loss_id, K = data
    R = valency.size
    z, p, s = y[:R], y[R:2 * R], y[2 * R:]
    zeta = Pinv @ z
    if loss_id == 0:
        e = np.exp(zeta - zeta.max())
        g = e / (valency @ e)
    else:
        g = zeta.copy()
    g[0] -= 1.0
    gam = P @ (g / K)
    out[:R] = -gam * (s + p * k) - (lam_W + lam_A) * z
    out[R:2 * R] = -2 * gam * z - 2 * lam_W * p
    out[2 * R:] = -2 * k * gam * z - 2 * lam_A * s


# -- monotone alignment -----------------------------------------------------------------------
def align_monotone(D) -> tuple[np.ndarray, float]:
    """Non-decreasing indices ``j_i`` minimizing ``sum_i D[i, j_i]`` (dynamic programming).

    ``j_0 <= j_1 <= ... <= j_{T-1}``; O(T J).

    Parameters
    ----------
    D : array (T, J)
        Cost matrix (observed records x model times).

    Returns
    -------
    j : ndarray of int (T,)
        The indices.
    cost : float
        The minimal mean cost.
    """
    D = np.asarray(D, dtype=np.float64)
    T, J = D.shape
    cost = np.empty_like(D)
    cost[0] = D[0]
    for i in range(1, T):
        cost[i] = D[i] + np.minimum.accumulate(cost[i - 1])
    path = np.empty(T, dtype=np.int64)
    j = int(np.argmin(cost[-1]))
    path[-1] = j
    for i in range(T - 2, -1, -1):
        j = int(np.argmin(cost[i, : j + 1]))
        path[i] = j
    return path, float(cost[-1, path[-1]] / T)


def align_refined(inner, adjacent) -> tuple[np.ndarray, float]:
    """Monotone alignment of unit observations to a model curve, refined between model times.

    ``inner[i, j]`` is ``<o_i, m_j>`` for unit observations ``o_i`` and unit
    model points ``m_j``; ``adjacent[j] = <m_j, m_{j+1}>``. The dynamic
    programme of :func:`align_monotone` on ``||o_i - m_j||^2 = 2 - 2 inner``
    picks a model point per record; each record then moves to the nearest
    point of the two segments ``[m_{j-1}, m_j]``, ``[m_j, m_{j+1}]``
    (straight chords of the model curve), which removes the discretization of
    the model's time grid from the cost.

    Parameters
    ----------
    inner : array (T, J)
        Inner products of the unit observations with the unit model points.
    adjacent : array (J - 1,)
        Inner products of consecutive model points.

    Returns
    -------
    frac : ndarray (T,)
        Fractional model indices ``j + theta`` of the records.
    cost : float
        Mean squared distance of the records to their points on the model curve.
    """
    inner = np.asarray(inner, dtype=np.float64)
    T, J = inner.shape
    path, _ = align_monotone(np.maximum(2.0 - 2.0 * inner, 0.0))
    frac = path.astype(np.float64)
    d2 = np.maximum(2.0 - 2.0 * inner[np.arange(T), path], 0.0)
    for lo in (-1, 0):
        j = path + lo
        ok = (j >= 0) & (j + 1 < J)
        jj = np.clip(j, 0, J - 2)
        a = np.maximum(2.0 - 2.0 * inner[np.arange(T), jj], 0.0)          # ||o - m_j||^2
        step2 = np.maximum(2.0 - 2.0 * adjacent[jj], 0.0)                  # ||m_{j+1} - m_j||^2
        proj = inner[np.arange(T), jj + 1] - inner[np.arange(T), jj] - adjacent[jj] + 1.0
        theta = np.where(step2 > 0, np.clip(proj / np.where(step2 > 0, step2, 1.0), 0.0, 1.0), 0.0)
        cand = np.maximum(a - 2.0 * theta * proj + theta ** 2 * step2, 0.0)
        better = ok & (cand < d2)
        d2 = np.where(better, cand, d2)
        frac = np.where(better, jj + theta, frac)
    return frac, float(d2.mean())


def at_fraction(values, frac, *, log=False):
    """Linear interpolation of ``values`` at fractional indices.

    Parameters
    ----------
    values : array (J, ...)
        Values at the integer indices.
    frac : array (T,)
        Fractional indices in ``[0, J - 1]``.
    log : bool
        Interpolate ``log values`` where both neighbours are positive (times on a log grid).

    Returns
    -------
    ndarray (T, ...)
        The interpolated values.
    """
    values = np.asarray(values, dtype=np.float64)
    j = np.clip(np.floor(frac).astype(np.int64), 0, len(values) - 2)
    th = (frac - j).reshape((-1,) + (1,) * (values.ndim - 1))
    a, b = values[j], values[j + 1]
    if log:
        pos = (a > 0) & (b > 0)
        la, lb = np.log(np.where(pos, a, 1.0)), np.log(np.where(pos, b, 1.0))
        return np.where(pos, np.exp(la + th * (lb - la)), a + th * (b - a))
    return a + th * (b - a)


# -- the model -------------------------------------------------------------------------------
class M2Model:
    """M2 with some parameters known and the others fitted; simulates model Gram trajectories.

    Parameter vector ``x`` (only the fitted entries, in this order):
    ``log sigma``; ``u_1..u_{B-1}`` (block strengths ``exp(u)``, the last one
    making their geometric mean 1: the overall scale of ``Phi`` trades against
    time and the start scale); ``log10 lam``; ``log10 s``.

    Parameters
    ----------
    K : int
        Classes (= items).
    loss : {"ce", "mse"}
        Mean cross-entropy or ``1/(2K) ||Z - I||^2``.
    setting : Setting, optional
        Gives ``Phi(sigma, strengths)``; then ``sigma`` (and with
        ``fit_strengths`` the strengths) are fitted.
    inputs : array (p, K), optional
        The user's input encoding (one column per class); ``K_x = X^T X``.
    kernel : array (K, K), optional
        The user's input kernel.
    fit_strengths : bool
        Fit one strength per attribute block of the setting (else all 1).
    lam, scale : float or None
        Weight decay ``lam_W = lam_A`` and start scale; ``None`` = fitted.
    start : {"isotropic", "observed"}
        The start (module docstring).
    observed_start : (W0 or None, H0), optional
        For ``start="observed"``: classifier rows (K x d) and class means
        (d x K) of the first record, or ``(None, sqrtm(G0))``.
    algebra : PatternAlgebra, optional
        Enables the ``"patterns"`` engine.
    engine : {"auto", "patterns", "dense"}
        ``"auto"``: patterns when exact (algebra, kernel in it, isotropic start).
    horizon : float
        Last model time (with weight decay at most ``50 / lam``).
    n_model : int
        Model times (0 and a log grid).
    rtol : float
        Integrator tolerance (Grams to about ``rtol``, far below what separates fits).
    """

    def __init__(self, K, *, loss="ce", setting=None, inputs=None, kernel=None, fit_strengths=True, lam=None,
                 scale=None, start="isotropic", observed_start=None, algebra=None, engine="auto",
                 horizon=1e6, n_model=160, rtol=1e-6):
        self.K, self.loss, self.loss_id = K, loss, kern.LOSS_IDS[loss]
        self.setting, self.lam, self.scale = setting, lam, scale
        self.start, self.algebra = start, algebra
        self.horizon, self.n_model, self.rtol = float(horizon), int(n_model), float(rtol)
        if setting is not None:
            self.kind = "encoding"
            self.B = len(setting.blocks)
            # blocks whose kernel is the identity or a combination of the others cannot be told apart from
            # sigma or from them (e.g. a token of its own per item): their strength stays 1
            self.free_blocks = _identifiable_blocks(setting) if fit_strengths else []
            self.fit_strengths = len(self.free_blocks) > 1
        else:
            self.kind = "inputs" if inputs is not None else "kernel"
            self.B, self.fit_strengths, self.free_blocks = 0, False, []
            X = None if inputs is None else np.asarray(inputs, dtype=np.float64)
            Kx = X.T @ X if X is not None else np.asarray(kernel, dtype=np.float64)
            self._user_kernel = 0.5 * (Kx + Kx.T)
            self._user_root = X if X is not None else psd_root(self._user_kernel)
        # what the "patterns" engine needs: the kernel's pattern values as a function of the parameters
        exact = algebra is not None and start == "isotropic"
        if exact and self.kind == "encoding":
            self._block_values = [algebra.values(b.T @ b) for b in _attribute_blocks(setting)]
        elif exact:
            exact = algebra.contains(self._user_kernel, rtol=1e-9)
        if engine == "auto":
            engine = "patterns" if exact else "dense"
        elif engine == "patterns" and not exact:
            raise ValueError("engine='patterns' needs an attribute table that forms an association scheme, a kernel "
                             "constant on its patterns and start='isotropic'; use engine='auto' or 'dense'.")
        self.engine = engine
        self.observed_start = observed_start
        self.names = (["log_sigma"] if self.kind == "encoding" else []) \
            + [f"u{b}" for b in self.free_blocks[1:]] * self.fit_strengths \
            + (["log10_lam"] if lam is None else []) + (["log10_scale"] if scale is None else [])
        self.cache = {}
        self.cache_bytes = 0
        self.n_sim = 0
        self.n_rhs = 0

    # -- parameters ----------------------------------------------------------------------------
    def unpack(self, x) -> dict:
        """The parameters of a vector: ``{"sigma", "strengths"}`` (ufm's encoding), ``"lam"``, ``"scale"``.

        Parameters
        ----------
        x : array
            Parameter vector (class docstring).

        Returns
        -------
        dict
            Known parameters included.
        """
        x = list(np.asarray(x, dtype=np.float64))
        out = {}
        if self.kind == "encoding":
            out["sigma"] = math.exp(x.pop(0))
            strengths = np.ones(self.B)
            if self.fit_strengths:
                u = [x.pop(0) for _ in range(len(self.free_blocks) - 1)]
                strengths[self.free_blocks] = np.exp(np.array(u + [-sum(u)]))
            out["strengths"] = strengths
        out["lam"] = 10.0 ** x.pop(0) if self.lam is None else float(self.lam)
        out["scale"] = 10.0 ** x.pop(0) if self.scale is None else float(self.scale)
        return out

    def pack(self, sigma=None, strengths=None, lam=None, scale=None) -> np.ndarray:
        """The parameter vector of some parameter values (the fitted ones only; the inverse of :meth:`unpack`).

        Parameters
        ----------
        sigma : float, optional
            Capacity (ufm's encoding).
        strengths : array, optional
            Block strengths (rescaled to geometric mean 1).
        lam : float, optional
            Weight decay, when fitted.
        scale : float, optional
            Start scale, when fitted.

        Returns
        -------
        ndarray
            The vector.
        """
        x = []
        if self.kind == "encoding":
            x.append(math.log(sigma))
            if self.fit_strengths:
                u = np.log(np.asarray(strengths, dtype=np.float64)[self.free_blocks])
                x += list((u - u.mean())[:-1])
        if self.lam is None:
            x.append(math.log10(lam))
        if self.scale is None:
            x.append(math.log10(scale))
        return np.array(x, dtype=np.float64)

    def kernel(self, params) -> np.ndarray:
        """The input kernel ``K_x = Phi^T Phi`` of some parameters.

        Parameters
        ----------
        params : dict
            As :meth:`unpack` returns.

        Returns
        -------
        ndarray (K, K)
            The kernel.
        """
        if self.kind == "encoding":
            Phi = self.setting.encoding(params["sigma"], strengths=params["strengths"])
            return Phi.T @ Phi
        return self._user_kernel

    def _kernel_root(self, params):
        """``R`` with ``R^T R = K_x`` (the inputs themselves when known)."""
        if self.kind == "encoding":
            return self.setting.encoding(params["sigma"], strengths=params["strengths"])
        return self._user_root

    def problem(self, x):
        """The :class:`~ufm.problems.InputCoupledUFM` of a parameter vector, to simulate with :func:`ufm.simulate`.

        Parameters
        ----------
        x : array
            Parameter vector (class docstring).

        Returns
        -------
        InputCoupledUFM or None
            With ``d = K + p``, enough for :func:`isotropic_init`; ``None`` for the user's inputs or kernel.
        """
        if self.kind != "encoding":
            return None
        q = self.unpack(x)
        return InputCoupledUFM.from_setting(self.setting, q["sigma"], d=self.K + self.setting.encoding(0.0).shape[0],
                                            loss=self.loss, lam_W=q["lam"], lam_A=q["lam"], strengths=q["strengths"])

    #: The box the search stays in: outside it the flow is degenerate (the features never grow, or the
    #: kernel's scales differ by many orders of magnitude and the flow becomes too stiff to integrate).
    BOUNDS = {"sigma": (1e-3, 1e4), "strengths": (1e-3, 1e3), "lam": (1e-10, 10.0), "scale": (1e-15, 10.0)}

    def in_bounds(self, q) -> bool:
        """Whether the parameters of :meth:`unpack` lie in :attr:`BOUNDS`.

        Parameters
        ----------
        q : dict
            As :meth:`unpack` returns.

        Returns
        -------
        bool
            False sends the search elsewhere (its cost is infinite).
        """
        for name, (lo, hi) in self.BOUNDS.items():
            if name in q and (name != "lam" or self.lam is None) and (name != "scale" or self.scale is None):
                v = np.atleast_1d(q[name])
                if np.any(v < lo) or np.any(v > hi):
                    return False
        return True

    # -- simulation ----------------------------------------------------------------------------
    def times(self, params, Kx_top):
        """Model times: 0 and a log grid from ``1e-2`` of the fastest mode's time to the horizon.

        Parameters
        ----------
        params : dict
            As :meth:`unpack` returns.
        Kx_top : float
            Largest eigenvalue of the kernel.

        Returns
        -------
        ndarray (n_model,)
            The times.
        """
        rate = 2.0 * max(Kx_top, 1e-12) / self.K
        horizon = self.horizon if params["lam"] == 0 else min(self.horizon, 50.0 / params["lam"])
        t_lo = min(1e-2 / rate, horizon * 1e-6)
        return np.concatenate([[0.0], np.geomspace(t_lo, horizon, self.n_model - 1)])

    def trajectory(self, x):
        """Simulate the model Gram trajectory of a parameter vector (cached).

        Parameters
        ----------
        x : array
            Parameter vector (class docstring).

        Returns
        -------
        tuple or None
            ``(times, grams)``: model times (J,) and the unit-centred model Grams,
            as eigenvalues (J, R) on the patterns engine or dense (J, K, K);
            ``None`` when the flow is not finite or the features die out.
        """
        key = tuple(np.round(np.asarray(x, float), 10))
        if key in self.cache:
            return self.cache[key]
        q = self.unpack(x)
        if not self.in_bounds(q):
            return None
        out = self._simulate_patterns(q) if self.engine == "patterns" else self._simulate_dense(q)
        self.n_sim += 1
        size = 0 if out is None else out[0].nbytes + out[1].nbytes
        if len(self.cache) >= CACHE_ENTRIES or self.cache_bytes + size > CACHE_BYTES:
            self.cache.clear()
            self.cache_bytes = 0
        self.cache[key] = out
        self.cache_bytes += size
        return out

    def _simulate_patterns(self, q):
        a = self.algebra
        if self.kind == "encoding":
            vals = q["sigma"] ** 2 * np.eye(1, a.R, 0)[0] + sum(s ** 2 * v for s, v in zip(q["strengths"],
                                                                                            self._block_values))
        else:
            vals = a.values(self._user_kernel)
        k = a.eigen(vals)
        s2 = q["scale"] ** 2
        y0 = np.concatenate([np.zeros(a.R), np.full(a.R, s2), s2 * k])
        t = self.times(q, float(k.max()))
        data = (a.P, a.P_inv, a.valency, k, q["lam"], q["lam"], self.loss_id, float(self.K))
        res = integrate(kern.m2_pattern_flow_rhs, y0, data, t, rtol=self.rtol, atol=self.rtol * s2 * 1e-3,
                        log_time=q["lam"] == 0, max_steps=MAX_STEPS)
        self.n_rhs += res.nfev
        if not res.success:
            return None
        S = res.y[:, 2 * a.R:]
        return t, a.unit_centred(S)

    def _simulate_dense(self, q):
        K = self.K
        Kx = self.kernel(q)
        if self.start == "isotropic":
            Rx = self._kernel_root(q)
            p = Rx.shape[0]
            H0 = np.vstack([Rx, np.zeros((K, K))])
            W0 = np.hstack([np.zeros((K, p)), np.eye(K)])
            c = q["scale"]
        else:
            W_obs, H_obs = self.observed_start
            if W_obs is None:
                bal = math.sqrt(max(np.sum(H_obs ** 2), 1e-300) / max(np.trace(Kx), 1e-300))
                H0 = np.vstack([H_obs, np.zeros((K, K))])
                W0 = np.hstack([np.zeros((K, H_obs.shape[0])), bal * np.eye(K)])
            else:
                W0, H0 = W_obs, H_obs
            c = q["scale"] * math.sqrt((K + np.trace(Kx)) / max(np.sum(W0 ** 2) + np.sum(H0 ** 2), 1e-300))
        W0, H0 = c * W0, c * H0
        d = H0.shape[0]
        y0 = np.concatenate([W0.ravel(), H0.ravel()])
        t = self.times(q, float(np.linalg.eigvalsh(Kx)[-1]))
        data = (K, d, np.ascontiguousarray(Kx), q["lam"], q["lam"], self.loss_id)
        res = integrate(kern.m2_kernel_flow_rhs, y0, data, t, rtol=self.rtol, atol=self.rtol * c * 1e-3,
                        log_time=q["lam"] == 0, max_steps=MAX_STEPS)
        self.n_rhs += res.nfev
        if not res.success:
            return None
        H = res.y[:, K * d:].reshape(len(t), d, K)
        G = double_centre(np.einsum("tdk,tdl->tkl", H, H))
        norm = np.linalg.norm(G, axis=(-2, -1), keepdims=True)
        if np.any(norm <= 1e-300):                  # the features died (weight decay beats growth)
            return None
        return t, G / norm

    # -- representations -------------------------------------------------------------------------
    def dense(self, grams) -> np.ndarray:
        """Model Grams as dense matrices, whatever the engine.

        Parameters
        ----------
        grams : array
            As :meth:`trajectory` returns them.

        Returns
        -------
        ndarray (..., K, K)
            The Grams.
        """
        return self.algebra.dense(grams) if self.engine == "patterns" else np.asarray(grams)


def _identifiable_blocks(setting) -> list:
    """Indices of the attribute blocks whose kernels are independent of the identity and of the earlier blocks."""
    K = setting.N
    basis = [np.eye(K).ravel()]
    keep = []
    for b, block in enumerate(_attribute_blocks(setting)):
        v = (block.T @ block).ravel()
        X = np.stack(basis, axis=1)
        coef, *_ = np.linalg.lstsq(X, v, rcond=None)
        if np.linalg.norm(X @ coef - v) > 1e-9 * max(np.linalg.norm(v), 1e-300):
            basis.append(v)
            keep.append(b)
    return keep


def _attribute_blocks(setting):
    """The one-hot blocks of ``setting.attribute_encoding()`` (strength 1), one (rows, K) array per block."""
    Phi = setting.attribute_encoding()
    edges = np.cumsum([0] + list(setting.block_sizes))
    return [Phi[a:b] for a, b in zip(edges[:-1], edges[1:])]


# -- the start for ufm.simulate, and the alignment cost --------------------------------------------
def isotropic_init(problem, init_scale: float) -> dict:
    """The deterministic wide-network start of the input-coupled UFM: ``{"W0": ..., "A0": ...}``.

    With ``d >= p + K``: ``A0 = init_scale [I_p; 0]`` and ``W0 = init_scale [0, I_K]``, so
    ``A0^T A0 = init_scale^2 I_p``, ``W0 W0^T = init_scale^2 I_K`` and ``W0 A0 = 0``: the limit of a
    Gaussian start in a wide layer (``A0^T A0 ~ s^2 d I``, ``W0 A0 / (s^2 d) -> 0``), without its
    seed-to-seed noise. Every rotation of the feature space gives the same Gram trajectory.

    Parameters
    ----------
    problem : InputCoupledUFM
        The model (``d >= p + K``).
    init_scale : float
        The scale ``s`` above.

    Returns
    -------
    dict
        ``{"W0": (K, d) array, "A0": (d, p) array}``.
    """
    K, p, d = problem.K, problem.p, problem.d
    if d < p + K:
        raise ValueError(f"the isotropic start needs d >= p + K = {p + K}, got d = {d}; pass d=None.")
    A0 = np.zeros((d, p))
    A0[:p] = init_scale * np.eye(p)
    W0 = np.zeros((K, d))
    W0[:, p:p + K] = init_scale * np.eye(K)
    return {"W0": W0, "A0": A0}



def alignment_cost(rep, model):
    """``(cost, inner, adjacent)``: ``cost(model, x)`` is the mean squared distance of the refined monotone
    alignment (:func:`~ufm.bridge.m2.align_refined`) in the matched representation; ``inner(G)`` the
    observation-model inner products and ``adjacent(G)`` those of consecutive model points."""
    if model.engine == "patterns":
        a = model.algebra
        eig = a.eigen(a.values(rep.full))                       # projections of the unit Grams
        if rep.match == "patterns":
            eig = eig / np.sqrt(np.sum(a.mult * eig ** 2, axis=1, keepdims=True))

        def inner(G):
            return a.inner(eig, G)

        def adjacent(G):
            return np.sum(a.mult * G[:-1] * G[1:], axis=1)
    else:
        flat = rep.matched.reshape(rep.T, -1)

        def matched(G):
            return (project_patterns(G, rep.ids) if rep.match == "patterns" else G).reshape(len(G), -1)

        def inner(G):
            return flat @ matched(G).T

        def adjacent(G):
            R = matched(G)
            return np.sum(R[:-1] * R[1:], axis=1)

    def cost(m, x):
        try:
            out = m.trajectory(x)
        except (ValueError, FloatingPointError, np.linalg.LinAlgError):
            return np.inf
        if out is None:
            return np.inf
        return align_refined(inner(out[1]), adjacent(out[1]))[1]

    return cost, inner, adjacent



# -- the fit -----------------------------------------------------------------------------------
#: The simulation cache of :class:`M2Model` (Nelder-Mead revisits points) holds at most this many
#: trajectories and this many bytes (a dense trajectory is ``n_model x K x K`` floats); then it is emptied.
CACHE_ENTRIES = 513
CACHE_BYTES = 64 * 2**20


def fit_m2(model: M2Model, cost, *, starts, max_iter: int, report=None, n_searches: int = 2) -> dict:
    """Evaluate ``starts``, run Nelder-Mead from the ``n_searches`` best of them, then once more from the best
    point found (a restart: Nelder-Mead's simplex can collapse early); Ctrl-C keeps the best point.

    Returns ``{"x", "cost", "nfev", "interrupted", "seen"}`` (``seen``: every ``(cost, x)`` evaluated);
    ``x`` is None when no start could be simulated (every flow non-finite or out of bounds), or when Ctrl-C came
    before the first one was (``interrupted`` is then True).
    """
    from scipy.optimize import minimize

    report = report or (lambda *a, **k: None)
    best = {"cost": math.inf, "x": None, "nfev": 0, "phase": "grid"}

    seen = []

    def f(x):
        if _interrupt.requested():      # Ctrl-C inside ufm.fit: stop at this safe point, keep the best point
            raise KeyboardInterrupt
        c = cost(model, x)
        seen.append((float(c), np.array(x, dtype=float)))
        best["nfev"] += 1
        if c < best["cost"]:
            best["cost"], best["x"] = c, np.array(x, dtype=float)
        report(f"input_coupled ({model.engine}, {best['phase']}): {best['nfev']} simulations, best cost "
               f"{best['cost']:.4g}")
        return c

    def search(x0):
        simplex = np.vstack([x0] + [x0 + 0.15 * np.eye(len(x0))[i] for i in range(len(x0))])
        res = minimize(f, x0, method="Nelder-Mead",
                       options={"xatol": 2e-3, "fatol": 1e-9, "maxiter": max_iter, "initial_simplex": simplex})
        return np.asarray(res.x, dtype=float)

    interrupted = False
    try:
        costs = [(f(x), i) for i, x in enumerate(starts)]
        if best["x"] is not None and max_iter > 0 and len(best["x"]):
            chosen = []
            for c, i in sorted(costs):
                x = np.asarray(starts[i], dtype=float)
                if np.isfinite(c) and all(np.max(np.abs(x - y)) > 0.1 for y in chosen):
                    chosen.append(x)
                if len(chosen) == n_searches:
                    break
            for k, x in enumerate(chosen):
                best["phase"] = f"search {k + 1}/{len(chosen)}"
                search(x)
            best["phase"] = "restart"
            search(best["x"].copy())
    except KeyboardInterrupt:        # x stays None when no point was evaluated: the fit goes on without M2
        interrupted = True
    return {"x": best["x"], "cost": best["cost"], "nfev": best["nfev"], "interrupted": interrupted, "seen": seen}
