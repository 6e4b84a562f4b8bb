"""The main job (``interp demo``): the induction circuit on trained and degraded weights.

On the bundled induction organism, with no downloads:

1. evaluate the trained model and score its heads (previous-token and induction scores);
2. set up the analyses on the clean weights: causal scrubbing of the correct induction hypothesis and
   of one built from the wrong heads (effect: loss and KL recovered; collateral: KL on positions the
   hypothesis says nothing about), ablation of the previous-token head (effect: the loss it carries;
   collateral: the same KL), residual-stream norms and the head scores;
3. sweep them over the tempered posterior (SGLD) calibrated to a small grid of target loss
   increases, and over Gaussian weight noise as a baseline;
4. write ``report.html``: each metric against the measured loss increase, the survival table (relative
   to each effect's baseline, and for the scrubbing effects against an absolute 90%), the
   calibration and chain diagnostics, and circuitsvis attention patterns of the heads at the trained
   weights and at a degraded draw.

Everything is persisted under ``out`` as it is produced; re-running resumes.

Example (``quick=True``: the same code path at one level per degradation, under a minute; drop it
for the full grid. Skipped as a docstring example for its time; ``tests/interp/test_report.py`` runs
this call)::

    >>> from interp.app.demo import run_demo
    >>> summary = run_demo("interp-demo", progress=False, quick=True)   # doctest: +SKIP
    >>> summary["report"]                                                # doctest: +SKIP
    'interp-demo/report.html'
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

__all__ = ["run_demo", "HeadScores", "DEMO_LEVELS", "SCRUB_THRESHOLDS"]

log = logging.getLogger(__name__)

#: target loss increases (nats/token) for the tempered posterior, and relative σ for weight noise
DEMO_LEVELS = {
    "tempered_posterior": (0.03, 0.3, 1.0),
    "weight_noise": (0.05, 0.2, 0.5),
}
#: the metrics beyond effects and collaterals that the demo report plots
DEMO_PLOTS = ["loss_clean", "loss_scrubbed", "mean_L0", "mean_L1", "mean_L2", "growth",
              "prev_token_L0H1", "induction_L1H0", "induction_L1H1"]
#: absolute survival thresholds for the scrubbing effects: the hypothesis recovers ≥ 90% of the loss
#: (and of the KL) gap; the relative criterion alone lets a hypothesis that explains little "hold"
SCRUB_THRESHOLDS = {"recovered": 0.9, "kl_recovered": 0.9}
#: how the verdict lines name the analyses
VERDICT_NAMES = {"scrub_correct": "correct induction hypothesis", "scrub_wrong_heads": "wrong-heads hypothesis",
                 "prev_token_head": "previous-token head ablation"}
#: ``quick=True``: one level each, fewer chains and draws (a smoke run for tests)
QUICK_LEVELS = {"tempered_posterior": (0.3,), "weight_noise": (0.2,)}


class HeadScores:
    """Previous-token score of the layer-0 head and induction scores of the layer-1 heads."""

    effects: tuple[str, ...] = ()
    collaterals: tuple[str, ...] = ()
    name = "head_scores"

    def setup(self, model: Any, task: Any) -> None:
        pass

    def __call__(self, model: Any, task: Any) -> dict[str, float]:
        from interp.organisms import induction

        prev = induction.previous_token_scores(model, task, eval_rows=128)
        ind = induction.induction_scores(model, task, eval_rows=128)
        layer, head = induction.PREV_TOKEN_HEAD
        out = {f"prev_token_L{layer}H{head}": prev[layer, head].item()}
        for layer, head in induction.INDUCTION_HEADS:
            out[f"induction_L{layer}H{head}"] = ind[layer, head].item()
        return out


def _attention_views(model: Any, task: Any, degradation: Any, level: Any) -> list[str]:
    """circuitsvis attention patterns of both layers on one test sequence, clean and at a draw."""
    from interp.report import attention_view

    row = task.tensors("test", rows=1)
    ids = row["input_ids"].long()
    tokens = ["BOS"] + [str(t) for t in ids[0, 1:].tolist()]
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.cfg.n_layers)]

    def patterns() -> torch.Tensor:
        with torch.no_grad():
            _, cache = model.run_with_cache(ids, names_filter=lambda n: n in names)
        return torch.cat([cache[n][0] for n in names])  # (layers·heads, q, k)

    period = int(row["period"][0])
    heads = [f"L{layer}H{head}" for layer in range(model.cfg.n_layers) for head in range(model.cfg.n_heads)]
    views = [attention_view(tokens, patterns(), f"Trained weights (period {period})", heads=heads)]
    for draw in degradation.draws(model, task, level):
        views.append(attention_view(
            tokens, patterns(),
            f"Tempered-posterior draw at nβ = {draw.nbeta:.0f} (loss {draw.loss:.3f} nats/token)", heads=heads,
        ))
        break  # leaving the iterator restores the trained weights
    return views


def run_demo(out: str | Path = "interp-demo", progress: bool = True, quick: bool = False) -> dict[str, Any]:
    """Run the demo sweep into ``out``; returns a short summary (also logged) with the report path.

    ``quick=True`` runs one level per degradation with fewer chains and draws: the same code path in
    well under a minute, for smoke tests; its numbers are too few for conclusions.
    """
    from analyses.ablation import HeadAblation
    from analyses.norms import ResidualNorms
    from analyses.scrubbing import CausalScrubbing
    from analyses.scrubbing.induction import hypotheses as induction_hypotheses
    from interp import organisms
    from interp.degradations import CalibrationConfig, LossIncrease, NBeta, TemperedPosterior, WeightNoise
    from interp.organisms import induction
    from interp.report import load_views, save_view, write_report
    from interp.results import Results
    from interp.sweep import run_sweep

    out = Path(out)
    model, task = organisms.load("induction")
    clean = task.evaluate(model)
    log.info("induction organism: test loss %.4f nats/token, accuracy %.4f", clean["loss"], clean["accuracy"])
    hypotheses = induction_hypotheses()
    analyses = [
        CausalScrubbing(hypotheses["correct"], name="scrub_correct", eval_rows=128, seeds=2),
        CausalScrubbing(hypotheses["wrong_heads"], name="scrub_wrong_heads", eval_rows=128, seeds=2),
        HeadAblation(heads=[induction.PREV_TOKEN_HEAD], name="prev_token_head"),
        ResidualNorms(quantiles=(), weights=False),
        HeadScores(),
    ]
    levels = QUICK_LEVELS if quick else DEMO_LEVELS
    schedule = dict(localization=100.0, burnin=30 if quick else 200, thin=5 if quick else 25, seed=0,
                    progress=False)
    sampler = TemperedPosterior(
        chains=2 if quick else 3, n_draws=2 if quick else 3, **schedule,
        calibration=CalibrationConfig(tolerance=0.25, max_rounds=4) if quick else None,
    )
    tp_levels = [LossIncrease(x) for x in levels["tempered_posterior"]]
    noise = WeightNoise(relative=True, draws_per_level=2 if quick else 4, seed=0)
    parts = [
        run_sweep(model, task, analyses, sampler, tp_levels, out=out / "tempered_posterior", progress=progress),
        run_sweep(model, task, analyses, noise, levels["weight_noise"], out=out / "weight_noise",
                  progress=progress),
    ]
    results = Results.concat(parts)
    results.meta["thresholds"] = dict(SCRUB_THRESHOLDS)  # the verdicts' criteria, kept with the results
    results.save(out / "results")
    if not (out / "views").exists():
        # one draw at the hottest level's calibrated B (no second calibration)
        nbeta = parts[0].meta["levels"][len(tp_levels) - 1]["calibration"]["nbeta"]
        one_draw = TemperedPosterior(chains=1, n_draws=1, **schedule)
        for i, view in enumerate(_attention_views(model, task, one_draw, NBeta(nbeta))):
            save_view(out, f"attention_{i}", view)
    report = write_report(results, out / "report.html", views=load_views(out),
                          title="interp demo: the induction circuit under natural degradation",
                          plot_metrics=DEMO_PLOTS, thresholds=SCRUB_THRESHOLDS, names=VERDICT_NAMES)
    survival = results.survival()
    absolute = results.survival(threshold=SCRUB_THRESHOLDS)
    verdicts = results.verdicts(SCRUB_THRESHOLDS, names=VERDICT_NAMES)
    summary = {"clean": clean, "verdicts": verdicts, "survival": survival, "survival_absolute": absolute,
               "report": str(report)}
    log.info("verdicts:\n%s", "\n".join(verdicts))
    log.info("survival of effects:\n%s", survival.to_string(index=False))
    log.info("survival of the scrubbing effects against %s:\n%s", SCRUB_THRESHOLDS, absolute.to_string(index=False))
    return summary
