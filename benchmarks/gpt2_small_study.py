"""A GPT-2-small-sized study end to end, offline: build, train quickly, then run the whole pipeline.

What it does, in order, each step timed (wall time) and memory-measured (peak resident set size
sampled every 10 ms by a thread with ``psutil``; ``tracemalloc`` does not see torch's allocations):

1. **build**: GPT-2 small's architecture from its config (12 layers, d_model 768, 12 heads, context
   1024, vocabulary 50,257: 124.4M weights) with ``transformers.GPT2LMHeadModel``, or Pythia-160M's
   (``--arch pythia160m``: GPT-NeoX, parallel attention/MLP, rotary on 25% of each head, vocabulary
   50,304: 162.3M weights), random init, dropout 0;
2. **train** (``benchmarks/gpt2_study_training.py``): a quick AdamW training on a synthetic corpus
   (:func:`gpt2_study_training.make_corpus`): 90% (``--quick``: 80%) indirect-object sentences (IOI,
   Wang et al. 2022, "Interpretability in the wild"), e.g. "When Mary and John went to the store ,
   John gave a drink to Mary", in four templates of 10-14 words and both name orders (ABBA, BABA),
   the rest filler sentences with the same names, places and objects (the posterior's KL is measured
   on such sentences). The answer token's loss is weighted ``--answer-weight`` times (the rest of each
   sentence once): without it the sentence's other tokens dominate the loss and a few hundred steps do
   not teach IOI. A word-level tokenizer (65 ids; the rest of the 50k vocabulary is unused but
   present, so the weights are GPT-2 small's; its rows are zero, which makes the full-vocabulary loss
   computable from the used rows: see :func:`gpt2_study_training.train`). A held-out IOI check every
   ``--check-every`` steps logs the learning curve. The weights are cached under ``--cache``
   (default: the temp directory), never in the package; rerunning loads them. The recipe is these
   two files.
3. **load** the saved checkpoint with ``interp.load_model`` (Hugging Face → TransformerBridge);
4. **evaluate** the IOI task (``Task.from_pairs``, answer = indirect object, wrong = subject): the
   logit difference logit(IO) − logit(S) at the answer position, and the answer's accuracy. Whether a
   quick training finds IOI is a measurement: a positive mean logit difference with accuracy well
   above 50% (the two names are equally frequent in the prompt) says it did;
5. **capture** the residual stream at every layer;
6. **head ablation** (mean ablation): a scan of each layer's heads together, then of each head of the
   two layers that carry most of the answer loss; the top three heads are the "circuit";
7. **causal scrubbing** of the hypothesis "the output reads the top heads, each of which depends on
   the input only through (template, indirect-object name)" against the same claim for three other
   heads of the last layer (Chan et al. 2022): loss recovered and KL;
8. **probes** (ridge, per layer) of "is the indirect object the first name" at the last prompt token;
9. **residual norms** per layer;
10. **transcoder** (top-k sparse MLP) replacing the MLP of the middle block: fraction of variance
    unexplained and the KL of the spliced model;
11. **posterior, restricted**: the behavioural tempered posterior (localized SGLD on the KL from the
    trained model's next-token distribution over a corpus of filler sentences; Bushnaq et al. 2024)
    of the last two blocks only, calibrated to two target KL increases, the IOI logit difference
    measured at every draw;
12. **posterior, all weights**: the same objective on every weight, one chain, a few steps at a fixed
    nβ (what a CPU allows; the cost per step is the number to read);
13. **weight noise**: Gaussian noise relative to each tensor's spread, all weights, three σ, the IOI
    logit difference at every draw;
14. **dissolution**: an adaptive search for the σ at which the IOI logit difference falls to half of
    its trained value under weight noise (``interp.dissolution``).

At the end a table of wall time and peak memory per part is printed (and written as JSON with
``--json``). ``--parts`` runs chosen parts on the cached weights (e.g. ``--parts posterior_restricted``).
OpenMP's waiting threads sleep (``OMP_WAIT_POLICY=PASSIVE`` unless set): spinning ones made parts up to
10x slower when other processes shared the two cores. The restrictions are what a user on a laptop would
make to fit 30 minutes on two cores, training included: analyses on a few evaluation rows, the head
scan on one layer's heads, one scrubbing seed, a smaller transcoder, only the IOI logit difference at
the degradations' draws (scrubbing alone costs about 25 s a call at 124M), calibration of at most two
rounds, short chains, and a handful of steps on all weights (a GPU makes it minutes; see
``benchmarks/gpu_check.sh``).

    flock /tmp/interp-heavy.lock python benchmarks/gpt2_small_study.py --json /tmp/gpt2_study.json
    python benchmarks/gpt2_small_study.py --arch pythia160m
    python benchmarks/gpt2_small_study.py --quick          # a tiny config, the same code path, seconds
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import random
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

# OpenMP threads that spin while they wait cost up to 10x when other processes share the cores (measured
# in BENCHMARKS.md); waiting threads that sleep cost nothing measurable on a quiet machine. Before torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from gpt2_study_training import (  # noqa: E402  (after OMP_WAIT_POLICY: it imports torch)
    FILLERS, NAMES, TEMPLATES, filler, hf_model, ioi_prompt, make_corpus, tokenizer, train)

log = logging.getLogger("gpt2_small_study")

#: the parts after training, loading, the tasks and the IOI evaluation (which always run), in order
PARTS = ("capture", "head_ablation", "causal_scrubbing", "probes", "residual_norms", "transcoder",
         "posterior_restricted", "posterior_all_weights", "weight_noise", "dissolution")


# --------------------------------------------------------------------------- measurement
class Meter:
    """Wall time and peak RSS of named parts; RSS sampled every ``interval`` s by a daemon thread."""

    def __init__(self, interval: float = 0.01) -> None:
        import psutil

        self.proc, self.interval, self.rows = psutil.Process(), interval, []
        self._peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    @contextlib.contextmanager
    def part(self, name: str, note: str = ""):
        start_rss = self.proc.memory_info().rss
        self._peak = start_rss
        t = time.perf_counter()
        row = {"part": name, "note": note}
        try:
            yield row
        finally:
            time.sleep(2 * self.interval)
            peak = max(self._peak, self.proc.memory_info().rss)
            row.update(wall_s=time.perf_counter() - t, peak_rss_mib=peak / 2**20,
                       peak_over_start_mib=(peak - start_rss) / 2**20)
            self.rows.append(row)
            log.info("%-22s %8.1f s  peak %7.0f MiB (+%.0f)  %s", name, row["wall_s"], row["peak_rss_mib"],
                     row["peak_over_start_mib"], row["note"])

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def table(self) -> str:
        lines = ["| part | wall (s) | peak RSS (MiB) | peak over start (MiB) | note |", "|---|---:|---:|---:|---|"]
        for r in self.rows:
            lines.append(f"| {r['part']} | {r['wall_s']:.1f} | {r['peak_rss_mib']:.0f} | "
                         f"{r['peak_over_start_mib']:.0f} | {r['note']} |")
        total = sum(r["wall_s"] for r in self.rows)
        lines.append(f"| **total** | **{total:.1f}** | **{max(r['peak_rss_mib'] for r in self.rows):.0f}** | | |")
        return "\n".join(lines)


def checkpoint(a: argparse.Namespace, meter: Meter) -> tuple[Path, dict[str, Any]]:
    """The trained checkpoint's directory under the cache, trained (and saved) when missing."""
    recipe = dict(arch=a.arch, quick=a.quick, layers=a.layers, steps=a.train_steps, batch=a.train_batch, lr=a.lr,
                  answer_weight=a.answer_weight, embed_lr_scale=a.embed_lr_scale, seed=a.seed,
                  ioi_fraction=a.ioi_fraction, residual_init=a.residual_init, recipe=2,
                  corpus=a.corpus, templates=TEMPLATES, fillers=FILLERS, names=NAMES)
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    path = Path(a.cache) / f"{a.arch}{'-quick' if a.quick else ''}-{key}"
    info_file = path / "training.json"
    if info_file.exists():
        with meter.part("build+train", "loaded from cache (trained by an earlier run)"):
            pass
        return path, json.loads(info_file.read_text())
    tok = tokenizer()
    with meter.part("build", f"{a.arch} from its config, random init") as row:
        hf = hf_model(a.arch, a.quick, a.seed, a.layers, a.residual_init)
        n = sum(p.numel() for p in hf.parameters())
        row["note"] += f": {n / 1e6:.1f}M weights"
    with meter.part("train", f"{a.train_steps} AdamW steps x {a.train_batch} sentences, answer weight "
                    f"{a.answer_weight:g}") as row:
        t = time.perf_counter()
        info = train(hf, *make_corpus(a.corpus, a.seed, a.ioi_fraction), tok, a)
        info.update(weights=n, train_s=time.perf_counter() - t, recipe=recipe)
        end = info["curve"][-1]
        row["note"] += (f", loss {info['first_loss']:.2f} -> {info['last_loss']:.2f}, held-out IOI logit diff "
                        f"{end['logit_diff']:.2f}, accuracy {end['accuracy']:.2f}")
    with meter.part("save", "save_pretrained + tokenizer"):
        path.mkdir(parents=True, exist_ok=True)
        hf.save_pretrained(path)
        tok.save_pretrained(path)
        info_file.write_text(json.dumps(info, indent=1))
    del hf
    return path, info


