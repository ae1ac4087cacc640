"""Tests for ufm.settings: synthetic settings with latent factors and distinct labels."""

import dataclasses
import itertools
import json
import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings as hsettings, strategies as st

from ufm.problems import UFMProblem
from ufm.settings import MAX_ITEMS, Setting, factorial, hierarchy, ntp_contexts


def shared_count(attrs):
    """Independent share: count equal attributes pair by pair in plain Python."""
    rows = [tuple(r) for r in np.asarray(attrs).tolist()]
    return np.array([[sum(a == b for a, b in zip(ri, rj)) for rj in rows] for ri in rows])


def one_hot_block(codes, L):
    out = np.zeros((L, len(codes)))
    for i, c in enumerate(codes):
        out[c, i] = 1.0
    return out


# -- factorial --------------------------------------------------------------------
@pytest.mark.parametrize("levels", [(2, 2), (2, 2, 2), (3, 2), (2, 3, 4), (5,)])
def test_factorial_is_the_cartesian_product(levels):
    s = factorial(levels)
    N, F = math.prod(levels), len(levels)
    assert (s.N, s.F) == (N, F)
    assert s.attributes.shape == (N, F)
    assert [tuple(r) for r in s.attributes.tolist()] == list(itertools.product(*map(range, levels)))
    assert s.levels == tuple(levels)
    for f, L in enumerate(levels):  # each column takes exactly the levels 0..L_f-1
        assert sorted(set(s.attributes[:, f].tolist())) == list(range(L))
    np.testing.assert_array_equal(s.share, shared_count(s.attributes))
    np.testing.assert_array_equal(np.diag(s.share), np.full(N, F))
    np.testing.assert_array_equal(s.labels, np.arange(N))
    assert len(set(s.labels.tolist())) == N
    assert len(s.items) == len(set(s.items)) == N


def test_factorial_names_and_items():
    s = factorial((2, 2, 2), factor_names=("size", "rigidity", "animacy"),
                  level_names=(("small", "large"), ("rigid", "soft"), ("inanimate", "animate")))
    assert s.factor_names == ("size", "rigidity", "animacy")
    assert s.items[1] == "small-rigid-animate"
    assert s.items[6] == "large-soft-inanimate"
    assert s.row_names[:2] == ("size=small", "size=large")
    assert s.name == "factorial(2x2x2)"
    assert s.params["levels"] == (2, 2, 2)
    # params are the generator's arguments: they rebuild the setting
    again = factorial(**s.params)
    assert again.items == s.items
    np.testing.assert_array_equal(again.attributes, s.attributes)
    json.dumps(s.params)


def test_factorial_2x2_share_matches_theory_tv6():
    # THEORY A.6 (TV6): shared-factor matrix of the 2x2 factorial
    s = factorial((2, 2))
    np.testing.assert_array_equal(s.share, [[2, 1, 1, 0], [1, 2, 0, 1], [1, 0, 2, 1], [0, 1, 1, 2]])


# -- encodings -----------------------------------------------------------------------
def test_encoding_2x2_matches_theory_tv5b():
    s = factorial((2, 2))
    Phi = s.encoding(0.5)
    A = np.array([[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 1, 0], [0, 1, 0, 1]], float)  # THEORY A.5 (b)
    np.testing.assert_array_equal(Phi, np.vstack([A, 0.5 * np.eye(4)]))
    d = np.linalg.svd(Phi, compute_uv=False)
    np.testing.assert_allclose(d, [2.0616, 1.5, 1.5, 0.5], atol=1e-4)
    np.testing.assert_allclose(d[0], math.sqrt(4.25), rtol=1e-12)  # eigenvalue 4 of S, plus sigma^2


@pytest.mark.parametrize("make", [lambda: factorial((3, 2, 2)), lambda: hierarchy((2, 3, 2))])
@pytest.mark.parametrize("sigma", [0.0, 0.25, 0.5, 2.0])
def test_encoding_block_structure(make, sigma):
    s = make()
    Phi = s.encoding(sigma)
    p_attr = sum(s.levels)
    assert Phi.shape == (p_attr + s.N, s.N) and Phi.dtype == np.float64
    assert s.block_sizes == s.levels
    # top: one one-hot block per factor, in factor order
    expected = np.vstack([one_hot_block(s.attributes[:, f], L) for f, L in enumerate(s.levels)])
    np.testing.assert_array_equal(Phi[:p_attr], expected)
    np.testing.assert_array_equal(Phi[:p_attr], s.attribute_encoding())
    np.testing.assert_array_equal(Phi[:p_attr].sum(0), np.full(s.N, s.F))
    # bottom: sigma * I (an all-zero block, same shape, when sigma = 0)
    np.testing.assert_array_equal(Phi[p_attr:], sigma * np.eye(s.N))
    # kernel identity, exact for dyadic sigma: Phi^T Phi = S + sigma^2 I
    np.testing.assert_array_equal(Phi.T @ Phi, s.share + sigma**2 * np.eye(s.N))
    np.testing.assert_array_equal(s.input_kernel(sigma), Phi.T @ Phi)
    np.testing.assert_array_equal(s.attribute_kernel(), s.share)


