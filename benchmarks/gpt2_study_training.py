"""The GPT-2-small-sized study's model organism: its synthetic IOI corpus, the architecture built from
its config, and the quick training (``benchmarks/gpt2_small_study.py`` runs the study on it).

- :func:`make_corpus`: indirect-object sentences (IOI, Wang et al. 2022, "Interpretability in the
  wild") in four templates and both name orders, plus filler sentences with the same names, places
  and objects; :func:`tokenizer`: a word-level tokenizer of their vocabulary;
- :func:`hf_model`: GPT-2 small's (124.4M weights) or Pythia-160M's architecture from its config,
  random init, dropout 0 (``quick``: 2 layers, d_model 64);
- :func:`train`: AdamW on the next-token loss with the IOI answer token weighted, only the used
  vocabulary rows trained (the loss over the full vocabulary stays exact: see its docstring).

Example::

    >>> import random
    >>> from gpt2_study_training import ioi_prompt
    >>> row = ioi_prompt(random.Random(0))
    >>> row["answer"] != row["wrong"] and row["answer"] in row["prompt"]
    True
"""

from __future__ import annotations

import argparse
import logging
import math
import random
from typing import Any

import torch

log = logging.getLogger("gpt2_small_study")

NAMES = ("Mary", "John", "Alice", "Bob", "Sarah", "Tom", "Anna", "James", "Emma", "David", "Laura", "Paul",
         "Kate", "Mark", "Lucy", "Peter")
PLACES = ("store", "park", "school", "office", "garden", "station", "library", "market")
OBJECTS = ("drink", "book", "ring", "bag", "letter", "gift", "key", "ball")
TEMPLATES = (
    "When {a} and {b} went to the {p} , {s} gave a {o} to",
    "{a} and {b} were at the {p} . {s} handed the {o} to",
    "Then {a} and {b} met . {s} gave a {o} to",
    "After {a} met {b} at the {p} , {s} gave it to",
)
FILLERS = (
    "{a} went to the {p} and bought a {o} .",
    "The {p} was closed , so {a} went home .",
    "{a} likes the {o} from the {p} .",
    "{a} and {b} walked to the {p} together .",
    "At the {p} , {a} found a {o} .",
)


# --------------------------------------------------------------------------- corpus and tasks
def ioi_prompt(rng: random.Random) -> dict[str, Any]:
    """One IOI prompt: names A, B (distinct), subject S repeated, indirect object IO the other."""
    a, b = rng.sample(NAMES, 2)
    io_first = rng.random() < 0.5  # ABBA (S = B, IO = A first) or BABA (S = A, IO = B second)
    s, io = (b, a) if io_first else (a, b)
    template = rng.randrange(len(TEMPLATES))
    text = TEMPLATES[template].format(a=a, b=b, s=s, p=rng.choice(PLACES), o=rng.choice(OBJECTS))
    return {"prompt": text, "answer": io, "wrong": s, "template": template, "io_first": int(io_first)}


def filler(rng: random.Random) -> str:
    a, b = rng.sample(NAMES, 2)
    return rng.choice(FILLERS).format(a=a, b=b, p=rng.choice(PLACES), o=rng.choice(OBJECTS))


def make_corpus(n: int, seed: int, ioi_fraction: float = 0.8) -> tuple[list[str], list[bool]]:
    """``n`` training sentences: IOI prompts followed by their answer, and filler sentences; and which
    ones are IOI."""
    rng = random.Random(seed)
    out, is_ioi = [], []
    for _ in range(n):
        is_ioi.append(rng.random() < ioi_fraction)
        if is_ioi[-1]:
            row = ioi_prompt(rng)
            out.append(f"{row['prompt']} {row['answer']}")
        else:
            out.append(filler(rng))
    return out, is_ioi


def vocabulary() -> list[str]:
    words = set(" ".join(TEMPLATES + FILLERS).replace("{", " ").replace("}", " ").split())
    words |= set(NAMES) | set(PLACES) | set(OBJECTS)
    words -= {"a", "b", "s", "p", "o"}
    return sorted(words | {"a"})  # "a" (the article) is a word of the templates too