def scan_heads(model, task, rows: int, layers: int) -> tuple[list[tuple[int, int]], dict[str, Any]]:
    """Mean-ablation scan: each layer's heads together, then each head of the ``layers`` layers whose
    ablation costs most answer loss; the top three heads by answer loss carried are the "circuit"."""
    from analyses.ablation import ablate_heads

    cfg = model.cfg
    by_layer = {l: ablate_heads(model, task, [(l, h) for h in range(cfg.n_heads)], eval_rows=rows)["loss_carried"]
                for l in range(cfg.n_layers)}
    top_layers = sorted(by_layer, key=by_layer.get, reverse=True)[:layers]
    by_head = {(l, h): ablate_heads(model, task, [(l, h)], eval_rows=rows)["loss_carried"]
               for l in top_layers for h in range(cfg.n_heads)}
    top = sorted(by_head, key=by_head.get, reverse=True)[:3]
    return top, {"by_layer": by_layer, "top_heads": top, "by_head": {f"L{l}H{h}": v for (l, h), v in by_head.items()}}


def ioi_task(model, n: int, seed: int):
    import interp

    rng = random.Random(seed + 1)  # other sentences than the training corpus's stream
    rows = [ioi_prompt(rng) for _ in range(n)]
    task = interp.Task.from_pairs([r["prompt"] for r in rows], [f" {r['answer']}" for r in rows], model,
                                  [f" {r['wrong']}" for r in rows],
                                  columns={"template": [r["template"] for r in rows],
                                           "io_first": [r["io_first"] for r in rows]},
                                  name="ioi", description="indirect object identification (4 templates)",
                                  test_fraction=0.3, seed=seed)
    # the last prompt token (where the answer is predicted): the probes read it
    ds = task.dataset.map(lambda r: {"end_pos": r["answer_pos"] - 1})
    return interp.Task(task.name, ds, description=task.description)


