"""Capture of probe data: the residual stream at every (layer, position) site, with labels, groups and types.

Layer ``l < n_layers`` is ``resid_pre(l)`` (layer 0 = the embedding), layer ``n_layers`` the final
``resid_post``; activations are captured batch by batch (``ProbeConfig.batch_size`` rows per forward).

Positions on padded rows (right padding, ``attention_mask``): ``"last"`` reads each row's last real
token, position ``len_b − 1`` with ``len_b = Σ_t attention_mask[b, t]``; an integer position or a
column that lands on padding (``-1`` in every row shorter than the longest) reads a [PAD] token, whose
representation only measures attention leakage: a warning says in how many rows.

Example::

    >>> from interp import organisms
    >>> from analyses.probing import ProbeConfig, probe_data
    >>> model, task = organisms.load("minilm")
    >>> train = probe_data(model, task, ProbeConfig(label="label", positions=("sep_pos",), eval_rows=64), "train")
    >>> train.x.shape                       # (site, row, d_model): the embeddings and the 6 layers
    torch.Size([7, 64, 384])
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

import hooks
from analyses.probing._config import LAST_TOKEN, ProbeConfig
from analyses.probing._labels import LabelSpec
from interp.models import device_of

__all__ = ["layer_point", "ProbeData", "probe_data"]


def layer_point(model: Any, layer: int) -> str:
    """The residual-stream point of probe layer ``layer``: ``resid_pre(l)``, or the final ``resid_post``."""
    n = model.cfg.n_layers
    if not 0 <= layer <= n:
        raise ValueError(f"layer={layer!r}: probe layers run from 0 (embedding) to {n} (final resid_post).")
    return hooks.resid_pre(layer) if layer < n else hooks.resid_post(n - 1)


@dataclass
class ProbeData:
    """Activations of the probed examples at every site, with labels, groups, types and positions.

    ``x[s, i]`` is example ``i`` at site ``s`` (sites: layers × position specs, layer-major).
    """

    x: Float[Tensor, "site n d"]
    y: Int[Tensor, "n"]
    groups: Int[Tensor, "n"]
    types: Int[Tensor, "site n"]
    positions: Int[Tensor, "site n"]
    sites: list[str]
    layers: list[int]
    n_classes: int


def _ids(values: list) -> Tensor:
    """Map arbitrary hashable values (strings, ints) to consecutive integer ids."""
    vocab: dict = {}
    return torch.tensor([vocab.setdefault(v, len(vocab)) for v in values], dtype=torch.long)


def _type_ids(values: list) -> Tensor:
    """Ids of control *types* that agree across splits (the control task pools train and test, so the
    same word must get the same id in both and different words different ids): a 62-bit BLAKE2b hash
    of each value's ``repr``."""
    return torch.tensor(
        [int.from_bytes(hashlib.blake2b(repr(v).encode(), digest_size=8).digest(), "little") >> 2 for v in values],
        dtype=torch.long,
    )


def _resolve_label(spec: LabelSpec, data: dict[str, Tensor], split: str) -> Tensor:
    if isinstance(spec, str):
        if spec not in data:
            raise ValueError(f"label column {spec!r} is not a numeric column of split {split!r}; has {sorted(data)}.")
        return data[spec].long()
    return torch.as_tensor(spec(data)).long()


def _warn_padding(mask: Tensor | None, pos: Tensor, specs: list[str], split: str) -> None:
    """Warn when a probed position is a padding token (``attention_mask`` 0) in some rows."""
    if mask is None:
        return
    rows = torch.arange(pos.shape[1])
    for spec, p in zip(specs, pos):
        n_pad = int((mask[rows, p] == 0).sum())
        if n_pad:
            warnings.warn(
                f"probing at position {spec}: {n_pad} of {len(p)} rows of split {split!r} read a padding "
                "token there, whose activation is not the text's; use positions=('last',) (each row's last "
                "real token) or a column of per-row positions.", UserWarning, stacklevel=5)


def probe_data(model: Any, task: Any, config: ProbeConfig, split: str = "test") -> ProbeData:
    """Capture the residual stream at every site of ``config`` on one split (one pass per batch)."""
    ds = task.dataset[split]
    n_rows = len(ds) if config.eval_rows is None else min(config.eval_rows, len(ds))
    data = task.tensors(split, rows=n_rows)
    ids = data["input_ids"].long()
    layers = list(config.layers) if config.layers is not None else list(range(model.cfg.n_layers + 1))
    label = _resolve_label(config.label, data, split)
    if label.dim() == 2:  # per-token labels
        if config.positions:   # None or () for per-token labels
            raise ValueError(
                f"positions={config.positions!r}: a per-token label chooses its own positions (−1 = not "
                "probed); leave positions empty."
            )
        row_idx, pos_idx = (label >= 0).nonzero(as_tuple=True)
        specs, pos_per_spec, y = ["tok"], pos_idx[None], label[row_idx, pos_idx]
    else:
        specs, pos_per_spec = _row_positions(config, data, n_rows, split)
        row_idx, pos_idx, y = torch.arange(n_rows), None, label
    n_spec = len(specs)
    # all (spec, example) pairs flattened, gathered per batch of rows
    all_rows = row_idx.repeat(n_spec)
    all_pos = pos_per_spec.reshape(-1)
    x = _capture_sites(model, ids, data.get("attention_mask"), layers, all_rows, all_pos, config, split)
    d = model.cfg.d_model
    x = x.view(len(layers), n_spec, -1, d).reshape(len(layers) * n_spec, -1, d)
    sites = [f"L{layer}" if specs == ["tok"] else f"L{layer}@{s}" for layer in layers for s in specs]
    if config.group is None:  # rows are the groups: tokens of one sequence stay in one fold
        groups = row_idx.clone()
    else:
        groups = _ids(list(ds.select(range(n_rows))[config.group]))[row_idx]
    types = _control_types(config, ds, data, n_rows, row_idx, pos_idx, ids[all_rows, all_pos].view(n_spec, -1))
    n_classes = int(y.max().item()) + 1 if len(y) else 0
    rep = len(layers)
    return ProbeData(
        x=x,
        y=y,
        groups=groups,
        types=types.repeat(rep, 1),
        positions=pos_per_spec.repeat(rep, 1) if pos_idx is None else pos_idx[None].repeat(rep, 1),
        sites=sites,
        layers=[layer for layer in layers for _ in specs],
        n_classes=n_classes,
    )


