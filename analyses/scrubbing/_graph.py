"""Causal scrubbing of a small graph of functions (not a transformer): the algorithm in the open.

A :class:`Graph` is a DAG ``name -> (fn, parents)``; names that are not nodes are input columns of
the data. A :class:`GraphHypothesis` claims some nodes (or inputs), each with an :class:`Agree` rule
relative to the node that reads it. Scrubbing (Chan et al. 2022) evaluates the output on a reference
row; every node feeds each claimed parent its own resampled row (agreeing with the node's row on the
parent's rule) and every unclaimed parent the clean value on one random row shared by all of them:

    scrub(n, r) = fn_n( [scrub(p, r_p) if p claimed else clean(p, x_r)]_p ),   r_p ~ D | f_p(r_p) = f_p(r)

Used to show what the diagnostics catch on a case small enough to reason about exactly (tests), e.g.
a planted cancellation: a claim that a feature does not matter, where resampling the feature helps
half the examples as much as it hurts the other half, so % loss recovered is 100% and only KL and
E|ΔL| vs |EΔL| see it.

Example::

    >>> import torch
    >>> from analyses.scrubbing import Agree, Graph, GraphHypothesis, scrub_graph
    >>> g = torch.Generator().manual_seed(0)
    >>> data = {"a": torch.randint(2, (512,), generator=g), "b": torch.randint(2, (512,), generator=g)}
    >>> logits = lambda a, b: torch.stack([-4.0 * a, 4.0 * a - 4.0], -1) + 0 * b[:, None]
    >>> graph = Graph({"out": (logits, ("a", "b"))}, output="out")
    >>> m = scrub_graph(graph, GraphHypothesis({"a": Agree.column("a")}), data, data["a"], seeds=2)
    >>> round(m["recovered"], 3)
    1.0
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from analyses.scrubbing._engine import Groups, _stable_seed
from analyses.scrubbing._rules import Agree
from analyses.scrubbing._metrics import summarize

__all__ = ["Graph", "GraphHypothesis", "scrub_graph"]


@dataclass(frozen=True, eq=False)
class Graph:
    """A DAG of functions: ``nodes[name] = (fn, parents)``; ``fn(*parent_values) -> Tensor [n, ...]``.

    Names that are not nodes are inputs, read from the data columns. ``output`` returns logits
    ``[n, classes]``.
    """

    nodes: dict[str, tuple[Callable[..., Tensor], Sequence[str]]]
    output: str

    def __post_init__(self) -> None:
        if self.output not in self.nodes:
            raise ValueError(f"Graph.output={self.output!r} is not a node; nodes: {sorted(self.nodes)}.")
        for name, spec in self.nodes.items():
            if not (isinstance(spec, tuple) and len(spec) == 2 and callable(spec[0])):
                raise ValueError(f"Graph.nodes[{name!r}]={spec!r}: must be (fn, parents).")
        state: dict[str, int] = {}

        def visit(n: str, stack: tuple[str, ...]) -> None:
            if n not in self.nodes or state.get(n) == 2:
                return
            if state.get(n) == 1:
                raise ValueError(f"Graph: cycle {' -> '.join(stack + (n,))}.")
            state[n] = 1
            for p in self.nodes[n][1]:
                visit(p, stack + (n,))
            state[n] = 2

        visit(self.output, ())

    def inputs(self) -> set[str]:
        return {p for _, ps in self.nodes.values() for p in ps if p not in self.nodes}


@dataclass(frozen=True, eq=False)
class GraphHypothesis:
    """Claimed nodes/inputs of a :class:`Graph` with their rules; everything else is unclaimed."""

    claims: dict[str, Agree]
    name: str = "hypothesis"

    def __post_init__(self) -> None:
        bad = {k: v for k, v in self.claims.items() if not isinstance(v, Agree)}
        if bad:
            raise ValueError(f"GraphHypothesis.claims: {bad!r} are not Agree rules.")
        per_pos = [k for k, v in self.claims.items() if v.per_position]
        if per_pos:
            raise ValueError(f"GraphHypothesis: {per_pos} use per-position rules; graphs have no positions.")


class _GraphScrubber:
    def __init__(self, graph: Graph, data: dict[str, Tensor], groups: dict[int, Groups], seed: int):
        self.graph, self.data, self.groups, self.seed = graph, data, groups, seed
        self.n = len(next(iter(data.values())))

    def gen(self, *path: object) -> torch.Generator:
        return torch.Generator().manual_seed(_stable_seed(self.seed, *path))

    def clean(self, node: str, rows: Tensor) -> Tensor:
        if node not in self.graph.nodes:
            return self.data[node][rows]
        fn, parents = self.graph.nodes[node]
        return fn(*[self.clean(p, rows) for p in parents])

    def scrub(self, node: str, rows: Tensor, claims: dict[str, Agree], path: str) -> Tensor:
        if node not in self.graph.nodes:
            return self.data[node][rows]
        fn, parents = self.graph.nodes[node]
        x_r = torch.randint(self.n, (len(rows),), generator=self.gen(path, "unclaimed"))
        vals = []
        for p in parents:
            if p not in claims:
                vals.append(self.clean(p, x_r))
                continue
            a, ppath = claims[p], f"{path}/{p}"
            if a.kind == "exact":
                r = rows
            elif a.kind == "unconditional":
                r = torch.randint(self.n, (len(rows),), generator=self.gen(ppath, "agree"))
            else:
                r = self.groups[id(a)].sample(rows[:, None], self.gen(ppath, "agree"))[0][:, 0]
            vals.append(self.scrub(p, r, claims, ppath))
        return fn(*vals)


def scrub_graph(
    graph: Graph,
    hypothesis: GraphHypothesis,
    data: dict[str, Tensor],
    target: Tensor,
    *,
    rows: int | None = None,
    seeds: int = 4,
    seed: int = 0,
    baselines: dict[str, GraphHypothesis] | None = None,
    **summary: float,
) -> dict[str, float]:
    """Score ``hypothesis`` on ``graph`` with cross-entropy of the output logits against ``target``.

    Args:
        data: input columns ``name -> Tensor [n, ...]``; every rule's ``fn`` sees these.
        target: class index per row ``[n]``.
        rows: reference rows (the first ``rows``; ``None``: all); the whole data is the pool.
        seeds: resampling seeds.
        baselines: named baselines (default ``{"resample_all": GraphHypothesis({})}``).
        **summary: ``min_gap``, ``cancel_tol``, ``bootstrap`` for :func:`summarize`.

    Returns:
        The metrics of :func:`summarize` (one prediction per example).
    """
    missing = graph.inputs() - set(data)
    if missing:
        raise ValueError(f"scrub_graph: data lacks input column(s) {sorted(missing)}.")
    baselines = baselines or {"resample_all": GraphHypothesis({}, name="resample_all")}
    n = len(target)
    refs = torch.arange(n if rows is None else min(rows, n))
    groups: dict[int, Groups] = {}
    for h in (hypothesis, *baselines.values()):
        for a in h.claims.values():
            if a.kind == "function" and id(a) not in groups:
                groups[id(a)] = Groups.build(a, data)
    tgt = target[refs].long()[:, None]
    sc0 = _GraphScrubber(graph, data, groups, seed)
    clean = torch.log_softmax(sc0.clean(graph.output, refs).double(), -1)

    def stats(logits: Tensor) -> tuple[Tensor, Tensor]:
        lp = torch.log_softmax(logits.double(), -1)
        return -lp.gather(-1, tgt)[:, 0], (clean.exp() * (clean - lp)).sum(-1)

    loss, kl, base = [], [], {k: ([], []) for k in baselines}
    for s in range(seeds):
        sc = _GraphScrubber(graph, data, groups, seed * 100_003 + s)
        lo, kk = stats(sc.scrub(graph.output, refs, hypothesis.claims, "out"))
        loss.append(lo), kl.append(kk)
        for name, h in baselines.items():
            bl, bk = stats(sc.scrub(graph.output, refs, h.claims, "out"))
            base[name][0].append(bl), base[name][1].append(bk)
    return summarize(
        -clean.gather(-1, tgt)[:, 0], torch.ones(len(refs)), torch.stack(loss), torch.stack(kl),
        {k: (torch.stack(v[0]), torch.stack(v[1])) for k, v in base.items()}, seed=seed, **summary,
    )
