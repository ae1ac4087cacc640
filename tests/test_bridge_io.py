"""Bridge format: save/load in every format, foreign files, the Exporter (plain and hook paths), malformed files."""

import json
import os
import sys

import h5py
import numpy as np
import pytest
import safetensors.numpy as stnp
import torch

from ufm.bridge.io import Exporter, Run, load_run, save_run
from ufm.results import Solution, load

torch.set_num_threads(1)

FIELDS = ("steps", "grams", "labels", "counts", "attributes", "means", "W", "within", "loss")


def make_run(T=4, d=5, K=3, seed=0, name="probe run") -> Run:
    """A Run with every field, through the Exporter (imbalanced classes, permuted label ids)."""
    rng = np.random.default_rng(seed)
    labels = np.array([7, 2, 5, 4][:K])
    y = np.repeat(labels, np.arange(2, K + 2))
    ex = Exporter(labels, attributes=np.arange(2 * K).reshape(K, 2) % 2, name=name,
                  meta={"lr": 0.05, "net": "mlp", "seed": seed})
    for t, step in enumerate([0, 3, 10, 40][:T]):
        ex.record(step, rng.normal(size=(len(y), d)), y, W=rng.normal(size=(9, d)), loss=2.0 / (t + 1))
    return ex.run()


def assert_same_run(a: Run, b: Run):
    for f in FIELDS:
        x, y = getattr(a, f), getattr(b, f)
        assert (x is None) == (y is None), f
        if x is not None:
            assert x.dtype == y.dtype and np.array_equal(x, y), f
    assert a.name == b.name
    assert {k: v for k, v in a.meta.items() if k != "versions"} == {k: v for k, v in b.meta.items() if k != "versions"}
    assert a.meta["content_hash"] == b.meta["content_hash"]


def open_bytes(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def write_bytes(path, data: bytes):
    with open(path, "wb") as f:
        f.write(data)


# -- round trips ----------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", [".npz", ".safetensors", ".h5", ".hdf5"])
def test_round_trip(tmp_path, ext):
    run = make_run()
    path = save_run(run, tmp_path / f"run{ext}")
    assert path == str(tmp_path / f"run{ext}") and os.path.exists(path)
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]          # the temporary file is gone
    back = load_run(path)
    assert_same_run(run, back)
    assert back.meta["lr"] == 0.05 and back.meta["schema"] == 1


def test_round_trip_npz_is_the_results_format(tmp_path):
    run = make_run()
    assert_same_run(run, load(save_run(run, tmp_path / "a.npz")))       # ufm.results.load reads save_run files
    assert_same_run(run, load_run(run.save(tmp_path / "b")))             # load_run reads Run.save files
    assert save_run(run, tmp_path / "c") == str(tmp_path / "c.npz")     # no extension: .npz


def test_round_trip_h5_group_keeps_other_groups(tmp_path):
    path = tmp_path / "runs.h5"
    a, b = make_run(seed=1, name="a"), make_run(seed=2, name="b")
    save_run(a, path, group="seed1")
    save_run(b, path, group="nested/seed2")
    assert_same_run(a, load_run(path, group="seed1"))
    assert_same_run(b, load_run(path, group="nested/seed2"))
    with pytest.raises(ValueError, match="group 'seed1' already exists"):
        save_run(a, path, group="seed1")
    with pytest.raises(ValueError, match=r"group 'nope' not found; groups at the root: \['nested', 'seed1'\]"):
        load_run(path, group="nope")
    with pytest.raises(ValueError, match=r"'steps' is missing \(the file has groups \['nested', 'seed1'\]"):
        load_run(path)


def test_save_run_refuses_bad_targets(tmp_path):
    run = make_run()
    with pytest.raises(ValueError, match="unknown extension '.pt'"):
        save_run(run, tmp_path / "run.pt")
    with pytest.raises(ValueError, match="group='g' applies to HDF5 files only"):
        save_run(run, tmp_path / "run.npz", group="g")
    with pytest.raises(ValueError, match="run must be a ufm.bridge.Run"):
        save_run({"steps": [0]}, tmp_path / "run.npz")