def tokenizer():
    from interp.tokenizing import build_word_tokenizer

    return build_word_tokenizer([" ".join(vocabulary())])


# --------------------------------------------------------------------------- model
def hf_config(arch: str, quick: bool, layers: int | None = None):
    """The Hugging Face config of the architecture (``quick``: 2 layers, d_model 64; ``layers``: another
    depth, for trying a recipe out)."""
    import transformers

    if arch == "gpt2":
        size = dict(n_layer=2, n_embd=64, n_head=4, vocab_size=512) if quick else \
            dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257)
        if layers:
            size["n_layer"] = layers
        return transformers.GPT2Config(n_positions=64 if quick else 1024, resid_pdrop=0.0, embd_pdrop=0.0,
                                       attn_pdrop=0.0, bos_token_id=1, eos_token_id=1, **size)
    if arch == "pythia160m":
        size = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=256,
                    vocab_size=512) if quick else \
            dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072,
                 vocab_size=50304)
        if layers:
            size["num_hidden_layers"] = layers
        return transformers.GPTNeoXConfig(max_position_embeddings=64 if quick else 2048, rotary_pct=0.25,
                                          use_parallel_residual=True, tie_word_embeddings=False,
                                          attention_dropout=0.0, hidden_dropout=0.0, bos_token_id=1,
                                          eos_token_id=1, **size)
    raise ValueError(f"--arch {arch!r}: must be 'gpt2' or 'pythia160m'.")


#: the output projections of the residual branches (attention and MLP) of each architecture
RESIDUAL_OUT = {"gpt2": ("attn.c_proj.weight", "mlp.c_proj.weight"),
                "pythia160m": ("attention.dense.weight", "mlp.dense_4h_to_h.weight")}


def hf_model(arch: str, quick: bool, seed: int, layers: int | None = None,
             residual_init: float = 1.0) -> torch.nn.Module:
    """The architecture with random init; the residual branches' output projections scaled by
    ``residual_init`` (0: every block starts as the identity, as in zero-init residual training)."""
    import transformers

    torch.manual_seed(seed)
    cfg = hf_config(arch, quick, layers)
    cls = transformers.GPT2LMHeadModel if arch == "gpt2" else transformers.GPTNeoXForCausalLM
    hf = cls(cfg)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith(RESIDUAL_OUT[arch]):
                p.mul_(residual_init)
    return hf


