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
