"""`ufm demo` (what `make demo` runs) and plot_gram, drawn under Agg and checked for content."""

import csv

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from ufm import cli, demo  # noqa: E402
from ufm.plotting import plot_gram  # noqa: E402


def test_demo_writes_table_and_figures(tmp_path, capsys):
    assert cli.main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("closed_forms.csv", "closed_forms.md", "closed_form_grams.png", "regimes.png"):
        assert (tmp_path / name).stat().st_size > 0
    with open(tmp_path / "closed_forms.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["status"] for r in rows] == ["etf", "zero", "seli", "orthogonal_frame", "etf",
                                           "etf_to_orthogonal_frame", "etf"]
    assert float(rows[0]["objective"]) == pytest.approx(0.2613364, abs=1e-7)       # TV1
    assert float(rows[2]["objective"]) == pytest.approx(4.146264, abs=1e-6)        # TV3
    assert float(rows[3]["objective"]) == pytest.approx(0.09317959, abs=1e-8)      # TV2
    for r in rows:                       # every ETF row is at distance 0 from the ETF, the others are not
        if r["status"] == "etf":
            assert float(r["etf_distance_WWt"]) < 1e-12
        elif r["status"] != "zero":
            assert float(r["etf_distance_WWt"]) > 0.1
    assert "| CE, balanced (TV1) | etf |" in out


def test_demo_help_lists_options(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["demo", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "--out" in text and "--no-figures" in text


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
