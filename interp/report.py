"""A self-contained HTML report of a sweep that answers first: verdicts, the dissolution figure, details.

Top of the page: the answer table (one row per analysis × degradation: holds / lost / undecided /
never holds, "dissolves at ΔL x [lo, hi]" or "not reached: grid max ΔL y", and, for a tempered
posterior beside weight noise, whether the effect outlasts the noise at equal ΔL;
:func:`interp.verdicts.answer_table`), then one verdict line per analysis in prose
(:func:`interp.verdicts.verdict_lines`; failed and undecided levels said as such), the clean-window
findings and what the axis is (ΔL, or the divergence: what is compared, on which rows); then the
survival/dissolution figure (one panel per analysis × degradation, so each degradation is on its own
readable range; axes labelled with their units; the criterion and each dissolution point with its
interval marked); then the details: formatted tables (rounded, one notation for levels, "–" for a
missing value), the plots of every metric, the calibration as a table, and the raw summary, draws,
versions and configuration collapsed (``<details>``). Nothing is wider than the page at 1,280 px:
table cells wrap.

Security: the report renders what is in the results directory, and that data is never run. Every
string that reaches the page (analysis, metric and degradation names, titles, verdicts, sweep-file
fields, the tokens of an attention view) is escaped for HTML, and the data given to a circuitsvis
view is JSON with ``<``, ``>`` and ``&`` escaped, so a token ``</script><script>…`` stays text, and
the tokens in it are HTML-escaped too (circuitsvis writes them into the page with ``innerHTML``). The
views of a results directory are those :func:`save_view` recorded in ``DIR/views.json`` with their
SHA-256: a file planted in ``views/`` (or changed after it was written) is left out with a warning.
``report.html`` is written to a temporary file and renamed, so a full disk never leaves a truncated
report. ``interp report DIR`` renders what is in ``DIR``: open reports of directories you trust
to hold what you think they hold (it runs nothing from them, but it shows their numbers and text).

The report is one HTML file with everything inline (plots as SVG data URIs, circuitsvis views with
their JavaScript bundle embedded), so it opens offline and can be mailed around. Attention views are
HTML fragments stored next to the results (``views/*.html``), so ``interp report DIR`` can rebuild
the report from saved results without the model.

Example (a few seconds of plotting, so skipped as a docstring example; ``tests/interp/test_report.py``
writes reports of results like these)::

    >>> from interp.report import write_report
    >>> write_report(study, "runs/demo/report.html")          # doctest: +SKIP
    PosixPath('runs/demo/report.html')
"""

from __future__ import annotations

import html
import json
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from interp._figures import dissolution_figure, figure_svg, label_units, metrics_figure
from interp._views import attention_view, load_views, save_view, write_atomic  # their public home: here

log = logging.getLogger(__name__)

#: thresholds for the reports written in this context (``interp report DIR --threshold m=v``)
_THRESHOLDS: ContextVar[dict[str, float] | None] = ContextVar("interp_report_thresholds", default=None)


@contextmanager
def default_thresholds(thresholds: dict[str, float] | None) -> Iterator[None]:
    """Reports written inside this context use ``thresholds`` where ``write_report`` is given none
    (how ``interp report DIR --threshold recovered=0.9`` reaches the report)."""
    token = _THRESHOLDS.set(dict(thresholds) if thresholds else None)
    try:
        yield
    finally:
        _THRESHOLDS.reset(token)


def parse_thresholds(items: list[str] | tuple[str, ...]) -> dict[str, float] | None:
    """``["recovered=0.9", ...]`` as ``{"recovered": 0.9}`` (``None`` for none); a ValueError naming an
    item that is not ``METRIC=NUMBER``."""
    out: dict[str, float] = {}
    for item in items or ():
        name, sep, value = str(item).partition("=")
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not sep or not name.strip() or not math.isfinite(number):
            raise ValueError(f"--threshold {item!r}: give METRIC=NUMBER, an effect metric and a finite number in "
                             "its units, e.g. --threshold recovered=0.9.")
        out[name.strip()] = number
    return out or None

