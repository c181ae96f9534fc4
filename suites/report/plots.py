"""The report's figures: a few generic plot kinds (seaborn theme), each returning PNG bytes.

Every function takes a tidy DataFrame (a query on the results rows) and labels both axes with
units; the caller writes the caption that says which rows and which interval a figure shows.
Bands and whiskers come from suites.report.stats' vectorised bootstrap (seaborn's own bootstrap loops
in Python, too slow at the report's 2,000 repetitions).
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from suites.report import stats

sns.set_theme(style="whitegrid", context="notebook")


def to_png(fig: Figure, dpi: int = 90) -> bytes:
    """Render and close a figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _log_axis(ax: Axes, which: str) -> None:
    """Log scale on axis ``which`` ("x" or "y") with plain-number labels on major ticks only
    (mathtext minor labels are slow to lay out and crowd the axis)."""
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _col_wrap(n: int) -> int:
    return min(n, 3)


def mean_bands(
    data: pd.DataFrame, keys: list[str], n_boot: int = 1000, seed: int = 0, confidence: float = 0.95
) -> pd.DataFrame:
    """Mean of ``value`` per group of ``keys`` with its bootstrap percentile interval.

    Returns:
        DataFrame: keys + mean, low, high (one row per group, in sorted group order).
    """
    grouped = data.groupby(keys, sort=True)["value"].agg(list)
    cis = stats.bootstrap_means([np.asarray(v, dtype=float) for v in grouped], np.random.default_rng(seed),
                                n_boot, confidence)  # fmt: skip
    names = [key if isinstance(key, tuple) else (key,) for key in grouped.index]
    out = [(*key, ci.estimate, ci.low, ci.high) for key, ci in zip(names, cis, strict=True)]
    return pd.DataFrame(out, columns=[*keys, "mean", "low", "high"])


def _palette(names: list[str]) -> dict[str, tuple[float, float, float]]:
    colors = sns.color_palette(n_colors=max(len(names), 1))
    return dict(zip(names, colors, strict=False))


def curves(
    data: pd.DataFrame,
    xlabel: str,
    ylabel: str,
    *,
    style: str | None = None,
    logy: bool = False,
    vline: float | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    dpi: int = 90,
) -> bytes:
    """Line per model (and arm, as line style) of value against step, one panel per task.

    Lines are the mean over seeds, bands the bootstrap 95% percentile interval of that mean.

    Args:
        data: rows with task, model, step, value (and ``style``'s column).
        xlabel, ylabel: axis labels with units.
        style: column drawn as line style (e.g. "arm"), None for none.
        logy: log-scaled value axis.
        vline: x position of a dashed vertical marker (e.g. the task switch at 0).
        n_boot: bootstrap repetitions of the bands; seed: their seed.
    """
    tasks = sorted(data["task"].unique())
    models = sorted(data["model"].unique())
    styles = sorted(data[style].unique()) if style else [None]
    keys = ["task", "model", *([style] if style else []), "step"]
    bands = mean_bands(data, keys, n_boot, seed)
    colors = _palette(models)
    dashes = dict(zip(styles, ["-", "--", ":", "-.", (0, (5, 1, 1, 1))] * 4, strict=False))
    ncol = _col_wrap(len(tasks))
    nrow = -(-len(tasks) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 3.4 * nrow), squeeze=False)
    for ax, task in zip(axes.flat, tasks, strict=False):
        for model in models:
            for sty in styles:
                sel = (bands["task"] == task) & (bands["model"] == model)
                if style:
                    sel &= bands[style] == sty
                b = bands.loc[sel].sort_values("step")
                if b.empty:
                    continue
                ax.plot(b["step"], b["mean"], color=colors[model], ls=dashes[sty], lw=1.6)
                ax.fill_between(
                    b["step"], b["low"], b["high"], color=colors[model], alpha=0.18, lw=0
                )
        if logy:
            _log_axis(ax, "y")
        if vline is not None:
            ax.axvline(vline, color="0.3", ls="--", lw=1)
        ax.set_title(task, fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    for ax in list(axes.flat)[len(tasks) :]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=colors[m], lw=2, label=m) for m in models]
    if style:
        handles += [
            Line2D([], [], color="0.3", ls=dashes[s], label=f"{style}: {s}") for s in styles
        ]
    fig.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(1.0, 0.95),
        fontsize=9,
        title="model" + (f" / {style}" if style else ""),
    )
    fig.tight_layout()
    return to_png(fig, dpi)


