"""Results of a sweep: a long table, its summaries, survival of effects, plots and persistence.

The table has one row per (draw, analysis, metric)::

    degradation  level  level_index  chain  draw  baseline  loss  delta_loss  analysis  metric  kind  value

Baseline rows (the trained weights) have ``baseline=True`` and ``level_index = chain = draw = -1``.
``loss`` is the draw's loss on the sweep's fixed evaluation batch and ``delta_loss`` its increase over
the baseline (ΔL, nats/token); ``divergence`` is the behavioural divergence from the trained weights
on that batch (Bushnaq et al. 2024; units in ``meta["divergence_units"]``), recorded for every
degradation and every model, also one without a loss. Either is the common x-axis of survival, plots
and verdicts (``axis=``): by default ΔL where the sweep measured a loss, else the divergence (MiniLM).
``kind`` is ``effect``, ``collateral`` or ``other``.

Statistics. Draws within a chain are correlated, so uncertainty is computed across *chains*: each
chain's draws are averaged first, then the mean over chains gets a standard error s/√C and a 95%
interval. With a single chain the interval is over draws, and flagged as such (``ci_over``). The
interval (``ci_method``) is Student-t (C − 1 degrees of freedom) for unbounded metrics (losses, KL,
norms), and a percentile bootstrap of the mean (2,000 resamples, fixed seed; Efron & Tibshirani
1993) for *bounded* metrics (:func:`is_bounded`: accuracies, recovered fractions), so their
intervals stay inside the values the metric can take (a t interval over 2 chains of an accuracy
can reach 1.36). With few chains the bootstrap interval is narrower than nominal (over 2 chains it
is the range of the two chain means): read it with ``n_chains``.

Levels. Beside the level as recorded, ``summary()`` gives it as numbers: ``target_delta_loss``
(a :class:`~interp.degradations.LossIncrease` target), ``nbeta`` (the inverse temperature the chains
ran at), ``sigma`` (noise levels) and ``step`` (checkpoints), read from the level records, and a
``status``: ``"failed"`` with its ``reason`` when every chain of the level failed, when its
calibration did not converge, or when its measured ΔL missed the calibration's target by more than
the recorded tolerance. A failed level keeps its rows (NaN statistics when no draw is left) but is
never counted as holding or lost.

Survival. Each effect metric is compared with a threshold θ, either *relative* to its own baseline
value b (``fraction`` f: θ = f·b; for an effect whose baseline is negative the inequalities flip) or
*absolute* (``threshold``: θ given in the metric's own units, larger is stronger). A level *holds*
when the lower 95% bound of the metric is ≥ θ and is *lost* when the upper bound is < θ.
``survival()`` reports, along increasing ΔL (or divergence), the last level that holds and the first
that is lost; in between the data cannot tell. The *clean window* is the set of levels where the effect holds while
every collateral metric of the same analysis is at most ``collateral_fraction`` of its own baseline.

Use the relative criterion to ask "how long does this effect keep half of what it had?", and the
absolute one to compare effects that start at different values: a hypothesis that recovers 24% of the
loss at the trained weights "keeps half" of it as easily as one that recovers 98%, but only the
second ever recovers ≥ 90% (``survival(threshold=0.9)``; its ``held_at_baseline`` says whether the
trained weights themselves meet the criterion).

Example (``study``: a small study's results; a sweep's are ``Results.load("runs/demo")``)::

    >>> s = study.summary()
    >>> row = s[(s["analysis"] == "scrub_correct") & (s["metric"] == "recovered")].iloc[2]
    >>> row["level"], int(row["n_chains"]), bool(row["ci_low"] <= row["mean"] <= row["ci_high"])
    ('LossIncrease(0.1)', 2, True)
    >>> lost = study.survival(fraction=0.5).set_index(["degradation", "analysis", "metric"])["lost_level"]
    >>> lost["TemperedPosterior", "scrub_correct", "recovered"]
    'LossIncrease(0.1)'
    >>> absolute = study.survival(threshold={"recovered": 0.9})
    >>> absolute["held_at_baseline"].tolist()   # the wrong hypothesis never recovers 90%
    [True, False, True, False]
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Hashable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from interp._summary import SummaryColumns, group_positions

if TYPE_CHECKING:  # pragma: no cover
    from interp.crossing import Dissolution

__all__ = ["Results", "is_bounded", "BOUNDED_METRICS", "UNBOUNDED_METRICS"]

KEYS = ["degradation", "level_index", "analysis", "metric"]


class Results:
    """A sweep's long table (``table``), per-draw records (``draws``) and metadata (``meta``)."""

    def __init__(self, table: pd.DataFrame, draws: pd.DataFrame, meta: dict[str, Any]):
        self.table = table
        self.draws = draws
        self.meta = meta

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_records(cls, records: Iterable[dict[str, Any]], meta: dict[str, Any]) -> Results:
        """Build from the per-draw records a sweep stores (``{"key", "rows", "draw"}``)."""
        from interp.sweep.store import COLUMNS, missing_column

        # column lists, not a dict per row: the table is built in about a third of the memory
        columns: dict[str, list[Any]] = {c: [] for c in COLUMNS}
        draws = []
        for rec in records:
            for row in rec["rows"]:
                for c, values in columns.items():
                    v = row[c] if c in row else missing_column(c, rec["key"])  # older records: NaN divergence
                    values.append(sys.intern(v) if isinstance(v, str) else v)
            if tuple(rec["key"]) != (-1, -1, -1):
                li, chain, draw = rec["key"]
                draws.append({"level_index": li, "chain": chain, "draw": draw,
                              **{k: v for k, v in rec["draw"].items() if k not in ("chain", "draw")}})
        order = ["level_index", "chain", "draw"]  # records arrive in the order stored: sort by key
        table = pd.DataFrame(columns).sort_values(order, kind="stable", ignore_index=True)
        table["level"] = table["level"].astype(object)
        draws = pd.DataFrame(draws)
        if len(draws):
            draws = draws.sort_values(order, kind="stable", ignore_index=True)
        return cls(table, draws, meta)

    @classmethod
    def concat(cls, results: Iterable[Results]) -> Results:
        """One ``Results`` from several sweeps (e.g. several degradations on the same model)."""
        results = list(results)
        draws = [r.draws.assign(degradation=r.table["degradation"].iloc[0]) for r in results]
        return cls(
            pd.concat([r.table for r in results], ignore_index=True),
            pd.concat(draws, ignore_index=True),
            # flat: the parts of results that are themselves concatenated, each with its degradation
            {"parts": [part for r in results for part in r.meta.get(
                "parts", [{**r.meta, "degradation_name": r.table["degradation"].iloc[0]}])]},
        )

    # ------------------------------------------------------------------ statistics
    def failed_chains(self) -> pd.DataFrame:
        """The chains a degradation reported as failed (diverged), with the reason it gave.

        Their draws stay in ``table`` as they were recorded (a chain can fail after some of its draws
        were analysed) but :meth:`summary`, :meth:`survival` and :meth:`plot` leave them out and
        count them in ``n_failed_chains``.

        Returns:
            One row per failed chain: ``degradation``, ``level_index``, ``chain``, ``reason``.
        """
        rows = []
        for part in self.meta.get("parts", [self.meta]):
            deg = part.get("degradation_name")
            if deg is None:  # a single sweep's results: one degradation
                names = self.table["degradation"].unique()
                deg = names[0] if len(names) == 1 else None
            for li, info in (part.get("levels") or {}).items():
                for c in info.get("chains") or []:
                    if isinstance(c, dict) and c.get("failed"):
                        rows.append({"degradation": deg, "level_index": int(li), "chain": int(c["chain"]),
                                     "reason": c.get("reason")})
        return pd.DataFrame(rows, columns=["degradation", "level_index", "chain", "reason"])

    def summary(self) -> pd.DataFrame:
        """Per degradation × level × analysis × metric: mean, s.e., 95% CI, ΔL and counts.

        Draws of failed chains (:meth:`failed_chains`) are left out of every statistic and counted in
        ``n_failed_chains``; a level whose chains all failed keeps its rows, with NaN statistics and
        ``status = "failed"`` with the reason. The level is given as recorded (``level``) and as
        numbers (``target_delta_loss``, ``nbeta``, ``sigma``, ``step``; NaN where they do not apply);
        ``divergence`` is the mean behavioural divergence of the draws where the sweep recorded it.
        """
        return self._memoised("summary", self._compute_summary)

    def _compute_summary(self) -> pd.DataFrame:
        t = self.table
        out = []
        base = t[t["baseline"]]
        # one pass over numpy columns per group (positions from groupby): a groupby.apply with a
        # DataFrame per group took minutes on a 3,277-row study's table once the verdicts asked for it
        cols = SummaryColumns(base)
        for (deg, analysis, metric), idx in group_positions(base, ["degradation", "analysis", "metric"]):
            out.append({"degradation": deg, "level_index": -1, "level": "baseline", "analysis": analysis,
                        "metric": metric, "kind": cols.kind[idx[0]], "delta_loss": 0.0,
                        "divergence": cols.divergence_mean(idx), **cols.mean_ci(idx, is_bounded(metric)),
                        "sem": 0.0, "ci_over": "-", "n_failed_chains": 0, "status": "ok", "reason": None})
            out[-1].update(ci_low=out[-1]["mean"], ci_high=out[-1]["mean"], n_chains=0, ci_method="-")
        chain_key = ["degradation", "level_index", "chain"]
        failed = self.failed_chains().drop_duplicates(chain_key)
        draws = t[~t["baseline"]]
        ok = ~pd.MultiIndex.from_frame(draws[chain_key]).isin(pd.MultiIndex.from_frame(failed[chain_key]))
        levels = self.levels()
        cols = SummaryColumns(draws)
        for keys, idx in group_positions(draws, KEYS):
            key = dict(zip(KEYS, keys))
            kept = idx[ok[idx]]
            out.append({**key, "level": cols.level[idx[0]], "kind": cols.kind[idx[0]],
                        "delta_loss": cols.delta_loss_mean(kept), "divergence": cols.divergence_mean(kept),
                        **cols.mean_ci(kept, is_bounded(key["metric"]))})
        # levels without a single row (every chain failed before its first draw): keep them, NaN
        seen = {(r["degradation"], r["level_index"]) for r in out}
        metrics = base[["degradation", "analysis", "metric", "kind"]].drop_duplicates()
        for _, lv in levels.iterrows():
            if (lv["degradation"], lv["level_index"]) in seen:
                continue
            for _, m in metrics[metrics["degradation"] == lv["degradation"]].iterrows():
                out.append({"degradation": lv["degradation"], "level_index": lv["level_index"],
                            "level": lv["level"], "analysis": m["analysis"], "metric": m["metric"],
                            "kind": m["kind"], "delta_loss": float("nan"), "divergence": float("nan"),
                            **cols.mean_ci(np.arange(0), is_bounded(m["metric"]))})
        frame = pd.DataFrame(out)
        defaults = {"status": "ok", "reason": None, "n_failed_chains": 0}
        info = {(r["degradation"], r["level_index"]): r for r in levels.to_dict("records")}
        for col in [*_LEVEL_COLUMNS, "n_failed_chains"]:
            frame[col] = [
                info[(d, li)][col] if li >= 0 and (d, li) in info else defaults.get(col, np.nan)
                for d, li in zip(frame["degradation"], frame["level_index"])
            ] if len(frame) else []
        order = ["degradation", "level_index", "level", "target_delta_loss", "nbeta", "sigma", "step",
                 "analysis", "metric", "kind", "delta_loss", "divergence", "mean", "sem", "ci_low", "ci_high",
                 "ci_method", "n_chains", "n_draws", "ci_over", "n_nonfinite", "n_failed_chains",
                 "status", "reason"]
        return frame.reindex(columns=order).sort_values(
            ["degradation", "analysis", "metric", "level_index"], ignore_index=True
        )

    def levels(self) -> pd.DataFrame:
        """One row per (degradation, level): the level as recorded and as numbers, and its status.

        Columns: ``degradation``, ``level_index``, ``level``, ``level_axis`` and ``level_units``
        (the name and units of the degradation's :class:`~interp.degradations.LevelAxis`, as the
        sweep recorded it), ``level_value`` (a plain-number level: the number on that axis, for any
        degradation; NaN for a :class:`~interp.degradations.LossIncrease` or other level object),
        ``target_delta_loss`` (the target of a
        :class:`~interp.degradations.LossIncrease` level, in ``target_units``: the units of the
        objective the posterior was calibrated on, where its calibration recorded them), ``nbeta``
        (mean inverse temperature of its draws, else the calibrated or requested one), ``sigma`` (a
        noise level), ``step`` (a checkpoint; ``nbeta``, ``sigma`` and ``step`` also hold ``level_value``
        where the axis has that name), ``measured_delta_loss`` and ``measured_divergence``
        (means over the draws of chains that did not fail),
        ``n_failed_chains``, ``status`` (``"ok"`` or ``"failed"``) and ``reason``.
        """
        return self._memoised("levels", self._compute_levels)

    def _compute_levels(self) -> pd.DataFrame:
        from interp._levels import levels_table

        return levels_table(self.table, self.draws, self.meta, self.failed_chains())

    def _memoised(self, name: Hashable, compute: Any) -> Any:
        """A (shallow) copy of ``compute()`` (a frame or a list), computed once per ``name`` for these
        contents of ``table``, ``draws`` and ``meta`` (:func:`_fingerprint`): verdicts and the report
        read the summary dozens of times, and a table changed in place is noticed, never answered
        from a stale copy."""
        key = _fingerprint(self.table, self.draws, self.meta)
        memo = self.__dict__.get("_memo")
        if memo is None or memo[0] != key:
            memo = self.__dict__["_memo"] = (key, {})
        if name not in memo[1]:
            memo[1][name] = compute()
        return memo[1][name].copy()

    def survival(
        self,
        fraction: float | None = None,
        collateral_fraction: float = 0.5,
        *,
        threshold: float | Mapping[str, float] | None = None,
        axis: str | None = None,
    ) -> pd.DataFrame:
        """For each effect metric: where it is last held and first lost along ΔL (or the behavioural
        divergence), and the clean window (:func:`interp.verdicts.survival`).

        Give at most one of ``fraction`` and ``threshold``; with neither, ``fraction=0.5``.

        Args:
            fraction: relative criterion: an effect holds while its 95% lower bound is ≥ ``fraction``
                × its baseline (the value at the trained weights), in (0, 1].
            collateral_fraction: the clean window needs every collateral metric of the analysis at
                most this fraction of its baseline (mean over draws).
            threshold: absolute criterion θ in the metric's units: an effect holds while its 95% lower
                bound is ≥ θ and is lost once its upper bound is < θ (e.g. ``0.9`` for "recovers at
                least 90% of the loss"). A number applies to every effect metric; a mapping
                ``metric -> θ`` reports only the effects it names.
            axis: order the levels along ``"delta_loss"`` (the measured ΔL) or ``"divergence"`` (the
                behavioural divergence from w0); ``None``: ΔL where the sweep measured a loss, else the
                divergence (a model without a loss, e.g. MiniLM).

        Returns:
            One row per (degradation, analysis, effect metric): ``baseline``, ``criterion``
            (``"fraction"`` or ``"threshold"``), ``threshold`` (θ), ``held_at_baseline`` (whether the
            trained weights meet it; always true for a relative criterion), ``axis`` (the one the
            levels were ordered along), the last held and first lost ``level``, ``delta_loss`` and
            ``divergence`` (``None``/NaN when there is none; both, whatever the axis),
            ``clean_window_delta_loss``/``clean_window_divergence`` (the range of the clean levels),
            ``undecided_levels`` (the interval straddles θ) and ``failed_levels``
            (``"level: reason"``; never counted as held or lost).
        """
        from interp.verdicts import survival

        return survival(self, fraction, collateral_fraction, threshold=threshold, axis=axis)

    def dissolution(self, analysis: str, metric: str, *, threshold: float | None = None,
                    relative: float | None = None, degradation: str | None = None,
                    axis: str | None = None) -> Dissolution:
        """Where ``metric`` of ``analysis`` is lost along this sweep's grid, interpolated between grid
        levels on the measured ΔL or the behavioural divergence (``interpolated=True``); the adaptive
        search that evaluates levels of its own is :func:`interp.dissolution`.

        Args:
            analysis: the analysis's name.
            metric: the effect, one of the analysis's metrics (larger is stronger).
            threshold: absolute criterion θ (e.g. 0.9); or ``relative``: a fraction of the metric at
                the trained weights. Give exactly one.
            degradation: which degradation, when these results hold several.
            axis: ``"delta_loss"``, ``"divergence"``, or ``None``: ΔL where the sweep measured a loss,
                else the divergence (a model without a loss, e.g. MiniLM).

        Returns:
            :class:`~interp.crossing.Dissolution` (its ``axis`` says which; the crossing is given in
            ΔL and in divergence either way).
        """
        from interp.crossing import read_dissolution

        return read_dissolution(self, analysis, metric, threshold=threshold, relative=relative,
                            degradation=degradation, axis=axis)

    def clean_window(self, *, collateral: str | None = None) -> pd.DataFrame:
        """Per analysis and level: effect, collateral and their ratio with bootstrap intervals over
        chains, the ratio at w0, and whether the level is significantly better or worse than w0
        (:func:`interp.verdicts.clean_window`)."""
        from interp.verdicts import clean_window

        return clean_window(self, collateral=collateral)

    # ------------------------------------------------------------------ plots
    def plot(
        self,
        metrics: Iterable[str] | None = None,
        kinds: Iterable[str] | None = None,
        ax_width: float = 4.0,
        *,
        axis: str | None = None,
    ):
        """Each metric against the measured loss increase ΔL (or the behavioural divergence from w0):
        mean over chains with its 95% band.

        Args:
            metrics: metric names to plot (default: all).
            kinds: only metrics of these kinds (``"effect"``, ``"collateral"``, ``"other"``).
            ax_width: width of one panel in inches.
            axis: the x-axis, ``"delta_loss"`` or ``"divergence"``; ``None``: ΔL where the sweep
                measured a loss, else the divergence (a model without a loss, e.g. MiniLM).

        Needs matplotlib (``pip install 'interp[plot]'``). Returns the figure.
        """
        from interp._figures import metrics_figure

        return metrics_figure(self, metrics, kinds, ax_width, axis)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write ``table.parquet``, ``draws.parquet`` and ``meta.json`` into directory ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        table = self.table.assign(level=self.table["level"].map(json.dumps))
        table.to_parquet(path / "table.parquet", index=False)
        self.draws.to_parquet(path / "draws.parquet", index=False)
        (path / "meta.json").write_text(json.dumps(self.meta, indent=1, default=repr))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Results:
        """Read results written by :meth:`save`, or rebuild them from a sweep's ``out`` directory."""
        path = Path(path)
        from interp.sweep.store import ADDED_COLUMNS, StoreCorrupt, read_json, read_records

        if (path / "table.parquet").exists():
            missing = [f for f in ("draws.parquet", "meta.json") if not (path / f).exists()]
            if missing:
                raise StoreCorrupt(f"{path} has table.parquet but not {' or '.join(missing)}: the results were not "
                                   "saved completely. Save them again (Results.save, or rerun the same command: "
                                   "a finished sweep resumes at once and saves them).")
            try:
                table = pd.read_parquet(path / "table.parquet")
                draws = pd.read_parquet(path / "draws.parquet")
            except Exception as err:  # noqa: BLE001 - pyarrow's many errors mean one thing here
                raise StoreCorrupt(f"{path}: the saved parquet tables cannot be read ({type(err).__name__}: "
                                   f"{err}); save the results again.") from err
            table["level"] = table["level"].map(json.loads).astype(object)
            # saved before these columns existed: their default
            table = table.assign(**{c: v for c, v in ADDED_COLUMNS.items() if c not in table.columns})
            meta = read_json(path / "meta.json", fix="save the results again (Results.save).")
            return cls(table, draws, meta)
        if (path / "rows.jsonl").exists():
            config = read_json(path / "config.json", fix="without it the rows cannot be checked: rerun the sweep "
                                                         "into a new out directory.")
            if not isinstance(config, dict):
                raise StoreCorrupt(f"{path / 'config.json'} is corrupt (a JSON {type(config).__name__}, not a "
                                   "configuration): rerun the sweep into a new out directory.")
            meta: dict[str, Any] = {"config": config}
            if (path / "levels.json").exists():  # calibration and chain diagnostics, failures
                meta["levels"] = read_json(path / "levels.json", fix="delete levels.json and rerun the same sweep: "
                                                                     "only draws missing from rows.jsonl are analysed.")
            levels = config.get("levels")
            return cls.from_records(read_records(path / "rows.jsonl",
                                                 n_levels=len(levels) if isinstance(levels, list) else None), meta)
        raise FileNotFoundError(f"{path} holds neither saved results (table.parquet) nor a sweep (rows.jsonl).")

    # ------------------------------------------------------------------ display
    def __repr__(self) -> str:
        t = self.table
        return (f"Results({len(t)} rows: degradations {sorted(t['degradation'].unique())}, "
                f"{t['level_index'].nunique() - 1} levels, analyses {sorted(t['analysis'].unique())})")

    def verdicts(self, thresholds: Mapping[str, float] | None = None, *, relative: float = 0.5,
                 names: Mapping[str, str] | None = None, axis: str | None = None,
                 noise: Results | None = None) -> list[str]:
        """One line per analysis: where its main effect dissolves under each degradation, along ``axis``
        (:func:`interp.verdicts.verdict_lines`); ``thresholds`` default to ``meta["thresholds"]`` (a
        name that is not an effect metric is a ValueError). When these results hold a tempered posterior
        and weight noise, or ``noise`` gives the weight-noise sweep's results, each line also says
        whether the effect *outlasts the weight-noise baseline at equal ΔL* (its interval of dissolution
        wholly above the noise's), does not, or is undecided."""
        from interp.verdicts import verdict_lines

        if noise is not None:
            if not isinstance(noise, Results):
                raise ValueError(f"verdicts(noise={type(noise).__name__}): give the weight-noise sweep's Results "
                                 "(e.g. Results.load('runs/noise')), or None.")
            from interp.degradations import equal_loss_role, registered_degradations

            held = noise.table["degradation"].unique()
            if not any(equal_loss_role(d) == "baseline" for d in held):
                named = [n for n, c in registered_degradations().items() if getattr(c, "equal_loss_role", None) == "baseline"]
                raise ValueError(f"verdicts(noise=...): those results hold {sorted(map(str, held))}, not {' or '.join(named)} "
                                 "(the baseline at equal ΔL); give the weight-noise sweep's results.")
        res = self if noise is None else Results.concat([self, noise])
        return verdict_lines(res, thresholds or self.meta.get("thresholds"), relative=relative, names=names,
                             axis=axis)

    def _repr_html_(self) -> str:
        import html

        s = self.summary()
        lines = "".join(f"<li>{html.escape(v)}</li>" for v in self.verdicts())
        failed = self.levels().query("status == 'failed'")
        lines += "".join(f"<li style='color:#a33'>{html.escape(str(r.degradation))} level {html.escape(str(r.level))}: "
                         f"failed ({html.escape(str(r.reason))})</li>" for r in failed.itertuples())
        main = s[s["kind"].isin(["effect", "collateral"])][
            ["degradation", "level", "target_delta_loss", "nbeta", "sigma", "analysis", "metric", "delta_loss",
             "divergence", "mean", "ci_low", "ci_high", "n_chains", "status"]]
        fmt = {"float_format": "{:.4g}".format, "index": False, "na_rep": "–"}
        return (f"<p>{html.escape(repr(self))}</p><ul>{lines}</ul>" + main.to_html(**fmt)
                + "<details><summary>every metric</summary>" + s.to_html(**fmt) + "</details>")