def test_encoding_sigma_zero_makes_equal_attribute_items_equal():
    s = hierarchy(2, depth=2)  # siblings have equal attributes
    Phi = s.encoding(0)
    np.testing.assert_array_equal(Phi[:, 0], Phi[:, 1])
    assert not np.array_equal(s.encoding(1e-3)[:, 0], s.encoding(1e-3)[:, 1])


def test_strengths_weight_each_factor():
    s = factorial((2, 3))
    E = s.attribute_encoding(strengths=(2.0, 0.5))
    np.testing.assert_array_equal(E[:2], 2.0 * one_hot_block(s.attributes[:, 0], 2))
    np.testing.assert_array_equal(E[2:], 0.5 * one_hot_block(s.attributes[:, 1], 3))
    same0 = s.attributes[:, 0][:, None] == s.attributes[:, 0][None, :]
    same1 = s.attributes[:, 1][:, None] == s.attributes[:, 1][None, :]
    Kx = 4.0 * same0 + 0.25 * same1
    np.testing.assert_allclose(s.attribute_kernel((2.0, 0.5)), Kx, rtol=0, atol=1e-15)
    np.testing.assert_allclose(s.input_kernel(0.3, strengths=(2.0, 0.5)), Kx + 0.09 * np.eye(6), atol=1e-14)
    Phi = s.encoding(0.3, strengths=(2.0, 0.5))
    np.testing.assert_allclose(Phi.T @ Phi, s.input_kernel(0.3, strengths=(2.0, 0.5)), atol=1e-14)
    # a scalar strength scales every block; zero strength leaves only sigma I
    np.testing.assert_array_equal(s.attribute_encoding(3.0), 3.0 * s.attribute_encoding())
    np.testing.assert_array_equal(s.input_kernel(0.5, strengths=0.0), 0.25 * np.eye(6))


@hsettings(max_examples=25, deadline=None)
@given(levels=st.lists(st.integers(2, 4), min_size=1, max_size=3),
       sigma=st.floats(0, 10, allow_nan=False))
def test_property_kernel_and_share(levels, sigma):
    s = factorial(levels)
    np.testing.assert_array_equal(s.share, shared_count(s.attributes))
    Phi = s.encoding(sigma)
    np.testing.assert_allclose(Phi.T @ Phi, s.share + sigma**2 * np.eye(s.N), rtol=1e-13, atol=1e-12)
    # the all-ones direction carries the largest singular value: sum of (N / L_f) + sigma^2
    top = np.linalg.eigvalsh(s.input_kernel(sigma))[-1]
    assert top == pytest.approx(sum(s.N / L for L in levels) + sigma**2, rel=1e-10)


# -- hierarchy -------------------------------------------------------------------------
def lca_depth(i, j, branching):
    pi = np.unravel_index(i, branching)
    pj = np.unravel_index(j, branching)
    k = 0
    while k < len(branching) and pi[k] == pj[k]:
        k += 1
    return k


@pytest.mark.parametrize("branching,depth", [(2, 1), (2, 2), (2, 3), (3, 3), ((3, 2, 2), None), ((2, 4), 2)])
def test_hierarchy_attributes_are_ancestors(branching, depth):
    s = hierarchy(branching, depth)
    br = (branching,) * depth if isinstance(branching, int) else tuple(branching)
    D = len(br)
    N = math.prod(br)
    assert (s.N, s.F) == (N, D - 1)
    assert s.levels == tuple(math.prod(br[: f + 1]) for f in range(D - 1))
    for i in range(N):
        path = [int(x) for x in np.unravel_index(i, br)]
        assert s.items[i] == ".".join(map(str, path))
        for f in range(D - 1):  # factor f = index of the ancestor at depth f + 1 among that depth's nodes
            assert s.attributes[i, f] == np.ravel_multi_index(path[: f + 1], br[: f + 1])
            assert s.level_names[f][s.attributes[i, f]] == ".".join(map(str, path[: f + 1]))
    for f in range(D - 1):
        assert sorted(set(s.attributes[:, f].tolist())) == list(range(s.levels[f]))
    np.testing.assert_array_equal(s.share, shared_count(s.attributes))
    np.testing.assert_array_equal(np.diag(s.share), np.full(N, s.F))
    expected = np.array([[min(lca_depth(i, j, br), D - 1) for j in range(N)] for i in range(N)])
    np.testing.assert_array_equal(s.share, expected)
    np.testing.assert_array_equal(s.labels, np.arange(N))


