"""analyses: interpretability analyses that run on trained and on degraded weights.

Every analysis follows one protocol (``interp.analysis.Analysis``; docs/design.md): ``setup(model, task)``
runs once on the clean weights (fit a probe, compute ablation means, train a sparse MLP) and
``__call__(model, task)`` returns ``dict[str, float]`` at the baseline and at every draw of a
degradation, reporting where it makes sense both its *effect* and its *collateral*. Analyses
intervene only through ``hooks``.

- ``CausalScrubbing`` (``analyses.scrubbing``): test a circuit hypothesis by resampling ablations.
- ``HeadAblation`` (``analyses.ablation``): loss carried by a set of heads, KL where nothing is claimed.
- ``ResidualNorms`` (``analyses.norms``): residual-stream norms per layer, writes, growth factor.
- ``probe``, ``FrozenProbe``, ``RefitProbe`` (``analyses.probing``): linear probes per layer with
  controls and causal checks; frozen (fitted on w0) and refitted on every draw.
- ``SparseMLP`` (``analyses.transcoders``): a transcoder replacing one MLP, followed across draws.
- ``LLC`` (``analyses.llc``): weight-restricted learning coefficients of heads, MLPs or hypotheses.
- ``CircuitTests`` (``analyses.circuit_tests``): Shi et al.'s hypothesis tests of a circuit claim
  (equivalence, independence, minimality, sufficiency, partial necessity) and MIB's CPR/CMD, per
  draw; ``assess_claim`` and ``estimate_node_inclusion`` read them over draws.

One-shot function and sweep analysis come in pairs: ``probe`` / ``FrozenProbe``, ``profile_norms`` /
``ResidualNorms``, ``evaluate_transcoder`` / ``SparseMLP``, ``ablate_heads`` / ``HeadAblation``.
Every analysis takes explicit keyword arguments stored unchanged (``repr`` shows them), keeps what
``setup`` fits in attributes ending in ``_``, and names rows per forward ``batch_size`` and
evaluation rows ``eval_rows``.

Importing ``analyses`` is cheap; each analysis loads on first use of its name.

Example::

    >>> import analyses
    >>> analyses.HeadAblation(heads=[(1, 0)]).effects
    ('loss_carried',)
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "CausalScrubbing": "analyses.scrubbing",
    "CircuitTests": "analyses.circuit_tests",
    "assess_claim": "analyses.circuit_tests",
    "estimate_node_inclusion": "analyses.circuit_tests",
    "evaluate_circuit": "analyses.circuit_tests",
    "FrozenProbe": "analyses.probing",
    "HeadAblation": "analyses.ablation",
    "LLC": "analyses.llc",
    "RefitProbe": "analyses.probing",
    "ResidualNorms": "analyses.norms",
    "SparseMLP": "analyses.transcoders",
    "ablate_heads": "analyses.ablation",
    "evaluate_transcoder": "analyses.transcoders",
    "profile_norms": "analyses.norms",
    "probe": "analyses.probing",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'analyses' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
