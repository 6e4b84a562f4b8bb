"""A self-contained HTML report of a sweep that answers first: verdicts, the dissolution figure, details.

Top of the page: one verdict line per analysis (where its main effect dissolves under each
degradation, :func:`interp.verdicts.verdict_lines`; failed and undecided levels said as such) and the
clean-window findings; then the survival/dissolution figure (the effect against the measured loss
increase ΔL, or the behavioural divergence from w0 for a model without a loss (``axis=``), one panel
per analysis, degradations overlaid, the threshold and each dissolution point with its interval
marked); then the details: formatted tables (rounded, levels as numbers), the
plots of every metric, and the raw summary, draws, calibration and configuration collapsed
(``<details>``). Nothing is wider than the page at 1,280 px: wide tables scroll in their own box.

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
body { font-family: system-ui, sans-serif; margin: 1.2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; margin: 0.3em 0; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
ul.verdicts { font-size: 1.02em; line-height: 1.45; padding-left: 1.2em; margin: 0.4em 0; }
ul.verdicts li { margin: 0.25em 0; } li.failed { color: #a33; } .findings { font-size: 0.92em; }
.wrap { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: 0.82em; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; height: auto; }
.note { color: #555; font-size: 0.88em; max-width: 62em; }
details { margin: 0.6em 0; } summary { cursor: pointer; font-weight: 600; }
pre { background: #f7f7f7; padding: 0.8em; font-size: 0.78em; overflow-x: auto; white-space: pre-wrap;
      word-break: break-word; }
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
    """A table rounded to 4 significant digits, in a box that scrolls rather than widen the page."""
    return "<div class='wrap'>" + df.to_html(index=False, float_format="{:.4g}".format, na_rep="–",
                                              border=0) + "</div>"


def _level_text(level: Any) -> str:
    """A level as a short label: ``Δ 0.3`` (a target increase of the posterior's objective, in its
    own units), ``nβ 1e+03``, a number, or ``baseline``."""
    from interp._levels import parse_level

    if level is None or level == "baseline":
        return "baseline"
    kind, number = parse_level(level)
    if kind == "LossIncrease":
        return f"Δ {number:g}"
    if kind == "NBeta":
        return f"nβ {number:g}"
    return f"{number:g}" if number == number else str(level)


def _readable(df: Any, columns: list[str]) -> Any:
    """The listed columns that exist, levels as short labels, lists as text."""
    df = df[[c for c in columns if c in df.columns]].copy()
    for c in df.columns:
        if c.endswith("level") or c == "level":
            df[c] = df[c].map(lambda v: "–" if v is None or v != v else _level_text(v))
        elif df[c].map(lambda v: isinstance(v, (list, tuple))).any():
            df[c] = df[c].map(lambda v: "; ".join(map(str, v)) if isinstance(v, (list, tuple)) else v)
    return df


def _dissolution_figure(results: Any, found: list[Any], chosen: dict[str, str], axis: str = "delta_loss") -> Any:
    """One panel per analysis: its chosen effect against ΔL (or the divergence), degradations
    overlaid, the threshold and each dissolution point (with its interval) marked."""
    import matplotlib.pyplot as plt

    from interp._levels import axis_title

    s = results.summary()
    analyses = list(chosen)
    ncol = min(3, len(analyses))
    nrow = -(-len(analyses) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.9 * ncol, 2.9 * nrow), squeeze=False)
    for ax, analysis in zip(axes.flat, analyses):
        metric = chosen[analysis]
        for d in (d for d in found if d.analysis == analysis and d.metric == metric):
            g = s[(s["analysis"] == analysis) & (s["metric"] == metric) & (s["degradation"] == d.degradation)
                  & (s["status"] != "failed")]
            g = g.assign(**{axis: g[axis].where(g["level_index"] >= 0, 0.0)}).sort_values(axis)
            line = ax.plot(g[axis], g["mean"], marker="o", ms=3, label=d.degradation)[0]
            ax.fill_between(g[axis], g["ci_low"], g["ci_high"], alpha=0.2, color=line.get_color())
            ax.axhline(d.threshold, color="0.4", lw=0.8, ls="--")
            if d.outcome == "dissolves":
                x = getattr(d, axis)
                lo, hi = getattr(d, f"{axis}_ci")
                ax.errorbar([x], [d.threshold], xerr=[[x - lo], [hi - x]],
                            fmt="D", ms=6, color=line.get_color(), capsize=3)
        ax.set_title(f"{analysis}: {metric}", fontsize=9)
        ax.set_xlabel(axis_title(results.meta, axis), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(analyses):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def write_report(
    results: Any,
    path: str | Path,
    views: list[str] | None = None,
    title: str | None = None,
    plot_metrics: list[str] | None = None,
    thresholds: dict[str, float] | None = None,
    names: dict[str, str] | None = None,
    axis: str | None = None,
) -> Path:
    """Write ``results`` as a self-contained HTML report to ``path``; returns the path.

    Args:
        results: a :class:`~interp.results.Results`.
        path: the HTML file to write.
        views: extra HTML fragments (e.g. :func:`attention_view`) appended in a section of their own.
        title: page title (default: the task and degradations).
        plot_metrics: the metrics without an effect/collateral role to plot (default: all of them);
            effects and collaterals are always plotted, and every metric is in the summary table.
        thresholds: ``effect metric -> θ``: absolute criteria for the verdicts (e.g.
            ``{"recovered": 0.9}``) and a survival table with them; other effects use half their
            baseline.
        names: ``analysis -> display name`` in the verdict lines.
        axis: the axis levels are read and plotted along: ``"delta_loss"`` (the measured ΔL),
            ``"divergence"`` (the behavioural divergence from w0), or ``None``: ΔL where the sweep
            measured a loss, else the divergence (a model without a loss, e.g. MiniLM).
    """
    import matplotlib

    matplotlib.use("Agg")
    from interp._levels import axis_label, axis_title, axis_units, resolve_axis
    from interp.verdicts import clean_window, clean_window_findings, dissolutions, main_metric, verdict_lines

    path = Path(path)
    t = results.table
    axis = resolve_axis(t, axis)
    along = f"{axis_label(axis)} ({axis_units(results.meta, axis) or 'units not recorded'})"
    heading = "loss increase ΔL" if axis == "delta_loss" else "divergence from w0"
    title = title or (
        f"interp sweep: {', '.join(sorted(t['degradation'].unique()))} "
        f"on {results.meta.get('config', {}).get('task', 'task')}"
    )
    thresholds = thresholds or results.meta.get("thresholds") or None
    found = dissolutions(results, thresholds, axis=axis)
    lines = verdict_lines(results, thresholds, names=names, axis=axis)
    levels = results.levels()
    failed = levels[levels["status"] == "failed"]
    cw = clean_window(results)
    findings = clean_window_findings(results, cw, axis=axis)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'>"
             f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{html.escape(title)}</title>",
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    # ---- the answers first
    items = [f"<li>{html.escape(line)}</li>" for line in lines]
    items += [f"<li class='failed'>{html.escape(str(r.degradation))} level {html.escape(_level_text(r.level))}: "
              f"failed ({html.escape(str(r.reason))}); its numbers are not a result</li>" for r in failed.itertuples()]
    crit = ", ".join(f"{m} ≥ {v:g}" for m, v in (thresholds or {}).items())
    parts.append(
        "<section id='verdicts'><h2>Verdicts</h2><ul class='verdicts'>" + "".join(items) + "</ul>"
        "<p class='note'>An effect <em>holds</em> at a level when its 95% interval over chains lies above the "
        f"criterion ({html.escape(crit + '; ' if crit else '')}other effects: half their value at the trained "
        "weights), is <em>lost</em> when it lies below, and is <em>undecided</em> in between. The dissolution "
        f"point is interpolated between the grid's levels on the measured {html.escape(along)}; its "
        "interval runs from the last level that holds to the first that is lost (<code>interp.dissolution</code> "
        "searches adaptively instead of reading a fixed grid).</p>"
        "<div class='findings'><strong>Clean window</strong> (effect/collateral ratio against the trained weights): "
        "<ul>" + "".join(f"<li>{html.escape(f)}</li>" for f in findings) + "</ul></div></section>")
    effects: dict[str, list[str]] = {}
    for d in found:
        effects.setdefault(d.analysis, []).append(d.metric)
    chosen = {a: main_metric(a, ms, thresholds) for a, ms in effects.items()}
    if chosen:
        parts.append("<h2>Survival and dissolution</h2><p class='note'>Each analysis's main effect against "
                     f"{html.escape(axis_title(results.meta, axis))} "
                     "(mean over chains, 95% band), the criterion (dashed) and the dissolution point with its "
                     "interval (diamond).</p>"
                     f"<img alt='dissolution' src='{_figure_png(_dissolution_figure(results, found, chosen, axis))}'>")
    # ---- details
    parts.append("<h2>Dissolution points</h2>" + _table(_frame([{
        "degradation": d.degradation, "analysis": d.analysis, "metric": d.metric, "criterion": d.criterion_text(),
        "baseline": d.baseline, "outcome": d.outcome, "ΔL": d.delta_loss, "ΔL low": d.delta_loss_ci[0],
        "ΔL high": d.delta_loss_ci[1], "divergence": d.divergence, "divergence low": d.divergence_ci[0],
        "divergence high": d.divergence_ci[1], "nβ": d.nbeta,
        "undecided levels": int((d.points["decision"] == "undecided").sum()),
        "failed levels": int((d.points["decision"] == "failed").sum())} for d in found])))
    if len(cw):
        parts.append("<h2>Clean window</h2><p class='note'>Ratio effect / collateral per level with bootstrap "
                     "intervals over chains; <em>better</em> when its lower bound exceeds the ratio at the trained "
                     "weights.</p>" + _table(_readable(cw, [
                         "degradation", "analysis", "effect", "collateral", "level", "delta_loss", "divergence",
                         "effect_mean",
                         "collateral_mean", "ratio", "ratio_ci_low", "ratio_ci_high", "baseline_ratio",
                         "better_than_w0", "worse_than_w0"])))
    survival = results.survival(axis=axis)
    cols = ["degradation", "analysis", "metric", "baseline", "threshold", "held_at_baseline", "last_held_level",
            "last_held_delta_loss", "last_held_divergence", "lost_level", "lost_delta_loss", "lost_divergence",
            "undecided_levels", "failed_levels"]
    parts.append("<h2>Survival of effects (half the baseline)</h2>")
    parts.append(_table(_readable(survival, cols)) if len(survival) else "<p>No effect metrics.</p>")
    if thresholds:
        absolute = results.survival(threshold=thresholds, axis=axis)
        named = ", ".join(f"{m} ≥ {v:g}" for m, v in thresholds.items())
        parts.append(
            "<h3>Against absolute thresholds</h3><p class='note'>The same, with a fixed threshold for "
            f"every analysis ({html.escape(named)}): an effect that starts below it never holds, however "
            "slowly it decays (<em>held_at_baseline</em>).</p>" + _table(_readable(absolute, cols)))
    claims = results.table["kind"].isin(["effect", "collateral"])
    if claims.any():
        parts.append(f"<h2>Effects and collateral against {heading}</h2>"
                     f"<img alt='effects' src='{_figure_png(results.plot(kinds=['effect', 'collateral'], axis=axis))}'>")
    others = list(dict.fromkeys(results.table.loc[~claims, "metric"]))
    if others:
        shown = others if plot_metrics is None else [m for m in others if m in set(plot_metrics)]
        note = "" if len(shown) == len(others) else (
            f"<p class='note'>{len(shown)} of {len(others)} other metrics shown; all are in the summary.</p>")
        if shown:
            parts.append(f"<h2>Other metrics against {heading}</h2>" + note + "<img alt='metrics' "
                         f"src='{_figure_png(results.plot(metrics=shown, kinds=['other'], axis=axis))}'>")
    summary = results.summary()
    main = summary[summary["kind"].isin(["effect", "collateral"])]
    parts.append("<h2>Summary of effects and collaterals</h2>" + _table(_readable(main, [
        "degradation", "level", "target_delta_loss", "nbeta", "sigma", "analysis", "metric", "delta_loss",
        "divergence", "mean",
        "ci_low", "ci_high", "ci_method", "n_chains", "n_failed_chains", "status"])))
    parts.append("<details><summary>Raw summary (every metric, every column)</summary>" + _table(summary)
                 + "</details>")
    if len(results.draws):
        parts.append("<details><summary>Draws</summary>" + _table(results.draws) + "</details>")
    info = {k: v for k, v in results.meta.items() if k != "config"}
    parts.append("<details><summary>Calibration, diagnostics, versions</summary><pre>"
                 + html.escape(json.dumps(info, indent=1, default=repr)) + "</pre></details>")
    parts.append("<details><summary>Configuration</summary><pre>"
                 + html.escape(json.dumps(results.meta.get("config", {}), indent=1, default=repr)) + "</pre></details>")
    if views:
        parts.append("<h2>Attention</h2><div class='wrap'>" + "\n".join(views) + "</div>")
    parts.append("</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def _frame(rows: list[dict[str, Any]]) -> Any:
    import pandas as pd

    return pd.DataFrame(rows)
