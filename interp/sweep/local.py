"""The in-process executor: every draw of every level in this process, one after another.

For each level ℓ the degradation's draws are iterated with the degraded weights live in the model;
each draw's loss and divergence from w0 are measured on the fixed evaluation batch and every
analysis is run and stored
(``interp.sweep.kernel``, ``interp.sweep.store``). The draw iterator is closed in a ``finally`` on
every path (an exception, Ctrl-C), so its own ``finally`` restores w0 and removes its hooks at once,
also when the caller keeps the exception (and with it this frame) alive, as IPython does.

The progress bar (``tqdm.auto``) spans the whole sweep, so its ETA is the sweep's: it counts the
units the degradation's ``work(levels)`` declares (draws by default; SGLD steps, calibration pilots,
burn-in and thinning included, for the tempered posterior).

Example::

    >>> from interp import organisms
    >>> from interp.degradations import WeightNoise
    >>> from interp.sweep import LocalExecutor, run_sweep
    >>> model, task = organisms.load("induction", n_train=16, n_test=16)
    >>> def evaluate(model, task):                         # an analysis: held-out loss and accuracy
    ...     return task.evaluate(model)
    >>> res = run_sweep(model, task, [evaluate], WeightNoise(draws_per_level=2), [0.1],
    ...                 executor=LocalExecutor(), eval_rows=16, progress=False)
    >>> len(res.draws), sorted(res.table["metric"].unique())
    (2, ['accuracy', 'loss'])
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

from interp.sweep import kernel
from interp.sweep.store import BASELINE_KEY, Store

__all__ = ["LocalExecutor"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalExecutor:
    """Every job in this process, in order (the default; ``executor="local"``)."""

    def run(self, model: Any, task: Any, analyses: list[Any], degradation: Any, levels: list[Any], *,
            out: str | os.PathLike | None, seed: int, eval_rows: int, progress: bool) -> Any:
        """The sweep of :func:`~interp.sweep.run_sweep` in this process; ``model`` may be a
        :class:`~interp.sweep.ray.ModelRecipe` (loaded here)."""
        from tqdm.auto import tqdm

        from interp.sweep.ray import ModelRecipe

        if isinstance(model, ModelRecipe):
            model = model.load()
        digest = kernel.weights_digest(model)
        deg_name = kernel.degradation_name(degradation)
        config = kernel.sweep_config(task, analyses, degradation, levels, seed, eval_rows, digest)
        store = Store(out, config)
        blame = "an analysis changed them in setup()"
        try:  # everything after the lock is taken runs inside it, so every failure releases the lock
            batch = kernel.eval_batch(task, eval_rows)
            kernel.setup_analyses(analyses, model, task, seed, digest)
            blame = "an analysis changed them at the trained weights (its __call__ must leave them as they are)"
            base_loss = kernel.measure_loss(model, task, batch)
            meter = kernel.divergence_meter(model, task, eval_rows)  # at w0: its reference outputs
            if not store.done(BASELINE_KEY):
                rows = kernel.analyse(analyses, model, task, BASELINE_KEY, None, base_loss, base_loss, seed,
                                      deg_name, divergence=0.0)
                if kernel.weights_digest(model) != digest:
                    raise RuntimeError(f"The model's weights differ from before the sweep: {blame}.")
                store.add(BASELINE_KEY, rows, {})
            blame = (f"the degradation did not restore them ({type(degradation).__name__}), or an analysis "
                     "changed them at a draw")
            work = _Work(degradation, levels)
            bar = tqdm(total=work.total, desc=deg_name, unit=work.unit, disable=not progress)
            try:
                for li, level in enumerate(levels):
                    if store.level_complete(li):
                        bar.update(work.expected[li])  # finished in an earlier run
                        continue
                    bar.set_description(f"{deg_name} level {li + 1}/{len(levels)} ({level})", refresh=False)
                    n = 0
                    draws = degradation.draws(model, task, level)
                    try:
                        with kernel.calibration_progress(bar, level, progress) as shown:
                            for draw in draws:
                                if n == 0:
                                    shown.sampling()  # calibrated (if it had to be): sampling now
                                    work.calibrated(bar, li, draws)
                                n += 1
                                key = (li, int(draw.chain), int(draw.draw))
                                if not store.done(key):
                                    loss = kernel.measure_loss(model, task, batch)
                                    div = kernel.measure_divergence(meter, model)
                                    rows = kernel.analyse(analyses, model, task, key, level, loss, base_loss, seed,
                                                          deg_name, divergence=div)
                                    store.add(key, rows, kernel.draw_record(draw))
                                bar.update(work.advance(li, draw))
                    finally:
                        kernel.close_draws(draws)  # restores w0 now, on every path
                    work.finish(bar, li)  # failed chains yield fewer draws
                    store.finish_level(li, kernel.level_info(draws))
            finally:
                bar.close()
        finally:
            store.close()
            if kernel.weights_digest(model) != digest:
                msg = (f"The model's weights differ from before the sweep: {blame}. Results up to here are "
                       f"in {out or 'memory'}.")
                if sys.exc_info()[0] is None:
                    raise RuntimeError(msg)
                log.error(msg)  # do not mask the exception in flight
        return kernel.make_results(store, config)


class _Work:
    """The sweep's progress bar over the units the degradation's ``work(levels)`` counts (one per
    draw by default; SGLD steps, calibration pilots included, for the sampler), so that its ETA is
    the whole sweep's: the total is corrected as levels report what they did."""

    def __init__(self, degradation: Any, levels: list[Any]) -> None:
        self.units = degradation.work(levels)
        expected = getattr(self.units, "expected", None)
        if not isinstance(expected, list) or len(expected) != len(levels):
            raise ValueError(f"{type(degradation).__name__}.work(levels) returned {self.units!r}: it must return an "
                             f"interp.degradations.Work with one expected count per level ({len(levels)}); "
                             "subclass Work, or drop work() for the default of one unit per draw.")
        self.unit = self.units.unit
        self.expected = expected  # the units' own list: started() may correct a level's entry
        self.total = self.units.total
        self.done = [0] * len(levels)

    def calibrated(self, bar: Any, li: int, draws: Any) -> None:
        """A level's first draw: what it did before (a calibration) is over; count it."""
        before = self.expected[li]
        ran = self.units.started(li, draws)
        if before is not None and self.expected[li] is not None and bar.total is not None:
            bar.total += self.expected[li] - before
        self.done[li] += ran
        bar.update(ran)

    def advance(self, li: int, draw: Any) -> int:
        """How far one draw moves the bar."""
        n = self.units.advance(li, draw)
        self.done[li] += n
        return n

    def finish(self, bar: Any, li: int) -> None:
        """A level is over: what it did not do (failed chains stop early) leaves the total."""
        if self.expected[li] is None or self.done[li] == self.expected[li] or bar.total is None:
            return
        bar.total = max(bar.n, bar.total - self.expected[li] + self.done[li])
        self.expected[li] = self.done[li]
        bar.refresh()