__all__ = ["write_report", "attention_view", "save_view", "load_views", "default_thresholds",
           "parse_thresholds"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; margin: 0.3em 0; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
ul.verdicts { font-size: 1.02em; line-height: 1.45; padding-left: 1.2em; margin: 0.4em 0; }
ul.verdicts li { margin: 0.25em 0; } li.failed { color: #a33; } .findings { font-size: 0.92em; }
.wrap { max-width: 100%; overflow-x: auto; scrollbar-color: #888 #eee; }  /* a fallback: tables wrap to fit */
table { border-collapse: collapse; font-size: 0.78em; margin: 0.5em 0; max-width: 100%; }
th, td { border: 1px solid #ccc; padding: 2px 4px; text-align: right; overflow-wrap: break-word; }
th { overflow-wrap: normal; }
table.answers { font-size: 0.95em; } table.answers td { text-align: left; }
.views .cv-title { font-weight: 600; margin-top: 1em; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; height: auto; }
.note { color: #555; font-size: 0.88em; max-width: 62em; }
details { margin: 0.6em 0; } summary { cursor: pointer; font-weight: 600; }
pre { background: #f7f7f7; padding: 0.8em; font-size: 0.78em; overflow-x: auto; white-space: pre-wrap;
      word-break: break-word; }
"""


def _table(df: Any, cls: str = "") -> str:
    """A table rounded to 4 significant digits, one mark ("–") for every missing value, cells that wrap
    rather than widen the page; every cell HTML-escaped."""
    df = df.copy()
    # headers break after an underscore (a zero-width space), never inside a word
    df.columns = [str(c).replace("_", "_\u200b") for c in df.columns]
    for c in df.columns:
        if df[c].dtype == object:
            df[c] = df[c].map(lambda v: "–" if v is None or (isinstance(v, float) and v != v) else v)
    text = df.to_html(index=False, float_format="{:.4g}".format, na_rep="–", border=0, escape=True)
    if cls:
        text = text.replace('<table class="dataframe">', f'<table class="dataframe {cls}">', 1)
    return "<div class='wrap'>" + text + "</div>"


_SIGMA_TYPES = ("weightnoise", "activationnoise")


def _level_text(level: Any, degradation: Any = None) -> str:
    """A level in one notation: ``Δ=0.3`` (a target increase of the posterior's objective, in its own
    units), ``nβ=1000``, ``σ=0.05`` (noise), ``step=100`` (a checkpoint), ``w0`` for the trained weights,
    ``–`` when missing."""
    from interp._levels import parse_level

    if level is None or (isinstance(level, float) and level != level):
        return "–"
    if level == "baseline":
        return "w0"
    kind, number = parse_level(level)
    if kind == "LossIncrease":
        return f"Δ={number:g}"
    if kind == "NBeta":
        return f"nβ={number:g}"
    if number == number:
        deg = str(degradation or "").lower().replace("_", "")
        if any(deg.startswith(t) for t in _SIGMA_TYPES):
            return f"σ={number:g}"
        if deg.startswith("checkpoint"):
            return f"step={number:g}"
        return f"{number:g}"
    return str(level)


def _readable(df: Any, columns: list[str]) -> Any:
    """The listed columns that exist, levels in one notation, lists as text."""
    df = df[[c for c in columns if c in df.columns]].copy()
    degs = df["degradation"] if "degradation" in df.columns else [None] * len(df)
    for c in df.columns:
        if c.endswith("level") or c == "level":
            df[c] = [_level_text(v, d) for v, d in zip(df[c], degs)]
        elif df[c].map(lambda v: isinstance(v, (list, tuple))).any():
            df[c] = df[c].map(lambda v: ("; ".join(map(str, v)) or "–") if isinstance(v, (list, tuple)) else v)
    return df


def _names_as_text(results: Any) -> Any:
    """``results`` with degradation, analysis and metric names as strings (an int name sorts and prints
    like any other)."""
    from interp.results import Results

    t = results.table
    if all(t[c].map(lambda v: isinstance(v, str)).all() for c in ("degradation", "analysis", "metric")):
        return results
    t = t.assign(**{c: t[c].map(str) for c in ("degradation", "analysis", "metric")})
    return Results(t, results.draws, results.meta)


def _divergence_text(results: Any) -> str:
    """What the divergence axis compares, on which rows."""
    from interp._levels import divergence_units

    parts = results.meta.get("parts", [results.meta])
    config = (parts[0].get("config") if parts else None) or {}
    kind = ((config.get("divergence") or {}).get("kind")) or ("kl" if "KL" in divergence_units(results.meta) else None)
    rows = config.get("eval_rows")
    on = f"the sweep's {rows} fixed evaluation rows" if rows else "the sweep's fixed evaluation rows"
    on += " (the first rows of the task's test split; the same rows at every draw)"
    if kind == "mse":
        return (f"<em>Divergence from w0</em>: the mean squared difference of the final hidden state between the "
                f"trained weights and the draw, normalised by its variance at w0, on {on}.")
    return (f"<em>Divergence from w0</em>: KL(p<sub>w0</sub> ‖ p<sub>w</sub>) of the next-token distributions, "
            f"nats per scored token, on {on}. <em>ΔL</em>: the draw's loss minus the trained weights' loss on "
            "the same rows (nats/token).")


def _calibration_table(results: Any) -> Any:
    levels = results.levels()
    levels = levels.assign(level=[_level_text(v, d) for v, d in zip(levels["level"], levels["degradation"])])
    cols = ["degradation", "level", "target_delta_loss", "target_units", "nbeta", "sigma", "step",
            "measured_delta_loss", "measured_divergence", "n_failed_chains", "status", "reason"]
    return levels[[c for c in cols if c in levels.columns]]


def _calibrated_elsewhere(results: Any) -> list[str]:
    """The objectives (with units) posterior levels were calibrated on that are not the task's loss."""
    out = []
    for part in results.meta.get("parts", [results.meta]):
        task = str((part.get("config") or {}).get("task") or "")
        for info in (part.get("levels") or {}).values():
            cal = (info or {}).get("calibration") if isinstance(info, dict) else None
            if not isinstance(cal, dict):
                continue
            objective, units = cal.get("objective"), cal.get("units")
            if (units and units != "nats/token") or (objective and task and str(objective) != task):
                out.append(f"{objective or 'its objective'} ({units or 'units not recorded'})")
    return sorted(set(out))


def _objective_note(results: Any) -> str:
    """A note when posterior levels were calibrated on another objective (or in other units) than the
    task's loss, whose ΔL the plots and verdicts use."""
    other = _calibrated_elsewhere(results)
    if not other:
        return ""
    return (f"<p class='note'><strong>Two axes.</strong> The posterior's levels were calibrated to a target "
            f"increase of {html.escape(', '.join(other))}, not of the task's loss; the plots and verdicts place each "
            "level at the task's <em>measured</em> ΔL (or divergence), so a target Δ=0.1 of the objective can "
            "sit at a far smaller ΔL of the task. The calibration table below gives both.</p>")


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
        path: the HTML file to write (written to a temporary file and renamed: a failed write leaves
            no truncated report, and its error names the file).
        views: extra HTML fragments (e.g. :func:`attention_view`) appended in a section of their own.
            They are included as they are: pass only fragments you made (or :func:`load_views`).
        title: page title (default: the task and degradations).
        plot_metrics: the metrics without an effect/collateral role to plot (default: the first of
            them in the table's order, up to 12 panels); effects and collaterals are always plotted,
            and every metric is in the summary table.
        thresholds: ``effect metric -> θ``: absolute criteria for the verdicts (e.g.
            ``{"recovered": 0.9}``) and a survival table with them; other effects use half the way
            from their floor (0, or chance for an accuracy) to their value at w0. A name that is not
            an effect metric of ``results`` is a ValueError.
        names: ``analysis -> display name`` in the verdict lines.
        axis: the axis levels are read and plotted along: ``"delta_loss"`` (the measured ΔL),
            ``"divergence"`` (the behavioural divergence from w0), or ``None``: ΔL where the sweep
            measured a loss, else the divergence (a model without a loss, e.g. MiniLM).
    """
    from interp._levels import resolve_axis
    from interp.verdicts import check_thresholds, clean_window, dissolutions

    path = Path(path)
    if results.table.empty:
        raise ValueError("write_report: these results hold no rows (no analysis returned a metric); "
                         "nothing to report.")
    results = _names_as_text(results)
    t = results.table
    axis = resolve_axis(t, axis)
    title = str(title) if title is not None else (
        f"interp sweep: {', '.join(sorted(t['degradation'].unique()))} "
        f"on {results.meta.get('config', {}).get('task', 'task')}"
    )
    thresholds = check_thresholds(results, thresholds or _THRESHOLDS.get() or results.meta.get("thresholds") or None)
    found = dissolutions(results, thresholds, axis=axis)
    cw = clean_window(results)
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'>"
             f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{e(title)}</title>",
             f"<style>{_STYLE}</style></head><body><h1>{e(title)}</h1>"]
    parts.append(_verdict_section(results, thresholds, names, axis, cw))
    parts += _dissolution_sections(results, thresholds, found, axis, cw)
    parts += _survival_sections(results, thresholds, axis)
    parts += _plot_sections(results, plot_metrics, axis)
    parts += _table_sections(results, views)
    parts.append("</body></html>")
    write_atomic(path, "\n".join(parts))
    return path


def _verdict_section(results: Any, thresholds: dict[str, float] | None, names: dict[str, str] | None,
                     axis: str, cw: Any) -> str:
    """The answers first: the verdict table and lines, failed levels, how to read them, and the
    clean-window findings."""
    from interp._levels import axis_label, axis_units
    from interp.verdicts import answer_table, clean_window_findings, verdict_lines

    along = f"{axis_label(axis)} ({axis_units(results.meta, axis) or 'units not recorded'})"
    answers = answer_table(results, thresholds, names=names, axis=axis)
    lines = verdict_lines(results, thresholds, names=names, axis=axis)
    levels = results.levels()
    failed = levels[levels["status"] == "failed"]
    findings = clean_window_findings(results, cw, axis=axis)
    e = html.escape
    items = [f"<li>{e(line)}</li>" for line in lines]
    items += [f"<li class='failed'>{e(str(r.degradation))} level {e(_level_text(r.level, r.degradation))}: "
              f"failed ({e(str(r.reason))}); its numbers are not a result</li>" for r in failed.itertuples()]
    crit = ", ".join(f"{m} ≥ {v:g}" for m, v in (thresholds or {}).items())
    shown = answers.rename(columns={"vs_weight_noise": "vs weight noise (equal ΔL)"})
    shown = shown.drop(columns=[c for c in ("vs weight noise (equal ΔL)", "warning") if not shown[c].astype(bool).any()])
    return (
        "<section id='verdicts'><h2>Verdicts</h2>" + _table(shown, "answers")
        + "<ul class='verdicts'>" + "".join(items) + "</ul>"
        "<p class='note'>An effect <em>holds</em> at a level when its 95% interval over chains lies above the "
        f"criterion ({e(crit + '; ' if crit else '')}other effects: half the way from their floor, 0 for a "
        "recovered fraction and chance for an accuracy, to their value at the trained weights), is "
        "<em>lost</em> when it lies below, and is <em>undecided</em> in between; a finding less than 10% of "
        "its range above its floor at the trained weights <em>never holds</em>. The dissolution point is "
        f"interpolated between the grid's levels on the measured {e(along)}; its interval runs from the last "
        "level that holds to the first that is lost (<code>interp.dissolution</code> searches adaptively "
        f"instead of reading a fixed grid). {_divergence_text(results)}</p>"
        + _objective_note(results)
        + "<div class='findings'><strong>Clean window</strong> (effect/collateral ratio against the trained "
        "weights): <ul>" + "".join(f"<li>{e(f)}</li>" for f in findings) + "</ul></div></section>")


def _dissolution_sections(results: Any, thresholds: dict[str, float] | None, found: list[Any], axis: str,
                          cw: Any) -> list[str]:
    """The dissolution figure (each analysis's main effect), the dissolution points and the clean
    window per level."""
    from interp._levels import axis_title
    from interp.verdicts import main_metric

    e = html.escape
    parts: list[str] = []
    effects: dict[str, list[str]] = {}
    for d in found:
        effects.setdefault(d.analysis, []).append(d.metric)
    chosen = {a: main_metric(a, list(dict.fromkeys(ms)), thresholds) for a, ms in effects.items()}
    if chosen:
        parts.append("<h2>Survival and dissolution</h2><p class='note'>Each analysis's main effect against "
                     f"{e(axis_title(results.meta, axis))}, one panel per degradation "
                     "(mean over chains, 95% band), the criterion (dashed) and the dissolution point with its "
                     "interval (diamond).</p>"
                     f"<img alt='dissolution' src='{figure_svg(dissolution_figure(results, found, chosen, axis))}'>")
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
                     "weights, <em>attributable</em> when the collateral fell more than under the other "
                     "analyses that measure it (– : none to compare with).</p>" + _table(_readable(cw, [
                         "degradation", "analysis", "effect", "collateral", "level", "delta_loss", "divergence",
                         "effect_mean", "collateral_mean", "ratio", "ratio_ci_low", "ratio_ci_high",
                         "baseline_ratio", "better_than_w0", "worse_than_w0", "attributable"])))
    return parts


def _survival_sections(results: Any, thresholds: dict[str, float] | None, axis: str) -> list[str]:
    """Survival of every effect (half the baseline), and against the absolute thresholds if given."""
    e = html.escape
    parts: list[str] = []
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
            f"every analysis ({e(named)}): an effect that starts below it never holds, however "
            "slowly it decays (<em>held_at_baseline</em>).</p>" + _table(_readable(absolute, cols)))
    return parts


def _plot_sections(results: Any, plot_metrics: list[str] | None, axis: str) -> list[str]:
    """Effects and collaterals, then the other metrics (those chosen), against the axis."""
    heading = "loss increase ΔL" if axis == "delta_loss" else "divergence from w0"
    parts: list[str] = []
    claims = results.table["kind"].isin(["effect", "collateral"])
    if claims.any():
        parts.append(f"<h2>Effects and collateral against {heading}</h2>"
                     f"<img alt='effects' src='{_figure(results, None, ['effect', 'collateral'], axis)}'>")
    others = list(dict.fromkeys(results.table.loc[~claims, "metric"]))
    if others:
        shown_m = _first_panels(results.table[~claims], others) if plot_metrics is None else [
            m for m in others if m in set(map(str, plot_metrics))]
        note = "" if len(shown_m) == len(others) else (
            f"<p class='note'>{len(shown_m)} of {len(others)} other metrics shown; all are in the summary "
            "(<code>plot_metrics</code> chooses them).</p>")
        if shown_m:
            parts.append(f"<h2>Other metrics against {heading}</h2>" + note + "<img alt='metrics' "
                         f"src='{_figure(results, shown_m, ['other'], axis)}'>")
    return parts


def _figure(results: Any, metrics: list[str] | None, kinds: list[str], axis: str) -> str:
    """The report's :meth:`Results.plot` figure as an SVG data URI: a plain ``Figure`` (pyplot's
    figures and backend untouched), units on every y axis."""
    return figure_svg(label_units(metrics_figure(results, metrics, kinds, 4.0, axis, pyplot=False)))


#: the most panels the "other metrics" figure gets by default: a study's 100 metrics would be a
#: figure 100 inches tall that took a minute to draw
OTHER_PANELS = 12


def _first_panels(rows: Any, metrics: list[str]) -> list[str]:
    """The first of ``metrics`` (in table order) whose panels, one per analysis reporting the metric,
    number at most :data:`OTHER_PANELS` together (at least one metric)."""
    per_metric = rows[["analysis", "metric"]].drop_duplicates()["metric"].value_counts()
    shown, panels = [], 0
    for m in metrics:
        panels += int(per_metric.get(m, 1))
        if shown and panels > OTHER_PANELS:
            break
        shown.append(m)
    return shown


def _table_sections(results: Any, views: list[str] | None) -> list[str]:
    """The summary and calibration tables, the raw tables, diagnostics, configuration and views."""
    e = html.escape
    parts: list[str] = []
    summary = results.summary()
    main = summary[summary["kind"].isin(["effect", "collateral"])]
    parts.append("<h2>Summary of effects and collaterals</h2>" + _table(_readable(main, [
        "degradation", "level", "analysis", "metric", "delta_loss", "divergence", "mean",
        "ci_low", "ci_high", "n_chains", "n_failed_chains", "status"])))
    parts.append("<h2>Calibration</h2>" + _table(_calibration_table(results)))
    parts.append("<details><summary>Raw summary (every metric, every column)</summary>" + _table(summary)
                 + "</details>")
    if len(results.draws):
        parts.append("<details><summary>Draws</summary>" + _table(results.draws) + "</details>")
    info = {k: v for k, v in results.meta.items() if k != "config"}
    parts.append("<details><summary>Diagnostics and versions (raw)</summary><pre>"
                 + e(json.dumps(info, indent=1, default=repr)) + "</pre></details>")
    parts.append("<details><summary>Configuration</summary><pre>"
                 + e(json.dumps(results.meta.get("config", {}), indent=1, default=repr)) + "</pre></details>")
    if views:
        parts.append("<h2>Attention</h2><div class='views'>" + "\n".join(views) + "</div>")
    return parts


def _frame(rows: list[dict[str, Any]]) -> Any:
    import pandas as pd

    return pd.DataFrame(rows)
