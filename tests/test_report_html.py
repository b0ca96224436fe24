"""Figures people look at: the by-pose plot's labels clear of its markers, identical ROC
curves said to be identical, and the report's own figures drawn from the numbers they show.
(report.html built from logged runs, and a sweep logging it: tests/test_report.py.)"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from frontal_exp.figures import new_plot
from frontal_exp.metrics.pose_bins import break_even, pose_bin_table
from frontal_exp.protocols.analyses import _plot_bins
from frontal_exp.protocols.verification import roc_plot, same_roc
from frontal_exp.report import pose_numbers
from frontal_exp.report_html import gain_figure, item_differences, paired_difference_figure

EDGES = [0, 10, 20, 30, 45, 60, 90]


def pose_table(n_per_bin: int = 8, seed: int = 0, shift: float = 0.0) -> pd.DataFrame:
    """A by-pose table of real bootstrap CIs over synthetic items: N items in each of the
    first five bins, a gain that grows with |yaw| (negative at small yaw)."""
    rng = np.random.default_rng(seed)
    yaw = np.repeat([5, 15, 25, 37, 52], n_per_bin) + rng.uniform(-4, 4, 5 * n_per_bin)
    a = rng.uniform(0.3, 0.7, yaw.size)
    b = a + (yaw - 25) / 400 + shift + rng.normal(0, 0.02, yaw.size)
    return pose_bin_table(yaw, a, b, EDGES, n_boot=200, seed=seed, fused_to_gt=a + 0.01 + rng.normal(0, 0.01, yaw.size))


def _marker_boxes(fig, ax) -> list[Bbox]:
    """Display boxes of every marker (data points, error-bar caps) and error-bar segment."""
    dpi = fig.dpi
    boxes = []
    for line in ax.lines:
        if line.get_marker() in (None, "None", "", " ") or not line.get_visible():
            continue
        half = line.get_markersize() * dpi / 72 / 2 + line.get_markeredgewidth() * dpi / 72
        xy = ax.transData.transform(np.column_stack(line.get_data()).astype(float))
        boxes += [Bbox.from_extents(x - half, y - half, x + half, y + half) for x, y in xy if np.isfinite([x, y]).all()]
    for coll in ax.collections:
        for seg in getattr(coll, "get_segments", lambda: [])():
            xy = ax.transData.transform(np.asarray(seg, float))
            if np.isfinite(xy).all():
                boxes.append(Bbox.from_extents(*xy.min(0) - 1, *xy.max(0) + 1))
    return boxes


def test_by_pose_item_counts_do_not_cover_markers_or_the_title():
    table = pose_table()
    fig, axes = new_plot(1, 2, size=(5.5, 4.4))
    for ax, axis in zip(axes[0], ("yaw", "pitch"), strict=True):
        _plot_bins(ax, table[(table.n > 0) & table.lo.notna()], EDGES, axis)
    fig.tight_layout()
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    counts = [t for t in fig.findobj(Text) if t.get_text().startswith("N=") and t.get_visible()]
    # one count per bin with items, in each panel
    assert sorted(t.get_text() for t in counts) == ["N=8"] * 10
    count_boxes = [t.get_window_extent(renderer) for t in counts]
    for ax in axes[0]:
        markers = _marker_boxes(fig, ax)
        assert len(markers) > 5 * 4  # the data points of four lines, caps and error bars
        title = ax.title.get_window_extent(renderer)
        for box in count_boxes:
            assert not any(box.overlaps(m) for m in markers), "an item count covers a marker or error bar"
            assert not box.overlaps(title), "an item count covers the panel's title"
        legend = ax.get_legend().get_window_extent(renderer)
        assert not any(legend.overlaps(m) for m in markers), "the legend covers a marker"
    for i, a in enumerate(count_boxes):
        assert not any(a.overlaps(b) for b in count_boxes[i + 1:]), "two item counts overlap"


def test_by_pose_says_when_frontal_equals_angle():
    """Identity: Mean(Frontal-GT) = Mean(Angle-GT) in every bin would hide one line under the
    other; the hidden one is dashed and the legend says they are identical."""
    rng = np.random.default_rng(0)
    yaw, a = rng.uniform(0, 60, 40), rng.uniform(0.3, 0.7, 40)
    for frontal, expected in ((a, "Mean(Frontal-GT) = Mean(Angle-GT) (identical)"), (a + 0.01, "Mean(Frontal-GT)")):
        table = pose_bin_table(yaw, a, frontal, EDGES, n_boot=50)
        fig, axes = new_plot(1, 1)
        _plot_bins(axes[0][0], table[table.n > 0], EDGES, "yaw")
        texts = [t.get_text() for t in axes[0][0].get_legend().get_texts()]
        assert texts[:2] == ["Mean(Angle-GT)", expected]
        assert axes[0][0].lines[1].get_linestyle() == ("--" if "identical" in expected else "-")


def _roc_legend(curves):
    fig = roc_plot(curves, "t")
    ax = fig.axes[0]
    return [t.get_text() for t in ax.get_legend().get_texts()], [line.get_linestyle() for line in ax.lines
                                                                 if line.get_label() in
                                                                 [t.get_text() for t in ax.get_legend().get_texts()]]


def test_roc_says_when_a_curve_hides_under_an_identical_one():
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(40, bool), np.zeros(40, bool)]
    scores = np.where(labels, rng.normal(0.5, 0.2, 80), rng.normal(0.1, 0.2, 80))
    # the same order of scores (a shifted copy): the same ROC curve
    texts, styles = _roc_legend({"original": (scores, labels), "frontalized": (scores + 0.01, labels)})
    assert texts[0].startswith("original (AUC ") and texts[1].startswith("original = frontalized (identical, AUC ")
    assert styles[0] == "-" and styles[1] != "-"  # the hidden one dashed, on top
    # different curves: both solid, nothing said
    other = np.where(labels, rng.normal(0.4, 0.2, 80), rng.normal(0.1, 0.2, 80))
    texts, styles = _roc_legend({"original": (scores, labels), "frontalized": (other, labels)})
    assert not any("identical" in t for t in texts) and styles == ["-", "-"]


def test_same_roc_compares_the_step_functions():
    far = np.array([0.0, 0.0, 0.5, 1.0])
    assert same_roc((far, np.array([0.0, 0.5, 0.5, 1.0])), (np.array([0.0, 0.5, 1.0]), np.array([0.5, 0.5, 1.0])))
    assert not same_roc((far, np.array([0.0, 0.5, 0.5, 1.0])), (far, np.array([0.0, 0.5, 0.6, 1.0])))
    assert same_roc((far, np.array([0.0, 0.5, 0.5, 1.0])), (far, np.array([0.0, 0.5, 0.5 + 1e-12, 1.0])))


def test_gain_figure_draws_each_configuration_with_its_ci_and_break_even():
    tables = {"a": pose_table(seed=1), "b": pose_table(seed=2, shift=-0.2)}
    colours = {"a": "C0", "b": "C1"}
    fig = gain_figure(tables, "net_gain", "yaw", colours)
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    edge = break_even(tables["a"], "net_gain")
    assert edge is not None and break_even(tables["b"], "net_gain") is None
    assert legend == [f"a (break-even |yaw| {edge:g} deg)", "b (no break-even)"]
    # the break-even edge is drawn: a vertical line at it, in the configuration's colour
    assert [line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == "--"] == [edge]
    bands = {c.get_gid(): c for c in ax.collections if c.get_gid()}
    for name, table in tables.items():
        shown = table[table.n > 0]
        ys = bands[f"ci {name}"].get_paths()[0].vertices[:, 1]
        assert ys.min() == pytest.approx(shown.net_gain_ci_low.min())
        assert ys.max() == pytest.approx(shown.net_gain_ci_high.max())
    drawn = {c.get_label().split(" (")[0]: c.lines[0] for c in ax.containers}  # errorbar: label, data line
    for name, table in tables.items():
        assert drawn[name].get_ydata() == pytest.approx(table.net_gain[table.n > 0].to_numpy())
    # no gain to draw: no figure
    assert gain_figure({"a": tables["a"].assign(fusion_gain=np.nan)}, "fusion_gain", "yaw", colours) is None


def test_paired_difference_figure_shows_every_item_and_the_mean():
    items = pd.DataFrame({"item_id": ["i0", "i1", "i2", "i3"], "angle_to_gt": [0.5, 0.6, 0.4, 0.9],
                          "frontal_to_gt": [0.6, 0.5, 0.55, None], "status": ["ok", "ok", "ok", "no_face_frontal"]})
    assert item_differences(items) == pytest.approx([0.1, -0.1, 0.15])
    fig = paired_difference_figure({"cfg": items}, {"cfg": "C0"})
    ax = fig.axes[0]
    dots = ax.collections[-1].get_offsets()[:, 0]
    assert sorted(dots) == pytest.approx([-0.1, 0.1, 0.15])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["cfg\nN=3, mean +0.0500"]
    assert paired_difference_figure({"cfg": items.assign(status="no_face_frontal")}, {"cfg": "C0"}) is None


def test_an_older_by_pose_table_without_cis_still_draws():
    """Runs logged before the per-bin CIs: the line is drawn, with no band and no break-even."""
    old = pose_table().drop(columns=["net_gain_ci_low", "net_gain_ci_high", "fusion_gain", "fusion_gain_ci_low",
                                     "fusion_gain_ci_high"])
    table = pose_numbers(old.astype({"n": object}))
    fig = gain_figure({"old": table}, "net_gain", "yaw", {"old": "C0"})
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["old (no break-even)"]
    assert gain_figure({"old": table}, "fusion_gain", "yaw", {"old": "C0"}) is None
