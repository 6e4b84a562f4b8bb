"""Causal scrubbing: cost of scoring one hypothesis vs the forward passes treeification needs,
and (``--sweep``) survival of the correct vs a wrong-heads induction hypothesis over a tempered
posterior grid.

Cost. For N reference inputs and one resampling seed, the treeified model of a hypothesis consumes a
fixed set of distinct input sequences (``Scrubber.needed``: each claimed leaf's resampled sequences,
one random input per node evaluation). The floor is one full forward per needed sequence; the engine
runs each of them only up to the write it needs, plus recombination passes (Q/K/V readings, the head
outputs, the final logits). Printed side by side in one run, median of ``--repeats``:

    ratio = wall(scrub one hypothesis) / wall(one full forward of every needed sequence)

Ground truth (``--compiled``): every hypothesis of ``compiled_hypotheses()`` scored on the hand-compiled
induction model (:mod:`interp.organisms.compiled`) with the default ``CausalScrubbing`` settings.

Survival (``--sweep``): ``Results.survival`` with the absolute criterion ``threshold={"recovered": 0.9}``
(lower 95% bound over chains ≥ 0.9) and, for contrast, the relative ``fraction=0.5``.

Run: ``python benchmarks/bench_scrubbing.py [--repeats 5] [--sweep] [--compiled]`` (one thread).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def _time(fn, repeats: int) -> float:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def cost(repeats: int) -> None:
    import interp
    from analyses.scrubbing import CausalScrubbing
    from analyses.scrubbing.induction import hypotheses

    model, task = interp.organisms.load("induction")
    hyps = hypotheses()
    print("| hypothesis | N | sequences run | needed | scrub ms | needed as full forwards ms | ratio |"
          " clean forward of N ms |")
    print("|---|---|---|---|---|---|---|---|")
    for n in (64, 256):
        for name in ("correct", "v_from_layer0"):
            a = CausalScrubbing(hyps[name], eval_rows=n, seeds=1)
            a.setup(model, task)
            sc = a.scrubber(model, seed=0)
            with torch.no_grad():
                sc.run(a.hypothesis, a.refs_)
            seqs, needed = sc.forwards, sc.needed
            rows = torch.randint(len(a.ids_), (needed,), generator=torch.Generator().manual_seed(0))

            @torch.no_grad()
            def scrub():
                a.scrubber(model, seed=0).run(a.hypothesis, a.refs_)

            @torch.no_grad()
            def floor():
                for lo in range(0, needed, 4096):
                    model(a.ids_[rows[lo:lo + 4096]])

            @torch.no_grad()
            def clean():
                model(a.ids_[a.refs_])

            t_s, t_f, t_c = _time(scrub, repeats), _time(floor, repeats), _time(clean, repeats)
            print(f"| {name} | {n} | {seqs} | {needed} | {t_s * 1e3:.0f} | {t_f * 1e3:.0f} | "
                  f"{t_s / t_f:.2f} | {t_c * 1e3:.1f} |")


def sweep() -> None:
    import interp
    from analyses.scrubbing import CausalScrubbing
    from analyses.scrubbing.induction import hypotheses

    model, task = interp.organisms.load("induction")
    hyps = hypotheses()
    analyses = [CausalScrubbing(hyps[k], eval_rows=128, seeds=2, name=k) for k in ("correct", "wrong_heads")]
    deg = interp.TemperedPosterior(chains=2, n_draws=2, burnin=100, thin=20, seed=0, progress=False)
    levels = [interp.LossIncrease(x) for x in (0.1, 0.3, 1.0)]
    t = time.perf_counter()
    res = interp.run_sweep(model, task, analyses, deg, levels, progress=False)
    print(f"sweep: {time.perf_counter() - t:.0f} s")
    s = res.summary()
    s = s[s["metric"].isin(["recovered", "kl_recovered", "loss_clean", "gap", "flag_ratio_unreliable"])]
    cols = ["analysis", "metric", "level_index", "delta_loss", "mean", "ci_low", "ci_high"]
    print(s[cols].sort_values(["analysis", "metric", "level_index"]).to_string(index=False))
    cols = ["analysis", "metric", "baseline", "threshold", "held_at_baseline", "last_held_delta_loss",
            "lost_delta_loss"]
    for crit in ({"threshold": {"recovered": 0.9, "kl_recovered": 0.9}}, {"fraction": 0.5}):
        print(f"survival({crit}):")
        print(res.survival(**crit)[cols].to_string(index=False))


def ground_truth() -> None:
    from analyses.scrubbing import CausalScrubbing
    from analyses.scrubbing.induction import compiled_hypotheses
    from interp.organisms import compiled

    model, task = compiled.load()
    print(f"compiled model: {task.evaluate(model)}")
    print("| hypothesis | recovered (95% CI) | vs resample_all | kl_recovered | KL nats/token | s |")
    print("|---|---|---|---|---|---|")
    for name, hyp in compiled_hypotheses().items():
        t = time.perf_counter()
        a = CausalScrubbing(hyp)
        a.setup(model, task)
        m = a(model, task)
        print(f"| {name} | {m['recovered']:.4f} ({m['recovered_ci_low']:.3f}–{m['recovered_ci_high']:.3f}) | "
              f"{m['recovered_resample_all']:.3f} | {m['kl_recovered']:.4f} | {m['kl']:.3g} | "
              f"{time.perf_counter() - t:.1f} |")


if __name__ == "__main__":
    torch.set_num_threads(1)
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--sweep", action="store_true", help="also run the TemperedPosterior survival sweep")
    p.add_argument("--no-cost", action="store_true", help="skip the cost table")
    p.add_argument("--compiled", action="store_true", help="score the hypotheses of the compiled model")
    args = p.parse_args()
    if not args.no_cost:
        cost(args.repeats)
    if args.compiled:
        ground_truth()
    if args.sweep:
        sweep()
