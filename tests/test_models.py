"""load_model: real Hugging Face checkpoints from local paths, offline, matching the HF forward."""

import time

import pytest
import torch
import transformers

import interp


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=4, vocab_size=50, n_positions=32, bos_token_id=0, eos_token_id=0
    )
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    path = tmp_path_factory.mktemp("gpt2")
    hf.save_pretrained(path)
    return path, hf


def test_local_gpt2_matches_hf_forward(gpt2_dir):
    path, hf = gpt2_dir
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
    model = interp.load_model(tmp_path)
    ids = torch.randint(0, 40, (2, 6), generator=torch.Generator().manual_seed(2))
    _, cache = model.run_with_cache(ids, names_filter=lambda n: n.endswith("hook_resid_post"))
    assert cache["blocks.1.hook_resid_post"].shape == (2, 6, 32)


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
