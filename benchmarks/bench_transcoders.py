"""Training throughput (tokens/s) of the TopK transcoder vs a straightforward dense implementation.

Both train the same model (TopK_k + ReLU encoder, unit-norm decoder rows, normalised-MSE loss, Adam,
decoder renormalised after each step) on the same fixed batches of activations, side by side in one
run, interleaved, one thread:

- ``interp``: ``analyses.transcoders`` (pre-activations without a graph, the k chosen ones gathered
  with a sparse backward, ``embedding_bag`` decode) through the library's own training step;
- ``dense``: the textbook version: pre-activations with autograd, ``topk``, ``scatter`` into a dense
  code, dense ``z @ W_dec`` decode, autograd backward through all of it.

AuxK is off in both (it only runs when latents are dead; its cost scales like the main path). A last
row measures ``train_transcoder`` end to end on the ``modadd`` organism (model forwards for the
buffer included). Ratios above 1 mean the library is faster.

    python benchmarks/bench_transcoders.py [--widths 512 4096 16384] [--steps 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F


class DenseTopK(torch.nn.Module):
    """The reference: a plain dense TopK transcoder."""

    def __init__(self, d_in: int, d_out: int, n: int, k: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        dec = torch.randn(n, d_out, generator=g)
        self.W_dec = torch.nn.Parameter(dec / dec.norm(dim=1, keepdim=True))
        enc = torch.randn(n, d_in, generator=g)
        self.W_enc = torch.nn.Parameter(enc / enc.norm(dim=1, keepdim=True))
        self.b_enc = torch.nn.Parameter(torch.zeros(n))
        self.b_dec = torch.nn.Parameter(torch.zeros(d_out))
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.linear(x, self.W_enc, self.b_enc)
        vals, idx = pre.topk(self.k, dim=-1)
        z = torch.zeros_like(pre).scatter(-1, idx, F.relu(vals))
        return z @ self.W_dec + self.b_dec


def make_steps(n: int, k: int, d: int, batch: int):
    from analyses.transcoders import Transcoder, TranscoderConfig
    from analyses.transcoders._train import _loss

    g = torch.Generator().manual_seed(1)
    mix = torch.randn(d, d, generator=g) / d**0.5
    xs = [torch.randn(batch, d, generator=g) for _ in range(4)]
    ys = [torch.relu(x @ mix) @ mix for x in xs]
    var_y = torch.cat(ys).var(0).sum()

    tc = Transcoder(d, d, TranscoderConfig(n_latents=n, k=k, aux_k=0, decode="sparse", batch_size=batch,
                                           buffer_tokens=batch))
    tc.initialize(torch.cat(xs), torch.cat(ys))
    opt = torch.optim.Adam(tc.parameters(), lr=1e-3)
    ref = DenseTopK(d, d, n, k)
    with torch.no_grad():
        ref.load_state_dict({k_: v for k_, v in tc.state_dict().items()})
    opt_ref = torch.optim.Adam(ref.parameters(), lr=1e-3)

    def ours(i: int) -> None:
        loss, _, _, _ = _loss(tc, xs[i % 4], ys[i % 4], var_y, var_y.sqrt(), None, 0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        tc.normalize_decoder()

    def dense(i: int) -> None:
        y_hat = ref(xs[i % 4])
        loss = (ys[i % 4] - y_hat).pow(2).sum(-1).mean() / var_y
        opt_ref.zero_grad(set_to_none=True)
        loss.backward()
        opt_ref.step()
        with torch.no_grad():
            ref.W_dec.div_(ref.W_dec.norm(dim=1, keepdim=True))

    return ours, dense


def tokens_per_s(step, steps: int, batch: int) -> float:
    step(0)  # warm-up
    t = time.perf_counter()
    for i in range(steps):
        step(i)
    return steps * batch / (time.perf_counter() - t)


def end_to_end(steps: int) -> tuple[float, float]:
    from analyses.transcoders import TranscoderConfig, train_transcoder
    from interp import organisms

    model, task = organisms.load("modadd")
    out = []
    for decode in ("sparse", "dense"):
        cfg = TranscoderConfig(n_latents=4096, k=32, steps=steps, batch_size=1024, decode=decode, progress=False)
        t = time.perf_counter()
        train_transcoder(model, task, 0, cfg)
        out.append(steps * cfg.batch_size / (time.perf_counter() - t))
    return out[0], out[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[512, 1024, 4096, 16384])
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--e2e-steps", type=int, default=60)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"d_model {args.d}, k {args.k}, batch {args.batch} tokens, {args.steps} steps x {args.repeats} "
          "interleaved repeats, median tokens/s, one thread")
    print("| latents | dense tokens/s | interp tokens/s | ratio |")
    print("|---|---|---|---|")
    for n in args.widths:
        ours, dense = make_steps(n, args.k, args.d, args.batch)
        a, b = [], []
        for _ in range(args.repeats):
            b.append(tokens_per_s(dense, args.steps, args.batch))
            a.append(tokens_per_s(ours, args.steps, args.batch))
        ma, mb = statistics.median(a), statistics.median(b)
        print(f"| {n} | {mb:,.0f} | {ma:,.0f} | {ma / mb:.2f} |", flush=True)
    if args.e2e_steps:
        s, d = end_to_end(args.e2e_steps)
        print(f"\nend to end, train_transcoder on modadd (4096 latents, k {args.k}, batch 1024, "
              f"{args.e2e_steps} steps, buffer forwards included): decode='sparse' {s:,.0f} tokens/s, "
              f"decode='dense' (sparse encoder backward, dense decode) {d:,.0f} tokens/s, ratio {s / d:.2f}")


if __name__ == "__main__":
    main()
