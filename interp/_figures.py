r"""The report's figures: the dissolution panels, units on every axis, figures as inline SVG; and
``Results.plot``'s grid of every metric against the level axis (:func:`metrics_figure`).

:func:`dissolution_figure` draws one panel per analysis × degradation (each on its own readable
range): the chosen effect against ΔL or the divergence with its 95% band over chains, the criterion
(dashed) and the dissolution point with its interval. :func:`metric_label` names a metric's units
for an axis; :func:`plain` escapes ``$`` so that a name is never parsed as mathtext;
:func:`figure_svg` inlines a figure as a ``data:`` URI, so the report is one offline file.

Cost (a report draws about 30 panels): the panels are placed by fixed margins in inches
(:func:`_place_panels`: room for tick labels, an axis label and a title at the fonts used here)
instead of ``tight_layout``, which measures every text twice per call; titles sit at a fixed height
(``y=1.0``: no axis draws ticks on top, so matplotlib's search for a free height, which measures
the axes at every draw, finds the same place); at most five ticks an axis (drawing ticks was most of
the figures' time); the report's figures are
plain ``matplotlib.figure.Figure`` objects, never registered with pyplot (no backend is switched,
nothing to close), written as SVG with text kept as text (no glyph rasterised, no PNG encoded;
sharp at any zoom and about half the bytes of a 110-dpi PNG).

Example::

    >>> from interp._figures import metric_label, plain
    >>> metric_label("recovered"), plain("a$b")
    ('recovered (fraction of the loss gap recovered)', 'a\\$b')
"""

from __future__ import annotations

import base64
import io
from typing import Any

__all__ = ["dissolution_figure", "figure_svg", "label_units", "metric_label", "metrics_figure", "plain"]

#: the margins around and between panels, in inches: tick labels, an axis label (left, bottom) and
#: a title (top) at the font sizes used here
_LEFT, _RIGHT, _TOP, _BOTTOM, _WGAP, _HGAP = 0.8, 0.15, 0.35, 0.6, 0.85, 0.9


def figure_svg(fig: Any) -> str:
    """``fig`` as an SVG data URI, its text kept as text (the page's sans-serif font) and no date
    stamped (the same figure gives the same bytes); a pyplot figure is closed."""
    import sys

    import matplotlib

    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "interp"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode()


def require_matplotlib(what: str) -> None:
    """An ImportError naming the extra, before any work, when matplotlib is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as err:
        raise ImportError(f"{what} needs matplotlib: pip install 'interp[plot]'.") from err


def _new_figure(nrow: int, ncol: int, width: float, height: float, pyplot: bool) -> tuple[Any, Any]:
    """A figure of ``nrow × ncol`` panels of ``width × height`` inches each (margins included) and
    its axes (2-d array): through pyplot (a notebook shows it) or a plain ``Figure`` (the report)."""
    size = (width * ncol, height * nrow)
    require_matplotlib("A figure of Results.plot or the report")
    if pyplot:
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=size)
    else:
        from matplotlib.figure import Figure

        fig = Figure(figsize=size)
    axes = fig.subplots(nrow, ncol, squeeze=False)
    for ax in axes.flat:  # at most 5 ticks an axis: enough on a 3-inch panel, and each tick is 5 artists
        ax.locator_params(nbins=4)
    _place_panels(fig, nrow, ncol)
    return fig, axes


def _place_panels(fig: Any, nrow: int, ncol: int) -> None:
    """Fixed margins in inches (:data:`_LEFT` ...) instead of ``tight_layout``: the same room for
    every panel's tick labels, axis labels and title, at no cost to measure them."""
    w, h = fig.get_size_inches()
    panel_w = (w - _LEFT - _RIGHT - (ncol - 1) * _WGAP) / ncol
    panel_h = (h - _TOP - _BOTTOM - (nrow - 1) * _HGAP) / nrow
    fig.subplots_adjust(left=_LEFT / w, right=1 - _RIGHT / w, bottom=_BOTTOM / h, top=1 - _TOP / h,
                        wspace=_WGAP / panel_w, hspace=_HGAP / panel_h)


def plain(text: Any) -> str:
    """``text`` for a matplotlib label: ``$`` escaped, so a name is never parsed as mathtext."""
    return str(text).replace("$", r"\$")


#: units of well-known metrics, for axis labels (others: "as the analysis returns it")
_METRIC_UNITS = (("kl_recovered", "fraction of the KL recovered"), ("loss_recovered", "fraction of the loss recovered"),
                 ("recovered", "fraction of the loss gap recovered"), ("accuracy", "fraction correct"),
                 ("acc", "fraction correct"), ("loss", "nats/token"), ("kl", "nats/token"), ("norm", "L2 norm"),
                 ("fvu", "fraction of variance unexplained"), ("fraction", "fraction"), ("gap", "nats/token"))


