"""Tiny models, tasks and analyses shared by the reliability tests (test_property, test_bad_input,
test_faults) and benchmarks/bench_memory.py.

Run as a script it is the child process of the SIGKILL test: ``python tests/reliability_tiny.py
WEIGHTS OUT DEGRADATION`` runs a slow sweep with ``out=OUT`` until it finishes or is killed.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import torch

#: a 1-layer native bridge with an MLP: every kind of hook point, ~2k parameters, ~15 ms a forward
TINY_CONFIG: dict[str, Any] = {
    "d_model": 16, "d_head": 4, "n_heads": 2, "n_layers": 1, "n_ctx": 10, "d_vocab": 12, "d_mlp": 32,
    "act_fn": "gelu", "normalization_type": "LN", "seed": 0, "model_name": "tiny",
}


def tiny_bridge(seed: int = 0):
    """A freshly built 1-layer bridge (eval mode), deterministic in ``seed``."""
    from interp.organisms._weights import build_native

    return build_native({**TINY_CONFIG, "seed": seed}).eval()


def tiny_task(n: int = 24, length: int = 10, vocab: int = 12, seed: int = 0, name: str = "tiny"):
    """Random token rows with a repeated second half (scored), a ``label`` column (first token even)
    and a ``period`` column."""
    import datasets

    from interp.tasks import Task

    g = torch.Generator().manual_seed(seed)
    half = length // 2
    first = torch.randint(0, vocab, (2 * n, half), generator=g)
    ids = torch.cat([first, first], 1)[:, :length]
    mask = torch.zeros_like(ids)
    mask[:, half:] = 1
    cols = {"input_ids": ids.tolist(), "target_mask": mask.tolist(),
            "label": (first[:, 0] % 2).tolist(), "period": [half] * (2 * n), "pos": [length - 1] * (2 * n)}
    train = datasets.Dataset.from_dict({k: v[:n] for k, v in cols.items()})
    test = datasets.Dataset.from_dict({k: v[n:] for k, v in cols.items()})
    return Task(name, datasets.DatasetDict(train=train, test=test))


@functools.lru_cache(maxsize=1)
def induction():
    """The trained induction organism's bridge with a small task (64 train / 64 test rows)."""
    from interp.organisms import induction as ind
    from interp.organisms._weights import WEIGHTS_DIR, load_bridge

    return load_bridge(WEIGHTS_DIR / ind.WEIGHTS_FILE), ind.make_task(n_train=64, n_test=64)


class TinyLM(torch.nn.Module):
    """A plain module (no bridge) so the sampler's vectorised chains run: logits = emb[ids] @ out."""

    def __init__(self, vocab: int = 12, d: int = 6, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.emb = torch.nn.Parameter(0.5 * torch.randn(vocab, d, generator=g))
        self.out = torch.nn.Parameter(0.5 * torch.randn(d, vocab, generator=g))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.emb[ids] @ self.out


def hook_count(model: torch.nn.Module) -> int:
    """Every forward hook on the model: TransformerLens hook-point handles and raw torch hooks."""
    n = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())
    for hp in getattr(model, "hook_dict", {}).values():
        n += len(hp.fwd_hooks) + len(hp.bwd_hooks)
    return n


def state_bytes(model: torch.nn.Module) -> dict[str, bytes]:
    """Every parameter and buffer as raw bytes (bit-identity, NaN-safe)."""
    return {k: v.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()
            for k, v in model.state_dict().items()}


def model_flags(model: torch.nn.Module) -> tuple:
    """What else a degradation must restore: requires_grad flags, grads and train/eval modes."""
    return (tuple(p.requires_grad for p in model.parameters()),
            tuple(p.grad is None for p in model.parameters()),
            tuple(m.training for m in model.modules()))


class LossProbe:
    """An Analysis: the task loss on 8 test rows, and the norm of the unembedding (cheap, exact)."""

    effects = ("loss",)
    collaterals = ()

    def __init__(self, name: str = "loss_probe", sleep: float = 0.0, fail_at: int | None = None,
                 exc: type[BaseException] = RuntimeError):
        self.name, self.sleep, self.fail_at, self.exc = name, sleep, fail_at, exc
        self.calls = 0

    def setup(self, model: Any, task: Any) -> None:
        self.batch = task.tensors("test", rows=8, columns=("input_ids", "target_mask"))

    @torch.no_grad()
    def __call__(self, model: Any, task: Any) -> dict[str, float]:
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise self.exc(f"analysis failure injected at call {self.calls}")
        if self.sleep:
            time.sleep(self.sleep)
        return {"loss": float(task.loss(model, self.batch)),
                "w_norm": float(sum(p.double().pow(2).sum() for p in model.parameters()).sqrt())}


def fault_degradation(kind: str):
    """The degradations of the SIGKILL test, deterministic given their seeds."""
    from interp.degradations import TemperedPosterior, WeightNoise

    if kind == "TemperedPosterior":
        return TemperedPosterior(localization=100.0, lr=1e-4, chains=2, n_draws=3, burnin=2, batch_size=8,
                                 eval_rows=8, init_batches=2, progress=False)
    return WeightNoise(relative=True, draws_per_level=4, eval_rows=8)


FAULT_LEVELS = {"TemperedPosterior": [100.0, 300.0, 1000.0], "WeightNoise": [0.05, 0.1, 0.2]}


def fault_sweep(weights: str, out: str | None, kind: str, sleep: float):
    """The sweep the SIGKILL test kills and resumes (and runs uninterrupted as the reference)."""
    from interp.organisms._weights import load_bridge
    from interp.sweep import run_sweep

    torch.set_num_threads(1)
    model, task = load_bridge(weights), tiny_task()
    return run_sweep(model, task, [LossProbe(sleep=sleep)], fault_degradation(kind), FAULT_LEVELS[kind],
                     out=out, eval_rows=8, progress=False)


if __name__ == "__main__":
    import sys

    fault_sweep(sys.argv[1], sys.argv[2], sys.argv[3], sleep=float(sys.argv[4]))
