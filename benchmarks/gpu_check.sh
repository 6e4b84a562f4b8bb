#!/usr/bin/env bash
# GPU check (the day a GPU is lent), under 5 minutes on one H100-class GPU:
#   1. the cuda-marked tests (tests/interp/degradations/test_cuda.py): capture, stacked and sequential chains with the CPU's
#      draws, calibration and the behavioural objective on CUDA, the DLN oracle's λ̂ CUDA vs CPU;
#   2. the sampler on the GPU: SGLD chain-steps per second of interp's TemperedPosterior on a
#      GPT-2-small-sized Hugging Face bridge (12 layers, d_model 768, 124M weights, random init,
#      dropout 0; batch ROWSxTOKENS, stacked chains with and without a bfloat16 forward, sequential
#      chains), and the achieved FLOP/s
#      (≈ 6 × weights × tokens per chain-step) as a fraction of the GPU's own float32 matmul peak
#      (TF32 off; measured here on 8192 x 8192 matrices);
#   3. benchmarks/bench_hf_sampler.py at one shape (interp vs devinterp vs a plain loop), with
#      --device cuda when that benchmark offers it, else on the CPU as it is.
# Usage: bash benchmarks/gpu_check.sh [ROWSxTOKENS]     (default 16x64; exits 1 without a GPU)
# GPU_CHECK_DEVICE=cpu GPU_CHECK_SMALL=1 runs part 2 on a tiny model on the CPU (a smoke test of this
# script on a machine without a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
SHAPE="${1:-16x64}"
DEVICE="${GPU_CHECK_DEVICE:-cuda}"
if [ "$DEVICE" = cuda ]; then
  python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: no CUDA device here; nothing to check')"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  echo "== 1. cuda tests"
  timeout 200 python -m pytest -q -m cuda tests/interp/degradations/test_cuda.py -p no:cacheprovider
fi
echo "== 2. sampler on $DEVICE, GPT-2-small-sized bridge, batch $SHAPE"
timeout 150 python - "$SHAPE" "$DEVICE" "${GPU_CHECK_SMALL:-0}" <<'EOF'
import sys, tempfile, time

import torch
import transformers

import datasets

import interp
from interp.degradations import TemperedPosterior, select_parameters

shape, device, small = sys.argv[1], torch.device(sys.argv[2]), sys.argv[3] == "1"
rows, tokens = (int(x) for x in shape.split("x"))
torch.backends.cuda.matmul.allow_tf32 = False


def sync():
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(n: int) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    sync()
    times = []
    for _ in range(10):
        t = time.perf_counter(); a @ b; sync(); times.append(time.perf_counter() - t)
    return 2 * n ** 3 / sorted(times)[len(times) // 2]


size = dict(n_layer=2, n_embd=64, n_head=4) if small else dict(n_layer=12, n_embd=768, n_head=12)
cfg = transformers.GPT2Config(vocab_size=50257, n_positions=max(64, tokens), resid_pdrop=0.0, embd_pdrop=0.0,
                              attn_pdrop=0.0, **size)
torch.manual_seed(0)
path = tempfile.mkdtemp(prefix="gpu-check-")
transformers.GPT2LMHeadModel(cfg).eval().save_pretrained(path)
model = interp.load_model(path, device=device, tokenizer=False)
n_weights = sum(p.numel() for _, p, _ in select_parameters(model))  # each weight once (c_attn's views)
g = torch.Generator().manual_seed(0)
ids = torch.randint(0, 1000, (4 * rows, tokens), generator=g)
ds = datasets.Dataset.from_dict({"input_ids": ids.tolist(), "target_mask": torch.ones_like(ids).tolist()})
task = interp.Task("random", datasets.DatasetDict(train=ds, test=ds))
peak = matmul_peak(1024 if small else 8192)
print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}), "
      f"{n_weights / 1e6:.1f}M weights, float32 matmul peak {peak / 1e12:.2f} TFLOP/s")
chains, steps = 4, 20
for vectorize, autocast in ((None, None), (None, "bfloat16"), (False, None)):
    walls = []
    for burnin in (4, 4 + steps):  # the difference is `steps` chain-steps per chain, setup cancelled
        sampler = TemperedPosterior(nbeta=100.0, localization=100.0, lr=1e-6, chains=chains, n_draws=1,
                                    burnin=burnin, batch_size=rows, eval_rows=0, init_batches=1, seed=0,
                                    progress=False, vectorize=vectorize, autocast=autocast)
        sync()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        draws = list(sampler.draws(model, task))
        sync()
        walls.append(time.perf_counter() - t)
        assert all(d.loss == d.loss for d in draws), "a NaN draw"
    rate = chains * steps / (walls[1] - walls[0])
    flops = 6 * n_weights * rows * tokens * rate
    mem = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if device.type == "cuda" else ""
    name = ("stacked" if vectorize is None else "sequential") + (f", {autocast} forward" if autocast else "")
    print(f"{name}: {rate:.2f} chain-steps/s, "
          f"{flops / 1e12:.3f} TFLOP/s = {flops / peak:.1%} of the matmul peak{mem}")
EOF
if [ "$DEVICE" = cuda ]; then
  echo "== 3. bench_hf_sampler.py at $SHAPE"
  if python benchmarks/bench_hf_sampler.py --help | grep -q -- "--device"; then
    timeout 150 python benchmarks/bench_hf_sampler.py --shapes "$SHAPE" --steps 10 --repeats 1 --device cuda
  else
    timeout 150 python benchmarks/bench_hf_sampler.py --shapes "$SHAPE" --steps 10 --repeats 1
  fi
fi
