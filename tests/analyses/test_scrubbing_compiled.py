"""Causal scrubbing against ground truth: the hand-compiled induction model (interp.organisms.compiled).

Every weight of the compiled model is set by hand, so the circuit is known by construction: L1H0 reads
the current token (Q), the previous-token head L0H0 (K) and the key's token (V); nothing else reaches
the logits. Scrubbing the true hypothesis therefore feeds L1H0 exactly the features the clean model
computes, and the scrubbed logits equal the clean ones up to float rounding and the e^{-s/2} ≈ 2e-9
attention leaks: recovered and KL-recovered are 1 to within 1e-3 (the bound we assert; measured: exactly
1.00000, KL 0). Every false hypothesis leaves one feature L1H0 reads on a random input (wrong head, K from
the embedding, Q/K swapped, V from layer 0, the previous-token head keyed two back, the right head in
the wrong subspace) and must recover clearly less: ≤ 0.5 (measured 0.15-0.24, upper CIs ≤ 0.30).
"""

import math

import pytest
import torch

import hooks
from analyses.scrubbing import Agree, CausalScrubbing, Embed, Head, Hypothesis
from analyses.scrubbing.induction import compiled_hypotheses
from interp.organisms import compiled, induction

_TOK, _PREV = Agree.token_at(0), Agree.token_at(-1)
FALSE = ("qk_swapped", "k_from_embed", "v_from_layer0", "wrong_heads", "wrong_position")


@pytest.fixture(scope="module")
def organism():
    torch.set_num_threads(1)
    return compiled.load(n_train=8)


def score(model, task, hyp, resample_all=False):
    """Against the treeified baseline (and Chan et al.'s resample-everything one if asked)."""
    baselines = {"treeified": hyp.unconditional()}
    if resample_all:
        baselines["resample_all"] = Hypothesis([], name="resample_all")
    a = CausalScrubbing(hyp, baselines=baselines, eval_rows=64, seeds=2, bootstrap=200)
    a.setup(model, task)
    return a(model, task)


@pytest.fixture(scope="module")
def results(organism):
    model, task = organism
    return {name: score(model, task, h, resample_all=name == "correct")
            for name, h in compiled_hypotheses().items()}


def test_compiled_model_computes_the_task_exactly(organism):
    model, task = organism
    ev = task.evaluate(model)
    assert ev["accuracy"] == 1.0
    # every scored prediction puts logit c on the answer and 0 on the V - 1 others
    v = induction.N_TOKENS + 1
    assert ev["loss"] == pytest.approx(math.log1p((v - 1) * math.exp(-compiled.CONFIDENCE)), abs=1e-6)
    ids = task.tensors("test", rows=64)["input_ids"].long()
    pat = hooks.capture(model, ids, ["blocks.0.attn.hook_pattern"])["blocks.0.attn.hook_pattern"]
    q = torch.arange(1, ids.shape[1])
    assert pat[:, 0, q, q - 1].min() > 1 - 1e-6  # L0H0: previous token
    assert pat[:, 1, q, q].min() > 1 - 1e-6  # decoy L0H1: itself
    # the construction is what the module says: the logits read only OUT, which only L1H0 writes
    lay = compiled.layout()
    W_U = model.unembed.weight.detach()
    assert W_U[:, lay["OUT"]].abs().sum() > 0
    assert W_U[:, : lay["OUT"].start].abs().sum() == 0


def test_true_hypothesis_recovers_everything_and_false_ones_do_not(results):
    ok = results["correct"]
    assert ok["recovered"] >= 0.999 and ok["recovered_ci_low"] >= 0.999
    assert ok["kl_recovered"] >= 0.999 and ok["kl"] <= 1e-6
    assert ok["recovered_resample_all"] >= 0.999
    assert ok["flag_cancellation"] == 0.0 and ok["flag_ratio_unreliable"] == 0.0
    assert ok["flag_small_class"] == 0.0
    for name in FALSE:
        m = results[name]
        assert m["recovered_ci_high"] <= 0.5, name
        assert m["kl_recovered"] <= 0.5, name  # KL tells them apart as well
        assert m["kl"] >= 1.0, name  # nats/token; the true hypothesis has 0
        assert m["flag_ratio_unreliable"] == 0.0, name


def test_extensionally_equivalent_false_hypotheses_score_the_same(results):
    """K from the embedding and K from the decoy head both leave PREV (the only thing K reads) on the
    random input: the same scrubbed model, so the same numbers (a known limit of causal scrubbing,
    Chan et al. 2022: extensionally equivalent hypotheses cannot be told apart)."""
    a, b = results["k_from_embed"], results["wrong_heads"]
    assert a["loss_scrubbed"] == pytest.approx(b["loss_scrubbed"], rel=1e-6)
    assert a["kl"] == pytest.approx(b["kl"], rel=1e-6)


def test_subspace_claims_on_the_compiled_model(organism):
    """L0H0 writes only into PREV: claiming its PREV component is the whole truth; claiming it in
    the decoys' CUR block (where it writes nothing) leaves K on the random input."""
    model, task = organism
    prev = Hypothesis([Head(1, 0, q=[Embed(_TOK)], k=[Head(0, 0, _PREV, subspace=compiled.subspace("PREV"))],
                            v=[Embed(_TOK)])], name="k_prev_subspace")
    cur = Hypothesis([Head(1, 0, q=[Embed(_TOK)], k=[Head(0, 0, _PREV, subspace=compiled.subspace("CUR"))],
                           v=[Embed(_TOK)])], name="k_cur_subspace")
    m_prev, m_cur = score(model, task, prev), score(model, task, cur)
    assert m_prev["recovered"] >= 0.999 and m_prev["kl"] <= 1e-6
    assert m_cur["recovered_ci_high"] <= 0.5 and m_cur["kl_recovered"] <= 0.5


def test_build_validates_and_layout_is_consistent():
    lay = compiled.layout(n_tokens=5, n_ctx=7)
    assert [s.stop - s.start for s in lay.values()] == [6, 7, 6, 6, 6]
    assert compiled.config(5, 6)["d_model"] == lay["OUT"].stop == 31
    u = compiled.subspace("PREV", n_tokens=5, seq_len=6)
    assert torch.equal(u.T @ u, torch.eye(6))
    for bad, match in ((dict(sharpness=0), "sharpness=0"), (dict(confidence=float("nan")), "confidence=nan"),
                       (dict(n_tokens=1), "n_tokens=1")):
        with pytest.raises(ValueError, match=match):
            compiled.build(**bad)
    with pytest.raises(ValueError, match="unknown block"):
        compiled.subspace("QUERY")
    with pytest.raises(ValueError, match="unknown option"):
        compiled.load(n_tokens=5)

