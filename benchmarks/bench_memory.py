"""Memory under load: a sweep with many levels × chains × draws must keep memory flat in the number of
draws (no growing caches, hook lists or stored weight samples).

Each configuration runs in a fresh process (peak RSS is per process): a warm-up sweep first (so
lazily built caches exist), then the measured sweep of ``levels × chains × draws`` SGLD draws on a
1-layer bridge with three analyses that each add and remove hooks at every draw (head ablation,
residual norms, a loss probe), persisted with ``out=``. Reported per number of draws: peak RSS and
its growth over the RSS before the sweep, the traced Python memory's growth per draw *while the draws
run* (read by a metric-less analysis at every draw), tracemalloc peak of Python allocations during
the sweep (which includes building the final table),
hooks on the model and Python objects alive after it, and the size of the results themselves (the
rows a sweep must keep: the only thing allowed to grow, linearly and small).

    python benchmarks/bench_memory.py                      # draws per chain 25, 100, 400
    python benchmarks/bench_memory.py --draws 10 40 --levels 2 --chains 2
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def child(levels: int, chains: int, draws: int) -> dict:
    import torch

    torch.set_num_threads(1)
    from analyses.ablation import HeadAblation
    from analyses.norms import ResidualNorms
    from interp.degradations import TemperedPosterior
    from interp.sweep import run_sweep
    from reliability_tiny import LossProbe, hook_count, tiny_bridge, tiny_task

    model, task = tiny_bridge(), tiny_task()

    class Tracer:
        """An analysis with no metrics: the traced Python memory each time it runs (every draw)."""

        name, effects, collaterals = "tracer", (), ()

        def __init__(self) -> None:
            self.seen: list[int] = []

        def setup(self, model: object, task: object) -> None:
            pass

        def __call__(self, model: object, task: object) -> dict[str, float]:
            if tracemalloc.is_tracing():
                self.seen.append(tracemalloc.get_traced_memory()[0])
            return {}

    tracer = Tracer()

    def sweep(n_draws: int, out: str) -> object:
        sampler = TemperedPosterior(localization=100.0, lr=1e-4, chains=chains, n_draws=n_draws, burnin=0,
                                    batch_size=8, eval_rows=8, init_batches=1, progress=False)
        analyses = [HeadAblation(((0, 0), (0, 1)), eval_rows=8), ResidualNorms(eval_rows=8, batch_size=8), LossProbe(),
                    tracer]
        return run_sweep(model, task, analyses, sampler, [100.0 * (i + 1) for i in range(levels)], out=out,
                         eval_rows=8, progress=False)

    with tempfile.TemporaryDirectory() as tmp:
        sweep(2, f"{tmp}/warmup")
        gc.collect()
        hooks_before, objects_before, rss_before = hook_count(model), len(gc.get_objects()), rss_mib()
        tracemalloc.start()
        t0 = time.perf_counter()
        tracer.seen.clear()
        res = sweep(draws, f"{tmp}/run")
        seconds = time.perf_counter() - t0
        # traced memory while the draws run: after the baseline and first draw vs at the last draw
        in_sweep = (tracer.seen[-1] - tracer.seen[1]) / max(len(tracer.seen) - 2, 1)
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rows_bytes = (Path(tmp) / "run" / "rows.jsonl").stat().st_size
        n_draws = len(res.draws)
        del res
        gc.collect()
        from hooks._points import _INFO

        return {
            "levels": levels, "chains": chains, "draws_per_chain": draws, "n_draws": n_draws,
            "rss_before_mib": rss_before, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_after_mib": rss_mib(), "traced_peak_mib": traced_peak / 2**20, "results_mib": rows_bytes / 2**20,
            "hooks_before": hooks_before, "hooks_after": hook_count(model), "point_caches": len(_INFO),
            "objects_growth": len(gc.get_objects()) - objects_before, "seconds": seconds,
            "in_sweep_bytes_per_draw": in_sweep,
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draws", type=int, nargs="+", default=[25, 100, 400], help="draws per chain")
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.levels, args.chains, args.draws[0])))
        return
    rows = []
    for d in args.draws:
        out = subprocess.run([sys.executable, __file__, "--child", "--levels", str(args.levels), "--chains",
                              str(args.chains), "--draws", str(d)], capture_output=True, text=True, check=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    head = ("| draws (levels × chains × per chain) | peak RSS MiB | growth over pre-sweep RSS MiB | "
            "traced growth per draw while drawing, bytes | tracemalloc peak MiB (with the final table) | "
            "results on disk MiB | hooks before → after | objects alive after | s |")
    print(head)
    print("|" + "---|" * 9)
    for r in rows:
        print(f"| {r['n_draws']} ({r['levels']} × {r['chains']} × {r['draws_per_chain']}) | {r['peak_rss_mib']:.1f} | "
              f"{r['peak_rss_mib'] - r['rss_before_mib']:.1f} | {r['in_sweep_bytes_per_draw']:.0f} | "
              f"{r['traced_peak_mib']:.2f} | {r['results_mib']:.2f} | "
              f"{r['hooks_before']} → {r['hooks_after']} | {r['objects_growth']:+d} | {r['seconds']:.0f} |")
    first, last = rows[0], rows[-1]
    ratio = last["n_draws"] / first["n_draws"]
    growth = lambda r: r["peak_rss_mib"] - r["rss_before_mib"]  # noqa: E731
    print(f"\n{ratio:.0f}x the draws: peak RSS x{last['peak_rss_mib'] / first['peak_rss_mib']:.3f}, "
          f"growth {growth(first):.1f} -> {growth(last):.1f} MiB, tracemalloc peak "
          f"x{last['traced_peak_mib'] / max(first['traced_peak_mib'], 1e-9):.2f} "
          f"(results themselves x{last['results_mib'] / first['results_mib']:.1f}); "
          f"per extra draw: {(last['traced_peak_mib'] - first['traced_peak_mib']) * 2**20 / (last['n_draws'] - first['n_draws']):.0f} "
          f"traced bytes vs {(last['results_mib'] - first['results_mib']) * 2**20 / (last['n_draws'] - first['n_draws']):.0f} "
          "bytes of results JSON")


if __name__ == "__main__":
    main()