def _batch(texts: list[str], tok, answers: list[bool]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token ids (BOS first, right-padded with EOS), next-token labels (-100 on padding) and per-label
    weights (1, and ``-1`` marking an IOI answer token: the caller gives it its weight)."""
    eos = tok.eos_token_id
    rows = [[eos] + tok(t)["input_ids"] for t in texts]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), eos, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    answer = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        labels[i, :len(r) - 1] = torch.tensor(r[1:])
        answer[i, len(r) - 2] = answers[i]
    return ids, labels, answer


def train(hf: torch.nn.Module, texts: list[str], is_ioi: list[bool], tok, a: argparse.Namespace) -> dict[str, Any]:
    """AdamW on the next-token loss, the IOI answer token weighted ``a.answer_weight`` times, linear
    warm-up then cosine decay, gradient clipping at 1.

    Only the ``n`` token ids the word-level tokenizer uses are trained (a few dozen of the 50k rows of the
    embedding and unembedding); the other rows are set to zero, so their logits are exactly 0 and the
    cross-entropy over the whole vocabulary of V tokens is the one over the ``n`` used logits plus one
    constant logit log(V − n): logsumexp(z) = logsumexp(z_used, log(V − n)). The loss is exact, and a
    step neither computes 50k logits per token nor updates 38.6M embedding weights it has no gradient for.
    """
    n = len(tok)
    body = hf.base_model
    e_in, e_out = hf.get_input_embeddings().weight, hf.get_output_embeddings().weight
    tied = e_in is e_out
    vocab = e_out.shape[0]
    with torch.no_grad():
        e_in[n:].zero_()
        e_out[n:].zero_()
    used_in = torch.nn.Parameter(e_in[:n].detach().clone())
    used_out = used_in if tied else torch.nn.Parameter(e_out[:n].detach().clone())
    e_in.requires_grad_(False)
    e_out.requires_grad_(False)
    # the embeddings are vector-like (one row per token or position): a larger step than the matrices'
    pos = [p for name, p in hf.named_parameters() if p.requires_grad and name.endswith("wpe.weight")]
    params = [p for p in hf.parameters() if p.requires_grad and not any(p is q for q in pos)]
    embeddings = [used_in] + ([] if tied else [used_out]) + pos
    rest = math.log(vocab - n)

    def used_logits(ids: torch.Tensor) -> torch.Tensor:
        hidden = body(inputs_embeds=used_in[ids]).last_hidden_state
        z = hidden @ used_out.T
        return torch.cat([z, z.new_full((*z.shape[:-1], 1), rest)], dim=-1)  # the V − n zero rows, as one

    ids, labels, answer = _batch(texts, tok, is_ioi)
    # the last column is the longest rows' answer token (nothing to predict from it) or padding
    ids, labels, answer = ids[:, :-1], labels[:, :-1], answer[:, :-1]
    weights = torch.where(answer, a.answer_weight, 1.0) * (labels >= 0)
    rng = random.Random(a.seed + 3)  # held-out IOI prompts, another stream than the corpus and the task
    held = [ioi_prompt(rng) for _ in range(64)]
    h_ids, _, h_ans = _batch([r["prompt"] + " x" for r in held], tok, [True] * len(held))
    h_pos = h_ans.float().argmax(1)
    h_io = torch.tensor([tok(f" {r['answer']}")["input_ids"][0] for r in held])
    h_s = torch.tensor([tok(f" {r['wrong']}")["input_ids"][0] for r in held])

    def ioi_check() -> tuple[float, float]:
        with torch.no_grad():
            z = used_logits(h_ids)[torch.arange(len(held)), h_pos]
        diff = z[torch.arange(len(held)), h_io] - z[torch.arange(len(held)), h_s]
        return float(diff.mean()), float((z.argmax(-1) == h_io).float().mean())

    # fused: one kernel over all tensors per step (0.11 s instead of 0.84 s for 86M weights on 2 cores)
    opt = torch.optim.AdamW([{"params": params}, {"params": embeddings, "lr": a.lr * a.embed_lr_scale}],
                            lr=a.lr, betas=(0.9, 0.98), weight_decay=0.01, fused=True)
    params = params + embeddings
    warm = max(1, a.train_steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / a.train_steps))))
    g = torch.Generator().manual_seed(a.seed)
    hf.train()
    losses, curve = [], []
    for step in range(a.train_steps):
        idx = torch.randint(0, len(ids), (a.train_batch,), generator=g)
        z = used_logits(ids[idx])
        lab, w = labels[idx], weights[idx]
        nll = torch.nn.functional.cross_entropy(z.flatten(0, 1), lab.flatten().clamp(min=0), reduction="none")
        loss = (nll * w.flatten()).sum() / w.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if (step + 1) % a.check_every == 0 or step == a.train_steps - 1:
            hf.eval()
            diff, acc = ioi_check()
            hf.train()
            curve.append({"step": step + 1, "loss": losses[-1], "logit_diff": diff, "accuracy": acc})
            log.info("train step %d/%d loss %.3f; held-out IOI logit diff %.2f, accuracy %.2f",
                     step + 1, a.train_steps, losses[-1], diff, acc)
    hf.eval()
    del opt
    with torch.no_grad():
        e_in[:n] = used_in
        e_out[:n] = used_out
    e_in.requires_grad_(True)
    e_out.requires_grad_(True)
    return {"first_loss": losses[0], "last_loss": sum(losses[-5:]) / len(losses[-5:]), "curve": curve}
