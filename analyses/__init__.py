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
- ``LLC`` (``analyses.llc``): weight-restricted learning coefficients of heads, MLPs or hypotheses;
  ``estimate_node_llcs`` for the nodes of a causal-scrubbing hypothesis, beside its verdict.
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

from typing import TYPE_CHECKING

from hooks._lazy import attach

# The public names, listed once: type checkers read these imports; at run time `attach` reads the
# same block and imports each analysis on first use of its name.
if TYPE_CHECKING:  # pragma: no cover
    from analyses.ablation import HeadAblation, ablate_heads
    from analyses.circuit_tests import (
        CircuitTests, assess_claim, estimate_node_inclusion, evaluate_circuit,
    )
    from analyses.llc import LLC, estimate_node_llcs, node_components
    from analyses.norms import ResidualNorms, profile_norms
    from analyses.probing import FrozenProbe, RefitProbe, probe
    from analyses.scrubbing import CausalScrubbing
    from analyses.transcoders import SparseMLP, evaluate_transcoder

__getattr__, __dir__, __all__ = attach(__name__, __file__)
