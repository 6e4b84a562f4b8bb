"""Declarative causal-scrubbing hypotheses: resampling rules (``Agree``), model nodes, ``Hypothesis``.

A hypothesis maps an interpretation onto the model's residual-stream graph (Chan et al. 2022,
"Causal Scrubbing", Redwood Research). Every model node the hypothesis names carries an
:class:`Agree` rule: the inputs on which its interpretation takes the same value are claimed to be
interchangeable at that node. The treeified model is evaluated with each named node fed by its own
resampled input (see :mod:`analyses.scrubbing._engine`); everything the hypothesis does not name is
*unclaimed* and fed one random input per node (``unclaimed="resample"``, Chan et al.) or its mean
over the data (``"mean"``).

Model nodes are additive writes into the residual stream of a pre-LN transformer:

    resid_pre(l) = embed + pos_embed + Σ_{l' < l} (Σ_h head_out(l', h) + b_O(l') + mlp_out(l'))

so a reading of the stream (the Q, K or V input of a head, the input of an MLP, the final
residual that the unembedding reads) decomposes exactly into the claimed writes plus the rest
(Elhage et al. 2021). A node may restrict its claim to some ``positions`` and to a ``subspace``
(columns of an orthonormal basis in d_model); outside, its write counts as unclaimed.

Where the decomposition is exact. It holds, as an identity of the forward pass, for every
**pre-LN** transformer whose blocks only *add* to the stream: sequential blocks (GPT-2, the
organisms) and **parallel attention/MLP blocks** (GPT-NeoX/Pythia, GPT-J: resid_post = resid_pre +
attn(LN(resid_pre)) + mlp(LN'(resid_pre)), ``cfg.parallel_attn_mlp``), with learned absolute
positions written by ``PosEmbed`` or with rotary/ALiBi positions (no positional write: ``PosEmbed``
is then rejected by :meth:`Hypothesis.validate`, and position enters only inside attention). On a
parallel-block model ``MLP`` nodes are refused (the MLP reads resid_pre, not the resid_mid an MLP's
input is scrubbed at), heads are exact. It does **not** hold for post-LN models (BERT, MiniLM:
each block's output is re-normalised, so the stream is not a sum of writes); they are refused.

Positions. ``positions`` entries are ints, absolute from the start (``0`` = first token) or, when
negative, from the end (``-1`` = last token), or :class:`QueryOffset` ``(o)`` = "the key position
``t + o`` for the query at ``t``" inside a head's ``k``/``v`` reading (``QueryOffset(-1)``: the
token just before each query; each query position then gets its own treeified evaluation).

Example::

    >>> from analyses.scrubbing import Agree, Embed, Head, Hypothesis, QueryOffset
    >>> tok, prev = Agree.token_at(0), Agree.token_at(-1)
    >>> h = Hypothesis([Head(1, 0, q=[Embed(tok)], k=[Head(0, 1, prev)], v=[Embed(tok)])])
    >>> h.summary()
    'Head(1,0)[exact] ← q: Embed[token@+0]; k: Head(0,1)[token@-1]; v: Embed[token@+0]'
    >>> Head(1, 0, k=[Head(0, 1, positions=[QueryOffset(-1)])]).k[0].describe()
    'Head(0,1)[exact]@pos[q-1]'
    >>> Head(1, 0, k=[Head(1, 1)])                          # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: Head(1,0).k: child Head(1,1) writes at layer 1, which the k input of Head(1,0) does not read ...
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from jaxtyping import Float, Int

from analyses.scrubbing._rules import UNCONDITIONAL, Agree, QueryOffset
from interp.checks import check_choice, check_number

__all__ = ["Node", "Embed", "PosEmbed", "Head", "MLP", "Hypothesis", "VacuousRuleWarning"]

_UNCLAIMED = ("resample", "mean")

class VacuousRuleWarning(UserWarning):
    """A resampling rule that reads the token the model predicts: any claim then "recovers" the loss
    (e.g. "this head's output depends on the next token" scored 1.000 on induction), which tests
    nothing."""


# ------------------------------------------------------------------------------------------ nodes
def _check_layer(what: str, name: str, value: Any) -> int:
    check_number(what, name, value, integer=True, zero_ok=True)
    return value


def _children(owner: str, channel: str, value: Any) -> tuple[Node, ...] | None:
    if value is None:
        return None
    if isinstance(value, Node):
        value = (value,)
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        raise ValueError(
            f"{owner}.{channel}={value!r}: give None (not scrubbed further) or a list of nodes "
            "(Embed, PosEmbed, Head, MLP); [] claims nothing (all of it resampled)."
        )
    bad = [c for c in value if not isinstance(c, Node)]
    if bad:
        raise ValueError(f"{owner}.{channel}: {bad[0]!r} is not a node (Embed, PosEmbed, Head, MLP).")
    if channel not in ("k", "v"):
        for c in value:
            rel = [p for p in (c.positions or ()) if isinstance(p, QueryOffset)]
            if rel:
                raise ValueError(
                    f"{owner}.{channel}: {c.label()} has query-relative positions {[str(p) for p in rel]}; "
                    "QueryOffset is defined in the k and v readings of a Head (the key positions each "
                    f"query reads). {owner}.{channel} reads each position on its own: use absolute "
                    "positions (negative counts from the end)."
                )
    return tuple(value)


@dataclass(frozen=True, eq=False)
class Node:
    """A model node (a write into the residual stream) and how its input may be resampled.

    Args:
        agree: the resampling rule relative to the parent's input (default: exact).
        positions: claim the write only at these positions (``None``: all): ints from the start,
            negative ints from the end (``-1``: the last token), or :class:`QueryOffset` in a head's
            ``k``/``v`` reading (relative to each query).
        subspace: claim only the write's projection onto ``span(subspace)``, a ``[d_model, k]``
            matrix with orthonormal columns (``None``: the whole write).
    """

    agree: Agree = field(default_factory=Agree.exact)
    positions: tuple[int, ...] | None = None
    subspace: Float[torch.Tensor, "d_model k"] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.agree, Agree):
            raise ValueError(
                f"{self.label()}: agree={self.agree!r} must be an Agree (Agree.exact(), "
                "Agree.unconditional(), Agree.token_at(-1), Agree.on(fn, name), Agree.column(name))."
            )
        if self.positions is not None:
            single = isinstance(self.positions, (int, QueryOffset))
            pos = (self.positions,) if single else tuple(self.positions)
            if not pos or any(not isinstance(p, QueryOffset) and (isinstance(p, bool) or not isinstance(p, int))
                              for p in pos):
                raise ValueError(
                    f"{self.label()}: positions={self.positions!r} must be a non-empty sequence of ints "
                    "(negative: from the end, -1 = last token) or QueryOffset(o) (relative to the query), "
                    "or None for all positions."
                )
            ints = sorted({p for p in pos if isinstance(p, int)}, key=lambda p: (p < 0, p))
            rel = sorted({p for p in pos if isinstance(p, QueryOffset)}, key=lambda p: p.offset)
            object.__setattr__(self, "positions", tuple(ints) + tuple(rel))
        if self.subspace is not None:
            u = self.subspace
            if not isinstance(u, torch.Tensor) or u.dim() != 2 or u.shape[1] < 1:
                raise ValueError(f"{self.label()}: subspace must be a [d_model, k] tensor, got {u!r}.")
            gram = u.double().T @ u.double()
            if not torch.allclose(gram, torch.eye(u.shape[1], dtype=gram.dtype), atol=1e-4):
                raise ValueError(
                    f"{self.label()}: subspace columns are not orthonormal; pass "
                    "hooks.orthonormal_basis(directions) or torch.linalg.qr(U).Q."
                )

    # -- overridden
    def label(self) -> str:
        return type(self).__name__

    def summands(self) -> frozenset[tuple]:
        """The atomic residual writes this node stands for."""
        raise NotImplementedError

    def write_layer(self) -> float:
        """The layer at which the node writes into the stream (−1 for embeddings)."""
        raise NotImplementedError

    def channels(self) -> dict[str, tuple[Node, ...] | None]:
        """The node's readings of the residual stream and their claimed children."""
        return {}

    @property
    def is_leaf(self) -> bool:
        return all(v is None for v in self.channels().values())

    def describe(self) -> str:
        s = f"{self.label()}[{self.agree.name}]"
        if self.positions is not None:
            s += "@pos[" + ", ".join(str(p) for p in self.positions) + "]"
        if self.subspace is not None:
            s += f"@dim{self.subspace.shape[1]}"
        return s


