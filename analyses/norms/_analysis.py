"""``ResidualNorms``: the sweep analysis of residual-stream norms, its parameters and its metrics.

One-shot counterpart: :func:`analyses.norms.profile_norms` (per-token values at the current weights).
"""

from __future__ import annotations

import logging
import math
from functools import partial
from typing import Any, Literal

import torch

from analyses._base import Params
from analyses.norms._profile import (_COORDINATES, NormProfile, _layout, _notes, _weight_norms, folded_copy,
                                     log_linear_fit, profile_norms)
from interp.checks import bad_value, check_choice, check_flag, check_is_fitted, check_number

__all__ = ["ResidualNorms"]

log = logging.getLogger("analyses.norms")

_SPLITS = ("train", "test")


def _check_quantiles(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, (tuple, list)) or not all(
            isinstance(q, (int, float)) and not isinstance(q, bool) and 0.0 < q < 1.0 for q in value):
        raise bad_value(owner, name, value, "a sequence of numbers in (0, 1)",
                        "Use e.g. quantiles=(0.05, 0.95); the median is always reported.")


def _check_positions(owner: str, name: str, value: Any) -> None:
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)) or any(
            isinstance(t, bool) or not isinstance(t, int) or t < 0 for t in value):
        raise bad_value(owner, name, value, "a sequence of ints >= skip_positions (excluded positions have no "
                        "tokens)", "Lower skip_positions to see position 0.")


def _check_fit_layers(owner: str, name: str, value: Any) -> None:
    if value is None:
        return
    fl = tuple(value) if isinstance(value, (tuple, list)) else ()
    if len(fl) != 2 or any(isinstance(v, bool) or not isinstance(v, int) for v in fl) or not 0 <= fl[0] < fl[1]:
        raise bad_value(owner, name, value, "(first, last) stream points with 0 <= first < last, or None for all",
                        "Use e.g. fit_layers=(1, 6).")


