"""Validity suite: does degradation tell a real finding from a spurious one that passes at w0?

The measurement, written down before it was run (the suite, the thresholds and the decision rules
below are fixed; the organism is not tuned to the result).

Organism: ``interp.organisms.planted`` (hand-compiled; its docstring gives every weight and the
ground truth). Every finding below passes at the trained weights w0 by the same criterion as its
twin, and the ground truth of each (the output depends on the real one, on nothing the spurious one
adds) holds by construction and is checked in ``tests/test_validity.py``.

Cases (``CASES``; analysis, real finding vs spurious finding, criterion θ):

================  ============  ================================  ==================================  ==============
case              analysis      real                              spurious                            criterion
================  ============  ================================  ==================================  ==============
scrub_backup      scrubbing     out ← MLP1 ← {L1H0, L1H1}          out ← MLP1 ← L1H0 (backup dropped)  recovered ≥ 0.9
scrub_extra       scrubbing     out ← MLP1 ← {L1H0, L1H1}          the same plus L0H2 (read by none)   recovered ≥ 0.9
probe_frozen      probing       token t−1 (PREV, read by L1 keys)  token t−2 (PREV2, read by none)     accuracy ≥ 0.9
probe_refit       probing       the same, refitted on each draw   the same, refitted on each draw     accuracy ≥ 0.9
norm_write        norms         layer-1 attention write norm       MLP0's constant write norm          within 2× of w0
transcoder_group  transcoders   MLP1 features MID → OUT            MLP1 features CUR → UNREAD          FVE ≥ 0.9
================  ============  ================================  ==================================  ==============

- Scrubbing: ``analyses.scrubbing.CausalScrubbing`` (``recovered`` against the treeified baseline).
- Probing: ``analyses.probing.FrozenProbe`` (fitted at w0) / ``RefitProbe`` (refitted per draw), 4
  classes (token id mod 4), read at ``resid_pre(1)``, every position from 2 on.
- Norms: ``analyses.norms.ResidualNorms``' ``attn_write_L1`` and ``mlp_write_L0`` (both 1.0 at w0),
  as the stability score ``1 − |log2(norm / norm at w0)|`` (≥ 0: within a factor 2 of w0).
- Transcoders: the dictionary is MLP1's own neurons at w0 (an exact transcoder: ReLU features,
  encoder = W_in rows, decoder = W_out columns), applied unchanged at each draw (cross-application,
  as ``analyses.transcoders.SparseMLP`` does); per group, the fraction of the variance of the
  degraded MLP's output in the group's output block (OUT or UNREAD) that the group's w0 features
  explain (FVE).

Degradations (``DEGRADATIONS``), each one grid sweep of all analyses; every level's ΔL is the task's
loss increase measured on the same evaluation batch:

- ``posterior(task)``: ``TemperedPosterior`` on the task loss at ``LossIncrease`` levels;
- ``posterior(behavioural)``: the same sampled on ``Behavioural(task, kind="kl")`` (the organism is
  compiled, not trained: the behavioural objective stands for the training objective);
- ``weight noise``: ``WeightNoise(relative=False)`` at σ levels (absolute: the compiled tensors are
  mostly zeros, so a σ relative to their spread means nothing; 0.1 is the per-weight spread γ^−½ that
  the posterior's localization allows in flat directions);
- ``activation noise``: ``ActivationNoise(relative=True)`` on every attention and MLP write at σ levels.
- Checkpoints: none exist for a compiled organism (reported as n/a).

Decision rules (fixed). Per finding and degradation, ``Results.dissolution`` on the grid along ΔL
(held: the 95% interval over chains/draws is above θ; lost: below) gives the dissolution interval
[last held ΔL, first lost ΔL]. Per case and degradation, by ``interp.compare_dissolutions``:
``separates`` when the real finding's interval lies wholly above the spurious one's; ``inverted``
when the spurious one's lies wholly above the real one's; ``undecided`` when either finding's outcome
is undecided or both hold over the whole grid; ``does not`` otherwise (overlapping intervals). Rates:
the fraction of cases that separate, per degradation. AUC over the suite, per degradation: the
Mann–Whitney probability that a real finding's dissolution point (ΔL, interpolated; +∞ when it
holds throughout) exceeds a spurious one's, ties ½. The w0-only baseline: every finding passes at
w0, so its verdict is the same for all and its AUC 0.5 by construction; the table also shows
whether the w0 *score* ranks the real finding higher (a margin the criterion does not use). The
effect/collateral ratio (scrubbing: ``recovered / kl_unclaimed``, KL on the unscored positions) is
reported at the last grid level where the finding held, relative to w0.

Run: ``OMP_NUM_THREADS=1 python benchmarks/validity.py [--quick] [--out DIR]`` (full: ≤ 30 min on 2
cores; ``--quick``: ≤ 3 min, run by ``tests/test_validity.py``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from interp.models import device_of

#: criterion θ per metric (absolute; the norm score is already relative to w0)
THRESHOLDS = {"recovered": 0.9, "accuracy": 0.9, "stable": 0.0, "fve": 0.9}


@dataclass(frozen=True)
class Case:
    """One planted case: the real and the spurious finding as (analysis name, metric)."""

    name: str
    analysis: str
    real: tuple[str, str]
    spurious: tuple[str, str]
    threshold: float
    planted: str


CASES = (
    Case("scrub_backup", "scrubbing", ("scrub_complete", "recovered"), ("scrub_no_backup", "recovered"),
         THRESHOLDS["recovered"], "L1H1 duplicates L1H0 (½ each); the spurious hypothesis omits it"),
    Case("scrub_extra", "scrubbing", ("scrub_complete", "recovered"), ("scrub_plus_prev2", "recovered"),
         THRESHOLDS["recovered"], "L0H2 writes PREV2, read by nothing; the spurious hypothesis claims it"),
    Case("probe_frozen", "probing", ("frozen_prev", "accuracy"), ("frozen_prev2", "accuracy"),
         THRESHOLDS["accuracy"], "PREV is read by the L1 keys; PREV2 by nothing"),
    Case("probe_refit", "probing", ("refit_prev", "accuracy"), ("refit_prev2", "accuracy"),
         THRESHOLDS["accuracy"], "as probe_frozen, probes refitted on every draw"),
    Case("norm_write", "norms", ("write_norms", "stable_attn_write_L1"), ("write_norms", "stable_mlp_write_L0"),
         THRESHOLDS["stable"], "MID feeds the output; MLP0's constant BIG write is read by nothing"),
    Case("transcoder_group", "transcoders", ("mlp1_features", "fve_used"), ("mlp1_features", "fve_unread"),
         THRESHOLDS["fve"], "MLP1 neurons MID→OUT relay the prediction; CUR→UNREAD is read by nothing"),
)

#: levels per degradation (full, quick); posterior: full LossIncrease targets in the objective's
#: units, quick nβ; weight noise σ absolute, activation noise σ relative
#: (set from pilot ΔL only, before any finding was measured: SGLD at lr ≤ 3e-5 reaches ΔL 0.1-1.5 for
#: nβ 3000-30; absolute weight noise gives ΔL 0.05-0.2 at σ 0.03 and 45 at σ 0.1; activation noise
#: on the writes ΔL 0.9 at σ 1 and 30 at σ 3)
LEVELS = {
    "posterior(task)": ((0.1, 0.3, 0.6, 1.0, 2.0), (1000.0, 100.0)),
    "posterior(behavioural)": ((0.1, 0.3, 0.6, 1.0, 2.0), (1000.0, 100.0)),
    "weight noise": ((0.015, 0.025, 0.035, 0.05, 0.07), (0.025, 0.05)),
    "activation noise": ((0.5, 0.8, 1.2, 1.7, 2.4), (0.8, 1.7)),
}
#: chains (posterior) or draws per level (noise), SGLD burn-in; (full, quick)
SPREAD = (4, 2)
#: SGLD step size cap (see degradations())
LR_MAX = 3e-5
BURNIN = (100, 60)


# ------------------------------------------------------------------------------------ analyses
class WriteNorms:
    """``ResidualNorms``' per-component write norms as a stability score ``1 − |log2(n / n_w0)|``."""

    effects = ("stable_attn_write_L1", "stable_mlp_write_L0")
    collaterals = ()

    def __init__(self, eval_rows: int = 128, name: str = "write_norms"):
        from analyses.norms import ResidualNorms

        self.norms, self.name = ResidualNorms(eval_rows=eval_rows), name

    def setup(self, model: Any, task: Any) -> None:
        self.norms.setup(model, task)
        self.w0_ = {k: self.norms(model, task)[k] for k in ("attn_write_L1", "mlp_write_L0")}

    def __call__(self, model: Any, task: Any) -> dict[str, float]:
        m = self.norms(model, task)
        out = {k: m[k] for k in self.w0_}
        for k, ref in self.w0_.items():
            out[f"stable_{k}"] = 1.0 - abs(math.log2(max(m[k], 1e-12) / ref))
        return out


