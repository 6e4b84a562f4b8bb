"""Treeified execution of a causal-scrubbing hypothesis on a TransformerBridge, batched.

The algorithm (Chan et al. 2022, §"Causal scrubbing" and appendix on treeification). Each node ``n``
is evaluated on a *datum* ``d`` (a dataset row; per position where a rule is per position):

    value(n, d)   = the write of n computed with each of its readings R replaced by
    reading(R, d) = Σ_{claimed c} P_c[value(c, d_c) − c(x_r)] + stream_R(x_r),
                    d_c ~ D | f_c(d_c) = f_c(d)           (the child's rule, relative to d)
                    x_r ~ D                                (one random input per node evaluation)

``P_c`` restricts a child's claim to its positions and subspace (the rest stays on ``x_r``). With
``unclaimed="mean"``, ``stream_R(x_r)`` and ``c(x_r)`` are replaced by their means over the data.
Because the residual stream of a pre-LN transformer is a sum of writes, ``stream_R(x_r) − Σ c(x_r)``
is exactly "every unclaimed write on x_r" (Elhage et al. 2021); the LayerNorm and projections of the
reading then act on the recombined sum, as in the real model.

Every claimed path gets its own input (treeification), but only as far as the hypothesis goes: an
unexpanded node (``q``/``k``/``v``/``inputs`` = ``None``) is computed in one forward on its datum.
A per-position rule (``Agree.token_at``) gives each position its own sequence; a node below it that
is expanded further is then evaluated once per (row, position) on a ``rows × pos`` virtual batch and
its value read at that position (leaves only read the distinct sequences once).

Head readings are fed through the bridge itself: one forward with ``resid_pre(l)`` replaced by the
stacked readings (captures ``attn.hook_q/k/v``), then one forward on the datum with head ``h``'s
``q``, ``k``, ``v`` patched (captures ``head_out(l, h)``), so LayerNorm, biases and the attention are
the model's own code. Hand-written because no TL 4 implementation of causal scrubbing exists.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

import hooks
from analyses.scrubbing._hypothesis import MLP, Embed, Head, Hypothesis, Node, PosEmbed
from analyses.scrubbing._rules import Agree, QueryOffset
from interp.models import device_of

__all__ = ["Groups", "Scrubber"]


@dataclass
class Groups:
    """The dataset grouped on one rule's values: for each class its members, for sampling."""

    key: Int[Tensor, "rows pos"]  # class id of (row, position); pos = 1 for sequence-level rules
    members: Int[Tensor, "m"]  # rows sorted by class
    start: Int[Tensor, "classes"]
    count: Int[Tensor, "classes"]
    per_position: bool

    @classmethod
    def build(cls, agree: Agree, columns: dict[str, Tensor]) -> Groups:
        values = agree.fn(columns)  # type: ignore[misc]
        n_rows = len(next(iter(columns.values())))
        if not isinstance(values, Tensor):
            values = torch.as_tensor(values)
        values = values.detach().cpu()
        if values.dtype.is_floating_point or values.dtype.is_complex:
            raise ValueError(
                f"Agree {agree.name!r}: fn returned {values.dtype} values; return integer class "
                "labels (e.g. round or bucket floats yourself)."
            )
        want = 2 if agree.per_position else 1
        if values.shape[0] != n_rows or values.dim() != want:
            raise ValueError(
                f"Agree {agree.name!r}: fn returned shape {tuple(values.shape)}; expected "
                + (f"[rows={n_rows}, pos] (per_position=True)." if agree.per_position
                   else f"[rows={n_rows}] (per_position=False).")
            )
        values = values.long()
        if values.dim() == 1:
            values = values[:, None]
        rows, pos = values.shape
        pairs = torch.stack([torch.arange(pos).expand(rows, pos), values], -1).reshape(-1, 2)
        _, key = torch.unique(pairs, dim=0, return_inverse=True)
        key = key.view(rows, pos)
        order = torch.argsort(key.reshape(-1), stable=True)
        members = order // pos  # flat index r·pos + t → row r
        count = torch.bincount(key.reshape(-1))
        start = torch.cumsum(count, 0) - count
        return cls(key, members, start, count, agree.per_position)

    def sample(self, parent: Int[Tensor, "n pos"], gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """A uniformly random class member for every entry of ``parent`` (rows of the dataset);
        also the class sizes, for the too-few-members flag."""
        if self.per_position:
            k = self.key[parent, torch.arange(parent.shape[1]).expand_as(parent)]
        else:
            k = self.key[parent, 0]
        u = torch.rand(k.shape, generator=gen)
        idx = self.start[k] + torch.minimum((u * self.count[k]).long(), self.count[k] - 1)
        return self.members[idx], self.count[k]


def _site(node: Node) -> str:
    if isinstance(node, Embed):
        return hooks.embed()
    if isinstance(node, PosEmbed):
        return "hook_pos_embed"
    if isinstance(node, Head):
        return hooks.head_out(node.layer, node.head)
    if isinstance(node, MLP):
        return hooks.mlp_out(node.layer)
    raise TypeError(f"unknown node type {type(node).__name__}")


def _stable_seed(*parts: object) -> int:
    return zlib.crc32(repr(parts).encode()) & 0x7FFFFFFF


class Scrubber:
    """Evaluates hypotheses on one model with one pool of inputs and one seed.

    Args:
        model: a pre-LN TransformerBridge (weights live: degraded draws are scrubbed as they are).
        ids: the pool's token ids ``[rows, pos]`` (references are rows of the pool).
        groups: ``Groups`` per rule (by identity) for every rule of the hypotheses to run.
        seed: resampling seed; draws are keyed by (seed, node path), so hypotheses sharing a node path
            (e.g. a hypothesis and its baseline) share random inputs (common random numbers).
        batch_size: the most sequences per forward.
        min_class: classes with fewer distinct members are counted in ``small``.
        mean_rows: rows of the pool used for ``unclaimed="mean"``.
    """

    def __init__(self, model: Any, ids: Int[Tensor, "rows pos"], groups: dict[int, Groups], seed: int,
                 batch_size: int = 4096, min_class: int = 2, mean_rows: int = 512) -> None:
        self.model = model
        self.device = device_of(model)
        self.ids = ids
        self.groups = groups
        self.seed = seed
        self.batch_size = batch_size
        self.min_class = min_class
        self.mean_rows = mean_rows
        self.n_layers = model.cfg.n_layers
        self.draws = 0  # resampled (row, position) entries drawn by rules
        self.small = 0  # ... of which from a class with < min_class members
        self.forwards = 0  # sequences run through (a part of) the model
        self.needed = 0  # distinct input sequences of the treeified model (the strict minimum)
        self._means: dict[str, Tensor] = {}
        self._unclaimed = "resample"

    # ----------------------------------------------------------------------------- forwards
    def _gen(self, *path: object) -> torch.Generator:
        return torch.Generator().manual_seed(_stable_seed(self.seed, *path))

    def forward(self, rows: Int[Tensor, "n"], points: list[str],
                replace: dict[str, tuple[Tensor, int | None]] | None = None,
                logits: bool = False) -> dict[str, Tensor]:
        """Run the pool rows ``rows``, with ``replace[point] = (tensor [n, ...], head or None)``
        substituted, and capture ``points`` (and the logits if asked), chunked."""
        replace = replace or {}
        outs: dict[str, list[Tensor]] = {}
        for lo in range(0, len(rows), self.batch_size):
            sl = slice(lo, lo + self.batch_size)
            ids = self.ids[rows[sl]].to(self.device)
            hs = [hooks.Hook(p, _replacer(t[sl].to(self.device), h)) for p, (t, h) in replace.items()]
            self.forwards += len(ids)
            with hooks.apply(self.model, hs):
                if logits:
                    got: dict[str, Tensor] = {}
                    cap = [hooks.Hook(p, _recorder(got, p)) for p in points]
                    with hooks.apply(self.model, cap):
                        out = self.model(ids)
                    got["logits"] = out
                else:
                    got = hooks.capture(self.model, ids, points)
            for k, v in got.items():
                outs.setdefault(k, []).append(v)
        return {k: torch.cat(v) for k, v in outs.items()}

    def mean(self, point: str) -> Float[Tensor, "pos d"]:
        if point not in self._means:
            rows = torch.arange(min(self.mean_rows, len(self.ids)))
            self._means[point] = self.forward(rows, [point])[point].mean(0)
        return self._means[point]

    # ----------------------------------------------------------------------------- sampling
    def sample(self, agree: Agree, parent: Int[Tensor, "n"], pos: int, path: str) -> Tensor:
        n = len(parent)
        if agree.kind == "exact":
            return parent[:, None].expand(n, pos)
        gen = self._gen(path, "agree")
        if agree.kind == "unconditional":
            return torch.randint(len(self.ids), (n,), generator=gen)[:, None].expand(n, pos)
        g = self.groups[id(agree)]
        data, sizes = g.sample(parent[:, None].expand(n, pos) if g.per_position else parent[:, None], gen)
        self.draws += sizes.numel()
        self.small += int((sizes < self.min_class).sum())
        return data.expand(n, pos) if data.shape[1] == 1 else data

    # ----------------------------------------------------------------------------- evaluation
    def run(self, hyp: Hypothesis, refs: Int[Tensor, "n"]) -> Float[Tensor, "n pos vocab"]:
        """Logits of the treeified model with ``hyp``'s resampling, on reference rows ``refs``."""
        self._unclaimed = hyp.unclaimed
        self._means = {}
        final = hooks.resid_post(self.n_layers - 1)
        reading = self.reading(list(hyp.children), refs, final, "out")
        return self.forward(refs, [], {final: (reading, None)}, logits=True)["logits"]

    def unclaimed(self, n: int, points: list[str], path: str) -> dict[str, Tensor]:
        """The unclaimed input of one node evaluation at ``points``: one random row per reference
        (``"resample"``) or the data mean (``"mean"``)."""
        points = list(dict.fromkeys(points))
        if self._unclaimed == "mean":
            return {p: self.mean(p).expand(n, -1, -1) for p in points}
        x_r = torch.randint(len(self.ids), (n,), generator=self._gen(path, "unclaimed"))
        self.needed += n
        return self.forward(x_r, points)

    def reading(self, kids: list[Node], parent: Int[Tensor, "n"], point: str, path: str,
                base: dict[str, Tensor] | None = None, per_query: bool = False) -> Float[Tensor, "n pos d"]:
        """The stream read at ``point`` with only ``kids`` claimed (each fed its own input); the
        unclaimed rest from ``base`` (drawn here when not given). ``per_query``: one reading per
        (row, query position t), ``[n·pos, pos, d]``, for kids with :class:`QueryOffset` positions
        (their inputs are drawn once per row; only the claimed positions differ between queries)."""
        n, pos = len(parent), self.ids.shape[1]
        if base is None:
            base = self.unclaimed(n, [point, *map(_site, kids)], path)
        out = base[point]
        query = None
        if per_query:
            out = out.repeat_interleave(pos, 0)
            query = torch.arange(pos).repeat(n)
        for i, c in enumerate(kids):
            cpath = f"{path}/{i}:{c.label()}"
            data = self.sample(c.agree, parent, pos, cpath)
            delta = self.value(c, data, cpath) - base[_site(c)]
            if c.subspace is not None:
                u = c.subspace.to(delta)
                delta = (delta @ u) @ u.T
            if per_query:
                delta = delta.repeat_interleave(pos, 0)
            if c.positions is not None:
                delta = delta * _claimed_positions(c, len(delta), pos, query).to(delta.device)[:, :, None]
            out = out + delta
        return out

    def value(self, node: Node, data: Int[Tensor, "n pos"], path: str) -> Float[Tensor, "n pos d"]:
        """The node's write at every (row, position), each position on its own datum."""
        n, pos = data.shape
        site = _site(node)
        if node.is_leaf:
            uniq, inv = torch.unique(data, return_inverse=True)
            acts = self.forward(uniq, [site])[site]
            self.needed += len(uniq)
            return acts[inv, torch.arange(pos, device=inv.device).expand(n, pos)]
        if not bool((data == data[:, :1]).all()):
            flat = data.reshape(-1)
            v = self.value(node, flat[:, None].expand(-1, pos), path)  # [n*pos, pos, d]
            ar = torch.arange(pos)
            return v.view(n, pos, pos, -1)[:, ar, ar]
        rows = data[:, 0]
        if isinstance(node, Head):
            return self._head(node, rows, path)
        return self._mlp(node, rows, path)  # type: ignore[arg-type]

    def _head(self, node: Head, rows: Tensor, path: str) -> Tensor:
        layer, h = node.layer, node.head
        claimed = {ch: kids for ch, kids in node.channels().items() if kids is not None}
        # claims relative to the query: the head is evaluated once per (row, query position t) on a
        # rows × pos virtual batch and its output read at t
        per_query = any(isinstance(p, QueryOffset) for kids in claimed.values() for c in kids
                        for p in c.positions or ())
        point = hooks.resid_pre(layer)
        # one random input shared by the unclaimed writes of all three readings
        base = self.unclaimed(len(rows), [point, *(_site(c) for k in claimed.values() for c in k)], path)
        readings = [self.reading(list(kids), rows, point, f"{path}/{ch}", base, per_query)
                    for ch, kids in claimed.items()]
        if len(claimed) < 3:
            self.needed += len(rows)  # the unexpanded readings see the head's own input
        pos = self.ids.shape[1]
        rows_f = rows.repeat_interleave(pos) if per_query else rows
        attn = f"blocks.{layer}.attn"
        qkv_points = [f"{attn}.hook_{ch}" for ch in claimed]
        stacked = torch.cat(readings)
        got = self.forward(rows_f.repeat(len(readings)), qkv_points,
                           {hooks.resid_pre(layer): (stacked, None)})
        n = len(rows_f)
        patches = {p: (got[p][i * n:(i + 1) * n], h) for i, p in enumerate(qkv_points)}
        site = _site(node)
        out = self.forward(rows_f, [site], patches)[site]
        if per_query:
            ar = torch.arange(pos)
            out = out.view(len(rows), pos, pos, -1)[:, ar, ar]
        return out

    def _mlp(self, node: MLP, rows: Tensor, path: str) -> Tensor:
        point = hooks.resid_mid(node.layer)
        reading = self.reading(list(node.inputs or ()), rows, point, f"{path}/in")
        site = _site(node)
        return self.forward(rows, [site], {point: (reading, None)})[site]


def _claimed_positions(node: Node, n: int, pos: int, query: Tensor | None) -> Tensor:
    """``[n, pos]`` mask of the positions ``node`` claims: ints from the start (negative: from the
    end), :class:`QueryOffset` relative to each row's ``query`` position."""
    keep = torch.zeros(n, pos, dtype=torch.bool)
    fixed = [p % pos for p in node.positions or () if isinstance(p, int) and -pos <= p < pos]
    if fixed:
        keep[:, fixed] = True
    for p in node.positions or ():
        if isinstance(p, QueryOffset):
            if query is None:
                raise RuntimeError(f"{node.label()}: query-relative positions outside a head's k/v reading.")
            t = query + p.offset
            ok = (t >= 0) & (t < pos)
            keep[torch.arange(n)[ok], t[ok]] = True
    return keep


def _replacer(value: Tensor, head: int | None):
    def fn(x: Tensor) -> Tensor:
        if head is None:
            return value.to(x.dtype)
        out = x.clone()
        out[:, :, head] = value[:, :, head].to(x.dtype)
        return out

    return fn


def _recorder(store: dict[str, Tensor], point: str):
    def fn(x: Tensor) -> None:
        store[point] = x.detach()
        return None

    return fn
