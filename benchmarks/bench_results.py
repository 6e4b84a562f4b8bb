"""Benchmark: reading a study's results at size: ``Results.summary()``, ``Results.verdicts()`` and the
HTML report (:func:`interp.report.write_report`) on a 3,277-row table shaped like a MiniLM study's.

The table is synthetic but has the shape and columns of a real sweep's (``interp demo minilm`` at its
defaults): a tempered posterior calibrated to three target loss increases (2 chains × 3 draws each,
calibration and chain records in the metadata) and Gaussian weight noise at three σ (3 draws each),
a baseline row per degradation, and 113 metrics per draw from five analyses: two causal-scrubbing
hypotheses (effects ``recovered``/``kl_recovered`` with their intervals and flags), a head ablation
(effect ``loss_carried``, collateral ``kl_unclaimed``), a linear probe (bounded effects ``acc_mean``
with its ``chance``, per-layer accuracies and selectivities: percentile-bootstrap intervals) and
residual norms (per-layer ``other`` metrics). (2 × 3 × 2 × 3 + 3 × 3 + 2) draws × 113 metrics = 3,277 rows. Values
are drawn from a fixed seed, and decay with the level so that effects dissolve inside the grid.

Run::

    python benchmarks/bench_results.py [--scale 1] [--skip-report | --report-only]

prints the rows and the wall seconds of each call (one thread; run it alone on the machine: it times).
``--scale k`` multiplies the number of probe and norm layers (a wider table).
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: (analysis, metric, kind, value at w0, decay per unit ΔL) of the scrubbing hypotheses
_SCRUB = ["cancelled", "delta_loss_abs", "delta_loss_mean", "flag_cancellation", "flag_ratio_unreliable",
          "flag_small_class", "frac_better", "gap", "gap_ci_high", "gap_ci_low", "kl", "kl_ci_high", "kl_ci_low",
          "kl_recovered", "kl_recovered_ci_high", "kl_recovered_ci_low", "kl_recovered_resample_all",
          "kl_recovered_treeified", "kl_resample_all", "kl_treeified", "kl_unclaimed", "loss_clean",
          "loss_resample_all", "loss_scrubbed", "loss_scrubbed_ci_high", "loss_scrubbed_ci_low", "loss_treeified",
          "recovered", "recovered_ci_high", "recovered_ci_low", "recovered_resample_all", "recovered_seed_sd",
          "recovered_treeified", "sequences", "sequences_needed", "small_class_fraction"]


def metric_specs(scale: int = 1) -> list[tuple[str, str, str, float]]:
    """``(analysis, metric, kind, value at w0)`` of every metric a draw reports (113 at ``scale=1``)."""
    specs: list[tuple[str, str, str, float]] = []
    for name, base in (("scrub_correct", 0.96), ("scrub_wrong_heads", 0.3)):
        for m in _SCRUB:
            kind = "effect" if m in ("recovered", "kl_recovered") else "other"
            specs.append((name, m, kind, base if kind == "effect" else 1.0 + len(m) / 10))
    specs += [("prev_token_head", "loss_carried", "effect", 1.2),
              ("prev_token_head", "kl_unclaimed", "collateral", 0.05),
              ("prev_token_head", "kl_claimed", "other", 0.9),
              ("prev_token_head", "loss_ablated", "other", 2.4),
              ("prev_token_head", "loss_clean", "other", 0.4)]
    layers = range(2, 2 + 5 * scale)
    specs += [("probe", "acc_mean", "effect", 0.94), ("probe", "chance", "other", 0.5)]
    specs += [("probe", f"acc_L{i}", "other", 0.9) for i in layers]
    specs += [("probe", f"selectivity_L{i}", "other", 0.4) for i in layers]
    for i in range(7 * scale):
        specs += [("norms", f"{s}_L{i}", "other", 10.0 + i) for s in ("mean", "median", "msq")]
    specs += [("norms", m, "other", 1.0) for m in ("growth", "growth_r2", "n_tokens")]
    return specs


def make_results(scale: int = 1, *, posterior_levels: tuple[float, ...] = (0.01, 0.03, 0.1),
                 noise_levels: tuple[float, ...] = (0.05, 0.1, 0.2), chains: int = 2, draws: int = 3,
                 noise_draws: int = 3, seed: int = 0) -> Any:
    """A :class:`~interp.results.Results` shaped like a MiniLM study's (see the module docstring), built
    through :meth:`Results.concat` of two :meth:`Results.from_records`, as a sweep's stores are read."""
    from interp.results import Results

    rng = np.random.default_rng(seed)
    specs = metric_specs(scale)
    parts = []
    for deg, levels, n_chains, n_draws in (("TemperedPosterior", posterior_levels, chains, draws),
                                           ("WeightNoise", noise_levels, 1, noise_draws)):
        posterior = deg == "TemperedPosterior"
        records, infos, base_loss = [], {}, 0.2
        grid = [(-1, None, -1, -1)] + [(li, lv, c, d) for li, lv in enumerate(levels)
                                       for c in range(n_chains) for d in range(n_draws)]
        for li, level, chain, draw in grid:
            baseline = li < 0
            dl = 0.0 if baseline else float(abs(rng.normal(level * (1 if posterior else 3), level / 5)))
            loss = base_loss + dl
            rows = []
            for analysis, metric, kind, b in specs:
                decay = np.exp(-dl * (8 if kind == "effect" else 1))
                if metric.startswith(("acc", "refit_acc")) or metric in ("recovered", "kl_recovered"):
                    floor = 0.5 if "acc" in metric else 0.0
                    v = float(np.clip(floor + (b - floor) * decay + rng.normal(0, 0.02), 0, 1))
                elif metric.startswith("flag_"):
                    v = float(rng.random() < 0.1)
                else:
                    v = float(b * decay + rng.normal(0, 0.01 * abs(b) + 1e-3))
                rows.append({"degradation": deg, "level": None if baseline else (
                    f"LossIncrease({level})" if posterior else level), "level_index": li, "chain": chain,
                    "draw": draw, "baseline": baseline, "loss": loss, "delta_loss": dl, "divergence": 0.5 * dl,
                    "analysis": analysis, "metric": metric, "kind": kind, "value": v})
            extra = {"nbeta": 2000.0 / (1 + max(li, 0)), "lr": 1e-6, "step": 200 + 25 * draw, "objective": "behaviour",
                     "units": "normalised MSE"} if posterior else {"sigma": level}
            records.append({"key": [li, chain, draw], "rows": rows,
                            "draw": {"chain": chain, "draw": draw, "loss": loss, **extra}})
        for li, level in enumerate(levels):
            if posterior:
                nbeta = 2000.0 / (1 + li)
                rounds = [{"nbeta": nbeta * f, "lr": 1e-6, "loss_increase": level / f, "llc": 80.0, "failed": None}
                          for f in (1.4, 0.8, 1.0)]
                chain_records = [{"chain": c, "nbeta": nbeta, "lr": 1e-6, "localization": 100.0, "burnin": 30,
                                  "init_loss": base_loss, "init_eval_loss": base_loss, "n_params": 3_500_000,
                                  "losses": rng.normal(base_loss + level, 0.01, 45).tolist(),
                                  "eval_losses": rng.normal(base_loss + level, 0.01, 3).tolist(),
                                  "distances": np.abs(rng.normal(1, 0.1, 45)).tolist(),
                                  "grad_noise": 0.1, "failed": False, "reason": None, "objective": "behaviour",
                                  "units": "normalised MSE", "init_loss_se": 0.001} for c in range(n_chains)]
                infos[str(li)] = {"n_draws": n_chains * n_draws, "chains": chain_records, "calibration": {
                    "target": level, "nbeta": nbeta, "lr": 1e-6, "rounds": rounds, "converged": True,
                    "objective": "behaviour", "units": "normalised MSE", "measured": level,
                    "measured_se": level / 10, "acceptance": 0.5, "failed": None}}
            else:
                infos[str(li)] = {"n_draws": n_draws}
        config = {"task": "subject_number", "degradation": {"type": deg}, "levels": [
            {"type": "LossIncrease", "nats": lv} if posterior else lv for lv in levels]}
        meta = {"config": config, "versions": {"interp": "0.1.0"}, "levels": infos,
                "divergence_units": "normalised MSE"}
        parts.append(Results.from_records(records, meta))
    res = Results.concat(parts)
    res.meta["thresholds"] = {"recovered": 0.9}
    return res


