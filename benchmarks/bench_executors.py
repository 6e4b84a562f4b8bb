"""Scale-out: the same sweep on the local executor and on a local Ray cluster, side by side.

Sweep: the induction organism, TemperedPosterior with per-chain jobs (``vectorize=False``: one Ray
task per (level, chain)), 2 levels x CHAINS chains x DRAWS draws, HeadAblation at every draw. Both
runs use one torch thread per job/process, so their tables must be bit-identical (checked).
Reported: wall time of each, Ray's cluster start and first-job (worker start + imports) overhead,
and the ratio local / Ray.

    python benchmarks/bench_executors.py [--chains 4] [--draws 20] [--cpus 2]
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    args = parser.parse_args()
    torch.set_num_threads(1)

    import ray

    import interp
    from analyses.ablation import HeadAblation
    from interp.degradations import NBeta, TemperedPosterior
    from interp.sweep import ModelRecipe, RayExecutor

    model, task = interp.organisms.load("induction", device="cpu")
    sampler = TemperedPosterior(chains=args.chains, n_draws=args.draws, burnin=50, batch_size=32,
                                eval_rows=64, vectorize=False, progress=False)
    levels = [NBeta(300.0), NBeta(1000.0)]

    def analyses():
        return [HeadAblation(heads=((1, 0), (1, 1)), eval_rows=64)]

    t = time.perf_counter()
    local = interp.run_sweep(model, task, analyses(), sampler, levels, eval_rows=64, progress=False)
    t_local = time.perf_counter() - t

    t = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="WARNING")
    t_init = time.perf_counter() - t
    ex = RayExecutor(cpus_per_job=1)
    # a 1-level, 1-chain, 1-draw warm-up: worker processes start and import torch/TransformerLens
    t = time.perf_counter()
    tiny = TemperedPosterior(chains=1, n_draws=1, burnin=1, batch_size=8, eval_rows=8, vectorize=False, progress=False)
    interp.run_sweep(ModelRecipe(organism="induction"), task, analyses(), tiny, [NBeta(300.0)], eval_rows=8,
                     progress=False, executor=ex)
    t_warm = time.perf_counter() - t
    t = time.perf_counter()
    on_ray = interp.run_sweep(ModelRecipe(organism="induction"), task, analyses(), sampler, levels, eval_rows=64,
                              progress=False, executor=ex)
    t_ray = time.perf_counter() - t
    ray.shutdown()

    pd.testing.assert_frame_equal(local.table, on_ray.table, check_exact=True)
    jobs = len(levels) * args.chains
    print(f"sweep: 2 levels x {args.chains} chains x {args.draws} draws (+50 burn-in), HeadAblation; "
          f"{jobs} Ray jobs on {args.cpus} CPUs; tables bit-identical")
    print(f"local executor        {t_local:7.2f} s")
    print(f"ray: cluster start    {t_init:7.2f} s   first tiny sweep (workers start) {t_warm:7.2f} s")
    print(f"ray executor (warm)   {t_ray:7.2f} s   local / ray = {t_local / t_ray:.2f}x")


if __name__ == "__main__":
    main()
