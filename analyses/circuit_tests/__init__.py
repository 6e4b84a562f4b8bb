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
  *necessary*: its knockout breaks the effect, i.e. removes at least ``break_fraction`` = ½ of the
  faithfulness, f(C) − f(C∖v) ≥ ½ (half the model's effect over the empty circuit). With Wilson and
  Clopper–Pearson intervals: the core of a circuit against the parts only the trained weights need
  (and against redundant parts, which no single knockout breaks).

Example::

    >>> from analyses.circuit_tests import CircuitTests, evaluate_circuit, graph_nodes
    >>> CircuitTests(nodes=("embed", "L0H0", "L1H0")).effects
    ('faithfulness',)
    >>> from interp.organisms import compiled
    >>> model, task = compiled.load(n_train=8, n_test=64)
    >>> graph_nodes(model)
    ('embed', 'L0H0', 'L0H1', 'L1H0', 'L1H1')
    >>> out = evaluate_circuit(model, task, ("embed", "L0H0", "L1H0"), eval_rows=16, n_random=10,
    ...                        permutations=50)                   # fewer than the defaults: faster
    >>> out["idealised_pass"]
    1.0
"""
from analyses.circuit_tests._analysis import CircuitTests, evaluate_circuit, graph_nodes
from analyses.circuit_tests._draws import assess_claim, estimate_node_inclusion
from analyses.circuit_tests._stats import binomial_tail, clopper_pearson, compute_cpr_cmd, wilson_interval

__all__ = [
    "CircuitTests",
    "assess_claim",
    "binomial_tail",
    "clopper_pearson",
    "compute_cpr_cmd",
    "estimate_node_inclusion",
    "evaluate_circuit",
    "graph_nodes",
    "wilson_interval",
]
