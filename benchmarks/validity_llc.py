"""Validity suite, beside each verdict: the weight-restricted λ̂ of the nodes a finding rests on, and
whether a lower λ̂ goes with a later dissolution.

The question (issue 24; the survival heuristic in docs/science.md): a circuit that lowers the loss by
``u`` at complexity cost Δλ is noised away near the temperature T where u/Δλ ≈ T·log(1/T), so at equal
importance a finding whose weights carry a *lower* learning coefficient should survive to a *higher*
temperature. Here every finding of ``benchmarks/validity.py`` passes its criterion at w0 (equal
importance by the analysis's own measure); for each we measure

- the weight-restricted λ̂ of its nodes (``estimate_component_llcs``: only those weights sampled, the
  rest at w0), on the task loss, at one inverse temperature for all;
- its dissolution point (ΔL at which it is lost; +∞ when it holds over the grid, as in
  ``validity.py``'s AUC) under each degradation of the suite;

and report, per degradation, Spearman's rank correlation ρ between λ̂ and the dissolution point over
the distinct findings (n = 11; ties by mid-ranks; the prediction is ρ < 0), and, per case, whether the
finding of the pair with the lower λ̂ is the one that outlasts the other (when the verdict orders
them at all).

The nodes of each finding (by construction of ``interp.organisms.planted``):

================================  ====================================================================
finding                           nodes sampled
================================  ====================================================================
scrub_complete                    MLP1, L1H0, L1H1 (``analyses.llc.node_components`` of the hypothesis)
scrub_no_backup                   MLP1, L1H0
scrub_plus_prev2                  MLP1, L1H0, L1H1, L0H2
frozen_prev, refit_prev           L0H0 (writes PREV)
frozen_prev2, refit_prev2         L0H2 (writes PREV2)
stable_attn_write_L1              layer-1 attention (all of ``blocks.1.attn``)
stable_mlp_write_L0               MLP0 (writes BIG)
fve_used                          MLP1 neurons 0..V−1: their W_in rows, b_in entries and W_out columns
fve_unread                        MLP1 neurons V..2V−1, the same
================================  ====================================================================

Settings, fixed before the first run: nβ = 210 (the posterior(task) grid level that measured
ΔL ≈ 0.6, the middle of the suite's calibrated range), γ = 100 and ε = 3e-5 (the suite's cap: the
curvature rule's step explodes on this saturated compiled model), 4 chains, burn-in 100, 100 draws,
batch 32, seed 0. With ε this small the chains are short of equilibrium, as the suite's own posterior
draws are: λ̂ here is the loss rise B·(E[L] − L(w0)) of the local chain restricted to those weights.

Run: ``OMP_NUM_THREADS=1 python benchmarks/validity_llc.py --runs DIR`` with ``DIR`` the ``--out`` of
a full ``validity.py`` run (its four sweeps are read back, not rerun); without ``--runs`` the suite
runs first (``--quick``: its quick settings, and 40 + 40 SGLD steps for λ̂).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import Any

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import validity  # noqa: E402  (the suite's cases, analyses and decision rules)

#: λ̂ settings (full, quick)
NBETA = 210.0
LOCALIZATION = 100.0
CHAINS = (4, 2)
STEPS = ((100, 100), (40, 40))  # (burn-in, draws)

#: ``(analysis, metric)`` of every distinct finding -> the name of its node set in :func:`node_sets`
FINDINGS = {
    ("scrub_complete", "recovered"): "complete",
    ("scrub_no_backup", "recovered"): "no_backup",
    ("scrub_plus_prev2", "recovered"): "plus_prev2",
    ("frozen_prev", "accuracy"): "L0H0",
    ("refit_prev", "accuracy"): "L0H0",
    ("frozen_prev2", "accuracy"): "L0H2",
    ("refit_prev2", "accuracy"): "L0H2",
    ("write_norms", "stable_attn_write_L1"): "attn1",
    ("write_norms", "stable_mlp_write_L0"): "mlp0",
    ("mlp1_features", "fve_used"): "mlp1_used",
    ("mlp1_features", "fve_unread"): "mlp1_unread",
}


def neuron_mask(model: torch.nn.Module, layer: int, neurons: slice) -> dict[str, torch.Tensor]:
    """0/1 masks selecting the MLP neurons ``neurons`` of ``layer``: their W_in rows, b_in entries and
    W_out columns (the output bias is shared by every neuron and left out)."""
    state = model.state_dict()
    w_in, b_in = state[f"blocks.{layer}.mlp.in.weight"], state[f"blocks.{layer}.mlp.in.bias"]
    w_out = state[f"blocks.{layer}.mlp.out.weight"]
    masks = {k: torch.zeros_like(v) for k, v in ((f"blocks.{layer}.mlp.in.weight", w_in),
                                                 (f"blocks.{layer}.mlp.in.bias", b_in),
                                                 (f"blocks.{layer}.mlp.out.weight", w_out))}
    masks[f"blocks.{layer}.mlp.in.weight"][neurons] = 1.0
    masks[f"blocks.{layer}.mlp.in.bias"][neurons] = 1.0
    masks[f"blocks.{layer}.mlp.out.weight"][:, neurons] = 1.0
    return masks


def node_sets(model: torch.nn.Module) -> dict[str, Any]:
    """``{name: restrict}`` of every node set in :data:`FINDINGS` on the planted organism."""
    from analyses.llc import node_components
    from interp.degradations import head_pattern
    from interp.organisms import planted

    v = planted.N_TOKENS + 1
    hyps = validity.hypotheses()
    out: dict[str, Any] = {k: list(node_components(hyps[k]).values()) for k in ("complete", "no_backup",
                                                                                 "plus_prev2")}
    out["L0H0"] = head_pattern(*planted.PREV_TOKEN_HEAD)
    out["L0H2"] = head_pattern(*planted.PREV2_HEAD)
    out["attn1"] = "blocks.1.attn.*"
    out["mlp0"] = "blocks.0.mlp.*"
    out["mlp1_used"] = neuron_mask(model, 1, slice(0, v))
    out["mlp1_unread"] = neuron_mask(model, 1, slice(v, 2 * v))
    return out


def measure_llcs(model: torch.nn.Module, task: Any, quick: bool) -> pd.DataFrame:
    """λ̂ with its 95% interval and weight count per node set."""
    from interp.degradations import estimate_component_llcs

    i = 1 if quick else 0
    burnin, draws = STEPS[i]
    est = estimate_component_llcs(model, task, components=node_sets(model), nbeta=NBETA,
                                  localization=LOCALIZATION, lr=validity.LR_MAX, chains=CHAINS[i], n_draws=draws,
                                  burnin=burnin, seed=0, progress=False)
    frame = est.to_frame()[["component", "n_weights", "llc", "lo", "hi", "failed_chains"]]
    return frame.set_index("component")


def spearman(x: list[float], y: list[float]) -> tuple[float, float, int]:
    """Spearman's ρ (mid-ranks for ties; +∞ ranks last), its two-sided p-value (t approximation,
    scipy) and n, over the pairs where both values are not NaN."""
    from scipy import stats

    pairs = [(a, b) for a, b in zip(x, y) if not (math.isnan(a) or math.isnan(b))]
    if len(pairs) < 3:
        return math.nan, math.nan, len(pairs)
    a, b = (np.array(v, dtype=float) for v in zip(*pairs))
    res = stats.spearmanr(a, b)
    return float(res.statistic), float(res.pvalue), len(pairs)


def relate(llc: pd.DataFrame, sweeps: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per finding and degradation: λ̂ and dissolution point; per degradation: ρ and the pair count."""
    rows, stats_rows = [], []
    for label, res in sweeps.items():
        pts = {}
        for (analysis, metric), nodes in FINDINGS.items():
            case = next(c for c in validity.CASES if (analysis, metric) in (c.real, c.spurious))
            d = res.dissolution(analysis, metric, threshold=case.threshold)
            pts[(analysis, metric)] = d
            finding = metric if analysis in ("write_norms", "mlp1_features") else analysis
            rows.append({"degradation": label, "finding": finding, "nodes": nodes, "llc": float(llc.loc[nodes, "llc"]),
                         "llc_lo": float(llc.loc[nodes, "lo"]), "llc_hi": float(llc.loc[nodes, "hi"]),
                         "dissolution": validity._interval(d), "point": validity._point(d)})
        sel = [r for r in rows if r["degradation"] == label]
        rho, p, n = spearman([r["llc"] for r in sel], [r["point"] for r in sel])
        agree = disagree = unordered = 0
        for case in validity.CASES:
            verdict = validity.decide(pts[case.real], pts[case.spurious])
            lr, ls = (float(llc.loc[FINDINGS[f], "llc"]) for f in (case.real, case.spurious))
            if verdict not in ("separates", "inverted") or lr == ls:
                unordered += 1
                continue
            real_outlasts = verdict == "separates"
            agree += int(real_outlasts == (lr < ls))
            disagree += int(real_outlasts != (lr < ls))
        stats_rows.append({"degradation": label, "spearman_rho": rho, "p": p, "n": n,
                           "pairs_lower_llc_outlasts": agree, "pairs_higher_llc_outlasts": disagree,
                           "pairs_unordered": unordered})
    return pd.DataFrame(rows), pd.DataFrame(stats_rows)


