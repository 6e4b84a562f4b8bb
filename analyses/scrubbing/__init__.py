"""Causal scrubbing (Chan et al., Redwood Research 2022) on TransformerLens 4 bridges.

A :class:`Hypothesis` says which writes into the residual stream (embeddings, heads, MLPs; optionally
only at some positions or in a subspace) the model's output depends on, and for each the inputs on
which it is claimed to behave the same (:class:`Agree`: exact, unconditional, same value of a function
of the input such as "same token at position t − 1"). Scrubbing replaces every claimed input by one
resampled from its class and everything unclaimed by a random input, each path with its own input
(treeification), and asks how much of the loss survives:

    recovered = (L_baseline − L_scrubbed) / (L_baseline − L_clean)

reported together with KL(clean ‖ scrubbed), which cannot cancel, cancellation flags, intervals over
reference draws and seeds, and a flag when the ratio is meaningless (docs/science.md, "Causal scrubbing";
:func:`summarize`). :class:`CausalScrubbing` is an ``Analysis`` for ``interp.run_sweep``;
:func:`scrub_graph` runs the same algorithm on a small non-transformer graph of functions;
:mod:`analyses.scrubbing.induction` has ready-made hypotheses for the induction organism and for
its hand-compiled twin :mod:`interp.organisms.compiled`, whose circuit is known by construction
(the true hypothesis recovers 100%, the false ones 0.15–0.24).

Hand-written: no maintained implementation exists for TransformerLens 4.

Example::

    >>> import interp
    >>> from analyses.scrubbing import CausalScrubbing
    >>> from analyses.scrubbing.induction import hypotheses
    >>> model, task = interp.organisms.load("induction", n_train=256, n_test=256)
    >>> a = CausalScrubbing(hypotheses()["correct"], eval_rows=128, seeds=2)
    >>> a.setup(model, task); m = a(model, task)
    >>> m["recovered"] > 0.9, m["flag_cancellation"]
    (True, 0.0)
"""

from analyses.scrubbing._analysis import CausalScrubbing
from analyses.scrubbing._engine import Groups, Scrubber
from analyses.scrubbing._graph import Graph, GraphHypothesis, scrub_graph
from analyses.scrubbing._hypothesis import MLP, Embed, Head, Hypothesis, Node, PosEmbed, VacuousRuleWarning
from analyses.scrubbing._metrics import summarize
from analyses.scrubbing._rules import EXACT, UNCONDITIONAL, Agree, QueryOffset

__all__ = [
    "Agree",
    "EXACT",
    "UNCONDITIONAL",
    "Node",
    "Embed",
    "PosEmbed",
    "Head",
    "MLP",
    "Hypothesis",
    "QueryOffset",
    "VacuousRuleWarning",
    "CausalScrubbing",
    "Scrubber",
    "Groups",
    "summarize",
    "Graph",
    "GraphHypothesis",
    "scrub_graph",
]
