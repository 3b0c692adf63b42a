"""Report papercuts (issue 16, item 8): every K labelled, chance in the legend, distinct organ-system colours,
multi-system counts explained, progress lines from the linear probe."""
import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")

from phenolip_jax.evaluate import linear_probe as LP  # noqa: E402
from phenolip_jax.evaluate import report  # noqa: E402

KS = (1, 5, 10, 50)


def _retrieval():
    rec = {f"r@{k}": min(1.0, 0.1 * k) for k in KS} | {f"chance_r@{k}": k / 600 for k in KS}
    return {d: dict(rec) for d in report.RETRIEVAL_DIRECTIONS}


@pytest.fixture
def saved_figures(monkeypatch):
    """Figures passed to savefig, kept open for inspection."""
    from matplotlib.figure import Figure

    figs = []
    original = Figure.savefig

    def spy(self, *args, **kwargs):
        figs.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    return figs


def test_recall_plot_labels_every_k_and_lists_chance(tmp_path, saved_figures):
    report.plot_recall_curves(_retrieval(), str(tmp_path / "r.png"))
    ax = saved_figures[-1].axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == [str(k) for k in KS], labels  # not just the powers of ten
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "image to text" in legend and "image to text (chance)" in legend
    assert sum("chance" in t for t in legend) == len(report.RETRIEVAL_DIRECTIONS)


def test_organ_systems_get_distinct_colours(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    colours = []
    original = Axes.scatter

    def spy(self, *args, **kwargs):
        colours.append(tuple(np.round(matplotlib.colors.to_rgba(kwargs["color"]), 4)))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Axes, "scatter", spy)
    groups = [f"organ system {i}" for i in range(23)]  # HPO has 23 organ systems
    emb = np.random.default_rng(0).normal(size=(46, 8))
    report.plot_phenotype_map(emb, groups * 2, str(tmp_path / "m.png"))
    assert len(colours) == 23 and len(set(colours)) == 23


def test_report_explains_multi_system_counts(tmp_path):
    results = dict(dataset="x", hierarchy=dict(exact=0.5, hierarchical=0.7, max_hops=1, organ_system_macro=0.4, n=3,
                                               per_organ_system={"Abnormality of the eye": dict(n=3, accuracy=0.5,
                                                                                               hierarchical=0.6),
                                                                 "Abnormality of the ear": dict(n=2, accuracy=0.4,
                                                                                               hierarchical=0.5)}))
    _, md = report.write_report(results, str(tmp_path), {})
    text = open(md).read()
    assert "counts once in each" in text and "more than the number of images" in text


def test_linear_probe_prints_progress(capsys):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    x = np.eye(6)[y] * 3 + 0.3 * rng.normal(size=(len(y), 6))
    LP.linear_probe(x, y, x, y, x, y, cs=(0.1, 1.0), seeds=(0, 1), fractions=(0.5, 1.0))
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("linear probe")]
    assert len(lines) == 3 and lines[0].startswith("linear probe [1/3] labels 0.5 seed 0") and "[3/3]" in lines[-1]
    LP.linear_probe(x, y, x, y, x, y, cs=(1.0,), seeds=(0,), fractions=(1.0,), log=None)
    assert capsys.readouterr().out == ""
