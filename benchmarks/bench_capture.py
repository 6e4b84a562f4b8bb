"""Benchmark: ``hooks.capture`` of a few points vs ``run_with_cache(names_filter=...)``.

Both run under ``torch.no_grad()`` on the same bridge, inputs and points, one thread, interleaved
repeats, median wall time. Two point sets: one ending in the last block (early stopping cannot help)
and one in the middle of the model (``capture`` stops the forward after its last point). Prints a
Markdown table of the ratios (capture / run_with_cache; < 1 means capture is cheaper).

Run::

    python benchmarks/bench_capture.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

# run from a checkout: the repository root first on the path (an editable install made before
# hooks/ existed maps `hooks` to a namespace package)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hooks  # noqa: E402


def _native(d_model: int, n_layers: int, n_ctx: int):
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    cfg = TransformerBridgeConfig(
        d_model=d_model, d_head=d_model // 4, n_layers=n_layers, n_ctx=n_ctx, n_heads=4,
        d_vocab=512, seed=0,
    )
    return TransformerBridge.boot_native(cfg).eval()


def _gpt2(d_model: int, n_layers: int, n_ctx: int):
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import GPT2Config, GPT2LMHeadModel

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    hf = GPT2LMHeadModel(
        GPT2Config(n_layer=n_layers, n_embd=d_model, n_head=4, vocab_size=512, n_positions=n_ctx)
    ).eval()
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        return TransformerBridge.boot_transformers(d, hf_model=hf).eval()


def _time(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def bench(model, label: str, points: list[str], tokens: torch.Tensor, repeats: int) -> dict:
    names = [hooks.resolve(model, p).name for p in points]

    def rwc():
        with torch.no_grad():
            model.run_with_cache(tokens, names_filter=names)

    def cap():
        hooks.capture(model, tokens, points)

    def cap_full():
        hooks.capture(model, tokens, points, stop_early=False)

    for f in (rwc, cap, cap_full):  # warm-up
        f()
    times: dict[str, list[float]] = {"rwc": [], "cap": [], "cap_full": []}
    for _ in range(repeats):  # interleave so machine load hits all three alike
        for key, f in (("rwc", rwc), ("cap", cap), ("cap_full", cap_full)):
            times[key] += _time(f, 1)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "label": label,
        "points": points,
        "rwc_ms": 1e3 * med["rwc"],
        "cap_ms": 1e3 * med["cap"],
        "cap_full_ms": 1e3 * med["cap_full"],
        "ratio": med["cap"] / med["rwc"],
        "ratio_full": med["cap_full"] / med["rwc"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--pos", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    tokens = torch.randint(0, 512, (args.batch, args.pos))
    rows = []
    tiny = torch.randint(0, 512, (2, 16))
    for arch, build in (("native", _native), ("gpt2", _gpt2)):
        model = build(128, 4, args.pos)
        small = build(32, 4, 16)
        pts = [hooks.resid_pre(0), hooks.attn_z(1), hooks.mlp_out(2), hooks.resid_post(3)]
        rows.append(bench(small, f"{arch} d_model 32, batch 2x16 (overhead-bound), 4 points", pts, tiny, args.repeats))
        last = [hooks.resid_pre(0), hooks.attn_z(1), hooks.mlp_out(2), hooks.resid_post(3)]
        mid = [hooks.resid_pre(0), hooks.mlp_out(1)]
        rows.append(bench(model, f"{arch}, 4 points up to the last block", last, tokens, args.repeats))
        rows.append(bench(model, f"{arch}, 2 points in blocks 0-1", mid, tokens, args.repeats))
    print(f"4 layers; d_model 128 with batch {args.batch}x{args.pos} unless noted; 1 thread; median of {args.repeats}")
    print()
    print("| model, points | run_with_cache ms | capture ms | ratio | capture (no early stop) ms | ratio |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['label']} | {r['rwc_ms']:.2f} | {r['cap_ms']:.2f} | {r['ratio']:.2f} | "
            f"{r['cap_full_ms']:.2f} | {r['ratio_full']:.2f} |"
        )


if __name__ == "__main__":
    main()