def _check_readings(node: Node) -> None:
    """Children of each reading write upstream of it and claim disjoint writes."""
    for channel, kids in node.channels().items():
        if kids is None:
            continue
        limit = node.read_limit()  # type: ignore[attr-defined]
        seen: dict[tuple, Node] = {}
        for c in kids:
            if c.write_layer() >= limit:
                raise ValueError(
                    f"{node.label()}.{channel}: child {c.label()} writes at layer "
                    f"{math.floor(c.write_layer())}, which the {channel} input of {node.label()} "
                    f"does not read ({node.reads()}); claim a node upstream."  # type: ignore[attr-defined]
                )
            for s in c.summands():
                if s in seen:
                    raise ValueError(
                        f"{node.label()}.{channel}: {c.label()} and {seen[s].label()} both claim the "
                        f"write {s}; claim each write once per reading (one node may list several "
                        "positions; a subspace split needs separate hypotheses)."
                    )
                seen[s] = c


@dataclass(frozen=True, eq=False)
class Embed(Node):
    """The token embedding ``W_E[x_t]`` (``hook_embed``)."""

    def summands(self) -> frozenset[tuple]:
        return frozenset({("embed",)})

    def write_layer(self) -> float:
        return -1


@dataclass(frozen=True, eq=False)
class PosEmbed(Node):
    """The positional embedding (``hook_pos_embed``); the same for every input."""

    def summands(self) -> frozenset[tuple]:
        return frozenset({("pos_embed",)})

    def write_layer(self) -> float:
        return -1


