"""HeadAblation on the induction organism: the circuit's heads carry the loss, a bystander does not."""

import pytest
import torch

from analyses.ablation import HeadAblation
from interp.analysis import Analysis
from interp.organisms import induction


def run(model, task, **kw):
    a = HeadAblation(**kw)
    a.setup(model, task)
    return a(model, task)


def test_protocol_and_metric_kinds():
    a = HeadAblation(heads=[(1, 0)])
    assert isinstance(a, Analysis)
    assert a.effects == ("loss_carried",) and a.collaterals == ("kl_unclaimed",)
    assert a.heads == [(1, 0)]


def test_constructor_style():
    a = HeadAblation([(1, 0)], eval_rows=8)
    assert a.heads == [(1, 0)] and a.eval_rows == 8  # arguments stored as given
    assert repr(a) == "HeadAblation(heads=[(1, 0)], method='mean', eval_rows=8, name='head_ablation')"
    with pytest.raises(TypeError, match="rows"):  # one name per argument: eval_rows
        HeadAblation([(1, 0)], rows=16)
    with pytest.raises(ValueError, match=r"HeadAblation\(eval_rows=1\): eval_rows must be an integer >= 2"):
        HeadAblation([(1, 0)], eval_rows=1).validate_params()
    with pytest.raises(RuntimeError, match="setup"):
        a(None, None)


def test_ablate_heads_is_the_one_shot_head_ablation(organism):
    from analyses import ablate_heads

    model, task = organism
    one_shot = ablate_heads(model, task, heads=[induction.PREV_TOKEN_HEAD], eval_rows=32)
    assert one_shot == run(model, task, heads=[induction.PREV_TOKEN_HEAD], eval_rows=32)


def test_circuit_heads_carry_the_loss_and_a_bystander_does_not(organism):
    model, task = organism
    circuit = run(model, task, heads=induction.INDUCTION_HEADS)
    prev = run(model, task, heads=[induction.PREV_TOKEN_HEAD])
    other = run(model, task, heads=[(0, 1 - induction.PREV_TOKEN_HEAD[1])])
    # measured: 5.76, 6.10 and 0.07 nats/token; the clean loss is 0.03
    assert circuit["loss_clean"] < 0.1
    assert circuit["loss_carried"] > 3.0 and prev["loss_carried"] > 3.0
    assert other["loss_carried"] < 0.5
    # the previous-token head is the cleaner claim: little KL where nothing is claimed
    assert prev["kl_unclaimed"] < 0.1 * prev["kl_claimed"]
    for m in (circuit, prev, other):
        assert m["kl_claimed"] >= 0 and m["kl_unclaimed"] >= 0
        assert m["loss_carried"] == pytest.approx(m["loss_ablated"] - m["loss_clean"])


@pytest.mark.parametrize("method", ["zero", "resample"])
def test_other_methods_agree_on_the_circuit(organism, method):
    model, task = organism
    assert run(model, task, heads=induction.INDUCTION_HEADS, method=method)["loss_carried"] > 3.0


def test_ablation_leaves_the_model_unhooked(organism):
    model, task = organism
    ids = task.tensors("test", rows=4)["input_ids"]
    before = model(ids)
    run(model, task, heads=induction.INDUCTION_HEADS)
    assert torch.equal(model(ids), before)


def test_bad_configs_are_clear_errors(organism):
    model, task = organism
    with pytest.raises(ValueError, match="method='median'"):
        HeadAblation(heads=[(0, 0)], method="median").validate_params()
    with pytest.raises(ValueError, match="heads=\\[\\]"):
        HeadAblation(heads=[]).validate_params()
    with pytest.raises(ValueError, match="do not exist"):
        HeadAblation(heads=[(5, 0)]).setup(model, task)
