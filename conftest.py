"""The fixtures of the docstring examples (``--doctest-modules`` over ``interp``, ``hooks`` and
``analyses``, set in pyproject.toml).

An example that needs something real finds it in its namespace, built once per session and only
for the examples that name it:

- ``study``: the results of a small study (:class:`interp.results.Results`) shaped like a real
  sweep's: a tempered posterior calibrated to two target loss increases (2 chains × 2 draws) and
  weight noise at two σ, five analyses (causal scrubbing, a head ablation, a probe, residual norms),
  built by ``benchmarks/bench_results.py`` from a fixed seed in about a second;
- ``model``, ``task``: the shipped induction organism (``interp.organisms.load("induction")``, a
  2-layer attention-only TransformerBridge and its task);
- ``gpt2_dir``: a directory written by ``save_pretrained``: a 2-layer GPT-2 with random weights and a
  50-word tokenizer (what ``interp.load_model`` loads from a local path, standing in for a hub model).

Example (in a docstring)::

    >>> sorted(study.table["degradation"].unique())
    ['TemperedPosterior', 'WeightNoise']
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest
from _pytest.doctest import DoctestItem

ROOT = Path(__file__).resolve().parent


@functools.cache
def _study() -> Any:
    spec = importlib.util.spec_from_file_location("bench_results", ROOT / "benchmarks" / "bench_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_results(posterior_levels=(0.01, 0.1), noise_levels=(0.05, 0.2), chains=2, draws=2,
                               noise_draws=2)


@functools.cache
def _organism() -> tuple[Any, Any]:
    from interp import organisms

    return organisms.load("induction")


_GPT2_DIR: list[Path] = []


def _gpt2_dir(request: pytest.FixtureRequest) -> Path:
    """A 2-layer GPT-2 (random weights, d_model 32, a 50-word tokenizer) saved by ``save_pretrained``."""
    if not _GPT2_DIR:
        import torch
        import transformers

        from interp.tokenizing import build_word_tokenizer

        path = request.getfixturevalue("tmp_path_factory").mktemp("gpt2")
        torch.manual_seed(0)
        config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=50, n_positions=32,
                                         bos_token_id=1, eos_token_id=1)
        transformers.GPT2LMHeadModel(config).save_pretrained(path)
        build_word_tokenizer([" ".join(f"w{i}" for i in range(48))]).save_pretrained(path)
        _GPT2_DIR.append(path)
    return _GPT2_DIR[0]


_FIXTURES = {"study": lambda request: _study(), "model": lambda request: _organism()[0],
             "task": lambda request: _organism()[1], "gpt2_dir": _gpt2_dir}


def _free_names(sources: list[str]) -> set[str]:
    """The names a docstring's examples read before they assign them (``model, task = load()``
    first: no fixture needed)."""
    bound: set[str] = set()
    free: set[str] = set()
    for source in sources:
        try:
            tree = ast.parse(source)
        except SyntaxError:  # not Python (the example fails on its own): look for the names in the text
            free |= {name for name in _FIXTURES if re.search(rf"\b{name}\b", source)} - bound
            continue
        names = [node for node in ast.walk(tree) if isinstance(node, ast.Name)]
        free |= {n.id for n in names if isinstance(n.ctx, ast.Load)} - bound
        bound |= {n.id for n in names if not isinstance(n.ctx, ast.Load)}
    return free


@pytest.fixture(autouse=True)
def _doctest_fixtures(request: pytest.FixtureRequest, doctest_namespace: dict[str, Any]) -> None:
    """Put the fixtures a docstring example reads into its namespace (nothing for other tests)."""
    if not isinstance(request.node, DoctestItem):
        return
    free = _free_names([example.source for example in request.node.dtest.examples])
    for name, build in _FIXTURES.items():
        if name in free:
            doctest_namespace[name] = build(request)