@dataclass(frozen=True, eq=False)
class Head(Node):
    """Attention head ``(layer, head)``: its output ``z_h W_O[h]`` and its Q, K and V inputs.

    ``q``/``k``/``v``: ``None`` = computed on the head's own (resampled) input, not scrubbed further;
    a list of nodes = that input of the head is the stream with only these writes claimed (each fed
    its own resampled input) and every other write unclaimed; ``[]`` = nothing claimed.
    """

    layer: int = 0
    head: int = 0
    q: tuple[Node, ...] | None = None
    k: tuple[Node, ...] | None = None
    v: tuple[Node, ...] | None = None

    def __init__(self, layer: int, head: int, agree: Agree | None = None, *, q=None, k=None, v=None,
                 positions=None, subspace=None) -> None:
        object.__setattr__(self, "layer", _check_layer(f"Head({layer},{head})", "layer", layer))
        object.__setattr__(self, "head", _check_layer(f"Head({layer},{head})", "head", head))
        object.__setattr__(self, "agree", Agree.exact() if agree is None else agree)
        object.__setattr__(self, "positions", positions)
        object.__setattr__(self, "subspace", subspace)
        for ch, val in (("q", q), ("k", k), ("v", v)):
            object.__setattr__(self, ch, _children(self.label(), ch, val))
        Node.__post_init__(self)
        _check_readings(self)

    def label(self) -> str:
        return f"Head({self.layer},{self.head})"

    def summands(self) -> frozenset[tuple]:
        return frozenset({("head", self.layer, self.head)})

    def write_layer(self) -> float:
        return self.layer

    def read_limit(self) -> float:
        return self.layer

    def reads(self) -> str:
        return f"it reads the writes of layers < {self.layer}"

    def channels(self) -> dict[str, tuple[Node, ...] | None]:
        return {"q": self.q, "k": self.k, "v": self.v}


