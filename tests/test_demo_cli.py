"""`ufm demo` (what `make demo` runs) and plot_gram, drawn under Agg and checked for content.

The headline section (structure before collapse) runs with --quick here; the closed-form section
(--closed-forms) keeps its table of THEORY TV1-TV3 pinned.
"""

import csv

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from ufm import cli, demo  # noqa: E402
from ufm.plotting import plot_gram  # noqa: E402

pytestmark = pytest.mark.slow          # trains, runs subprocesses or reads the built site: `make test-fast` skips it


def test_demo_structure_before_collapse_quick(tmp_path, capsys):
    assert cli.main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("sbc_grams.png", "sbc_trajectory.png", "sbc_phase.png", "sbc_models.png", "sbc_summary.csv", "sbc_summary.md",
                 "sbc_phase.csv"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert not (tmp_path / "closed_forms.csv").exists()          # that section is --closed-forms / --all
    with open(tmp_path / "sbc_summary.csv") as fh:
        rows = {r["state"]: r for r in csv.DictReader(fh)}
    init, peak, end = rows["init"], rows["peak"], rows["end state (ufm.solve, exact)"]
    sim_end = rows["end of simulation"]
    assert float(peak["semantic_gap_sim"]) > 3 * float(init["semantic_gap_sim"])      # rises ...
    assert float(peak["semantic_gap_sim"]) > 3 * float(end["semantic_gap_sim"])       # ... and falls
    assert float(sim_end["semantic_gap_sim"]) == pytest.approx(float(end["semantic_gap_sim"]), abs=1e-4)
    assert float(sim_end["etf_distance_sim"]) == pytest.approx(float(end["etf_distance_sim"]), abs=1e-4)
    with open(tmp_path / "sbc_phase.csv") as fh:
        phase = list(csv.DictReader(fh))
    assert {r["setting"] for r in phase} == {"factorial", "hierarchy", "ntp_contexts"}
    assert "| state | time | semantic_gap_sim" in out and "phase diagram" in out and "output folder" in out


def test_demo_writes_table_and_figures(tmp_path, capsys):
    assert cli.main(["demo", "--closed-forms", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("closed_forms.csv", "closed_forms.md", "closed_form_grams.png", "regimes.png"):
        assert (tmp_path / name).stat().st_size > 0
    with open(tmp_path / "closed_forms.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["regime"] for r in rows] == ["etf", "zero", "seli", "orthogonal_frame", "etf",
                                           "etf_to_orthogonal_frame", "etf"]
    assert float(rows[0]["objective"]) == pytest.approx(0.2613364, abs=1e-7)       # TV1
    assert float(rows[2]["objective"]) == pytest.approx(4.146264, abs=1e-6)        # TV3
    assert float(rows[3]["objective"]) == pytest.approx(0.09317959, abs=1e-8)      # TV2
    for r in rows:                       # every ETF row is at distance 0 from the ETF, the others are not
        if r["regime"] == "etf":
            assert float(r["etf_distance_WWt"]) < 1e-12
        elif r["regime"] != "zero":
            assert float(r["etf_distance_WWt"]) > 0.1
    assert "| CE, balanced (TV1) | etf |" in out


def test_demo_help_lists_options(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["demo", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for opt in ("--out", "--no-figures", "--quick", "--sigma", "--lam", "--seeds", "--closed-forms", "--all"):
        assert opt in text, opt


def test_demo_table_only(tmp_path):
    res = demo.run(tmp_path, figures=False, echo=lambda s: None)
    assert set(res["paths"]) == {"table_csv", "table_md"} and len(res["rows"]) == len(demo.CASES)


def test_plot_gram_content():
    K = 4
    G = np.eye(K) - np.ones((K, K)) / K
    ax = plot_gram(G, title="ETF", labels=list("abcd"))
    img = ax.get_images()[0]
    np.testing.assert_allclose(img.get_array(), np.where(np.eye(K) > 0, 1.0, -1 / (K - 1)), atol=1e-12)
    assert img.get_clim() == (-1.0, 1.0)
    assert ax.get_title() == "ETF"
    assert [t.get_text() for t in ax.get_xticklabels()] == list("abcd")
    plt.close(ax.figure)
    fig, ax2 = plt.subplots()
    assert plot_gram(2 * G, ax=ax2, normalize=None, colorbar=False) is ax2
    np.testing.assert_allclose(ax2.get_images()[0].get_array(), 2 * G)
    plt.close(fig)


def test_plot_gram_rejects_bad_input():
    with pytest.raises(ValueError, match="square"):
        plot_gram(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        plot_gram(np.array([[1.0, np.nan], [np.nan, 1.0]]))
    with pytest.raises(ValueError, match="normalize"):
        plot_gram(np.eye(2), normalize="zscore")
