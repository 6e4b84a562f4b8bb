"""Plots of stored norm sweeps: norm by layer per draw, growth factor against loss increase or level.

Both read a sweep's long table through its public schema (``interp.sweep.store.COLUMNS``) and return
the matplotlib Figure (matplotlib imported lazily).
"""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any, Literal

__all__ = ["plot_norms_by_layer", "plot_growth"]

_STREAM_TEMPLATE = r"^{stat}_L(\d+)$"


def _schema() -> SimpleNamespace:
    """The results table's columns by name (``C.delta_loss == "delta_loss"``): an AttributeError here,
    not a silent empty plot, if the public schema drops a column these plots read."""
    from interp.sweep.store import COLUMNS
    return SimpleNamespace(**{c: c for c in COLUMNS})


def _norm_rows(results: Any, analysis: str, stat: str, degradation: str | None):
    C = _schema()
    t = results.table
    t = t[t[C.analysis] == analysis]
    if degradation is not None:
        t = t[t[C.degradation] == degradation]
    pattern = re.compile(_STREAM_TEMPLATE.format(stat=re.escape(stat)))
    layer = t[C.metric].str.extract(pattern, expand=False)
    t = t[layer.notna()].assign(layer=layer[layer.notna()].astype(int))
    if t.empty:
        raise ValueError(
            f"no '{stat}_L<l>' metrics of analysis {analysis!r}"
            + (f" under degradation {degradation!r}" if degradation else "")
            + f"; analyses in the table: {sorted(results.table[C.analysis].unique())}."
        )
    return t


def _plt():
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("norm plots need matplotlib: pip install 'interp[plot]'.") from err
    return plt


def plot_norms_by_layer(
    results: Any,
    analysis: str = "norms",
    *,
    stat: str = "mean",
    degradation: str | None = None,
    logy: bool = True,
    ax: Any = None,
):
    """Norm (``{stat}_L{l}``) against stream point l: one line per draw, coloured by loss increase ΔL;
    the trained weights in black. Returns the figure."""
    plt = _plt()
    import matplotlib as mpl

    C = _schema()
    t = _norm_rows(results, analysis, stat, degradation)
    fig = ax.figure if ax is not None else plt.subplots(figsize=(5.5, 3.8))[0]
    ax = ax if ax is not None else fig.axes[0]
    draws = t[~t[C.baseline]]
    lo, hi = (float(draws[C.delta_loss].min()), float(draws[C.delta_loss].max())) if len(draws) else (0.0, 1.0)
    cnorm = mpl.colors.Normalize(vmin=min(lo, 0.0), vmax=hi if hi > lo else lo + 1e-9)
    cmap = mpl.colormaps["viridis"]
    for _, g in draws.groupby([C.degradation, C.level_index, C.chain, C.draw]):
        g = g.sort_values("layer")
        ax.plot(g["layer"], g[C.value], color=cmap(cnorm(float(g[C.delta_loss].iloc[0]))), lw=1, alpha=0.8)
    for _, g in t[t[C.baseline]].groupby(C.degradation):
        g = g.sort_values("layer")
        ax.plot(g["layer"], g[C.value], color="black", lw=2, marker="o", ms=3, label="trained weights")
        break
    if logy:
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("stream point l (resid_pre of block l; last = final resid_post)")
    ax.set_ylabel(f"{stat} ‖x_l‖")
    ax.set_title(f"{analysis}: {stat} residual norm by layer", fontsize=9)
    fig.colorbar(mpl.cm.ScalarMappable(norm=cnorm, cmap=cmap), ax=ax, label="loss increase ΔL (nats/token)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_growth(
    results: Any,
    analysis: str = "norms",
    *,
    x: Literal["delta_loss", "level"] = "delta_loss",
    degradation: str | None = None,
    ax: Any = None,
):
    """Growth factor per draw against loss increase (``x="delta_loss"``) or the level itself
    (``x="level"``: checkpoint steps, noise scales), level means joined by a line; the trained
    weights as a dashed line. Returns the figure."""
    from interp.checks import check_choice

    check_choice("plot_growth", "x", x, ("delta_loss", "level"))
    plt = _plt()
    C = _schema()
    t = results.table
    t = t[(t[C.analysis] == analysis) & (t[C.metric] == "growth")]
    if degradation is not None:
        t = t[t[C.degradation] == degradation]
    if t.empty:
        raise ValueError(f"no 'growth' metric of analysis {analysis!r} in the results.")
    fig = ax.figure if ax is not None else plt.subplots(figsize=(5, 3.5))[0]
    ax = ax if ax is not None else fig.axes[0]
    for deg, g in t[~t[C.baseline]].groupby(C.degradation):
        xs = g[C.delta_loss] if x == "delta_loss" else g[C.level].astype(float)
        pts = ax.scatter(xs, g[C.value], s=12, alpha=0.6, label=str(deg))
        means = g.assign(_x=xs.values).groupby(C.level_index)[["_x", C.value]].mean().sort_values("_x")
        ax.plot(means["_x"], means[C.value], color=pts.get_facecolor()[0], lw=1)
    base = t[t[C.baseline]]
    if len(base):
        ax.axhline(float(base[C.value].iloc[0]), color="black", ls="--", lw=1, label="trained weights")
    ax.set_xlabel("loss increase ΔL (nats/token)" if x == "delta_loss" else "level (e.g. checkpoint step)")
    ax.set_ylabel("growth factor per layer")
    ax.set_title(f"{analysis}: residual-norm growth factor", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