@dataclass(frozen=True, eq=False)
class MLP(Node):
    """The MLP of block ``layer``: its output (``hook_mlp_out``) and its input (``inputs``)."""

    layer: int = 0
    inputs: tuple[Node, ...] | None = None

    def __init__(self, layer: int, agree: Agree | None = None, *, inputs=None, positions=None,
                 subspace=None) -> None:
        object.__setattr__(self, "layer", _check_layer(f"MLP({layer})", "layer", layer))
        object.__setattr__(self, "agree", Agree.exact() if agree is None else agree)
        object.__setattr__(self, "positions", positions)
        object.__setattr__(self, "subspace", subspace)
        object.__setattr__(self, "inputs", _children(self.label(), "inputs", inputs))
        Node.__post_init__(self)
        _check_readings(self)

    def label(self) -> str:
        return f"MLP({self.layer})"

    def summands(self) -> frozenset[tuple]:
        return frozenset({("mlp", self.layer)})

    def write_layer(self) -> float:
        return self.layer + 0.5

    def read_limit(self) -> float:
        return self.layer + 0.5

    def reads(self) -> str:
        return f"it reads heads of layers ≤ {self.layer} and MLPs of layers < {self.layer}"

    def channels(self) -> dict[str, tuple[Node, ...] | None]:
        return {"inputs": self.inputs}


