"""The induction_full organism: task columns, training recipe (every token scored), shipped weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.organisms import induction, induction_full


def test_task_is_deterministic_and_zipf_distributed():
    a, b = induction_full.make_task(3, n_train=64, n_test=8), induction_full.make_task(3, n_train=64, n_test=8)
    assert a.name == "induction_full"
    assert a.dataset["train"]["input_ids"] == b.dataset["train"]["input_ids"]
    assert set(a.dataset["test"].column_names) >= {"input_ids", "target_mask", "collateral_mask", "period"}
    ids = np.asarray(induction_full.make_task(0, n_train=2000, n_test=1).dataset["train"]["input_ids"])[:, 1:]
    counts = np.bincount(ids.ravel(), minlength=induction.N_TOKENS)
    assert counts[0] > 5 * counts[-1]  # Zipf: token 0 far more frequent than token 63
    with pytest.raises(ValueError, match="n_train"):
        induction_full.make_task(0, n_train=0)


def test_score_every_token_scores_both_masks():
    task = induction_full.make_task(0, n_train=16, n_test=4)
    full = induction_full.score_every_token(task)
    d, f = task.tensors("test"), full.tensors("test")
    assert torch.equal(f["target_mask"].bool(), (d["target_mask"] | d["collateral_mask"]).bool())
    assert torch.equal(f["input_ids"], d["input_ids"])


def test_training_recipe_reproduces_spec(tmp_path):
    model = induction_full.train(out_dir=tmp_path, seed=0, progress=False)
    assert not model.training and (tmp_path / induction_full.WEIGHTS_FILE).is_file()
    task = induction_full.make_task(0)
    m = induction_full.position_losses(model, task)
    assert m["loss_first_seen"] < m["uniform"] - 0.3 and m["accuracy_repeated"] > 0.95
    ind = induction.induction_scores(model, task)
    assert all(ind[h] > 0.3 for h in induction_full.INDUCTION_HEADS)


def test_train_without_out_dir_writes_nothing_and_checks_steps(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = induction_full.train(steps=2, progress=False)
    assert not model.training and list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="steps"):
        induction_full.train(steps=-1, progress=False)