class FeatureGroups:
    """MLP1's w0 neurons as a frozen transcoder: per group, FVE of the degraded MLP output in the
    group's output block (``fve_used``: MID→OUT neurons; ``fve_unread``: CUR→UNREAD neurons)."""

    effects = ("fve_used", "fve_unread")
    collaterals = ()

    def __init__(self, eval_rows: int = 128, name: str = "mlp1_features"):
        self.eval_rows, self.name = eval_rows, name

    def setup(self, model: Any, task: Any) -> None:
        from interp.organisms import planted

        lay, v = planted.layout(), planted.N_TOKENS + 1
        state = {k: p.detach().float().cpu().clone() for k, p in model.state_dict().items()}
        self.enc_, self.b_enc_ = state["blocks.1.mlp.in.weight"], state["blocks.1.mlp.in.bias"]
        self.dec_ = state["blocks.1.mlp.out.weight"]  # [d_model, d_mlp]
        self.groups_ = {"used": (slice(0, v), lay["OUT"]), "unread": (slice(v, 2 * v), lay["UNREAD"])}
        self.ids_ = task.tensors("test", rows=self.eval_rows)["input_ids"].long()

    @torch.no_grad()
    def __call__(self, model: Any, task: Any) -> dict[str, float]:
        import hooks

        device = device_of(model)
        cap = hooks.capture(model, self.ids_.to(device), ["blocks.1.mlp.hook_in", "blocks.1.hook_mlp_out"])
        x = cap["blocks.1.mlp.hook_in"].reshape(-1, self.enc_.shape[1]).float().cpu()
        y = cap["blocks.1.hook_mlp_out"].reshape(-1, self.dec_.shape[0]).float().cpu()
        z = torch.relu(x @ self.enc_.T + self.b_enc_)
        out = {}
        for g, (neurons, block) in self.groups_.items():
            y_hat = z[:, neurons] @ self.dec_[block, neurons].T
            err = (y[:, block] - y_hat).pow(2).sum()
            var = (y[:, block] - y[:, block].mean(0)).pow(2).sum()
            out[f"fve_{g}"] = float(1 - err / var)
        return out


