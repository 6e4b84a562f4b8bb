"""Memory for stacked chains: the free memory of a device, and the measured peak of a computation.

Stacked SGLD chains (:mod:`interp.degradations._batched`) hold every chain's weights, gradients, noise
and activations at once, so their memory grows linearly in the number of chains C:

    M(C) ≈ M_base + C·m_chain

The sampler measures M(2) (and M(1) when the budget binds) on the model at hand, solves for
``m_chain`` and ``M_base``, adds the per-chain state the step keeps between steps (weights, w − w0 and
the noise: 3 float copies of the sampled weights, 5 with RMSProp's running mean and preconditioner),
and stacks as many chains per batch as fit in the budget (default :data:`MEMORY_FRACTION` of the
device's free memory: ``psutil.virtual_memory().available`` on the CPU, ``torch.cuda.mem_get_info``
on a GPU); fewer than two means chains one after another, which need only the live model.

The peak is measured, not modelled: on CUDA the caching allocator's ``max_memory_allocated``; on the
CPU a ``TorchDispatchMode`` that sums the bytes of every storage the computation creates (forward and
backward, which run on the calling thread on the CPU) while it is alive and keeps the maximum.

Example::

    >>> import torch
    >>> x = torch.ones(256, 256, requires_grad=True)
    >>> peak = measure_peak_bytes(lambda: torch.autograd.grad((x @ x).sum(), x), torch.device("cpu"))
    >>> peak >= 2 * 256 * 256 * 4        # the product and the gradient, float32
    True
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

logger = logging.getLogger("interp.degradations")

__all__ = ["MEMORY_FRACTION", "free_memory_bytes", "measure_peak_bytes"]

#: The share of the free memory stacked chains may use when no ``memory_budget`` is given.
MEMORY_FRACTION = 0.5


def free_memory_bytes(device: torch.device) -> int:
    """Bytes free on ``device`` now: ``torch.cuda.mem_get_info`` on a GPU; on the CPU the memory
    available to new processes (``psutil``, else ``MemAvailable`` of ``/proc/meminfo``)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover - psutil is a dependency
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    raise RuntimeError("cannot read the free memory (no psutil, no /proc/meminfo MemAvailable)")


class _LiveBytes:
    """A ``TorchDispatchMode`` (built lazily) that tracks the bytes of storages created inside it."""

    def __new__(cls) -> Any:
        from torch.multiprocessing.reductions import StorageWeakRef
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten

        class Mode(TorchDispatchMode):
            def __init__(self) -> None:
                super().__init__()
                self.live: dict[int, tuple[Any, int]] = {}
                self.now = self.peak = 0

            def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
                out = func(*args, **(kwargs or {}))
                for key in [k for k, (ref, _) in self.live.items() if ref.expired()]:
                    self.now -= self.live.pop(key)[1]
                inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                          if isinstance(t, torch.Tensor) and t.device.type != "meta"}
                for t in tree_flatten(out)[0]:
                    if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                        continue
                    st = t.untyped_storage()
                    ptr, n = st.data_ptr(), st.nbytes()
                    if n == 0 or ptr in inputs or ptr in self.live:
                        continue  # a view or an in-place result of something already counted
                    self.live[ptr] = (StorageWeakRef(st), n)
                    self.now += n
                    self.peak = max(self.peak, self.now)
                return out

        return Mode()


def measure_peak_bytes(fn: Callable[[], Any], device: torch.device) -> int:
    """Run ``fn()`` once and return the peak of the memory it allocated beyond what existed before
    (bytes; what it returns counts while alive)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return max(0, int(torch.cuda.max_memory_allocated(device)) - before)
    mode = _LiveBytes()
    with mode:
        fn()
    return int(mode.peak)
