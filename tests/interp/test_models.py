"""load_model: real Hugging Face checkpoints from local paths, offline, matching the HF forward; the
tokenizer checked at load time (missing, empty, mismatched: a clear error; tokenizer=False: ids only)."""

import time
import warnings

import pytest
import torch
import transformers

import interp
from interp.tokenizing import build_word_tokenizer

WORDS = [f"w{i}" for i in range(48)]          # + <unk>, <eos>: 50 tokens


def _tokenizer(words=WORDS):
    return build_word_tokenizer([" ".join(words)])


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=4, vocab_size=50, n_positions=32, bos_token_id=1, eos_token_id=1
    )
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    path = tmp_path_factory.mktemp("gpt2")
    hf.save_pretrained(path)
    _tokenizer().save_pretrained(path)
    bare = tmp_path_factory.mktemp("gpt2-bare")       # saved without tokenizer files
    hf.save_pretrained(bare)
    return path, hf, bare


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=32, bos_token_id=1, eos_token_id=1)
    path = tmp_path_factory.mktemp("llama-bare")
    transformers.LlamaForCausalLM(cfg).eval().save_pretrained(path)
    return path


def test_local_gpt2_matches_hf_forward(gpt2_dir):
    path, hf, _ = gpt2_dir
    model = interp.load_model(path)
    assert not model.training
    assert model.cfg.n_layers == 2 and model.cfg.d_model == 32
    ids = torch.randint(0, 50, (3, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(model(ids), hf(ids).logits, atol=1e-5)


def test_local_bert_with_attention_mask(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=16,
    )
    transformers.BertForMaskedLM(cfg).eval().save_pretrained(tmp_path)
    _tokenizer([f"w{i}" for i in range(38)]).save_pretrained(tmp_path)
    model = interp.load_model(tmp_path)
    ids = torch.randint(0, 40, (2, 6), generator=torch.Generator().manual_seed(2))
    _, cache = model.run_with_cache(ids, names_filter=lambda n: n.endswith("hook_resid_post"))
    assert cache["blocks.1.hook_resid_post"].shape == (2, 6, 32)
    # a masked LM (with its head) still has no next-token head
    assert not interp.models.has_lm_head(model)


def test_lm_head_is_decided_from_the_model(gpt2_dir, llama_dir):
    from interp.models import has_lm_head

    for path, tokenizer in ((gpt2_dir[0], None), (llama_dir, False)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert has_lm_head(interp.load_model(path, tokenizer=tokenizer)), path
    assert has_lm_head(torch.nn.Linear(2, 2))      # a plain module is taken to return logits


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        interp.load_model("./no/such/model")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        interp.load_model(tmp_path)


def test_offline_hub_name_fails_fast_with_guidance(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="not in the local Hugging Face cache"):
        interp.load_model("interp-tests/surely-not-a-cached-model")
    assert time.perf_counter() - start < 30  # no network retries


def test_offline_context_restores_environment(monkeypatch, gpt2_dir):
    import os

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    interp.load_model(gpt2_dir[0])
    assert "HF_HUB_OFFLINE" not in os.environ


# ------------------------------------------------------------------------------ tokenizers
def test_saved_tokenizer_is_used(gpt2_dir):
    model = interp.load_model(gpt2_dir[0])
    assert len(model.tokenizer) == 50
    assert model.tokenizer("w3 w7", add_special_tokens=False)["input_ids"] == [5, 9]


def test_gpt2_without_tokenizer_files_is_a_clear_error(gpt2_dir):
    """Before: AutoTokenizer made an empty GPT-2 tokenizer (length 1) and every string became id 0."""
    with pytest.raises(ValueError, match="no tokenizer files.*tokenizer=False"):
        interp.load_model(gpt2_dir[2])


def test_llama_without_tokenizer_is_a_clear_error_not_sentencepiece(llama_dir):
    with pytest.raises(ValueError, match="saved without its tokenizer") as err:
        interp.load_model(llama_dir)
    assert "sentencepiece" not in str(err.value)


@pytest.mark.parametrize("which", ["gpt2", "llama"])
def test_tokenizer_false_gives_token_id_model_with_warning(gpt2_dir, llama_dir, which):
    path = gpt2_dir[2] if which == "gpt2" else llama_dir
    with pytest.warns(UserWarning, match="token ids only"):
        model = interp.load_model(path, tokenizer=False)
    assert model.tokenizer is None
    ids = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert model(ids).shape == (2, 6, 50)


@pytest.mark.parametrize("how", ["object", "directory"])
def test_tokenizer_given_explicitly(gpt2_dir, llama_dir, tmp_path, how):
    tok = _tokenizer()
    if how == "directory":
        tok.save_pretrained(tmp_path)
    model = interp.load_model(llama_dir, tokenizer=tok if how == "object" else tmp_path)
    assert len(model.tokenizer) == 50
    assert model.tokenizer("w0", add_special_tokens=False)["input_ids"] == [2]


def test_empty_or_mismatched_tokenizer_is_a_clear_error(gpt2_dir, tmp_path):
    from tokenizers import Tokenizer, models

    empty = transformers.PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")), unk_token="<unk>")
    assert len(empty) == 1
    with pytest.raises(ValueError, match="holds 1 token.*empty.*id 0"):
        interp.load_model(gpt2_dir[2], tokenizer=empty)
    big = _tokenizer([f"w{i}" for i in range(60)])
    with pytest.raises(ValueError, match="62 tokens but the model's vocabulary has d_vocab=50"):
        interp.load_model(gpt2_dir[2], tokenizer=big)
    with pytest.warns(UserWarning, match="this model's tokenizer"):
        interp.load_model(gpt2_dir[2], tokenizer=_tokenizer(WORDS[:10]))
    with pytest.raises(ValueError, match="no tokenizer files"):
        interp.load_model(gpt2_dir[2], tokenizer=tmp_path)
    with pytest.raises(ValueError, match="tokenizer=3"):
        interp.load_model(gpt2_dir[2], tokenizer=3)