def test_hierarchy_siblings_and_cousins():
    s = hierarchy(2, depth=3)  # leaves 0.0.0, 0.0.1, 0.1.0, ...
    assert s.F == 2
    assert s.share[0, 1] == s.F        # siblings share every factor
    assert s.share[0, 2] == s.F - 1    # first cousins share the grandparent only
    assert s.share[0, 4] == 0          # different subtrees of the root share nothing
    assert s.factor_names == ("depth1", "depth2")


def test_hierarchy_depth_one_has_no_structure():
    s = hierarchy(4, depth=1)
    assert s.F == 0 and s.attributes.shape == (4, 0)
    np.testing.assert_array_equal(s.share, np.zeros((4, 4)))
    np.testing.assert_array_equal(s.encoding(2.0), 2.0 * np.eye(4))


# -- ntp_contexts ------------------------------------------------------------------------
def test_ntp_contexts_structure():
    C, m, v, ns = 3, 5, 2, 4
    s = ntp_contexts(n_classes=C, objects_per_class=m, verbs_per_class=v, n_subjects=ns, seed=7)
    N = C * m
    assert (s.N, s.F) == (N, 3)
    assert s.factor_names == ("object_class", "verb", "subject")
    assert s.tokens.shape == (N, 2) and s.tokens.dtype == np.int64
    assert isinstance(s.vocab, tuple) and all(isinstance(w, str) for w in s.vocab)
    assert len(s.vocab) == ns + C * v + N
    np.testing.assert_array_equal(s.labels, np.arange(N))
    # each object is the next token of exactly one context; next tokens are objects
    nxt = [s.vocab[t] for t in s.next_tokens]
    assert len(set(nxt)) == N and all(w.startswith("obj") for w in nxt)
    for i in range(N):
        subj, verb = (s.vocab[t] for t in s.tokens[i])
        assert subj.startswith("subj") and verb.startswith("verb")
        assert s.items[i] == f"{subj} {verb}"
        # the verb selects the object's class (read from the strings, independently of the table)
        verb_class = int(verb[len("verb"):].split(".")[0])
        obj_class = int(nxt[i][len("obj"):].split(".")[0])
        assert verb_class == obj_class == s.attributes[i, 0]
        assert s.attributes[i, 1] // v == s.attributes[i, 0]
        assert s.level_names[1][s.attributes[i, 1]] == verb
        assert s.level_names[2][s.attributes[i, 2]] == subj
    # contexts are distinct token sequences, every verb and subject occurs, balanced verbs
    assert len({tuple(r) for r in s.tokens.tolist()}) == N
    assert sorted(set(s.attributes[:, 1].tolist())) == list(range(C * v))
    assert sorted(set(s.attributes[:, 2].tolist())) == list(range(ns))
    counts = np.bincount(s.attributes[:, 1])
    assert set(counts.tolist()) <= {m // v, -(-m // v)}
    np.testing.assert_array_equal(s.share, shared_count(s.attributes))
    np.testing.assert_array_equal(np.diag(s.share), np.full(N, 3))


def test_ntp_encoding_is_bag_of_positions():
    s = ntp_contexts(n_classes=2, objects_per_class=3, verbs_per_class=2, n_subjects=2, seed=3)
    sigma = 0.5
    Phi = s.encoding(sigma)
    n_subj, n_verbs = 2, 4
    assert s.blocks == ("subject", "verb") and s.block_sizes == (n_subj, n_verbs)
    assert Phi.shape == (n_subj + n_verbs + s.N, s.N)
    top = np.vstack([one_hot_block(s.tokens[:, 0], n_subj), one_hot_block(s.tokens[:, 1] - n_subj, n_verbs)])
    np.testing.assert_array_equal(Phi[: n_subj + n_verbs], top)
    np.testing.assert_array_equal(Phi[n_subj + n_verbs:], sigma * np.eye(s.N))
    same_tokens = (s.tokens[:, None, :] == s.tokens[None, :, :]).sum(-1)
    np.testing.assert_array_equal(Phi.T @ Phi, same_tokens + sigma**2 * np.eye(s.N))
    np.testing.assert_array_equal(s.input_kernel(sigma), Phi.T @ Phi)


def test_ntp_reproducible_and_seed_dependent():
    a = ntp_contexts(n_classes=4, objects_per_class=6, verbs_per_class=3, n_subjects=5, seed=11)
    b = ntp_contexts(n_classes=4, objects_per_class=6, verbs_per_class=3, n_subjects=5, seed=11)
    c = ntp_contexts(n_classes=4, objects_per_class=6, verbs_per_class=3, n_subjects=5, seed=12)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.attributes, b.attributes)
    np.testing.assert_array_equal(a.encoding(1.0), b.encoding(1.0))
    assert a.items == b.items and a.vocab == b.vocab and a.params == b.params
    assert not np.array_equal(a.tokens, c.tokens)
    # seed=None draws fresh entropy but records it, so params rebuild the same setting
    d = ntp_contexts(seed=None)
    e = ntp_contexts(**d.params)
    np.testing.assert_array_equal(d.tokens, e.tokens)
    assert d.params["seed"] == e.params["seed"]


