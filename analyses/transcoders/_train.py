"""Streaming MLP activations through a shuffling buffer, and training a transcoder on them."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor

import hooks
from analyses.transcoders._model import Transcoder, TranscoderConfig

__all__ = ["ActivationBuffer", "train_transcoder", "token_mask", "mlp_activations"]

log = logging.getLogger(__name__)


def token_mask(data: dict[str, Tensor], positions: Any) -> Bool[Tensor, "rows pos"]:
    """Which tokens of a batch are used: the selected ``positions`` (``"all"`` or a tuple), and only
    real tokens where the task has an ``attention_mask``."""
    ids = data["input_ids"]
    if positions == "all":
        mask = torch.ones(ids.shape, dtype=torch.bool)
    else:
        n = ids.shape[1]
        bad = [p for p in positions if not -n <= p < n]
        if bad:
            raise ValueError(f"positions={positions!r}: {bad} outside sequences of length {n}.")
        mask = torch.zeros(ids.shape, dtype=torch.bool)
        mask[:, list(positions)] = True
    if "attention_mask" in data:
        mask &= data["attention_mask"].bool()
    return mask


@torch.no_grad()
def mlp_activations(
    model: Any, data: dict[str, Tensor], layer: int, positions: Any = "all"
) -> tuple[Float[Tensor, "tokens d_in"], Float[Tensor, "tokens d_out"]]:
    """(MLP input, MLP output) of block ``layer`` on a batch of task rows, flattened to the used tokens.

    Input is ``blocks.{l}.mlp.hook_in`` (after LayerNorm, γ/β applied), output ``blocks.{l}.hook_mlp_out``.
    """
    from interp.models import device_of

    device = device_of(model)
    points = [hooks.mlp_in(layer), hooks.mlp_out(layer)]
    kwargs = {"attention_mask": data["attention_mask"].to(device)} if "attention_mask" in data else {}
    acts = hooks.capture(model, data["input_ids"].long().to(device), points, **kwargs)
    mask = token_mask(data, positions).to(acts[points[0]].device)
    return acts[points[0]][mask].float(), acts[points[1]][mask].float()


class ActivationBuffer:
    """An endless, deterministic stream of ``(x, y)`` token batches from a task's train split.

    Rows are read in a shuffled order (``Task.batches`` with seed ``seed + epoch``), pushed through
    the model ``rows_per_forward`` at a time, and their tokens' activations collected until the buffer
    holds ``buffer_tokens``; the buffer is then shuffled (its own generator, seeded by ``seed``) and
    its first half is served in batches of ``batch_size`` before it is refilled. Tokens of one
    sequence are thus spread over many steps.
    """

    def __init__(self, model: Any, task: Any, layer: int, *, batch_size: int, buffer_tokens: int,
                 rows_per_forward: int, positions: Any = "all", seed: int = 0, split: str = "train"):
        self.model, self.task, self.layer = model, task, layer
        self.batch_size, self.buffer_tokens = batch_size, buffer_tokens
        self.rows_per_forward, self.positions, self.seed, self.split = rows_per_forward, positions, seed, split
        self.gen = torch.Generator().manual_seed(seed)
        self.epoch = 0
        self._rows = self._row_batches()
        self.x: Tensor | None = None
        self.y: Tensor | None = None

    def _row_batches(self) -> Iterator[dict[str, Tensor]]:
        while True:
            for batch in self.task.batches(self.split, self.rows_per_forward, seed=self.seed + 1009 * self.epoch):
                yield batch
            self.epoch += 1

    def _fill(self) -> None:
        xs = [] if self.x is None else [self.x]
        ys = [] if self.y is None else [self.y]
        have = sum(len(x) for x in xs)
        while have < self.buffer_tokens:
            x, y = mlp_activations(self.model, next(self._rows), self.layer, self.positions)
            if len(x) == 0:
                raise ValueError(f"positions={self.positions!r} selects no tokens of the task's rows.")
            xs.append(x)
            ys.append(y)
            have += len(x)
        x, y = torch.cat(xs), torch.cat(ys)
        perm = torch.randperm(len(x), generator=self.gen).to(x.device)
        self.x, self.y = x[perm], y[perm]

    def __iter__(self) -> Iterator[tuple[Float[Tensor, "batch d_in"], Float[Tensor, "batch d_out"]]]:
        return self

    def __next__(self) -> tuple[Float[Tensor, "batch d_in"], Float[Tensor, "batch d_out"]]:
        if self.x is None or len(self.x) < max(self.buffer_tokens // 2, self.batch_size):
            self._fill()
        assert self.x is not None and self.y is not None
        b = self.batch_size
        x, y = self.x[:b], self.y[:b]
        self.x, self.y = self.x[b:], self.y[b:]
        return x, y


def _lr_factor(step: int, steps: int, warmup: float, decay: float) -> float:
    w, d = warmup * steps, decay * steps
    f = 1.0 if w <= 0 else min(1.0, (step + 1) / w)
    start = steps - d
    if d > 0 and step >= start:
        f *= max(0.0, (steps - step) / d)
    return f


def _loss(tc: Transcoder, x: Tensor, y: Tensor, var_y: Tensor, sigma_y: Tensor,
          dead: Tensor | None, aux_k: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(total loss, FVU, aux loss, fired mask [n_latents]) of one batch."""
    c = tc.config
    aux = x.new_zeros(())
    if c.activation == "relu":
        z = F.relu(tc.pre_activations(x))
        y_hat = z @ tc.W_dec + tc.b_dec
        fired = (z > 0).any(0)
        penalty = c.l1 * z.sum(-1).mean() / sigma_y
    else:
        with torch.no_grad():
            pre = tc.pre_activations(x)
            idx = pre.topk(c.k, dim=-1).indices
        acts = tc.gathered(x, pre, idx)
        if tc.sparse_decode:
            y_hat = tc.decode_sparse(idx, acts) + tc.b_dec
        else:
            y_hat = torch.zeros(len(x), tc.n_latents, dtype=x.dtype, device=x.device).scatter(-1, idx, acts) @ tc.W_dec + tc.b_dec
        fired = torch.zeros(tc.n_latents, dtype=torch.bool, device=x.device)
        fired[idx[acts > 0]] = True
        penalty = x.new_zeros(())
    if tc.W_skip is not None:
        y_hat = y_hat + x @ tc.W_skip.T
    err = y - y_hat
    fvu = err.pow(2).sum(-1).mean() / var_y
    if c.activation == "topk" and dead is not None and aux_k > 0 and c.aux_coef > 0 and bool(dead.any()):
        with torch.no_grad():
            masked = pre.masked_fill(~dead, float("-inf"))
            idx_aux = masked.topk(min(aux_k, int(dead.sum())), dim=-1).indices
        e = err.detach()
        e_hat = tc.decode_sparse(idx_aux, tc.gathered(x, pre, idx_aux))
        denom = (e - e.mean(0)).pow(2).sum(-1).mean().clamp(min=1e-12)
        aux = (e - e_hat).pow(2).sum(-1).mean() / denom
    return fvu + penalty + c.aux_coef * aux, fvu, aux, fired


