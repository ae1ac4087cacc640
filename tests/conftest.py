"""Shared test helpers: an independent nonconvex solver for UFM problems."""

import numpy as np
import pytest
from scipy.optimize import minimize

from ufm import losses


def nonconvex_minimize(problem, seed=0, scale=0.5, gtol=1e-11, maxiter=50000):
    """Minimize the full nonconvex objective over (W, H, b) with L-BFGS from a random start.

    Independent of ufm.closed_form: it only uses the plain-numpy objective and
    gradients of ufm.losses. Returns (f, W, H, b).
    """
    rng = np.random.default_rng(seed)
    K, d, N = problem.K, problem.d, problem.N
    nb = K if problem.bias else 0
    x0 = scale * rng.standard_normal(K * d + d * N + nb)

    def unpack(x):
        W = x[:K * d].reshape(K, d)
        H = x[K * d:K * d + d * N].reshape(d, N)
        b = x[K * d + d * N:] if nb else None
        return W, H, b

    def fun(x):
        W, H, b = unpack(x)
        f = losses.objective(problem, W, H, b)
        dW, dH, db = losses.gradients(problem, W, H, b)
        g = np.concatenate([dW.ravel(), dH.ravel()] + ([db] if nb else []))
        return f, g

    res = minimize(fun, x0, jac=True, method="L-BFGS-B",
                   options={"gtol": gtol, "ftol": 1e-16, "maxiter": maxiter, "maxcor": 30})
    W, H, b = unpack(res.x)
    return res.fun, W, H, b


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def tv9_data():
    """THEORY TV9 data: K=4 on a 2x2 factorial, n=2, d=6, anchor = attribute one-hots + 0.1 noise (seed 3)."""
    K, n, d = 4, 2, 6
    attrs = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    rng = np.random.default_rng(3)
    mu0 = np.zeros((d, K))
    for k, (a1, a2) in enumerate(attrs):
        mu0[a1, k] = 1.0
        mu0[2 + a2, k] = 1.0
    H0 = np.repeat(mu0, n, axis=1) + 0.1 * rng.normal(size=(d, K * n))
    return K, n, d, attrs, H0


def _warm_kernels():
    """Compile (or load from numba's disk cache) the kernels most tests use, once, before the workers start.

    With ``pytest -n 2`` on a cold cache every worker would otherwise compile the same kernels at once;
    compiled here first, the workers load them from disk.
    """
    import ufm
    from ufm.bridge.m2 import M2Model, Points
    from ufm.bridge.patterns import PatternAlgebra

    p = ufm.UFMProblem(K=3, n=2, d=4, lam_W=1e-3, lam_H=1e-3)
    ufm.simulate(p, steps=5, lr=0.1)
    ufm.simulate(p, steps=5, lr=0.1, mode="flow")
    s = ufm.factorial((2, 2))
    m = ufm.InputCoupledUFM.from_setting(s, sigma=1.0, d=8, lam_W=1e-3, lam_A=1e-3)
    ufm.simulate(m, steps=5, lr=0.1)
    ufm.simulate(m, steps=5, lr=0.1, mode="flow")
    a = PatternAlgebra.from_attributes(s.attributes)
    for engine in ("patterns", "dense"):      # the fit's engines: flow and GD, fixed and random starts
        model = M2Model(s.N, setting=s, algebra=a, lam=1e-3, scale=1e-2, engine=engine)
        x = model.pack(sigma=1.0, strengths=[1.0, 1.0])
        for points in (Points(times=[0.0, 1.0, 2.0]), Points(gd_steps=[0, 1, 2], lr=0.1)):
            model.run(x, points)
            model.random_run(x, 8.0, points, np.random.default_rng(0))


def pytest_configure(config):
    """In the controller of a parallel run (not in its workers), warm the kernels once (:func:`_warm_kernels`)."""
    workers = getattr(config.option, "numprocesses", None)
    if workers and not hasattr(config, "workerinput"):
        _warm_kernels()


@pytest.fixture
def no_tqdm(monkeypatch):
    """``import tqdm`` fails inside the test, as on a machine without tqdm (progress falls back to stderr lines)."""
    import builtins

    real_import = builtins.__import__

    def refuse_tqdm(name, *args, **kwargs):
        if name.startswith("tqdm"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", refuse_tqdm)