def hypotheses() -> dict[str, Any]:
    """The three scrubbing hypotheses of the suite (see the module docstring)."""
    from analyses.scrubbing import MLP, Head, Hypothesis

    return {
        "complete": Hypothesis([MLP(1, inputs=[Head(1, 0), Head(1, 1)])], name="complete"),
        "no_backup": Hypothesis([MLP(1, inputs=[Head(1, 0)])], name="no_backup"),
        "plus_prev2": Hypothesis([MLP(1, inputs=[Head(1, 0), Head(1, 1), Head(0, 2)])], name="plus_prev2"),
    }


def build_analyses(quick: bool) -> list[Any]:
    """Every analysis of the suite, fresh (each sweep sets them up at w0)."""
    from analyses.probing import FrozenProbe, RefitProbe
    from analyses.scrubbing import CausalScrubbing
    from interp.organisms import planted

    rows = 32 if quick else 128
    out: list[Any] = [CausalScrubbing(h, name=f"scrub_{k}", eval_rows=rows, seeds=1, bootstrap=200)
                      for k, h in hypotheses().items()]
    for offset, tag in ((1, "prev"), (2, "prev2")):
        probe = dict(label=planted.token_back(offset), layers=(1,), control_type=None, eval_rows=2 * rows)
        out += [FrozenProbe(name=f"frozen_{tag}", **probe), RefitProbe(name=f"refit_{tag}", **probe)]
    return out + [WriteNorms(eval_rows=rows), FeatureGroups(eval_rows=rows)]