def metric_label(metric: Any) -> str:
    """An axis label for a metric with its units, e.g. ``recovered (fraction of the loss gap recovered)``."""
    name = str(metric)
    low = name.lower()
    for key, units in _METRIC_UNITS:
        if low == key or low.endswith("_" + key) or low.startswith(key + "_"):
            return f"{name} ({units})"
    return f"{name} (units as the analysis returns it)"


def dissolution_figure(results: Any, found: list[Any], chosen: dict[Any, str], axis: str = "delta_loss") -> Any:
    """One panel per analysis × degradation (each degradation on its own readable range): the chosen
    effect against ΔL (or the divergence) with its 95% band, the criterion (dashed) and the dissolution
    point with its interval; both axes labelled with their units. A plain ``Figure`` (not pyplot's)."""
    from interp._levels import axis_title

    s = results.summary()
    panels = [(a, d) for a in chosen for d in found if d.analysis == a and d.metric == chosen[a]]
    ncol = min(3, len(panels))
    nrow = -(-len(panels) // ncol)
    fig, axes = _new_figure(nrow, ncol, 4.1, 3.0, pyplot=False)
    for ax, (analysis, d) in zip(axes.flat, panels):
        metric = chosen[analysis]
        g = s[(s["analysis"] == analysis) & (s["metric"] == metric) & (s["degradation"] == d.degradation)
              & (s["status"] != "failed")]
        g = g.assign(**{axis: g[axis].where(g["level_index"] >= 0, 0.0)}).sort_values(axis)
        line = ax.plot(g[axis], g["mean"], marker="o", ms=3)[0]
        ax.fill_between(g[axis], g["ci_low"], g["ci_high"], alpha=0.2, color=line.get_color())
        ax.axhline(d.threshold, color="0.4", lw=0.8, ls="--")
        if d.outcome == "dissolves":
            x = getattr(d, axis)
            lo, hi = getattr(d, f"{axis}_ci")
            ax.errorbar([x], [d.threshold], xerr=[[max(x - lo, 0)], [max(hi - x, 0)]],
                        fmt="D", ms=6, color=line.get_color(), capsize=3)
        ax.set_title(plain(f"{analysis} under {d.degradation}"), fontsize=9, y=1.0)
        ax.set_xlabel(plain(axis_title(results.meta, axis)), fontsize=8)
        ax.set_ylabel(plain(metric_label(metric)), fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    return fig


def label_units(fig: Any) -> Any:
    """Give every panel of a :meth:`Results.plot` figure a y label with the metric's units (the
    panel's title is ``analysis: metric``); the panels' margins already leave room for it."""
    for ax in fig.axes:
        if ax.get_visible() and not ax.get_ylabel():
            metric = ax.get_title().rsplit(": ", 1)[-1].replace(r"\$", "$")
            ax.set_ylabel(plain(metric_label(metric)), fontsize=8)
    return fig


def metrics_figure(results: Any, metrics: Any, kinds: Any, ax_width: float, axis: str | None,
                   pyplot: bool = True) -> Any:
    """``Results.plot``: each metric of ``results`` against ΔL (or the divergence from w0, ``axis``),
    mean over chains with its 95% band, one panel per (analysis, metric), one line per degradation.
    ``pyplot``: a figure pyplot knows (a notebook shows it), else a plain ``Figure`` (the report's)."""
    import math

    from interp._levels import axis_title, resolve_axis

    require_matplotlib("Results.plot")  # before any work: the missing extra is the error
    axis = resolve_axis(results.table, axis)
    s = results.summary()
    if kinds is not None:
        s = s[s["kind"].isin(set(kinds))]
    pairs = s[["analysis", "metric"]].drop_duplicates().itertuples(index=False)
    pairs = [p for p in pairs if metrics is None or p.metric in set(metrics)]
    if not pairs:
        raise ValueError(f"No metric to plot; available: {sorted(s['metric'].unique())}.")
    ncol = min(3, len(pairs))
    nrow = math.ceil(len(pairs) / ncol)
    fig, axes = _new_figure(nrow, ncol, ax_width, 3.2, pyplot)
    for ax, (analysis, metric) in zip(axes.flat, pairs):
        sub = s[(s["analysis"] == analysis) & (s["metric"] == metric)]
        for deg, g in sub.groupby("degradation"):
            g = g.assign(**{axis: g[axis].where(g["level_index"] >= 0, 0.0)}).sort_values(axis)
            line = ax.plot(g[axis], g["mean"], marker="o", ms=3, label=plain(deg))[0]
            ax.fill_between(g[axis], g["ci_low"], g["ci_high"], alpha=0.2, color=line.get_color())
        ax.set_title(plain(f"{analysis}: {metric}"), fontsize=9, y=1.0)
        ax.set_xlabel(plain(axis_title(results.meta, axis)))
    for ax in list(axes.flat)[len(pairs):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=8)
    return fig