class ResidualNorms(Params):
    """Per-layer residual-stream norms, write norms, growth factor (no effect/collateral claim).

    Metrics (see the module docstring): ``mean_L{l}``, ``median_L{l}``, ``q{p}_L{l}``, ``msq_L{l}``,
    ``ratio_L{l}``, ``mean_L{l}_pos{t}``; ``attn_write_L{l}``, ``mlp_write_L{l}``, ``attn_dsq_L{l}``,
    ``mlp_dsq_L{l}``; post-LN: ``ln_mean_L{l}``, ``ln_median_L{l}``, ``mid_mean_L{l}``; ``wov_L{l}``,
    ``wout_L{l}``, ``param_norm``; ``growth``, ``growth_r2``, ``fit_from``, ``fit_to``; and the
    statements ``skip_positions``, ``post_ln``, ``folded``, ``n_tokens``.

    Args:
        eval_rows: evaluation rows of ``split``.
        batch_size: rows per forward (memory is one batch's activations at the measured points).
        skip_positions: leading real tokens of each row excluded (1: BOS / [CLS]).
        quantiles: reported as ``q{100·q:g}_L{l}`` (e.g. ``q5_L0``), in (0, 1).
        positions: report ``mean_L{l}_pos{t}`` at these positions (each ≥ ``skip_positions``).
        writes: also measure the attention/MLP write norms and their squared-norm increments.
        weights: also report ``wov_L{l}``, ``wout_L{l}``, ``param_norm``.
        coordinates: ``"raw"`` (model weights as they are) or ``"folded"`` (LayerNorm folded and
            writing weights centred, on a copy: the HookedTransformer view of published numbers).
        fit_layers: ``(first, last)`` stream points of the growth fit, inclusive; ``None``: all
            (from L1 on post-LN models).
        split: ``"test"`` or ``"train"``.
        name: the analysis name in sweep results.

    Parameters are checked by :meth:`setup` (``param_constraints``). Fitted by :meth:`setup`:
    ``data_`` (the evaluation rows), ``fit_range_`` (the growth fit's stream points), ``notes_``
    (what the numbers mean on this model). One-shot counterpart: :func:`profile_norms`.
    """

    effects: tuple[str, ...] = ()
    collaterals: tuple[str, ...] = ()
    param_constraints = {
        "eval_rows": partial(check_number, integer=True, minimum=1, fix="Use e.g. eval_rows=256."),
        "batch_size": partial(check_number, integer=True, minimum=1, fix="Rows per forward, e.g. batch_size=64."),
        "skip_positions": partial(check_number, integer=True, zero_ok=True, fix="0 keeps BOS."),
        "quantiles": _check_quantiles,
        "positions": _check_positions,
        "writes": check_flag,
        "weights": check_flag,
        "coordinates": partial(check_choice, choices=_COORDINATES),
        "fit_layers": _check_fit_layers,
        "split": partial(check_choice, choices=_SPLITS),
    }

    def __init__(
        self,
        *,
        eval_rows: int = 256,
        batch_size: int = 64,
        skip_positions: int = 1,
        quantiles: tuple[float, ...] = (0.05, 0.25, 0.75, 0.95),
        positions: tuple[int, ...] = (),
        writes: bool = True,
        weights: bool = True,
        coordinates: Literal["raw", "folded"] = "raw",
        fit_layers: tuple[int, int] | None = None,
        split: str = "test",
        name: str = "norms",
    ):
        self.eval_rows, self.batch_size, self.skip_positions = eval_rows, batch_size, skip_positions
        self.quantiles, self.positions, self.writes, self.weights = quantiles, positions, writes, weights
        self.coordinates, self.fit_layers, self.split = coordinates, fit_layers, split
        self.name = name

    def validate_params(self) -> None:
        """:attr:`param_constraints`, then: every reported position is at least ``skip_positions``."""
        super().validate_params()
        if any(t < self.skip_positions for t in self.positions):
            raise bad_value("ResidualNorms", "positions", self.positions,
                            f"a sequence of ints >= skip_positions={self.skip_positions} (excluded positions "
                            "have no tokens)", "Lower skip_positions to see position 0.")

    def setup(self, model: Any, task: Any) -> None:
        self.validate_params()
        cfg = self
        self.data_ = task.tensors(cfg.split, rows=cfg.eval_rows)
        if "input_ids" not in self.data_:
            raise ValueError(f"task {getattr(task, 'name', task)!r} has no numeric input_ids column.")
        if cfg.coordinates == "folded":
            folded_copy(model)  # refuses post-LN models now rather than at the first draw
        layout = _layout(model)
        n = layout.n_layers
        width = self.data_["input_ids"].shape[1]
        too_far = [t for t in cfg.positions if t >= width]
        if too_far:
            raise ValueError(f"positions={cfg.positions!r}: {too_far} beyond the rows' length {width}.")
        first, last = cfg.fit_layers if cfg.fit_layers is not None else (1 if layout.post_ln else 0, n)
        if last > n:
            raise ValueError(f"fit_layers={cfg.fit_layers!r}: the model has stream points L0..L{n}.")
        self.fit_range_ = (first, last)
        self.notes_ = _notes(layout, cfg.skip_positions, cfg.coordinates == "folded")
        if layout.post_ln:
            log.warning("%s: %s", self.name, self.notes_)
        else:
            log.info("%s: %s", self.name, self.notes_)

    @torch.no_grad()
    def __call__(self, model: Any, task: Any) -> dict[str, float]:
        check_is_fitted(self, "data_")
        cfg = self
        prof = profile_norms(
            model, self.data_["input_ids"], self.data_.get("attention_mask"), batch_size=cfg.batch_size,
            skip_positions=cfg.skip_positions, writes=cfg.writes, coordinates=cfg.coordinates,
        )
        if prof.n_tokens == 0:
            raise ValueError(f"{self.name}: no token left after excluding {cfg.skip_positions} leading position(s) and padding.")
        return self.metrics(prof, model)

    def metrics(self, prof: NormProfile, model: Any | None = None) -> dict[str, float]:
        """Flatten a :class:`NormProfile` into this analysis's metrics (``model``: weight norms)."""
        cfg = self
        n = prof.n_layers
        qs = [0.5, *cfg.quantiles]
        out: dict[str, float] = {}
        means = prof.stream_means()
        for i in range(n + 1):
            key = f"L{i}"
            q = prof.quantile(key, qs).tolist()
            out[f"mean_L{i}"] = float(means[i])
            out[f"median_L{i}"] = q[0]
            for p, v in zip(cfg.quantiles, q[1:]):
                out[f"q{100 * p:g}_L{i}"] = v
            out[f"msq_L{i}"] = float(prof.tokens(key).double().pow(2).mean())
            if i:
                out[f"ratio_L{i}"] = float(means[i] / means[i - 1])
            if cfg.positions:
                per_pos = prof.per_position(key)
                for t in cfg.positions:
                    out[f"mean_L{i}_pos{t}"] = float(per_pos[t])
            if prof.post_ln:
                out[f"ln_mean_L{i}"] = prof.mean(f"ln_L{i}")
                out[f"ln_median_L{i}"] = float(prof.quantile(f"ln_L{i}", 0.5))
        for key in prof.values:
            if key.startswith(("attn_", "mlp_", "mid_")):
                stem, layer = key.rsplit("_L", 1)
                out[f"{stem}_mean_L{layer}" if stem == "mid" else f"{stem}_L{layer}"] = prof.mean(key)
        first, last = getattr(self, "fit_range_", (1 if prof.post_ln else 0, n))
        slope, r2 = log_linear_fit(means[first : last + 1])
        out["growth"] = math.exp(slope)
        out["growth_r2"] = r2
        out["fit_from"], out["fit_to"] = float(first), float(last)
        if cfg.weights and model is not None:
            target = folded_copy(model) if cfg.coordinates == "folded" else model
            out.update(_weight_norms(target, _layout(target)))
        out["skip_positions"] = float(prof.skip_positions)
        out["post_ln"] = float(prof.post_ln)
        out["folded"] = float(prof.folded)
        out["n_tokens"] = float(prof.n_tokens)
        return out
