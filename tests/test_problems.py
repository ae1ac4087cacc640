"""UFMProblem validation: every bad input names the argument and the fix."""

import numpy as np
import pytest

from ufm import LayerPeeledProblem, UFMProblem


def test_balanced_and_imbalanced_construction():
    p = UFMProblem(K=3, n=2, d=4, lam_W=0.1, lam_H=0.4)
    assert (p.N, p.counts, p.n, p.balanced) == (6, (2, 2, 2), 2, True)
    np.testing.assert_array_equal(p.y, [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(p.Y, np.kron(np.eye(3), np.ones((1, 2))))
    assert p.gamma == pytest.approx(np.sqrt(2 * 0.1 * 0.4))
    q = UFMProblem(K=3, counts=[3, 1, 2], d=2)
    assert (q.N, q.n, q.balanced) == (6, None, False)
    with pytest.raises(ValueError, match="balanced"):
        q.gamma


def test_hard_labels_from_a_vector():
    p = UFMProblem(labels=np.array([2, 0, 1, 0]), d=3)
    assert p.K == 3 and p.counts == (2, 1, 1)
    np.testing.assert_array_equal(p.Y.argmax(0), [2, 0, 1, 0])


def test_frozen_and_replace():
    p = UFMProblem(K=3, n=2, d=4)
    with pytest.raises(Exception):
        p.d = 5
    q = p.replace(counts=[1, 2, 3], lam_W=0.5)
    assert q.counts == (1, 2, 3) and q.lam_W == 0.5 and p.counts == (2, 2, 2)
    with pytest.raises(ValueError):
        p.y[0] = 1


@pytest.mark.parametrize("kw,fragment", [
    (dict(K=1, n=2, d=3), "K must be an integer >= 2"),
    (dict(K=3, n=2), "d (feature dimension) is required"),
    (dict(K=3, d=3), "pass n="),
    (dict(K=3, n=2, counts=[2, 2, 2], d=3), "not both"),
    (dict(K=3, counts=[2, 2], d=3), "K=3 but len(counts)=2"),
    (dict(K=3, counts=[2, 0, 1], d=3), "counts[1] must be an integer >= 1"),
    (dict(K=3, n=2.5, d=3), "n must be an integer"),
    (dict(K=3, n=2, d=3, loss="hinge"), "loss must be one of"),
    (dict(K=3, n=2, d=3, lam_W=-0.1), "lam_W must be >= 0"),
    (dict(K=3, n=2, d=3, lam_H=float("nan")), "lam_H must be finite"),
    (dict(K=3, n=2, d=3, lam_b=0.1), "bias=False"),
    (dict(K=3, n=2, d=3, bias="yes"), "bias must be True or False"),
    (dict(labels=np.array([0, 0, 2]), d=3), "classes [1] have no example"),
    (dict(labels=np.array([[0.5, 0.2], [0.5, 0.7]]), d=3), "column-stochastic"),
    (dict(labels=np.array([[0.5, np.nan], [0.5, 1.0]]), d=3), "NaN"),
    (dict(labels=np.array([[1.5, 0.0], [-0.5, 1.0]]), d=3), "non-negative"),
    (dict(labels=np.eye(3), n=1, d=3), "omit n and counts"),
    (dict(labels=np.zeros((2, 2, 2)), d=3), "shape (2, 2, 2)"),
])
def test_bad_input_names_the_argument(kw, fragment):
    with pytest.raises(ValueError) as err:
        UFMProblem(**kw)
    assert fragment in str(err.value)


def test_layer_peeled_validation():
    p = LayerPeeledProblem(K=3, n=2, d=2, E_W=1.0, E_H=2.0)
    assert p.N == 6 and p.balanced
    with pytest.raises(ValueError, match="E_W must be > 0"):
        LayerPeeledProblem(K=3, n=2, d=2, E_W=0.0)
