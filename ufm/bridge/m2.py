"""The input-coupled UFMs (M2 and M2-H, THEORY §8.2, §8.2b) as models of an observed Gram trajectory.

What :func:`ufm.fit` simulates for ``"input_coupled"`` and ``"feature_penalty"``
----------------------------------------------------------------------------------
One feature vector per class (the class means of a network are the items of
the model), distinct one-hot labels (``Y = I_K``), features ``H = A Phi`` and
logits ``Z = W H``, loss ``g(Z)`` (mean CE or ``1/(2K) ||Z - Y||^2`` over the
K items) plus **halved** weight decays (THEORY §0.1):

``"input_coupled"`` (M2, ``penalty="A"``)
    ``lam/2 (||W||^2 + ||A||^2)``: the decay acts on the input map. Its end
    state is the weighted nuclear-norm optimum of THEORY §8.2 (b), *not* the
    simplex ETF unless the kernel is flat.
``"feature_penalty"`` (M2-H, ``penalty="H"``)
    ``lam/2 (||W||^2 + ||A Phi||^2)``: the decay acts on the features, as in
    the reference networks (``feature_decay``, ``classifier_decay``). With
    ``Phi`` of full column rank its end state is the standard UFM optimum (the
    simplex ETF for balanced CE), whatever the kernel: the input kernel shapes
    only the path (THEORY §8.2b).

Seen through ``H`` both are the *kernel flow*

    dW/dt = -G H^T - lam_W W,    dH/dt = -(W^T G + lam_H H) K_x - lam_A H,    G = grad_Z g(W H),

where only the input kernel ``K_x = Phi^T Phi`` enters. So the inputs may be
ufm's encoding ``Phi(sigma, strengths) = [attribute one-hots x strengths;
sigma I]`` (:meth:`ufm.settings.Setting.encoding`; then ``sigma`` and the
strengths are fitted), or the user's own inputs (p x K, one column per class)
or kernel (K x K), which are used as given. Plain GD with step ``lr`` on
``(W, A)`` is the map ``(W, H) <- (W, H) + lr (dW/dt, dH/dt)``: exact, so a GD
run is compared with GD, step for step.

Two engines:

``"patterns"``
    When the attribute patterns form an association scheme
    (:class:`~ufm.bridge.patterns.PatternAlgebra`; factorial and regular
    hierarchy settings), ``K_x`` is constant on patterns and the start is in
    the algebra, ``P = W W^T``, ``S = H^T H`` and ``Z = W H`` stay in the
    algebra and the model is ``3R`` scalars (``R`` patterns), for the flow
    (:func:`ufm._kernels.m2_pattern_flow_rhs`) and for GD
    (:func:`ufm._kernels.m2_pattern_gd`): exact, ``O(R^2)`` per step.
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
    ``||W0||^2 + ||H0||^2 = s^2 (K + tr K_x)``, as in the isotropic start.
    Dense engine only.

A finite network starts from a *random* state: :meth:`M2Model.random_run`
simulates the model from a Gaussian start of a given width (entries of ``W0``
and ``A0`` i.i.d. ``N(0, s^2 / d)``, what :func:`ufm.simulate` draws with
``init_scale = s / sqrt(d)``), which the fit's parametric bootstrap uses
(:mod:`ufm.bridge.estimate`). The dynamics depend on the start only through
the Gram of ``[W0^T, H0]`` (``2K x 2K``, Wishart), so any width costs the same.

References
----------
THEORY.md §0.1, §6.3, §8.2, §8.2b, §8.6; Saxe, McClelland, Ganguli, arXiv 1312.6120
(mode dynamics of two-layer linear networks); Zhao, Papadimitriou,
Thrampoulidis, "Structure Before Collapse", arXiv 2606.26749.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _kernels as kern
from .._integrate import integrate
from ..metrics import double_centre
from ..problems import InputCoupledUFM
from .clock import align_monotone, align_refined, at_fraction
from .patterns import psd_root

__all__ = ["ENGINES", "PENALTIES", "STARTS", "M2Model", "align_monotone", "align_refined", "at_fraction",
           "isotropic_init", "kernel_flow_rhs_numpy", "kernel_gd_numpy", "pattern_flow_rhs_numpy", "pattern_gd_numpy"]

STARTS = ("isotropic", "observed")
ENGINES = ("auto", "patterns", "dense")
#: Which block the weight decay ``lam`` acts on besides ``W``: ``"A"`` (M2) or the features ``"H"`` (M2-H).
PENALTIES = ("A", "H")

#: With weight decay ``lam`` the model is at its end state by model time ``END_TIME / lam`` (the slowest
#: relaxation, of the norms, has rate ``lam`` or more: e^-20 of the way left); its curves stop there.
END_TIME = 20.0

#: Step attempts of one model simulation (a few thousand are typical); a flow that needs more is too stiff
#: for the fit and counts as a failed point of the search.
MAX_STEPS = 50_000


# -- numpy twins of the compiled kernels -------------------------------------------------------
def _grad_logits(Z, loss_id):
    K = Z.shape[0]
    if loss_id == 0:
        E = np.exp(Z - Z.max(axis=0, keepdims=True))
        G = E / E.sum(axis=0, keepdims=True)
    else:
        G = Z.copy()
    G[np.diag_indices(K)] -= 1.0
    return G / K


def _kernel_velocity(W, H, Kx, lam_W, lam_A, lam_H, loss_id):
    G = _grad_logits(W @ H, loss_id)
    return -G @ H.T - lam_W * W, -(W.T @ G + lam_H * H) @ Kx - lam_A * H


def kernel_flow_rhs_numpy(y, data, out):
    """Plain-numpy twin of :func:`ufm._kernels.m2_kernel_flow_rhs` (the kernel flow of the module docstring).

    Parameters
    ----------
    y : array (K d + d K,)
        The state ``[W, H]``, flattened.
    data : tuple
        ``(K, d, K_x, lam_W, lam_A, lam_H, loss_id)``; ``loss_id`` 0 is CE, 1 MSE (halved weight decays).
    out : array like ``y``
        Receives ``dy/dt``.
    """
    K, d, Kx, lam_W, lam_A, lam_H, loss_id = data
    dW, dH = _kernel_velocity(y[:K * d].reshape(K, d), y[K * d:].reshape(d, K), Kx, lam_W, lam_A, lam_H, loss_id)
    out[:K * d] = dW.ravel()
    out[K * d:] = dH.ravel()


def kernel_gd_numpy(y0, data, lr, rec):
    """Plain-numpy twin of :func:`ufm._kernels.m2_kernel_gd`: the feature Grams ``H^T H`` after ``rec`` GD steps.

    Parameters
    ----------
    y0 : array (K d + d K,)
        The start ``[W, H]``, flattened.
    data : tuple
        As for :func:`kernel_flow_rhs_numpy`.
    lr : float
        The GD step.
    rec : int array
        Sorted step counts to record.

    Returns
    -------
    ndarray (len(rec), K, K)
        The Grams.
    """
    K, d, Kx, lam_W, lam_A, lam_H, loss_id = data
    W, H = y0[:K * d].reshape(K, d).copy(), y0[K * d:].reshape(d, K).copy()
    out, n = [], 0
    for r in rec:
        while n < r:
            dW, dH = _kernel_velocity(W, H, Kx, lam_W, lam_A, lam_H, loss_id)
            W, H, n = W + lr * dW, H + lr * dH, n + 1
        out.append(H.T @ H)
    return np.array(out)


def _pattern_gamma(P, Pinv, valency, z, loss_id, K):
    zeta = Pinv @ z
    if loss_id == 0:
        e = np.exp(zeta - zeta.max())
        g = e / (valency @ e)
    else:
        g = zeta.copy()
    g[0] -= 1.0
    return P @ (g / K)


def pattern_flow_rhs_numpy(y, data, out):
    """Plain-numpy twin of :func:`ufm._kernels.m2_pattern_flow_rhs` (the flow inside the pattern algebra).

    Parameters
    ----------
    y : array (3 R,)
        Eigenvalues ``[z, p, s]`` of ``W H``, ``W W^T`` and ``H^T H``.
    data : tuple
        ``(P, P_inv, valency, k, lam_W, lam_A, lam_H, loss_id, K)``: the algebra's tables, the kernel's
        eigenvalues, the halved weight decays, the loss (0 CE, 1 MSE) and the number of classes.
    out : array like ``y``
        Receives ``dy/dt``.
    """
    P, Pinv, valency, k, lam_W, lam_A, lam_H, loss_id, K = data
    R = valency.size
    z, p, s = y[:R], y[R:2 * R], y[2 * R:]
    gam = _pattern_gamma(P, Pinv, valency, z, loss_id, K)
    a = lam_A + lam_H * k
    out[:R] = -gam * (s + p * k) - (lam_W + a) * z
    out[R:2 * R] = -2 * gam * z - 2 * lam_W * p
    out[2 * R:] = -2 * k * gam * z - 2 * a * s


def pattern_gd_numpy(y0, data, lr, rec):
    """Plain-numpy twin of :func:`ufm._kernels.m2_pattern_gd`: the states ``[z, p, s]`` after ``rec`` GD steps.

    Parameters
    ----------
    y0 : array (3 R,)
        The start.
    data : tuple
        As for :func:`pattern_flow_rhs_numpy`.
    lr : float
        The GD step.
    rec : int array
        Sorted step counts to record.

    Returns
    -------
    ndarray (len(rec), 3 R)
        The states.
    """
    P, Pinv, valency, k, lam_W, lam_A, lam_H, loss_id, K = data
    R = valency.size
    z, p, s = y0[:R].copy(), y0[R:2 * R].copy(), y0[2 * R:].copy()
    u, v = 1.0 - lr * lam_W, 1.0 - lr * (lam_A + lam_H * k)
    out, n = [], 0
    for r in rec:
        while n < r:
            g = _pattern_gamma(P, Pinv, valency, z, loss_id, K)
            z, p, s = (u * v * z - lr * u * p * g * k - lr * v * g * s + lr ** 2 * g ** 2 * z * k,
                       u ** 2 * p - 2 * lr * u * g * z + lr ** 2 * g ** 2 * s,
                       v ** 2 * s - 2 * lr * v * k * g * z + lr ** 2 * k ** 2 * g ** 2 * p)
            n += 1
        out.append(np.concatenate([z, p, s]))
    return np.array(out)


# -- where the model is compared ----------------------------------------------------------------------
class Points:
    """Where a model is simulated: after integer GD steps with step ``lr``, or at flow times.

    Parameters
    ----------
    times : array, optional
        Strictly increasing model times ``>= 0`` (the flow).
    gd_steps : int array, optional
        Sorted step counts ``>= 0`` (GD with step ``lr``).
    lr : float, optional
        The GD step.
    """

    def __init__(self, times=None, gd_steps=None, lr=None):
        self.gd = gd_steps is not None
        if self.gd:
            self.steps = np.asarray(gd_steps, dtype=np.int64)
            self.lr = float(lr)
            self.times = self.steps * self.lr
        else:
            self.times = np.asarray(times, dtype=np.float64)
        self.key = ("gd", self.lr, self.steps.tobytes()) if self.gd else ("flow", self.times.tobytes())


# -- the model -------------------------------------------------------------------------------
class M2Model:
    """M2 or M2-H with some parameters known and the others fitted; simulates model Gram trajectories.

    Parameter vector ``x`` (only the fitted entries, in this order):
    ``log sigma``; the block strengths' logs ``u_b`` (with a fitted clock scale
    ``B - 1`` of them, the last one making their geometric mean 1: the overall
    scale of ``Phi`` trades against the time scale; with a known clock all
    ``B``); ``log10 lam``; ``log10 s`` (start scale).

    Parameters
    ----------
    K : int
        Classes (= items).
    penalty : {"A", "H"}
        M2 (``lam_W = lam_A = lam``) or M2-H (``lam_W = lam_H = lam``, ``lam_A = 0``).
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
        Fit one strength per identifiable attribute block of the setting (else all 1).
    absolute : bool
        The clock is known, so the encoding's overall scale is identifiable: every
        strength is fitted (else their geometric mean is 1).
    lam, scale : float or None
        Weight decay and start scale; ``None`` = fitted.
    start : {"isotropic", "observed"}
        The start (module docstring).
    observed_start : (W0 or None, H0), optional
        For ``start="observed"``: classifier rows (K x d) and class means
        (d x K) of the first record, or ``(None, sqrtm(G0))``.
    algebra : PatternAlgebra, optional
        Enables the ``"patterns"`` engine.
    engine : {"auto", "patterns", "dense"}
        ``"auto"``: patterns when exact (algebra, kernel in it, isotropic start).
    rtol : float
        Integrator tolerance (Grams to about ``rtol``, far below what separates fits).
    """

    #: The box the fit stays in: outside it the flow is degenerate (the features never grow, or the
    #: kernel's scales differ by many orders of magnitude and the flow becomes too stiff to integrate).
    BOUNDS = {"sigma": (1e-3, 1e4), "strengths": (1e-3, 1e3), "lam": (1e-10, 10.0), "scale": (1e-15, 10.0)}

    def __init__(self, K, *, penalty="A", loss="ce", setting=None, inputs=None, kernel=None, fit_strengths=True,
                 absolute=False, lam=None, scale=None, start="isotropic", observed_start=None, algebra=None,
                 engine="auto", rtol=1e-8):
        if penalty not in PENALTIES:
            raise ValueError(f"penalty must be one of {PENALTIES}, got {penalty!r}.")
        self.K, self.loss, self.loss_id, self.penalty = K, loss, kern.LOSS_IDS[loss], penalty
        self.setting, self.lam, self.scale = setting, lam, scale
        self.start, self.algebra, self.rtol = start, algebra, float(rtol)
        if setting is not None:
            self.kind = "encoding"
            self.B = len(setting.blocks)
            # blocks whose kernel is the identity or a combination of the others cannot be told apart from
            # sigma or from them (e.g. a token of its own per item): their strength stays 1
            self.free_blocks = _identifiable_blocks(setting) if fit_strengths else []
            self.absolute = bool(absolute) and fit_strengths
            self.fit_strengths = len(self.free_blocks) > (0 if self.absolute else 1)
        else:
            self.kind = "inputs" if inputs is not None else "kernel"
            self.B, self.fit_strengths, self.free_blocks, self.absolute = 0, False, [], False
            X = None if inputs is None else np.asarray(inputs, dtype=np.float64)
            Kx = X.T @ X if X is not None else np.asarray(kernel, dtype=np.float64)
            self._user_kernel = 0.5 * (Kx + Kx.T)
            self._user_root = X if X is not None else psd_root(self._user_kernel)
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
        n_u = (len(self.free_blocks) - (0 if self.absolute else 1)) if self.fit_strengths else 0
        self.names = (["log_sigma"] if self.kind == "encoding" else []) \
            + [f"u{b}" for b in self.free_blocks[:n_u]] \
            + (["log10_lam"] if lam is None else []) + (["log10_scale"] if scale is None else [])
        self.cache = {}
        self._cache_bytes = 0
        self.n_sim = 0
        self.n_rhs = 0

    # -- parameters ----------------------------------------------------------------------------
    def decays(self, lam: float) -> tuple:
        """``(lam_W, lam_A, lam_H)`` of the model's one weight decay ``lam`` (halved convention).

        Parameters
        ----------
        lam : float
            The model's weight decay.
        """
        return (lam, lam, 0.0) if self.penalty == "A" else (lam, 0.0, lam)

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
                n = len(self.free_blocks)
                u = [x.pop(0) for _ in range(n if self.absolute else n - 1)]
                strengths[self.free_blocks] = np.exp(np.array(u if self.absolute else u + [-sum(u)]))
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
            Block strengths (rescaled to geometric mean 1 unless the clock is known).
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
                x += list(u) if self.absolute else list((u - u.mean())[:-1])
        if self.lam is None:
            x.append(math.log10(lam))
        if self.scale is None:
            x.append(math.log10(scale))
        return np.array(x, dtype=np.float64)

    def bounds(self):
        """``(low, high)`` arrays of the parameter vector: :attr:`BOUNDS` on its scale."""
        lo, hi = [], []
        for name in self.names:
            key = {"log_sigma": "sigma", "log10_lam": "lam", "log10_scale": "scale"}.get(name, "strengths")
            a, b = self.BOUNDS[key]
            f = math.log if name.startswith("log_") or name.startswith("u") else math.log10
            lo.append(f(a))
            hi.append(f(b))
        return np.array(lo), np.array(hi)

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

    def _kernel_eigen(self, q):
        """Eigenvalues of ``K_x`` on the algebra's idempotents (patterns engine)."""
        a = self.algebra
        if self.kind == "encoding":
            vals = q["sigma"] ** 2 * np.eye(1, a.R, 0)[0] + sum(s ** 2 * v for s, v in zip(q["strengths"],
                                                                                            self._block_values))
        else:
            vals = a.values(self._user_kernel)
        return a.eigen(vals)

    def problem(self, x, d=None):
        """The :class:`~ufm.problems.InputCoupledUFM` of a parameter vector, to simulate with :func:`ufm.simulate`.

        Parameters
        ----------
        x : array
            Parameter vector (class docstring).
        d : int, optional
            Feature dimension (default ``K + p``, enough for :func:`isotropic_init`).

        Returns
        -------
        InputCoupledUFM or None
            ``None`` for the user's inputs or kernel.
        """
        if self.kind != "encoding":
            return None
        q = self.unpack(x)
        lam_W, lam_A, lam_H = self.decays(q["lam"])
        p = self.setting.encoding(0.0).shape[0]
        kw = {"lam_H": lam_H} if lam_H else {}
        return InputCoupledUFM.from_setting(self.setting, q["sigma"], d=self.K + p if d is None else d,
                                            loss=self.loss, lam_W=lam_W, lam_A=lam_A, strengths=q["strengths"], **kw)

    def in_bounds(self, x) -> bool:
        """Whether a parameter vector lies in :attr:`BOUNDS`.

        Parameters
        ----------
        x : array
            A parameter vector.
        """
        lo, hi = self.bounds()
        x = np.asarray(x, dtype=np.float64)
        return bool(np.all(x >= lo - 1e-12) and np.all(x <= hi + 1e-12))

    # -- simulation ----------------------------------------------------------------------------
    def grid(self, params, horizon: float, n: int = 400) -> np.ndarray:
        """Model times for curves over a long horizon: 0 and a log grid from ``1e-2`` of the fastest mode's time.

        Parameters
        ----------
        params : dict
            As :meth:`unpack` returns.
        horizon : float
            Last time (with weight decay at most ``END_TIME / lam``, where the model is at its end state).
        n : int
            Number of times.

        Returns
        -------
        ndarray (n,)
            The times.
        """
        if self.engine == "patterns":
            top = float(np.max(self._kernel_eigen(params)))
        else:
            top = float(np.linalg.eigvalsh(self.kernel(params))[-1])
        rate = 2.0 * max(top, 1e-12) / self.K
        if params["lam"] > 0:
            horizon = min(horizon, END_TIME / params["lam"])
        t_lo = min(1e-2 / rate, horizon * 1e-6)
        return np.concatenate([[0.0], np.geomspace(t_lo, horizon, n - 1)])

    def run(self, x, points: Points):
        """Simulate the model's feature Grams at ``points`` (cached).

        Parameters
        ----------
        x : array
            Parameter vector (class docstring).
        points : Points
            GD steps or flow times.

        Returns
        -------
        ndarray or None
            Raw (uncentred, unnormalized) ``S = H^T H``: eigenvalues (T, R) on
            the patterns engine, dense (T, K, K) otherwise; ``None`` when the
            parameters leave the box or the simulation is not finite.
        """
        key = (tuple(np.round(np.asarray(x, float), 12)), points.key)
        if key in self.cache:
            return self.cache[key]
        out = None
        if self.in_bounds(x):
            q = self.unpack(x)
            try:
                out = self._run_patterns(q, points) if self.engine == "patterns" else self._run_dense(
                    q, points, self._start_dense(q))
            except (FloatingPointError, np.linalg.LinAlgError):
                out = None
            self.n_sim += 1
        size = 0 if out is None else out.nbytes
        if len(self.cache) >= CACHE_ENTRIES or self._cache_bytes + size > CACHE_BYTES:
            self.cache.clear()
            self._cache_bytes = 0
        self.cache[key] = out
        self._cache_bytes += size
        return out

    def _run_patterns(self, q, points):
        a = self.algebra
        k = self._kernel_eigen(q)
        s2 = q["scale"] ** 2
        y0 = np.concatenate([np.zeros(a.R), np.full(a.R, s2), s2 * k])
        lam_W, lam_A, lam_H = self.decays(q["lam"])
        data = (a.P, a.P_inv, a.valency, k, lam_W, lam_A, lam_H, self.loss_id, float(self.K))
        if points.gd:
            Y = np.empty((len(points.steps), 3 * a.R))
            if kern.m2_pattern_gd(y0, data, points.lr, points.steps, Y) < len(points.steps):
                return None
        else:
            res = integrate(kern.m2_pattern_flow_rhs, y0, data, points.times, rtol=self.rtol, atol=self.rtol * s2 * 1e-3,
                            log_time=lam_W == 0, max_steps=MAX_STEPS)
            self.n_rhs += res.nfev
            if not res.success:
                return None
            Y = res.y
        S = Y[:, 2 * a.R:]
        return S if np.all(np.isfinite(S)) else None

    def _start_dense(self, q):
        """``(W0, H0)`` of the model's start (isotropic or observed) at its scale."""
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
        return c * W0, c * H0

    def _run_dense(self, q, points, start):
        K = self.K
        W0, H0 = start
        Kx = np.ascontiguousarray(self.kernel(q))
        d = H0.shape[0]
        y0 = np.concatenate([W0.ravel(), H0.ravel()])
        lam_W, lam_A, lam_H = self.decays(q["lam"])
        data = (K, d, Kx, lam_W, lam_A, lam_H, self.loss_id)
        if points.gd:
            S = np.empty((len(points.steps), K, K))
            if kern.m2_kernel_gd(y0, data, points.lr, points.steps, S) < len(points.steps):
                return None
            return S
        scale = max(float(np.sqrt(np.mean(y0 ** 2))), 1e-300)
        res = integrate(kern.m2_kernel_flow_rhs, y0, data, points.times, rtol=self.rtol, atol=self.rtol * scale * 1e-3,
                        log_time=lam_W == 0, max_steps=MAX_STEPS)
        self.n_rhs += res.nfev
        if not res.success:
            return None
        H = res.y[:, K * d:].reshape(len(points.times), d, K)
        S = np.einsum("tdk,tdl->tkl", H, H)
        return S if np.all(np.isfinite(S)) else None

    def random_run(self, x, width: float, points: Points, rng):
        """The model's feature Grams from a Gaussian start of width ``width`` (dense; for the bootstrap).

        The start draws ``W0`` (K x d) and ``A0`` (d x p) with i.i.d. ``N(0, s^2 / d)``
        entries, so ``E W0 W0^T = s^2 I`` and ``E H0^T H0 = s^2 K_x`` as in the isotropic
        start. Only the Gram of ``[W0^T, H0]`` matters, which is ``Sigma^{1/2} B^T B
        Sigma^{1/2}`` with ``B`` the Bartlett factor of a Wishart with ``d`` degrees of
        freedom: the state is ``min(d, 2K)`` wide whatever ``d``. The run is always dense,
        whatever the model's engine: the part of a random start outside the pattern
        algebra changes the pattern-averaged Grams once the dynamics are nonlinear (a
        bootstrap from starts projected onto the algebra covered sigma in 14 of 20
        calibration runs at nominal 90%, against 20 of 20 from the whole start).

        Parameters
        ----------
        x : array
            Parameter vector.
        width : float
            The width ``d`` (>= 1; non-integer widths interpolate the Wishart degrees of freedom).
        points : Points
            GD steps or flow times.
        rng : numpy.random.Generator
            Source of the start.

        Returns
        -------
        ndarray (T, K, K) or None
            Raw feature Grams; ``None`` when the simulation is not finite.
        """
        q = self.unpack(x)
        try:
            return self._run_dense(q, points, self._gaussian_start(q, width, rng))
        except (FloatingPointError, np.linalg.LinAlgError):
            return None

    def _gaussian_start(self, q, width, rng):
        """``(W0, H0)`` of a Gaussian start of width ``width`` in a basis of ``span [W0^T, H0]``."""
        K, s = self.K, q["scale"]
        M = np.zeros((2 * K, 2 * K))                    # Sigma^{1/2}: [[s I, 0], [0, s sqrt(K_x)]] / sqrt(d)
        M[:K, :K] = np.eye(K)
        M[K:, K:] = psd_root(self.kernel(q))
        M *= s / math.sqrt(width)
        D = 2 * K
        if width >= D:
            B = np.zeros((D, D))                        # Bartlett: chi on the diagonal, N(0, 1) above
            B[np.diag_indices(D)] = np.sqrt(rng.chisquare(width - np.arange(D)))
            iu = np.triu_indices(D, 1)
            B[iu] = rng.standard_normal(len(iu[0]))
        else:
            B = rng.standard_normal((max(int(round(width)), 1), D))
        X = B @ M                                       # rows: a basis of the feature space; X^T X is the Gram
        return X[:, :K].T, X[:, K:]

    # -- representations -------------------------------------------------------------------------
    def centred_unit(self, S) -> np.ndarray:
        """Unit-centred Grams of raw model Grams (eigenvalues on the patterns engine, else dense).

        Parameters
        ----------
        S : array
            Raw model Grams: eigenvalues (patterns engine) or dense.
        """
        if self.engine == "patterns":
            return self.algebra.unit_centred(S)
        return unit_centred_dense(S)

    def log_norm(self, S) -> np.ndarray:
        """``log ||P_K S P_K||_F`` of raw model Grams (``-inf`` where it is 0).

        Parameters
        ----------
        S : array
            Raw model Grams: eigenvalues (patterns engine) or dense.
        """
        if self.engine == "patterns":
            v = np.sum(self.algebra.mult[1:] * np.asarray(S)[..., 1:] ** 2, axis=-1)
        else:
            v = np.sum(double_centre(np.asarray(S)) ** 2, axis=(-2, -1))
        with np.errstate(divide="ignore"):
            return 0.5 * np.log(v)

    def dense(self, grams) -> np.ndarray:
        """Model Grams as dense matrices, whatever the engine.

        Parameters
        ----------
        grams : array
            Eigenvalues (patterns engine) or dense Grams.

        Returns
        -------
        ndarray (..., K, K)
            The Grams.
        """
        return self.algebra.dense(grams) if self.engine == "patterns" else np.asarray(grams)


def unit_centred_dense(S) -> np.ndarray:
    """``P_K S P_K / ||P_K S P_K||_F`` of dense Grams (T, K, K); a Gram that is zero after centring stays zero
    (a model's Grams may vanish; :func:`ufm.bridge.observed.unit_centred` refuses an observed one)."""
    G = double_centre(np.asarray(S))
    n = np.linalg.norm(G, axis=(-2, -1), keepdims=True)
    return G / np.where(n > 0, n, 1.0)


#: The simulation cache of :class:`M2Model` (least squares revisits points for its Jacobians) holds at most
#: this many trajectories and this many bytes (a dense one is ``times x K x K`` floats); then it is emptied.
CACHE_ENTRIES = 256
CACHE_BYTES = 64 * 2**20


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


# -- the start for ufm.simulate --------------------------------------------------------------------
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

