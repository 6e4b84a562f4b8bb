"""Per-head weight-restricted λ̂ on the induction_ngram organism: does the head-type ordering of Wang,
Hoogland, van Wingerden, Furman, Murfet (ICLR 2025) hold?

Their finding: at the end of training, induction heads have a *lower* weight-restricted λ̂ than heads
that memorise n-grams, and per-head λ̂ curves over training separate the head types (they cluster the
curves with K-means). Here: ``interp.organisms.induction_ngram`` (induction heads L1H0-L1H3, a
previous-token head L0H1, n-gram heads L0H0/L0H2/L0H3, by ``head_types``), one
``estimate_component_llcs(model, task, components=head_components(model), ...)`` per checkpoint and at the end,
on the training loss. The settings are fixed before the run (the defaults below) and the same for
every head and checkpoint; the step size is the sampler's curvature rule (``lr=None``:
ε·(B·ĥ + γ) = 0.2 per head), so every head carries the same relative discretisation bias.

Printed: the head scores, the per-head λ̂ table with 95% intervals (end of training, then per
checkpoint), and three verdicts:

1. end of training: every induction head's λ̂ below every n-gram head's (means), and whether the
   intervals separate (the largest induction upper bound below the smallest n-gram lower bound);
2. per checkpoint: the mean over induction heads against the mean over n-gram heads;
3. clustering: the exact 2-means partition (every split tried) of the per-head curves (λ̂ over the
   checkpoints, each standardised over the heads at that checkpoint) against the head types.

    flock /tmp/interp-heavy.lock python benchmarks/head_llc.py --out /tmp/head_llc.json

(defaults: checkpoints 200 and 400 and the final weights, 4 chains of 60 + 60 steps: 13.3 min on a
shared 2-core CPU; add ``--steps 100 200 400 --burnin 80 --draws 80`` for the earlier, longer run.)

``--hypothesis-nodes``: instead, the weight-restricted λ̂ of the nodes of the induction organism's
causal-scrubbing hypotheses (``analyses.scrubbing.induction.hypotheses()``: each head alone and all
together) at nβ = 151, the correct hypothesis's dissolution point under the tempered posterior
(BENCHMARKS.md, "Dissolution points"): the numbers to read beside that verdict.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time

import torch

from interp.degradations import estimate_component_llcs
from interp.organisms import induction_ngram as org


def per_head(model: torch.nn.Module, task, a: argparse.Namespace) -> dict[str, dict[str, float]]:
    est = estimate_component_llcs(model, task, components=org.head_components(model), nbeta=a.nbeta,
                                  localization=a.localization, lr=None, chains=a.chains, n_draws=a.draws,
                                  burnin=a.burnin, batch_size=a.batch_size, seed=a.seed, progress=False)
    out = {}
    for name in org.head_names(model):
        e = est[name]
        lo, hi = e.interval
        out[name] = {"mean": e.mean, "lo": lo, "hi": hi, "lr": e.lr, "failed": len(e.failed),
                     "n_weights": e.n_weights}
    return out


def two_means(curves: dict[str, list[float]]) -> tuple[set[str], set[str]]:
    """The 2-partition of the heads minimising the within-cluster sum of squares (exhaustive)."""
    names = sorted(curves)
    best, best_split = math.inf, (set(), set())
    for k in range(1, len(names)):
        for left in itertools.combinations(names[1:], k - 1):
            a = {names[0], *left}
            b = set(names) - a
            if not b:
                continue
            cost = 0.0
            for group in (a, b):
                m = [sum(curves[n][i] for n in group) / len(group) for i in range(len(curves[names[0]]))]
                cost += sum((curves[n][i] - m[i]) ** 2 for n in group for i in range(len(m)))
            if cost < best - 1e-12:
                best, best_split = cost, (a, b)
    return best_split


def hypothesis_nodes() -> None:
    from analyses.scrubbing import Head
    from analyses.scrubbing.induction import hypotheses
    from interp import organisms
    from interp.degradations import head_pattern

    model, task = organisms.load("induction")
    for name in ("correct", "wrong_heads"):
        hyp = hypotheses()[name]
        heads = sorted({(n.layer, n.head) for n in hyp.nodes() if isinstance(n, Head)})
        comps = {f"L{layer}H{h}": head_pattern(layer, h) for layer, h in heads}
        comps["all nodes"] = list(comps.values())
        t = time.perf_counter()
        est = estimate_component_llcs(model, task, components=comps, nbeta=151.0, localization=100.0, chains=4,
                                      n_draws=100, burnin=100, seed=0, progress=False)
        print(f"{name} hypothesis ({time.perf_counter() - t:.0f} s)")
        for k in comps:
            e = est[k]
            print(f"  {k:10} weights {e.n_weights:5d}  lambda-hat {e.mean:7.2f} [{e.interval[0]:.2f}, "
                  f"{e.interval[1]:.2f}]  lr {e.lr:.2e}  failed chains {len(e.failed)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nbeta", type=float, default=300.0)
    ap.add_argument("--localization", type=float, default=100.0)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--burnin", type=int, default=60)
    ap.add_argument("--draws", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, nargs="+", default=[200, 400],
                    help="shipped checkpoints to measure (the final model is always measured)")
    ap.add_argument("--out", default=None, help="write every number as JSON here")
    ap.add_argument("--hypothesis-nodes", action="store_true",
                    help="the induction organism's hypothesis nodes' λ̂ at its dissolution point instead")
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.hypothesis_nodes:
        hypothesis_nodes()
        return
    t0 = time.perf_counter()
    model, task = org.load()
    types = org.head_types(model, task)
    ind, prev = org.induction_scores(model), org.previous_token_scores(model, task)
    abl = org.ablation_effects(model, task)
    print(f"settings: nbeta={a.nbeta} localization={a.localization} lr=None (eps*(B*h+gamma)=0.2) chains={a.chains} "
          f"burnin={a.burnin} n_draws={a.draws} batch={a.batch_size} seed={a.seed}")
    print("head  type            induction  prev-token  ablation: n-gram loss  repeat loss (nats)")
    for n in org.head_names(model):
        layer, h = int(n[1]), int(n[3:])
        print(f"{n}  {types[n]:<15} {ind[layer, h]:9.3f}  {prev[layer, h]:10.3f}  {abl[n]['ngram']:21.3f}  "
              f"{abl[n]['repeat']:11.3f}")

    ckpts = dict(org.checkpoints())
    missing = [s for s in a.steps if s not in ckpts]
    if missing:
        raise SystemExit(f"--steps {missing}: not shipped; shipped checkpoints: {sorted(ckpts)}")
    models = [(s, ckpts[s]) for s in a.steps] + [(org.STEPS, model)]
    table: dict[int, dict[str, dict[str, float]]] = {}
    for step, m in models:
        t = time.perf_counter()
        table[step] = per_head(m, task, a)
        print(f"step {step}: {len(table[step])} heads in {time.perf_counter() - t:.0f} s", flush=True)

    groups = {k: [n for n in types if types[n] == k] for k in ("induction", "ngram", "previous_token")}
    print("\nper-head lambda-hat [95% interval], by step")
    print("head  type           " + "".join(f"{s:>22}" for s, _ in models))
    for n in org.head_names(model):
        cells = "".join(f"{table[s][n]['mean']:7.1f} [{table[s][n]['lo']:5.1f},{table[s][n]['hi']:5.1f}]"
                        for s, _ in models)
        print(f"{n}  {types[n]:<14} {cells}")

    final = table[org.STEPS]
    ind_means = [final[n]["mean"] for n in groups["induction"]]
    ng_means = [final[n]["mean"] for n in groups["ngram"]]
    order = max(ind_means) < min(ng_means)
    separated = max(final[n]["hi"] for n in groups["induction"]) < min(final[n]["lo"] for n in groups["ngram"])
    print(f"\n1. end of training (step {org.STEPS}): induction heads {min(ind_means):.1f}-{max(ind_means):.1f}, "
          f"n-gram heads {min(ng_means):.1f}-{max(ng_means):.1f}, previous-token head "
          f"{', '.join(format(final[n]['mean'], '.1f') for n in groups['previous_token'])}: ordering "
          f"induction < n-gram {'HOLDS' if order else 'DOES NOT HOLD'}; intervals "
          f"{'separate' if separated else 'overlap'}")
    per_step = {}
    for s, _ in models:
        mi = sum(table[s][n]["mean"] for n in groups["induction"]) / len(groups["induction"])
        mn = sum(table[s][n]["mean"] for n in groups["ngram"]) / len(groups["ngram"])
        per_step[s] = (mi, mn)
    print("2. mean lambda-hat induction vs n-gram heads per step: "
          + ", ".join(f"{s}: {mi:.1f} vs {mn:.1f}" for s, (mi, mn) in per_step.items())
          + f"; induction lower at {sum(mi < mn for mi, mn in per_step.values())}/{len(per_step)} steps")

    def standardised(names: list[str]) -> dict[str, list[float]]:
        curves = {n: [] for n in names}
        for s, _ in models:
            vals = [table[s][n]["mean"] for n in names]
            mu = sum(vals) / len(vals)
            sd = math.sqrt(sum((v - mu) ** 2 for v in vals) / len(vals)) or 1.0
            for n, v in zip(names, vals):
                curves[n].append((v - mu) / sd)
        return curves

    typed = groups["induction"] + groups["ngram"]
    a_, b_ = two_means(standardised(typed))
    match = {frozenset(a_), frozenset(b_)} == {frozenset(groups["induction"]), frozenset(groups["ngram"])}
    all_a, all_b = two_means(standardised(org.head_names(model)))
    print(f"3. 2-means of the curves (induction + n-gram heads): {sorted(a_)} | {sorted(b_)}: "
          f"{'matches' if match else 'does not match'} the head types; with every head: "
          f"{sorted(all_a)} | {sorted(all_b)}")
    total = time.perf_counter() - t0
    print(f"total {total:.0f} s")
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"settings": vars(a), "types": types, "table": {str(k): v for k, v in table.items()},
                       "ordering_holds": order, "intervals_separate": separated,
                       "per_step_means": {str(k): v for k, v in per_step.items()}, "clusters_match": match,
                       "clusters": [sorted(a_), sorted(b_)], "clusters_all": [sorted(all_a), sorted(all_b)],
                       "seconds": total}, f, indent=1)


if __name__ == "__main__":
    main()
