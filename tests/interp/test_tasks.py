"""Task: validation, the scored next-token loss and evaluation, against hand-computed values."""

import datasets
import pytest
import torch

from interp.tasks import Task


class TableModel(torch.nn.Module):
    """Logits at position t depend only on token t: a lookup table (bigram model)."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = torch.nn.Parameter(table)

    def forward(self, ids):
        return self.table[ids]


def _task(ids, mask, **extra) -> Task:
    ds = datasets.Dataset.from_dict({"input_ids": ids, "target_mask": mask, **extra})
    return Task("toy", datasets.DatasetDict(train=ds, test=ds))


def test_loss_matches_hand_computed_cross_entropy():
    torch.manual_seed(0)
    table = torch.randn(5, 5)
    ids = [[0, 1, 2, 3], [4, 3, 2, 1]]
    mask = [[0, 0, 1, 1], [0, 1, 0, 1]]
    task = _task(ids, mask)
    model = TableModel(table)
    logp = torch.log_softmax(table, -1)
    # scored targets: (row, t) -> predicted from token at t-1
    expected = [-logp[1, 2], -logp[2, 3], -logp[4, 3], -logp[2, 1]]
    batch = task.tensors("train")
    assert torch.allclose(task.loss(model, batch), torch.stack(expected).mean())
    tl = task.token_losses(model, batch)
    assert tl.shape == (2, 4)
    assert tl[0, 0] == 0 and tl[0, 1] == 0 and tl[1, 2] == 0
    assert torch.allclose(tl[1, 3], -logp[2, 1])
    ev = task.evaluate(model)
    assert ev["loss"] == pytest.approx(torch.stack(expected).mean().item(), rel=1e-6)
    argmax_right = [table[1].argmax() == 2, table[2].argmax() == 3, table[4].argmax() == 3,
                    table[2].argmax() == 1]
    assert ev["accuracy"] == pytest.approx(sum(map(int, argmax_right)) / 4)


def test_loss_is_differentiable():
    task = _task([[0, 1, 2]], [[0, 1, 1]])
    model = TableModel(torch.zeros(3, 3))
    task.loss(model, task.tensors("train")).backward()
    assert model.table.grad is not None and model.table.grad.abs().sum() > 0


def test_batches_cover_split_once_and_are_seeded():
    task = _task([[i, i] for i in range(10)], [[0, 1]] * 10, label=list(range(10)))
    seen = torch.cat([b["label"] for b in task.batches("train", 3, seed=1)])
    assert sorted(seen.tolist()) == list(range(10))
    again = torch.cat([b["label"] for b in task.batches("train", 3, seed=1)])
    assert torch.equal(seen, again)
    in_order = torch.cat([b["label"] for b in task.batches("train", 4, seed=None)])
    assert in_order.tolist() == list(range(10))
    with pytest.raises(ValueError, match="batch_size=0"):
        next(task.batches("train", 0))


def test_validation_errors_name_the_problem():
    ds = datasets.Dataset.from_dict({"input_ids": [[0, 1]]})
    with pytest.raises(ValueError, match="lacks split"):
        Task("t", datasets.DatasetDict(train=ds))
    with pytest.raises(ValueError, match="target_mask"):
        Task("t", datasets.DatasetDict(train=ds, test=ds))
    nolos = Task("t", datasets.DatasetDict(train=ds, test=ds), has_loss=False)
    with pytest.raises(ValueError, match="no next-token loss"):
        nolos.evaluate(TableModel(torch.zeros(2, 2)))
    with pytest.raises(ValueError, match="no split 'valid'"):
        nolos.tensors("valid")


# ------------------------------------------------------------------------- tasks from text
from interp.tokenizing import build_word_tokenizer  # noqa: E402

CORPUS = ["the cat sat on the mat", "a dog ran in the park", "the bird sang", "we saw the cat run"]


@pytest.fixture(scope="module")
def tok():
    return build_word_tokenizer(CORPUS + ["Mary John gave a book to"])


@pytest.fixture(scope="module")
def small_lm(tok):
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    model = TransformerBridge.boot_native(TransformerBridgeConfig(
        d_model=16, d_head=4, n_layers=1, n_ctx=16, n_heads=4, d_vocab=len(tok), seed=0)).eval()
    model.tokenizer = tok
    return model


def test_from_texts_packed_rows_follow_the_token_stream(tok):
    task = Task.from_texts(CORPUS * 3, tok, max_length=5, pack=True, test_fraction=0.25)
    stream = []
    for t in CORPUS * 3:
        stream += tok(t)["input_ids"] + [tok.eos_token_id]
    from collections import Counter

    rows = list(task.dataset["train"]["input_ids"]) + list(task.dataset["test"]["input_ids"])
    chunks = [tuple(stream[i:i + 5]) for i in range(0, len(stream) - 4, 5)]   # remainder dropped
    assert Counter(map(tuple, rows)) == Counter(chunks)
    assert task.dataset["train"][0]["target_mask"] == [0, 1, 1, 1, 1]
    assert len(task.dataset["test"]) == round(0.25 * len(chunks))


def test_from_texts_padded_keeps_columns_and_scores_real_tokens(tok):
    labels = [0, 1, 0, 1]
    task = Task.from_texts(CORPUS, tok, max_length=8, pack=False, columns={"label": labels},
                           test_fraction=0.25, seed=1)
    rows = list(task.dataset["train"]) + list(task.dataset["test"])
    by_text = {r["text"]: r for r in rows}
    r = by_text["the bird sang"]
    assert r["input_ids"][:3] == tok("the bird sang")["input_ids"]
    assert r["attention_mask"] == [1, 1, 1, 0, 0, 0]
    assert r["target_mask"] == [0, 1, 1, 0, 0, 0]
    assert r["label"] == 0 and by_text["a dog ran in the park"]["label"] == 1
    assert "label" in task.tensors("train")


def test_from_texts_loss_equals_hand_computed(tok, small_lm):
    task = Task.from_texts(CORPUS, small_lm, pack=False, test_fraction=0.25)
    batch = task.tensors("train")
    with torch.no_grad():
        logp = torch.log_softmax(small_lm(batch["input_ids"]), -1)
    nll, n = 0.0, 0
    for b, row in enumerate(batch["input_ids"]):
        for t in range(1, int(batch["attention_mask"][b].sum())):
            nll -= float(logp[b, t - 1, row[t]])
            n += 1
    assert task.loss(small_lm, batch).item() == pytest.approx(nll / n, rel=1e-5)


def test_from_texts_errors_name_the_fix(tok, small_lm):
    with pytest.raises(ValueError, match="corpus is empty"):
        Task.from_texts([], tok, max_length=4)
    with pytest.raises(ValueError, match="all 2 texts are empty"):
        Task.from_texts(["", "  "], tok, max_length=4)
    with pytest.raises(ValueError, match="one string"):
        Task.from_texts("the cat", tok, max_length=4)
    with pytest.raises(ValueError, match=r"2 of 4 texts are longer than max_length=5.*truncate=True"):
        Task.from_texts(CORPUS, tok, max_length=5, pack=False)
    assert len(Task.from_texts(CORPUS, tok, max_length=5, pack=False, truncate=True).dataset["train"][0]
               ["input_ids"]) == 5
    with pytest.raises(ValueError, match="exceeds the model's context n_ctx=16"):
        Task.from_texts(CORPUS, small_lm, max_length=32)
    with pytest.raises(ValueError, match="at least 2"):
        Task.from_texts(["the cat"], tok, max_length=4)
    with pytest.raises(ValueError, match="columns=... needs pack=False"):
        Task.from_texts(CORPUS, tok, max_length=4, columns={"label": [0, 1, 0, 1]})
    # a tokenizer with more tokens than the model's vocabulary
    big = build_word_tokenizer(CORPUS + [" ".join(f"x{i}" for i in range(40))])
    small_lm.tokenizer = big
    try:
        with pytest.raises(ValueError, match="not this model's tokenizer"):
            Task.from_texts(CORPUS, small_lm, max_length=4)
    finally:
        small_lm.tokenizer = tok


def test_from_dataset_plain_and_streaming(tok):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"text": CORPUS * 2, "label": [0, 1, 0, 1] * 2})
    task = Task.from_dataset(ds, tok, rows=6, max_length=8, pack=False, test_fraction=0.5)
    rows = list(task.dataset["train"]) + list(task.dataset["test"])
    assert sorted(r["text"] for r in rows) == sorted((CORPUS * 2)[:6])
    assert all(r["label"] == [0, 1, 0, 1][CORPUS.index(r["text"])] for r in rows)
    streamed = Task.from_dataset(ds.to_iterable_dataset(), tok, rows=6, max_length=8, pack=False,
                                 test_fraction=0.5)
    assert list(streamed.dataset["train"]["input_ids"]) == list(task.dataset["train"]["input_ids"])
    packed = Task.from_dataset(datasets.DatasetDict(train=ds), tok, max_length=4)
    assert packed.dataset["train"].column_names == ["input_ids", "target_mask"]
    with pytest.raises(ValueError, match="text_column='body'.*'label', 'text'|text_column='body'"):
        Task.from_dataset(ds, tok, text_column="body", max_length=4)
    with pytest.raises(ValueError, match="streaming dataset: give rows"):
        Task.from_dataset(ds.to_iterable_dataset(), tok, max_length=4)


def test_from_pairs_scores_the_answer_and_reports_logit_diff(tok, small_lm):
    prompts = ["John gave a book to"] * 3 + ["Mary gave a book to"] * 3
    answers = ["Mary"] * 3 + ["John"] * 3
    wrong = ["John"] * 3 + ["Mary"] * 3
    task = Task.from_pairs(prompts, answers, small_lm, wrong, columns={"io": [0, 0, 0, 1, 1, 1]},
                           test_fraction=0.5)
    row = task.dataset["test"][0]
    n = small_lm.to_tokens("John gave a book to").shape[1]   # rows start as model.to_tokens starts them
    assert row["answer_pos"] == n and row["target_mask"] == [0] * n + [1]
    assert row["input_ids"][n] == row["answer_id"] == tok.convert_tokens_to_ids(row["answer"])
    batch = task.tensors("test")
    with torch.no_grad():
        logits = small_lm(batch["input_ids"])
    want = [float(logits[b, n - 1, batch["answer_id"][b]] - logits[b, n - 1, batch["wrong_id"][b]])
            for b in range(len(logits))]
    assert task.logit_diff(small_lm, batch).tolist() == pytest.approx(want, rel=1e-5)
    ev = task.evaluate(small_lm)
    assert ev["logit_diff"] == pytest.approx(sum(want) / len(want), rel=1e-5)
    assert ev["loss"] == pytest.approx(task.loss(small_lm, batch).item(), rel=1e-5)
    assert "logit_diff" not in Task.from_pairs(prompts, answers, tok).evaluate(small_lm)
    with pytest.raises(ValueError, match="single-token answers"):
        Task.from_pairs(prompts, ["Mary John"] * 6, tok, wrong)
    with pytest.raises(ValueError, match="5 answers for 6 prompts"):
        Task.from_pairs(prompts, answers[:5], tok)


def test_from_texts_without_loss_for_a_headless_model(tok, small_lm):
    task = Task.from_texts(CORPUS, tok, max_length=8, pack=False, columns={"label": [0, 1, 0, 1]},
                           has_loss=False)
    assert not task.has_loss and "attention_mask" in task.tensors("train")
    with pytest.raises(ValueError, match="has no next-token loss"):
        task.evaluate(small_lm)
