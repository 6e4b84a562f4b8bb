"""Benchmark: SGLD chain-steps per second on a Hugging Face GPT-2 bridge: interp, devinterp 2.0.1 and a
plain PyTorch loop, each as a fraction of this machine's own matrix-multiply peak.

A GPT-2-architecture model (4 layers, d_model 256, 4 heads, vocab 512, random init, every dropout 0;
``--size gpt2-small``: GPT-2 small's 12 layers, d_model 768, vocab 50,257, 124.4M weights) is
saved with ``save_pretrained`` and loaded back twice: as the plain Hugging Face module
(``GPT2LMHeadModel``, what devinterp samples: it deep-copies the model per chain, puts the copy in
``train()`` mode, so dropout must be 0 for it to sample the same loss, and breaks on TransformerBridges)
and as a ``TransformerBridge`` (``interp.load_model``, what interp samples). Same weights (checked:
identical logits), same batch (``--shapes``: rows x tokens, all shapes side by side in one run), chains,
steps, nβ, ε and γ, one thread, interleaved repeats:

- devinterp: its chain loop ``devinterp.slt.sampler.sample_single_chain`` once per chain (what its
  ``sample()``/LLC entry points call, minus the zarr writing) with ``make_evaluate_fn()``;
- plain: the SGLD step written out in PyTorch on the Hugging Face module, chain after chain (the
  reference a sampler must at least match: no framework, no diagnostics);
- interp, ``vectorize=True``: ``TemperedPosterior(...).sample`` on the bridge: all chains stacked in
  one hand-batched forward (``interp.degradations.stacked.StackedForward``, checked against the
  bridge's own gradient at w0 before use); the default on the CPU up to ``STACK_CPU_MAX_WEIGHTS``
  sampled weights, so it is stacked here at every ``--size``;
- interp, ``vectorize=False``: chains one after another through the bridge itself (the default on
  the CPU above that size).

``--profile``: after the timings, one call of each interp path under ``torch.profiler``, its 12
most expensive operators (self CPU time): where stacked and chain-by-chain steps differ.

Machine peak: the median time of ``torch.matmul`` on two 2048 x 2048 float32 matrices (one thread),
2·n³ FLOP each. A chain-step costs ≈ 6 × weights × tokens FLOP (forward + backward, attention scores
left out), so each sampler's achieved FLOP/s = 6·N·tokens·(chain-steps/s), printed as a fraction of the
peak.

Memory per chain (``--memory``): each sampler runs in a fresh subprocess with 1 and with ``--chains``
chains, and the resident memory the run adds at its peak is measured (RSS polled every 2 ms, minus the
RSS before); the difference divided by the extra chains is what a chain costs.

``--steady``: every sampler is also timed at one step per chain (T_1, beside T_S at ``--steps`` S), which
separates the per-step cost from what a call pays once (set-up, L(w0), checks): steady chain-steps/s =
C·(S − 1)/(T_S − T_1), one-off = T_1 − (T_S − T_1)/(S − 1). The first (warm-up) call of each sampler
is printed too: interp checks its stacked gradient against the bridge once per model and weights
(cached), so that call carries the check.

    python benchmarks/bench_hf_sampler.py [--steps 20] [--repeats 3] [--chains 4] [--shapes 8x32,16x64] [--steady]
    python benchmarks/bench_hf_sampler.py --size gpt2-small --steps 3 --repeats 1 --chains 2 --shapes 8x32 --steady
    python benchmarks/bench_hf_sampler.py --size gpt2-small --steps 2 --repeats 1 --chains 2 --shapes 8x32 --profile
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

#: ``--size``: (d_model, layers, heads, vocabulary, context) of the benchmark's model
SIZES = {"small": (256, 4, 4, 512, 64), "medium": (512, 8, 8, 8192, 256), "gpt2-small": (768, 12, 12, 50257, 1024)}
D_MODEL, LAYERS, HEADS, VOCAB, CTX = SIZES["small"]
NBETA, LR, GAMMA = 1000.0, 1e-6, 100.0


def build(path: Path) -> None:
    import transformers

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=LAYERS, n_embd=D_MODEL, n_head=HEADS, vocab_size=VOCAB,
                                  n_positions=CTX, bos_token_id=0, eos_token_id=0,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    transformers.GPT2LMHeadModel(cfg).eval().save_pretrained(path)


def task(rows: int, seq: int):
    import datasets

    import interp

    ids = torch.randint(0, VOCAB, (rows, seq), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[:, 0] = 0
    ds = datasets.Dataset.from_dict({"input_ids": ids.tolist(), "target_mask": mask.tolist()})
    return interp.Task("random", datasets.DatasetDict(train=ds, test=ds))


def samplers(path: Path, args: argparse.Namespace, chains: int, batch: int, seq: int):
    """name -> zero-argument function that runs ``chains`` chains of ``args.steps`` steps at ``batch`` rows
    of ``seq`` tokens."""
    import transformers
    from devinterp.optim import SGLD
    from devinterp.slt.lm_loss import make_evaluate_fn
    from devinterp.slt.sampler import sample_single_chain

    import interp
    from interp.degradations import TemperedPosterior

    hf = transformers.GPT2LMHeadModel.from_pretrained(path).eval()
    bridge = interp.load_model(path, device="cpu", tokenizer=False)
    t = task(256, seq)
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
                chain=c, seed=c, dataloader_seed=0, batch_size=batch, device="cpu",
            )

    rows = t.tensors("train", columns=("input_ids",))["input_ids"]

    def plain() -> None:  # the SGLD step in plain PyTorch on the HF module, chain after chain
        params = list(hf.parameters())
        w0 = [p.detach().clone() for p in params]
        for c in range(chains):
            gen = torch.Generator().manual_seed(c)
            for step in range(args.steps):
                x = rows[(step * batch) % len(rows):][:batch]
                loss = hf(x, labels=x).loss
                grads = torch.autograd.grad(loss, params)
                with torch.no_grad():
                    for p, g, p0 in zip(params, grads, w0):
                        drift = g.mul_(NBETA).add_(p - p0, alpha=GAMMA)
                        p.add_(drift, alpha=-LR / 2).add_(torch.randn(p.shape, generator=gen), alpha=LR**0.5)
            with torch.no_grad():
                for p, p0 in zip(params, w0):
                    p.copy_(p0)

    def ours(vectorize: bool | None):
        sampler = TemperedPosterior(nbeta=NBETA, lr=LR, localization=GAMMA, chains=chains, n_draws=args.steps,
                                    burnin=0, thin=1, batch_size=batch, eval_rows=0,
                                    init_batches=1, progress=False, vectorize=vectorize)

        def run() -> None:
            r = sampler.sample(bridge, t)
            assert not r.failed

        return run

    return {"devinterp": devinterp, "plain": plain, "interp": ours(True), "interp_sequential": ours(False)}


def matmul_peak(n: int = 2048, repeats: int = 7) -> float:
    """This machine's float32 matrix-multiply FLOP/s on the current thread count: the median time of
    ``torch.matmul`` on two n x n matrices, 2·n³ FLOP each."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    torch.matmul(a, b)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        torch.matmul(a, b)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / sorted(times)[len(times) // 2]


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

    batch, seq = parse_shape(args.shapes)
    fns = samplers(path, args, args.chains, batch, seq)
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


