"""The induction organism: task generator, head scores, shipped weights, checkpoints, training recipe."""

from __future__ import annotations

import pytest
import torch
from beartype import beartype
from jaxtyping import jaxtyped

from interp.organisms import induction
from interp.organisms._weights import build_native, read_metadata

# Spec thresholds (measured on the shipped weights: accuracy 0.996, loss 0.028, prev-token score 0.36,
# induction scores 0.38 / 0.40; a random-init model: accuracy ≈ 0.01, all head scores ≤ 0.09).
MIN_ACCURACY = 0.95
MAX_LOSS = 0.15
MIN_HEAD_SCORE = 0.25
MAX_RANDOM_SCORE = 0.15

prev_scores = jaxtyped(typechecker=beartype)(induction.previous_token_scores)
ind_scores = jaxtyped(typechecker=beartype)(induction.induction_scores)


@pytest.fixture(scope="module")
def task():
    return induction.make_task(0)


@pytest.fixture(scope="module")
def shipped():
    model, _ = induction.load()
    return model


def assert_meets_spec(model, task) -> None:
    metrics = task.evaluate(model)
    assert metrics["accuracy"] > MIN_ACCURACY, metrics
    assert metrics["loss"] < MAX_LOSS, metrics
    prev, ind = prev_scores(model, task), ind_scores(model, task)
    assert prev.shape == ind.shape == (2, 2)
    # a previous-token head in layer 0, an induction head in layer 1, and not the other way round
    assert prev[0].max() > MIN_HEAD_SCORE, prev
    assert ind[1].max() > MIN_HEAD_SCORE, ind
    assert ind[0].max() < MAX_RANDOM_SCORE, ind


# ------------------------------------------------------------------------------------------------ task
def test_task_is_deterministic_with_random_periods(task):
    again = induction.make_task(0)
    assert task.dataset["test"]["input_ids"] == again.dataset["test"]["input_ids"]
    assert induction.make_task(1).dataset["test"]["input_ids"] != task.dataset["test"]["input_ids"]
    data = task.tensors("train", rows=2000)
    ids, mask, periods = data["input_ids"], data["target_mask"], data["period"]
    assert ids.shape == (2000, induction.SEQ_LEN + 1)
    assert (ids[:, 0] == induction.BOS).all() and (ids[:, 1:] != induction.BOS).all()
    assert set(periods.tolist()) == set(range(induction.PERIODS[0], induction.PERIODS[1] + 1))
    for row, mrow, period in zip(ids, mask, periods.tolist()):
        pattern = row[1 : 1 + period]
        assert len(set(pattern.tolist())) == period  # distinct within a period
        scored = mrow.nonzero()[:, 0]
        assert scored.min() == 1 + period and scored.max() == induction.SEQ_LEN
        assert (row[scored] == row[scored - period]).all()  # scored tokens repeat
        assert mrow[: 1 + period].sum() == 0  # first occurrences are never scored


# ---------------------------------------------------------------------------------------------- scores
class _FakeModel(torch.nn.Module):
    """Returns given attention patterns from ``run_with_cache``: checks the score indexing."""

    def __init__(self, patterns: torch.Tensor):
        super().__init__()
        self.patterns = patterns  # [layer, batch, head, q, k]
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.cfg = type("Cfg", (), {"n_layers": patterns.shape[0]})()

    def run_with_cache(self, ids, names_filter):
        cache = {f"blocks.{layer}.attn.hook_pattern": p for layer, p in enumerate(self.patterns)}
        return None, {k: v[: len(ids)] for k, v in cache.items() if names_filter(k)}


def test_scores_pick_out_the_right_positions(task):
    data = task.tensors("test", rows=16)
    periods = data["period"].tolist()
    n = induction.SEQ_LEN + 1
    pat = torch.zeros(2, 16, 2, n, n)
    pat[..., 0, 0] = 1.0
    for q in range(1, n):
        pat[0, :, 0, q, q - 1] = 1.0  # L0H0: previous token
        pat[0, :, 1, q, 0] = 1.0  # L0H1: BOS
        pat[1, :, 1, q, q] = 1.0  # L1H1: self
        for b, period in enumerate(periods):  # L1H0: induction where defined, else BOS
            pat[1, b, 0, q, q - period + 1 if q >= period + 1 else 0] = 1.0
    fake = _FakeModel(pat)
    prev = induction.previous_token_scores(fake, task, eval_rows=16)
    ind = induction.induction_scores(fake, task, eval_rows=16)
    torch.testing.assert_close(prev, torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    torch.testing.assert_close(ind, torch.tensor([[0.0, 0.0], [1.0, 0.0]]))


# --------------------------------------------------------------------------------------------- weights
def test_shipped_weights_meet_spec(shipped, task):
    assert not shipped.training
    assert_meets_spec(shipped, task)
    prev, ind = prev_scores(shipped, task), ind_scores(shipped, task)
    # the heads named in the module (and DESCRIPTION) are the ones the scores pick
    assert tuple(int(i) for i in divmod(int(prev.argmax()), 2)) == induction.PREV_TOKEN_HEAD
    for layer, head in induction.INDUCTION_HEADS:
        assert ind[layer, head] > MIN_HEAD_SCORE
    assert f"L0H{induction.PREV_TOKEN_HEAD[1]}" in induction.DESCRIPTION


def test_random_init_fails_spec(task):
    torch.manual_seed(123)
    model = build_native(induction.CONFIG).eval()
    assert task.evaluate(model)["accuracy"] < 0.1
    assert prev_scores(model, task).max() < MAX_RANDOM_SCORE
    assert ind_scores(model, task).max() < MAX_RANDOM_SCORE
    with pytest.raises(AssertionError):
        assert_meets_spec(model, task)


def test_checkpoints_span_the_phase_change(shipped, task):
    ckpts = induction.checkpoints()
    steps = [step for step, _ in ckpts]
    assert steps == sorted(steps) == list(induction.CHECKPOINT_STEPS)
    assert 4 <= len(ckpts) <= 6
    best = [float(ind_scores(m, task, eval_rows=128)[1].max()) for _, m in ckpts]
    losses = [task.evaluate(m)["loss"] for _, m in ckpts]
    assert best[0] < MAX_RANDOM_SCORE and best[-1] > MIN_HEAD_SCORE
    assert any(MAX_RANDOM_SCORE / 1.5 < b < MIN_HEAD_SCORE for b in best), best  # one mid-formation
    assert losses[0] > 3.0 and losses[-1] < MAX_LOSS, losses
    for step, model in ckpts:
        assert not model.training
    last = ckpts[-1][1].state_dict()
    for k, v in shipped.state_dict().items():
        torch.testing.assert_close(last[k], v, rtol=0, atol=0)


# -------------------------------------------------------------------------------------------- training
def test_training_recipe_reproduces_spec(tmp_path, task):
    torch.set_num_threads(1)
    model = induction.train(out_dir=tmp_path, seed=0, progress=False)
    assert not model.training
    assert_meets_spec(model, task)
    files = sorted((tmp_path / induction.CHECKPOINT_DIR).glob("step_*.safetensors"))
    assert [read_metadata(f)["step"] for f in files] == list(induction.CHECKPOINT_STEPS)
    assert read_metadata(tmp_path / induction.WEIGHTS_FILE)["config"] == induction.CONFIG


def test_train_without_out_dir_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = induction.train(steps=2, progress=False)
    assert not model.training and list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="steps"):
        induction.train(steps=-1, progress=False)