# -- Setting: immutability, problem bridge, custom tables ------------------------------------
def test_setting_is_frozen_and_read_only():
    s = ntp_contexts()
    for arr in (s.attributes, s.share, s.labels, s.tokens, s.next_tokens):
        assert not arr.flags.writeable
        with pytest.raises(ValueError):
            arr[0] = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.name = "other"
    with pytest.raises(TypeError, match="read-only"):
        s.params["seed"] = 5
    t = pickle.loads(pickle.dumps(s))
    np.testing.assert_array_equal(t.tokens, s.tokens)
    assert not t.tokens.flags.writeable and t.params == s.params
    # methods return fresh arrays: changing one does not change the next
    Phi = s.encoding(1.0)
    Phi[:] = 0
    assert s.encoding(1.0).any()


def test_as_problem_has_one_class_per_item():
    s = factorial((2, 2, 2))
    p = s.as_problem(d=10, loss="mse", lam_W=0.01, lam_H=0.02)
    assert isinstance(p, UFMProblem)
    assert (p.K, p.n, p.N, p.d, str(p.loss), p.lam_W, p.lam_H) == (8, 1, 8, 10, "mse", 0.01, 0.02)
    np.testing.assert_array_equal(p.y, s.labels)
    with pytest.raises(ValueError, match="lam_W"):
        s.as_problem(d=4, lam_W=-1)


def test_custom_setting_from_table():
    s = Setting(attributes=[[0, 1], [1, 1], [2, 0]], name="mine", factor_names=("color", "shape"))
    assert (s.N, s.F, s.levels) == (3, 2, (3, 2))
    np.testing.assert_array_equal(s.share, [[2, 1, 0], [1, 2, 0], [0, 0, 2]])
    assert s.items == ("0-1", "1-1", "2-0")
    assert s.tokens is None and s.blocks == ("color", "shape")


