"""SGLD against RMSProp-preconditioned SGLD, and the localization extrapolation (BENCHMARKS.md, "Samplers").

Part A, deep linear networks with Aoyagi's λ (population loss, chains started on the true set; B = 100,
γ = 1, κ = 0.1): λ̂ and its error against λ, step-size sensitivity (ε·(B·ĥ + γ)/max G = 0.1, 0.2,
0.4 through ``lr_safety``), split-R̂ of the chains' post-burn-in loss traces, chain-steps/s. One
network has 22,400 weights (chains run one after another there: above the vmap size limit).
Part B, the induction organism (B = 100, γ = 100, task loss): λ̂, R̂, chain-steps/s per sampler
and step size. Part C, the localization bias: λ̂ at the default step, extrapolated ε → 0, and
extrapolated in γ, and in both (``extrapolate_localization``), against Aoyagi (``--chains-c``).

Run (2-core shared CPU, one torch thread, under the shared lock)::

    flock /tmp/interp-heavy.lock python benchmarks/bench_samplers.py [--quick] [--parts ABC] [--chains-c 64]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch

from interp.degradations import TemperedPosterior, estimate_llc
from interp.degradations.llc import _from_run
from interp.degradations.oracles import DeepLinearNetwork, aoyagi_llc


def split_rhat(chains, burnin: int) -> float:
    """Split-R̂ (Gelman et al. 2013) of the post-burn-in minibatch-loss traces: each chain is cut in
    two halves; R̂ = √(((n − 1)/n·W + B/n)/W) with W the mean within-half variance and B/n the
    variance of the half means. ≈ 1 when the chains agree; > 1.1 flags disagreement."""
    halves = []
    for c in chains:
        post = c.losses[burnin:]
        n = len(post) // 2
        if n < 2:
            return math.nan
        halves += [post[:n], post[n:2 * n]]
    n = len(halves[0])
    means = [statistics.fmean(h) for h in halves]
    w = statistics.fmean(statistics.variance(h) for h in halves)
    b_over_n = statistics.variance(means)
    if w <= 0:
        return math.nan
    return math.sqrt(((n - 1) / n * w + b_over_n) / w)


def run(model, target, sampler: str, **kw):
    s = TemperedPosterior(sampler=sampler, progress=False, **kw)
    t = time.perf_counter()
    r = s.sample(model, target)
    dt = time.perf_counter() - t
    est = _from_run(r)
    steps = sum(c.steps for c in r.chains)
    return dict(llc=est.mean, se=est.stderr, rhat=split_rhat(r.chains, s.burnin), steps_per_s=steps / dt,
                lr=est.lr, failed=len(est.failed), seconds=dt)


NETS = [([4, 3, 4], 1), ([5, 4, 3, 5], 1), ([6, 4, 4, 6], 2), ([100, 80, 80, 100], 5)]


def part_a(quick: bool) -> list[dict]:
    rows = []
    for widths, rank in NETS:
        big = max(widths) > 20
        net = DeepLinearNetwork(widths, rank)
        lam = aoyagi_llc(widths, rank)
        for safety in (0.1, 0.2, 0.4):
            for sampler in ("sgld", "rmsprop"):
                chains, draws, burnin = (4, 500, 1500) if big else (8, 1000, 1000)
                if quick:
                    draws, burnin = draws // 4, burnin // 4
                r = run(net, net.loss, sampler, nbeta=100.0, localization=1.0, lr_safety=safety, chains=chains,
                        n_draws=draws, burnin=burnin, eval_rows=0)
                r.update(net=f"{widths} r{rank}", weights=sum(p.numel() for p in net.parameters()), aoyagi=lam,
                         sampler=sampler, lr_safety=safety, rel_err=r["llc"] / lam - 1)
                rows.append(r)
                print(json.dumps(r), flush=True)
    return rows


def part_b(quick: bool) -> list[dict]:
    import interp

    model, task = interp.organisms.load("induction")
    rows = []
    for safety in (0.1, 0.2, 0.4):
        for sampler in ("sgld", "rmsprop"):
            r = run(model, task, sampler, nbeta=100.0, localization=100.0, lr_safety=safety, chains=4,
                    n_draws=50 if quick else 200, burnin=50 if quick else 200, batch_size=32, eval_rows=0)
            r.update(net="induction organism", sampler=sampler, lr_safety=safety)
            rows.append(r)
            print(json.dumps(r), flush=True)
    return rows


C_NETS = [([4, 3, 4], 1), ([5, 4, 3, 5], 1), ([4, 3, 4], 3)]


def part_c(quick: bool, chains: int = 16) -> list[dict]:
    rows = []
    for widths, rank in C_NETS:
        net = DeepLinearNetwork(widths, rank)
        lam = aoyagi_llc(widths, rank)
        kw = dict(nbeta=100.0, localization=1.0, chains=chains, n_draws=500 if quick else 1500,
                  burnin=500 if quick else 1500, eval_rows=0, progress=False)
        for setting, extra in (("default ε", {}), ("ε → 0", dict(extrapolate=2)),
                               ("γ → 0", dict(extrapolate_localization=2)),
                               ("ε → 0, γ → 0", dict(extrapolate=2, extrapolate_localization=2))):
            t = time.perf_counter()
            e = estimate_llc(net, net.loss, **kw, **extra)
            r = dict(net=f"{widths} r{rank}", aoyagi=lam, setting=setting, chains=chains, llc=e.mean, se=e.stderr,
                     rel_err=e.mean / lam - 1, seconds=time.perf_counter() - t)
            rows.append(r)
            print(json.dumps(r), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a quarter of the steps (a smoke run)")
    ap.add_argument("--parts", default="ABC", help="which parts to run (A, B, C)")
    ap.add_argument("--out", default=None, help="write all rows as JSON here")
    ap.add_argument("--chains-c", type=int, default=16, help="chains per estimate in part C")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = {}
    for part, fn in (("A", part_a), ("B", part_b), ("C", lambda q: part_c(q, args.chains_c))):
        if part in args.parts:
            out[part] = fn(args.quick)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
