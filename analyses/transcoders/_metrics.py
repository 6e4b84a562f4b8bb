"""Splicing a transcoder into the model, and how faithful it is there."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

import hooks
from analyses.transcoders._model import Transcoder
from analyses.transcoders._activations import mlp_activations
from interp.checks import check_fraction, check_number

__all__ = [
    "splice",
    "TranscoderMetrics",
    "evaluate_transcoder",
    "evaluate_transcoders",
    "linear_fvu",
    "neuron_copy",
    "match_features",
    "mlp_in_weight",
]


def splice(transcoder: Transcoder, layer: int | None = None, *, error_node: bool = False,
           positions: Any = None) -> tuple[hooks.Hook, hooks.Hook]:
    """Hooks that replace block ``layer``'s MLP output by the transcoder's ŷ = T(mlp_in) in one forward.

    ``error_node=True``: ŷ + (y − ŷ).detach(), the model's value is unchanged and gradients flow
    through the transcoder (the "error node" of attribution graphs). ``layer`` defaults to the
    transcoder's own; ``positions`` (``"all"`` or a tuple) to the positions it was trained on
    (elsewhere the MLP's own output is kept). Use with :func:`hooks.apply`.
    """
    layer = transcoder.layer if layer is None else layer
    if layer is None:
        raise ValueError("splice: the transcoder records no layer; pass layer=.")
    positions = transcoder.config.positions if positions is None else positions
    if isinstance(positions, list):
        positions = tuple(positions)
    if positions != "all" and not (isinstance(positions, tuple) and positions):
        raise ValueError(f"splice: positions={positions!r}; give 'all' or a non-empty tuple of positions.")
    return hooks.splice(hooks.mlp_out(layer), hooks.mlp_in(layer), transcoder, error_node=error_node,
                        positions=None if positions == "all" else positions)


@dataclass(frozen=True)
class TranscoderMetrics:
    """Faithfulness and sparsity of a transcoder on held-out tokens (see :func:`evaluate_transcoder`).

    Reconstruction (on the tokens the transcoder was trained on, ``config.positions``): ``fvu`` =
    Σ‖y − ŷ‖² / Σ‖y − ȳ‖², ``l0`` (mean active latents per token), ``dead_fraction`` (latents that
    never fire on the evaluation tokens), ``dense_fraction`` (latents firing on more than
    ``dense_threshold`` of them), ``linear_fvu`` (FVU of the best affine map x ↦ y fitted on the train
    split: how non-linear the MLP is; a transcoder should beat it).

    Splicing (the task's scored targets, nats/token): ``loss_clean``, ``loss_spliced`` (MLP output
    replaced at every position), ``loss_zero`` (MLP output zeroed), ``loss_mean`` (MLP output replaced
    by its per-position mean on the train split), ``kl_spliced`` / ``kl_zero`` / ``kl_mean`` = mean KL(p_clean ‖
    p_replaced) at the scored positions, and ``loss_recovered`` = (L_zero − L_spliced) / (L_zero − L_clean)
    (``loss_recovered_mean``: the same against mean ablation). 1 is perfect, 0 no better than ablation;
    it is a ratio of loss gaps, not bounded (below 0: worse than ablating; above 1: better than the
    model), and says nothing of the absolute loss, so it is always read beside ``loss_spliced`` and the
    top-1 accuracies at the scored positions, ``accuracy_clean`` / ``accuracy_spliced`` /
    ``accuracy_zero`` / ``accuracy_mean`` (argmax = target, as :meth:`interp.tasks.Task.evaluate`):
    :meth:`table` and the notebook view put them side by side.

    ``neuron_copy_max_cos``: mean over live latents of the largest |cosine| between the latent's
    encoder row and the MLP's input weight vectors (``neuron_copy_fraction``: share above 0.9); near 1
    means the transcoder copied neurons rather than found new features.
    """

    fvu: float
    l0: float
    dead_fraction: float
    dense_fraction: float
    linear_fvu: float
    loss_clean: float
    loss_spliced: float
    loss_zero: float
    loss_mean: float
    kl_spliced: float
    kl_zero: float
    kl_mean: float
    loss_recovered: float
    loss_recovered_mean: float
    neuron_copy_max_cos: float
    neuron_copy_fraction: float
    tokens: int
    accuracy_clean: float = float("nan")
    accuracy_spliced: float = float("nan")
    accuracy_zero: float = float("nan")
    accuracy_mean: float = float("nan")

    def as_dict(self) -> dict[str, float]:
        return {f.name: float(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def table(self) -> Any:
        """The splice as a pandas DataFrame, one row per replacement of the MLP output (``clean``,
        ``spliced``, ``zero``, ``mean``): ``loss`` (nats/token), ``accuracy`` (top-1 at the scored
        positions), ``kl`` (from the clean model) and ``loss_recovered`` (the spliced row: against zero
        ablation, and in ``loss_recovered_mean`` against mean ablation), so the fraction is read beside
        the absolute numbers it is made of."""
        import pandas as pd

        nan = float("nan")
        return pd.DataFrame({
            "mlp_output": ["clean", "spliced", "zero", "mean"],
            "loss": [self.loss_clean, self.loss_spliced, self.loss_zero, self.loss_mean],
            "accuracy": [self.accuracy_clean, self.accuracy_spliced, self.accuracy_zero, self.accuracy_mean],
            "kl": [0.0, self.kl_spliced, self.kl_zero, self.kl_mean],
            "loss_recovered": [nan, self.loss_recovered, nan, nan],
            "loss_recovered_mean": [nan, self.loss_recovered_mean, nan, nan],
        })

    def _repr_html_(self) -> str:
        """Notebook display: loss recovered with the spliced loss and accuracy beside it, the splice
        table (:meth:`table`), then every metric, one a row."""
        head = (f"<p>loss recovered {self.loss_recovered:.4g} (spliced loss {self.loss_spliced:.4g} nats/token, "
                f"accuracy {self.accuracy_spliced:.4g}; clean {self.loss_clean:.4g}, {self.accuracy_clean:.4g}; "
                f"MLP zero-ablated {self.loss_zero:.4g}, {self.accuracy_zero:.4g}) on {self.tokens} tokens</p>")
        splice_table = self.table().to_html(index=False, float_format="{:.4g}".format, na_rep="")
        rows = "".join(f"<tr><td>{k}</td><td>{v:.4g}</td></tr>" for k, v in self.as_dict().items())
        return (head + splice_table + "<details><summary>every metric</summary>"
                f"<table><tr><th>metric</th><th>value</th></tr>{rows}</table></details>")


def _rows(task: Any, split: str, rows: int | None) -> dict[str, Tensor]:
    data = task.tensors(split, rows=rows)
    if "target_mask" not in data:
        raise ValueError(f"Task {task.name!r} has no target_mask: splicing metrics need a next-token loss.")
    return data


def _logp_scored(model: Any, task: Any, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """log-probabilities at the positions whose next token is scored, and the scored targets' ids."""
    logits = task._logits(model, batch).float()
    ids, mask = task._ids_and_mask(batch, logits.device)
    m = mask[:, 1:].bool()
    logp = torch.log_softmax(logits[:, :-1], dim=-1)[m]
    return logp, ids[:, 1:][m]


@torch.no_grad()
def evaluate_transcoders(
    model: Any,
    task: Any,
    transcoders: Mapping[str, Transcoder],
    *,
    split: str = "test",
    eval_rows: int | None = None,
    batch_size: int = 256,
    dense_threshold: float = 0.1,
    train_rows: int | None = 2048,
) -> dict[str, TranscoderMetrics]:
    """:func:`evaluate_transcoder` for several transcoders of the same layer, sharing the clean,
    zero- and mean-ablated forwards and the linear fit."""
    if not transcoders:
        raise ValueError("evaluate_transcoders: give at least one transcoder.")
    first = next(iter(transcoders.values()))
    layer = first.layer
    positions = first.config.positions
    for name, tc in transcoders.items():
        if tc.layer != layer:
            raise ValueError(f"evaluate_transcoders: {name!r} is for layer {tc.layer}, not {layer}.")
    check_fraction("evaluate_transcoders", "dense_threshold", dense_threshold, closed=False,
                   fix="A firing fraction, e.g. 0.1.")
    check_number("evaluate_transcoders", "eval_rows", eval_rows, integer=True, minimum=1, none_ok=True)
    check_number("evaluate_transcoders", "batch_size", batch_size, integer=True, minimum=1)
    data = _rows(task, split, eval_rows)
    train = task.tensors("train", rows=train_rows)
    out_point = hooks.mlp_out(layer)
    from interp.models import device_of

    ids_train = train["input_ids"].long().to(device_of(model))
    mean_out = hooks.capture(model, ids_train, [out_point])[out_point].float().mean(0)
    lin = _fit_linear(model, train, layer, positions)

    acc: dict[str, dict[str, Any]] = {n: {"err": 0.0, "l0": 0.0, "fires": 0, "loss": 0.0, "kl": 0.0, "hit": 0}
                                      for n in transcoders}
    base = {"loss_clean": 0.0, "loss_zero": 0.0, "loss_mean": 0.0, "kl_zero": 0.0, "kl_mean": 0.0,
            "hit_clean": 0, "hit_zero": 0, "hit_mean": 0, "scored": 0}
    ys, xs = [], []
    for start in range(0, len(data["input_ids"]), batch_size):
        batch = {k: v[start : start + batch_size] for k, v in data.items()}
        x, y = mlp_activations(model, batch, layer, positions)
        xs.append(x)
        ys.append(y)
        _score_batch(model, task, batch, x, y, transcoders, mean_out, acc, base)
    x, y = torch.cat(xs), torch.cat(ys)
    var = (y - y.mean(0)).pow(2).sum().item()
    lin_fvu = (y - lin(x)).pow(2).sum().item() / max(var, 1e-30)
    w_in = mlp_in_weight(model, layer)
    return {n: _summarize(transcoders[n], acc[n], base, var, lin_fvu, len(y), w_in, dense_threshold)
            for n in transcoders}


def _score_batch(model: Any, task: Any, batch: dict[str, Tensor], x: Tensor, y: Tensor,
                 transcoders: Mapping[str, Transcoder], mean_out: Tensor, acc: dict[str, dict[str, Any]],
                 base: dict[str, Any]) -> None:
    """Add one batch's sums to ``base`` (clean, zero- and mean-ablated MLP) and ``acc`` (each
    transcoder's reconstruction error, active latents and spliced loss / KL / hits)."""
    out_point = hooks.mlp_out(next(iter(transcoders.values())).layer)
    lp_clean, tgt = _logp_scored(model, task, batch)
    base["scored"] += len(tgt)
    base["loss_clean"] += -lp_clean.gather(-1, tgt[:, None]).sum().item()
    base["hit_clean"] += (lp_clean.argmax(-1) == tgt).sum().item()

    def run(hook_list: Sequence[Any]) -> tuple[float, float, int]:
        with hooks.apply(model, hook_list):
            lp, _ = _logp_scored(model, task, batch)
        loss = -lp.gather(-1, tgt[:, None]).sum().item()
        kl = (lp_clean.exp() * (lp_clean - lp)).sum().item()
        return loss, kl, int((lp.argmax(-1) == tgt).sum().item())

    for kind, hook in (("zero", hooks.zero_ablate(out_point)), ("mean", hooks.mean_ablate(out_point, mean_out))):
        loss, kl, hit = run([hook])
        base[f"loss_{kind}"] += loss
        base[f"kl_{kind}"] += kl
        base[f"hit_{kind}"] += hit
    for n, tc in transcoders.items():
        a = acc[n]
        a["err"] += (y - tc(x)).pow(2).sum().item()
        active = tc.encode(x) > 0
        a["l0"] += active.sum().item()
        a["fires"] = a["fires"] + active.sum(0)
        loss, kl, hit = run(splice(tc, tc.layer))
        a["loss"] += loss
        a["kl"] += kl
        a["hit"] += hit


def _summarize(tc: Transcoder, a: dict[str, Any], base: dict[str, Any], var: float, lin_fvu: float,
               n_tok: int, w_in: Tensor, dense_threshold: float) -> TranscoderMetrics:
    """One transcoder's :class:`TranscoderMetrics` from the summed scores of every batch."""
    n_sc = max(base["scored"], 1)
    l_clean, l_zero, l_mean = base["loss_clean"] / n_sc, base["loss_zero"] / n_sc, base["loss_mean"] / n_sc
    freq = a["fires"].float() / max(n_tok, 1)
    live = freq > 0
    copy_cos, copy_frac = neuron_copy(tc, w_in, live)
    l_sp = a["loss"] / n_sc
    return TranscoderMetrics(
        fvu=a["err"] / max(var, 1e-30), l0=a["l0"] / max(n_tok, 1),
        dead_fraction=float((~live).float().mean()), dense_fraction=float((freq > dense_threshold).float().mean()),
        linear_fvu=lin_fvu,
        loss_clean=l_clean, loss_spliced=l_sp, loss_zero=l_zero, loss_mean=l_mean,
        kl_spliced=a["kl"] / n_sc, kl_zero=base["kl_zero"] / n_sc, kl_mean=base["kl_mean"] / n_sc,
        loss_recovered=_recovered(l_zero, l_sp, l_clean), loss_recovered_mean=_recovered(l_mean, l_sp, l_clean),
        neuron_copy_max_cos=copy_cos, neuron_copy_fraction=copy_frac, tokens=n_tok,
        accuracy_clean=base["hit_clean"] / n_sc, accuracy_spliced=a["hit"] / n_sc,
        accuracy_zero=base["hit_zero"] / n_sc, accuracy_mean=base["hit_mean"] / n_sc,
    )


def _recovered(ablated: float, spliced: float, clean: float) -> float:
    gap = ablated - clean
    if abs(gap) < 1e-12:
        return float("nan")  # ablation costs nothing: loss recovered is undefined, not 0 or 1
    return (ablated - spliced) / gap


def evaluate_transcoder(
    model: Any,
    task: Any,
    transcoder: Transcoder,
    *,
    split: str = "test",
    eval_rows: int | None = None,
    batch_size: int = 256,
    dense_threshold: float = 0.1,
    train_rows: int | None = 2048,
) -> TranscoderMetrics:
    """Reconstruction, sparsity and splicing metrics of ``transcoder`` in ``model`` (see
    :class:`TranscoderMetrics`), on ``eval_rows`` rows of ``split`` (``None``: all),
    ``batch_size`` rows per forward. The mean-ablation
    means and the linear baseline are fitted on up to ``train_rows`` rows of the train split.
    A metric that is undefined (loss recovered when ablating the MLP costs nothing) is NaN."""
    return evaluate_transcoders(model, task, {"t": transcoder}, split=split, eval_rows=eval_rows, batch_size=batch_size,
                                dense_threshold=dense_threshold, train_rows=train_rows)["t"]


def _fit_linear(model: Any, train: dict[str, Tensor], layer: int, positions: Any) -> Any:
    """Least-squares affine map mlp_in → mlp_out on the train rows (float64 normal equations with a
    tiny ridge for conditioning)."""
    x, y = mlp_activations(model, train, layer, positions)
    xa = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.double)], 1)
    gram = xa.T @ xa
    gram += 1e-8 * gram.diagonal().mean() * torch.eye(len(gram), dtype=torch.double)
    beta = torch.linalg.solve(gram, xa.T @ y.double())

    def predict(x: Tensor) -> Tensor:
        return (torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.double)], 1) @ beta).to(x.dtype)

    return predict


