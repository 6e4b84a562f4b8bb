"""Accuracy measurement: λ̂ of a deep linear network at ε, ε/2, ε/4 and extrapolated to ε → 0.

The step size ε is the sampler's default (``lr=None``: ε·(B·ĥ + γ) = 0.2); each smaller step size
runs with its burn-in and thinning scaled so the time horizon is the same, and its own seed
(``estimate_llc(..., extrapolate=3)``). Printed: each point with its standard error, the Richardson
value from (ε, ε/2) and the weighted least-squares line through all three, against Aoyagi's λ
(Aoyagi 2024).

    python benchmarks/llc_step_size_bias.py --widths 5 4 3 5 --rank 1 --chains 64
    python benchmarks/llc_step_size_bias.py --widths 4 3 4 --rank 3 --chains 32
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from interp.degradations import estimate_llc
from interp.degradations.llc import extrapolation_weights
from interp.degradations.oracles import DeepLinearNetwork, aoyagi_llc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[5, 4, 3, 5])
    ap.add_argument("--rank", type=int, default=1)
    ap.add_argument("--nbeta", type=float, default=100.0)
    ap.add_argument("--localization", type=float, default=1.0)
    ap.add_argument("--chains", type=int, default=32)
    ap.add_argument("--burnin", type=int, default=2000)
    ap.add_argument("--draws", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(1)
    net = DeepLinearNetwork(a.widths, a.rank)
    exact = aoyagi_llc(a.widths, a.rank)
    t = time.perf_counter()
    est = estimate_llc(net, net.loss, nbeta=a.nbeta, localization=a.localization, lr=None, chains=a.chains,
                       n_draws=a.draws, burnin=a.burnin, eval_rows=0, seed=a.seed, progress=False, extrapolate=3)
    print(f"DLN {a.widths} rank {a.rank} (Aoyagi λ = {exact:g}), B = {a.nbeta:g}, γ = {a.localization:g}, "
          f"{a.chains} chains, burn-in {a.burnin} + {a.draws} draws at ε ({time.perf_counter() - t:.0f} s)")
    pts = est.extrapolation
    for p in pts:
        print(f"  ε = {p.lr:.3g}: {p.mean:.3f} ± {p.stderr:.3f} ({p.mean / exact - 1:+.1%})")
    c2 = extrapolation_weights([pts[0].lr, pts[1].lr])
    r2 = sum(c * p.mean for c, p in zip(c2, pts[:2]))
    e2 = math.sqrt(sum((c * p.stderr) ** 2 for c, p in zip(c2, pts[:2])))
    print(f"  Richardson (ε, ε/2): {r2:.3f} ± {e2:.3f} ({r2 / exact - 1:+.1%})")
    print(f"  line through 3 points: {est.mean:.3f} ± {est.stderr:.3f} ({est.mean / exact - 1:+.1%})")


if __name__ == "__main__":
    main()
