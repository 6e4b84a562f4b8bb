"""Sparse-MLP replacement (transcoders): train, splice, measure and inspect, on trained and degraded weights.

A transcoder replaces block l's MLP by a wider, sparsely active one that imitates it (Dunefsky, Chlenski
& Nanda 2024, "Transcoders find interpretable LLM feature circuits", arXiv:2406.11944). It reads the
MLP's input x = ``blocks.{l}.mlp.hook_in`` (after LayerNorm, γ/β applied) and predicts the MLP's
output y = ``blocks.{l}.hook_mlp_out``:

    z = σ(W_enc x + b_enc) ∈ ℝ^L,    ŷ = W_decᵀ z + b_dec (+ W_skip x),   ‖W_dec[i]‖ = 1

with σ = ReLU ∘ TopK_k (Gao et al. 2024, "Scaling and evaluating sparse autoencoders",
arXiv:2406.04093: exactly k latents active, so L0 is a setting, not a result, which is what comparing
dictionaries across weight samples needs) or, as the baseline, σ = ReLU with an L1 penalty
λ Σ_i z_i / σ_y. Training minimises the normalised MSE ‖y − ŷ‖² / E‖y − ȳ‖² plus, for TopK, the AuxK
loss α‖e − ê‖² / ‖e − ē‖² in which latents that have not fired for ``dead_tokens`` tokens
reconstruct the residual e = y − ŷ with their top-k_aux pre-activations (α = 1/32, Gao et al.).
Activations stream from the task through a shuffling buffer; training is deterministic given the
init seed and the data-order seed. The TopK path never materialises the dense code in the backward
pass: the k chosen pre-activations are gathered with a sparse backward (``torch.sparse.mm``) and
decoded with ``embedding_bag`` (``benchmarks/bench_transcoders.py`` measures it against the
straightforward dense implementation).

Splicing (:func:`splice`) uses :func:`hooks.splice`: one forward reads ``mlp_in`` and replaces
``mlp_out`` by ŷ; the error-node variant ŷ + (y − ŷ).detach() keeps the model's value and routes
gradients through the transcoder. Faithfulness (:func:`evaluate_transcoder`): FVU on held-out
tokens, L0, dead and dense fractions, spliced loss and KL(p_clean ‖ p_spliced) against zero- and
mean-ablation of the MLP, loss recovered (L_zero − L_spliced) / (L_zero − L_clean) shown beside the
spliced loss and top-1 accuracy it summarises (:meth:`TranscoderMetrics.table`), the MLP's own
linear-regression FVU, and a neuron-copy check (max cosine of encoder rows to the MLP's W_in).
Inspection (:func:`inspect_features`): top-activating examples with context, a per-latent table
(pandas) and an HTML view (renders in notebooks); :func:`modadd_fourier` gives each latent's input
and output frequency on the ``modadd`` organism (Nanda et al. 2023).

Across degradation (:class:`SparseMLP`; docs/science.md, "Transcoders"): a transcoder trained on the clean MLP is not a
faithful replacement of a degraded one, so each draw gets a warm-started refit measured against its
own MLP, the clean transcoder is also applied unchanged ("cross-application"), and dictionaries are
matched by decoder cosine against a same-init, different-data-order baseline.

Why by hand: SAELens pins ``transformer-lens<4`` (it does not run on TransformerLens 4's
``TransformerBridge``) and has removed transcoder training.

Example (skipped as a docstring example: training takes tens of seconds even at 50 steps on a
shared CPU; ``tests/analyses/test_transcoders.py`` trains, evaluates and saves transcoders of this
organism)::

    >>> import interp
    >>> from analyses.transcoders import TranscoderConfig, train_transcoder, evaluate_transcoder
    >>> model, task = interp.organisms.load("modadd")
    >>> tc = train_transcoder(model, task, 0, TranscoderConfig(n_latents=512, k=32, steps=600))  # doctest: +SKIP
    >>> m = evaluate_transcoder(model, task, tc)                                     # doctest: +SKIP
    >>> m.loss_recovered > 0.9 and m.l0 <= 32                                        # doctest: +SKIP
    True
    >>> tc.save("modadd_l0")            # modadd_l0.safetensors + modadd_l0.json      # doctest: +SKIP
"""

from analyses.transcoders._analysis import MATCH_THRESHOLDS, SparseMLP
from analyses.transcoders._inspect import FeatureReport, inspect_features, modadd_fourier
from analyses.transcoders._metrics import (
    TranscoderMetrics,
    evaluate_transcoder,
    evaluate_transcoders,
    linear_fvu,
    match_features,
    mlp_in_weight,
    neuron_copy,
    splice,
)
from analyses.transcoders._model import SPARSE_DECODE_MIN_LATENTS, Transcoder, TranscoderConfig, load_transcoder
from analyses.transcoders._activations import ActivationBuffer, mlp_activations, token_mask
from analyses.transcoders._train import train_transcoder

__all__ = [
    "Transcoder",
    "TranscoderConfig",
    "load_transcoder",
    "train_transcoder",
    "ActivationBuffer",
    "mlp_activations",
    "token_mask",
    "splice",
    "TranscoderMetrics",
    "evaluate_transcoder",
    "evaluate_transcoders",
    "linear_fvu",
    "neuron_copy",
    "match_features",
    "mlp_in_weight",
    "FeatureReport",
    "inspect_features",
    "modadd_fourier",
    "SparseMLP",
    "MATCH_THRESHOLDS",
    "SPARSE_DECODE_MIN_LATENTS",
]
