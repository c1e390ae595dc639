"""The diagnosis pictures: tables or arrays in, a matplotlib Figure out (no compute, no I/O).

Figures are made with `matplotlib.figure.Figure` directly, never through pyplot: no global figure registry to
leak, no GUI backend; saving to PNG uses Agg.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.artist import Artist
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from cropmon.catalogue import U0C, Catalogue
from cropmon.diagnosis.compare import LEVEL

# One fixed colour per u0c class, grouped by kind (grasslands green, cereals yellow-brown, corn red, pulses blue).
PALETTE: tuple[str, ...] = (
    "#4daf4a", "#1b7837", "#a6dba0", "#5aae61", "#b8e186",  # grasslands, clover, alfalfa, ryegrass
    "#8c510a", "#d8b365", "#f6c200", "#bf812d", "#7f3b08", "#e08214", "#fee08b",  # barley, wheat, triticale, rye
    "#80cdc1", "#dfc27d", "#b35806", "#fdb863", "#a6761d",  # rice, millet, sorghum, oats
    "#ff7f00", "#6a51a3", "#ffff33", "#e31a1c", "#fb9a99",  # sunflowers, flax, canola, corn
    "#984ea3", "#f781bf", "#66c2a5", "#1f78b4", "#a6cee3", "#cab2d6",  # potatoes, beets, soy, peas, beans, lentils
    "#999999", "#c51b7d", "#00441b", "#762a83",  # fallow, turnips, trees, vineyard
)  # fmt: skip
FLAGGED_COLOUR = "#d62728"
OK_COLOUR = "#2a788e"
_U0C_COLOUR = dict(zip(U0C.names, PALETTE, strict=True))


def class_colours(catalogue: Catalogue) -> list[str]:
    """One colour per class of `catalogue`, in its order: a crop named as in u0c keeps its u0c colour (so Winter
    Wheat looks the same across models); the others take distinct colours of matplotlib's tab20 lists."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    # tab20* are ListedColormaps, but the registry is typed as returning the base Colormap, which has no colours
    tab20 = [colormaps[name] for name in ("tab20", "tab20b", "tab20c")]
    spare = [to_hex(c) for cmap in tab20 for c in cmap.colors]  # type: ignore[attr-defined]
    spare = [c for c in spare if c not in set(_U0C_COLOUR.values())]
    colours, k = [], 0
    for name in catalogue.names:
        if name in _U0C_COLOUR:
            colours.append(_U0C_COLOUR[name])
        else:
            colours.append(spare[k % len(spare)])
            k += 1
    return colours


@dataclass(frozen=True)
class MapWindow:
    """A window of the AOI for the side-by-side map: GT classes (-1 = no field), predicted classes, confidence."""

    gt_class: np.ndarray  # class ids (raster values)
    predicted: np.ndarray  # class ids (raster values)
    confidence: np.ndarray
    extent: tuple[float, float, float, float]  # left, right, bottom, top (CRS units)
    crs: str
    catalogue: Catalogue = U0C  # what the class ids mean

    def __post_init__(self) -> None:
        shapes = {np.shape(self.gt_class), np.shape(self.predicted), np.shape(self.confidence)}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ValueError(f"MapWindow grids must be 2-D and of one shape, got {sorted(shapes)}")
        if len(self.extent) != 4:
            raise ValueError(f"MapWindow extent must be (left, right, bottom, top), got {self.extent!r}")


