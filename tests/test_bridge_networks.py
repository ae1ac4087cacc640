"""Reference networks (ufm.bridge.networks): valid deterministic runs, the rise and the collapse, the CLI."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from ufm.bridge.io import log_steps
from ufm.bridge.networks import DEFAULTS, LEGACY, gap_summary, run_path, train_network
from ufm.cli import main
from ufm.results import Run, load
from ufm.settings import factorial, hierarchy, ntp_contexts

pytestmark = pytest.mark.slow          # trains, runs subprocesses or reads the built site: `make test-fast` skips it

torch.set_num_threads(1)

# small and fast: factorial(2x2x2x2), 16 items, width 128 (~1-5 s each on one thread)
SMALL = factorial((2, 2, 2, 2))
# the earlier conditions (post-ReLU features, no feature / classifier penalty): the gap rises and falls, no ETF
SMALL_KW = dict(width=128, steps=3000, n_records=40, item_scale=2.0, feature_layer="relu", feature_decay=0.0,
                classifier_decay=0.0)
# the defaults' conditions (linear feature layer, item_scale 1, penalties 1e-3), shorter: rise, then the ETF
WHOLE_KW = dict(width=128, steps=1500, n_records=30)


def _grams_equal(a: Run, b: Run):
    np.testing.assert_array_equal(a.steps, b.steps)
    np.testing.assert_array_equal(a.grams, b.grams)
    np.testing.assert_array_equal(a.W, b.W)
    np.testing.assert_array_equal(a.loss, b.loss)


# -- runs: valid, deterministic, on the grid ---------------------------------------------------
def test_mlp_run_is_valid_deterministic_and_on_the_grid(tmp_path):
    s = factorial((2, 2, 2))
    kw = dict(steps=200, width=32, n_records=20, seed=3)
    out = tmp_path / "mlp.npz"
    a = train_network(s, out=out, **kw)
    b = train_network(s, **kw)
    _grams_equal(a, b)
    assert a.meta["content_hash"] == b.meta["content_hash"]          # no wall time in meta
    np.testing.assert_array_equal(a.steps, log_steps(200, 20))
    assert a.T == len(log_steps(200, 20)) and a.steps[0] == 0 and a.steps[-1] == 200
    np.testing.assert_array_equal(a.labels, np.arange(8))
    np.testing.assert_array_equal(a.counts, np.ones(8))
    np.testing.assert_array_equal(a.attributes, s.attributes)
    assert a.means.shape == (a.T, 32, 8) and a.W.shape == (a.T, 8, 32)
    np.testing.assert_allclose(a.grams, np.einsum("tdk,tdl->tkl", a.means, a.means), atol=1e-9)
    assert a.means.min() < 0                                            # linear feature layer (default)
    assert a.loss[0] == pytest.approx(np.log(8), rel=0.1) and a.loss[-1] < 0.1 * a.loss[0]
    m = a.meta
    assert m["status"] == "completed" and m["steps_run"] == 200
    assert m["network"]["arch"] == "mlp" and m["network"]["depth"] == DEFAULTS["mlp"]["depth"]
    assert m["network"]["input_dim"] == 6 + 8                           # 3 binary factors + item one-hot
    assert m["optimizer"] == "adam" and m["lr"] == 1e-3 and m["weight_decay"] == 0.0
    assert m["feature_decay"] == DEFAULTS["mlp"]["feature_decay"] > 0
    assert m["classifier_decay"] == DEFAULTS["mlp"]["classifier_decay"] > 0
    assert m["network"]["feature_layer"] == "linear" and "objective" in m
    assert m["item_scale"] == DEFAULTS["mlp"]["item_scale"] and m["seed"] == 3 and m["torch"] == torch.__version__
    assert m["setting"]["generator"] == "factorial" and m["setting"]["params"]["levels"] == [2, 2, 2]
    saved = load(out)
    assert isinstance(saved, Run) and saved.meta["content_hash"] == a.meta["content_hash"]
    _grams_equal(saved, a)
    # another seed is another initialization
    c = train_network(s, **{**kw, "seed": 4})
    assert not np.allclose(c.grams[0], a.grams[0])
    # post-ReLU features on request
    r = train_network(s, feature_layer="relu", **kw)
    assert np.all(r.means >= 0) and r.meta["network"]["feature_layer"] == "relu"


def test_transformer_run_labels_are_next_tokens_and_W_rows_follow():
    s = ntp_contexts()                                                  # 12 contexts, vocabulary 21
    kw = dict(steps=60, width=32, n_records=15)
    a = train_network(s, **kw)
    b = train_network(s, **kw)
    _grams_equal(a, b)
    np.testing.assert_array_equal(a.labels, s.next_tokens)
    np.testing.assert_array_equal(a.attributes, s.attributes)
    assert a.W.shape == (a.T, s.N, 32) and a.means.shape == (a.T, 32, s.N)
    m = a.meta
    assert m["network"]["arch"] == "transformer" and m["network"]["outputs"] == len(s.vocab)
    assert m["optimizer"] == DEFAULTS["transformer"]["optimizer"] == "adam" and m["item_scale"] is None
    assert m["lr"] == DEFAULTS["transformer"]["lr"]["adam"]
    assert a.loss[-1] < 0.5 * a.loss[0]
    # final LayerNorm: every feature has mean 0 and variance ~1 over its coordinates (LN gain/bias start at 1/0)
    np.testing.assert_allclose(a.means[0].mean(axis=0), 0.0, atol=1e-5)
    # an MLP on the same token setting: labels are the item ids
    c = train_network(s, arch="mlp", steps=20, width=16, n_records=5)
    np.testing.assert_array_equal(c.labels, np.arange(s.N))


def test_torch_state_is_restored():
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_network(factorial((2, 2)), steps=5, width=8, n_records=3)
    np.testing.assert_array_equal(torch.rand(3), expected)             # the global RNG was not advanced
    assert torch.get_num_threads() == threads


def test_minibatch_is_deterministic_and_differs_from_full_batch():
    kw = dict(steps=40, width=16, n_records=6)
    a = train_network(factorial((2, 2, 2)), batch_size=3, **kw)
    b = train_network(factorial((2, 2, 2)), batch_size=3, **kw)
    full = train_network(factorial((2, 2, 2)), **kw)
    _grams_equal(a, b)
    np.testing.assert_array_equal(a.grams[0], full.grams[0])            # same initialization
    assert not np.allclose(a.grams[-1], full.grams[-1])
    assert a.meta["batch_size"] == 3


# -- the whole phenomenon: the gap rises, then the features reach the simplex ETF -------------------
def test_mlp_gap_rises_then_features_reach_the_etf_at_the_ufm_optimum():
    """Default conditions: the gap rises during the loss drop, then falls to 0 while the Gram reaches the ETF.

    Margins measured on seeds 0-4 at these sizes: rise +0.10 to +0.13 (peak at step 50), end gap <= 0.002,
    end ETF distance 0.023-0.040 from 0.77-0.81 at the start, end loss 0.3-0.6 % above the closed form.
    """
    run = train_network(SMALL, **WHOLE_KW)
    s = gap_summary(run)
    assert s["peak"] > s["start"] + 0.07, s
    assert 10 <= s["peak_step"] <= 300, s                               # early, during the loss drop
    assert abs(s["end"]) < 0.05 * s["peak"], s                          # the attribute structure is gone
    assert s["etf_end"] < 0.08 and s["etf_end"] < 0.1 * s["etf_start"], s
    assert s["etf_min_step"] > s["peak_step"] and s["collapsed"] and s["transient"]
    # the end state is the regularized UFM optimum (THEORY 1.2): CE = -log(1 - (K-1) sqrt(lambda_W lambda_H))
    K, gamma = SMALL.N, np.sqrt(DEFAULTS["mlp"]["feature_decay"] * DEFAULTS["mlp"]["classifier_decay"])
    assert run.loss[-1] == pytest.approx(-np.log(1 - (K - 1) * gamma), rel=0.02)


def test_without_the_feature_penalty_the_mlp_does_not_reach_the_etf():
    """Same run with feature_decay=0 (classifier penalty kept): the gap stays high, the ETF distance near 0.9
    (measured 0.887-0.898, seeds 0-2)."""
    s = gap_summary(train_network(SMALL, **{**WHOLE_KW, "feature_decay": 0.0}))
    assert s["peak"] > s["start"] + 0.07, s
    assert s["etf_end"] > 0.5 and not s["collapsed"], s


def test_transformer_gap_rises_then_features_reach_the_etf():
    """Transformer defaults on ntp_contexts(4, 8, 2, 32) (measured on seeds 0-2: rise +0.08 to +0.58 within
    4 steps, end ETF distance 0.008-0.017)."""
    s = gap_summary(train_network(ntp_contexts(4, 8, 2, 32)))
    assert s["peak"] > s["start"] + 0.05, s
    assert s["peak_step"] <= 20, s
    assert abs(s["end"]) < 0.05 * s["peak"], s
    assert s["etf_end"] < 0.05 < s["etf_start"] - 0.5, s
    assert s["collapsed"] and s["transient"]


# -- the earlier conditions: a transient without the ETF, or no transient ----------------------
def test_mlp_shows_structure_before_collapse():
    """Gap rises while the loss drops, then falls (AdamW, decoupled decay: fast at this size); without the
    feature penalty the features do not reach the ETF (end distance 0.88-0.90 on seeds 0-2)."""
    run = train_network(SMALL, **{**SMALL_KW, "optimizer": "adamw", "weight_decay": 1.0})
    s = gap_summary(run)
    assert s["peak"] > s["start"] + 0.06, s
    assert s["end"] < 0.5 * s["peak"], s
    assert 10 <= s["peak_step"] <= 500, s                               # early, around the loss drop
    assert s["transient"]
    assert s["etf_end"] > 0.5 and not s["collapsed"], s


@pytest.mark.parametrize("config", [
    dict(optimizer="adamw", weight_decay=1.0, item_scale=0.0),          # attributes alone: no per-item capacity
    dict(optimizer="sgd", weight_decay=5e-4),                           # SGD keeps the structure
])
def test_no_collapse_without_capacity_or_with_sgd(config):
    s = gap_summary(train_network(SMALL, **{**SMALL_KW, **config}))
    assert s["peak"] > s["start"] + 0.04, s                             # the structure is learned ...
    assert s["end"] > 0.85 * s["peak"], s                               # ... and kept
    assert not s["transient"]


def test_legacy_transformer_shows_the_transient_but_not_the_etf():
    """The earlier transformer defaults (SGD, no penalties): gap rises and falls, ETF distance ends near 0.78."""
    s = gap_summary(train_network(ntp_contexts(4, 8, 2, 32), **LEGACY["transformer"]))
    assert s["peak"] > s["start"] + 0.1, s
    assert s["end"] < 0.5 * s["peak"], s
    assert s["etf_start"] > s["etf_end"] > 0.5 and not s["collapsed"], s


def test_gap_summary_reports_the_etf_minimum_and_the_collapse_threshold():
    """A synthetic run: structured Gram P + beta P S P with beta 0 -> 1 -> 0 (THEORY TV6 family)."""
    s = factorial((2, 2))
    P = np.eye(4) - 1 / 4
    betas = np.array([0.3, 1.0, 0.5, 0.05, 0.0])
    grams = np.stack([P + b * P @ s.share @ P for b in betas]) + 0.1          # a global mean, removed by centring
    run = Run(steps=np.array([0, 1, 10, 100, 1000]), grams=grams, labels=np.arange(4), counts=np.ones(4, int),
              attributes=s.attributes)
    out = gap_summary(run)
    assert out["peak_step"] == 1 and out["etf_min_step"] == 1000 and out["etf_end"] < 1e-12
    assert out["collapsed"] and out["transient"]
    assert np.all(np.diff(out["etf"][1:]) < 0) and out["etf_start"] < out["etf"][1]
    strict = gap_summary(Run(steps=run.steps[:4], grams=grams[:4], labels=run.labels, counts=run.counts,
                             attributes=s.attributes), collapse=0.01)
    assert 0.01 < strict["etf_end"] and not strict["collapsed"]
    with pytest.raises(ValueError, match="collapse"):
        gap_summary(run, collapse=-0.1)


# -- interruption and divergence ---------------------------------------------------------------
def test_keyboard_interrupt_returns_the_partial_run(tmp_path):
    seen = []

    def stop(step, loss):
        seen.append((step, loss))
        if step >= 20:
            raise KeyboardInterrupt

    out = tmp_path / "partial.npz"
    threads = torch.get_num_threads()
    run = train_network(hierarchy(2, depth=3), steps=500, width=16, n_records=30, callback=stop, out=out)
    assert run.meta["status"] == "interrupted"
    grid = log_steps(500, 30)
    kept = grid[: np.searchsorted(grid, 20) + 1]                        # up to the first record at step >= 20
    assert kept[-1] >= 20
    np.testing.assert_array_equal(run.steps, kept)                      # every record up to the interrupt
    assert [s for s, _ in seen] == kept.tolist()
    np.testing.assert_allclose(run.loss, [l for _, l in seen])
    assert torch.get_num_threads() == threads
    assert load(out).meta["status"] == "interrupted"
    # the records are those of an uninterrupted run
    full = train_network(hierarchy(2, depth=3), steps=500, width=16, n_records=30)
    np.testing.assert_array_equal(full.grams[: len(kept)], run.grams)
    assert full.meta["status"] == "completed"


def test_an_interrupted_run_does_not_replace_an_earlier_run_at_out(tmp_path):
    def stop(step, loss):
        if step >= 20:
            raise KeyboardInterrupt

    out = tmp_path / "run.npz"
    kw = dict(steps=60, width=16, n_records=10)
    earlier = train_network(hierarchy(2, depth=3), out=out, **kw)
    partial = train_network(hierarchy(2, depth=3), callback=stop, out=out, **{**kw, "seed": 1})
    assert partial.meta["status"] == "interrupted"
    assert load(out).meta["content_hash"] == earlier.meta["content_hash"]           # the complete run is kept
    beside = tmp_path / "run.interrupted.npz"
    assert run_path(out, "interrupted") == str(beside) and run_path(out, "completed") == str(out)
    assert load(beside).meta["content_hash"] == partial.meta["content_hash"]
    again = train_network(hierarchy(2, depth=3), callback=stop, out=tmp_path / "fresh", **kw)
    assert load(tmp_path / "fresh.npz").meta["content_hash"] == again.meta["content_hash"]   # nothing there: out


def test_interrupt_before_the_first_record_propagates(monkeypatch):
    import ufm.bridge.networks as nw

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(nw, "_build_mlp", boom)
    with pytest.raises(KeyboardInterrupt):
        train_network(factorial((2, 2)), steps=5, width=4)


def test_divergence_keeps_the_records_before_it():
    run = train_network(factorial((2, 2, 2)), optimizer="sgd", lr=1e12, steps=50, width=16, n_records=10)
    assert run.meta["status"] == "nonfinite" and "lower lr" in run.meta["message"]
    assert 1 <= run.T < len(log_steps(50, 10)) and np.all(np.isfinite(run.grams))


# -- bad arguments -------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, name", [
    (dict(arch="cnn"), "arch"),
    (dict(optimizer="rmsprop"), "optimizer"),
    (dict(steps=0), "steps"),
    (dict(steps=2.5), "steps"),
    (dict(lr=-1.0), "lr"),
    (dict(lr=float("nan")), "lr"),
    (dict(weight_decay=-0.1), "weight_decay"),
    (dict(width=0), "width"),
    (dict(depth=0), "depth"),
    (dict(item_scale=-1.0), "item_scale"),
    (dict(feature_layer="tanh"), "feature_layer"),
    (dict(feature_decay=-1e-3), "feature_decay"),
    (dict(classifier_decay=float("nan")), "classifier_decay"),
    (dict(classifier_decay="big"), "classifier_decay"),
    (dict(batch_size=9), "batch_size"),
    (dict(batch_size=0), "batch_size"),
    (dict(n_records=1), "n_records"),
    (dict(seed=-1), "seed"),
    (dict(callback=3), "callback"),
    (dict(arch="transformer"), "arch='transformer'"),
    (dict(out="/nonexistent-folder/run.npz"), "out="),
    (dict(out="run.pt"), "extension"),
])
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name.replace("(", r"\(").replace("[", r"\[")):
        train_network(factorial((2, 2, 2)), **kwargs)


def test_bad_arguments_for_the_transformer_and_the_setting():
    with pytest.raises(ValueError, match="item_scale"):
        train_network(ntp_contexts(), item_scale=1.0)
    with pytest.raises(ValueError, match="width must be a multiple"):
        train_network(ntp_contexts(), width=30)
    with pytest.raises(ValueError, match="feature_layer.*arch='mlp'"):
        train_network(ntp_contexts(), feature_layer="relu")
    with pytest.raises(ValueError, match="setting must be a ufm.settings.Setting"):
        train_network(np.zeros((4, 2)))


def test_missing_torch_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)                     # `import torch` raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'ufm\[torch\]'.*torch==2\.13\.0"):
        train_network(factorial((2, 2)), steps=2)


def test_import_does_not_load_torch():
    code = "import sys, ufm.bridge, ufm.bridge.networks; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the command line ------------------------------------------------------------------------------
def test_cli_train_network_writes_a_loadable_run(tmp_path, capsys):
    out = tmp_path / "run.npz"
    rc = main(["train-network", "--setting", "factorial", "--levels", "2,2,2", "--steps", "150", "--width", "32",
               "--n-records", "12", "--seed", "1", "--quiet", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "semantic gap: start" in text and "peak" in text and "end" in text and str(out) in text
    run = load(out)
    assert isinstance(run, Run) and run.K == 8 and run.steps[-1] == 150 and run.meta["seed"] == 1
    same = train_network(factorial((2, 2, 2)), steps=150, width=32, n_records=12, seed=1)
    np.testing.assert_array_equal(run.grams, same.grams)               # the CLI is a thin wrapper


def test_cli_transformer_and_hierarchy(tmp_path, capsys):
    assert main(["train-network", "--setting", "ntp_contexts", "--levels", "3,4,2,3", "--steps", "20",
                 "--width", "16", "--quiet", "--out", str(tmp_path / "t.npz")]) == 0
    assert load(tmp_path / "t.npz").meta["network"]["arch"] == "transformer"
    assert main(["train-network", "--setting", "hierarchy", "--levels", "2,2", "--steps", "10", "--width", "8",
                 "--optimizer", "sgd", "--weight-decay", "1e-3", "--feature-layer", "relu", "--feature-decay", "0",
                 "--classifier-decay", "2e-3", "--quiet", "--out", str(tmp_path / "h")]) == 0
    text = capsys.readouterr().out
    assert "collapsed" in text and "feature_decay=0 classifier_decay=0.002" in text
    m = load(tmp_path / "h.npz").meta
    assert m["optimizer"] == "sgd" and m["network"]["feature_layer"] == "relu"
    assert m["feature_decay"] == 0.0 and m["classifier_decay"] == 2e-3


@pytest.mark.parametrize("argv, needle", [
    (["--setting", "factorial", "--levels", "2,x"], "--levels"),
    (["--setting", "factorial", "--levels", "1,2"], "levels[0]"),
    (["--setting", "ntp_contexts", "--levels", "3,4"], "--levels for ntp_contexts"),
    (["--setting", "ntp_contexts", "--item-scale", "2"], "item_scale"),
    (["--setting", "factorial", "--steps", "0"], "steps"),
    (["--setting", "factorial", "--lr", "-1"], "lr"),
    (["--setting", "factorial", "--feature-decay", "-1"], "feature_decay"),
    (["--setting", "ntp_contexts", "--feature-layer", "relu"], "feature_layer"),
])
def test_cli_bad_input_exits_2(tmp_path, capsys, argv, needle):
    rc = main(["train-network", *argv, "--quiet", "--out", str(tmp_path / "x.npz")])
    assert rc == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()
