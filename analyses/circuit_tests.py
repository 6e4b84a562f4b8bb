"""Hypothesis tests for a circuit claim, at the trained weights and on every degraded draw.

A circuit claim names a set C of *nodes* of the model's computational graph and says that C alone
carries the behaviour the task scores. Shi, Beltran-Velez, Nazaret, Zheng, Garriga-Alonso, Jesson,
Makar and Blei, "Hypothesis testing the circuit hypothesis in LLMs" (NeurIPS 2024) turn the claim
into statistical tests; this module implements them on TransformerLens 4 bridges (their reference
code runs only on the old ``HookedTransformer``), runs them as an :class:`~interp.analysis.Analysis`
at w0 and at each draw of a sweep, and adds two read-outs over draws that the paper does not have.

**Graph and knockout.** Nodes are the token embedding ``"embed"``, every attention head ``"L{l}H{h}"``
(its output z_h·W_O[h], computed from ``hook_z`` on every bridge, see :mod:`hooks`) and every MLP
``"MLP{l}"``. The positional embedding is no node: it is the same for every input, so knocking it
out by a mean or a resample over inputs is the identity. *Knocking out* a node replaces its output,
on every row of the evaluation batch, by its **mean** over that batch at the same position
(``ablation="mean"``, the default) or by its output on **another** row (``ablation="resample"``, a
fixed derangement of the rows); the replacement is computed from the clean forward at the weights
in the model, so a degraded draw is knocked out with its own activations. Miller, Chughtai and
Saunders (COLM 2024) show that faithfulness depends on this choice: it is part of the claim. The
*circuit* C(x) is the model with every node outside C knocked out; the *complement* M∖C(x) the
model with the nodes of C knocked out. The tests run on nodes, not edges: an edge knockout
(sender → receiver) needs the receiver to read an ablated sender while every other reader sees it
clean, i.e. path patching with one forward per receiver input set, which our per-node hooks do not
express exactly; the node tests are the node-level analogues of the paper's edge tests.

**Score.** s(M(x)) is the mean log-probability of the task's scored next tokens of row x
(``target_mask``); Δ(x) = s(C(x)) − s(M(x)). Differences below ``resolution`` (default 1e-4 nats,
float32 rounding of a log-softmax is about 1e-7) are numerical noise: they are ties in the sign
test and scores are rounded to that resolution for the independence test.

Idealised tests (Shi et al. §3), each at level α = 0.05:

- *Equivalence*. H0: |P(Δ > 0) − ½| < ε (ε = 0.1): the circuit beats the model as often as it loses.
  With n untied rows and K of them with Δ > 0, t = |K/n − ½| and
  p = P(|K'/n − ½| ≥ t) for K' ~ Binomial(n, ½ + ε), the largest rejection probability over H0.
  The circuit *passes* when H0 is not rejected (p ≥ α). Rows with |Δ| ≤ resolution are ties and
  are dropped, as in the sign test (Dixon & Mood 1946); a circuit with no untied row is exactly
  equivalent (p = 1). (This is the paper's definition, the fraction P(Δ > 0), not a mean score
  difference.)
- *Independence*. H0: s(M∖C(X)) ⫫ s(M(X)): once C is knocked out, what is left knows nothing of the
  task. HSIC with Gaussian kernels, bandwidth the median pairwise distance of each variable (Gretton
  et al. 2007), permutation p-value (1 + #{HSIC_π ≥ HSIC}) / (1 + B) over B = 1000 permutations.
  Passes when p ≥ α. A constant variable is independent of everything (HSIC = 0, p = 1), so the
  test is uninformative when the model's score does not vary over rows: ``model_score_sd`` says so.
- *Minimality*. For each node v ∈ C, δ_v = mean_x (s(C∖v)(x) − s(C)(x))², the knockout effect of v
  (the reference code's per-example L2). Reference: 100 circuits C⁺_i = C ∪ one random path
  (a random walk from the embedding through later nodes to the output, with at least one node
  outside C), each with the effect δ⁺_i of knocking out one random added node. With
  k_v = #{i: δ_v > δ⁺_i}, H0: P(δ_v > δ⁺) ≥ q* (q* = 0.9) against "less"; p_v = P(Binomial(100, q*)
  ≤ k_v). The circuit passes when no node is rejected at the Bonferroni level α/|C|.

Flexible tests (Shi et al. §4), against 100 random circuits R of |C| nodes drawn uniformly among
those other than C:

- *Sufficiency*: C is more faithful than R, d(C) < d(R) with d(C) = mean_x (s(C(x)) − s(M(x)))²,
  in more than a fraction q = 0.9 of the draws: k = #{d(C) < d(R)}, p = P(Binomial(100, q) ≥ k);
  passes when p < α. "More faithful" is strict and R is drawn among the circuits other than C: on
  a small graph many random circuits are equally broken (every circuit without the induction
  head, say), and counting those ties for C, as the reference code does, lets a circuit that
  does nothing pass.
- *Partial necessity*: knocking out C hurts more than knocking out R:
  k = #{e(C) > e(R)}, e(C) = mean_x (s(M∖C(x)) − s(M(x)))²; p = P(Binomial(100, q) ≥ k); passes
  when p < α.

Circuit metrics of MIB (Mueller et al., ICML 2025): with m the mean score and ∅ every node knocked
out, the faithfulness of a circuit is f(C) = (m(C) − m(∅)) / (m(M) − m(∅)). Nodes are ranked (the
claim's nodes first, each group by its knockout effect on the full model at w0, at ``setup``), the
circuits of the top k nodes for k = 0..N give the curve f against the size k/N, and
CPR = ∫ f (higher is better), CMD = ∫ |1 − f| (0 is best), trapezoid rule over the whole grid.

Over draws (what the paper does not have):

- :func:`assess_claim`: the claim *holds at level T* when its tests pass on at least 1 − α of the
  draws at T (a posterior predictive check), with a Clopper–Pearson interval of the pass rate.
- :func:`estimate_node_inclusion`: per node of the claim, the fraction of draws at which it is
  *necessary* (its knockout effect δ_v exceeds the reference δ⁺ in at least q* of the inflated
  circuits, the minimality test's own criterion), with Wilson and Clopper–Pearson intervals: the
  core of a circuit against the parts only the trained weights need.

Example::

    >>> from analyses.circuit_tests import CircuitTests, graph_nodes
    >>> CircuitTests(nodes=("embed", "L0H0", "L1H0")).effects
    ('faithfulness',)
    >>> from interp.organisms import compiled
    >>> model, task = compiled.load(n_train=8, n_test=64)            # doctest: +SKIP
    >>> graph_nodes(model)                                            # doctest: +SKIP
    ('embed', 'L0H0', 'L0H1', 'L1H0', 'L1H1')
    >>> out = evaluate_circuit(model, task, ("embed", "L0H0", "L1H0"))  # doctest: +SKIP
    >>> out["idealised_pass"]                                         # doctest: +SKIP
    1.0
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float

import hooks
from analyses._base import Params
from interp.checks import bad_value, check_choice, check_fraction, check_number

__all__ = [
    "CircuitTests",
    "CircuitTestsConfig",
    "assess_claim",
    "binomial_tail",
    "clopper_pearson",
    "compute_cpr_cmd",
    "estimate_node_inclusion",
    "evaluate_circuit",
    "graph_nodes",
    "wilson_interval",
]

log = logging.getLogger(__name__)

_ABLATIONS = ("mean", "resample")
_NODE_RE = re.compile(r"^(embed|L(\d+)H(\d+)|MLP(\d+))$")


# ------------------------------------------------------------------------------------------------
# statistics (exact binomial tails, intervals, HSIC): no scipy needed


def binomial_tail(k: int, n: int, p: float, *, side: Literal["greater", "less"]) -> float:
    """P(X ≥ k) (``side="greater"``) or P(X ≤ k) (``"less"``) for X ~ Binomial(n, p), exactly."""
    if not 0 <= k <= n:
        return 1.0 if (side == "greater" and k <= 0) or (side == "less" and k >= n) else 0.0
    ks = range(k, n + 1) if side == "greater" else range(0, k + 1)
    return float(min(1.0, sum(_binom_pmf(i, n, p) for i in ks)))


def _binom_pmf(i: int, n: int, p: float) -> float:
    if p <= 0.0:
        return 1.0 if i == 0 else 0.0
    if p >= 1.0:
        return 1.0 if i == n else 0.0
    return math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                    + i * math.log(p) + (n - i) * math.log1p(-p))


def wilson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k/n (Wilson 1927); (NaN, NaN) when n = 0."""
    if n <= 0:
        return float("nan"), float("nan")
    z = _normal_quantile(0.5 + level / 2)
    phat = k / n
    centre = (phat + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper–Pearson 1934) interval of a binomial proportion: the p with
    P(X ≥ k | p) = (1 − level)/2 and P(X ≤ k | p) = (1 − level)/2, by bisection; (NaN, NaN) when n = 0."""
    if n <= 0:
        return float("nan"), float("nan")
    tail = (1 - level) / 2

    def solve(f: Any) -> float:  # f increasing in p; root of f(p) = 0 on [0, 1]
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
        return (lo + hi) / 2

    low = 0.0 if k == 0 else solve(lambda p: binomial_tail(k, n, p, side="greater") - tail)
    high = 1.0 if k == n else solve(lambda p: tail - binomial_tail(k, n, p, side="less"))
    return low, high


def _normal_quantile(u: float) -> float:
    """Standard normal quantile by bisection on erf (enough for interval construction)."""
    lo, hi = -10.0, 10.0
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < u else (lo, mid)
    return (lo + hi) / 2


def _equivalence_p(delta: np.ndarray, epsilon: float, resolution: float) -> tuple[float, float, int]:
    """(p-value, fraction of untied rows with Δ > 0, untied rows) of the equivalence test."""
    untied = np.abs(delta) > resolution
    n = int(untied.sum())
    if n == 0:
        return 1.0, 0.5, 0
    k = int((delta[untied] > 0).sum())
    t = abs(k / n - 0.5)
    p = sum(_binom_pmf(i, n, 0.5 + epsilon) for i in range(n + 1) if abs(i / n - 0.5) >= t - 1e-12)
    return float(min(1.0, p)), k / n, n


def _gram(x: np.ndarray) -> np.ndarray | None:
    d2 = (x[:, None] - x[None, :]) ** 2
    positive = d2[d2 > 0]
    if positive.size == 0:  # a constant variable
        return None
    sigma2 = float(np.median(positive))  # median heuristic on squared distances
    return np.exp(-d2 / (2 * sigma2))


def _hsic_p(x: np.ndarray, y: np.ndarray, permutations: int, seed: int) -> tuple[float, float]:
    """(HSIC statistic, permutation p-value) of independence of x and y (Gretton et al. 2007)."""
    n = len(x)
    kx, ky = _gram(x), _gram(y)
    if kx is None or ky is None:
        return 0.0, 1.0
    h = np.eye(n) - 1.0 / n
    kc, lc = h @ kx @ h, h @ ky @ h
    stat = float((kc * lc).sum()) / (n - 1) ** 2
    rng = np.random.default_rng(seed)
    exceed = 0
    for _ in range(permutations):
        perm = rng.permutation(n)
        if float((kc * lc[np.ix_(perm, perm)]).sum()) / (n - 1) ** 2 >= stat - 1e-15:
            exceed += 1
    return stat, (1 + exceed) / (1 + permutations)


def compute_cpr_cmd(sizes: Sequence[float], faithfulness: Sequence[float]) -> tuple[float, float]:
    """MIB's CPR = ∫ f and CMD = ∫ |1 − f| over circuit sizes in [0, 1] (trapezoid rule).

    >>> compute_cpr_cmd([0.0, 0.5, 1.0], [0.0, 1.0, 1.0])
    (0.75, 0.25)
    """
    x = np.asarray(sizes, dtype=float)
    f = np.asarray(faithfulness, dtype=float)
    if x.ndim != 1 or x.shape != f.shape or len(x) < 2 or np.any(np.diff(x) <= 0):
        raise ValueError(f"compute_cpr_cmd(sizes={list(x)!r}): sizes must be at least two increasing values in "
                         "[0, 1] with one faithfulness each. Pass the size grid and its faithfulness curve.")
    gap = np.abs(1.0 - f)
    return float(np.sum((f[1:] + f[:-1]) / 2 * np.diff(x))), float(np.sum((gap[1:] + gap[:-1]) / 2 * np.diff(x)))


# ------------------------------------------------------------------------------------------------
# graph


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


# ------------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class CircuitTestsConfig:
    """The claim (``nodes``), how it is knocked out and the tests' constants (module docstring)."""

    nodes: tuple[str, ...]
    ablation: Literal["mean", "resample"] = "mean"
    eval_rows: int = 128
    epsilon: float = 0.1
    alpha: float = 0.05
    q_star: float = 0.9
    q: float = 0.9
    n_random: int = 100
    permutations: int = 1000
    resolution: float = 1e-4
    seed: int = 0

    def __post_init__(self) -> None:
        c = "CircuitTests"
        nodes = self.nodes
        if isinstance(nodes, str) or not isinstance(nodes, (tuple, list)) or not nodes \
                or not all(isinstance(n, str) and _NODE_RE.match(n) for n in nodes):
            raise bad_value(c, "nodes", nodes, "a non-empty sequence of node names 'embed', 'L{layer}H{head}' or "
                            "'MLP{layer}'", "Use e.g. nodes=('embed', 'L0H0', 'L1H0'); graph_nodes(model) lists them.")
        if len(set(nodes)) != len(nodes):
            raise bad_value(c, "nodes", nodes, "distinct node names", "Remove the repeated node.")
        object.__setattr__(self, "nodes", tuple(nodes))
        check_choice(c, "ablation", self.ablation, _ABLATIONS)
        check_number(c, "eval_rows", self.eval_rows, integer=True, minimum=8,
                     fix="The tests need rows to count: at least 8 (128 is the default).")
        check_number(c, "epsilon", self.epsilon, maximum=0.5, fix="The paper's margin is epsilon=0.1.")
        check_fraction(c, "alpha", self.alpha, closed=False, fix="Use e.g. alpha=0.05.")
        check_fraction(c, "q_star", self.q_star, closed=False, fix="The paper's quantile is q_star=0.9.")
        check_fraction(c, "q", self.q, closed=False, fix="The paper's quantile is q=0.9.")
        check_number(c, "n_random", self.n_random, integer=True, minimum=1,
                     fix="The paper draws n_random=100 random/inflated circuits.")
        check_number(c, "permutations", self.permutations, integer=True, minimum=1,
                     fix="Use e.g. permutations=1000.")
        check_number(c, "resolution", self.resolution, zero_ok=True,
                     fix="Score differences below it are ties; 1e-4 nats is the default.")
        check_number(c, "seed", self.seed, integer=True, zero_ok=True, fix="Use a non-negative integer seed.")