def degradations(task: Any, quick: bool) -> dict[str, tuple[Any, list[Any]]]:
    """``name -> (degradation, levels)`` of the suite."""
    import interp
    from interp.degradations import CalibrationConfig
    from interp.objectives import Behavioural

    import hooks

    # noise on the writes (attention and MLP outputs), not on resid_post: the stream stays the sum of
    # its writes, which the norm attribution checks
    writes = [p for layer in range(2) for p in (hooks.attn_out(layer), hooks.mlp_out(layer))]
    i = 1 if quick else 0
    spread, burnin = SPREAD[i], BURNIN[i]
    cal = CalibrationConfig(tolerance=0.25, max_rounds=3 if quick else 5)
    # lr is an upper bound: the automatic ε = 0.2/(B·ĥ + γ) uses the Hessian at w0, which is tiny where
    # the compiled attention is saturated, and chains at that ε explode within a few steps
    post = dict(chains=spread, n_draws=1, burnin=burnin, lr=LR_MAX, seed=0, progress=False, calibration=cal)
    # full: calibrated LossIncrease targets; quick: nβ levels (no calibration rounds)
    level = interp.NBeta if quick else interp.LossIncrease
    return {
        "posterior(task)": (interp.TemperedPosterior(**post), [level(x) for x in LEVELS["posterior(task)"][i]]),
        "posterior(behavioural)": (
            interp.TemperedPosterior(**post, objective=Behavioural(task, kind="kl", rows=128)),
            [level(x) for x in LEVELS["posterior(behavioural)"][i]]),
        "weight noise": (interp.WeightNoise(relative=False, draws_per_level=spread, seed=0),
                         list(LEVELS["weight noise"][i])),
        "activation noise": (interp.ActivationNoise(relative=True, draws_per_level=spread, seed=0, points=writes),
                             list(LEVELS["activation noise"][i])),
    }


# ------------------------------------------------------------------------------------ decisions
def _point(d: Any) -> float:
    """A finding's dissolution point on ΔL for the AUC (+∞ when it holds over the grid)."""
    if d.outcome == "holds_throughout":
        return math.inf
    if d.outcome == "never_holds":
        return 0.0
    return float(d.delta_loss) if math.isfinite(d.delta_loss) else math.nan


def decide(real: Any, spurious: Any) -> str:
    """``separates`` / ``inverted`` / ``does not`` / ``undecided`` (module docstring)."""
    from interp.crossing import compare_dissolutions

    if "undecided" in (real.outcome, spurious.outcome) or real.outcome == spurious.outcome == "holds_throughout":
        return "undecided"
    more = compare_dissolutions(real, spurious).more_robust
    return {"first": "separates", "second": "inverted"}.get(more, "does not")


def auc(real: list[float], spurious: list[float]) -> float:
    """Mann–Whitney P(real > spurious), ties ½, over every (real, spurious) pair with finite or
    infinite points (NaN pairs are skipped)."""
    wins = []
    for r in real:
        for s in spurious:
            if math.isnan(r) or math.isnan(s):
                continue
            wins.append(1.0 if r > s else 0.5 if r == s else 0.0)
    return float(np.mean(wins)) if wins else math.nan


def _interval(d: Any) -> str:
    lo, hi = d.delta_loss_ci
    if d.outcome == "holds_throughout":
        return f"holds >{lo:.2g}"
    if d.outcome == "never_holds":
        return "never holds"
    if d.outcome == "undecided":
        return f"undecided >{lo:.2g}" if math.isfinite(lo) else "undecided"
    if d.outcome == "lost_below_range":
        return f"lost <{hi:.2g}"
    return f"{d.delta_loss:.2g} [{lo:.2g}, {hi:.2g}]"


def _ratio(results: Any, d: Any) -> float:
    """Scrubbing: (recovered / kl_unclaimed) at the last held grid level over the same at w0."""
    s = results.summary()
    sel = s[(s["analysis"] == d.analysis)]
    if d.degradation is not None:
        sel = sel[sel["degradation"] == d.degradation]
    held = d.points[(d.points["decision"] == "held") & (d.points["x"] > 0)]
    if held.empty:
        return math.nan
    x_last = float(held["x"].iloc[-1])

    def ratio_at(base: bool) -> float:
        rows = sel[(sel["level_index"] < 0) if base else np.isclose(sel["delta_loss"].astype(float), x_last)]
        eff = rows.loc[rows["metric"] == "recovered", "mean"]
        col = rows.loc[rows["metric"] == "kl_unclaimed", "mean"]
        if eff.empty or col.empty or not float(col.iloc[0]) > 0:
            return math.nan
        return float(eff.iloc[0]) / float(col.iloc[0])

    return ratio_at(False) / ratio_at(True)


