"""Benchmark: probes for every layer of MiniLM at once (batched torch ridge) vs scikit-learn layer by layer.

Data: the MiniLM organism's subject-number sentences ("The {noun} {verb} {rest}.", its 24 nouns and 8
verbs) with 12 sentence endings instead of 6 (4,608 sentences), every non-padding token an example
labelled with the subject's number; the organism's held-out nouns are the test set (the train split's
nouns are the CV groups). Activations at all 7 probe layers (embedding, 5 intermediate resid_pre, the
final resid_post) are captured once; both methods see the same tensors.

* ours: :func:`analyses.probing.fit_ridge`, all layers batched, λ chosen per layer by 5-fold CV on
  held-out nouns over 6 values (30 fits per layer), then the final fit;
* scikit-learn: ``LogisticRegression`` per layer on standardised features, C = 1 (no CV), with
  ``lbfgs`` (the default) and ``newton-cholesky``.

One thread for everyone (``torch.set_num_threads(1)``, ``threadpoolctl``); timings are the median of
``--repeats`` interleaved runs. Prints held-out accuracy per layer for each method and the ratios.

    python benchmarks/bench_probing.py --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


OURS = "torch logistic, all layers batched (fit_logistic_batched, C=1)"
RESTS = [
    "here", "every day", "in the park", "near the river", "after dinner", "very quietly",
    "at night", "in the morning", "with friends", "all the time", "on the hill", "again",
]


def build(model, task):
    import hooks
    from analyses.probing import layer_point
    from interp.organisms import minilm

    tok = model.tokenizer
    test_nouns = set(task.dataset["test"]["noun"])
    rows = []
    for n_s, n_p in minilm.NOUNS:
        for v_s, v_p in minilm.VERBS:
            for rest in RESTS:
                rows.append((f"The {n_s} {v_s} {rest}.", 0, n_s))
                rows.append((f"The {n_p} {v_p} {rest}.", 1, n_s))
    enc = tok([r[0] for r in rows], padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    points = [layer_point(model, layer) for layer in range(model.cfg.n_layers + 1)]
    feats = []
    with torch.no_grad():
        for s in range(0, len(ids), 256):
            acts = hooks.capture(model, ids[s : s + 256], points, attention_mask=mask[s : s + 256])
            feats.append(torch.stack([acts[p] for p in points]))
    x = torch.cat(feats, 1)  # [layer, sentence, pos, d]
    keep = mask.bool()
    x = x[:, keep]  # [layer, token, d]
    label = torch.tensor([r[1] for r in rows])[:, None].expand_as(mask)[keep]
    nouns = [r[2] for r in rows]
    noun_id = torch.tensor([sorted(set(nouns)).index(n) for n in nouns])[:, None].expand_as(mask)[keep]
    is_test = torch.tensor([n in test_nouns for n in nouns])[:, None].expand_as(mask)[keep]
    return x, label, noun_id, is_test


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    import interp
    from analyses.probing import fit_logistic_batched, fit_ridge

    model, task = interp.organisms.load("minilm")
    x, y, groups, is_test = build(model, task)
    xtr, ytr, gtr = x[:, ~is_test], y[~is_test], groups[~is_test]
    xte, yte = x[:, is_test], y[is_test]
    n_layers = x.shape[0]
    print(f"examples: {x.shape[1]} tokens ({xtr.shape[1]} train, {xte.shape[1]} test), "
          f"{n_layers} layers x d={x.shape[2]}")

    def ours():
        probe = fit_logistic_batched(xtr, ytr, C=1.0)
        return probe.accuracy(xte, yte).tolist()

    def ridge():
        probe = fit_ridge(xtr, ytr, groups=gtr, folds=5)
        return probe.accuracy(xte, yte).tolist()

    def sk(solver):
        def run():
            accs = []
            for layer in range(n_layers):
                a, b = xtr[layer], xte[layer]
                mu, sd = a.mean(0), a.std(0).clamp_min(1e-6)
                za, zb = ((a - mu) / sd).double().numpy(), ((b - mu) / sd).double().numpy()
                m = LogisticRegression(C=1.0, solver=solver, max_iter=2000).fit(za, ytr.numpy())
                accs.append(float(np.mean(m.predict(zb) == yte.numpy())))
            return accs
        return run

    methods = {OURS: ours, "torch ridge (all layers, 5-fold CV over 6 λ)": ridge, "sklearn lbfgs": sk("lbfgs"),
               "sklearn newton-cholesky": sk("newton-cholesky")}
    times: dict[str, list[float]] = {k: [] for k in methods}
    accs: dict[str, list[float]] = {}
    with threadpool_limits(limits=1):
        for _ in range(args.repeats):
            for name, fn in methods.items():
                t = time.perf_counter()
                accs[name] = fn()
                times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med[OURS]
    print("\n| method | median s | ratio (time / ours) | held-out accuracy per layer L0..L6 |")
    print("|---|---|---|---|")
    for name in methods:
        acc = " ".join(f"{a:.3f}" for a in accs[name])
        print(f"| {name} | {med[name]:.2f} | {med[name] / base:.1f} | {acc} |")
    ours_acc = torch.tensor(accs[OURS])
    for name in ("sklearn lbfgs", "sklearn newton-cholesky"):
        diff = (ours_acc - torch.tensor(accs[name])).abs().max().item()
        print(f"max |accuracy difference| vs {name}: {100 * diff:.2f} points")


if __name__ == "__main__":
    main()
