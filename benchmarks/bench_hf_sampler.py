"""Benchmark: SGLD chain-steps per second on a Hugging Face GPT-2 bridge, interp vs devinterp 2.0.1.

A GPT-2-architecture model (4 layers, d_model 256, 4 heads, vocab 512, random init) is saved with
``save_pretrained`` and loaded back twice: as the plain Hugging Face module (``GPT2LMHeadModel``,
what devinterp samples: it deep-copies the model per chain, which breaks on TransformerBridges) and as
a ``TransformerBridge`` (``interp.load_model``, what interp samples). Same weights (checked: identical
logits), same batch (``--batch-size`` rows of ``--seq`` tokens), chains, steps, nβ, ε and γ, one
thread, side by side and interleaved in one run:

- devinterp: its chain loop ``devinterp.slt.sampler.sample_single_chain`` once per chain (what its
  ``sample()``/LLC entry points call, minus the zarr writing) with ``make_evaluate_fn()``;
- interp, default: ``TemperedPosterior(...).sample`` on the bridge: all chains stacked in one
  hand-batched forward (``interp.degradations.stacked.StackedForward``, which covers GPT-2 bridges;
  checked against the bridge's own gradient at w0 before use);
- interp, ``vectorize=False``: chains one after another through the bridge itself.

Memory per chain: each sampler runs in a fresh subprocess with 1 and with ``--chains`` chains, and the
resident memory the run adds at its peak is measured (RSS polled every 2 ms, minus the RSS before);
the difference divided by the extra chains is what a chain costs.

    python benchmarks/bench_hf_sampler.py [--steps 30] [--repeats 3] [--chains 4]
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

D_MODEL, LAYERS, HEADS, VOCAB, CTX = 256, 4, 4, 512, 64
NBETA, LR, GAMMA = 1000.0, 1e-6, 100.0


def build(path: Path) -> None:
    import transformers

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=LAYERS, n_embd=D_MODEL, n_head=HEADS, vocab_size=VOCAB,
                                  n_positions=CTX, bos_token_id=0, eos_token_id=0)
    transformers.GPT2LMHeadModel(cfg).eval().save_pretrained(path)


def task(rows: int, seq: int):
    import datasets

    import interp

    ids = torch.randint(0, VOCAB, (rows, seq), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[:, 0] = 0
    ds = datasets.Dataset.from_dict({"input_ids": ids.tolist(), "target_mask": mask.tolist()})
    return interp.Task("random", datasets.DatasetDict(train=ds, test=ds))


def samplers(path: Path, args: argparse.Namespace, chains: int):
    """name -> zero-argument function that runs ``chains`` chains of ``args.steps`` steps."""
    import transformers
    from devinterp.optim import SGLD
    from devinterp.slt.lm_loss import make_evaluate_fn
    from devinterp.slt.sampler import sample_single_chain

    import interp
    from interp.degradations import TemperedPosterior

    hf = transformers.GPT2LMHeadModel.from_pretrained(path).eval()
    bridge = interp.load_model(path, device="cpu", tokenizer=False)
    t = task(256, args.seq)
    ids = t.tensors("test", rows=4)["input_ids"]
    with torch.no_grad():
        diff = float((hf(ids).logits - bridge(ids)).abs().max())
    assert diff < 1e-4, f"bridge and HF module differ by {diff}"
    ds = t.dataset["train"].with_format("torch", columns=["input_ids"])
    evaluate = make_evaluate_fn()

    def devinterp() -> None:
        for c in range(chains):
            sample_single_chain(
                hf, ds, evaluate, {n: None for n, _ in hf.named_parameters()},
                num_draws=args.steps, num_burnin_steps=0, num_steps_bw_draws=1, sampling_method=SGLD,
                sampling_method_kwargs=dict(lr=LR, nbeta=NBETA, localization=GAMMA),
                chain=c, seed=c, dataloader_seed=0, batch_size=args.batch_size, device="cpu",
            )

    def ours(vectorize: bool | None):
        sampler = TemperedPosterior(nbeta=NBETA, lr=LR, localization=GAMMA, chains=chains, draws=args.steps,
                                    burnin=0, thin=1, batch_size=args.batch_size, eval_rows=0,
                                    init_batches=1, progress=False, vectorize=vectorize)

        def run() -> None:
            r = sampler.sample(bridge, t)
            assert not r.failed

        return run

    return {"devinterp": devinterp, "interp": ours(None), "interp_sequential": ours(False)}


def quiet_tqdm() -> None:
    import tqdm.auto  # devinterp prints a bar per chain: silence it for timing

    orig = tqdm.auto.tqdm.__init__

    def init(self, *a, **k):
        k["disable"] = True
        orig(self, *a, **k)

    tqdm.auto.tqdm.__init__ = init


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def memory_child(path: Path, args: argparse.Namespace) -> None:
    """Run one sampler once in this (fresh) process; print the resident memory it added at its peak
    (RSS polled every 2 ms while it runs, minus the RSS before it started), in MiB."""
    import threading

    fns = samplers(path, args, args.chains)
    before = _rss_mib()
    peak = [before]
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mib())
            time.sleep(0.002)

    th = threading.Thread(target=poll)
    th.start()
    fns[args.memory_of]()
    done.set()
    th.join()
    print(json.dumps({"extra_mib": max(peak[0], _rss_mib()) - before}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=30, help="SGLD steps per chain")
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--memory-of", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--path", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("interp").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    quiet_tqdm()
    if args.memory_of:
        memory_child(Path(args.path), args)
        return

    path = Path(tempfile.mkdtemp()) / "gpt2"
    build(path)
    fns = samplers(path, args, args.chains)
    names = ["devinterp", "interp", "interp_sequential"]
    errors: dict[str, str] = {}
    for n in names:  # warm-up, and find out what runs
        try:
            fns[n]()
        except Exception as err:  # noqa: BLE001 - reported below
            errors[n] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
    live = [n for n in names if n not in errors]
    rates: dict[str, list[float]] = {n: [] for n in live}
    for _ in range(args.repeats):  # interleaved so all see the same machine load
        for n in live:
            t = time.perf_counter()
            fns[n]()
            rates[n].append(args.chains * args.steps / (time.perf_counter() - t))

    def median(xs: list[float]) -> float:
        return sorted(xs)[len(xs) // 2]

    import transformers

    n_params = sum(p.numel() for p in transformers.GPT2LMHeadModel.from_pretrained(path).parameters())
    print(f"GPT-2-style HF model: {LAYERS} layers, d_model {D_MODEL}, vocab {VOCAB}, {n_params / 1e6:.2f}M "
          f"parameters; batch {args.batch_size}x{args.seq}, {args.chains} chains x {args.steps} steps, "
          "threads=1")
    for n in live:
        print(f"{n:18s} {median(rates[n]):7.1f} chain-steps/s   runs {[round(x, 1) for x in rates[n]]}")
    for n, e in errors.items():
        print(f"{n:18s} did not run: {e}")
    for n in live:
        if n != "devinterp" and "devinterp" in live:
            ratios = [a / b for a, b in zip(rates[n], rates["devinterp"])]
            print(f"ratio {n}/devinterp: {median(ratios):.2f}x (median of interleaved repeats)")

    # memory per chain: peak RSS of a fresh process with 1 and with C chains
    for n in live:
        peaks = []
        for c in (1, args.chains):
            out = subprocess.run(
                [sys.executable, __file__, "--memory-of", n, "--path", str(path), "--chains", str(c),
                 "--steps", "5", "--batch-size", str(args.batch_size), "--seq", str(args.seq)],
                capture_output=True, text=True, check=True)
            peaks.append(json.loads(out.stdout.strip().splitlines()[-1]))
        per_chain = (peaks[1]["extra_mib"] - peaks[0]["extra_mib"]) / max(args.chains - 1, 1)
        print(f"memory {n:18s} sampling adds {peaks[0]['extra_mib']:.1f} MiB (1 chain), "
              f"{peaks[1]['extra_mib']:.1f} MiB ({args.chains} chains): {per_chain:.1f} MiB per extra chain "
              f"(the model is {n_params * 4 / 2**20:.1f} MiB in float32)")


if __name__ == "__main__":
    main()