# -- errors name the argument and the fix ------------------------------------------------
@pytest.mark.parametrize("call,match", [
    (lambda: factorial((2, 1)), r"levels\[1\].*at least 2"),
    (lambda: factorial((2, 2.5)), r"levels\[1\] must be an integer"),
    (lambda: factorial((True, 2)), r"levels\[0\] must be an integer"),
    (lambda: factorial(()), r"levels is empty"),
    (lambda: factorial(3), r"levels must be a sequence.*\(3, 3\)"),
    (lambda: factorial(None), r"levels must be a sequence"),
    (lambda: factorial((10, 10, 10, 11)), r"11000 items.*maximum 10000.*fewer"),
    (lambda: factorial((2, 2), factor_names=("a",)), r"factor_names must have 2 entries"),
    (lambda: factorial((2, 2), factor_names=("a", "a")), r"factor_names must be distinct"),
    (lambda: factorial((2, 2), level_names=(("x", "y"), ("z",))), r"level_names\[1\]"),
    (lambda: factorial((2,), level_names=("ab",)), r"level_names\[0\].*string"),
    (lambda: hierarchy(1, depth=2), r"branching must be an integer >= 2"),
    (lambda: hierarchy(2, depth=0), r"depth must be an integer >= 1"),
    (lambda: hierarchy(2), r"depth is required"),
    (lambda: hierarchy((2, 1)), r"branching\[1\]"),
    (lambda: hierarchy((2, 3), depth=3), r"branching has 2 entries but depth=3"),
    (lambda: hierarchy(2, depth=10**9), r"branching=2, depth=1000000000.*lower branching or depth"),
    (lambda: hierarchy((100, 101)), r"10100 items.*lower branching or depth"),
    (lambda: ntp_contexts(n_classes=1), r"n_classes must be an integer >= 2"),
    (lambda: ntp_contexts(objects_per_class=0), r"objects_per_class must be an integer >= 1"),
    (lambda: ntp_contexts(objects_per_class=2, verbs_per_class=3), r"verbs_per_class=3 > objects_per_class=2"),
    (lambda: ntp_contexts(objects_per_class=6, verbs_per_class=1, n_subjects=3), r"raise n_subjects to >= 6"),
    (lambda: ntp_contexts(n_classes=2, objects_per_class=2, verbs_per_class=1, n_subjects=5),
     r"n_subjects=5 > N=4"),
    (lambda: ntp_contexts(n_classes=200, objects_per_class=60), r"12000 items.*lower n_classes"),
    (lambda: ntp_contexts(seed=-1), r"seed must be an integer >= 0"),
    (lambda: ntp_contexts(seed=1.5), r"seed must be an integer >= 0"),
    (lambda: Setting(attributes=[[0], [-1]]), r"attributes must hold levels 0..L_f-1"),
    (lambda: Setting(attributes=[[0, 1]]), r"at least 2 items"),
    (lambda: Setting(attributes=[0, 1]), r"attributes must be a 2-D"),
    (lambda: Setting(attributes=[[0.5], [1]]), r"attributes must hold integers"),
    (lambda: Setting(attributes=[[0], [2]], levels=(2,)), r"raise levels\[0\] to at least 3"),
    (lambda: Setting(attributes=[[0], [1]], items=("a", "a")), r"items must be distinct"),
    (lambda: Setting(attributes=[[0], [1]], vocab=("a",)), r"pass tokens"),
    (lambda: Setting(attributes=[[0], [1]], tokens=[[0], [5]], vocab=("a", "b")), r"tokens must be ids 0..1"),
])
def test_bad_arguments_raise_named_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("sigma", [-0.1, float("nan"), float("inf"), "big", None, True])
def test_bad_sigma(sigma):
    s = factorial((2, 2))
    with pytest.raises(ValueError, match="sigma"):
        s.encoding(sigma)
    with pytest.raises(ValueError, match="sigma"):
        s.input_kernel(sigma)


@pytest.mark.parametrize("strengths,match", [((1.0,), "one entry per block"), ((1.0, -1.0), ">= 0"),
                                             ((1.0, float("nan")), "finite"), ("ab", "real numbers")])
def test_bad_strengths(strengths, match):
    s = factorial((2, 2))
    with pytest.raises(ValueError, match=f"strengths.*{match}"):
        s.attribute_encoding(strengths)


def test_max_items_boundary_is_allowed():
    assert MAX_ITEMS == 10_000
    s = factorial((100, 100))
    assert s.N == MAX_ITEMS and s.attributes.shape == (MAX_ITEMS, 2)


def test_one_registry_of_named_settings():
    from ufm import cli, settings
    from ufm._sweep import PROBLEMS

    small = {"factorial": settings.factorial((2, 2, 2)), "hierarchy": settings.hierarchy(2, depth=3),
             "ntp_contexts": settings.ntp_contexts()}
    network = {"factorial": settings.factorial((2,) * 5), "hierarchy": settings.hierarchy((2,) * 5),
               "ntp_contexts": settings.ntp_contexts(4, 8, 2, 32)}
    assert set(settings.NAMED_SETTINGS) == set(small)
    for name in settings.NAMED_SETTINGS:
        for preset, expected in (("small", small[name]), ("network", network[name])):
            built = settings.named_setting(name, preset=preset)
            assert built.name == expected.name and np.array_equal(built.attributes, expected.attributes)
            assert settings.generator_of(built) == name
        assert cli.network_setting(name).name == network[name].name
        assert name in PROBLEMS
    with pytest.raises(ValueError, match="setting must be one of"):
        settings.named_setting("factorial2")
    with pytest.raises(ValueError, match="takes 4 sizes"):
        settings.named_setting("ntp_contexts", (3, 4))