def test_missing_optional_package_says_how_to_install(tmp_path, monkeypatch):
    run = make_run()
    path = save_run(run, tmp_path / "run.h5")
    monkeypatch.setitem(sys.modules, "h5py", None)           # import h5py now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'ufm\[io\]'"):
        load_run(path)
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    with pytest.raises(ImportError, match=r"pip install 'ufm\[io\]'"):
        save_run(run, tmp_path / "run.safetensors")


# -- foreign files ----------------------------------------------------------------------------------
def test_foreign_npz_from_means_only(tmp_path):
    rng = np.random.default_rng(3)
    means = rng.normal(size=(3, 6, 4))
    np.savez(tmp_path / "mine.npz", steps=[0, 10, 100], means=means)
    run = load_run(tmp_path / "mine.npz")
    expected = np.stack([m.T @ m for m in means])                       # grams = M^T M, classes as columns
    np.testing.assert_allclose(run.grams, expected, rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(run.means, means)
    np.testing.assert_array_equal(run.labels, np.arange(4))
    np.testing.assert_array_equal(run.counts, np.ones(4))
    assert run.steps.tolist() == [0, 10, 100]
    assert sorted(run.meta["defaults"]) == ["counts", "grams", "labels"]
    assert run.W is None and run.within is None and run.loss is None


def test_foreign_npz_with_every_field_keeps_them(tmp_path):
    ref = make_run()
    arrays = {f: np.asarray(getattr(ref, f)) for f in FIELDS}
    arrays["steps"] = arrays["steps"].astype(np.float32)               # integral floats are fine for ints
    np.savez(tmp_path / "mine.npz", name=np.array("my net"), meta=np.array(json.dumps({"opt": "sgd"})), **arrays)
    run = load_run(tmp_path / "mine.npz")
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(run, f), getattr(ref, f))
    assert run.name == "my net" and run.meta["opt"] == "sgd" and "defaults" not in run.meta
    assert run.steps.dtype == np.int64


def test_foreign_h5_group_and_safetensors(tmp_path):
    rng = np.random.default_rng(4)
    means = rng.normal(size=(2, 3, 3))
    grams = np.einsum("tdk,tdl->tkl", means, means)
    with h5py.File(tmp_path / "mine.h5", "w") as f:
        g = f.create_group("layer4")
        g.create_dataset("steps", data=[1, 5])
        g.create_dataset("grams", data=grams.astype(np.float32))
        g.create_dataset("labels", data=[4, 0, 9])
        g.attrs["name"] = "resnet layer4"
        g.attrs["optimizer"] = "adam"                                   # other attributes are ignored
    run = load_run(tmp_path / "mine.h5", group="layer4")
    np.testing.assert_allclose(run.grams, grams, rtol=1e-6)
    assert run.labels.tolist() == [4, 0, 9] and run.name == "resnet layer4"
    assert list(run.meta["defaults"]) == ["counts"]

    stnp.save_file({"steps": np.array([0, 2]), "means": means}, str(tmp_path / "mine.safetensors"),
                   metadata={"format": "pt"})
    run = load_run(tmp_path / "mine.safetensors")
    np.testing.assert_allclose(run.grams, grams, rtol=1e-13)
    assert sorted(run.meta["defaults"]) == ["counts", "grams", "labels"]


