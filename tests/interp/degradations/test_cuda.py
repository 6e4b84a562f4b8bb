"""GPU readiness: the sampler's step loop reads nothing back to the host per step beyond one scalar,
and (on a CUDA machine only, marker ``cuda``) capture, stacked and sequential chains, calibration and
the behavioural objective run with the model on the GPU and give the CPU's numbers.

Host reads are counted by wrapping the ``torch.Tensor`` methods that copy a value to the host
(``item``, ``tolist``, ``cpu``, ``numpy``, ``__float__``, ``__int__``, ``__bool__``) on floating-point
tensors (what the model computes; the minibatch's integer ids and masks stay on the host, where the
sampler keeps its data) while a sampler runs: on a GPU each of them waits for the device (a
synchronisation). Two runs that differ only in their burn-in (k more steps, no draw among them) give
the reads per chain-step as the difference over k·chains, which the setup (L(w0), checks) cancels out
of. The allowed read is the loss, at most once per chain-step (stacked chains: once per step for all
chains): the divergence check B·(L − L0) > threshold decides on it before the update.

On CUDA the noise is drawn from the chains' CPU generators, so a chain on the GPU draws the same
numbers as on the CPU: draws agree up to float rounding (float32 here: 1e-3 on the loss), and the
deep linear network's λ̂ (Aoyagi's oracle, float32 weights and update) on the GPU equals the CPU's to
2% and Aoyagi's value to 15% (short chains), and a bfloat16 forward leaves it unchanged within its
standard error. Run them with ``pytest -m cuda tests/interp/degradations/test_cuda.py``
(``benchmarks/gpu_check.sh``); without a GPU they are skipped.
"""

from __future__ import annotations

import contextlib
import math

import pytest
import torch

import hooks
from interp.degradations import LossIncrease, NBeta, TemperedPosterior
from interp.degradations.oracles import DeepLinearNetwork, aoyagi_llc

HAS_CUDA = torch.cuda.is_available()

_READS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__")


@contextlib.contextmanager
def count_host_reads():
    """Count calls of the host-reading Tensor methods on floating-point tensors (what the model
    computes) while the block runs: yields a one-item list."""
    count = [0]
    saved = {name: getattr(torch.Tensor, name) for name in _READS}

    def wrap(fn):
        def counted(self, *args, **kwargs):
            if self.is_floating_point():
                count[0] += 1
            return fn(self, *args, **kwargs)
        return counted

    try:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, wrap(fn))
        yield count
    finally:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, fn)


def _sampler(burnin: int, **kw) -> TemperedPosterior:
    base = dict(nbeta=50.0, localization=100.0, lr=1e-4, chains=2, n_draws=2, thin=1, batch_size=8, eval_rows=8,
                init_batches=1, seed=0, progress=False)
    return TemperedPosterior(burnin=burnin, **{**base, **kw})


def _reads_per_step(model, target, extra: int = 8, **kw) -> float:
    """Host reads per chain-step: ((reads with burn-in 4 + extra) − (reads with burn-in 4)) over the
    extra non-draw steps of all chains."""
    counts = []
    for burnin in (4, 4 + extra):
        sampler = _sampler(burnin, **kw)
        with count_host_reads() as n:
            draws = list(sampler.draws(model, target))
        assert len(draws) == sampler.chains * sampler.n_draws and all(math.isfinite(d.loss) for d in draws)
        counts.append(n[0])
    return (counts[1] - counts[0]) / (extra * sampler.chains)


@pytest.mark.parametrize("vectorize", [None, False], ids=["stacked", "sequential"])
def test_step_loop_reads_one_scalar_per_step_on_the_task_loss(tiny, vectorize):
    model, task = tiny
    per_step = _reads_per_step(model, task, vectorize=vectorize)
    assert per_step <= 1.0, f"{per_step} host reads per chain-step (vectorize={vectorize}); at most the loss"


def test_step_loop_reads_one_scalar_per_step_on_the_behavioural_objective(tiny):
    from interp.objectives import Behavioural

    model, task = tiny
    obj = Behavioural(task, kind="kl", rows=16)
    per_step = _reads_per_step(model, task, objective=obj, vectorize=False)
    assert per_step <= 1.0, f"{per_step} host reads per chain-step with the behavioural KL"


def test_the_counter_sees_a_host_read():
    """The counter itself: a float() of a tensor and an .item() are two reads (so 0 above means none)."""
    x = torch.ones(3)
    with count_host_reads() as n:
        float(x.sum())
        x.max().item()
    assert n[0] == 2
    assert torch.Tensor.item is not None and float(x.sum()) == 3.0  # the methods are restored


