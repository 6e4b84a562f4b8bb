"""Training a transcoder on streamed MLP activations (:func:`train_transcoder`).

Adam on the normalised MSE ‖y − ŷ‖² / E‖y − ȳ‖² plus, for TopK, the AuxK loss of Gao et al. 2024
(arXiv:2406.04093) or, for ReLU, an L1 penalty; decoder rows renormalised after every step.
Deterministic given the init seed and the data-order seed.

Example (training: skipped as a docstring example, see :mod:`analyses.transcoders`;
``tests/analyses/test_transcoders.py`` runs it)::

    >>> import interp
    >>> from analyses.transcoders import TranscoderConfig, train_transcoder
    >>> model, task = interp.organisms.load("modadd")
    >>> tc = train_transcoder(model, task, 0, TranscoderConfig(n_latents=64, k=8, steps=50))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

import hooks
from analyses.transcoders._activations import ActivationBuffer
from analyses.transcoders._model import Transcoder, TranscoderConfig

__all__ = ["train_transcoder"]

log = logging.getLogger(__name__)


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
    from interp.models import device_of

    config = config or TranscoderConfig()
    if not 0 <= layer < model.cfg.n_layers:
        raise ValueError(f"layer={layer!r}: the model has blocks 0 … {model.cfg.n_layers - 1}.")
    device = device_of(model)
    buf = ActivationBuffer(model, task, layer, batch_size=config.batch_size,
                           buffer_tokens=config.buffer_tokens, rows_per_forward=config.rows_per_forward,
                           positions=config.positions, seed=config.order_seed)
    x0, y0 = next(buf)
    tc = _start(config, layer, x0, y0, buf, init).to(device)
    hist = _optimize(tc, buf, x0, y0)
    tc.eval()
    tc.history = hist
    log.info("transcoder L%d: %d steps, final batch FVU %.4f, dead %.3f", layer, tc.config.steps,
             hist["fvu"][-1], hist["dead_fraction"][-1])
    return tc


def _start(config: TranscoderConfig, layer: int, x0: Tensor, y0: Tensor, buf: ActivationBuffer,
           init: Transcoder | None) -> Transcoder:
    """The transcoder training starts from: a copy of ``init`` (checked to fit), or a fresh one whose
    scales are set from the first batches of the buffer."""
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
                    output_point=hooks.mlp_out(layer)).to(x0.device)
    if init is not None:
        tc.load_state_dict(init.state_dict())
    else:
        # the first batches of the buffer set the initial scales
        n = 8 * tc.config.batch_size
        tc.initialize(torch.cat([x0, buf.x[:n]]), torch.cat([y0, buf.y[:n]]))
    return tc


def _optimize(tc: Transcoder, buf: ActivationBuffer, x0: Tensor, y0: Tensor) -> dict[str, list[float]]:
    """Run ``tc.config.steps`` Adam steps on the buffer's batches (the first is ``(x0, y0)``); the
    per-step history ``{"fvu", "aux", "dead_fraction"}``."""
    from tqdm.auto import tqdm

    config, layer, device = tc.config, tc.layer, x0.device
    with torch.no_grad():
        ys = torch.cat([y0, buf.y])
        var_y = (ys - ys.mean(0)).pow(2).sum(-1).mean().clamp(min=1e-12)
        sigma_y = var_y.sqrt()
    aux_k = tc.d_out // 2 if config.aux_k is None else config.aux_k
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
    return hist