# -- Exporter statistics ----------------------------------------------------------------------------
def test_exporter_statistics_match_numpy():
    rng = np.random.default_rng(5)
    labels = np.array([2, 0, 1])                                        # Gram rows in this order
    y = rng.permutation(np.repeat([0, 1, 2], [3, 5, 4]))
    X1, X2 = rng.normal(size=(12, 6)), rng.normal(size=(12, 6)) + 1.0
    W1, W2 = rng.normal(size=(3, 6)), rng.normal(size=(3, 6))
    ex = Exporter(labels, classifier_rows="labels")                    # W's rows are the label ids
    ex.record(0, X1, y, W=W1, loss=1.5)
    ex.record(7, X2.astype(np.float32), y, W=W2, loss=0.5)
    run = ex.run()
    for t, X in enumerate([X1, X2.astype(np.float32).astype(np.float64)]):
        M = np.stack([X[y == k].mean(axis=0) for k in labels], axis=1)     # d x K, uncentred
        np.testing.assert_allclose(run.means[t], M, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(run.grams[t], M.T @ M, rtol=1e-12, atol=1e-12)
        within = [np.mean(np.sum((X[y == k] - X[y == k].mean(axis=0)) ** 2, axis=1)) for k in labels]
        np.testing.assert_allclose(run.within[t], within, rtol=1e-12)
    # a 3-row classifier whose rows are label ids 0, 1, 2: rows are picked by id, not by position
    np.testing.assert_array_equal(run.W[0], W1[[2, 0, 1]])
    np.testing.assert_array_equal(run.W[1], W2[[2, 0, 1]])
    assert run.counts.tolist() == [4, 3, 5] and run.steps.tolist() == [0, 7] and run.loss.tolist() == [1.5, 0.5]


def test_exporter_W_row_selection():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(4, 3))
    W = rng.normal(size=(10, 3))                                        # a vocabulary of 10 outputs
    ex = Exporter([7, 3])
    ex.record(0, X, [7, 3, 7, 3], W=W)
    np.testing.assert_array_equal(ex.run().W[0], W[[7, 3]])
    ex = Exporter([10, 20])                                             # ids beyond the rows: rows in label order
    ex.record(0, X, [10, 20, 10, 20], W=W[:2])
    np.testing.assert_array_equal(ex.run().W[0], W[:2])
    with pytest.raises(ValueError, match="W has 5 rows: too few"):
        ex.record(1, X, [10, 20, 10, 20], W=W[:5])


def test_exporter_refuses_class_indices_with_a_full_vocabulary_classifier():
    """Labels 0..K-1 with a vocabulary-sized head could mean rows 0..K-1 or the classes' own rows: say which."""
    rng = np.random.default_rng(8)
    X, W = rng.normal(size=(4, 3)), rng.normal(size=(10, 3))
    ex = Exporter([0, 1])
    with pytest.raises(ValueError, match="ambiguous.*classifier_rows='labels'.*classifier_rows='classes'"):
        ex.record(0, X, [0, 1, 0, 1], W=W)
    assert len(ex) == 0                                                   # nothing stored
    ex = Exporter([1, 0])                                                 # a permutation with K rows: ambiguous too
    with pytest.raises(ValueError, match="ambiguous"):
        ex.record(0, X, [1, 0, 1, 0], W=W[:2])
    # said explicitly, both readings work
    ex = Exporter([0, 1], classifier_rows="labels")
    ex.record(0, X, [0, 1, 0, 1], W=W)
    np.testing.assert_array_equal(ex.run().W[0], W[[0, 1]])
    ex = Exporter([0, 1], classifier_rows="classes")
    ex.record(0, X, [0, 1, 0, 1], W=W[[7, 4]])                            # the classes' rows, in class order
    np.testing.assert_array_equal(ex.run().W[0], W[[7, 4]])
    with pytest.raises(ValueError, match="classifier_rows='classes' needs one row per class"):
        ex.record(1, X, [0, 1, 0, 1], W=W)
    ex = Exporter([1, 0], classifier_rows="classes")
    ex.record(0, X, [1, 0, 1, 0], W=W[:2])
    np.testing.assert_array_equal(ex.run().W[0], W[:2])
    with pytest.raises(ValueError, match="classifier_rows must be"):
        Exporter([0, 1], classifier_rows="rows")
    # unambiguous: labels 0..K-1 with exactly K rows
    ex = Exporter([0, 1])
    ex.record(0, X, [0, 1, 0, 1], W=W[:2])
    np.testing.assert_array_equal(ex.run().W[0], W[:2])


