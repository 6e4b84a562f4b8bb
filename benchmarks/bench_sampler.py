"""Benchmark: SGLD chain-steps per second, interp's TemperedPosterior vs devinterp 2.0.1's sampler.

Same model (the induction organism), batch size, chain count (4), step count, nβ, ε and γ, one
thread, side by side in one run. devinterp deep-copies the model per chain, which breaks on
TransformerBridges (the copy shares hooks), so it gets an equivalent plain torch module with the same
weights (checked: identical logits). interp runs on the bridge itself, both with its default stacked
chains (``StackedForward``: all chains in one hand-batched forward) and chain by chain through the
bridge (``vectorize=False``).

    python benchmarks/bench_sampler.py [--steps 200] [--repeats 3]

devinterp's side is its chain loop ``devinterp.slt.sampler.sample_single_chain`` (what its
``sample()``/LLC entry points call once per chain, minus the zarr writing), with the HF dataset it
expects. interp's side is ``TemperedPosterior(...).sample`` with the fixed-batch evaluation off
(``eval_rows=0``) so both do one forward + backward + update per step.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import torch
import torch.nn.functional as F


class PlainAttnOnly(torch.nn.Module):
    """Plain-torch copy of a native attention-only, LayerNorm, standard-position bridge."""

    def __init__(self, bridge: torch.nn.Module) -> None:
        super().__init__()
        cfg = bridge.cfg
        om = bridge.original_model
        self.n_heads, self.d_head = cfg.n_heads, cfg.d_head
        self.embed = torch.nn.Embedding(cfg.d_vocab, cfg.d_model)
        self.pos = torch.nn.Embedding(cfg.n_ctx, cfg.d_model)
        self.ln = torch.nn.ModuleList([torch.nn.LayerNorm(cfg.d_model, eps=cfg.eps) for _ in range(cfg.n_layers)])
        self.qkvo = torch.nn.ModuleList([
            torch.nn.ModuleList([torch.nn.Linear(cfg.d_model, cfg.n_heads * cfg.d_head) for _ in range(3)]
                                + [torch.nn.Linear(cfg.n_heads * cfg.d_head, cfg.d_model)])
            for _ in range(cfg.n_layers)])
        self.ln_f = torch.nn.LayerNorm(cfg.d_model, eps=cfg.eps)
        self.unembed = torch.nn.Linear(cfg.d_model, cfg.d_vocab, bias=False)
        self.scale = om.layers[0].attn.original_component.scale
        with torch.no_grad():
            self.embed.weight.copy_(om.tok_embed.weight)
            self.pos.weight.copy_(om.pos.weight)
            for i, layer in enumerate(om.layers):
                blk = layer.original_component
                self.ln[i].load_state_dict(blk.ln1.original_component.state_dict())
                att = blk.attn.original_component
                for j, name in enumerate("qkvo"):
                    self.qkvo[i][j].load_state_dict(getattr(att, name).original_component.state_dict())
            self.ln_f.load_state_dict(om.ln_out.original_component.state_dict())
            self.unembed.weight.copy_(om.head.weight)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        B, T = ids.shape
        x = self.embed(ids) + self.pos.weight[:T]
        mask = torch.triu(torch.ones(T, T, dtype=torch.bool, device=ids.device), 1)
        for ln, (q, k, v, o) in zip(self.ln, self.qkvo):
            h = ln(x)
            qs, ks, vs = (f(h).view(B, T, self.n_heads, self.d_head).transpose(1, 2) for f in (q, k, v))
            s = (qs @ ks.transpose(-1, -2)) / self.scale
            a = s.masked_fill(mask, float("-inf")).softmax(-1)
            x = x + o((a @ vs).transpose(1, 2).reshape(B, T, -1))
        return self.unembed(self.ln_f(x))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=200, help="SGLD steps per chain")
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("interp").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    import devinterp
    from devinterp.optim import SGLD
    from devinterp.slt.lm_loss import make_evaluate_fn
    from devinterp.slt.sampler import sample_single_chain

    from interp import organisms
    from interp.degradations import TemperedPosterior

    model, task = organisms.load("induction")
    plain = PlainAttnOnly(model).eval()
    ids = task.tensors("test", rows=8)["input_ids"].long()
    with torch.no_grad():
        diff = float((plain(ids) - model(ids)).abs().max())
    assert diff < 1e-5, f"plain copy differs from the bridge by {diff}"

    nbeta, lr, gamma = 1000.0, 3e-6, 100.0
    C, S, bs = args.chains, args.steps, args.batch_size
    ds = task.dataset["train"].with_format("torch", columns=["input_ids"])
    evaluate = make_evaluate_fn()

    def run_devinterp() -> float:
        t = time.perf_counter()
        for c in range(C):
            sample_single_chain(
                plain, ds, evaluate, {n: None for n, _ in plain.named_parameters()},
                num_draws=S, num_burnin_steps=0, num_steps_bw_draws=1, sampling_method=SGLD,
                sampling_method_kwargs=dict(lr=lr, nbeta=nbeta, localization=gamma),
                chain=c, seed=c, dataloader_seed=0, batch_size=bs, device="cpu",
            )
        return C * S / (time.perf_counter() - t)

    def make(vectorize: bool | None) -> TemperedPosterior:
        return TemperedPosterior(nbeta=nbeta, lr=lr, localization=gamma, chains=C, n_draws=S, burnin=0,
                                 thin=1, batch_size=bs, eval_rows=0, init_batches=1, progress=False,
                                 vectorize=vectorize)

    def run_interp(sampler: TemperedPosterior) -> float:
        t = time.perf_counter()
        run = sampler.sample(model, task)
        assert not run.failed
        return C * S / (time.perf_counter() - t)

    stacked, sequential = make(None), make(False)  # None: the stacked path on this native bridge

    import tqdm.auto  # devinterp prints a bar per chain: silence it for timing

    orig = tqdm.auto.tqdm.__init__

    def quiet(self, *a, **k):
        k["disable"] = True
        orig(self, *a, **k)

    tqdm.auto.tqdm.__init__ = quiet
    run_devinterp(), run_interp(stacked), run_interp(sequential)  # warm-up
    rows = []
    for _ in range(args.repeats):  # interleaved so all see the same machine load
        rows.append((run_devinterp(), run_interp(stacked), run_interp(sequential)))

    def median(xs: list[float]) -> float:
        return sorted(xs)[len(xs) // 2]

    print(f"devinterp 2.0.1 sample_single_chain x{C} (plain module): {median([r[0] for r in rows]):.1f} chain-steps/s")
    print(f"interp TemperedPosterior, {C} chains stacked (bridge):    {median([r[1] for r in rows]):.1f} chain-steps/s")
    print(f"interp TemperedPosterior, {C} chains sequential (bridge): {median([r[2] for r in rows]):.1f} chain-steps/s")
    print(f"ratio stacked/devinterp: {median([r[1] / r[0] for r in rows]):.2f}x, sequential/devinterp: "
          f"{median([r[2] / r[0] for r in rows]):.2f}x   (median over {args.repeats} interleaved repeats; "
          f"batch {bs}x{ids.shape[1]}, {S} steps/chain, threads=1; runs: "
          f"{[tuple(round(x, 1) for x in r) for r in rows]})")


if __name__ == "__main__":
    main()
