"""The pictures show what they are given: data in the artists, names on the axes, the palette keyed by class id."""

from __future__ import annotations

import io

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import is_color_like, to_hex
from matplotlib.figure import Figure

from cropmon.labels import CROP_NAMES
from cropmon.report import plots

matplotlib.use("Agg")

METRICS = pd.DataFrame(
    {
        "crop": ["Winter Wheat", "Spring Barley", "Grain Corn", "Grassland Cultivated"],
        "num_fields": [100, 40, 10, 0],
        "agreement_score": [0.95, 0.4, 0.7, np.nan],
        "f1": [0.9, 0.5, 0.75, 0.0],
        "conf_mean": [80.0, 55.0, 65.0, np.nan],
    }
)


def _png_size(fig: Figure) -> int:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return len(buffer.getvalue())


def test_palette_has_one_distinct_colour_per_class():
    assert len(plots.PALETTE) == len(CROP_NAMES) == 32
    assert all(is_color_like(c) for c in plots.PALETTE)
    assert len({to_hex(c) for c in plots.PALETTE}) == 32


def test_confusion_heatmap_shows_the_shares_with_crop_names():
    crops = ["Winter Wheat", "Spring Barley", "Winter Barley"]
    shares = pd.DataFrame([[0.9, 0.0, 0.1], [0.0, 0.4, 0.6], [0.005, 0.0, 0.995]], index=crops, columns=crops)
    fig = plots.confusion_heatmap(shares)
    ax = fig.axes[0]
    np.testing.assert_array_equal(ax.images[0].get_array(), shares.to_numpy())
    assert [t.get_text() for t in ax.get_xticklabels()] == crops
    assert [t.get_text() for t in ax.get_yticklabels()] == crops
    assert sorted(t.get_text() for t in ax.texts) == sorted(["90", "10", "40", "60", "100"])  # 0.5 % not shown
    assert _png_size(fig) > 10_000


def test_f1_vs_confidence_places_each_crop():
    fig = plots.f1_vs_confidence(METRICS, flagged={"Spring Barley"}, min_f1=0.7, min_confidence=60)
    ax = fig.axes[0]
    offsets = ax.collections[0].get_offsets()
    np.testing.assert_allclose(offsets, [[80, 0.9], [55, 0.5], [65, 0.75]])  # no confidence: not placed
    colours = [to_hex(c) for c in ax.collections[0].get_facecolors()]
    assert colours == [plots.OK_COLOUR, plots.FLAGGED_COLOUR, plots.OK_COLOUR]
    assert [t.get_text() for t in ax.texts] == ["Winter Wheat", "Spring Barley", "Grain Corn"]
    sizes = ax.collections[0].get_sizes()
    assert sizes[0] > sizes[1] > sizes[2]  # bubble area grows with the fields


def test_agreement_bars_sorted_with_threshold():
    fig = plots.agreement_bars(METRICS, flagged={"Spring Barley"}, min_agreement=0.7)
    ax = fig.axes[0]
    widths = [bar.get_width() for bar in ax.patches]
    assert widths == [0.4, 0.7, 0.95]  # worst at the bottom, best on top; the crop only predicted has no bar
    assert [t.get_text() for t in ax.get_yticklabels()] == ["Spring Barley", "Grain Corn", "Winter Wheat"]
    assert to_hex(ax.patches[0].get_facecolor()) == plots.FLAGGED_COLOUR
    assert ax.lines[0].get_xdata()[0] == 0.7


def test_block_map_puts_each_block_in_its_cell():
    blocks = pd.DataFrame(
        {"left": [0.0, 2.0, 0.0], "right": [1.0, 3.0, 1.0], "bottom": [0.0, 0.0, 1.0], "top": [1.0, 1.0, 2.0],
         "error_rate": [0.1, 0.5, 0.9], "n_fields": [10, 20, 30]}
    )  # fmt: skip
    picks = pd.DataFrame({"x": [0.5], "y": [0.5]})
    fig = plots.block_map(blocks, picks=picks, evaluation=picks.iloc[:0], aspect=1.5, crs="EPSG:4326")
    ax = fig.axes[0]
    grid = ax.images[0].get_array()
    assert grid.shape == (2, 3)
    assert (grid[0, 0], grid[0, 2], grid[1, 0]) == (0.1, 0.5, 0.9)
    assert grid.mask[0, 1] and grid.mask[1, 2]  # no block there
    assert tuple(ax.images[0].get_extent()) == (0.0, 3.0, 0.0, 2.0)
    assert ax.get_aspect() == 1.5
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["to label"]


