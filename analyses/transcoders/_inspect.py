"""Looking at latents: top-activating examples, a summary table, an HTML view, and the modadd
organism's Fourier structure."""

from __future__ import annotations

import html
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

import hooks
from analyses.transcoders._activations import token_mask
from analyses.transcoders._model import Transcoder
from interp.checks import check_number
from interp.fourier import fourier_basis
from interp.models import device_of

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["FeatureReport", "inspect_features", "modadd_fourier"]


def _decoder(model: Any, decode: Callable[[int], str] | None) -> Callable[[int], str]:
    if decode is not None:
        return decode
    tok = getattr(model, "tokenizer", None)
    if tok is not None:
        return lambda i: tok.decode([int(i)])
    return str


@dataclass(frozen=True)
class FeatureReport:
    """Per-latent summary (``table``) and top-activating examples (``examples``) of a transcoder.

    ``table``: one row per latent: ``latent``, ``frequency`` (share of tokens it fires on),
    ``mean_act`` (mean activation when active), ``max_act``, ``top_token`` (the token most often at
    its top examples), ``dec_norm_logit`` (norm of its decoder row through the unembedding, when the
    model has one), sorted by frequency. ``examples``: ``latent``, ``rank``, ``activation``, ``row``,
    ``pos``, ``token``, ``context`` (the sequence up to the token, the token in ⟦brackets⟧).
    Renders as HTML in notebooks (``_repr_html_``); :meth:`save_html` writes a page.
    """

    table: pd.DataFrame
    examples: pd.DataFrame
    title: str = "Transcoder latents"

    def html(self, max_latents: int = 50) -> str:
        """An HTML page fragment: the table, then each latent's examples with activation shading."""
        rows = self.table.head(max_latents)
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in rows.columns)
        body = []
        for _, r in rows.iterrows():
            cells = "".join(f"<td>{_fmt(v)}</td>" for v in r.values)
            body.append(f"<tr>{cells}</tr>")
        cards = []
        for latent in rows["latent"]:
            ex = self.examples[self.examples["latent"] == latent]
            top = max(float(ex["activation"].max()), 1e-12) if len(ex) else 1.0
            lines = []
            for _, e in ex.iterrows():
                alpha = max(0.0, min(1.0, float(e["activation"]) / top))
                lines.append(
                    f"<div><span style='font-family:monospace'>{html.escape(e['context'])}</span> "
                    f"<span style='background:rgba(255,140,0,{alpha:.2f});padding:0 4px'>"
                    f"{float(e['activation']):.3g}</span></div>")
            cards.append(f"<details><summary>latent {int(latent)}</summary>{''.join(lines)}</details>")
        style = "border-collapse:collapse;font-size:12px"
        return (f"<div><h3>{html.escape(self.title)}</h3><table style='{style}' border='1'>"
                f"<tr>{head}</tr>{''.join(body)}</table>{''.join(cards)}</div>")

    def _repr_html_(self) -> str:
        return self.html()

    def save_html(self, path: Any, max_latents: int = 200) -> Any:
        from pathlib import Path

        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"<!doctype html><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                     f"{self.html(max_latents)}")
        return p


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    return html.escape(str(v))


@torch.no_grad()
def inspect_features(
    model: Any,
    task: Any,
    transcoder: Transcoder,
    *,
    latents: Sequence[int] | None = None,
    n_examples: int = 10,
    split: str = "test",
    eval_rows: int | None = 1024,
    context: int = 8,
    batch_size: int = 256,
    decode: Callable[[int], str] | None = None,
) -> FeatureReport:
    """Top-activating examples and a summary of ``latents`` (``None``: every latent that fires).

    Activations are read on ``eval_rows`` rows of ``split``,
    ``batch_size`` rows per forward, at the transcoder's ``positions``; a token's context is the
    ``context`` tokens before it. ``decode(id) -> str`` names tokens (default: the
    model's tokenizer, else the id).
    """
    import pandas as pd

    decode = _decoder(model, decode)
    device = device_of(model)
    layer = transcoder.layer
    data = task.tensors(split, rows=eval_rows)
    ids_all = data["input_ids"].long()
    point = hooks.mlp_in(layer)
    acts, where = [], []
    for start in range(0, len(ids_all), batch_size):
        batch = {k: v[start : start + batch_size] for k, v in data.items()}
        kw = {"attention_mask": batch["attention_mask"].to(device)} if "attention_mask" in batch else {}
        x = hooks.capture(model, batch["input_ids"].long().to(device), [point], **kw)[point]
        mask = token_mask(batch, transcoder.config.positions).to(x.device)
        acts.append(transcoder.encode(x[mask].float()).cpu())
        r, p = mask.nonzero(as_tuple=True)
        where.append(torch.stack([r.cpu() + start, p.cpu()], 1))
    z, loc = torch.cat(acts), torch.cat(where)
    fires = z > 0
    freq = fires.float().mean(0)
    if latents is None:
        latents = freq.nonzero().flatten().tolist()
    latents = [int(i) for i in latents]
    bad = [i for i in latents if not 0 <= i < transcoder.n_latents]
    if bad:
        raise ValueError(f"latents {bad} outside 0 … {transcoder.n_latents - 1}.")
    ex_rows, tab_rows = [], []
    w_u = _unembed(model)
    for i in latents:
        col = z[:, i]
        n = min(n_examples, int(fires[:, i].sum()))
        top = col.topk(n).indices if n else torch.zeros(0, dtype=torch.long)
        tokens = []
        for rank, t in enumerate(top.tolist()):
            row, pos = loc[t].tolist()
            seq = ids_all[row, max(0, pos - context) : pos + 1].tolist()
            tok = decode(seq[-1])
            tokens.append(tok)
            ctx = " ".join(decode(s) for s in seq[:-1]) + f" ⟦{tok}⟧"
            ex_rows.append({"latent": i, "rank": rank, "activation": float(col[t]), "row": row, "pos": pos,
                            "token": tok, "context": ctx.strip()})
        active = col[fires[:, i]]
        entry = {"latent": i, "frequency": float(freq[i]),
                 "mean_act": float(active.mean()) if len(active) else float("nan"),
                 "max_act": float(col.max()), "top_token": Counter(tokens).most_common(1)[0][0] if tokens else ""}
        if w_u is not None:
            entry["dec_norm_logit"] = float((transcoder.W_dec[i].float() @ w_u).norm())
        tab_rows.append(entry)
    table = pd.DataFrame(tab_rows)
    if len(table):
        table = table.sort_values("frequency", ascending=False, kind="stable").reset_index(drop=True)
    examples = pd.DataFrame(ex_rows, columns=["latent", "rank", "activation", "row", "pos", "token", "context"])
    return FeatureReport(table, examples, title=f"Transcoder latents, layer {layer}")