def _fresh(res: Any) -> Any:
    """A copy of ``res`` with nothing computed yet."""
    return type(res)(res.table.copy(), res.draws.copy(), copy.deepcopy(res.meta))


def _time(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> None:
    import torch

    from interp.report import write_report

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=1, help="multiply the probe and norm layers")
    parser.add_argument("--skip-report", action="store_true", help="time summary and verdicts only")
    parser.add_argument("--report-only", action="store_true",
                        help="time write_report() alone, as the process's first call (matplotlib's import included)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    build, res = _time(lambda: make_results(args.scale))
    print(f"rows {len(res.table)}  metrics {res.table['metric'].nunique()}  built in {build:.2f} s")
    if args.report_only:
        with tempfile.TemporaryDirectory() as tmp:
            seconds, _ = _time(lambda: write_report(res, Path(tmp) / "report.html"))
        print(f"write_report() {seconds:8.2f} s")
        return
    seconds, s = _time(_fresh(res).summary)
    print(f"summary()      {seconds:8.2f} s  ({len(s)} rows)")
    seconds, lines = _time(_fresh(res).verdicts)  # a fresh copy each time: nothing computed before
    print(f"verdicts()     {seconds:8.2f} s  ({len(lines)} lines)")
    if not args.skip_report:
        with tempfile.TemporaryDirectory() as tmp:
            fresh = _fresh(res)
            seconds, _ = _time(lambda: write_report(fresh, Path(tmp) / "report.html"))
        print(f"write_report() {seconds:8.2f} s")


if __name__ == "__main__":
    main()
