"""Clean window on the induction_full organism: effect/collateral ratio per level, with intervals.

The claim tested (issue "Clean window, as the claim is actually made"): at some temperature, intervening
on the circuit still changes the behaviour it is claimed for while disturbing the rest of the model
*less* than at the trained weights. On ``induction_full`` (``interp.organisms.induction_full``, trained
on every next token) the rest of the model is a trained behaviour: the first-seen predictions, marked
by the task's ``collateral_mask``, so ``kl_unclaimed`` is a declared collateral of both analyses:

- ``scrub_correct``: causal scrubbing of the correct induction hypothesis
  (``analyses.scrubbing.induction.hypotheses()["correct"]`` with the organism's heads); effects
  ``recovered`` / ``kl_recovered``, collateral ``kl_unclaimed`` (KL on first-seen tokens);
- ``prev_token_head``: mean ablation of the previous-token head; effect ``loss_carried``, collateral
  ``kl_unclaimed``.

Degradations: the tempered posterior at LossIncrease levels (calibrated; ``--chains`` chains, one draw
each after burn-in), sampled on the task's loss (the repeated tokens: the claim's loss only, the
first-seen predictions unconstrained) and on the loss the organism was trained with (every token,
``induction_full.score_every_token``); and relative Gaussian weight noise at σ levels (``--chains``
draws each) as the baseline. ΔL is always the task's (repeated-token) loss increase. Per level,
``Results.clean_window()`` gives both parts and their ratio with 95% percentile bootstrap intervals
over chains (weight noise: over draws) and says where the ratio is significantly better (interval
above) or worse (below) than at w0. Prints the organism's per-position losses, the table, the
findings and the wall time of each sweep.

Run: ``OMP_NUM_THREADS=1 python benchmarks/clean_window.py [--chains 8] [--out DIR]``
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch

LOSS_LEVELS = (0.1, 0.3, 0.6, 1.0)
SIGMAS = (0.1, 0.2, 0.3, 0.45)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=8)
    parser.add_argument("--out", default=None, help="directory to save the results to")
    parser.add_argument("--eval-rows", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(1)
    pd.set_option("display.width", 250)
    import interp
    from analyses.ablation import HeadAblation
    from analyses.scrubbing import CausalScrubbing
    from analyses.scrubbing.induction import hypotheses
    from interp.degradations import CalibrationConfig
    from interp.organisms import induction_full
    from interp.verdicts import clean_window_findings

    model, task = interp.organisms.load("induction_full")
    print("position losses at w0 (nats/token):",
          {k: round(v, 4) for k, v in induction_full.position_losses(model, task).items()})
    hyp = hypotheses(induction_full.INDUCTION_HEADS, (induction_full.PREV_TOKEN_HEAD,))["correct"]

    def analyses():
        return [CausalScrubbing(hyp, eval_rows=64, seeds=1, name="scrub_correct"),
                HeadAblation([induction_full.PREV_TOKEN_HEAD], eval_rows=args.eval_rows, name="prev_token_head")]

    sampler = interp.TemperedPosterior(chains=args.chains, n_draws=1, burnin=100, seed=0, progress=False,
                                       calibration=CalibrationConfig(tolerance=0.2, max_rounds=4))
    trained = interp.TemperedPosterior(chains=args.chains, n_draws=1, burnin=100, seed=0, progress=False,
                                       calibration=CalibrationConfig(tolerance=0.2, max_rounds=4),
                                       objective=induction_full.score_every_token(task))
    noise = interp.WeightNoise(relative=True, draws_per_level=args.chains, seed=0)
    losses = [interp.LossIncrease(x) for x in LOSS_LEVELS]
    tables = []
    runs = (("posterior(claim loss)", sampler, losses), ("posterior(training loss)", trained, losses),
            ("weight noise", noise, list(SIGMAS)))
    for label, deg, levels in runs:
        t = time.perf_counter()
        out = None if args.out is None else f"{args.out}/{label.replace(' ', '_').replace('(', '_').strip(')')}"
        res = interp.run_sweep(model, task, analyses(), deg, levels, out=out, progress=False)
        print(f"\n== {label}: sweep {time.perf_counter() - t:.1f} s wall")
        for line in clean_window_findings(res):
            print(line)
        tables.append(res.clean_window().assign(sampled_on=label))
    cw = pd.concat(tables, ignore_index=True)
    cols = ["sampled_on", "analysis", "effect", "level", "delta_loss", "effect_mean", "effect_ci_low",
            "effect_ci_high", "collateral_mean", "collateral_ci_low", "collateral_ci_high", "ratio",
            "ratio_ci_low", "ratio_ci_high", "baseline_ratio", "better_than_w0", "worse_than_w0", "n_chains",
            "status"]
    cw = cw.assign(level=[getattr(v, "target", v) if not isinstance(v, float) else v for v in cw["level"]])
    print("\n" + cw[cols].round(4).to_string(index=False))


if __name__ == "__main__":
    main()