def confusion_heatmap(shares: pd.DataFrame, *, title: str = "Field-level confusion (share of each GT crop)") -> Figure:
    """Row-normalised confusion matrix (GT rows x predicted columns), cells labelled in percent."""
    n_rows, n_cols = shares.shape
    fig = Figure(figsize=(max(6.0, 0.45 * n_cols + 3.5), max(4.5, 0.4 * n_rows + 2.5)), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(shares.to_numpy(float), cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(n_cols), shares.columns, rotation=60, ha="right", rotation_mode="anchor", fontsize=8)
    ax.set_yticks(range(n_rows), shares.index, fontsize=8)
    ax.set_xlabel("predicted (majority class of the field)")
    ax.set_ylabel("ground truth")
    for (i, j), value in np.ndenumerate(shares.to_numpy(float)):
        if value >= 0.01:
            ax.text(
                j,
                i,
                f"{100 * value:.0f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if value > 0.55 else "black",
            )
    fig.colorbar(image, ax=ax, label="share of the GT crop's fields", shrink=0.8)
    ax.set_title(title)
    return fig


def _interval_bars(data: pd.DataFrame, value: str, prefix: str | None = None) -> np.ndarray | None:
    """(2, n) distances from column `value` down to `<prefix>_ci_low` and up to `<prefix>_ci_high` (prefix: the
    value's name by default); None when the table has no interval."""
    low, high = f"{prefix or value}_ci_low", f"{prefix or value}_ci_high"
    if low not in data or high not in data:
        return None
    v = data[value].to_numpy(float)
    return np.nan_to_num(np.vstack([np.clip(v - data[low].to_numpy(float), 0, None),
                                    np.clip(data[high].to_numpy(float) - v, 0, None)]))


CERTAINTY_STYLE = {  # marker face and edge of a flagged crop, by how sure the rule is (diagnose.certainty)
    "certain": (FLAGGED_COLOUR, "black", "certainly underperforming"),
    "possible": ("white", FLAGGED_COLOUR, "possibly underperforming"),
    "too_few_fields": ("#9a9a9a", "#444444", "too few fields to tell"),
}


def f1_vs_confidence(
    metrics_df: pd.DataFrame, *, flagged: Collection[str], min_f1: float, min_confidence: float,
    certainty: Mapping[str, str] | None = None,
) -> Figure:
    """Per-crop F1 against mean confidence, bubble area ~ GT fields, with 95 % intervals both ways (when the table
    has them); the underperforming region is shaded. `certainty` (crop -> certain | possible | too_few_fields)
    styles the flagged crops: filled when certain, hollow when possible, grey when there are too few fields."""
    data = metrics_df.dropna(subset=["conf_mean", "f1"])
    fig = Figure(figsize=(8.5, 6.0), layout="constrained")
    ax = fig.add_subplot()
    ax.axhspan(0, min_f1, color=FLAGGED_COLOUR, alpha=0.07, lw=0)
    ax.axvspan(0, min_confidence, color=FLAGGED_COLOUR, alpha=0.07, lw=0)
    ax.axhline(min_f1, color=FLAGGED_COLOUR, lw=0.8, ls="--")
    ax.axvline(min_confidence, color=FLAGGED_COLOUR, lw=0.8, ls="--")
    is_flagged = data["crop"].isin(list(flagged)).to_numpy()
    sizes = 30 + 600 * np.sqrt(data["num_fields"] / max(float(data["num_fields"].max()), 1.0))
    sure = [(certainty or {}).get(crop, "certain") if bad else "" for crop, bad in zip(data["crop"], is_flagged,
                                                                                       strict=True)]
    ax.scatter(
        data["conf_mean"],
        data["f1"],
        s=sizes,
        c=[CERTAINTY_STYLE[c][0] if c else OK_COLOUR for c in sure],
        alpha=0.6,
        edgecolors=[CERTAINTY_STYLE[c][1] if c else "black" for c in sure],
        linewidths=[1.5 if c and c != "certain" else 0.5 for c in sure],
    )
    xerr, yerr = _interval_bars(data, "conf_mean"), _interval_bars(data, "f1")
    if xerr is not None or yerr is not None:
        ax.errorbar(data["conf_mean"], data["f1"], xerr=xerr, yerr=yerr, fmt="none", ecolor="#555555",
                    elinewidth=0.7, alpha=0.6, capsize=0)
    for (_, row), bad in zip(data.iterrows(), is_flagged, strict=True):
        ax.annotate(
            row["crop"],
            (row["conf_mean"], row["f1"]),
            xytext=(4, 4),
            textcoords="offset points",
            fontsize=8,
            color=FLAGGED_COLOUR if bad else "black",
        )
    ax.set_xlim(0, 100)
    ax.set_ylim(-0.03, 1.05)
    ax.set_xlabel("mean confidence over the crop's GT fields (band 4, %)")
    ax.set_ylabel("F1 over all fields")
    ax.set_title(
        f"F1 vs confidence (bubble area ~ GT fields; lines: 95 % intervals; shaded: F1 < {min_f1:g} or confidence"
        f" < {min_confidence:g})",
        fontsize=9,
    )
    shown = [c for c in CERTAINTY_STYLE if c in sure] if certainty else []
    handles: list[Artist] = [Line2D([], [], ls="", marker="o", markersize=9, markerfacecolor=CERTAINTY_STYLE[c][0],
                      markeredgecolor=CERTAINTY_STYLE[c][1], label=CERTAINTY_STYLE[c][2]) for c in shown]
    if not shown:
        handles = [Patch(color=FLAGGED_COLOUR, alpha=0.6, label="underperforming")]
    ax.legend(handles=[*handles, Patch(color=OK_COLOUR, alpha=0.6, label="ok")], loc="lower right")
    return fig


def agreement_bars(metrics_df: pd.DataFrame, *, flagged: Collection[str], min_agreement: float) -> Figure:
    """Horizontal bars of each GT crop's agreement (best on top) with its 95 % interval (when the table has it),
    underperforming crops in red, threshold dashed."""
    data = metrics_df.dropna(subset=["agreement_score"]).sort_values("agreement_score")
    fig = Figure(figsize=(8.0, max(3.0, 0.32 * len(data) + 1.5)), layout="constrained")
    ax = fig.add_subplot()
    colours = np.where(data["crop"].isin(list(flagged)), FLAGGED_COLOUR, OK_COLOUR)
    ax.barh(data["crop"], data["agreement_score"], color=colours)
    ax.axvline(min_agreement, color=FLAGGED_COLOUR, ls="--", lw=1)
    xerr = _interval_bars(data, "agreement_score", "agreement")
    if xerr is not None:
        ax.errorbar(data["agreement_score"], np.arange(len(data)), xerr=xerr, fmt="none", ecolor="black",
                    elinewidth=0.8, capsize=2)
    high = data["agreement_ci_high"].to_numpy(float) if xerr is not None else data["agreement_score"].to_numpy(float)
    for i, (score, n, top) in enumerate(zip(data["agreement_score"], data["num_fields"], high, strict=True)):
        ax.text(max(score, np.nan_to_num(top, nan=score)) + 0.015, i, f"{score:.2f}  (n={n:,})", va="center",
                fontsize=8)
    ax.set_xlim(0, 1.3)
    ax.set_xlabel("agreement (share of the crop's GT fields predicted as the crop)")
    ax.tick_params(axis="y", labelsize=8)
    title = "Agreement per crop with 95 % intervals" if xerr is not None else "Agreement per crop"
    ax.set_title(f"{title} (dashed: {min_agreement:g})")
    return fig


def block_map(
    blocks: pd.DataFrame,
    *,
    picks: pd.DataFrame | None = None,
    evaluation: pd.DataFrame | None = None,
    aspect: float = 1.0,
    crs: str = "",
) -> Figure:
    """Error rate per spatial block (blocks with evaluable fields), with the fields to label and held back on top.

    `blocks` has left, right, bottom, top and error_rate per block (see `select.block_agreement`); `aspect` is the
    screen height of one y unit over one x unit (so that blocks look square in degrees too).
    """
    fig = Figure(figsize=(8.5, 7.5), layout="constrained")
    ax = fig.add_subplot()
    width = float((blocks["right"] - blocks["left"]).iloc[0]) if len(blocks) else 1.0
    height = float((blocks["top"] - blocks["bottom"]).iloc[0]) if len(blocks) else 1.0
    col = np.rint((blocks["left"] - blocks["left"].min()) / width).astype(int).to_numpy()
    row = np.rint((blocks["bottom"] - blocks["bottom"].min()) / height).astype(int).to_numpy()
    grid = np.full((row.max(initial=0) + 1, col.max(initial=0) + 1), np.nan)
    grid[row, col] = blocks["error_rate"].to_numpy(float)
    extent = (blocks["left"].min(), blocks["right"].max(), blocks["bottom"].min(), blocks["top"].max())
    image = ax.imshow(
        grid,
        origin="lower",
        extent=extent if len(blocks) else None,
        cmap="RdYlGn_r",
        vmin=0,
        vmax=1,
        aspect=aspect,
        interpolation="nearest",
    )
    fig.colorbar(image, ax=ax, label="error rate (share of the block's fields misclassified)", shrink=0.8)
    if picks is not None and len(picks):
        ax.scatter(picks["x"], picks["y"], marker="x", s=14, c="black", linewidths=0.8, label="to label")
    if evaluation is not None and len(evaluation):
        ax.scatter(
            evaluation["x"],
            evaluation["y"],
            marker="o",
            s=14,
            facecolors="white",
            edgecolors="black",
            linewidths=0.6,
            label="held back (evaluation)",
        )
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize=8, framealpha=0.9)
    ax.set_xlabel(f"x ({crs})" if crs else "x")
    ax.set_ylabel(f"y ({crs})" if crs else "y")
    ax.set_title("Field-level error rate per spatial block")
    return fig


