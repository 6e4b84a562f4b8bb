"""The per-draw analysis: Shi et al.'s tests of one circuit claim on a TransformerLens 4 bridge.

Nodes, knockout, score and tests as in :mod:`analyses.circuit_tests`: every run knocks out a set S of
nodes (their outputs replaced by the clean batch mean per position, or by a donor row's output) and
scores each row by the mean log-probability of its scored targets; runs are memoised per call, so
100 inflated and 100 random circuits on a small graph cost one forward per distinct set.

Example::

    >>> CircuitTests(nodes=("embed", "L0H0", "L1H0"), eval_rows=64)
    CircuitTests(nodes=('embed', 'L0H0', 'L1H0'), ablation='mean', eval_rows=64, epsilon=0.1, alpha=0.05, q_star=0.9, q=0.9, n_random=100, permutations=1000, resolution=0.0001, seed=0, break_fraction=0.5, name='circuit_tests')
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from jaxtyping import Float

import hooks
from analyses._base import Params
from analyses.circuit_tests._stats import binomial_tail, compute_cpr_cmd, equivalence_p, hsic_p
from interp.checks import bad_value, check_choice, check_fraction, check_is_fitted, check_number
from interp.models import device_of

__all__ = ["CircuitTests", "evaluate_circuit", "graph_nodes"]

_ABLATIONS = ("mean", "resample")
_NODE_RE = re.compile(r"^(embed|L(\d+)H(\d+)|MLP(\d+))$")


def graph_nodes(model: Any) -> tuple[str, ...]:
    """The nodes of ``model``'s graph in computation order: ``embed``, then per layer its heads
    ``L{l}H{h}`` and (unless attention-only) ``MLP{l}``."""
    cfg = model.cfg
    nodes = ["embed"]
    for layer in range(int(cfg.n_layers)):
        nodes += [f"L{layer}H{h}" for h in range(int(cfg.n_heads))]
        if not getattr(cfg, "attn_only", False):
            nodes.append(f"MLP{layer}")
    return tuple(nodes)


def _point(node: str) -> str:
    m = _NODE_RE.match(node)
    assert m is not None
    if node == "embed":
        return hooks.embed()
    if m.group(2) is not None:
        return hooks.head_out(int(m.group(2)), int(m.group(3)))
    return hooks.mlp_out(int(m.group(4)))


def _check_nodes(owner: str, name: str, nodes: Any) -> None:
    if isinstance(nodes, str) or not isinstance(nodes, (tuple, list)) or not nodes \
            or not all(isinstance(n, str) and _NODE_RE.match(n) for n in nodes):
        raise bad_value(owner, name, nodes, "a non-empty sequence of node names 'embed', 'L{layer}H{head}' or "
                        "'MLP{layer}'", "Use e.g. nodes=('embed', 'L0H0', 'L1H0'); graph_nodes(model) lists them.")
    if len(set(nodes)) != len(nodes):
        raise bad_value(owner, name, nodes, "distinct node names", "Remove the repeated node.")


class CircuitTests(Params):
    """Shi et al.'s tests of the claim "``nodes`` carry the task", plus MIB's CPR/CMD, per draw.

    Args:
        nodes: the claim's nodes (``"embed"``, ``"L{l}H{h}"``, ``"MLP{l}"``; :func:`graph_nodes`).
        ablation: ``"mean"`` (default) or ``"resample"`` knockout (module docstring).
        eval_rows: test rows of the fixed evaluation batch (each row is one example of the tests).
        epsilon: equivalence margin ε (0.1).
        alpha: level of every test (0.05; minimality Bonferroni-corrected to α/|C|).
        q_star: minimality quantile q* (0.9).
        q: sufficiency / partial-necessity quantile q (0.9).
        n_random: inflated circuits (minimality) and random circuits (flexible tests): 100.
        permutations: HSIC permutations (1000).
        resolution: score differences (nats) below it are ties / numerical noise (1e-4).
        seed: seeds the random circuits, paths, permutations and resample donors (the same at every
            draw, so draws differ only by their weights).
        break_fraction: a node is *necessary* when knocking it out of the circuit removes at least
            this much faithfulness, f(C) − f(C∖v) ≥ break_fraction (0.5: half the model's effect).
        name: the analysis name in sweep results.

    Parameters are checked by :meth:`setup` (``param_constraints``).

    Metrics (floats; pass/fail as 1.0/0.0): ``equivalence_p``, ``equivalence_pass``,
    ``equivalence_fraction`` (P̂(Δ > 0) over untied rows), ``equivalence_untied``;
    ``independence_p``, ``independence_pass``, ``independence_hsic``, ``model_score_sd``;
    ``minimality_p_min`` (the smallest node p-value), ``minimality_pass``; ``idealised_pass`` (all
    three; NaN when one could not run: minimality and the flexible tests need a node outside C);
    ``sufficiency_p``, ``sufficiency_pass``, ``sufficiency_quantile``,
    ``partial_necessity_p``, ``partial_necessity_pass``, ``partial_necessity_quantile``;
    ``score_model``, ``score_circuit``, ``score_complement``, ``score_empty``; ``faithfulness``
    f(C) (the effect), ``cpr``, ``cmd``; per node v of the claim ``minimality_p_{v}``,
    ``necessity_{v}`` = f(C) − f(C∖v) (the faithfulness its knockout removes, in units of the
    model's effect m(M) − m(∅)) and ``necessary_{v}`` (1.0 when that is at least ``break_fraction``:
    the knockout breaks the effect). Both NaN when knocking everything out costs nothing.

    Fitted by :meth:`setup`: ``batch_``, ``nodes_`` (every node of the graph), ``ranking_`` (the
    CPR/CMD order), ``inflated_`` (the 100 (inflated circuit, knocked node) pairs), ``random_``
    (the 100 random circuits).
    """

    effects = ("faithfulness",)
    collaterals = ()

    param_constraints = {
        "nodes": _check_nodes,
        "ablation": partial(check_choice, choices=_ABLATIONS),
        "eval_rows": partial(check_number, integer=True, minimum=8,
                             fix="The tests need rows to count: at least 8 (128 is the default)."),
        "epsilon": partial(check_number, maximum=0.5, fix="The paper's margin is epsilon=0.1."),
        "alpha": partial(check_fraction, closed=False, fix="Use e.g. alpha=0.05."),
        "q_star": partial(check_fraction, closed=False, fix="The paper's quantile is q_star=0.9."),
        "q": partial(check_fraction, closed=False, fix="The paper's quantile is q=0.9."),
        "n_random": partial(check_number, integer=True, minimum=1,
                            fix="The paper draws n_random=100 random/inflated circuits."),
        "permutations": partial(check_number, integer=True, minimum=1, fix="Use e.g. permutations=1000."),
        "resolution": partial(check_number, zero_ok=True,
                              fix="Score differences below it are ties; 1e-4 nats is the default."),
        "seed": partial(check_number, integer=True, zero_ok=True, fix="Use a non-negative integer seed."),
        "break_fraction": partial(check_fraction, closed=False,
                                  fix="A node is necessary when its knockout removes this share of the circuit's "
                                      "effect; 0.5 is the default."),
    }

    def __init__(self, nodes: Sequence[str], *, ablation: str = "mean", eval_rows: int = 128, epsilon: float = 0.1,
                 alpha: float = 0.05, q_star: float = 0.9, q: float = 0.9, n_random: int = 100,
                 permutations: int = 1000, resolution: float = 1e-4, seed: int = 0, break_fraction: float = 0.5,
                 name: str = "circuit_tests"):
        self.nodes, self.ablation, self.eval_rows = nodes, ablation, eval_rows
        self.epsilon, self.alpha, self.q_star, self.q = epsilon, alpha, q_star, q
        self.n_random, self.permutations, self.resolution, self.seed, self.name = (
            n_random, permutations, resolution, seed, name)
        self.break_fraction = break_fraction

    # -------------------------------------------------------------- setup (clean weights)
    def setup(self, model: Any, task: Any) -> None:
        self.validate_params()
        if not getattr(task, "has_loss", True) or "target_mask" not in task.dataset["test"].column_names:
            raise ValueError(f"{self.name}: task {getattr(task, 'name', task)!r} has no 'target_mask' column; the "
                             "circuit tests score the task's next-token targets. Use a task with a next-token loss.")
        self.nodes_ = graph_nodes(model)
        missing = [n for n in self.nodes if n not in self.nodes_]
        if missing:
            raise ValueError(f"{self.name}: nodes {missing} are not in this model's graph; it has {list(self.nodes_)}. "
                             "Name heads as 'L{layer}H{head}', MLPs as 'MLP{layer}', the embedding 'embed'.")
        self.batch_ = task.tensors("test", rows=self.eval_rows, columns=("input_ids", "target_mask"))
        n_rows = len(self.batch_["input_ids"])
        if n_rows < 8:
            raise ValueError(f"{self.name}: the task's test split has {n_rows} rows; the tests need at least 8. "
                             "Build the task with more test rows (n_test=...).")
        if not bool((self.batch_["target_mask"][:, 1:].sum(1) > 0).all()):
            raise ValueError(f"{self.name}: some evaluation rows have no scored target; every row is one example "
                             "of the tests. Use a task whose rows each score at least one token.")
        rng = np.random.default_rng(self.seed)
        self.inflated_ = self._sample_inflated(rng)
        self.random_ = self._sample_random(rng)
        if self.ablation == "resample":
            n = n_rows
            self.donors_ = torch.as_tensor((np.arange(n) + rng.integers(1, n, size=n)) % n)
        runs = _Runs(self, model)
        full = runs.mean(frozenset())
        effect = {v: full - runs.mean(frozenset([v])) for v in self.nodes_}
        claim = sorted(self.nodes, key=lambda v: -effect[v])
        rest = sorted((v for v in self.nodes_ if v not in self.nodes), key=lambda v: -effect[v])
        self.ranking_ = tuple(claim + rest)

    def _sample_inflated(self, rng: np.random.Generator) -> list[tuple[frozenset[str], str]] | None:
        """(inflated circuit, added node knocked out) × n_random; None when C is the whole graph."""
        claim = set(self.nodes)
        outside = [v for v in self.nodes_ if v not in claim]
        if not outside:
            return None
        order = {v: i for i, v in enumerate(self.nodes_)}
        out = []
        while len(out) < self.n_random:
            path, here = [], 0  # a random walk from the embedding (index 0) to the output
            path.append(self.nodes_[0])
            while True:
                later = list(range(here + 1, len(self.nodes_))) + [len(self.nodes_)]  # the output last
                here = int(rng.choice(later))
                if here == len(self.nodes_):
                    break
                path.append(self.nodes_[here])
            added = sorted((v for v in path if v not in claim), key=order.__getitem__)
            if added:
                out.append((frozenset(claim | set(added)), added[int(rng.integers(len(added)))]))
        return out

    def _sample_random(self, rng: np.random.Generator) -> list[frozenset[str]] | None:
        """n_random circuits of |C| nodes drawn uniformly among those other than C; None when C is
        the only one (the whole graph)."""
        size, claim = len(self.nodes), frozenset(self.nodes)
        if math.comb(len(self.nodes_), size) < 2:
            return None
        out: list[frozenset[str]] = []
        while len(out) < self.n_random:
            r = frozenset(self.nodes_[i] for i in rng.choice(len(self.nodes_), size=size, replace=False))
            if r != claim:
                out.append(r)
        return out

    # -------------------------------------------------------------- per draw
    @torch.no_grad()
    def __call__(self, model: Any, task: Any) -> dict[str, float]:
        check_is_fitted(self, "batch_")
        cfg = self
        runs = _Runs(self, model)
        every = frozenset(self.nodes_)
        claim = frozenset(cfg.nodes)
        outside = every - claim

        s_model = runs.scores(frozenset())
        s_circuit = runs.scores(outside)
        s_complement = runs.scores(claim)
        m_model, m_circuit, m_empty = float(s_model.mean()), float(s_circuit.mean()), runs.mean(every)
        out: dict[str, float] = {"score_model": m_model, "score_circuit": m_circuit,
                                 "score_complement": float(s_complement.mean()), "score_empty": m_empty}

        # equivalence
        p_eq, frac, untied = equivalence_p(s_circuit - s_model, cfg.epsilon, cfg.resolution)
        out.update(equivalence_p=p_eq, equivalence_pass=float(p_eq >= cfg.alpha), equivalence_fraction=frac,
                   equivalence_untied=float(untied))

        # independence
        def rounded(s: np.ndarray) -> np.ndarray:
            return np.round(s / cfg.resolution) * cfg.resolution if cfg.resolution > 0 else s

        hsic, p_ind = hsic_p(rounded(s_model), rounded(s_complement), cfg.permutations, cfg.seed)
        out.update(independence_p=p_ind, independence_pass=float(p_ind >= cfg.alpha), independence_hsic=hsic,
                   model_score_sd=float(rounded(s_model).std()))

        full_span = m_model - m_empty  # the model's effect over the empty circuit: faithfulness's unit
        out.update(self._minimality(runs, m_circuit, full_span))
        verdicts = [out["equivalence_pass"], out["independence_pass"], out["minimality_pass"]]
        out["idealised_pass"] = float("nan") if any(math.isnan(v) for v in verdicts) else float(min(verdicts))
        out.update(self._flexible(runs, s_model, s_circuit, s_complement))
        out.update(self._mib(runs, m_circuit, m_empty, full_span))
        out["forwards"] = float(runs.forwards)
        return out


    def _minimality(self, runs: _Runs, m_circuit: float, full_span: float) -> dict[str, float]:
        """Per-node necessity (the share of the model's effect lost without the node) and Shi et al.'s
        minimality test against the inflated circuits (Bonferroni over the claim's nodes)."""
        cfg = self
        every, claim = frozenset(self.nodes_), frozenset(cfg.nodes)
        outside = every - claim
        out: dict[str, float] = {}

        def effect(circuit: frozenset[str], node: str) -> float:
            base = runs.scores(every - circuit)
            return float(np.mean((runs.scores(every - (circuit - {node})) - base) ** 2))

        reference = None
        if self.inflated_ is not None:
            reference = np.array([effect(c, v) for c, v in self.inflated_])
        p_nodes = []
        for v in cfg.nodes:
            m_without = runs.mean(outside | {v})
            share = (m_circuit - m_without) / full_span if abs(full_span) > cfg.resolution else float("nan")
            out[f"necessity_{v}"] = share
            out[f"necessary_{v}"] = float("nan") if math.isnan(share) else float(share >= cfg.break_fraction)
            if reference is None:
                out[f"minimality_p_{v}"] = float("nan")
                continue
            p = binomial_tail(int((effect(claim, v) > reference).sum()), len(reference), cfg.q_star, side="less")
            p_nodes.append(p)
            out[f"minimality_p_{v}"] = p
        if p_nodes:
            out["minimality_p_min"] = min(p_nodes)
            out["minimality_pass"] = float(min(p_nodes) >= cfg.alpha / len(cfg.nodes))
        else:  # the claim is the whole graph: nothing to inflate it with
            out["minimality_p_min"] = out["minimality_pass"] = float("nan")
        return out

    def _flexible(self, runs: _Runs, s_model: np.ndarray, s_circuit: np.ndarray, s_complement: np.ndarray
                  ) -> dict[str, float]:
        """The flexible tests: sufficiency and partial necessity of the claim against random circuits
        of its size (binomial tests on the quantile q)."""
        cfg = self
        every = frozenset(self.nodes_)
        out: dict[str, float] = {}

        def distance(a: np.ndarray) -> float:
            return float(np.mean((a - s_model) ** 2))

        if self.random_ is None:  # C is the whole graph: no other circuit of its size
            for key in ("sufficiency", "partial_necessity"):
                out[f"{key}_p"] = out[f"{key}_pass"] = out[f"{key}_quantile"] = float("nan")
            return out
        d_claim, e_claim = distance(s_circuit), distance(s_complement)
        d_random = np.array([distance(runs.scores(every - r)) for r in self.random_])
        e_random = np.array([distance(runs.scores(r)) for r in self.random_])
        n = len(self.random_)
        k_suf, k_nec = int((d_claim < d_random).sum()), int((e_claim > e_random).sum())
        p_suf = binomial_tail(k_suf, n, cfg.q, side="greater")
        p_nec = binomial_tail(k_nec, n, cfg.q, side="greater")
        out.update(sufficiency_p=p_suf, sufficiency_pass=float(p_suf < cfg.alpha),
                   sufficiency_quantile=k_suf / n, partial_necessity_p=p_nec,
                   partial_necessity_pass=float(p_nec < cfg.alpha), partial_necessity_quantile=k_nec / n)
        return out

    def _mib(self, runs: _Runs, m_circuit: float, m_empty: float, full_span: float) -> dict[str, float]:
        """MIB's faithfulness of the claim, and CPR / CMD of the faithfulness curve along the ranking."""
        if abs(full_span) <= self.resolution:
            # knocking everything out costs nothing: the task is not done by this graph at all
            return {"faithfulness": float("nan"), "cpr": float("nan"), "cmd": float("nan")}
        every = frozenset(self.nodes_)
        curve = [(runs.mean(every - frozenset(self.ranking_[:k])) - m_empty) / full_span
                 for k in range(len(self.ranking_) + 1)]
        sizes = np.arange(len(curve)) / (len(curve) - 1)
        cpr, cmd = compute_cpr_cmd(sizes, curve)
        return {"faithfulness": (m_circuit - m_empty) / full_span, "cpr": cpr, "cmd": cmd}


class _Runs:
    """Per-example scores of the model with a set of nodes knocked out, memoised per call (the
    clean activations of every node are captured once, at the weights in the model)."""

    def __init__(self, tests: CircuitTests, model: Any) -> None:
        self.model = model
        device = device_of(model)
        self.ids = tests.batch_["input_ids"].long().to(device)
        mask = tests.batch_["target_mask"].to(device)[:, 1:].float()
        self.mask, self.count = mask, mask.sum(1)
        self.points = {v: _point(v) for v in tests.nodes_}
        acts = hooks.capture(model, self.ids, list(self.points.values()))
        if tests.ablation == "mean":
            self.values = {v: acts[p].mean(0, keepdim=True) for v, p in self.points.items()}
        else:
            donors = tests.donors_.to(device)
            self.values = {v: acts[p][donors] for v, p in self.points.items()}
        self.memo: dict[frozenset[str], np.ndarray] = {}
        self.forwards = 1

    def scores(self, knocked: frozenset[str]) -> Float[np.ndarray, " rows"]:
        if knocked not in self.memo:
            edits = [hooks.patch(self.points[v], self.values[v]) for v in sorted(knocked)]
            with torch.no_grad(), hooks.apply(self.model, edits):
                logits = self.model(self.ids)[:, :-1].float()
            logp = torch.log_softmax(logits, -1).gather(-1, self.ids[:, 1:, None])[..., 0]
            self.memo[knocked] = ((logp * self.mask).sum(1) / self.count).double().cpu().numpy()
            self.forwards += 1
        return self.memo[knocked]

    def mean(self, knocked: frozenset[str]) -> float:
        return float(self.scores(knocked).mean())


def evaluate_circuit(model: Any, task: Any, nodes: Sequence[str], **kwargs: Any) -> dict[str, float]:
    """One-shot :class:`CircuitTests` at the model's current weights (``kwargs`` as its constructor's)."""
    tests = CircuitTests(nodes, **kwargs)
    tests.setup(model, task)
    return tests(model, task)