def _unembed(model: Any) -> Tensor | None:
    w = getattr(model, "W_U", None)
    if w is None:
        return None
    try:
        return w.detach().float()
    except AttributeError:  # pragma: no cover - a property that is not a tensor
        return None


# --------------------------------------------------------------------------------------- Fourier
def _key_frequency_fraction(energy: Tensor, freqs: Tensor, n_freq: int) -> tuple[Tensor, Tensor]:
    """(best frequency k ≥ 1, share of the non-constant energy in it) per row of ``energy``."""
    per = torch.stack([energy[:, freqs == k].sum(1) for k in range(1, n_freq + 1)], 1)
    total = energy.sum(1, keepdim=True).clamp(min=1e-30)
    share, best = (per / total).max(1)
    return best + 1, share


@torch.no_grad()
def modadd_fourier(model: Any, transcoder: Transcoder, p: int | None = None, *,
                   equals_token: int | None = None) -> pd.DataFrame:
    """Frequencies of a transcoder's latents on a modular-addition model (Nanda et al. 2023), such as
    the ``modadd`` organism: inputs ``a b = c`` with numbers ``0 … p−1`` and ``=`` a token of its own.

    ``p`` defaults to ``d_vocab − 1`` (numbers, then ``=``) and ``equals_token`` to ``p``; give both
    for another vocabulary layout. On every pair (a, b) at the ``=`` position, with the orthonormal
    Fourier basis F of ℤ_p (:func:`fourier_basis`) and f(i) the frequency of basis row i:

    - ``input_freq`` / ``input_share``: the latent's pre-activation P[a, b] as a 2-D function,
      C = F P Fᵀ; the frequency k maximising the share of Σ C² (without the constant C₀₀) on
      {(i, j): f(i), f(j) ∈ {0, k}} ("reads one frequency");
    - ``output_freq`` / ``output_share``: the decoder row through the unembedding, a function of the
      answer c, its 1-D spectrum's best frequency and that frequency's share ("writes one frequency");
    - ``activation_freq`` / ``activation_share``: as the input, for the (sparse) activation itself;
    - ``live``: fires on some pair; ``frequency``: share of pairs it fires on.
    """
    import pandas as pd

    p = int(model.cfg.d_vocab) - 1 if p is None else p
    check_number("modadd_fourier", "p", p, integer=True, minimum=3, fix="The modulus, e.g. p=59.")
    eq = p if equals_token is None else equals_token
    check_number("modadd_fourier", "equals_token", eq, integer=True, zero_ok=True, maximum=model.cfg.d_vocab - 1,
                 fix="The id of the '=' token in this model's vocabulary.")
    layer = transcoder.layer
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    ids = torch.stack([a.flatten(), b.flatten(), torch.full((p * p,), eq), (a + b).flatten() % p], 1)
    point = hooks.mlp_in(layer)
    x = hooks.capture(model, ids.to(device_of(model)), [point], pos=2)[point][:, 0].float()
    pre = transcoder.pre_activations(x)
    z = transcoder.encode(x)
    basis = fourier_basis(p).to(x.device)
    freqs = torch.tensor([0] + [(i + 1) // 2 for i in range(1, p)], device=x.device)
    n_freq = (p - 1) // 2

    def grid_share(v: Tensor) -> tuple[Tensor, Tensor]:
        grid = v.T.reshape(-1, p, p)
        c2 = torch.einsum("ia,nab,jb->nij", basis, grid, basis).pow(2)
        c2[:, 0, 0] = 0
        total = c2.sum((1, 2)).clamp(min=1e-30)
        per = []
        for k in range(1, n_freq + 1):
            sel = (freqs == 0) | (freqs == k)
            per.append(c2[:, sel][:, :, sel].sum((1, 2)))
        share, best = (torch.stack(per, 1) / total[:, None]).max(1)
        return best + 1, share

    in_f, in_s = grid_share(pre)
    act_f, act_s = grid_share(z)
    w_u = _unembed(model)
    if w_u is None:
        raise ValueError("modadd_fourier needs the model's unembedding W_U.")
    logits = transcoder.W_dec.float() @ w_u[:, :p]  # [latents, p]
    coef2 = (logits @ basis.T).pow(2)
    coef2[:, 0] = 0
    out_f, out_s = _key_frequency_fraction(coef2, freqs, n_freq)
    fires = (z > 0).float().mean(0)
    return pd.DataFrame({
        "latent": range(transcoder.n_latents), "live": (fires > 0).tolist(), "frequency": fires.tolist(),
        "input_freq": in_f.tolist(), "input_share": in_s.tolist(),
        "output_freq": out_f.tolist(), "output_share": out_s.tolist(),
        "activation_freq": act_f.tolist(), "activation_share": act_s.tolist(),
    })
