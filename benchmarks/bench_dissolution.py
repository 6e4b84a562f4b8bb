"""Dissolution point of the induction hypotheses (``interp.dissolution``): wall time and the numbers.

On the bundled induction organism: causal scrubbing of the correct hypothesis and of the wrong-heads
one (``analyses.scrubbing.induction.hypotheses()``), effect ``recovered``, absolute criterion
recovered ≥ 0.9 (a level holds when the 95% bootstrap interval over chains lies above 0.9, is lost
when it lies below). Searched under the tempered posterior (LossIncrease levels, calibrated) and under
relative Gaussian weight noise (σ), then compared at equal measured ΔL with
``compare_dissolutions``. Prints every evaluated level, the verdict lines and the wall time of each
search (one thread; the 2-core budget of the issue is "≤ 10 minutes").

Clean window (``--clean-window``): a sweep of the correct hypothesis and of the previous-token-head
ablation over the tempered posterior (LossIncrease 0.1, 0.3, 0.6, 1.0), and the effect/collateral
ratio per level with bootstrap intervals over chains against the ratio at w0
(``Results.clean_window``). The induction task marks no trained predictions outside the claim, so
the analyses declare no collateral; the ratio is printed with the KL on the unscored (untrained)
positions as the denominator, for the record. The clean window on a collateral that is a trained
behaviour (the ``induction_full`` organism): ``benchmarks/clean_window.py``.

Run: ``python benchmarks/bench_dissolution.py [--chains 8] [--tolerance 0.15] [--out DIR] [--clean-window]``
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=8)
    parser.add_argument("--tolerance", type=float, default=0.15)
    parser.add_argument("--out", default=None)
    parser.add_argument("--skip-noise", action="store_true")
    parser.add_argument("--clean-window", action="store_true", help="only the clean-window sweep")
    args = parser.parse_args()
    if args.clean_window:
        return clean_window(args.chains)
    torch.set_num_threads(1)
    pd.set_option("display.width", 200)
    import interp
    from analyses.scrubbing import CausalScrubbing
    from analyses.scrubbing.induction import hypotheses
    from interp.degradations import CalibrationConfig

    model, task = interp.organisms.load("induction")
    hyps = hypotheses()
    cols = ["x", "target_delta_loss", "nbeta", "sigma", "delta_loss", "mean", "ci_low", "ci_high", "decision",
            "status"]
    sampler = interp.TemperedPosterior(chains=args.chains, n_draws=1, burnin=100, seed=0, progress=False,
                                       calibration=CalibrationConfig(tolerance=0.2, max_rounds=4))
    noise = interp.WeightNoise(relative=True, draws_per_level=args.chains, seed=0)
    found = {}
    runs = [("correct", sampler, dict(start=0.3, limits=(0.01, 3.0))),
            ("wrong_heads", sampler, dict(start=0.3, limits=(0.01, 3.0)))]
    if not args.skip_noise:
        runs.append(("correct", noise, dict(start=0.05, limits=(1e-3, 1.0))))
    for name, deg, kw in runs:
        scrub = CausalScrubbing(hyps[name], eval_rows=64, seeds=1, name=f"scrub_{name}")
        out = None if args.out is None else f"{args.out}/{name}_{type(deg).__name__}"
        t = time.perf_counter()
        d = interp.dissolution(model, task, scrub, deg, metric="recovered", threshold=0.9,
                               tolerance=args.tolerance, out=out, **kw)
        wall = time.perf_counter() - t
        found[(name, type(deg).__name__)] = d
        print(f"\n== {name} under {type(deg).__name__}: {len(d.points) - 1} levels, {wall:.1f} s wall")
        print(d.points[cols].round(4).to_string(index=False))
        print(d.verdict(f"{name} induction hypothesis"))
        print(f"   level ({d.axis}) {d.level:.4g} {tuple(round(v, 4) for v in d.level_ci)}, "
              f"ΔL {d.delta_loss:.4g} {tuple(round(v, 4) for v in d.delta_loss_ci)}, "
              f"nβ {d.nbeta:.4g} {tuple(round(v, 1) for v in d.nbeta_ci)}, converged={d.converged}")
    if ("correct", "WeightNoise") in found:
        cmp = interp.compare_dissolutions(found["correct", "TemperedPosterior"], found["correct", "WeightNoise"],
                                          names=("tempered posterior", "weight noise"))
        print("\n" + cmp.statement)


def clean_window(chains: int) -> None:
    torch.set_num_threads(1)
    pd.set_option("display.width", 220)
    import interp
    from analyses.ablation import HeadAblation
    from analyses.scrubbing import CausalScrubbing
    from analyses.scrubbing.induction import hypotheses
    from interp.degradations import CalibrationConfig
    from interp.organisms import induction
    from interp.verdicts import clean_window_findings

    model, task = interp.organisms.load("induction")
    analyses = [CausalScrubbing(hypotheses()["correct"], eval_rows=64, seeds=1, name="scrub_correct"),
                HeadAblation([induction.PREV_TOKEN_HEAD], name="prev_token_head")]
    sampler = interp.TemperedPosterior(chains=chains, n_draws=1, burnin=100, seed=0, progress=False,
                                       calibration=CalibrationConfig(tolerance=0.2, max_rounds=4))
    t = time.perf_counter()
    res = interp.run_sweep(model, task, analyses, sampler, [interp.LossIncrease(x) for x in (0.1, 0.3, 0.6, 1.0)],
                           progress=False)
    print(f"sweep: {time.perf_counter() - t:.1f} s wall")
    for line in clean_window_findings(res):
        print(line)
    cw = res.clean_window(collateral="kl_unclaimed")
    cols = ["analysis", "effect", "delta_loss", "effect_mean", "effect_ci_low", "effect_ci_high", "collateral_mean",
            "collateral_ci_low", "collateral_ci_high", "ratio", "ratio_ci_low", "ratio_ci_high", "baseline_ratio",
            "better_than_w0", "worse_than_w0"]
    print("with the unscored-position KL (untrained predictions) as denominator:")
    print(cw[cols].round(4).to_string(index=False))
    for line in clean_window_findings(res, cw):
        print(line)


if __name__ == "__main__":
    main()