def test_exporter_checks_and_failed_records_change_nothing(tmp_path):
    rng = np.random.default_rng(7)
    y = [0, 1, 2, 0, 1, 2]
    ex = Exporter([0, 1, 2])
    ex.record(0, rng.normal(size=(6, 4)), y, W=rng.normal(size=(3, 4)), loss=1.0)
    before = ex.run()
    bad = [
        (dict(step=0), "step 0 is not after"),
        (dict(W=rng.normal(size=(3, 5))), r"W must be \(K_out, d = 4\)"),
        (dict(W=None), "W was recorded at the first record"),
        (dict(loss=None), "loss was recorded at the first record"),
        (dict(loss=float("nan")), "loss is nan"),
        (dict(labels=[0, 1, 2, 0, 1, 1]), "examples per class changed"),
        (dict(labels=[0, 1, 2, 0, 1, 5]), "labels holds 5"),
        (dict(labels=[0.5, 1, 2, 0, 1, 2]), "integer label ids"),
        (dict(features=np.full((6, 4), np.nan)), "features holds NaN"),
        (dict(features=rng.normal(size=(6, 3))), "d = 3 columns"),
    ]
    for change, match in bad:
        args = dict(step=5, features=rng.normal(size=(6, 4)), labels=y, W=rng.normal(size=(3, 4)), loss=0.5)
        args.update(change)
        with pytest.raises(ValueError, match=match):
            ex.record(args.pop("step"), args.pop("features"), args.pop("labels"), **args)
        assert len(ex) == 1
    assert ex.run().meta["content_hash"] == before.meta["content_hash"]


def test_interrupted_recording_keeps_earlier_records(tmp_path):
    class Interrupting:                                                  # features whose reading is interrupted
        shape = (6, 4)

        def __array__(self, *args, **kwargs):
            raise KeyboardInterrupt

    rng = np.random.default_rng(8)
    y = [0, 1, 2, 0, 1, 2]
    path = tmp_path / "auto.safetensors"
    ex = Exporter([0, 1, 2], autosave=path)
    for step in (0, 1, 2):
        ex.record(step, rng.normal(size=(6, 4)), y)
        assert load_run(path).steps.tolist() == list(range(step + 1))  # autosave after each record
    with pytest.raises(KeyboardInterrupt):
        ex.record(3, Interrupting(), y)
    run = ex.run()
    assert run.steps.tolist() == [0, 1, 2]
    assert_same_run(run, load_run(path))
    ex.record(3, rng.normal(size=(6, 4)), y)                            # recording can resume
    assert ex.run().T == 4


# -- the forward-hook path ----------------------------------------------------------------------------
def small_mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4))


def test_hook_gives_the_same_run_as_record():
    model = small_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(20, 5, generator=gen), torch.arange(20) % 4
    probe = [x[:7], x[7:]]                                              # two forward batches per capture
    hooked, direct = Exporter(range(4)), Exporter(range(4))
    handle = hooked.attach(model[2], weight=True)
    for step in range(12):
        if step in (0, 3, 11):
            with torch.no_grad():
                with hooked.capture(step, y) as cap:
                    out = torch.cat([model(b) for b in probe])
                    cap.loss = float(torch.nn.functional.cross_entropy(out, y))
                feats = torch.cat([model[:2](b) for b in probe])
                direct.record(step, feats, y.numpy(), W=model[2].weight,
                              loss=float(torch.nn.functional.cross_entropy(model[2](feats), y)))
            np.testing.assert_array_equal(cap.features, feats.numpy())
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()     # training passes: not recorded
        opt.step()
    a, b = hooked.run(), direct.run()
    assert a.steps.tolist() == [0, 3, 11] and a.counts.tolist() == [5, 5, 5, 5]
    assert_same_run(a, b)
    assert not np.array_equal(a.grams[0], a.grams[-1])                 # training moved the features
    handle.remove()
    assert len(model[2]._forward_hooks) == 0
    with pytest.raises(ValueError, match="needs an attached module"), hooked.capture(20, y):
        model(x)