def parse_shape(text: str) -> tuple[int, int]:
    """``"16x64"`` -> (16, 64)."""
    try:
        rows, seq = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--shapes: {text!r} is not ROWSxTOKENS, e.g. 16x64") from None
    if rows < 1 or not 2 <= seq <= CTX:
        raise SystemExit(f"--shapes: {text!r}: rows must be >= 1 and tokens in [2, {CTX}]")
    return rows, seq


def median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


NAMES = ["devinterp", "plain", "interp", "interp_sequential"]


def bench_shape(path: Path, args: argparse.Namespace, shape: str, n_params: int, peak: float) -> None:
    batch, seq = parse_shape(shape)
    fns = samplers(path, args, args.chains, batch, seq)
    # --steady: the same samplers at one step per chain (own models), so that per-step cost and
    # one-off cost separate: steady chain-steps/s = C·(S − 1)/(T_S − T_1), one-off = T_1 − (T_S − T_1)/(S − 1)
    ones = samplers(path, argparse.Namespace(**{**vars(args), "steps": 1}), args.chains, batch, seq) if args.steady else {}
    errors: dict[str, str] = {}
    first: dict[str, float] = {}
    for n in NAMES:  # warm-up (the first call, one-off costs included), and find out what runs
        try:
            t = time.perf_counter()
            fns[n]()
            first[n] = time.perf_counter() - t
            if ones:
                ones[n]()
        except Exception as err:  # noqa: BLE001 - reported below
            errors[n] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
    live = [n for n in NAMES if n not in errors]
    rates: dict[str, list[float]] = {n: [] for n in live}
    steady: dict[str, list[float]] = {n: [] for n in live}
    oneoff: dict[str, list[float]] = {n: [] for n in live}
    for _ in range(args.repeats):  # interleaved so all see the same machine load
        for n in live:
            t = time.perf_counter()
            fns[n]()
            t_s = time.perf_counter() - t
            rates[n].append(args.chains * args.steps / t_s)
            if ones:
                t = time.perf_counter()
                ones[n]()
                t_1 = time.perf_counter() - t
                per_step = (t_s - t_1) / max(args.steps - 1, 1)  # one step of all chains
                steady[n].append(args.chains / per_step if per_step > 0 else float("nan"))
                oneoff[n].append(t_1 - per_step)
    flop = 6 * n_params * batch * seq  # per chain-step
    print(f"\nbatch {shape}: {args.chains} chains x {args.steps} steps, {flop / 1e9:.2f} GFLOP per chain-step")
    for n in live:
        r = median(rates[n])
        print(f"  {n:18s} {r:7.2f} chain-steps/s  {r * flop / 1e9:6.1f} GFLOP/s = {r * flop / peak:5.1%} of peak"
              f"   runs {[round(x, 2) for x in rates[n]]}; first call {first[n]:.2f} s")
        if ones:
            r = median(steady[n])
            print(f"  {'':18s} steady {r:7.2f} chain-steps/s = {r * flop / peak:5.1%} of peak, one-off per call "
                  f"{median(oneoff[n]):.2f} s   runs {[round(x, 2) for x in steady[n]]}")
    for n, e in errors.items():
        print(f"  {n:18s} did not run: {e}")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for n in ("interp", "interp_sequential"):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                fns[n]()
            print(f"\n  {n}: one call under torch.profiler\n"
                  + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    for n in ("interp", "interp_sequential"):
        for ref in ("devinterp", "plain"):
            if n in live and ref in live:
                ratios = [a / b for a, b in zip(rates[n], rates[ref])]
                line = f"  ratio {n}/{ref}: {median(ratios):.2f}x (median of interleaved repeats)"
                if ones:
                    line += f", steady {median([a / b for a, b in zip(steady[n], steady[ref])]):.2f}x"
                print(line)
    if args.memory:
        memory(path, args, shape, live, n_params)


def memory(path: Path, args: argparse.Namespace, shape: str, live: list[str], n_params: int) -> None:
    """Memory per chain: peak RSS of a fresh process with 1 and with C chains."""
    for n in live:
        peaks = []
        for c in (1, args.chains):
            out = subprocess.run(
                [sys.executable, __file__, "--memory-of", n, "--path", str(path), "--chains", str(c),
                 "--steps", "5", "--shapes", shape, "--size", args.size],
                capture_output=True, text=True, check=True)
            peaks.append(json.loads(out.stdout.strip().splitlines()[-1]))
        per_chain = (peaks[1]["extra_mib"] - peaks[0]["extra_mib"]) / max(args.chains - 1, 1)
        print(f"  memory {n:18s} sampling adds {peaks[0]['extra_mib']:.1f} MiB (1 chain), "
              f"{peaks[1]['extra_mib']:.1f} MiB ({args.chains} chains): {per_chain:.1f} MiB per extra chain "
              f"(the model is {n_params * 4 / 2**20:.1f} MiB in float32)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20, help="SGLD steps per chain")
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--shapes", default="8x32,16x64", help="comma-separated ROWSxTOKENS batches")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steady", action="store_true",
                    help="also time every sampler at one step per chain: steady-state rate and one-off cost per call")
    ap.add_argument("--memory", action="store_true", help="also measure the memory per chain (subprocesses)")
    ap.add_argument("--profile", action="store_true", help="profile one call of each interp path")
    ap.add_argument("--size", choices=sorted(SIZES), default="small",
                    help="small: 3.31M weights (default); medium: 8 layers, d_model 512, vocab 8192; "
                         "gpt2-small: GPT-2 small's 124.4M")
    ap.add_argument("--memory-of", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--path", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    global D_MODEL, LAYERS, HEADS, VOCAB, CTX
    D_MODEL, LAYERS, HEADS, VOCAB, CTX = SIZES[args.size]
    torch.set_num_threads(1)
    logging.getLogger("interp").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    quiet_tqdm()
    if args.memory_of:
        memory_child(Path(args.path), args)
        return

    import transformers

    path = Path(tempfile.mkdtemp()) / "gpt2"
    build(path)
    n_params = sum(p.numel() for p in transformers.GPT2LMHeadModel.from_pretrained(path).parameters())
    peak = matmul_peak()
    print(f"GPT-2-style HF model: {LAYERS} layers, d_model {D_MODEL}, vocab {VOCAB}, {n_params / 1e6:.2f}M "
          f"parameters, dropout 0; threads=1; matmul peak (2048x2048 float32, median) {peak / 1e9:.1f} GFLOP/s")
    for shape in args.shapes.split(","):
        bench_shape(path, args, shape.strip(), n_params, peak)
    print(f"matmul peak after the run: {matmul_peak() / 1e9:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