def test_map_window_panels_and_legend_of_present_classes():
    gt = np.array([[-1, 7, 7], [5, 5, -1]])
    pred = np.array([[0, 7, 7], [5, 6, 99]])
    conf = np.array([[10.0, 90.0, 80.0], [70.0, 40.0, 120.0]])
    window = plots.MapWindow(gt, pred, conf, (1.0, 1.3, 49.0, 49.2), "EPSG:4326")
    fig = plots.map_window(window, aspect=1.5)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 3
    shown_gt, shown_pred, shown_conf = (ax.images[0].get_array() for ax in panels)
    assert shown_gt.mask.tolist() == (gt == -1).tolist()
    assert shown_pred.mask[1, 2] and shown_conf.mask[1, 2]  # class 99 and confidence 120 are not data
    assert tuple(panels[0].images[0].get_extent()) == (1.0, 1.3, 49.0, 49.2)
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["0 Grassland Cultivated", "5 Winter Barley",
                                                          "6 Spring Barley", "7 Winter Wheat"]  # fmt: skip
    colours = [to_hex(h.get_facecolor()) for h in legend.legend_handles]
    assert colours == [plots.PALETTE[i] for i in (0, 5, 6, 7)]
    assert _png_size(fig) > 10_000


def test_map_window_refuses_mismatched_grids():
    with pytest.raises(ValueError, match="one shape"):
        plots.MapWindow(np.zeros((2, 2)), np.zeros((2, 3)), np.zeros((2, 2)), (0, 1, 0, 1), "EPSG:4326")
    with pytest.raises(ValueError, match="extent"):
        plots.MapWindow(np.zeros((2, 2)), np.zeros((2, 2)), np.zeros((2, 2)), (0, 1, 0), "EPSG:4326")


def test_figures_stay_out_of_pyplot():
    import matplotlib.pyplot as plt

    plots.agreement_bars(METRICS, flagged=set(), min_agreement=0.7)
    assert plt.get_fignums() == []


INTERVALS = METRICS.assign(
    agreement_ci_low=[0.9, 0.25, 0.4, np.nan], agreement_ci_high=[0.98, 0.55, 0.9, np.nan],
    f1_ci_low=[0.85, 0.35, 0.5, 0.0], f1_ci_high=[0.94, 0.65, 0.9, 0.8],
    conf_mean_ci_low=[78.0, 50.0, 55.0, np.nan], conf_mean_ci_high=[82.0, 60.0, 75.0, np.nan],
)


def _segments(ax) -> list[np.ndarray]:
    """The line segments of the error bars (LineCollections; the scatter of bubbles is no such collection)."""
    from matplotlib.collections import LineCollection

    return [np.asarray(seg) for c in ax.collections if isinstance(c, LineCollection) for seg in c.get_segments()]


def test_f1_vs_confidence_draws_the_intervals_and_the_certainty():
    fig = plots.f1_vs_confidence(INTERVALS, flagged={"Spring Barley", "Grain Corn"}, min_f1=0.7, min_confidence=60,
                                 certainty={"Spring Barley": "certain", "Grain Corn": "possible"})
    ax = fig.axes[0]
    faces = [to_hex(c) for c in ax.collections[0].get_facecolors()]
    assert faces == [plots.OK_COLOUR, plots.FLAGGED_COLOUR, "#ffffff"]  # possible: hollow
    segments = _segments(ax)
    vertical = {tuple(np.round(s[:, 1], 6)) for s in segments if s[0, 0] == s[1, 0]}
    horizontal = {tuple(np.round(s[:, 0], 6)) for s in segments if s[0, 1] == s[1, 1]}
    assert vertical == {(0.85, 0.94), (0.35, 0.65), (0.5, 0.9)}  # F1 intervals, at each crop's confidence
    assert horizontal == {(78.0, 82.0), (50.0, 60.0), (55.0, 75.0)}  # confidence intervals
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["certainly underperforming", "possibly underperforming", "ok"]


def test_agreement_bars_draw_the_wilson_intervals():
    fig = plots.agreement_bars(INTERVALS, flagged={"Spring Barley"}, min_agreement=0.7)
    ax = fig.axes[0]
    assert [bar.get_width() for bar in ax.patches] == [0.4, 0.7, 0.95]
    spans = [tuple(np.round(s[:, 0], 6)) for s in _segments(ax)]
    assert spans == [(0.25, 0.55), (0.4, 0.9), (0.9, 0.98)]  # worst at the bottom, as the bars
    assert "95 % intervals" in ax.get_title()