# ------------------------------------------------------------------------------------- hypothesis
@dataclass(frozen=True, eq=False)
class Hypothesis:
    """An interpretation of the model's output: the writes the final residual stream is claimed to
    need, each with its resampling rule; all other writes are unclaimed.

    Args:
        children: the claimed nodes feeding the final residual stream (read by the unembedding).
            ``[]`` claims nothing: every input is resampled (the usual baseline).
        name: used in reports.
        unclaimed: ``"resample"`` (each node's unclaimed writes are computed on one random input
            shared by all of them, Chan et al.) or ``"mean"`` (their mean over the data).
    """

    children: tuple[Node, ...] = ()
    name: str = "hypothesis"
    unclaimed: Literal["resample", "mean"] = "resample"

    def __post_init__(self) -> None:
        kids = _children(f"Hypothesis({self.name!r})", "children", self.children)
        object.__setattr__(self, "children", kids or ())
        check_choice("Hypothesis", "unclaimed", self.unclaimed, _UNCLAIMED,
                     fix="'resample': one random input per node, Chan et al.; 'mean': the data mean.")
        seen: dict[tuple, Node] = {}
        for c in self.children:
            for s in c.summands():
                if s in seen:
                    raise ValueError(
                        f"Hypothesis({self.name!r}): {c.label()} and {seen[s].label()} both claim "
                        f"the write {s}; claim each write once per reading."
                    )
                seen[s] = c
        for n in self.nodes():
            if n.agree.offset is not None and n.agree.offset >= 1:
                warnings.warn(
                    f"Hypothesis({self.name!r}): {n.label()} resamples with Agree.token_at({n.agree.offset:+d}), "
                    "which reads the token the model predicts (the target): a claim that a node depends on "
                    "it recovers the loss by construction (it scored 1.000 on induction) and tests nothing. "
                    "Use offsets <= 0.", VacuousRuleWarning, stacklevel=2)

    def nodes(self) -> list[Node]:
        """Every node of the hypothesis, depth first."""
        out: list[Node] = []

        def walk(n: Node) -> None:
            out.append(n)
            for kids in n.channels().values():
                for c in kids or ():
                    walk(c)

        for c in self.children:
            walk(c)
        return out

    def agreements(self) -> list[Agree]:
        """The distinct resampling rules used (by identity)."""
        seen: dict[int, Agree] = {}
        for n in self.nodes():
            seen.setdefault(id(n.agree), n.agree)
        return list(seen.values())

    def unconditional(self, name: str | None = None) -> Hypothesis:
        """The same tree (paths, positions, subspaces) with every rule unconditional: each claimed path
        gets its own random input. The default primary baseline: it keeps the treeification fixed and
        removes only the interpretation, so "everything unconditional" scores exactly 0 recovered."""
        import dataclasses

        def conv(n: Node) -> Node:
            kids = {ch: None if v is None else [conv(c) for c in v] for ch, v in n.channels().items()}
            return dataclasses.replace(n, agree=UNCONDITIONAL, **kids)

        return Hypothesis([conv(c) for c in self.children], name=name or f"{self.name}_unconditional",
                          unclaimed=self.unclaimed)

    def validate(self, model: Any) -> None:
        """Check the hypothesis against ``model`` before anything runs: a pre-LN residual stream (the
        decomposition is exact; see the module docstring), nodes that exist (layers, heads, MLPs,
        positions), ``PosEmbed`` only where positions are a write into the stream (learned absolute
        positions, not rotary, ALiBi or shortformer ones), ``MLP`` nodes only on sequential blocks."""
        import hooks

        cfg = model.cfg
        pos_kind = getattr(cfg, "positional_embedding_type", "standard")
        if pos_kind != "standard" and any(isinstance(n, PosEmbed) for n in self.nodes()):
            raise ValueError(
                f"Hypothesis({self.name!r}): PosEmbed claims the positional-embedding write, but this model's "
                f"positions are {pos_kind!r} (positional_embedding_type): they enter inside attention and "
                "write nothing into the residual stream. Remove the PosEmbed nodes; position information "
                "is then part of each head's own computation."
            )
        if hooks.is_post_ln(model):
            raise ValueError(
                f"Hypothesis({self.name!r}): the model is post-LN (e.g. BERT); its residual stream is "
                "not a sum of writes, so scrubbing by write is undefined. Use a pre-LN model."
            )
        for n in self.nodes():
            layer = getattr(n, "layer", None)
            if layer is not None and layer >= cfg.n_layers:
                raise ValueError(f"{n.label()}: layer {layer} ≥ n_layers={cfg.n_layers} of the model.")
            if isinstance(n, Head) and n.head >= cfg.n_heads:
                raise ValueError(f"{n.label()}: head {n.head} ≥ n_heads={cfg.n_heads} of the model.")
            if isinstance(n, MLP) and getattr(cfg, "attn_only", False):
                raise ValueError(f"{n.label()}: the model is attention-only (no MLPs).")
            if isinstance(n, MLP) and getattr(cfg, "parallel_attn_mlp", False):
                raise ValueError(
                    f"{n.label()}: the model runs attention and MLP in parallel (parallel_attn_mlp, e.g. "
                    "GPT-NeoX/Pythia, GPT-J): its MLP reads resid_pre, not the resid_mid that MLP nodes "
                    "are scrubbed at, so MLP nodes are not supported on it. Leave MLPs out of the "
                    "hypothesis (their writes are then unclaimed) or use a sequential-block model."
                )
            far = [p for p in (n.positions or ()) if isinstance(p, int) and not -cfg.n_ctx <= p < cfg.n_ctx]
            if far:
                raise ValueError(f"{n.label()}: positions {far} beyond n_ctx={cfg.n_ctx} (negative ones count "
                                 "from the end).")
            if n.subspace is not None and n.subspace.shape[0] != cfg.d_model:
                raise ValueError(
                    f"{n.label()}: subspace has {n.subspace.shape[0]} rows, d_model={cfg.d_model}."
                )

    def summary(self) -> str:
        """One line per claimed output node, children per reading."""

        def fmt(n: Node) -> str:
            parts = [
                f"{ch}: " + (", ".join(fmt(c) for c in kids) if kids else "∅")
                for ch, kids in n.channels().items()
                if kids is not None
            ]
            return n.describe() + (" ← " + "; ".join(parts) if parts else "")

        return "\n".join(fmt(c) for c in self.children) if self.children else "∅ (everything resampled)"


def rows_of(data: Int[torch.Tensor, "n pos"]) -> bool:
    """Whether every row of a datum tensor uses one sequence at all positions."""
    return bool((data == data[:, :1]).all())
