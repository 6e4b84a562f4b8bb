"""Shared test fixtures: the model organisms, the tiny offline model, and torch's thread count.

- ``organism``: the trained induction organism and its task, ``interp.organisms.load("induction")``,
  loaded once per test module (a module may still define its own ``organism`` fixture, which wins).
- ``modadd``: the modular-addition organism and its task, once per test module.
- ``tiny``: a tiny native bridge and its repeated-token task (``reliability_tiny``), once per module.
- torch's intra-op thread count never leaks from one test module to the next. Each module's tests run
  with its ``TORCH_THREADS`` attribute if it has one, else with ``DEFAULT_THREADS`` (1: the models here
  are tiny, and default threading oversubscribes a busy 2-core machine; the notebook test measured a
  sweep cell at 349 s with default threads against 30 s with one; ``INTERP_TEST_THREADS=N`` changes
  it), and the count is put back after the module. A module sets ``TORCH_THREADS = N`` instead of
  calling ``torch.set_num_threads`` at import time, which would change it for every module collected
  after it.

The fast lane skips the tests marked ``slow``: ``python -m pytest -q -m "not slow"``.
"""

from __future__ import annotations

import os

import pytest
import torch

#: the thread count before any test module was imported
_INITIAL_THREADS = torch.get_num_threads()
#: threads for a module's tests unless it sets TORCH_THREADS
DEFAULT_THREADS = int(os.environ.get("INTERP_TEST_THREADS", "1"))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Undo any ``torch.set_num_threads`` a test module made while it was being imported."""
    torch.set_num_threads(_INITIAL_THREADS)


@pytest.fixture(autouse=True, scope="module")
def _torch_threads_per_module(request: pytest.FixtureRequest):
    """The module's ``TORCH_THREADS`` (else ``DEFAULT_THREADS``) during its tests; the count from
    before it afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(int(getattr(request.module, "TORCH_THREADS", DEFAULT_THREADS)))
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def organism():
    """The trained induction organism: (model, task), loaded once per module."""
    import interp

    return interp.organisms.load("induction")


@pytest.fixture(scope="module")
def modadd():
    """The modular-addition organism: (model, task), loaded once per module (global seed 0 first)."""
    import interp

    torch.manual_seed(0)
    return interp.organisms.load("modadd")


@pytest.fixture(scope="module")
def tiny():
    """A tiny native bridge and its task (no organism weights), once per module."""
    from reliability_tiny import tiny_bridge, tiny_task

    return tiny_bridge(), tiny_task()


#: a small sweep file (weight noise on the induction organism, head ablation); ``{out}`` is its out
WEIGHT_NOISE_SWEEP = """
out = "{out}"
seed = 5
[model]
organism = "induction"
[degradation]
type = "WeightNoise"
relative = true
draws_per_level = 2
eval_rows = 16
[levels]
values = [0.05, 0.3]
[[analyses]]
type = "HeadAblation"
name = "induction_heads"
heads = [[1, 0], [1, 1]]
eval_rows = 16
"""


@pytest.fixture
def sweep_file():
    """``sweep_file(path, out)`` writes :data:`WEIGHT_NOISE_SWEEP` with that ``out`` to ``path``."""

    def write(path, out):
        path.write_text(WEIGHT_NOISE_SWEEP.format(out=out))
        return path

    return write
