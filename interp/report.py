"""A self-contained HTML report of a sweep: plots, survival, summary, calibration, attention views.

The report is one HTML file with everything inline (plots as PNG data URIs, circuitsvis views with
their JavaScript bundle embedded), so it opens offline and can be mailed around. Attention views are
HTML fragments stored next to the results (``views/*.html``), so ``interp report DIR`` can rebuild
the report from saved results without the model.

Example::

    >>> from interp.report import write_report
    >>> write_report(results, "runs/demo/report.html")          # doctest: +SKIP
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from pathlib import Path
from typing import Any

__all__ = ["write_report", "attention_view", "save_view", "load_views"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
.note { color: #555; font-size: 0.9em; max-width: 60em; }
pre { background: #f7f7f7; padding: 0.8em; font-size: 0.8em; overflow-x: auto; }
"""


def attention_view(tokens: list[str], pattern: Any, title: str) -> str:
    """An offline circuitsvis view of attention patterns ``(heads, query, key)`` as an HTML fragment."""
    from circuitsvis.attention import attention_patterns

    view = attention_patterns(tokens=tokens, attention=pattern)
    # local_src embeds the JavaScript bundle (the CDN variant would need the network). Its mount point
    # is written `<div .../>`, which HTML parses as an *open* div: the next view would nest inside it
    # and be wiped when this one renders. Close it explicitly.
    src = re.sub(r'(<div id="circuits-vis-[^"]+"[^>]*?)\s*/>', r"\1></div>", view.local_src, count=1)
    return f"<h3>{html.escape(title)}</h3>\n{src}"


def save_view(directory: str | Path, name: str, fragment: str) -> Path:
    """Store an HTML fragment under ``directory/views/NAME.html`` for later reports."""
    path = Path(directory) / "views" / f"{name}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(fragment, encoding="utf-8")
    return path


def load_views(directory: str | Path) -> list[str]:
    """The stored view fragments of a results directory, by name."""
    views = sorted((Path(directory) / "views").glob("*.html"))
    return [p.read_text(encoding="utf-8") for p in views]


def _figure_png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _table(df: Any) -> str:
    return df.to_html(index=False, float_format="{:.4g}".format, na_rep="–", border=0)


def write_report(
    results: Any,
    path: str | Path,
    views: list[str] | None = None,
    title: str | None = None,
    plot_metrics: list[str] | None = None,
    thresholds: dict[str, float] | None = None,
) -> Path:
    """Write ``results`` as a self-contained HTML report to ``path``; returns the path.

    Args:
        results: a :class:`~interp.results.Results`.
        path: the HTML file to write.
        views: extra HTML fragments (e.g. :func:`attention_view`) appended in a section of their own.
        title: page title (default: the task and degradations).
        plot_metrics: the metrics without an effect/collateral role to plot (default: all of them);
            effects and collaterals are always plotted, and every metric is in the summary table.
        thresholds: ``effect metric -> θ``: also a survival table with the absolute criterion
            (``Results.survival(threshold=thresholds)``), for effects that start at different values.
    """
    import matplotlib

    matplotlib.use("Agg")
    path = Path(path)
    t = results.table
    title = title or (
        f"interp sweep: {', '.join(sorted(t['degradation'].unique()))} "
        f"on {results.meta.get('config', {}).get('task', 'task')}"
    )
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    parts.append(
        "<p class='note'>Each analysis was run at the trained weights (baseline) and at every draw of "
        "each degradation. The x-axis of every plot is the draw's measured loss increase ΔL over the "
        "trained weights on a fixed evaluation batch (nats/token), which makes degradations comparable. "
        "Bands are 95% Student-t intervals over chains. An effect that persists over a range of ΔL is "
        "evidence for a real mechanism; one that dissolves at once is suspect.</p>"
    )
    claims = results.table["kind"].isin(["effect", "collateral"])
    if claims.any():
        parts.append("<h2>Effects and collateral against loss increase</h2>"
                     f"<img alt='effects' src='{_figure_png(results.plot(kinds=['effect', 'collateral']))}'>")
    others = list(dict.fromkeys(results.table.loc[~claims, "metric"]))
    if others:
        shown = others if plot_metrics is None else [m for m in others if m in set(plot_metrics)]
        note = "" if len(shown) == len(others) else (
            f"<p class='note'>{len(shown)} of {len(others)} other metrics shown; all are in the summary.</p>")
        if shown:
            parts.append("<h2>Other metrics against loss increase</h2>" + note +
                         f"<img alt='metrics' src='{_figure_png(results.plot(metrics=shown, kinds=['other']))}'>")
    survival = results.survival()
    parts.append("<h2>Survival of effects</h2>")
    parts.append(
        "<p class='note'>An effect <em>holds</em> at a level while its lower 95% bound is at least half "
        "its baseline and is <em>lost</em> once its upper bound falls below that; the clean window is "
        "where it holds while the analysis's collateral metrics are at most half their baseline.</p>"
    )
    parts.append(_table(survival) if len(survival) else "<p>No effect metrics.</p>")
    if thresholds:
        absolute = results.survival(threshold=thresholds)
        named = ", ".join(f"{m} ≥ {v:g}" for m, v in thresholds.items())
        parts.append(
            "<h3>Against absolute thresholds</h3><p class='note'>The same, with a fixed threshold for "
            f"every analysis ({html.escape(named)}): an effect that starts below it never holds, however "
            "slowly it decays (<em>held_at_baseline</em>).</p>" + _table(absolute))
    parts.append("<h2>Summary</h2>" + _table(results.summary()))
    if len(results.draws):
        parts.append("<h2>Draws</h2>" + _table(results.draws))
    info = {k: v for k, v in results.meta.items() if k != "config"}
    parts.append("<h2>Calibration, diagnostics, versions</h2><pre>"
                 + html.escape(json.dumps(info, indent=1, default=repr)) + "</pre>")
    parts.append("<h2>Configuration</h2><pre>"
                 + html.escape(json.dumps(results.meta.get("config", {}), indent=1, default=repr)) + "</pre>")
    if views:
        parts.append("<h2>Attention</h2>" + "\n".join(views))
    parts.append("</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