def intervals(
    table: pd.DataFrame, xlabel: str, *, panel: str, ref: float | None = None, dpi: int = 90
) -> bytes:
    """Point estimate and interval per model (rows), one panel per value of ``panel``.

    Args:
        table: columns model, ``panel``, estimate, low, high.
        xlabel: the estimate's name and unit.
        panel: column that splits the panels (e.g. protocol).
        ref: x position of a dashed reference line (e.g. 0.5 for P(X > Y)).
    """
    panels = list(dict.fromkeys(table[panel]))
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(4.2 * len(panels), 0.5 + 0.45 * table["model"].nunique() + 0.8),
        squeeze=False,
    )
    palette = dict(zip(sorted(table["model"].unique()), sns.color_palette(), strict=False))
    for ax, name in zip(axes[0], panels, strict=True):
        sub = table.loc[table[panel] == name].sort_values("estimate")
        y = np.arange(len(sub))
        for yi, row in zip(y, sub.itertuples(), strict=True):
            ax.errorbar(
                row.estimate,
                yi,
                xerr=[[row.estimate - row.low], [row.high - row.estimate]],
                fmt="o",
                color=palette[row.model],
                capsize=4,
                lw=2,
            )
        ax.set_yticks(y, list(sub["model"]))
        ax.set_ylim(-0.6, len(sub) - 0.4)
        if ref is not None:
            ax.axvline(ref, color="0.3", ls="--", lw=1)
        ax.set_title(str(name))
        ax.set_xlabel(xlabel)
    axes[0][0].set_ylabel("model")
    fig.tight_layout()
    return to_png(fig, dpi)


def loglog(
    points: pd.DataFrame, fits: pd.DataFrame, xlabel: str, ylabel: str, dpi: int = 90
) -> bytes:
    """Log-log scatter of every run's (step, value) per model with its fitted power law.

    Args:
        points: columns model, step, value.
        fits: columns model, slope, intercept (of log value = intercept + slope log step).
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    models = sorted(points["model"].unique())
    palette = dict(zip(models, sns.color_palette(n_colors=max(len(models), 1)), strict=True))
    for model in models:
        sub = points.loc[points["model"] == model]
        ax.scatter(sub["step"], sub["value"], color=palette[model], s=14, alpha=0.6)
        fit = fits.loc[fits["model"] == model]
        label = model
        if len(fit):
            xs = np.geomspace(sub["step"].min(), sub["step"].max(), 50)
            f = fit.iloc[0]
            ax.plot(xs, np.exp(f["intercept"]) * xs ** f["slope"], color=palette[model])
            label = f"{model} (slope {f['slope']:.2f})"
        ax.plot([], [], "o-", color=palette[model], label=label)
    _log_axis(ax, "x")
    _log_axis(ax, "y")
    steps = sorted(points["step"].unique())
    if len(steps) <= 12:  # label the measured sizes themselves (T = 64, 128, ...)
        ax.set_xticks(steps, [f"{s:g}" for s in steps])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(title="model (fitted log-log slope)", fontsize=8, loc="best")
    fig.tight_layout()
    return to_png(fig, dpi)


def bars(
    data: pd.DataFrame,
    x: str,
    xlabel: str,
    ylabel: str,
    *,
    hue: str | None = "model",
    logy: bool = False,
    n_boot: int = 1000,
    seed: int = 0,
    dpi: int = 90,
) -> bytes:
    """Bars of the mean value per ``x`` (and ``hue``) with the bootstrap 95% interval of it.

    Args:
        data: rows with ``x``, ``hue`` and value.
        x: the category column on the x-axis.
        hue: the column that splits bars within a category (None: one bar per category).
        logy: log-scaled value axis.
    """
    keys = [x, *([hue] if hue else [])]
    bands = mean_bands(data, keys, n_boot, seed)
    cats = list(dict.fromkeys(bands[x]))
    hues = sorted(bands[hue].unique()) if hue else [None]
    colors = _palette([str(h) for h in hues])
    width = 0.8 / len(hues)
    fig, ax = plt.subplots(
        figsize=(min(max(5.0, 0.9 * len(cats) * (1 + 0.25 * len(hues))), 12), 3.8)
    )
    for i, h in enumerate(hues):
        b = bands if hue is None else bands.loc[bands[hue] == h]
        pos = [cats.index(c) - 0.4 + width * (i + 0.5) for c in b[x]]
        ax.bar(
            pos,
            b["mean"],
            width=width * 0.95,
            color=colors[str(h)],
            label=None if h is None else str(h),
        )
        spread = (b["high"] > b["low"]).to_numpy()  # no whisker where one value leaves no spread
        ax.errorbar(
            np.asarray(pos)[spread],
            b["mean"][spread],
            yerr=[(b["mean"] - b["low"])[spread], (b["high"] - b["mean"])[spread]],
            fmt="none",
            ecolor="0.2",
            capsize=3,
            lw=1.2,
        )
    ax.set_xticks(range(len(cats)), [str(c) for c in cats], rotation=15 if len(cats) > 4 else 0)
    if logy:
        _log_axis(ax, "y")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if hue is not None:
        ax.legend(title=hue, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return to_png(fig, dpi)