def corpus_task(model, n: int, seed: int):
    import interp

    rng = random.Random(seed + 2)
    return interp.Task.from_texts([filler(rng) for _ in range(n)], model, pack=False, max_length=16,
                                  name="filler-corpus", description="filler sentences (no IOI)")


def logit_diff_analysis(rows: int):
    """The plain-function analysis ``ioi_logit_diff``: mean logit(IO) − logit(S) and the share of rows
    preferring IO, on the first ``rows`` test rows (its effect is the logit difference)."""

    def ioi_logit_diff(model, task) -> dict[str, float]:
        with torch.no_grad():
            diff = task.logit_diff(model, task.tensors("test", rows=rows))
        return {"logit_diff": float(diff.mean()), "io_preferred": float((diff > 0).float().mean())}

    ioi_logit_diff.effects = ("logit_diff",)
    return ioi_logit_diff


# --------------------------------------------------------------------------- the study
def run(a: argparse.Namespace) -> dict[str, Any]:
    import analyses
    import hooks
    import interp
    from analyses.scrubbing import Agree, CausalScrubbing, Head, Hypothesis
    from interp.degradations import CalibrationConfig, LossIncrease, NBeta, TemperedPosterior, WeightNoise
    from interp.objectives import Behavioural

    torch.set_num_threads(a.threads)
    want = set(a.parts).__contains__
    # the word-level tokenizer uses a few dozen of the 50k ids on purpose (GPT-2 small's vocabulary size)
    warnings.filterwarnings("ignore", message=r".*tokenizer (of \S+ )?holds \d+ tokens")
    meter = Meter()
    out: dict[str, Any] = {"args": vars(a)}
    runs = Path(tempfile.mkdtemp(prefix="gpt2-study-"))
    try:
        path, info = checkpoint(a, meter)
        out["training"] = info
        if a.train_only:
            return out
        with meter.part("load_model", "HF checkpoint -> TransformerBridge"):
            model = interp.load_model(path, device="cpu")
        cfg = model.cfg
        with meter.part("tasks", "IOI pairs + filler corpus"):
            task = ioi_task(model, a.ioi_rows, a.seed)
            corpus = corpus_task(model, a.corpus_rows, a.seed)
        with meter.part("evaluate", "IOI test split") as row:
            ev = task.evaluate(model)
            row["note"] = (f"logit diff {ev['logit_diff']:.2f}, answer acc {ev['accuracy']:.3f}, "
                           f"loss {ev['loss']:.3f}")
        out["ioi"] = ev
        if want("capture"):
            with meter.part("capture", f"resid_post of {cfg.n_layers} layers, 64 rows"):
                ids = task.tensors("test", rows=64)["input_ids"].long()
                acts = hooks.capture(model, ids, [hooks.resid_post(l) for l in range(cfg.n_layers)])
                assert acts[hooks.resid_post(cfg.n_layers - 1)].shape[-1] == cfg.d_model
                del acts

        # ---------------------------------------------------------------- head ablation scan
        rows = a.eval_rows
        heads_file = path / f"study-heads-{a.eval_rows}-{a.ioi_rows}-{a.scan_layers}.json"
        if want("head_ablation") or not heads_file.exists():
            with meter.part("head_ablation", "") as row:
                top, abl = scan_heads(model, task, rows, a.scan_layers)
                row["note"] = (f"{cfg.n_layers + len(abl['by_head'])} ablations; top heads "
                               + ", ".join(f"L{l}H{h} ({abl['by_head'][f'L{l}H{h}']:+.3f})" for l, h in top))
            heads_file.write_text(json.dumps(abl))
        else:  # the scan of an earlier run on the same weights and rows (--parts without head_ablation)
            abl = json.loads(heads_file.read_text())
            top = [tuple(x) for x in abl["top_heads"]]
            log.info("top heads %s from %s", top, heads_file)
        out["ablation"] = abl
        others = [(cfg.n_layers - 1, h) for h in range(cfg.n_heads) if (cfg.n_layers - 1, h) not in top][:3]

        # ---------------------------------------------------------------- causal scrubbing
        same = Agree.on(lambda c: c["template"].long() * 1000 + c["answer_id"].long(), "same template and IO")
        hyp = Hypothesis([Head(l, h, same) for l, h in top], name="top_heads")
        wrong = Hypothesis([Head(l, h, same) for l, h in others], name="other_heads")
        scrub = CausalScrubbing(hyp, name="scrub_top", eval_rows=rows, seeds=a.scrub_seeds, bootstrap=200)
        scrub_other = CausalScrubbing(wrong, name="scrub_other", eval_rows=rows, seeds=a.scrub_seeds, bootstrap=200)
        if want("causal_scrubbing"):
            with meter.part("causal_scrubbing", "") as row:
                m = {}
                for s in (scrub, scrub_other):
                    s.setup(model, task)
                    m[s.name] = s(model, task)
                row["note"] = ", ".join(f"{k}: recovered {v['recovered']:.2f}, KL {v['kl']:.3f}"
                                        for k, v in m.items())
            out["scrubbing"] = m

        # ---------------------------------------------------------------- probes, norms, transcoder
        layers = tuple(sorted({0, cfg.n_layers // 4, cfg.n_layers // 2, 3 * cfg.n_layers // 4, cfg.n_layers}))
        if want("probes"):
            with meter.part("probes", f"ridge, layers {layers}") as row:
                rep = analyses.probe(model, task, label="io_first", positions=("end_pos",), layers=layers,
                                     eval_rows=a.probe_rows, control_type=None)
                acc = [float(x) for x in rep.accuracy]
                row["note"] = "IO-first accuracy " + " ".join(f"{x:.2f}" for x in acc)
            out["probes"] = dict(zip(map(str, layers), acc))
        norms = analyses.ResidualNorms(eval_rows=rows, quantiles=(), weights=False)
        if want("residual_norms"):
            with meter.part("residual_norms", "") as row:
                prof = analyses.profile_norms(model, task, eval_rows=rows)
                norms.setup(model, task)
                nm = norms(model, task)
                row["note"] = f"growth {nm.get('growth', float('nan')):.2f}"
                del prof
        mid = cfg.n_layers // 2
        if want("transcoder"):
            transcoder = analyses.SparseMLP(layer=mid, transcoder=dict(
                n_latents=a.tc_latents, k=a.tc_k, steps=a.tc_steps, batch_size=256, buffer_tokens=a.tc_tokens,
                rows_per_forward=32), refit_steps=5, eval_rows=rows)
            with meter.part("transcoder", f"block {mid}, {a.tc_latents} latents, top-{a.tc_k}") as row:
                transcoder.setup(model, task)
                tm = transcoder(model, task)
                row["note"] += f", FVU {tm['refit_fvu']:.3f}, spliced KL {tm['refit_kl']:.3f} nats/token"
            out["transcoder"] = tm

        # at the draws of the degradations only the IOI logit difference (every analysis above costs
        # seconds to minutes a call at 124M weights; a user restricts the suite first)
        ioi_logit_diff = logit_diff_analysis(a.logit_diff_rows)
        suite = [ioi_logit_diff]

        # ---------------------------------------------------------------- posterior, restricted
        blocks = list(range(cfg.n_layers - a.restrict_blocks, cfg.n_layers))
        restrict = [f"blocks.{b}.*" for b in blocks]
        objective = Behavioural(corpus, kind="kl", rows=a.kl_rows)
        sampler = TemperedPosterior(objective=objective, localization=100.0, chains=a.chains, n_draws=a.draws,
                                    burnin=a.burnin, thin=a.thin, batch_size=a.sgld_batch, eval_rows=a.kl_rows,
                                    restrict=restrict, seed=a.seed, progress=False,
                                    calibration=CalibrationConfig(tolerance=0.5, max_rounds=2))
        levels = [LossIncrease(x) for x in a.kl_levels]
        n_sel = sum(sampler.check(model).values()) if hasattr(sampler, "check") else None
        if want("posterior_restricted"):
            with meter.part("posterior_restricted",
                            f"blocks {blocks[0]}-{blocks[-1]}, KL levels {a.kl_levels}, {a.chains} chains") as row:
                res = interp.run_sweep(model, task, suite, sampler, levels, out=runs / "posterior", progress=False,
                                       eval_rows=rows)
                row["note"] += _sweep_note(res)
            out["posterior_restricted"] = _sweep_numbers(res)
            out["posterior_restricted"]["weights"] = n_sel

        # ---------------------------------------------------------------- posterior, all weights
        if want("posterior_all_weights"):
            full = TemperedPosterior(objective=objective, localization=100.0, chains=1, n_draws=2,
                                     burnin=a.full_steps - 1, thin=1, batch_size=a.sgld_batch, eval_rows=a.kl_rows,
                                     lr=a.full_lr, seed=a.seed, progress=False)
            with meter.part("posterior_all_weights", f"nβ {a.full_nbeta:g}, lr {a.full_lr:g}, "
                            f"{a.full_steps + 1} steps, 1 chain") as row:
                t = time.perf_counter()
                res_full = interp.run_sweep(model, task, suite, full, [NBeta(a.full_nbeta)],
                                            out=runs / "posterior_full", progress=False, eval_rows=rows)
                row["note"] += _sweep_note(res_full)
                out["posterior_all_weights"] = {**_sweep_numbers(res_full), "wall_s": time.perf_counter() - t}

        # ---------------------------------------------------------------- weight noise, dissolution
        if want("weight_noise"):
            # eval_rows: each draw's own loss on the sweep's rows (the default, 256 rows, measured the loss a
            # second time, on 256 rows: 17 s a draw at 124M, 60% of the dissolution's time)
            noise = WeightNoise(relative=True, draws_per_level=2, seed=a.seed, eval_rows=rows)
            with meter.part("weight_noise", f"all weights, relative σ {a.sigmas}") as row:
                res_noise = interp.run_sweep(model, task, suite, noise, list(a.sigmas), out=runs / "noise",
                                             progress=False, eval_rows=rows)
                row["note"] += _sweep_note(res_noise)
            out["weight_noise"] = _sweep_numbers(res_noise)
        if want("dissolution"):
            with meter.part("dissolution", "IOI logit diff to half its value, weight noise") as row:
                d = interp.dissolution(model, task, ioi_logit_diff,
                                       WeightNoise(relative=True, draws_per_level=2, seed=a.seed, eval_rows=rows),
                                       metric="logit_diff", relative=0.5, axis="sigma", start=0.05,
                                       max_levels=a.dissolve_levels, out=runs / "dissolve", progress=False,
                                       eval_rows=rows)
                row["note"] = d.verdict("IOI logit difference")
            out["dissolution"] = row["note"]
    finally:
        meter.close()
    out["table"] = meter.rows
    print(meter.table())
    total = sum(r["wall_s"] for r in meter.rows)
    print(f"\ntotal {total / 60:.1f} min; IOI at the trained weights: logit diff {out['ioi']['logit_diff']:.2f}, "
          f"accuracy {out['ioi']['accuracy']:.3f}; machine: {torch.get_num_threads()} torch threads")
    return out


def _sweep_numbers(res) -> dict[str, Any]:
    s = res.summary()
    keep = s[s["metric"].isin(["logit_diff", "recovered", "loss_carried", "growth"])]
    return {"summary": json.loads(keep.to_json(orient="records")),
            "draws": int(len(res.draws)), "mean_loss": float(res.draws["loss"].mean())}


def _sweep_note(res) -> str:
    s = res.summary()
    ld = s[s["metric"] == "logit_diff"]
    parts = [f"{len(res.draws)} draws"]
    if len(ld):
        parts.append("logit diff by level " + " ".join(f"{v:.2f}" for v in ld["mean"]))
    return ", " + ", ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=("gpt2", "pythia160m"), default="gpt2")
    ap.add_argument("--quick", action="store_true", help="a tiny config (2 layers, d_model 64), seconds")
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "interp-study-cache"),
                    help="where the trained checkpoint is kept (outside the package)")
    ap.add_argument("--json", default=None, help="write every number here")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-steps", type=int, default=None)
    ap.add_argument("--train-batch", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--answer-weight", type=float, default=None,
                    help="weight of the IOI answer token in the training loss (other tokens: 1)")
    ap.add_argument("--embed-lr-scale", type=float, default=None,
                    help="the used embedding rows' (and position embeddings') learning rate over --lr")
    ap.add_argument("--residual-init", type=float, default=None,
                    help="scale of the residual branches' output projections at init (1: Hugging Face's; 0: zero)")
    ap.add_argument("--ioi-fraction", type=float, default=None, help="share of IOI sentences in the corpus")
    ap.add_argument("--check-every", type=int, default=20, help="training steps between held-out IOI checks")
    ap.add_argument("--layers", type=int, default=None, help="another depth (to try a training recipe out)")
    ap.add_argument("--train-only", action="store_true", help="stop after training (to try a recipe out)")
    ap.add_argument("--corpus", type=int, default=20000, help="training sentences")
    ap.add_argument("--parts", default=",".join(PARTS),
                    help="comma-separated parts to run after training, loading, the tasks and evaluation (default: "
                         "all). The posterior, weight noise and dissolution read the top heads of an earlier "
                         "head_ablation on the same weights from the cache, or run the scan")
    a = ap.parse_args()
    a.parts = [p.strip() for p in a.parts.split(",") if p.strip()]
    unknown = sorted(set(a.parts) - set(PARTS))
    if unknown:
        ap.error(f"--parts {','.join(unknown)}: unknown; choose from {','.join(PARTS)}")
    q = a.quick
    # the sizes of the run: the full ones fit 30 minutes on a 2-core CPU (BENCHMARKS.md)
    defaults = dict(train_steps=300 if q else 400, train_batch=32 if q else 16, lr=3e-3 if q else 3e-4,
                    answer_weight=100.0, embed_lr_scale=1.0 if q else 30.0, ioi_fraction=0.8 if q else 0.9,
                    residual_init=1.0)
    for k, v in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    sizes = dict(ioi_rows=300 if q else 600, corpus_rows=128, eval_rows=32 if q else 24, probe_rows=128 if q else 160,
                 tc_latents=128 if q else 768, tc_k=8 if q else 16, tc_steps=30 if q else 60,
                 tc_tokens=2048, restrict_blocks=1 if q else 2, kl_rows=32 if q else 24,
                 scan_layers=2 if q else 1, scrub_seeds=2 if q else 1, logit_diff_rows=64 if q else 32,
                 chains=2, draws=2, burnin=6 if q else 8, thin=2, sgld_batch=8,
                 kl_levels=(0.05,) if q else (0.02, 0.1), full_nbeta=100.0, full_lr=1e-5, full_steps=3 if q else 4,
                 sigmas=(0.1,) if q else (0.01, 0.03, 0.1), dissolve_levels=2 if q else 4)
    for k, v in sizes.items():
        setattr(a, k, v)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("interp").setLevel(logging.WARNING)
    result = run(a)
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