def train_transcoder(
    model: Any,
    task: Any,
    layer: int,
    config: TranscoderConfig | None = None,
    *,
    init: Transcoder | None = None,
) -> Transcoder:
    """Train a transcoder from ``blocks.{layer}.mlp.hook_in`` to ``blocks.{layer}.hook_mlp_out``.

    Adam (lr ``config.lr``, warm-up and linear decay) on the normalised MSE
    ‖y − ŷ‖² / E‖y − ȳ‖² (the batch FVU against the first buffer's variance), plus
    ``aux_coef``·AuxK for TopK or the L1 penalty for ReLU; decoder rows are renormalised after every
    step. Deterministic given ``config.seed`` (initialisation) and ``config.order_seed`` (data order).

    Args:
        model: the ``TransformerBridge`` whose MLP is imitated (its weights as they are now: pass a
            degraded model to fit a degraded MLP).
        task: the task whose train split provides the tokens.
        layer: the block.
        config: shape and training settings (``None``: defaults).
        init: warm start: a transcoder whose weights are copied as the starting point (the width,
            activation and skip must agree with ``config``); ``None``: a fresh initialisation.

    Returns:
        the trained :class:`Transcoder` (eval mode), with ``history`` holding per-step ``fvu``,
        ``aux`` and the running ``dead_fraction``.
    """
    from tqdm.auto import tqdm

    from interp.models import device_of

    config = config or TranscoderConfig()
    if not 0 <= layer < model.cfg.n_layers:
        raise ValueError(f"layer={layer!r}: the model has blocks 0 … {model.cfg.n_layers - 1}.")
    device = device_of(model)
    buf = ActivationBuffer(model, task, layer, batch_size=config.batch_size,
                           buffer_tokens=config.buffer_tokens, rows_per_forward=config.rows_per_forward,
                           positions=config.positions, seed=config.order_seed)
    x0, y0 = next(buf)
    d_in, d_out = x0.shape[-1], y0.shape[-1]
    if init is not None:
        if config.n_latents not in (None, init.n_latents) or config.activation != init.config.activation \
                or config.skip != init.config.skip or (init.d_in, init.d_out) != (d_in, d_out):
            raise ValueError(
                f"init: a transcoder with n_latents={init.n_latents}, activation={init.config.activation!r}, "
                f"skip={init.config.skip}, d_in={init.d_in}, d_out={init.d_out} cannot warm-start config "
                f"n_latents={config.n_latents}, activation={config.activation!r}, skip={config.skip} on "
                f"d_in={d_in}, d_out={d_out}; use the same shape (or n_latents=None) or init=None.")
        config = dataclasses.replace(config, n_latents=init.n_latents)
    tc = Transcoder(d_in, d_out, config, layer=layer, input_point=hooks.mlp_in(layer),
                    output_point=hooks.mlp_out(layer)).to(device)
    config = tc.config
    if init is not None:
        tc.load_state_dict(init.state_dict())
    else:
        # the first batches of the buffer set the initial scales
        tc.initialize(torch.cat([x0, buf.x[: 8 * config.batch_size]]), torch.cat([y0, buf.y[: 8 * config.batch_size]]))
    with torch.no_grad():
        ys = torch.cat([y0, buf.y])
        var_y = (ys - ys.mean(0)).pow(2).sum(-1).mean().clamp(min=1e-12)
        sigma_y = var_y.sqrt()
    aux_k = d_out // 2 if config.aux_k is None else config.aux_k
    opt = torch.optim.Adam(tc.parameters(), lr=config.lr, betas=(0.9, 0.999))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: _lr_factor(s, config.steps, config.warmup, config.decay))
    since = torch.zeros(tc.n_latents, dtype=torch.long, device=device)
    hist: dict[str, list[float]] = {"fvu": [], "aux": [], "dead_fraction": []}
    tc.train()
    bar = tqdm(range(config.steps), desc=f"transcoder L{layer}", disable=not config.progress, leave=False)
    x, y = x0, y0
    for step in bar:
        if step > 0:
            x, y = next(buf)
        dead = since >= config.dead_tokens
        loss, fvu, aux, fired = _loss(tc, x, y, var_y, sigma_y, dead, aux_k)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"train_transcoder: loss {loss.item()} at step {step} (layer {layer}); lower lr "
                f"(now {config.lr}) or check the activations for inf/NaN.")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        tc.normalize_decoder()
        since += len(x)
        since[fired.to(device)] = 0
        hist["fvu"].append(float(fvu.detach()))
        hist["aux"].append(float(aux.detach()))
        hist["dead_fraction"].append(float(dead.float().mean()))
        if step % 50 == 0 or step == config.steps - 1:
            bar.set_postfix(fvu=f"{fvu.item():.3f}", dead=f"{hist['dead_fraction'][-1]:.2f}")
    tc.eval()
    tc.history = hist
    log.info("transcoder L%d: %d steps, final batch FVU %.4f, dead %.3f", layer, config.steps,
             hist["fvu"][-1], hist["dead_fraction"][-1])
    return tc
