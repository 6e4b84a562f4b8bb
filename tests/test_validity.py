"""The validity suite (benchmarks/validity.py) on the planted organism (interp.organisms.planted).

- Every case's real and spurious finding pass at w0 by the same criterion (so the suite cannot
  become trivial: a spurious finding that fails at w0 would leave degradation nothing to tell).
- The ground truth holds by construction: removing what a spurious finding names leaves the output
  unchanged, removing what a real one names costs the loss the maths predicts.
- The decision rules and the quick mode (which prints the table).
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

from interp.organisms import planted

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("validity_bench", ROOT / "benchmarks" / "validity.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses resolve their module
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bench():
    return _bench()


@pytest.fixture(scope="module")
def organism():
    return planted.load(n_train=512, n_test=256)


def _loss(model, ids, mask) -> float:
    with torch.no_grad():
        lp = torch.log_softmax(model(ids)[:, :-1].float(), -1)
    nll = -lp.gather(-1, ids[:, 1:, None])[..., 0]
    m = mask[:, 1:].float()
    return float((nll * m).sum() / m.sum())


def _edited(**zero: list[tuple[str, object]]):
    """A planted model with the named state entries' index sets set to zero."""
    model = planted.build()
    state = model.state_dict()
    with torch.no_grad():
        for key, index in zero.get("entries", []):
            state[key][index] = 0.0
    model.load_state_dict(state)
    return model


@pytest.fixture(scope="module")
def batch(organism):
    _, task = organism
    t = task.tensors("test", rows=128)
    return t["input_ids"].long(), t["target_mask"].bool()


def test_solves_the_task(organism):
    model, task = organism
    out = task.evaluate(model)
    assert out["accuracy"] == 1.0
    # the prediction's logit c against 0 for the V − 1 others, up to the attention leaks
    exact = math.log1p(planted.N_TOKENS * math.exp(-planted.CONFIDENCE))
    assert out["loss"] == pytest.approx(exact, rel=0.05)


def test_unread_components_do_not_change_the_output(organism, batch):
    """What the spurious findings name is read by nothing: zeroing it leaves the logits unchanged."""
    model, _ = organism
    ids, _ = batch
    lay, dh, v = planted.layout(), planted.config()["d_head"], planted.N_TOKENS + 1
    head2 = slice(2 * dh, 3 * dh)  # L0H2's rows of the o-projection input
    with torch.no_grad():
        clean = model(ids)
        for entries in (
            [("blocks.0.attn.o.weight", (slice(None), head2))],          # L0H2 (PREV2)
            [("blocks.0.mlp.out.weight", (lay["BIG"], slice(None)))],    # MLP0's constant write
            [("blocks.1.mlp.out.weight", (slice(None), slice(v, 2 * v)))],  # MLP1's CUR→UNREAD neurons
            [("blocks.0.attn.o.weight", (lay["CUR"], slice(None)))],     # L0H1's write
        ):
            edited = _edited(entries=entries)
            assert torch.allclose(edited(ids), clean, atol=1e-5), entries


def test_real_components_carry_the_loss(organism, batch):
    """Zeroing L1H1 (the backup) halves MID: logit c/2, loss log(1 + (V−1)e^{−c/2}); zeroing the MLP1
    relay or both induction heads leaves OUT empty: uniform logits, loss log V; erasing PREV breaks
    the keys."""
    ids, mask = batch
    v, c, dh = planted.N_TOKENS + 1, planted.CONFIDENCE, planted.config()["d_head"]
    lay = planted.layout()
    half = _loss(_edited(entries=[("blocks.1.attn.o.weight", (slice(None), slice(dh, 2 * dh)))]), ids, mask)
    assert half == pytest.approx(math.log1p((v - 1) * math.exp(-c / 2)), rel=0.1)
    relay = _loss(_edited(entries=[("blocks.1.mlp.out.weight", (slice(None), slice(0, v)))]), ids, mask)
    assert relay == pytest.approx(math.log(v), rel=1e-3)
    heads = _loss(_edited(entries=[("blocks.1.attn.o.weight", (slice(None), slice(0, 2 * dh)))]), ids, mask)
    assert heads == pytest.approx(math.log(v), rel=1e-3)
    prev = _loss(_edited(entries=[("blocks.0.attn.o.weight", (lay["PREV"], slice(None)))]), ids, mask)
    assert prev > 1.0


def test_every_case_passes_at_w0_by_the_same_criterion(organism, bench):
    model, task = organism
    values = {}
    for a in bench.build_analyses(quick=True):
        a.setup(model, task)
        values[a.name] = a(model, task)
    assert len(bench.CASES) >= 6
    assert {c.analysis for c in bench.CASES} == {"scrubbing", "probing", "norms", "transcoders"}
    for case in bench.CASES:
        real = values[case.real[0]][case.real[1]]
        spurious = values[case.spurious[0]][case.spurious[1]]
        assert case.real[1].split("_")[0] == case.spurious[1].split("_")[0], case.name  # same metric family
        assert real >= case.threshold and spurious >= case.threshold, (case.name, real, spurious)
    # the spurious hypotheses are not trivially different from the real one: the backup-less one is
    # short of it only by the half of MID it resamples (KL ≈ log 2 per scored token)
    assert values["scrub_no_backup"]["kl"] == pytest.approx(math.log(2), rel=0.1)
    assert values["scrub_plus_prev2"]["recovered"] == pytest.approx(values["scrub_complete"]["recovered"], abs=1e-6)


def test_token_back_labels():
    ids = torch.tensor([[24, 5, 6, 7, 5, 6]])
    assert planted.token_back(1)({"input_ids": ids}).tolist() == [[-1, -1, 5 % 4, 6 % 4, 7 % 4, 5 % 4]]
    assert planted.token_back(2)({"input_ids": ids}).tolist() == [[-1, -1, -1, 5 % 4, 6 % 4, 7 % 4]]
    with pytest.raises(ValueError, match="offset=0"):
        planted.token_back(0)


def test_bad_build_arguments():
    with pytest.raises(ValueError, match="big_norm=-1"):
        planted.build(big_norm=-1)
    with pytest.raises(ValueError, match="sharpness=0"):
        planted.build(sharpness=0)
    with pytest.raises(ValueError, match="unknown option"):
        planted.load(bogus=1)


def test_auc_and_decisions(bench):
    assert bench.auc([math.inf, 1.0], [0.5, 0.5]) == 1.0
    assert bench.auc([1.0], [1.0]) == 0.5
    assert bench.auc([0.2], [0.5]) == 0.0
    assert math.isnan(bench.auc([math.nan], [1.0]))


@pytest.mark.slow
def test_quick_mode_prints_the_table(bench, capsys):
    table, rates = bench.main(["--quick"])
    out = capsys.readouterr().out
    assert "Per case" in out and "Rates per degradation" in out
    assert len(table) == len(bench.CASES) * 4
    assert set(table["verdict"]) <= {"separates", "inverted", "does not", "undecided"}
    assert (table["w0_real"] >= 0).all()
    w0 = rates.set_index("degradation").loc["w0 only (criterion)"]
    assert w0["separates"] == 0.0 and w0["auc"] == 0.5