def test_hook_errors_and_discarded_blocks():
    model = small_mlp()
    x, y = torch.randn(8, 5), torch.arange(8) % 4
    ex = Exporter(range(4))
    with ex.attach(model[2]):
        with pytest.raises(ValueError, match="already attached"):
            ex.attach(model[0])
        with pytest.raises(ValueError, match="no forward pass of the attached Linear"), ex.capture(0, y):
            pass
        with pytest.raises(KeyboardInterrupt):                          # an interrupted block records nothing
            with torch.no_grad(), ex.capture(0, y):
                model(x[:4])
                raise KeyboardInterrupt
        assert len(ex) == 0
        with pytest.raises(ValueError, match="cannot be nested"), ex.capture(0, y), ex.capture(1, y):
            pass
        with torch.no_grad(), ex.capture(0, y):
            model(x)
        assert len(ex) == 1
    assert len(model[2]._forward_hooks) == 0 and ex._handle is None    # the with-block detached it
    with pytest.raises(ValueError, match="register_forward_hook"):
        ex.attach(object())


class TinyLM(torch.nn.Module):
    def __init__(self, vocab=12, d=6):
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(vocab, d)
        self.mix = torch.nn.Linear(d, d)
        self.head = torch.nn.Linear(d, vocab)

    def features(self, tokens):
        h = self.emb(tokens)
        return torch.tanh(self.mix(h) + h.cumsum(dim=1))               # (batch, seq, d), causal mixing

    def forward(self, tokens):
        return self.head(self.features(tokens))


def test_3d_features_need_position():
    model = TinyLM()
    gen = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, 12, (9, 5), generator=gen)
    nxt = torch.tensor([3, 5, 9] * 3)                                  # next-token ids: the classes
    hooked, direct = Exporter([3, 5, 9]), Exporter([3, 5, 9])
    with torch.no_grad():
        hooked.attach(model.head)
        with pytest.raises(ValueError, match=r"3-D \(9, 5, 6\).*position=-1"), hooked.capture(0, nxt):
            model(tokens)
        assert len(hooked) == 0
        hooked.detach()
        hooked.attach(model.head, position=-1, weight=True)
        with hooked.capture(0, nxt):
            model(tokens)
        feats = model.features(tokens)
        with pytest.raises(ValueError, match="position="):
            direct.record(0, feats, nxt, W=model.head.weight)
        with pytest.raises(ValueError, match="position=0 was given but the features are 2-D"):
            direct.record(0, feats[:, -1], nxt, position=0)
        direct.record(0, feats, nxt, W=model.head.weight, position=-1)
    a, b = hooked.run(), direct.run()
    assert_same_run(a, b)
    last = feats[:, -1].numpy().astype(np.float64)
    np.testing.assert_allclose(a.means[0][:, 0], last[nxt.numpy() == 3].mean(axis=0), rtol=1e-12)
    np.testing.assert_array_equal(a.W[0], model.head.weight.detach().numpy()[[3, 5, 9]])   # vocabulary rows


# -- malformed files --------------------------------------------------------------------------------
EYE = np.stack([np.eye(2)] * 2)


def _foreign(**arrays):
    def write(dir_):
        base = dict(steps=[0, 1], grams=EYE, labels=[0, 1])
        base.update(arrays)
        np.savez(dir_ / "f.npz", **{k: v for k, v in base.items() if v is not None})
        return dir_ / "f.npz"
    return write


def _ufm_npz_edit(edit):
    """A ufm-written npz whose arrays / header are edited, then rewritten with np.savez."""
    def write(dir_):
        path = save_run(make_run(), dir_ / "u.npz")
        with np.load(path) as data:
            arrays = {k: np.array(data[k]) for k in data.files}
        header = json.loads(str(arrays.pop("__header__")))
        edit(arrays, header)
        np.savez(path, __header__=np.array(json.dumps(header)), **arrays)
        return path
    return write


def _tamper_loss(arrays, header):
    arrays["loss"] = arrays["loss"] + 1e-9


