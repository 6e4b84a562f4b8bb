"""The induction_ngram organism: corpus, shipped head types, checkpoints, and a per-head λ̂ call."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.organisms import induction_ngram as org


@pytest.fixture(scope="module")
def shipped():
    torch.set_num_threads(1)
    return org.load()


def test_corpus_masks_mark_exactly_the_predictable_tokens():
    task = org.make_task(3, n_train=8, n_test=400)
    assert task.dataset["train"]["input_ids"] == org.make_task(3, n_train=8, n_test=4).dataset["train"]["input_ids"]
    d = {k: np.asarray(task.dataset["test"][k]) for k in ("input_ids", "target_mask", "repeat_mask", "ngram_mask",
                                                          "period")}
    ids, rep, ng = d["input_ids"], d["repeat_mask"].astype(bool), d["ngram_mask"].astype(bool)
    assert (d["target_mask"] == (rep | ng)).all() and not (rep & ng).any()
    assert (ids[:, 0] == org.BOS).all()
    table = {(a, g): t for a, g, t in org.TRIGRAMS}
    rows, cols = np.nonzero(ng)
    assert len(rows) > 0
    for r, c in zip(rows, cols):  # a trigram target follows its anchor and glue
        assert table[(ids[r, c - 2], ids[r, c - 1])] == ids[r, c]
    rows, cols = np.nonzero(rep)
    assert (ids[rows, cols] == ids[rows, cols - d["period"][rows]]).all()
    text = ~rep.any(1)
    assert 0.4 < text.mean() < 0.6  # half text rows, half repeated
    assert (d["period"][text] == org.SEQ_LEN).all() and (ng[~text] == 0).all()
    # every glue token follows 8 different anchors: the target needs the token before the glue
    assert all(sum(g == glue for _, g, _ in org.TRIGRAMS) == 8 for glue in org.GLUE)
    with pytest.raises(ValueError, match="n_train"):
        org.make_task(0, n_train=0)


def test_shipped_model_has_the_documented_head_types(shipped):
    model, task = shipped
    assert task.evaluate(model)["accuracy"] > 0.99
    assert org.head_types(model, task) == org.HEAD_TYPES
    ind = org.induction_scores(model)
    assert ind[1].min() > 0.4 and ind[0].max() < 0.1
    prev = org.previous_token_scores(model, task)
    assert prev[0, 1] > 0.3 and prev[1].max() < 0.1
    effects = org.ablation_effects(model, task, eval_rows=256)
    assert effects["L0H0"]["ngram"] > 0.3 > effects["L0H0"]["repeat"]  # the main n-gram head
    assert effects["L0H1"]["repeat"] > 2.0  # the previous-token head of the induction circuit
    with pytest.raises(ValueError, match="unknown keys"):
        org.head_types(model, task, thresholds={"ngram": 0.1})


def test_checkpoints_load_as_float32_and_span_the_heads_formation(shipped):
    _, task = shipped
    ckpts = org.checkpoints()
    assert [s for s, _ in ckpts] == list(org.CHECKPOINT_STEPS)
    assert all(next(m.parameters()).dtype == torch.float32 for _, m in ckpts)
    losses = [task.evaluate(m, batch_size=512)["loss"] for _, m in ckpts]
    assert losses[0] > 2.0 and losses[-1] < 0.05  # before and after the heads form
    assert org.induction_scores(ckpts[0][1])[1].max() < 0.2


def test_a_per_head_llc_call_runs(shipped):
    from interp.degradations import estimate_component_llcs

    model, task = shipped
    comps = org.head_components(model)
    assert list(comps) == org.head_names(model) and comps["L1H2"] == "blocks.1.attn.head.2"
    before = {k: v.clone() for k, v in model.state_dict().items()}
    est = estimate_component_llcs(model, task, components={k: comps[k] for k in ("L0H0", "L1H0")}, nbeta=300.0,
                                  localization=100.0, lr=1e-4, chains=2, n_draws=10, burnin=10, progress=False)
    d_head, d_model = model.cfg.d_head, model.cfg.d_model
    assert est["L1H0"].n_weights == 4 * d_head * d_model + 3 * d_head  # Q/K/V rows, biases, O columns
    assert all(np.isfinite(est[k].mean) and not est[k].failed for k in ("L0H0", "L1H0"))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # weights restored


def test_train_recipe_writes_checkpoints(tmp_path):
    model = org.train(out_dir=tmp_path, steps=50, progress=False)
    assert not model.training
    assert (tmp_path / org.WEIGHTS_FILE).is_file()
    assert [p.name for p in sorted((tmp_path / org.CHECKPOINT_DIR).iterdir())] == ["step_00050.safetensors"]
    with pytest.raises(ValueError, match="steps"):
        org.train(steps=-1, progress=False)
