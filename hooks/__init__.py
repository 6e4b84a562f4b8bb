"""hooks: hook-based intervention primitives on TransformerLens 4 ``TransformerBridge``s.

One noun and one verb: a :class:`Hook` ``(point, fn)`` and :func:`apply`, a context manager that
removes exactly the hooks it added, even on error or ``KeyboardInterrupt``. ``fn`` is
``fn(activation)`` or, as in TransformerLens's ``run_with_hooks``, ``fn(activation, hook)`` (editing
in place and returning ``None`` works too). :func:`capture` returns a
plain dict of activations. Interventions (:func:`zero_ablate`, :func:`mean_ablate`,
:func:`resample_ablate`, :func:`patch`, :func:`steer`, :func:`project_out`, :func:`splice`) return
``Hook``s. Point helpers (:func:`resid_pre`, :func:`attn_out`, :func:`mlp_in`, :func:`head_out`, ...)
name the same places on native, GPT-2-style and BERT bridges; per-head outputs are computed from
``hook_z`` and ``W_O`` everywhere (``head_out_h = z_h W_O[h]``, Elhage et al. 2021).

Importing ``hooks`` does not import TransformerLens.

Example::

    >>> import torch, hooks
    >>> from transformer_lens.model_bridge import TransformerBridge
    >>> from transformer_lens.config import TransformerBridgeConfig
    >>> model = TransformerBridge.boot_native(TransformerBridgeConfig(
    ...     d_model=16, d_head=4, n_layers=2, n_ctx=8, n_heads=4, d_vocab=10, seed=0)).eval()
    >>> tokens = torch.tensor([[1, 2, 3, 4], [4, 3, 2, 1]])
    >>> clean = hooks.capture(model, tokens, [hooks.head_out(0, 1), hooks.attn_out(0)])
    >>> with hooks.apply(model, [hooks.zero_ablate(hooks.head_out(0, 1))]):
    ...     ablated = hooks.capture(model, tokens, [hooks.attn_out(0)])
    >>> expected = clean[hooks.attn_out(0)] - clean[hooks.head_out(0, 1)]
    >>> torch.allclose(ablated[hooks.attn_out(0)], expected, atol=1e-6)
    True
"""

from typing import TYPE_CHECKING

from hooks._lazy import attach

# The public names, listed once: type checkers read these imports; at run time `attach` reads the
# same block and loads each module on first access, so that `import hooks` does not import torch
# (about 1.3 s) until a hook is actually used.
if TYPE_CHECKING:  # pragma: no cover
    from hooks._capture import Selection, capture
    from hooks._hook import EditIgnoredError, Hook, HookFn, apply
    from hooks._interventions import (
        mean_ablate, orthonormal_basis, patch, project_out, resample_ablate, splice, steer, zero_ablate,
    )
    from hooks._points import (
        PointError, Resolved, attn_out, attn_pattern, attn_z, embed, head_out, is_post_ln, logits,
        mlp_in, mlp_out, mlp_post, resid_mid, resid_post, resid_pre, resolve, valid_points,
    )

__getattr__, __dir__, __all__ = attach(__name__, __file__)
