"""Hypothesis tests for circuits (analyses.circuit_tests): the statistics against their definitions,
the hand-compiled organism's ground truth, the trained induction organism, and the read-outs over a
sweep's draws."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analyses.circuit_tests import (
    CircuitTests,
    assess_claim,
    binomial_tail,
    clopper_pearson,
    compute_cpr_cmd,
    estimate_node_inclusion,
    evaluate_circuit,
    graph_nodes,
    wilson_interval,
)
from analyses.circuit_tests._stats import equivalence_p, hsic_p
from interp.organisms import compiled

TRUE = ("embed", "L0H0", "L1H0")  # the compiled organism's circuit (its docstring)
DECOYS = ("embed", "L0H1", "L1H1")
IDEALISED = ("equivalence_pass", "independence_pass", "minimality_pass")


# ------------------------------------------------------------------------------------------------
# statistics


def test_binomial_tail_matches_its_sum():
    assert binomial_tail(100, 100, 0.9, side="greater") == pytest.approx(0.9 ** 100, rel=1e-9)
    assert binomial_tail(0, 100, 0.9, side="less") == pytest.approx(0.1 ** 100, rel=1e-9)
    exact = sum(math.comb(20, i) * 0.3 ** i * 0.7 ** (20 - i) for i in range(8))
    assert binomial_tail(7, 20, 0.3, side="less") == pytest.approx(exact, rel=1e-9)
    assert binomial_tail(8, 20, 0.3, side="greater") == pytest.approx(1 - exact, rel=1e-9)


def test_equivalence_uses_the_fraction_of_wins_not_the_mean_difference():
    # half the rows gain 0.01, half lose 1.0: the mean difference is -0.495, yet the circuit beats the
    # model exactly as often as it loses, so under the paper's H0 |P(Δ>0) − ½| < ε it is equivalent
    delta = np.array([0.01, -1.0] * 50)
    p, frac, n = equivalence_p(delta, 0.1, 1e-4)
    assert (frac, n) == (0.5, 100) and p > 0.5
    # every row worse: rejected
    p_worse, frac_worse, _ = equivalence_p(-np.abs(delta), 0.1, 1e-4)
    assert frac_worse == 0.0 and p_worse < 1e-10
    # ties (|Δ| ≤ resolution) are dropped as in the sign test; all ties: exactly equivalent
    assert equivalence_p(np.zeros(30), 0.1, 1e-4) == (1.0, 0.5, 0)
    assert equivalence_p(np.r_[np.zeros(30), 1.0, -1.0], 0.1, 1e-4)[2] == 2


def test_equivalence_p_value_has_its_size_at_the_null_boundary():
    # at P(Δ > 0) = ½ + ε the p-value must reject at most α of the time (it is the boundary's own
    # distribution): 2000 replicates, rejection rate 0.05 ± 4 standard errors (0.0049)
    rng = np.random.default_rng(0)
    n, reps = 60, 2000
    wins = rng.random((reps, n)) < 0.6
    rejected = np.mean([equivalence_p(np.where(w, 1.0, -1.0), 0.1, 1e-4)[0] < 0.05 for w in wins])
    assert rejected <= 0.05 + 4 * math.sqrt(0.05 * 0.95 / reps)
    # and it has power far outside: P(Δ > 0) = 0.05
    far = rng.random((200, n)) < 0.05
    assert np.mean([equivalence_p(np.where(w, 1.0, -1.0), 0.1, 1e-4)[0] < 0.05 for w in far]) > 0.95


def test_hsic_detects_dependence_and_is_calibrated_under_independence():
    rng = np.random.default_rng(1)
    x = rng.normal(size=80)
    assert hsic_p(x, x ** 2 + 0.1 * rng.normal(size=80), 200, 0)[1] < 0.01  # uncorrelated, dependent
    # independent pairs: p is uniform, so P(p < 0.05) = 0.05; 100 replicates, bound 0.05 + 4·0.022
    ps = [hsic_p(rng.normal(size=40), rng.normal(size=40), 99, i)[1] for i in range(100)]
    assert np.mean(np.array(ps) < 0.05) <= 0.05 + 4 * math.sqrt(0.05 * 0.95 / 100)
    assert hsic_p(np.ones(20), rng.normal(size=20), 99, 0) == (0.0, 1.0)  # a constant is independent


def test_intervals_against_closed_forms():
    low, high = clopper_pearson(0, 10)
    assert low == 0.0 and high == pytest.approx(1 - 0.025 ** (1 / 10), abs=1e-9)
    low, high = clopper_pearson(10, 10)
    assert high == 1.0 and low == pytest.approx(0.025 ** (1 / 10), abs=1e-9)
    wl, wh = wilson_interval(5, 10)
    assert wl == pytest.approx(1 - wh, abs=1e-12)
    z = 1.959964
    assert wh == pytest.approx((0.5 + z * z / 20 + z * math.sqrt(0.025 + z * z / 400)) / (1 + z * z / 10), abs=1e-5)
    assert all(math.isnan(v) for v in (*wilson_interval(0, 0), *clopper_pearson(0, 0)))


def test_cpr_cmd_are_the_areas_of_the_faithfulness_curve():
    assert compute_cpr_cmd([0, 1], [1, 1]) == (1.0, 0.0)  # a perfect circuit at every size
    assert compute_cpr_cmd([0, 0.5, 1], [0, 1, 1]) == (0.75, 0.25)
    cpr, cmd = compute_cpr_cmd([0, 0.5, 1], [0, 2, 1])  # overshoot counts against CMD, for CPR
    assert (cpr, cmd) == (1.25, 0.75)
    with pytest.raises(ValueError, match="increasing"):
        compute_cpr_cmd([0, 0], [0, 1])


# ------------------------------------------------------------------------------------------------
# ground truth: the hand-compiled organism


@pytest.fixture(scope="module")
def handmade():
    return compiled.load(n_train=8, n_test=64)


@pytest.fixture(scope="module")
def verdicts(handmade):
    model, task = handmade
    claims = {"true": TRUE, "decoys": DECOYS, "no_prev_token": ("embed", "L1H0"),
              "true_plus_decoy": (*TRUE, "L1H1")}
    return {name: evaluate_circuit(model, task, nodes, eval_rows=64) for name, nodes in claims.items()}


def test_graph_nodes(handmade):
    assert graph_nodes(handmade[0]) == ("embed", "L0H0", "L0H1", "L1H0", "L1H1")


def test_true_circuit_passes_every_idealised_test(verdicts):
    out = verdicts["true"]
    assert all(out[k] == 1.0 for k in IDEALISED) and out["idealised_pass"] == 1.0
    assert out["faithfulness"] == pytest.approx(1.0, abs=1e-6)
    assert out["sufficiency_pass"] == 1.0  # beats every other 3-node circuit
    assert all(out[f"necessary_{v}"] == 1.0 for v in TRUE)


def test_decoys_and_wrong_claims_fail(verdicts):
    decoys = verdicts["decoys"]
    assert decoys["idealised_pass"] == 0.0
    assert decoys["equivalence_pass"] == 0.0 and decoys["equivalence_fraction"] == 0.0
    assert decoys["minimality_pass"] == 0.0 and decoys["sufficiency_pass"] == 0.0
    assert all(decoys[f"necessary_{v}"] == 0.0 and decoys[f"necessity_{v}"] == 0.0 for v in DECOYS)
    assert decoys["faithfulness"] == pytest.approx(0.0, abs=1e-6)
    # the claim without the previous-token head is not equivalent; the claim with a decoy added
    # is equivalent but not minimal (the decoy's knockout is below every inflated reference)
    assert verdicts["no_prev_token"]["equivalence_pass"] == 0.0
    extra = verdicts["true_plus_decoy"]
    assert extra["equivalence_pass"] == 1.0 and extra["minimality_pass"] == 0.0
    assert extra["necessary_L1H1"] == 0.0 and extra["necessity_L1H1"] == 0.0 and extra["minimality_p_L1H1"] < 0.05 / 4


def test_independence_is_vacuous_where_the_model_score_is_constant(verdicts):
    # the compiled model predicts every scored token with the same log-probability (to 1e-7 nats):
    # a constant is independent of everything, so the test cannot fail, and the output says so
    for out in verdicts.values():
        assert out["model_score_sd"] == 0.0 and out["independence_p"] == 1.0


def test_resample_ablation_also_recovers_the_truth(handmade):
    model, task = handmade
    out = evaluate_circuit(model, task, TRUE, ablation="resample", eval_rows=32, n_random=20)
    assert out["idealised_pass"] == 1.0
    wrong = evaluate_circuit(model, task, DECOYS, ablation="resample", eval_rows=32, n_random=20)
    assert wrong["idealised_pass"] == 0.0


# ------------------------------------------------------------------------------------------------
# the trained induction organism and a sweep over draws


def test_trained_induction_organism(organism):
    model, task = organism
    # previous-token head L0H1 and both induction heads: faithful (0.99), minimal and sufficient,
    # but not equivalent: knocking out L0H0 costs a little on almost every row (P(Δ > 0) ≈ 0.07)
    full = evaluate_circuit(model, task, ("embed", "L0H1", "L1H0", "L1H1"), eval_rows=64, n_random=50)
    assert full["faithfulness"] > 0.95 and full["minimality_pass"] == 1.0 and full["sufficiency_pass"] == 1.0
    assert full["equivalence_pass"] == 0.0 and full["equivalence_fraction"] < 0.2
    # the two induction heads back each other up: neither knockout alone breaks the effect, while the
    # previous-token head's and the embedding's do (each removes more than the model's whole effect)
    assert full["necessary_L0H1"] == full["necessary_embed"] == 1.0 and full["necessity_L0H1"] > 1.0
    assert full["necessary_L1H0"] == full["necessary_L1H1"] == 0.0 and full["necessity_L1H0"] < 0.2
    # layer 0 alone does nothing of the task
    layer0 = evaluate_circuit(model, task, ("embed", "L0H0", "L0H1"), eval_rows=64, n_random=50)
    assert layer0["faithfulness"] < 0.2 and layer0["idealised_pass"] == 0.0


def test_claim_over_draws(organism):
    import interp
    from interp.degradations import WeightNoise

    model, task = organism
    tests = CircuitTests(("embed", "L0H1", "L1H0", "L1H1"), eval_rows=32, n_random=30, permutations=200)
    res = interp.run_sweep(model, task, [tests], WeightNoise(relative=True, draws_per_level=3, eval_rows=8),
                           [0.01, 1.0], eval_rows=8, progress=False)
    holds = assess_claim(res, metric="sufficiency_pass")
    assert list(holds["level_index"]) == [-1, 0, 1] and list(holds["n_draws"]) == [1, 3, 3]
    assert (holds["ci_low"] <= holds["pass_rate"]).all() and (holds["pass_rate"] <= holds["ci_high"]).all()
    assert holds["holds"].iloc[0]  # sufficient at w0
    assert list(holds["holds"]) == list(holds["pass_rate"] >= 0.95)
    inclusion = estimate_node_inclusion(res)
    assert set(inclusion["node"]) == {"embed", "L0H1", "L1H0", "L1H1"} and len(inclusion) == 12
    assert ((inclusion["wilson_low"] <= inclusion["inclusion"]) & (inclusion["inclusion"] <= inclusion["wilson_high"])
            & (inclusion["cp_low"] <= inclusion["inclusion"])).all()
    table = res.table
    necessary = table[(table["metric"] == "necessary_L0H1") & (table["level_index"] == 0)]["value"]
    assert inclusion.query("node == 'L0H1' and level_index == 0")["inclusion"].item() == necessary.mean()


# ------------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("kwargs, match", [
    ({"nodes": ("embed", "L0H9x")}, "nodes"),
    ({"nodes": "L0H0"}, "nodes"),
    ({"nodes": ("L0H0", "L0H0")}, "distinct"),
    ({"nodes": ("L0H0",), "ablation": "zero"}, "ablation"),
    ({"nodes": ("L0H0",), "epsilon": 0.7}, "epsilon"),
    ({"nodes": ("L0H0",), "q_star": 1.0}, "q_star"),
    ({"nodes": ("L0H0",), "eval_rows": 4}, "eval_rows"),
    ({"nodes": ("L0H0",), "break_fraction": 0.0}, "break_fraction"),
])
def test_bad_configuration(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CircuitTests(**kwargs).validate_params()


def test_nodes_outside_the_graph(organism):
    model, task = organism
    with pytest.raises(ValueError, match=r"not in this model's graph.*L0H0"):
        CircuitTests(("embed", "L5H0")).setup(model, task)
    with pytest.raises(ValueError, match="no analysis 'nope'"):
        assess_claim(type("R", (), {"table": __import__("pandas").DataFrame(
            {"analysis": ["x"], "metric": ["m"], "value": [1.0]})})(), analysis="nope")
