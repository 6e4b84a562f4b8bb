"""Residual-stream norms per layer and position (Heimersheim & Turner 2023), as a sweep analysis.

What is measured. For a pre-LN transformer with residual stream x_0 (embeddings), x_{l+1} = x_l + a_l +
m_l (a_l, m_l: what block l's attention and MLP write), the L2 norm ‖x_l(b, t)‖ of ``resid_pre(l)``
for every block and of the final ``resid_post`` (stream points ``L0 … Ln``), over a task's tokens:
mean, median, quantiles (``mean_L{l}``, ``median_L{l}``, ``q5_L{l}``, …), the mean squared norm
(``msq_L{l}``), the ratio of consecutive means (``ratio_L{l}`` = mean_L{l} / mean_L{l-1}) and, on
request, the mean at single positions (``mean_L{l}_pos{t}``). Tokens: the first ``skip_positions``
*real* tokens of each row are excluded (position 0 / BOS by default: its norm follows a different
law) and padding (``attention_mask == 0``) is excluded and masked in the forward. Everything is
streamed batch by batch: only per-token scalars are kept, never a cache of activations.

Attribution of growth. Each component's write norm (``attn_write_L{l}`` = mean ‖a_l‖,
``mlp_write_L{l}`` = mean ‖m_l‖, read at ``hooks.attn_out``/``hooks.mlp_out``, the raw writes before
any residual add or LayerNorm on every architecture) and the change of squared norm it causes,

    ‖x + a‖² − ‖x‖² = 2⟨x, a⟩ + ‖a‖²     (``attn_dsq_L{l}``; ``mlp_dsq_L{l}`` likewise for m on x + a),

so that for a pre-LN model msq_L{l+1} − msq_L{l} = attn_dsq_L{l} + mlp_dsq_L{l} exactly (up to float
rounding). The decomposition is checked on the first batch; an architecture where it does not hold is
an error, not a quiet number. Weight norms that explain write norms (Heimersheim & Turner: ‖W_OV‖_F
tracks attention-output norms): ``wov_L{l}`` = (Σ_h ‖W_V^h W_O^h‖_F²)^½, ``wout_L{l}`` = ‖W_out‖_F, and
``param_norm`` (all parameters, de-duplicated by storage).

Growth factor. g = exp(s), s the least-squares slope of log mean_L{l} against l over the stream
points ``fit_from … fit_to`` (reported), with the fit's R² (``growth``, ``growth_r2``). A random-init
pre-LN model grows *diffusively*: each write is roughly independent of the stream it is added to and,
its input being LayerNorm-ed, of the same expected size c at every layer, so E‖x_l‖² ≈ ‖x_0‖² + c·l
(linear in l), not exponentially; trained models depart from this.

Coordinates. Raw model weights (what the degradations perturb), stated in the output as
``folded = 0``. ``coordinates="folded"`` measures the HookedTransformer view (LayerNorm folded, writing
weights centred: TL4's ``enable_compatibility_mode()``), which is what published numbers use, on a
*copy* rebuilt from the model's config and state dict (native bridges) or a deep copy checked to
share neither parameters nor hooks with the original; the user's model is never folded. Centring the
writing weights makes the stream the per-token centred raw stream, x − mean(x)·1, which the tests check.

Post-LN models (BERT, MiniLM; ``hooks.is_post_ln``). There ``resid_pre/resid_post`` are LayerNorm
outputs whose norm is set by the LN gains (≈ √d_model at random init), so the stream points ``L{l}``
are the *pre-LN sums* instead: ``L0`` the embedding sum (``embed_ln.hook_in``), ``L{l+1}`` block l's
sum before its last LayerNorm (``blocks.{l}.ln2.hook_in``); ``mid_mean_L{l}`` is the sum before the
attention LayerNorm (``blocks.{l}.ln1.hook_in``). The LayerNorm outputs are reported as
``ln_mean_L{l}``/``ln_median_L{l}``, dsq is relative to the LN output the write is added to, the
growth fit starts at L1 (L0 is not a sum of an LN output and a write), and ``post_ln = 1`` is in the
output with a note logged at setup (``ResidualNorms.notes_``). TL 4.3 caveat checked here: on BERT,
TransformerLens' own ``hook_attn_out`` holds residual + attention after LayerNorm; ``hooks.attn_out``
resolves to the raw attention write (``attn.o.hook_out``), which is what is measured.

Stated in every output: ``skip_positions``, ``post_ln``, ``folded``, ``n_tokens``, ``fit_from``,
``fit_to``. Plots (matplotlib imported lazily): :func:`plot_norms_by_layer` (norm vs layer, one line
per draw coloured by loss increase) and :func:`plot_growth` (growth factor vs loss increase, or vs
checkpoint step with ``x="level"``).

Why hand-written: TL4 has no norm-tracking utility and published code (Heimersheim & Turner) runs
``run_with_cache`` on folded HookedTransformers; this streams on raw bridges and handles post-LN.

Example::

    >>> import interp
    >>> from analyses.norms import ResidualNorms
    >>> model, task = interp.organisms.load("induction")
    >>> norms = ResidualNorms(); norms.setup(model, task)
    >>> out = norms(model, task)
    >>> out["skip_positions"], out["post_ln"], out["folded"]
    (1.0, 0.0, 0.0)
    >>> from analyses.norms import profile_norms                   # one shot, per-token values
    >>> prof = profile_norms(model, task, eval_rows=64)
    >>> prof.per_position("L2").shape
    torch.Size([33])
"""

from analyses.norms._analysis import ResidualNorms
from analyses.norms._plot import plot_growth, plot_norms_by_layer
from analyses.norms._profile import (
    NormProfile,
    _layout,
    _log_linear_fit,
    folded_copy,
    log_linear_fit,
    profile_norms,
)

__all__ = [
    "NormProfile",
    "ResidualNorms",
    "folded_copy",
    "log_linear_fit",
    "profile_norms",
    "plot_growth",
    "plot_norms_by_layer",
]