# ------------------------------------------------------------------------------------------------
# the analysis


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
        name: the analysis name in sweep results.

    Metrics (floats; pass/fail as 1.0/0.0): ``equivalence_p``, ``equivalence_pass``,
    ``equivalence_fraction`` (P̂(Δ > 0) over untied rows), ``equivalence_untied``;
    ``independence_p``, ``independence_pass``, ``independence_hsic``, ``model_score_sd``;
    ``minimality_p_min`` (the smallest node p-value), ``minimality_pass``; ``idealised_pass`` (all
    three; NaN when one could not run: minimality and the flexible tests need a node outside C); ``sufficiency_p``, ``sufficiency_pass``, ``sufficiency_quantile``,
    ``partial_necessity_p``, ``partial_necessity_pass``, ``partial_necessity_quantile``;
    ``score_model``, ``score_circuit``, ``score_complement``, ``score_empty``; ``faithfulness``
    (the effect), ``cpr``, ``cmd``; per node v of the claim ``minimality_p_{v}``, ``necessity_{v}``
    ((m(C) − m(C∖v)) / (m(C) − m(∅))) and ``necessary_{v}`` (1.0 when δ_v beats the inflated
    reference in at least q* of the draws).

    Fitted by :meth:`setup`: ``batch_``, ``nodes_`` (every node of the graph), ``ranking_`` (the
    CPR/CMD order), ``inflated_`` (the 100 (inflated circuit, knocked node) pairs), ``random_``
    (the 100 random circuits).
    """

    effects = ("faithfulness",)
    collaterals = ()

    def __init__(self, nodes: Sequence[str], ablation: str = "mean", eval_rows: int = 128, epsilon: float = 0.1,
                 alpha: float = 0.05, q_star: float = 0.9, q: float = 0.9, n_random: int = 100,
                 permutations: int = 1000, resolution: float = 1e-4, seed: int = 0, name: str = "circuit_tests"):
        self.nodes, self.ablation, self.eval_rows = nodes, ablation, eval_rows
        self.epsilon, self.alpha, self.q_star, self.q = epsilon, alpha, q_star, q
        self.n_random, self.permutations, self.resolution, self.seed, self.name = (
            n_random, permutations, resolution, seed, name)
        self.config = CircuitTestsConfig(
            nodes=tuple(nodes) if isinstance(nodes, list) else nodes, ablation=ablation, eval_rows=eval_rows,
            epsilon=epsilon, alpha=alpha, q_star=q_star, q=q, n_random=n_random, permutations=permutations,
            resolution=resolution, seed=seed)

    # -------------------------------------------------------------- setup (clean weights)
    def setup(self, model: Any, task: Any) -> None:
        if not getattr(task, "has_loss", True) or "target_mask" not in task.dataset["test"].column_names:
            raise ValueError(f"{self.name}: task {getattr(task, 'name', task)!r} has no 'target_mask' column; the "
                             "circuit tests score the task's next-token targets. Use a task with a next-token loss.")
        self.nodes_ = graph_nodes(model)
        missing = [n for n in self.config.nodes if n not in self.nodes_]
        if missing:
            raise ValueError(f"{self.name}: nodes {missing} are not in this model's graph; it has {list(self.nodes_)}. "
                             "Name heads as 'L{layer}H{head}', MLPs as 'MLP{layer}', the embedding 'embed'.")
        self.batch_ = task.tensors("test", rows=self.config.eval_rows, columns=("input_ids", "target_mask"))
        n_rows = len(self.batch_["input_ids"])
        if n_rows < 8:
            raise ValueError(f"{self.name}: the task's test split has {n_rows} rows; the tests need at least 8. "
                             "Build the task with more test rows (n_test=...).")
        if not bool((self.batch_["target_mask"][:, 1:].sum(1) > 0).all()):
            raise ValueError(f"{self.name}: some evaluation rows have no scored target; every row is one example "
                             "of the tests. Use a task whose rows each score at least one token.")
        rng = np.random.default_rng(self.config.seed)
        self.inflated_ = self._sample_inflated(rng)
        self.random_ = self._sample_random(rng)
        if self.config.ablation == "resample":
            n = n_rows
            self.donors_ = torch.as_tensor((np.arange(n) + rng.integers(1, n, size=n)) % n)
        runs = _Runs(self, model)
        full = runs.mean(frozenset())
        effect = {v: full - runs.mean(frozenset([v])) for v in self.nodes_}
        claim = sorted(self.config.nodes, key=lambda v: -effect[v])
        rest = sorted((v for v in self.nodes_ if v not in self.config.nodes), key=lambda v: -effect[v])
        self.ranking_ = tuple(claim + rest)

    def _sample_inflated(self, rng: np.random.Generator) -> list[tuple[frozenset[str], str]] | None:
        """(inflated circuit, added node knocked out) × n_random; None when C is the whole graph."""
        claim = set(self.config.nodes)
        outside = [v for v in self.nodes_ if v not in claim]
        if not outside:
            return None
        order = {v: i for i, v in enumerate(self.nodes_)}
        out = []
        while len(out) < self.config.n_random:
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
        size, claim = len(self.config.nodes), frozenset(self.config.nodes)
        if math.comb(len(self.nodes_), size) < 2:
            return None
        out: list[frozenset[str]] = []
        while len(out) < self.config.n_random:
            r = frozenset(self.nodes_[i] for i in rng.choice(len(self.nodes_), size=size, replace=False))
            if r != claim:
                out.append(r)
        return out

    # -------------------------------------------------------------- per draw
    @torch.no_grad()
    def __call__(self, model: Any, task: Any) -> dict[str, float]:
        if not hasattr(self, "batch_"):
            raise RuntimeError(f"{self.name}: call setup(model, task) on the clean weights first.")
        cfg = self.config
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
        p_eq, frac, untied = _equivalence_p(s_circuit - s_model, cfg.epsilon, cfg.resolution)
        out.update(equivalence_p=p_eq, equivalence_pass=float(p_eq >= cfg.alpha), equivalence_fraction=frac,
                   equivalence_untied=float(untied))

        # independence
        def rounded(s: np.ndarray) -> np.ndarray:
            return np.round(s / cfg.resolution) * cfg.resolution if cfg.resolution > 0 else s

        hsic, p_ind = _hsic_p(rounded(s_model), rounded(s_complement), cfg.permutations, cfg.seed)
        out.update(independence_p=p_ind, independence_pass=float(p_ind >= cfg.alpha), independence_hsic=hsic,
                   model_score_sd=float(rounded(s_model).std()))

        # minimality and per-node necessity
        def effect(circuit: frozenset[str], node: str) -> float:
            base = runs.scores(every - circuit)
            return float(np.mean((runs.scores(every - (circuit - {node})) - base) ** 2))

        span = m_circuit - m_empty
        reference = None
        if self.inflated_ is not None:
            reference = np.array([effect(c, v) for c, v in self.inflated_])
        p_nodes = []
        for v in cfg.nodes:
            m_without = runs.mean(outside | {v})
            out[f"necessity_{v}"] = (m_circuit - m_without) / span if abs(span) > cfg.resolution else float("nan")
            if reference is None:
                out[f"minimality_p_{v}"] = out[f"necessary_{v}"] = float("nan")
                continue
            k = int((effect(claim, v) > reference).sum())
            p = binomial_tail(k, len(reference), cfg.q_star, side="less")
            p_nodes.append(p)
            out[f"minimality_p_{v}"] = p
            out[f"necessary_{v}"] = float(k >= cfg.q_star * len(reference))
        if p_nodes:
            out["minimality_p_min"] = min(p_nodes)
            out["minimality_pass"] = float(min(p_nodes) >= cfg.alpha / len(cfg.nodes))
        else:  # the claim is the whole graph: nothing to inflate it with
            out["minimality_p_min"] = out["minimality_pass"] = float("nan")
        verdicts = [out["equivalence_pass"], out["independence_pass"], out["minimality_pass"]]
        out["idealised_pass"] = float("nan") if any(math.isnan(v) for v in verdicts) else float(min(verdicts))

        # flexible tests
        def distance(a: np.ndarray) -> float:
            return float(np.mean((a - s_model) ** 2))

        if self.random_ is None:  # C is the whole graph: no other circuit of its size
            for key in ("sufficiency", "partial_necessity"):
                out[f"{key}_p"] = out[f"{key}_pass"] = out[f"{key}_quantile"] = float("nan")
        else:
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

        # MIB faithfulness, CPR, CMD
        full_span = m_model - m_empty
        if abs(full_span) > cfg.resolution:
            out["faithfulness"] = (m_circuit - m_empty) / full_span
            curve = [(runs.mean(every - frozenset(self.ranking_[:k])) - m_empty) / full_span
                     for k in range(len(self.ranking_) + 1)]
            sizes = np.arange(len(curve)) / (len(curve) - 1)
            out["cpr"], out["cmd"] = compute_cpr_cmd(sizes, curve)
        else:  # knocking everything out costs nothing: the task is not done by this graph at all
            out["faithfulness"] = out["cpr"] = out["cmd"] = float("nan")
        out["forwards"] = float(runs.forwards)
        return out


class _Runs:
    """Per-example scores of the model with a set of nodes knocked out, memoised per call (the
    clean activations of every node are captured once, at the weights in the model)."""

    def __init__(self, tests: CircuitTests, model: Any) -> None:
        self.model = model
        device = next(model.parameters()).device
        self.ids = tests.batch_["input_ids"].long().to(device)
        mask = tests.batch_["target_mask"].to(device)[:, 1:].float()
        self.mask, self.count = mask, mask.sum(1)
        self.points = {v: _point(v) for v in tests.nodes_}
        acts = hooks.capture(model, self.ids, list(self.points.values()))
        if tests.config.ablation == "mean":
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


# ------------------------------------------------------------------------------------------------
# over draws


def _rows(results: Any, analysis: str) -> Any:
    table = results.table
    if analysis not in set(table["analysis"]):
        raise ValueError(f"no analysis {analysis!r} in these results; they have {sorted(set(table['analysis']))}. "
                         "Pass analysis= the CircuitTests name used in the sweep.")
    return table[table["analysis"] == analysis]


def assess_claim(results: Any, analysis: str = "circuit_tests", metric: str = "idealised_pass",
                 alpha: float = 0.05) -> Any:
    """Per degradation level: does the claim *hold* (its tests pass on ≥ 1 − α of the draws)?

    Returns a DataFrame with one row per (degradation, level) and the baseline (``level_index`` −1):
    ``n_draws``, ``n_pass``, ``pass_rate``, its Clopper–Pearson 95% interval ``ci_low``/``ci_high``
    and ``holds`` (pass_rate ≥ 1 − α). ``metric`` is any 0/1 metric of :class:`CircuitTests`
    (``idealised_pass``, ``equivalence_pass``, ``sufficiency_pass``, ...). NaN values (a test that
    could not run) are not counted as draws.
    """
    import pandas as pd

    check_fraction("assess_claim", "alpha", alpha, closed=False, fix="Use e.g. alpha=0.05.")
    rows = _rows(results, analysis)
    rows = rows[rows["metric"] == metric]
    if rows.empty:
        raise ValueError(f"assess_claim(metric={metric!r}): {analysis!r} has no such metric; use a *_pass metric "
                         "such as 'idealised_pass'.")
    out = []
    keys = ["degradation", "level_index"]
    for (deg, li), g in rows.groupby(keys, sort=True):
        values = g["value"].dropna().to_numpy()
        n, k = len(values), int((values == 1.0).sum())
        low, high = clopper_pearson(k, n)
        rate = k / n if n else float("nan")
        out.append({"degradation": deg, "level_index": int(li), "level": g["level"].iloc[0],
                    "delta_loss": float(g["delta_loss"].mean()) if "delta_loss" in g else float("nan"),
                    "n_draws": n, "n_pass": k, "pass_rate": rate, "ci_low": low, "ci_high": high,
                    "holds": bool(n > 0 and rate >= 1 - alpha)})
    return pd.DataFrame(out)


def estimate_node_inclusion(results: Any, analysis: str = "circuit_tests") -> Any:
    """Posterior node inclusion: per level and node of the claim, the fraction of draws at which the
    node is necessary (``necessary_{node}``), with Wilson and Clopper–Pearson 95% intervals.

    Returns a DataFrame: ``degradation``, ``level_index`` (−1: the trained weights), ``level``,
    ``node``, ``n_draws``, ``n_necessary``, ``inclusion``, ``wilson_low``/``wilson_high``,
    ``cp_low``/``cp_high``, and the mean ``necessity`` (share of the circuit's effect the node's
    knockout removes).
    """
    import pandas as pd

    rows = _rows(results, analysis)
    flags = rows[rows["metric"].str.startswith("necessary_")]
    if flags.empty:
        raise ValueError(f"estimate_node_inclusion: {analysis!r} has no necessary_<node> metrics; is it a "
                         "CircuitTests analysis?")
    shares = rows[rows["metric"].str.startswith("necessity_")]
    out = []
    for (deg, li, metric), g in flags.groupby(["degradation", "level_index", "metric"], sort=True):
        node = metric[len("necessary_"):]
        values = g["value"].dropna().to_numpy()
        n, k = len(values), int((values == 1.0).sum())
        wl, wh = wilson_interval(k, n)
        cl, ch = clopper_pearson(k, n)
        share = shares[(shares["degradation"] == deg) & (shares["level_index"] == li)
                       & (shares["metric"] == f"necessity_{node}")]["value"]
        out.append({"degradation": deg, "level_index": int(li), "level": g["level"].iloc[0], "node": node,
                    "n_draws": n, "n_necessary": k, "inclusion": k / n if n else float("nan"),
                    "wilson_low": wl, "wilson_high": wh, "cp_low": cl, "cp_high": ch,
                    "necessity": float(share.mean()) if len(share) else float("nan")})
    return pd.DataFrame(out)