def _truncated(ext):
    def write(dir_):
        path = save_run(make_run(), dir_ / f"t{ext}")
        data = open_bytes(path)
        write_bytes(path, data[: len(data) // 2])
        return path
    return write


def _flip_byte(dir_):
    path = save_run(make_run(T=4, d=40), dir_ / "c.npz")
    data = bytearray(open_bytes(path))
    data[len(data) // 2] ^= 0xFF
    write_bytes(path, bytes(data))
    return path


def _tampered_safetensors(dir_):
    path = str(save_run(make_run(), dir_ / "t.safetensors"))
    with __import__("safetensors").safe_open(path, framework="np") as f:
        meta, arrays = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    arrays["loss"] = arrays["loss"] * 1.001
    stnp.save_file(arrays, path, metadata=meta)
    return path


def _tampered_h5(dir_):
    path = save_run(make_run(), dir_ / "t.h5")
    with h5py.File(path, "r+") as f:
        f["within"][0, 0] += 1e-6
    return path


def _h5_missing(name):
    def write(dir_):
        path = save_run(make_run(), dir_ / "m.h5")
        with h5py.File(path, "r+") as f:
            del f[name]
        return path
    return write


def _h5_foreign_without_steps(dir_):
    with h5py.File(dir_ / "f.h5", "w") as f:
        f["grams"] = EYE
    return dir_ / "f.h5"


def _safetensors_foreign(**tensors):
    def write(dir_):
        base = {"steps": torch.tensor([0, 1]), "grams": torch.tensor(EYE)}
        base.update(tensors)
        import safetensors.torch as sttorch
        sttorch.save_file(base, str(dir_ / "f.safetensors"))
        return dir_ / "f.safetensors"
    return write


def _other_result(dir_):
    sol = Solution(W=np.eye(2), H=np.eye(2), b=None, Z=np.eye(2), objective=0.0, status="exact", regime="etf",
                   method="closed_form")
    return sol.save(dir_ / "sol.npz")


def _pickle_file(dir_):
    import pickle
    with open(dir_ / "p.npz", "wb") as f:
        pickle.dump({"steps": [0, 1]}, f)
    return dir_ / "p.npz"


def _raw(path, data: bytes):
    path.write_bytes(data)
    return path


def _npy(path):
    with open(path, "wb") as f:
        np.save(f, EYE)
    return path


def _meta_schema(arrays, header):
    header["meta"]["schema"] = 99


MALFORMED = [
    ("missing file", lambda d: d / "absent.npz", "absent.npz: file does not exist"),
    ("unknown extension", lambda d: d / "run.pt", r"unknown extension '\.pt'"),
    ("missing grams and means", _foreign(grams=None), r"field 'grams' is missing and so is 'means'"),
    ("missing steps", _foreign(steps=None), r"field 'steps' is missing"),
    ("wrong shape", _foreign(grams=np.ones((3, 2, 2))), r"'grams'.*shape \(3, 2, 2\).*T = len\(steps\) = 2"),
    ("2-D grams", _foreign(grams=np.eye(2)), r"'grams' has shape \(2, 2\), expected \(T, K, K\)"),
    ("NaN", _foreign(grams=np.where(EYE == 1, np.nan, 0.0)), r"'grams'.*NaN"),
    ("NaN in means", _foreign(grams=None, means=np.full((2, 3, 2), np.nan)), r"'means'.*NaN"),
    ("asymmetric", _foreign(grams=EYE + np.array([[0, 0.5], [0, 0]])), r"'grams'.*not symmetric"),
    ("non-PSD", _foreign(grams=np.stack([[[1.0, 2.0], [2.0, 1.0]]] * 2)), r"'grams'.*not positive semidefinite"),
    ("duplicate labels", _foreign(labels=[3, 3]), r"'labels'.*distinct"),
    ("non-increasing steps", _foreign(steps=[5, 5]), r"'steps'.*strictly increasing"),
    ("means disagree", _foreign(means=np.ones((2, 3, 2))), r"'grams'.*differs from means\^T means"),
    ("unknown keys", _foreign(feats=np.ones(3), lr=0.1),
     r"unknown fields \['feats', 'lr'\]; a bridge run holds the arrays \['steps', 'grams'"),
    ("object array", _foreign(labels=np.array([0, "a"], dtype=object)), r"field 'labels' is an object array"),
    ("string dtype", _foreign(labels=np.array(["cat", "dog"])), r"field 'labels' has dtype <U3"),
    ("non-integer counts", _foreign(counts=[1.5, 2.0]), r"'counts'.*non-integer"),
    ("bad meta JSON", _foreign(meta=np.array("{lr: 1")), r"field 'meta' is not valid JSON"),
    ("wrong file schema", _ufm_npz_edit(lambda a, h: h.update(schema=7)), r"field 'schema' is 7"),
    ("wrong bridge schema", _ufm_npz_edit(_meta_schema), r"field 'schema'.*99"),
    ("unknown result type", _ufm_npz_edit(lambda a, h: h.update(type="Model")), r"'type'.*unknown result type 'Model'"),
    ("other result type", _other_result, r"field 'type' is 'Solution'"),
    ("tampered npz", _ufm_npz_edit(_tamper_loss), r"'content_hash' does not match"),
    ("tampered safetensors", _tampered_safetensors, r"'content_hash' does not match"),
    ("tampered h5", _tampered_h5, r"'content_hash' does not match"),
    ("ufm npz lost a field", _ufm_npz_edit(lambda a, h: a.pop("counts")), r"'counts' is missing from a file written"),
    ("truncated npz", _truncated(".npz"), r"t\.npz: is not a valid \.npz.*truncated or corrupted"),
    ("truncated safetensors", _truncated(".safetensors"), r"t\.safetensors: cannot be read.*truncated or corrupted"),
    ("truncated h5", _truncated(".h5"), r"t\.h5: cannot be opened as an HDF5 file.*truncated or corrupted"),
    ("flipped byte", _flip_byte, r"c\.npz: .*truncated or corrupted"),
    ("pickle", _pickle_file, r"p\.npz is not an \.npz archive but pickled data"),
    ("garbage npz", lambda d: _raw(d / "g.npz", b"not a zip archive at all"), r"g\.npz is not an \.npz \(zip\) archive"),
    ("empty npz", lambda d: _raw(d / "e.npz", b""), r"e\.npz: is not a valid \.npz.*truncated or corrupted"),
    ("npy named npz", lambda d: _npy(d / "a.npz"), r"a\.npz holds a single \.npy array"),
    ("h5 missing dataset", _h5_missing("grams"), r"field 'grams' is missing from a file written by ufm"),
    ("h5 foreign without steps", _h5_foreign_without_steps, r"field 'steps' is missing"),
    ("safetensors BF16", _safetensors_foreign(grams=torch.tensor(EYE, dtype=torch.bfloat16)),
     r"field 'grams' has safetensors dtype BF16"),
    ("safetensors bool", _safetensors_foreign(labels=torch.tensor([True, False])), r"field 'labels'.*BOOL"),
    ("safetensors float labels", _safetensors_foreign(labels=torch.tensor([0.5, 1.0])), r"'labels'.*non-integer"),
]


@pytest.mark.parametrize("write, match", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_files_raise_valueerror_naming_the_problem(tmp_path, write, match):
    path = write(tmp_path)
    with pytest.raises(ValueError, match=match):
        load_run(path)


def test_corrupt_file_is_never_loaded_silently(tmp_path):
    """Flip each of many bytes of a small file: every load either fails with ValueError or gives the exact run."""
    run = make_run(T=2, d=3)
    path = save_run(run, tmp_path / "r.npz")
    data = open_bytes(path)
    outcomes = set()
    for i in range(0, len(data), max(1, len(data) // 60)):
        bad = bytearray(data)
        bad[i] ^= 0x55
        write_bytes(path, bytes(bad))
        try:
            back = load_run(path)
        except ValueError:
            outcomes.add("error")
        else:
            assert_same_run(run, back)
            outcomes.add("same")
    assert "error" in outcomes
