"""Circuit hypothesis tests (``analyses.circuit_tests``): cost per draw, and the claims over draws.

Cost (default): one :class:`~analyses.circuit_tests.CircuitTests` call (the per-draw work, ``setup``
excluded; best of ``--repeats``) on the hand-compiled organism and on the trained induction organism,
at 64 and 128 evaluation rows, with the number of distinct forwards the memoised runs needed (100
inflated + 100 random circuits on a 5-node graph collapse to a few distinct knockout sets) and the
time of the statistics alone (HSIC with 1000 permutations). One thread.

Over draws (``--draws``): the induction organism's claims under the tempered posterior
(``LossIncrease`` 0.1, 0.3, 1.0, ``--chains`` chains) and under relative weight noise (σ 0.03, 0.1,
0.3): per level, the pass rate of every test with ``assess_claim`` (holds when ≥ 0.95 of the draws
pass) and the posterior node inclusion of each node with ``estimate_node_inclusion``.

Run: ``python benchmarks/bench_circuit_tests.py [--repeats 3]`` and
``python benchmarks/bench_circuit_tests.py --draws [--chains 8]`` (under the shared lock).
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch

CLAIMS = {
    "compiled": {"true": ("embed", "L0H0", "L1H0"), "decoys": ("embed", "L0H1", "L1H1")},
    # induction organism: L0H1 is the previous-token head, L1H0/L1H1 the induction heads
    "induction": {"prev+induction": ("embed", "L0H1", "L1H0", "L1H1"),
                  "wrong_prev": ("embed", "L0H0", "L1H0", "L1H1")},
}
TESTS = ["equivalence_pass", "independence_pass", "minimality_pass", "idealised_pass", "sufficiency_pass",
         "partial_necessity_pass"]


def cost(repeats: int) -> None:
    import numpy as np

    import interp
    from analyses.circuit_tests import CircuitTests
    from analyses.circuit_tests._stats import hsic_p
    from interp.organisms import compiled

    organisms = {"compiled": compiled.load(n_train=8, n_test=128), "induction": interp.organisms.load("induction")}
    print("organism   claim           rows  forwards  s/draw  s/forward  faithfulness  idealised_pass")
    for org, (model, task) in organisms.items():
        for name, nodes in CLAIMS[org].items():
            for rows in (64, 128):
                tests = CircuitTests(nodes, eval_rows=rows)
                tests.setup(model, task)
                best, out = float("inf"), {}
                for _ in range(repeats):
                    t = time.perf_counter()
                    out = tests(model, task)
                    best = min(best, time.perf_counter() - t)
                print(f"{org:10s} {name:15s} {rows:4d}  {out['forwards']:8.0f}  {best:6.2f}  "
                      f"{best / out['forwards']:9.3f}  {out['faithfulness']:12.3f}  {out['idealised_pass']:.0f}")
    rng = np.random.default_rng(0)
    for rows in (64, 128):
        x, y = rng.normal(size=rows), rng.normal(size=rows)
        t = time.perf_counter()
        hsic_p(x, y, 1000, 0)
        print(f"HSIC, {rows} rows, 1000 permutations: {time.perf_counter() - t:.2f} s")


def draws(chains: int) -> None:
    import interp
    from analyses.circuit_tests import CircuitTests, assess_claim, estimate_node_inclusion
    from interp.degradations import CalibrationConfig

    pd.set_option("display.width", 220)
    pd.set_option("display.max_columns", 20)
    model, task = interp.organisms.load("induction")
    analyses = [CircuitTests(nodes, eval_rows=64, name=f"ct_{name}") for name, nodes in CLAIMS["induction"].items()]
    sampler = interp.TemperedPosterior(chains=chains, n_draws=1, burnin=100, seed=0, progress=False,
                                       calibration=CalibrationConfig(tolerance=0.2, max_rounds=4))
    noise = interp.WeightNoise(relative=True, draws_per_level=chains, seed=0)
    runs = [("tempered posterior", sampler, [interp.LossIncrease(x) for x in (0.1, 0.3, 1.0)]),
            ("weight noise", noise, [0.03, 0.1, 0.3])]
    for label, deg, levels in runs:
        t = time.perf_counter()
        res = interp.run_sweep(model, task, analyses, deg, levels, progress=False)
        print(f"\n== {label}: {time.perf_counter() - t:.1f} s wall")
        for a in analyses:
            rates = []
            for metric in TESTS:
                held = assess_claim(res, analysis=a.name, metric=metric)
                rates.append(held.set_index("level_index")[["delta_loss", "pass_rate"]]
                             .rename(columns={"pass_rate": metric.removesuffix("_pass")}))
            table = pd.concat(rates, axis=1)
            table = table.loc[:, ~table.columns.duplicated()]
            print(f"-- {a.name} {a.nodes}: pass rate per level (level_index -1 = w0)")
            print(table.round(3).to_string())
            inc = estimate_node_inclusion(res, analysis=a.name)
            print(inc[["level_index", "node", "n_draws", "inclusion", "cp_low", "cp_high", "necessity"]]
                  .round(3).to_string(index=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--draws", action="store_true", help="the claims over posterior and noise draws")
    parser.add_argument("--chains", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.draws:
        draws(args.chains)
    else:
        cost(args.repeats)


if __name__ == "__main__":
    main()