#: metric names whose values lie in a fixed range (:func:`is_bounded`): fractions in [0, 1] and
#: ``selectivity`` (a difference of two accuracies, in [-1, 1]); ``survival``/``match`` as in
#: ``survival_07`` (shares of latents matched at a cosine threshold)
BOUNDED_METRICS = ("accuracy", "acc", "recovered", "fraction", "rate", "probability", "selectivity", "survival",
                   "match")
#: names that end like a bounded metric but are not bounded: a loss recovered
#: (L_ablated − L_replaced) / (L_ablated − L_clean) is below 0 when the replacement is worse than the
#: ablation and above 1 when it beats the clean model
UNBOUNDED_METRICS = ("loss_recovered",)
#: the per-level columns ``summary()`` adds beside the level (``levels()`` gives them per level)
_LEVEL_COLUMNS = ["target_delta_loss", "nbeta", "sigma", "step", "status", "reason"]


def is_bounded(metric: str) -> bool:
    """Whether a metric is bounded (its name is, or ends with after ``_``, one of
    :data:`BOUNDED_METRICS`: ``accuracy``, ``probe_accuracy``, ``kl_recovered``, ``survival_07`` (a
    trailing ``_<digits>`` threshold is ignored), or starts with ``acc_``/``accuracy_`` (``acc_L3``:
    a probe's accuracy at one site); never one of
    :data:`UNBOUNDED_METRICS`, e.g. ``refit_loss_recovered``), so its interval is a percentile
    bootstrap that stays within the values observed."""
    name = str(metric).lower()
    if any(name == u or name.endswith("_" + u) for u in UNBOUNDED_METRICS):
        return False
    name = re.sub(r"_\d+$", "", name)
    return any(name == b or name.endswith("_" + b) for b in BOUNDED_METRICS) or name.startswith(("acc_", "accuracy_"))


def _fingerprint(table: pd.DataFrame, draws: pd.DataFrame, meta: Mapping[str, Any]) -> bytes:
    """A digest of the contents of a table, its draws and its metadata, for this process: numeric
    columns by their bytes, other columns by Python's hash of their values (``repr`` for unhashable
    ones, e.g. a level recorded as a dict), the metadata as JSON. About a millisecond for a
    3,000-row table; a changed value changes the digest."""
    digest = hashlib.blake2b(digest_size=16)
    for frame in (table, draws):
        digest.update(repr((list(frame.columns), [str(d) for d in frame.dtypes], frame.shape)).encode())
        for column in [frame.index, *(frame[name] for name in frame.columns)]:
            values = column.to_numpy()
            if values.dtype.kind in "biufcmM":
                digest.update(np.ascontiguousarray(values).tobytes())
                continue
            try:
                digest.update(hash(tuple(values.tolist())).to_bytes(8, "little", signed=True))
            except TypeError:  # unhashable values
                digest.update(repr(values.tolist()).encode())
    digest.update(json.dumps(meta, default=repr).encode())
    return digest.digest()