def _class_legend(fig: Figure, positions: np.ndarray, catalogue: Catalogue, colours: list[str]) -> None:
    """A legend of the classes at the given catalogue positions with their colours, below the panels."""
    handles = [Patch(color=colours[p], label=f"{catalogue.ids[p]} {catalogue.names[p]}") for p in positions]
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=min(4, len(handles)), fontsize=8, frameon=False)


def map_window(window: MapWindow, *, aspect: float = 1.0) -> Figure:
    """GT | prediction | confidence side by side, classes in fixed colours with a legend of those present; a value
    that is no class of the catalogue is left blank."""
    catalogue = window.catalogue
    colours = class_colours(catalogue)
    cmap = ListedColormap(colours, name="cropmon_classes")
    norm = BoundaryNorm(np.arange(-0.5, catalogue.n + 0.5), catalogue.n)
    gt = np.ma.masked_less(catalogue.positions(np.asarray(window.gt_class)), 0)
    pred = np.ma.masked_less(catalogue.positions(np.asarray(window.predicted)), 0)
    conf = np.ma.masked_outside(np.asarray(window.confidence, dtype=float), 0, 100)
    fig = Figure(figsize=(15.0, 6.0), layout="constrained")
    axes = fig.subplots(1, 3, sharex=True, sharey=True)
    style = {"extent": window.extent, "origin": "upper", "aspect": aspect, "interpolation": "nearest"}
    axes[0].imshow(gt, cmap=cmap, norm=norm, **style)
    axes[1].imshow(pred, cmap=cmap, norm=norm, **style)
    image = axes[2].imshow(conf, cmap="viridis", vmin=0, vmax=100, **style)
    fig.colorbar(image, ax=axes[2], label="confidence (band 4, %)", shrink=0.8)
    for ax, title in zip(axes, ("ground truth (fields only)", "prediction (band 3)", "confidence"), strict=True):
        ax.set_title(title)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel(window.crs)
    present = np.union1d(np.unique(gt.compressed()), np.unique(pred.compressed())).astype(int)
    _class_legend(fig, present, catalogue, colours)
    return fig