@torch.no_grad()
def linear_fvu(model: Any, task: Any, layer: int, *, positions: Any = "all", split: str = "test",
               eval_rows: int | None = None, train_rows: int | None = 2048) -> float:
    """FVU of the best affine replacement of block ``layer``'s MLP (fitted on the train split,
    measured on ``split``): the floor any non-linear replacement should beat."""
    lin = _fit_linear(model, task.tensors("train", rows=train_rows), layer, positions)
    x, y = mlp_activations(model, task.tensors(split, rows=eval_rows), layer, positions)
    return float((y - lin(x)).pow(2).sum() / (y - y.mean(0)).pow(2).sum().clamp(min=1e-30))


def mlp_in_weight(model: Any, layer: int) -> Float[Tensor, "d_mlp d_in"]:
    """The MLP's input weight vectors, one row per neuron (``W_in`` transposed)."""
    mlp = model.blocks[layer].mlp
    w = getattr(mlp, "W_in", None)
    if w is None:
        raise ValueError(f"block {layer}'s MLP exposes no W_in (gated or unusual MLP); neuron_copy needs it.")
    w = w.detach().float()
    d_model = model.cfg.d_model
    return w.T if w.shape[0] == d_model else w


def neuron_copy(transcoder: Transcoder, w_in: Float[Tensor, "d_mlp d_in"],
                live: Tensor | None = None, threshold: float = 0.9) -> tuple[float, float]:
    """(mean over live latents of max_j |cos(W_enc[i], W_in[j])|, fraction of them above ``threshold``)."""
    enc = transcoder.W_enc.detach().float()
    if live is not None:
        enc = enc[live.to(enc.device)]
    if len(enc) == 0:
        return float("nan"), float("nan")
    cos = torch.nn.functional.normalize(enc, dim=1) @ torch.nn.functional.normalize(w_in.to(enc.device), dim=1).T
    best = cos.abs().max(1).values
    return float(best.mean()), float((best > threshold).float().mean())


def match_features(
    reference: Float[Tensor, "n d"], other: Float[Tensor, "m d"], thresholds: Sequence[float] = (0.7, 0.9)
) -> dict[float, float]:
    """Fraction of ``reference`` rows whose best cosine with a row of ``other`` reaches each threshold.

    For decoder dictionaries: ``match_features(clean.W_dec[live], refit.W_dec)``.
    """
    if len(reference) == 0:
        return {t: float("nan") for t in thresholds}
    a = torch.nn.functional.normalize(reference.detach().float(), dim=1)
    b = torch.nn.functional.normalize(other.detach().float().to(a.device), dim=1)
    best = (a @ b.T).max(1).values
    return {t: float((best >= t).float().mean()) for t in thresholds}
