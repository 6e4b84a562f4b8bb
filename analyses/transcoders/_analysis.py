"""``SparseMLP``: the transcoder analysis for sweeps over degraded weights."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from functools import partial
from typing import Any

import torch

from analyses._base import Params
from analyses.transcoders._activations import mlp_activations
from analyses.transcoders._metrics import TranscoderMetrics, evaluate_transcoders, match_features
from analyses.transcoders._model import Transcoder, TranscoderConfig
from analyses.transcoders._train import train_transcoder
from interp.checks import bad_value, check_choice, check_is_fitted, check_number

__all__ = ["SparseMLP", "MATCH_THRESHOLDS"]

log = logging.getLogger(__name__)

#: decoder-cosine thresholds of feature matching (metric suffixes ``_07`` and ``_09``)
MATCH_THRESHOLDS = (0.7, 0.9)
#: the baseline's data order is ``order_seed + BASELINE_ORDER_OFFSET`` (the draws' refits use ``order_seed``)
BASELINE_ORDER_OFFSET = 1


def _suffix(t: float) -> str:
    return f"{round(t * 10):02d}"


def _check_layer(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise bad_value(owner, name, value, "an int >= 0", "Use the index of a block with an MLP, e.g. layer=0.")


def _check_transcoder(owner: str, name: str, value: Any) -> None:
    if value is not None and not isinstance(value, (TranscoderConfig, Mapping)):
        raise bad_value(owner, name, value, "a TranscoderConfig, a mapping of its fields, or None (the defaults)",
                        "Use e.g. transcoder=TranscoderConfig(n_latents=512, k=32) or, in a sweep file, a "
                        "[analyses.transcoder] table.")


def _check_pretrained(owner: str, name: str, value: Any) -> None:
    if value is not None and not isinstance(value, Transcoder):
        raise bad_value(owner, name, value, "a trained Transcoder or None", "Train one with train_transcoder(...).")


class SparseMLP(Params):
    """A sparse replacement of one MLP, trained on w0 and followed across degraded weights.

    ``setup`` trains the clean transcoder T₀ on w0 (or takes ``pretrained``), records its metrics
    (``clean_``), and measures the *same-init, different-data-order baseline*: a refit of T₀ on
    the clean weights with the data order ``order_seed + 1`` instead of ``order_seed``; the share of
    T₀'s live decoder rows it matches at cosine 0.7 / 0.9 is what a refit changes by data order
    alone (compare survival against it, never against 0: docs/science.md, "Transcoders").

    At every call (w0 and each draw), on ``eval_rows`` test rows, against *this* model's own MLP:

    - ``cross_*``: T₀ applied unchanged ("cross-application"): ``cross_fvu``, ``cross_kl``,
      ``cross_loss_recovered`` beside the absolute numbers it is made of, ``cross_loss_spliced``
      (nats/token) and ``cross_accuracy`` (top-1 accuracy with T₀ spliced in), ``cross_delta_loss``
      (spliced − clean loss of this model; negative means T₀ *repairs* the damage, a warning sign, not a
      success), ``cross_l0``;
    - ``refit_*``: T₀ refitted for ``refit_steps`` steps on this model's MLP (warm-started from T₀,
      or from T₀'s initialisation with ``refit_from="init"``), with the init and the data order
      (``order_seed``) the same for every draw: ``refit_fvu``, ``refit_kl``,
      ``refit_loss_recovered``, ``refit_loss_spliced``, ``refit_accuracy``, ``refit_delta_loss``,
      ``refit_l0``, ``refit_dead_fraction``;
    - ``survival_07`` / ``survival_09``: share of T₀'s live latents whose decoder row is matched by
      a refit decoder row at cosine ≥ 0.7 / 0.9; ``baseline_match_07`` / ``_09``: the constant
      baseline above;
    - ``loss_clean``, ``loss_zero`` (MLP zero-ablated), ``accuracy_clean``, ``accuracy_zero`` (this
      model's own, the ends of the loss-recovered scale), ``mlp_linear_fvu`` (the MLP's own best affine fit).

    The absolute numbers are reported as metrics of kind "other": the effect is the fraction, they are
    what a reader needs to judge it (a loss recovered of 0.95 at a clean loss of 3 nats is not one at 0.01).

    Measured on ``modadd`` (BENCHMARKS.md): warm-started refits keep T₀'s decoder rows, so their
    survival equals the baseline (≈ 1.0 at 0.7) at every loss increase tried; with
    ``refit_from="init"`` (400 steps) survival at 0.9 falls from 1.0 at w0 to 0.32 at ΔL ≈ 0.05 and
    0.04 at ΔL ≈ 0.68, against a data-order baseline of 0.91. Use ``"init"`` for feature survival.

    Effects: ``refit_loss_recovered`` (a sparse description of this MLP exists) and ``survival_07``
    (it uses the clean features); collateral: ``refit_kl`` (what splicing it disturbs).

    Example (training: skipped as a docstring example; ``tests/analyses/test_transcoders.py`` sets
    one up)::

        >>> import interp
        >>> from analyses.transcoders import SparseMLP
        >>> model, task = interp.organisms.load("modadd")
        >>> a = SparseMLP(layer=0, transcoder=TranscoderConfig(n_latents=512, k=32, steps=400))  # doctest: +SKIP
        >>> a.setup(model, task); a(model, task)["refit_loss_recovered"] > 0.9  # doctest: +SKIP
        True
    """

    effects: tuple[str, ...] = ("refit_loss_recovered", "survival_07")
    collaterals: tuple[str, ...] = ("refit_kl",)

    param_constraints = {
        "layer": _check_layer,
        "transcoder": _check_transcoder,
        "refit_steps": partial(check_number, integer=True, minimum=1, fix="Use e.g. refit_steps=100."),
        "refit_lr": partial(check_number, none_ok=True, fix="Use None (half the training lr)."),
        "eval_rows": partial(check_number, integer=True, minimum=1, none_ok=True,
                             fix="Use e.g. eval_rows=512 or None (all)."),
        "refit_from": partial(check_choice, choices=("clean", "init"),
                              fix="Use refit_from='clean' unless you can afford a full training per draw."),
        "pretrained": _check_pretrained,
    }

    def __init__(self, layer: int = 0, *, transcoder: TranscoderConfig | Mapping[str, Any] | None = None,
                 refit_steps: int = 100, refit_lr: float | None = None, eval_rows: int | None = 512,
                 refit_from: str = "clean", pretrained: Transcoder | None = None, name: str = "sparse_mlp") -> None:
        self.layer, self.transcoder, self.refit_steps, self.refit_lr = layer, transcoder, refit_steps, refit_lr
        self.eval_rows, self.refit_from, self.pretrained, self.name = eval_rows, refit_from, pretrained, name

    def validate_params(self) -> None:
        """:attr:`param_constraints`, then the transcoder's own fields (``TranscoderConfig``) into
        ``transcoder_config_``: ``pretrained``'s config when one is given (it must be for ``layer``),
        else ``transcoder`` (quiet unless it says ``progress=True``)."""
        super().validate_params()
        if self.pretrained is not None:
            if self.pretrained.layer not in (None, self.layer):
                raise bad_value("SparseMLP", "pretrained", self.pretrained, f"a transcoder for layer={self.layer}, "
                                f"not layer {self.pretrained.layer}", "Give the layer the transcoder was trained on.")
            self.transcoder_config_ = self.pretrained.config
        elif isinstance(self.transcoder, TranscoderConfig):
            self.transcoder_config_ = self.transcoder
        else:
            self.transcoder_config_ = TranscoderConfig(**{"progress": False, **(self.transcoder or {})})

    def _refit_config(self, order_seed: int) -> TranscoderConfig:
        """The refits' training config: the clean one with ``refit_steps``, the given data order, quiet;
        warm starts (``refit_from="clean"``) use ``refit_lr`` (default half the lr) and no warm-up."""
        t = self.transcoder_config_
        if self.refit_from == "init":
            return dataclasses.replace(t, steps=self.refit_steps, lr=t.lr if self.refit_lr is None else self.refit_lr,
                                       data_seed=order_seed, progress=False)
        return dataclasses.replace(
            t, steps=self.refit_steps, lr=self.refit_lr if self.refit_lr is not None else t.lr / 2,
            warmup=0.0, data_seed=order_seed, progress=False)

    # ------------------------------------------------------------------ protocol
    def setup(self, model: Any, task: Any) -> None:
        self.validate_params()
        c = self
        if self.pretrained is not None:
            self.transcoder_ = self.pretrained
        else:
            self.transcoder_ = train_transcoder(model, task, c.layer, self.transcoder_config_)
        metrics = evaluate_transcoders(model, task, {"clean": self.transcoder_}, eval_rows=c.eval_rows)
        self.clean_ = metrics["clean"]
        self.live_ = self._live(model, task, self.transcoder_)
        order = self.transcoder_.config.order_seed
        other = train_transcoder(model, task, c.layer, self._refit_config(order + BASELINE_ORDER_OFFSET),
                                 init=self._refit_init())
        self.baseline_match_ = self._match(other)
        log.info("SparseMLP %s: clean FVU %.4f, loss recovered %.4f; same-init different-order match "
                 "%s", self.name, self.clean_.fvu, self.clean_.loss_recovered, self.baseline_match_)

    def __call__(self, model: Any, task: Any) -> dict[str, float]:
        check_is_fitted(self, "transcoder_", "live_")
        c = self
        refit = train_transcoder(model, task, c.layer, self._refit_config(self.transcoder_.config.order_seed),
                                 init=self._refit_init())
        m = evaluate_transcoders(model, task, {"cross": self.transcoder_, "refit": refit}, eval_rows=c.eval_rows)
        out: dict[str, float] = {}
        for kind in ("cross", "refit"):
            r = m[kind]
            out[f"{kind}_fvu"] = r.fvu
            out[f"{kind}_kl"] = r.kl_spliced
            out[f"{kind}_loss_recovered"] = r.loss_recovered
            out[f"{kind}_loss_spliced"] = r.loss_spliced
            out[f"{kind}_accuracy"] = r.accuracy_spliced
            out[f"{kind}_delta_loss"] = r.loss_spliced - r.loss_clean
            out[f"{kind}_l0"] = r.l0
        out["refit_dead_fraction"] = m["refit"].dead_fraction
        for t, v in self._match(refit).items():
            out[f"survival_{_suffix(t)}"] = v
        for t, v in self.baseline_match_.items():
            out[f"baseline_match_{_suffix(t)}"] = v
        out["loss_clean"] = m["refit"].loss_clean
        out["loss_zero"] = m["refit"].loss_zero
        out["accuracy_clean"] = m["refit"].accuracy_clean
        out["accuracy_zero"] = m["refit"].accuracy_zero
        out["mlp_linear_fvu"] = m["refit"].linear_fvu
        return out

    # ------------------------------------------------------------------ helpers
    def _refit_init(self) -> Transcoder | None:
        return self.transcoder_ if self.refit_from == "clean" else None

    def _live(self, model: Any, task: Any, tc: Transcoder) -> torch.Tensor:
        x, _ = mlp_activations(model, task.tensors("test", rows=self.eval_rows), self.layer,
                               tc.config.positions)
        with torch.no_grad():
            return (tc.encode(x) > 0).any(0)

    def _match(self, other: Transcoder) -> dict[float, float]:
        assert self.transcoder_ is not None and self.live_ is not None
        return match_features(self.transcoder_.W_dec[self.live_], other.W_dec, MATCH_THRESHOLDS)