def _row_positions(config: ProbeConfig, data: dict[str, Tensor], n_rows: int, split: str
                   ) -> tuple[list[str], Int[Tensor, "spec rows"]]:
    """For a per-row label: the position specs (as text) and the token each reads in every row."""
    ids = data["input_ids"]
    mask_all = data.get("attention_mask")
    # the default on padded rows: the last real token; unpadded rows have no default position
    positions = config.positions if config.positions is not None else (
        (LAST_TOKEN,) if mask_all is not None else ())
    if not positions:
        raise ValueError("positions=(): a per-row label needs positions to read, e.g. ('sep_pos',), "
                         f"({LAST_TOKEN!r},) (the last real token) or (-1,).")
    specs, cols = [], []
    for p in positions:
        if p == LAST_TOKEN:
            if mask_all is None:
                cols.append(torch.full((n_rows,), ids.shape[1] - 1, dtype=torch.long))
            else:
                lengths = mask_all.long().sum(-1)
                if (lengths < 1).any():
                    raise ValueError(f"split {split!r}: a row has no real token (attention_mask all 0).")
                cols.append(lengths - 1)
        elif isinstance(p, str):
            if p not in data:
                raise ValueError(f"position column {p!r} not in split {split!r}; has {sorted(data)}.")
            cols.append(data[p].long())
        else:
            cols.append(torch.full((n_rows,), p % ids.shape[1], dtype=torch.long))
        specs.append(str(p))
    pos_per_spec = torch.stack(cols)  # [spec, rows]
    if ((pos_per_spec < 0) | (pos_per_spec >= ids.shape[1])).any():
        raise ValueError(f"positions={positions!r}: a position lies outside the rows' {ids.shape[1]} tokens.")
    _warn_padding(mask_all, pos_per_spec, specs, split)
    return specs, pos_per_spec


def _capture_sites(model: Any, ids: Tensor, mask: Tensor | None, layers: list[int], all_rows: Tensor,
                   all_pos: Tensor, config: ProbeConfig, split: str) -> Float[Tensor, "layer pair d"]:
    """The residual stream at each layer for every (row, position) pair, ``config.batch_size`` rows
    per forward."""
    from tqdm.auto import tqdm

    points = [layer_point(model, layer) for layer in layers]
    n_rows = len(ids)
    x = torch.empty(len(layers), len(all_rows), model.cfg.d_model)
    device = device_of(model)
    for start in tqdm(range(0, n_rows, config.batch_size), desc=f"capture {split}", disable=not config.progress):
        stop = min(start + config.batch_size, n_rows)
        sel = ((all_rows >= start) & (all_rows < stop)).nonzero(as_tuple=True)[0]
        if len(sel) == 0:
            continue
        kw = {} if mask is None else {"attention_mask": mask[start:stop].to(device)}
        acts = hooks.capture(model, ids[start:stop].to(device), points, device="cpu", **kw)
        r, p = all_rows[sel] - start, all_pos[sel]
        for i, pt in enumerate(points):
            x[i, sel] = acts[pt][r, p].float()
    return x


def _control_types(config: ProbeConfig, ds: Any, data: dict[str, Tensor], n_rows: int, row_idx: Tensor,
                   pos_idx: Tensor | None, tokens: Int[Tensor, "spec n"]) -> Int[Tensor, "spec n"]:
    """The control task's type of every probed example per position spec (``config.control_type``:
    none, the token read, a column, or a function of the batch); ``pos_idx``: the per-token label's
    positions (``None`` for a per-row label)."""
    n_spec = len(tokens)
    if config.control_type is None:
        return torch.zeros(n_spec, len(row_idx), dtype=torch.long)
    if config.control_type == "token":
        return tokens
    if isinstance(config.control_type, str):
        if config.control_type in data:
            t = data[config.control_type].long()
        else:
            t = _type_ids(list(ds.select(range(n_rows))[config.control_type]))  # not per-split ids
        return t[row_idx][None].expand(n_spec, -1)
    t = torch.as_tensor(config.control_type(data)).long()
    t = t[row_idx, pos_idx] if t.dim() == 2 and pos_idx is not None else t[row_idx]
    return t[None].expand(n_spec, -1)
