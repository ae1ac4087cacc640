"""The compiled GD kernels' dispatch: seed blocks, one specialization per dtype, the overflow path, the compile notice."""

import types

import numba
import numpy as np
import pytest

import ufm
from ufm import _kernels as k
from ufm import losses
from ufm.problems import AnchoredUFM, UFMProblem


def _batch(S, K=4, d=5, N=4, scale=0.3, seed=0):
    rng = np.random.default_rng(seed)
    return scale * rng.standard_normal((S, K, d)), scale * rng.standard_normal((S, d, N)), np.zeros((S, K))


@pytest.mark.parametrize("S", [1, 3, 8])
def test_seed_blocks_give_each_seed_its_own_run(S, monkeypatch):
    """Every block size gives the states of seeds run one at a time (bitwise), on 1 or 2 threads."""
    Ws0, Hs0, bs0 = _batch(S)
    Y, Hanc = np.eye(4), np.zeros((1, 1))
    alone = []
    for s in range(S):
        W, H, b = Ws0[s:s + 1].copy(), Hs0[s:s + 1].copy(), bs0[s:s + 1].copy()
        f = k.ufm_gd(W, H, b, Y, Hanc, 0.01, 0.02, 0.0, 0.0, 0, False, 0.5, 7)
        alone.append((W[0], H[0], f[0]))
    before = numba.get_num_threads()
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            monkeypatch.setenv("NUMBA_NUM_THREADS", str(threads))   # also inside a pytest-xdist worker
            Ws, Hs, bs = Ws0.copy(), Hs0.copy(), bs0.copy()
            f = k.ufm_gd(Ws, Hs, bs, Y, Hanc, 0.01, 0.02, 0.0, 0.0, 0, False, 0.5, 7)
            for s in range(S):
                assert np.array_equal(Ws[s], alone[s][0]) and np.array_equal(Hs[s], alone[s][1])
                assert f[s] == alone[s][2]
    finally:
        numba.set_num_threads(before)
    # and the run is GD: the twin's objective at the start of the last step
    p = UFMProblem(K=4, n=1, d=5, loss="ce", lam_W=0.01, lam_H=0.02)
    fin, kept = losses.gd_reference(p, {"W": Ws0[0], "H": Hs0[0]}, 0.5, 7, record=(6,))
    np.testing.assert_allclose(alone[0][0], fin["W"], atol=1e-12)
    assert alone[0][2] == pytest.approx(losses.objective(p, kept[6]["W"], kept[6]["H"]), rel=1e-12)


def test_state_near_overflow_is_evaluated_outside_the_loop():
    """A final state with ||W|| ||H|| near 1e290 gets its objective from ufm_grad (finite here)."""
    Ws, Hs, bs = _batch(2)
    Ws[1] *= 1e146
    Hs[1] *= 1e-146 * 1e145      # ||W||^2 ||H||^2 ~ 1e290: the bound cannot rule out overflow
    Y, Hanc = np.eye(4), np.zeros((1, 1))
    f = k.ufm_gd(Ws, Hs, bs, Y, Hanc, 0.0, 0.0, 0.0, 0.0, 1, False, 1e-300, 1)
    p = UFMProblem(K=4, n=1, d=5, loss="mse")
    assert np.isfinite(f[0]) and f[1] == pytest.approx(losses.objective(p, Ws[1], Hs[1]), rel=1e-9)


def test_read_only_anchor_does_not_compile_a_second_kernel():
    p = UFMProblem(K=4, n=1, d=5, loss="ce", lam_W=0.01, lam_H=0.01)
    a = AnchoredUFM(H_anchor=np.ones((5, 4)), beta=0.1, K=4, n=1, d=5, lam_W=0.01, lam_H=0.01)
    assert not a.H_anchor.flags.writeable
    ufm.simulate(p, steps=3, lr=0.1)
    ufm.simulate(a, steps=3, lr=0.1)
    sigs = [s for s in k._ufm_seeds.signatures if s[0].dtype == numba.float64]
    assert len(sigs) == 1, sigs


def test_compile_notice_names_the_kernel_once(capsys):
    note = k._CompileNotice()
    outer = types.SimpleNamespace(data={"dispatcher": k._ufm_seeds})
    inner = types.SimpleNamespace(data={"dispatcher": k._dot})
    note.on_start(outer)
    note.on_start(inner)        # compiled inside the outer one: not announced again
    note.on_end(inner)
    note.on_end(outer)
    err = capsys.readouterr().err
    assert err.count("ufm: compiling") == 1 and "_ufm_seeds" in err and " done in " in err
    other = types.SimpleNamespace(data={"dispatcher": types.SimpleNamespace(py_func=np.sum)})
    note.on_start(other)        # somebody else's numba function: silent
    note.on_end(other)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("n,d", [(5, 4), (60, 40), (1, 30_000), (300, 1), (257, 130)])
def test_gram_rows_is_the_symmetric_product_on_both_paths(n, d):
    """``_gram_rows`` equals ``X X^T`` and is exactly symmetric, with the loops (small) and BLAS dsyrk (large),
    and for a strided float64 view and float32 rows (the np.dot fallback)."""
    rng = np.random.default_rng(n + d)
    X = rng.standard_normal((n, d))
    small = n * n * d <= k.GRAM_SMALL
    for x in (X, np.asfortranarray(X), X.astype(np.float32)):
        out = np.full((n, n), np.nan)
        k._gram_rows(x, out)
        want = x.astype(np.float64) @ x.astype(np.float64).T
        tol = 1e-5 if x.dtype == np.float32 else 1e-12
        np.testing.assert_allclose(out, want, rtol=tol, atol=tol * max(1.0, np.abs(want).max()))
        if x.dtype == np.float64 and (small or x.flags.c_contiguous):
            assert np.array_equal(out, out.T)