def delta_plot(table: pd.DataFrame) -> Figure:
    """Producer's accuracy (the verdict's measure) and user's accuracy deltas (B - A, design-based) per crop with
    their intervals; better green, worse red, others grey."""
    data = table.iloc[::-1]
    colours = data["verdict"].map({"better": "#1a9850", "worse": "#d73027"}).fillna("#7f7f7f").to_numpy()
    fig = Figure(figsize=(11.0, max(3.0, 0.34 * len(data) + 1.6)), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    y = np.arange(len(data))
    panels = (("pa", "producer's accuracy (verdict)"), ("ua", "user's accuracy"))
    for ax, (measure, title) in zip(axes, panels, strict=True):
        delta = data[f"{measure}_delta"].to_numpy(float)
        lo, hi = data[f"{measure}_delta_lo"].to_numpy(float), data[f"{measure}_delta_hi"].to_numpy(float)
        err = np.vstack([np.clip(delta - lo, 0, None), np.clip(hi - delta, 0, None)])
        ax.errorbar(delta, y, xerr=np.nan_to_num(err), fmt="none", ecolor=colours, elinewidth=2, alpha=0.8)
        ax.scatter(delta, y, c=colours, s=28, zorder=3)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_xlabel(f"B - A, {title}")
        ax.grid(axis="x", alpha=0.3)
    labels = [f"{c} (n={n})" for c, n in zip(data["crop"], data["n_a"], strict=True)]
    axes[0].set_yticks(y, labels, fontsize=8)
    level = float(table["interval_level"].iloc[0]) if len(table) else LEVEL
    fig.suptitle(f"Per-crop change, B - A, design-based intervals (each at {100 * level:.2f} %)", fontsize=10)
    return fig



def area_plot(table: pd.DataFrame, *, level: float = LEVEL, top: int = 20) -> Figure:
    """Mapped area (the map's pixel count) against the error-adjusted area with its interval, per crop, largest
    first (the `top` largest by either; accuracy_assessment.csv has them all). Where the interval misses the mapped
    bar, the map's count is biased by its own errors."""
    data = table.loc[(table["crop"] != "overall") & table["adjusted_ha"].notna()].copy()
    data["_size"] = np.fmax(data["mapped_ha"].to_numpy(float), data["adjusted_ha"].to_numpy(float))
    data = data.sort_values("_size", ascending=False).head(top).iloc[::-1]
    fig = Figure(figsize=(9.0, max(3.0, 0.34 * len(data) + 1.8)), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(data))
    kha = 1e-3
    ax.barh(y + 0.2, data["mapped_ha"] * kha, height=0.38, color="#bdbdbd", label="mapped (pixel count)")
    adjusted = data["adjusted_ha"].to_numpy(float) * kha
    err = np.vstack([adjusted - data["adjusted_ha_ci_low"].to_numpy(float) * kha,
                     data["adjusted_ha_ci_high"].to_numpy(float) * kha - adjusted])
    ax.barh(y - 0.2, adjusted, height=0.38, color=OK_COLOUR, label=f"error-adjusted, {100 * level:g} % interval")
    ax.errorbar(adjusted, y - 0.2, xerr=np.nan_to_num(np.clip(err, 0, None)), fmt="none", ecolor="black",
                elinewidth=0.9, capsize=2)
    ax.set_yticks(y, data["crop"], fontsize=8)
    ax.set_xlabel("area (thousand ha)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Mapped vs error-adjusted area per crop (largest first)")
    return fig


def f1_heatmap(by_aoi: pd.DataFrame, pooled: pd.DataFrame, *, aois: list[str], min_f1: float) -> Figure:
    """F1 per crop (rows, pooled order) x AOI (columns, then `pooled`); cells of crops failing the rule framed.

    Each cell shows the F1 and the crop's GT fields there; blank where the crop is neither in the GT nor predicted.
    """
    crops = list(pooled.loc[pooled["num_fields"] > 0, "crop"])
    f1 = by_aoi.pivot(index="crop", columns="aoi", values="f1").reindex(index=crops, columns=aois)
    n = by_aoi.pivot(index="crop", columns="aoi", values="num_fields").reindex(index=crops, columns=aois)
    flagged = by_aoi.assign(bad=by_aoi["severity"].notna()).pivot(index="crop", columns="aoi", values="bad")
    flagged = flagged.reindex(index=crops, columns=aois).fillna(False).astype(bool)
    ref = pooled.set_index("crop").loc[crops]
    grid = np.column_stack([f1.to_numpy(float), ref["f1"].to_numpy(float)]) if crops else np.zeros((0, len(aois) + 1))
    counts = np.column_stack([n.to_numpy(float), ref["num_fields"].to_numpy(float)]) if crops else grid
    fig = Figure(figsize=(3.5 + 1.1 * (len(aois) + 1), max(3.0, 0.34 * len(crops) + 1.8)), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="RdYlGn", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(aois) + 1), [*aois, "pooled"])
    ax.set_yticks(range(len(crops)), crops, fontsize=8)
    ax.axvline(len(aois) - 0.5, color="black", lw=1.5)
    for (i, j), value in np.ndenumerate(grid):
        if np.isfinite(value):
            ax.text(j, i, f"{value:.2f} ({counts[i, j]:.0f})", ha="center", va="center", fontsize=7)
        if j < len(aois) and flagged.iat[i, j]:
            ax.add_patch(Rectangle((j - 0.47, i - 0.45), 0.94, 0.9, fill=False, edgecolor="black", lw=1.8))
    fig.colorbar(image, ax=ax, label="F1 over all fields", shrink=0.8)
    ax.set_title(f"F1 by crop and AOI (GT fields in brackets; framed: underperforming there; F1 rule {min_f1:g})",
                 fontsize=9)  # fmt: skip
    return fig