def load_sweeps(runs: str) -> dict[str, Any]:
    """The four sweeps a ``validity.py --out DIR`` run kept, by degradation label."""
    from interp.results import Results

    out = {}
    for label in validity.LEVELS:
        sub = os.path.join(runs, label.replace(" ", "_").replace("(", "_").strip(")"))
        if not os.path.isdir(sub):
            raise SystemExit(f"--runs {runs}: no sweep {sub!r} for {label!r}; give the --out DIR of a full "
                             "benchmarks/validity.py run, or leave --runs out to run the suite.")
        out[label] = Results.load(sub)
    return out


def main(argv: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=None, help="the --out DIR of a full validity.py run (read back)")
    parser.add_argument("--quick", action="store_true", help="the suite's quick settings, short λ̂ chains")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    model, task = validity.load_organism(args.quick)
    if args.runs:
        sweeps = load_sweeps(args.runs)
        print(f"dissolution points from the sweeps in {args.runs}")
    else:
        import tempfile

        runs = tempfile.mkdtemp(prefix="validity_")
        validity.evaluate(model, task, args.quick, runs, log=lambda s: print(s, flush=True))
        sweeps = load_sweeps(runs)
        print(f"suite run in {time.perf_counter() - t0:.0f} s (sweeps kept in {runs})")
    t1 = time.perf_counter()
    llc = measure_llcs(model, task, args.quick)
    print(f"\nnode λ̂ at nβ = {NBETA}, γ = {LOCALIZATION}, ε = {validity.LR_MAX} "
          f"({time.perf_counter() - t1:.0f} s):")
    print(llc.round(3).to_string())
    table, stats = relate(llc, sweeps)
    print("\nPer finding: node λ̂ and dissolution point (ΔL; inf = holds over the grid):")
    print(table.round(3).to_string(index=False))
    print("\nPer degradation: Spearman ρ(λ̂, dissolution point) over the findings (prediction: ρ < 0), and per "
          "case whether the lower-λ̂ finding of the pair outlasts the other:")
    print(stats.round(3).to_string(index=False))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s wall")
    sys.stdout.flush()
    return table, stats


if __name__ == "__main__":
    main()