def evaluate(model: Any, task: Any, quick: bool, out: str | None = None, log: Any = print
             ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run the suite: returns (per-case table, per-degradation rates)."""
    import interp

    w0 = {}
    rows, rates = [], []
    for label, (deg, levels) in degradations(task, quick).items():
        t0 = time.perf_counter()
        sub = None if out is None else f"{out}/{label.replace(' ', '_').replace('(', '_').strip(')')}"
        res = interp.run_sweep(model, task, build_analyses(quick), deg, levels, out=sub, progress=False,
                               eval_rows=128)
        log(f"== {label}: sweep {time.perf_counter() - t0:.0f} s; levels ΔL "
            f"{[round(float(x), 3) for x in res.summary().drop_duplicates('level_index')['delta_loss']]}")
        real_pts, spur_pts = [], []
        for case in CASES:
            ds = [res.dissolution(a, m, threshold=case.threshold)
                  for a, m in (case.real, case.spurious)]
            w0[case.name] = (ds[0].baseline, ds[1].baseline)
            verdict = decide(*ds)
            real_pts.append(_point(ds[0])), spur_pts.append(_point(ds[1]))
            ratio = (tuple(_ratio(res, d) for d in ds) if case.analysis == "scrubbing" else (math.nan, math.nan))
            rows.append({"case": case.name, "analysis": case.analysis, "degradation": label,
                         "w0_real": ds[0].baseline, "w0_spurious": ds[1].baseline,
                         "real": _interval(ds[0]), "spurious": _interval(ds[1]), "verdict": verdict,
                         "ratio_real": ratio[0], "ratio_spurious": ratio[1]})
        sel = [r for r in rows if r["degradation"] == label]
        rates.append({"degradation": label, "separates": sum(r["verdict"] == "separates" for r in sel) / len(sel),
                      "inverted": sum(r["verdict"] == "inverted" for r in sel) / len(sel),
                      "undecided": sum(r["verdict"] == "undecided" for r in sel) / len(sel),
                      "auc": auc(real_pts, spur_pts), "wall_s": time.perf_counter() - t0})
    passes = [v[0] >= c.threshold and v[1] >= c.threshold for c, v in ((c, w0[c.name]) for c in CASES)]
    ranked = [v[0] > v[1] for v in w0.values()]
    rates.append({"degradation": "w0 only (criterion)", "separates": 0.0 if all(passes) else math.nan,
                  "inverted": 0.0, "undecided": 1.0, "auc": 0.5, "wall_s": 0.0})
    rates.append({"degradation": "w0 score (margin)", "separates": float(np.mean(ranked)), "inverted": math.nan,
                  "undecided": math.nan,
                  "auc": auc([v[0] for v in w0.values()], [v[1] for v in w0.values()]), "wall_s": 0.0})
    return pd.DataFrame(rows), pd.DataFrame(rates)


def load_organism(quick: bool) -> tuple[Any, Any]:
    """The planted organism and its task at the suite's size (one thread, quiet analyses, wide tables):
    what this script and ``validity_llc.py`` start from."""
    import logging

    from interp.organisms import planted

    torch.set_num_threads(1)
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 20)
    logging.getLogger("analyses").setLevel(logging.ERROR)
    return planted.load(n_train=1024 if quick else 2048, n_test=512 if quick else 1024)


def main(argv: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 levels, 2 chains, nβ levels (≤ 3 min)")
    parser.add_argument("--out", default=None, help="directory to keep the sweeps in")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    model, task = load_organism(args.quick)
    table, rates = evaluate(model, task, args.quick, args.out)
    print("\nPer case (w0 score real / spurious; dissolution point ΔL [interval] per degradation; verdict):")
    print(table.round(3).to_string(index=False))
    print("\nRates per degradation (fraction of the 6 cases) and AUC over the suite:")
    print(rates.round(3).to_string(index=False))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s wall ({'quick' if args.quick else 'full'})")
    sys.stdout.flush()
    return table, rates


if __name__ == "__main__":
    main()