# ------------------------------------------------------------------------------------ on a GPU
@pytest.fixture(scope="module")
def on_gpu(tiny):
    """The tiny bridge moved to CUDA (a copy: the CPU one stays for the comparisons)."""
    from reliability_tiny import tiny_bridge

    return tiny_bridge().to("cuda"), tiny[1]


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device on this machine")
def test_capture_on_cuda_matches_cpu(tiny, on_gpu):
    cpu_model, task = tiny
    gpu_model, _ = on_gpu
    ids = task.tensors("test", rows=8)["input_ids"].long()
    points = [hooks.resid_pre(0), hooks.attn_out(0), hooks.mlp_out(0), hooks.resid_post(0)]
    on_cpu = hooks.capture(cpu_model, ids, points)
    on_dev = hooks.capture(gpu_model, ids.to("cuda"), points)
    for p in points:
        assert on_dev[p].device.type == "cuda", p
        assert torch.allclose(on_dev[p].cpu(), on_cpu[p], atol=1e-4), p


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device on this machine")
@pytest.mark.parametrize("vectorize", [None, False], ids=["stacked", "sequential"])
def test_chains_on_cuda_give_the_cpu_draws(tiny, on_gpu, vectorize):
    from interp.sweep import weights_digest

    cpu_model, task = tiny
    gpu_model, _ = on_gpu
    before = weights_digest(gpu_model)
    cpu = {(d.chain, d.draw): d.loss for d in _sampler(6, vectorize=vectorize).draws(cpu_model, task)}
    dev = {(d.chain, d.draw): d.loss for d in _sampler(6, vectorize=vectorize).draws(gpu_model, task)}
    assert cpu.keys() == dev.keys()
    assert all(abs(cpu[k] - dev[k]) < 1e-3 for k in cpu), (cpu, dev)
    assert all(p.device.type == "cuda" for p in gpu_model.parameters())
    assert weights_digest(gpu_model) == before
    per_step = _reads_per_step(gpu_model, task, vectorize=vectorize)
    assert per_step <= 1.0, per_step


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device on this machine")
def test_calibration_and_behavioural_objective_on_cuda(on_gpu):
    from interp.objectives import Behavioural

    model, task = on_gpu
    obj = Behavioural(task, kind="kl", rows=16)
    sampler = TemperedPosterior(objective=obj, localization=100.0, chains=2, n_draws=2, burnin=20, thin=2,
                                batch_size=8, eval_rows=16, seed=0, progress=False, nbeta=None)
    run = sampler.draws(model, task, LossIncrease(0.02))
    draws = list(run)
    assert len(draws) == 4 and all(math.isfinite(d.loss) and d.loss > 0 for d in draws)
    assert {d.units for d in draws} == {"KL nats/token"}
    assert all(p.device.type == "cuda" for p in model.parameters())
    # the behavioural KL at a fixed nβ reads at most the loss per step on the GPU too
    assert _reads_per_step(model, task, objective=obj, vectorize=False) <= 1.0


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device on this machine")
def test_dln_oracle_llc_on_cuda_equals_cpu():
    """[5, 3, 5] at rank 0 (Aoyagi λ = 6.5), float32 weights and update on both devices, the same
    CPU-drawn noise: λ̂ on the GPU within 2% of the CPU's (float rounding only), both within 15% of
    Aoyagi's value (4 chains of 1,500 draws: the standard error is ≈ 3%)."""
    from interp.degradations import estimate_llc

    kw = dict(nbeta=1000.0, localization=10 ** 0.5, lr=6e-4, chains=4, n_draws=1500, burnin=1000,
              eval_rows=0, progress=False, seed=0)
    ests = {}
    for device in ("cpu", "cuda"):
        net = DeepLinearNetwork([5, 3, 5], 0).float().to(device)
        ests[device] = estimate_llc(net, net.loss, **kw)
        assert not ests[device].failed
    exact = aoyagi_llc([5, 3, 5], 0)
    assert abs(ests["cuda"].mean / ests["cpu"].mean - 1) < 0.02, (ests["cuda"].mean, ests["cpu"].mean)
    assert abs(ests["cuda"].mean / exact - 1) < 0.15, (ests["cuda"].mean, exact)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device on this machine")
def test_dln_oracle_llc_on_cuda_unchanged_by_bfloat16():
    """The same oracle at B = 100 on the GPU with and without a bfloat16 forward (float32 weights,
    noise and update; the same seeds): λ̂ within one standard error of the float32 one (the rounding
    of L is zero-mean and averages over the draws; tests/interp/degradations/test_autocast.py
    derives it) and within 3 standard errors + 10% of Aoyagi's value."""
    from interp.degradations import estimate_llc

    ests = {}
    for autocast in (None, "bfloat16"):
        net = DeepLinearNetwork([5, 3, 5], 1).float().to("cuda")
        ests[autocast] = estimate_llc(net, net.loss, nbeta=100.0, localization=1.0, chains=4, n_draws=300,
                                      burnin=300, progress=False, autocast=autocast)
        assert all(p.dtype == torch.float32 for p in net.parameters())
    full, low = ests[None], ests["bfloat16"]
    assert abs(low.mean - full.mean) <= full.stderr, (low.mean, full.mean, full.stderr)
    exact = aoyagi_llc([5, 3, 5], 1)
    assert abs(low.mean - exact) <= 3 * low.stderr + 0.1 * exact, (low.mean, low.stderr, exact)


def test_cuda_tests_skip_cleanly_without_a_gpu(request):
    """Without CUDA the GPU tests are collected, marked ``cuda`` and skipped (not errors)."""
    items = [i for i in request.session.items
             if getattr(i, "module", None) is request.module and i.get_closest_marker("cuda")]
    if not items:
        pytest.skip("run with the whole module to see the cuda tests")
    assert len(items) >= 4
    if not HAS_CUDA:
        assert all(any(m.name == "skipif" and m.args and m.args[0] for m in i.iter_markers()) for i in items)
