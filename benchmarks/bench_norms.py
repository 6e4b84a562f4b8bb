"""Benchmark: peak memory and time of streamed residual norms vs ``run_with_cache`` on ≥ 50k tokens.

Three ways to get the same per-layer norms, each in a fresh subprocess (peak RSS is per process):

- ``stream``: :func:`analyses.norms.profile_norms` (batches of 64 rows through ``hooks.capture``; only
  per-token scalars are kept), with the write norms;
- ``cache_points``: one ``run_with_cache(names_filter=<the same points>)`` over all rows, norms from it;
- ``cache_all``: one ``run_with_cache`` of every hook over all rows (the whole cache), norms from it.

Memory: peak resident set (``resource.getrusage(...).ru_maxrss``) minus the resident set just before
the measured call (model and token ids already loaded), in MiB. ``tracemalloc`` is not used: it does
not see torch's tensor allocations. Time: wall seconds of the call, one thread. The stream's stream
norms are checked against the cache's (relative difference printed).

Run::

    python benchmarks/bench_norms.py [--tokens 50000] [--models induction minilm] [--modes ...]

Warning: MiniLM ``cache_all`` on 50k tokens peaks at about 17 GiB (``cache_points`` about 10 GiB): on
a shared machine check free memory first, or pass ``--modes stream cache_points``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _data(name: str, tokens: int):
    import torch

    import interp

    model, task = interp.organisms.load(name)
    parts = [task.tensors(s) for s in ("train", "test")]
    ids = torch.cat([p["input_ids"].long() for p in parts])
    mask = torch.cat([p["attention_mask"].long() for p in parts]) if "attention_mask" in parts[0] else None
    per_row = ids.shape[1] if mask is None else float(mask.sum(1).float().mean())
    rows = int(-(-tokens // per_row))
    reps = -(-rows // len(ids))
    ids = ids.repeat(reps, 1)[:rows]
    mask = None if mask is None else mask.repeat(reps, 1)[:rows]
    return model, ids, mask


def child(name: str, mode: str, tokens: int) -> dict:
    import torch

    import hooks
    from analyses.norms import _layout, profile_norms

    torch.set_num_threads(1)
    model, ids, mask = _data(name, tokens)
    n_tokens = int(ids.numel() if mask is None else mask.sum())
    layout = _layout(model)
    kw = {} if mask is None else {"attention_mask": mask}
    base = _rss_mib()
    t = time.perf_counter()
    with torch.no_grad():
        if mode == "stream":
            prof = profile_norms(model, ids, mask, batch_size=64)
            means = [prof.mean(f"L{i}") for i in range(layout.n_layers + 1)]
        else:
            names = [hooks.resolve(model, p).name for p in layout.points(True)]
            if mode == "cache_points":
                _, cache = model.run_with_cache(ids, names_filter=lambda n: n in names, **kw)
            else:
                _, cache = model.run_with_cache(ids, **kw)
            keep = torch.ones(ids.shape, dtype=torch.bool) if mask is None else mask.bool().clone()
            keep[:, 0] = False
            means = [float(cache[names[i]].norm(dim=-1)[keep].double().mean()) for i in range(layout.n_layers + 1)]
            n_cached = len(cache)
    wall = time.perf_counter() - t
    out = {"model": name, "mode": mode, "tokens": n_tokens, "rows": len(ids), "peak_mib": _peak_mib() - base,
           "wall_s": wall, "means": means}
    if mode != "stream":
        out["cached_tensors"] = n_cached
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=50_000)
    ap.add_argument("--models", nargs="+", default=["induction", "minilm"])
    ap.add_argument("--modes", nargs="+", default=["stream", "cache_points", "cache_all"],
                    choices=["stream", "cache_points", "cache_all"])
    ap.add_argument("--child", nargs=2, metavar=("MODEL", "MODE"))
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.tokens)))
        return
    rows = []
    for name in args.models:
        for mode in dict.fromkeys(["stream", *args.modes]):
            proc = subprocess.run(
                [sys.executable, __file__, "--tokens", str(args.tokens), "--child", name, mode],
                capture_output=True, text=True,
            )
            if proc.returncode != 0:
                print(f"{name} {mode} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"≥ {args.tokens} tokens per model; 1 thread; peak RSS above the pre-call RSS, fresh process per row")
    print()
    print("| model | method | tokens | cached tensors | peak MiB | ratio to stream | wall s | max rel. diff of layer means |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ref = next(x for x in rows if x["model"] == r["model"] and x["mode"] == "stream")
        diff = max(abs(a - b) / abs(b) for a, b in zip(r["means"], ref["means"]))
        print(
            f"| {r['model']} | {r['mode']} | {r['tokens']} | {r.get('cached_tensors', '-')} | {r['peak_mib']:.0f} | "
            f"{r['peak_mib'] / max(ref['peak_mib'], 1e-9):.1f} | {r['wall_s']:.1f} | {diff:.1e} |"
        )


if __name__ == "__main__":
    main()
