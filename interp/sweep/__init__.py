"""Sweeps: run analyses at the trained weights and at every draw of a degradation.

``run_sweep`` sets every analysis up on the clean weights w0, records the baseline, then for each
level and each draw the degradation yields (with the degraded weights live in the model) runs every
analysis and records its metrics, with the draw's loss on a fixed evaluation batch, so every row can
be placed on the common axis "measured loss increase" ΔL = L(w) − L(w0) (nats/token), comparable
across degradations where their native levels (nβ, σ, a checkpoint step) are not.

The package, one direction of imports (each module imports only those above it)::

    identity  fingerprints of the task's and the objective's data, what differs between two identities
    store   the table schema (COLUMNS, keys), the append-only store with its job bookkeeping, the out lock
    kernel  input checks, seeding, analysis setup, loss, one draw's rows, config identity, weights digest
    local   LocalExecutor: the in-process loop          ray   RayExecutor, ModelRecipe, SweepJobsFailed
    __init__  run_sweep, the Executor protocol, resolve_executor

Persistence: with ``out=DIR`` the sweep locks DIR, writes ``config.json`` (after every input has been
checked) and appends one JSON line per draw to ``rows.jsonl`` (flushed and fsynced), so a crash or
Ctrl-C loses at most the draw in flight; only the completed draws' keys stay in memory (the table is
read back from the file at the end). Calling ``run_sweep`` again with the same ``out`` and the same
configuration resumes: completed draws are not re-analysed (the degradation still replays its
chains, which are deterministic given its seed); a different configuration in an existing ``out`` is
an error naming what differs, never a merge. The configuration's identity holds SHA-256 fingerprints
of the task's rows and of a posterior objective's rows (another corpus or split under the same task
name is refused), each analysis's name and parameters, and the ``version`` a user's analysis
declares (bump it when its output changes meaning). A second sweep writing into the same ``out`` at
the same time is refused. Every input, the degradation resolved against the model included
(``restrict`` patterns, hook points, checkpoint files), is checked before anything is written.

After the sweep (and on every failure path, Ctrl-C included) the degradation's draw iterator is
closed, so the model is back at w0 and its hooks are gone; the weights are compared with a digest
taken before, and a change is an error naming what changed them.

Example::

    >>> import interp
    >>> model, task = interp.organisms.load("induction", n_train=64, n_test=64)
    >>> def head_norm(model, task):                                       # a plain function is an analysis
    ...     return {"norm": float(model.blocks[0].attn.W_O.detach().norm())}
    >>> res = interp.run_sweep(model, task, [head_norm], interp.WeightNoise(relative=True, draws_per_level=2),
    ...                        levels=[0.05, 0.1], eval_rows=16, progress=False)
    >>> res.summary()[["level", "metric", "n_draws", "status"]]
          level metric  n_draws status
    0  baseline   norm        1     ok
    1      0.05   norm        2     ok
    2       0.1   norm        2     ok
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from interp.sweep import kernel
from interp.sweep.kernel import weights_digest
from interp.sweep.local import LocalExecutor
from interp.sweep.ray import ModelRecipe, RayExecutor, SweepJobsFailed
from interp.sweep.store import BASELINE_KEY, COLUMNS, SETUP_KEY, read_records

__all__ = [
    "run_sweep", "weights_digest", "Executor", "resolve_executor", "LocalExecutor", "RayExecutor",
    "ModelRecipe", "SweepJobsFailed", "COLUMNS", "BASELINE_KEY", "SETUP_KEY", "read_records",
]


@runtime_checkable
class Executor(Protocol):
    """Where a sweep's draws run: :class:`LocalExecutor` (this process) or :class:`RayExecutor`.

    ``run`` gets checked inputs (analyses already wrapped as :class:`~interp.analysis.Analysis`,
    levels a non-empty list) and returns the :class:`~interp.results.Results`; every executor uses
    the same seeds, store and resume rules (``interp.sweep.kernel``, ``interp.sweep.store``), so an
    ``out`` directory started with one can be finished with another.
    """

    def run(self, model: Any, task: Any, analyses: list[Any], degradation: Any, levels: list[Any], *,
            out: str | os.PathLike | None, seed: int, eval_rows: int, progress: bool) -> Any: ...


def resolve_executor(executor: Any) -> Executor:
    """``"local"`` / ``"ray"`` / an executor instance -> the executor."""
    if isinstance(executor, Executor) and not isinstance(executor, type):
        return executor
    if executor == "local" or executor is None:
        return LocalExecutor()
    if executor == "ray":
        return RayExecutor()
    raise ValueError(
        f"executor={executor!r}: give 'local' (this process), 'ray' (a Ray cluster) or a "
        "RayExecutor(address=..., ...) instance."
    )


def run_sweep(
    model: Any,
    task: Any,
    analyses: Sequence[Any],
    degradation: Any,
    levels: Sequence[Any],
    *,
    out: str | os.PathLike | None = None,
    seed: int = 0,
    eval_rows: int = 256,
    progress: bool = True,
    executor: Any = "local",
) -> Any:
    """Run ``analyses`` at w0 and at every draw of ``degradation`` at each of ``levels``.

    Every argument is checked before any work starts and before anything is written to ``out``.

    Args:
        model: the model (its weights are changed only inside the degradation's draws), or a
            :class:`ModelRecipe` that loads it (needed by the Ray executor, which never ships a live
            model).
        task: the ``Task`` analyses and losses use.
        analyses: :class:`~interp.analysis.Analysis` objects, plain functions ``fn(model, task) ->
            dict[str, float]`` or callable objects lacking ``setup``/``effects``/``collaterals``
            (wrapped with :func:`~interp.analysis.wrap_analysis`); names must be unique.
        degradation: an object with ``draws(model, task, level)`` yielding draws with ``chain`` and
            ``draw`` fields (``TemperedPosterior``, ``WeightNoise``, ``ActivationNoise``, ``Checkpoints``).
        levels: the degradation's levels (nβ or target loss increases, σ, checkpoint steps).
        out: directory to persist rows to as they are produced, and to resume from (locked while the
            sweep runs).
        seed: seeds the analyses' own randomness, per draw (resumed runs reproduce it).
        eval_rows: test rows of the fixed batch on which every draw's loss is measured.
        progress: show progress bars (``tqdm.auto``, notebook-friendly).
        executor: ``"local"`` (default: this process), ``"ray"`` (a Ray cluster: the one this
            process is connected to, else a new local one) or a configured :class:`RayExecutor`
            (address, resources per job, retries), or any :class:`Executor`.

    Returns:
        :class:`~interp.results.Results` with the long table of every (draw, analysis, metric).

    Raises:
        ValueError: a bad argument (naming it), a different sweep already in ``out``, ``out`` in use
            by another live sweep (``interp.sweep.lock.OutDirInUse``) or a corrupt store file
            (``interp.sweep.store.StoreCorrupt``, naming the file and line and how to resume).
        SweepJobsFailed: (Ray) some (level, chain) jobs failed after their retries; the others are
            saved, the failures are listed (and in ``out/failures.json``), and running the same
            sweep again retries only what is missing.
    """
    executor = resolve_executor(executor)
    if not isinstance(model, ModelRecipe) and not _is_module(model):
        raise ValueError(f"run_sweep(model={model!r}): model must be a torch.nn.Module (e.g. the bridge "
                         "interp.organisms.load or interp.load_model returns) or a ModelRecipe.")
    analyses = kernel.prepare_analyses(analyses)
    levels = kernel.check_inputs(model, task, degradation, levels, out=out, seed=seed, eval_rows=eval_rows,
                                 progress=progress)
    return executor.run(model, task, analyses, degradation, levels, out=out, seed=seed,
                        eval_rows=eval_rows, progress=progress)


def _is_module(model: Any) -> bool:
    import torch

    return isinstance(model, torch.nn.Module)
