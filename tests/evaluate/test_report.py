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


# Issue 23, item 12: figures that fit, a legend beside the curves, a title that names the run and the data,
# probe rows that say how many examples and seeds, no MedMNIST column for other data.
ORGAN_SYSTEMS = ["Abnormality of blood and blood-forming tissues", "Abnormality of prenatal development or birth",
                 "Abnormality of the musculoskeletal system", "Abnormality of metabolism/homeostasis", "Neoplasm",
                 "Abnormality of the genitourinary system", "Abnormality of the eye", "Growth abnormality"]


def _drawn(fig):
    """A renderer for a figure that plt.close has detached from its Agg canvas, after drawing it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    return renderer


def _inside(inner, outer, tol=1.0):
    return (inner.x0 >= outer.x0 - tol and inner.y0 >= outer.y0 - tol and inner.x1 <= outer.x1 + tol
            and inner.y1 <= outer.y1 + tol)


def test_organ_plot_x_label_fits_in_the_figure(tmp_path, saved_figures):
    per_group = {g: dict(n=10 + i, accuracy=0.05 * i, hierarchical=0.08 * i) for i, g in enumerate(ORGAN_SYSTEMS)}
    report.plot_organ_accuracy(per_group, str(tmp_path / "o.png"))
    fig = saved_figures[-1]
    renderer = _drawn(fig)
    ax = fig.axes[0]
    label = ax.xaxis.label.get_window_extent(renderer)
    assert _inside(label, fig.bbox), (label, fig.bbox)  # the old label ran past the right edge
    for t in ax.get_yticklabels():
        assert _inside(t.get_window_extent(renderer), fig.bbox), t.get_text()


def test_recall_legend_is_off_the_curves(tmp_path, saved_figures):
    report.plot_recall_curves(_retrieval(), str(tmp_path / "r.png"))
    fig = saved_figures[-1]
    renderer = _drawn(fig)
    ax = fig.axes[0]
    legend = (ax.get_legend() or fig.legends[0]).get_window_extent(renderer)
    data_area = ax.get_window_extent(renderer)
    overlap_w = min(legend.x1, data_area.x1) - max(legend.x0, data_area.x0)
    overlap_h = min(legend.y1, data_area.y1) - max(legend.y0, data_area.y0)
    assert overlap_w <= 0 or overlap_h <= 0, (legend, data_area)
    assert _inside(legend, fig.bbox)


def test_recall_chance_lines_match_their_curve_and_tell_apart(tmp_path, saved_figures):
    report.plot_recall_curves(_retrieval(), str(tmp_path / "r.png"))
    lines = {ln.get_label(): ln for ln in saved_figures[-1].axes[0].get_lines()}
    names = [d.replace("_", " ") for d in report.RETRIEVAL_DIRECTIONS]
    to_rgb = matplotlib.colors.to_rgb
    for name in names:
        assert to_rgb(lines[f"{name} (chance)"].get_color()) == to_rgb(lines[name].get_color())
    chance = [lines[f"{n} (chance)"] for n in names]
    assert len({to_rgb(ln.get_color()) for ln in chance}) == len(names)
    # Chance levels often coincide (same candidate pool) and sit near 0: colour alone leaves only the top one
    # visible, so each chance line also has its own dash pattern and marker.
    styles = {(str(ln.get_linestyle()), str(ln._unscaled_dash_pattern), ln.get_marker()) for ln in chance}
    assert len(styles) == len(names), styles


def _results(kind, **extra):
    return dict(dict(dataset="3f9a1c0d2b7e", model="/runs/workdirs/stage2_demo", model_kind="two_tower",
                     config=dict(checkpoint="/runs/workdirs/stage2_demo", data=dict(kind=kind))), **extra)


def test_title_names_the_run_and_says_demo_data_are_synthetic(tmp_path):
    _, md = report.write_report(_results("demo"), str(tmp_path), {})
    title = open(md).read().splitlines()[0]
    assert title.startswith("# ") and "stage2_demo" in title, title
    assert "synthetic demo data (not real images)" in title, title
    _, md = report.write_report(_results("manifest", dataset="clinical_faces"), str(tmp_path), {})
    title = open(md).read().splitlines()[0]
    assert "stage2_demo" in title and "clinical_faces" in title and "synthetic" not in title, title


def _probe():
    return {"1%": dict(top1_mean=0.5, top1_std=0.02, mean_per_class_recall_mean=0.4, mean_per_class_recall_std=0.03,
                       n_train=[128, 128, 128], n_val=[16, 16, 16], n_seeds=3, best_c=[1.0] * 3),
            "100%": dict(top1_mean=0.8, top1_std=0.0, mean_per_class_recall_mean=0.7, mean_per_class_recall_std=0.0,
                         n_train=[12800], n_val=[1600], n_seeds=1, best_c=[1.0]),
            "n_train": 12800, "n_val": 1600, "n_test": 3000}


def test_probe_rows_state_examples_and_seed_count(tmp_path):
    _, md = report.write_report(_results("medmnist", linear_probe=_probe()), str(tmp_path), {})
    rows = {ln.split("|")[1].strip(): ln for ln in open(md).read().splitlines() if ln.startswith("| 1")}
    one = next(v for k, v in rows.items() if k.startswith("1%"))
    full = next(v for k, v in rows.items() if k.startswith("100%"))
    assert "128 train" in one and "12800 train" in full, rows
    assert "50.00 ± 2.00 (n=3)" in one and "40.00 ± 3.00 (n=3)" in one, one
    assert "80.00 (n=1)" in full and "±" not in full, full  # one fit has no spread to show


def test_no_medmnist_accuracy_column_for_other_data(tmp_path):
    z = dict(top1=0.4, top5=0.8, mean_per_class_recall=0.35, chance_top1=0.1, acc_medmnist=0.4, auc=0.9,
             n_images=50, n_classes=10, n_templates=3)
    _, md = report.write_report(_results("folder", zero_shot=z), str(tmp_path / "f"), {})
    assert "acc_medmnist" not in open(md).read()
    _, md = report.write_report(_results("medmnist", zero_shot=z), str(tmp_path / "m"), {})
    assert "acc_medmnist" in open(md).read()
