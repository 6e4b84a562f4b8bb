"""Linear probing of the residual stream, with controls, baselines, causal checks and sweep analyses.

What a probe result needs before it means anything (REFERENCE.md §5):

* **Held-out groups.** Probes are fitted on the task's ``train`` split and scored on ``test``; for the
  MiniLM organism those hold disjoint nouns, so accuracy is on unseen *words*. The regularisation
  strength λ is chosen by K-fold cross-validation over *groups* (``group`` column) inside ``train``.
  Accuracy comes with a 95% Wilson score interval (Wilson 1927):
  ``(p̂ + z²/2n ± z·sqrt(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n)``.
* **Control task and selectivity** (Hewitt & Liang 2019, arXiv:1909.03368): every input *type* (a word
  form, a token) gets a random label drawn from the task's label distribution; the same probe family
  is fitted to the task and to the control on one random row split where types recur (train and test
  splits pooled), and ``selectivity = task accuracy − control accuracy``. Selectivity depends on probe
  capacity, so it is computed over the whole λ grid; the headline is the most selective λ. A warning is
  logged when the number of types is not much larger than d_model (the control can be memorised).
* **Baselines**: the majority class, a *position-only* probe (one-hot of the probed position: catches
  templates that put the label at a fixed position), and the embedding layer (layer 0 of the curve).
* **Directions**: cos(ridge direction, difference-of-means direction) per site (binary labels).

Probe families. Sweeps over layers × positions × weight draws use closed forms batched over sites in
torch: ridge regression onto one-hot labels, ``W = (AᵀA + λn·P)⁻¹AᵀY`` with ``A`` the standardised
activations plus a ones column (``P`` leaves the intercept unpenalised), solved by Cholesky (batched
``torch.linalg.solve`` on CPU is unreliable, pytorch#142815); cross-validating λ costs one Gram matrix,
since each fold's training Gram is ``G − G_k``. Difference-of-means (nearest class mean) is cheaper
still. For the few sites that matter, :func:`fit_logistic` fits scikit-learn's ``LogisticRegression``
with C chosen on held-out groups (threads limited with ``threadpoolctl``: BLAS oversubscription on a
busy box costs 10×). All probes are multi-class.

Causal check (:func:`causal_check`): a probe can read a property the model never uses (Ravichander et
al. 2021; Elazar et al. 2021), so the concept is erased at a site with LEACE (Belrose et al. 2023,
arXiv:2306.03819; ``concept-erasure`` package) or by mean-projection, against random subspaces of the
same rank, and the activation is steered along the difference-of-means direction (Turner et al.
2023) against random directions of equal norm, while a *behaviour* the property should drive is
measured: next-token loss for a causal model (:func:`loss_behaviour`), the sentence embedding's
readout of the property for MiniLM (:class:`SentenceReadout`).

Sweep analyses: :class:`FrozenProbe` (fitted once on the clean weights, evaluated at each draw:
representational drift) and :class:`RefitProbe` (refitted at each draw: is the information still
there). Layer ``l < n_layers`` is ``resid_pre(l)`` (layer 0 = the embedding), layer ``n_layers`` is the
final ``resid_post``. In post-LN models (MiniLM) these are LayerNorm outputs, which is what the next
block reads.

Example::

    >>> import interp
    >>> from analyses.probing import ProbeConfig, probe, token_at
    >>> model, task = interp.organisms.load("minilm")                      # doctest: +SKIP
    >>> cfg = ProbeConfig(label="label", positions=("sep_pos",), group="noun",
    ...                   control_type=token_at("noun_pos"))
    >>> report = probe(model, task, cfg)                                    # doctest: +SKIP
    >>> report.table()[["site", "accuracy", "control", "selectivity"]]      # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import torch
from jaxtyping import Float, Int
from torch import Tensor

import hooks
from interp.checks import bad_value, check_number

__all__ = [
    "ProbeConfig",
    "ProbeData",
    "ProbeReport",
    "RidgeProbe",
    "MeanProbe",
    "LogisticProbe",
    "BatchedLogisticProbe",
    "fit_logistic_batched",
    "CausalCheck",
    "SentenceReadout",
    "FrozenProbe",
    "RefitProbe",
    "token_at",
    "occurred_before",
    "fourier_component",
    "token_class",
    "principal_split",
    "probe_data",
    "probe",
    "fit_ridge",
    "fit_diffmeans",
    "fit_logistic",
    "wilson_interval",
    "control_labels",
    "loss_behaviour",
    "causal_check",
    "plot_probe",
    "layer_point",
]

log = logging.getLogger(__name__)

DEFAULT_LAMS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


# ============================================================================================ labels
class token_at:
    """Control-task type: the token id at the position given by a column (e.g. the subject noun)."""

    def __init__(self, column: str):
        self.column = column

    def __call__(self, data: dict[str, Tensor]) -> Int[Tensor, "rows"]:
        ids, pos = data["input_ids"], data[self.column].long()
        return ids[torch.arange(len(ids)), pos]

    def __repr__(self) -> str:
        return f"token_at({self.column!r})"


class occurred_before:
    """Per-token label: 1 where the current token occurred earlier in the sequence, else 0.

    Positions before ``start`` (e.g. BOS) and from ``stop`` on are not probed (label −1). In the
    induction organism a position ``t ≥ 1 + period`` is always a repeat, so probe the positions where
    position alone does not decide it (``start=5, stop=16`` for periods 4–14).
    """

    def __init__(self, start: int = 1, stop: int | None = None):
        self.start, self.stop = int(start), stop

    def __call__(self, data: dict[str, Tensor]) -> Int[Tensor, "rows pos"]:
        ids = data["input_ids"]
        same = ids[:, :, None] == ids[:, None, :]  # [b, t, s]
        earlier = torch.ones(ids.shape[1], ids.shape[1], dtype=torch.bool).tril(-1)
        y = (same & earlier).any(-1).long()
        y[:, : self.start] = -1
        if self.stop is not None:
            y[:, self.stop :] = -1
        return y

    def __repr__(self) -> str:
        return f"occurred_before(start={self.start}, stop={self.stop})"


class fourier_component:
    """Row label for modadd: ``1[cos(2πk·(a + b)/p) > 0]`` (the sign of one Fourier component)."""

    def __init__(self, k: int, p: int = 59):
        self.k, self.p = int(k), int(p)

    def __call__(self, data: dict[str, Tensor]) -> Int[Tensor, "rows"]:
        c = (data["a"] + data["b"]).double()
        return (torch.cos(2 * math.pi * self.k * c / self.p) > 0).long()

    def __repr__(self) -> str:
        return f"fourier_component(k={self.k}, p={self.p})"


class token_class:
    """Per-token label: the class ``classes[ids[t + offset]]`` of the token ``offset`` positions away.

    ``offset=0``: the current token; ``−1``: the previous token (what a previous-token head moves);
    ``−2``: the one before; ``+1``: the next token, which in the induction organism is the induction
    target (probe it with ``scored=True``: only positions whose next token is a scored target,
    ``target_mask[t + 1] = 1``). Positions before ``start``, positions whose source falls outside
    the sequence and tokens without a class (ids ≥ ``len(classes)``, e.g. BOS) are not probed (−1).
    ``classes`` is typically a two-way split of the vocabulary, e.g. :func:`principal_split`.
    """

    def __init__(self, classes: Int[Tensor, "vocab"], offset: int = 0, start: int = 1, scored: bool = False):
        self.classes = torch.as_tensor(classes).long()
        self.offset, self.start, self.scored = int(offset), int(start), bool(scored)
        if self.scored and self.offset != 1:
            raise ValueError(f"scored=True needs offset=1 (the next token is the target); got offset={offset}.")

    def __call__(self, data: dict[str, Tensor]) -> Int[Tensor, "rows pos"]:
        ids = data["input_ids"].long()
        length, o, v = ids.shape[1], self.offset, len(self.classes)
        src = torch.full_like(ids, -1)
        if o >= 0:
            src[:, : length - o] = ids[:, o:]
        else:
            src[:, -o:] = ids[:, : length + o]
        y = torch.where((src >= 0) & (src < v), self.classes[src.clamp(0, v - 1)], -1)
        y[:, : self.start] = -1
        if self.scored:
            if "target_mask" not in data:
                raise ValueError("scored=True needs a 'target_mask' column (a task with a next-token loss).")
            scored = torch.zeros_like(ids, dtype=torch.bool)
            scored[:, :-1] = data["target_mask"][:, 1:].bool()
            y = torch.where(scored, y, -1)
        return y

    def __repr__(self) -> str:
        return f"token_class(offset={self.offset}, start={self.start}, scored={self.scored})"


def principal_split(vectors: Float[Tensor, "vocab d"]) -> Int[Tensor, "vocab"]:
    """Two balanced classes of rows: above/below the median of their projection on the top principal
    component (e.g. of the token embedding ``W_E``): a vocabulary split the model can represent with
    one direction, unlike an arbitrary split of many tokens in few dimensions (Cover 1965)."""
    v = vectors.detach().float()
    v = v - v.mean(0)
    s = v @ torch.linalg.svd(v, full_matrices=False).Vh[0]
    return (s > s.median()).long()


LabelSpec = Union[str, Callable[[dict], Tensor]]


# ============================================================================================ config
@dataclass(frozen=True)
class ProbeConfig:
    """What to probe, where, and how.

    Args:
        label: a column with one integer label per row, or a callable ``f(data) -> [rows]`` (one
            label per row) or ``-> [rows, pos]`` (one label per token, −1 where not probed).
        positions: for row labels, where to read each row: column names holding a per-row position
            (``"sep_pos"``) or integer positions (``0``, ``-1``). Empty for per-token labels.
        layers: layer indices (0 … n_layers; n_layers is the final ``resid_post``); ``None``: all.
        group: column of group ids (strings or ints) for λ cross-validation on held-out groups;
            ``None``: random rows.
        control_type: the Hewitt & Liang *type* of an example: a column, a callable like
            :class:`token_at`, or ``"token"`` (the token at the probed position).
        lams: ridge penalties λ (on standardised features, per example: ``λ·n``).
        folds: cross-validation folds for λ.
        rows: rows per split (``None``: all).
        batch_size: rows per forward pass.
        seed: control labels, folds and the control split.
        progress: show progress bars.
    """

    label: LabelSpec = "label"
    positions: tuple[Union[str, int], ...] = ()
    layers: tuple[int, ...] | None = None
    group: str | None = None
    control_type: LabelSpec | None = "token"
    lams: tuple[float, ...] = DEFAULT_LAMS
    folds: int = 5
    rows: int | None = None
    batch_size: int = 64
    seed: int = 0
    progress: bool = False

    def __post_init__(self) -> None:
        if not (isinstance(self.label, str) or callable(self.label)):
            raise ValueError(f"label={self.label!r}: give a column name or a callable(data) -> labels.")
        object.__setattr__(self, "positions", tuple(self.positions))
        for p in self.positions:
            if not isinstance(p, (str, int)) or isinstance(p, bool):
                raise ValueError(f"positions entry {p!r}: must be a column name or an int position.")
        c = "ProbeConfig"
        if self.layers is not None:
            if isinstance(self.layers, (str, bytes)) or not isinstance(self.layers, Sequence) or not self.layers:
                raise bad_value(c, "layers", self.layers, "a non-empty sequence of layer indices or None (all)")
            for x in self.layers:
                check_number(c, "layers", x, integer=True, zero_ok=True,
                             fix=f"Give layer indices, e.g. layers=(0, 3); got {self.layers!r}.")
            object.__setattr__(self, "layers", tuple(int(x) for x in self.layers))
        if isinstance(self.lams, (str, bytes)) or not isinstance(self.lams, Sequence) or not self.lams:
            raise bad_value(c, "lams", self.lams, f"a non-empty sequence of ridge penalties > 0, e.g. {DEFAULT_LAMS}")
        for x in self.lams:
            check_number(c, "lams", x,
                         fix=f"Give positive ridge penalties, e.g. {DEFAULT_LAMS}; got {self.lams!r}.")
        object.__setattr__(self, "lams", tuple(float(x) for x in self.lams))
        check_number(c, "folds", self.folds, integer=True, minimum=2, fix="Cross-validation needs at least 2 folds.")
        check_number(c, "rows", self.rows, integer=True, minimum=4, none_ok=True,
                     fix="At least 4 rows per split, or None for all.")
        check_number(c, "batch_size", self.batch_size, integer=True)
        check_number(c, "seed", self.seed, integer=True, zero_ok=True)


# ============================================================================================ data
def layer_point(model: Any, layer: int) -> str:
    """The residual-stream point of probe layer ``layer``: ``resid_pre(l)``, or the final ``resid_post``."""
    n = model.cfg.n_layers
    if not 0 <= layer <= n:
        raise ValueError(f"layer={layer!r}: probe layers run from 0 (embedding) to {n} (final resid_post).")
    return hooks.resid_pre(layer) if layer < n else hooks.resid_post(n - 1)


@dataclass
class ProbeData:
    """Activations of the probed examples at every site, with labels, groups, types and positions.

    ``x[s, i]`` is example ``i`` at site ``s`` (sites: layers × position specs, layer-major).
    """

    x: Float[Tensor, "site n d"]
    y: Int[Tensor, "n"]
    groups: Int[Tensor, "n"]
    types: Int[Tensor, "site n"]
    positions: Int[Tensor, "site n"]
    sites: list[str]
    layers: list[int]
    n_classes: int


def _ids(values: list) -> Tensor:
    """Map arbitrary hashable values (strings, ints) to consecutive integer ids."""
    vocab: dict = {}
    return torch.tensor([vocab.setdefault(v, len(vocab)) for v in values], dtype=torch.long)


def _resolve_label(spec: LabelSpec, data: dict[str, Tensor], split: str) -> Tensor:
    if isinstance(spec, str):
        if spec not in data:
            raise ValueError(f"label column {spec!r} is not a numeric column of split {split!r}; has {sorted(data)}.")
        return data[spec].long()
    return torch.as_tensor(spec(data)).long()


def probe_data(model: Any, task: Any, config: ProbeConfig, split: str = "test") -> ProbeData:
    """Capture the residual stream at every site of ``config`` on one split (one pass per batch)."""
    ds = task.dataset[split]
    n_rows = len(ds) if config.rows is None else min(config.rows, len(ds))
    data = task.tensors(split, rows=n_rows)
    ids = data["input_ids"].long()
    n_layers = model.cfg.n_layers
    layers = list(config.layers) if config.layers is not None else list(range(n_layers + 1))
    points = [layer_point(model, layer) for layer in layers]
    label = _resolve_label(config.label, data, split)
    rows_range = torch.arange(n_rows)

    if label.dim() == 2:  # per-token labels
        if config.positions:
            raise ValueError(
                f"positions={config.positions!r}: a per-token label chooses its own positions (−1 = not "
                "probed); leave positions empty."
            )
        row_idx, pos_idx = (label >= 0).nonzero(as_tuple=True)
        specs = ["tok"]
        pos_per_spec = pos_idx[None]
        y = label[row_idx, pos_idx]
    else:
        if not config.positions:
            raise ValueError("positions=(): a per-row label needs positions to read, e.g. ('sep_pos',) or (-1,).")
        specs, cols = [], []
        for p in config.positions:
            if isinstance(p, str):
                if p not in data:
                    raise ValueError(f"position column {p!r} not in split {split!r}; has {sorted(data)}.")
                cols.append(data[p].long())
            else:
                cols.append(torch.full((n_rows,), p % ids.shape[1], dtype=torch.long))
            specs.append(str(p))
        row_idx = rows_range
        pos_per_spec = torch.stack(cols)  # [spec, rows]
        y = label
    n_spec = len(specs)
    # all (spec, example) pairs flattened, gathered per batch of rows
    all_rows = row_idx.repeat(n_spec)
    all_pos = pos_per_spec.reshape(-1)
    d = model.cfg.d_model
    x = torch.empty(len(layers), len(all_rows), d)
    mask = data.get("attention_mask")
    from tqdm.auto import tqdm

    starts = range(0, n_rows, config.batch_size)
    device = next(model.parameters()).device
    for start in tqdm(starts, desc=f"capture {split}", disable=not config.progress):
        stop = min(start + config.batch_size, n_rows)
        sel = ((all_rows >= start) & (all_rows < stop)).nonzero(as_tuple=True)[0]
        if len(sel) == 0:
            continue
        kw = {} if mask is None else {"attention_mask": mask[start:stop].to(device)}
        acts = hooks.capture(model, ids[start:stop].to(device), points, device="cpu", **kw)
        r, p = all_rows[sel] - start, all_pos[sel]
        for i, pt in enumerate(points):
            x[i, sel] = acts[pt][r, p].float()
    x = x.view(len(layers), n_spec, -1, d).reshape(len(layers) * n_spec, -1, d)
    sites = [f"L{layer}" if specs == ["tok"] else f"L{layer}@{s}" for layer in layers for s in specs]

    if config.group is None:  # rows are the groups: tokens of one sequence stay in one fold
        groups = row_idx.clone()
    else:
        groups = _ids(list(ds.select(range(n_rows))[config.group]))[row_idx]
    if config.control_type is None:
        types = torch.zeros(n_spec, len(row_idx), dtype=torch.long)
    elif config.control_type == "token":
        types = ids[all_rows, all_pos].view(n_spec, -1)
    elif isinstance(config.control_type, str):
        if config.control_type in data:
            t = data[config.control_type].long()
        else:
            t = _ids(list(ds.select(range(n_rows))[config.control_type]))
        types = t[row_idx][None].expand(n_spec, -1)
    else:
        t = torch.as_tensor(config.control_type(data)).long()
        t = t[row_idx, pos_idx] if t.dim() == 2 and label.dim() == 2 else t[row_idx]
        types = t[None].expand(n_spec, -1)
    n_classes = int(y.max().item()) + 1 if len(y) else 0
    rep = len(layers)
    return ProbeData(
        x=x,
        y=y,
        groups=groups,
        types=types.repeat(rep, 1),
        positions=pos_per_spec.repeat(rep, 1) if label.dim() == 1 else pos_idx[None].repeat(rep, 1),
        sites=sites,
        layers=[layer for layer in layers for _ in specs],
        n_classes=n_classes,
    )


# ============================================================================================ stats
def wilson_interval(correct: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval for a binomial proportion ``correct / n`` (95% for z = 1.96)."""
    if n <= 0:
        return (float("nan"), float("nan"))
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def control_labels(
    types: Int[Tensor, "n"], y: Int[Tensor, "n"], seed: int = 0
) -> Int[Tensor, "n"]:
    """Hewitt & Liang control task: one random label per type, drawn from the empirical label law."""
    uniq, inv = types.unique(return_inverse=True)
    freq = torch.bincount(y, minlength=int(y.max()) + 1).double()
    gen = torch.Generator().manual_seed(seed)
    per_type = torch.multinomial(freq / freq.sum(), len(uniq), replacement=True, generator=gen)
    return per_type[inv]


def _folds(groups: Int[Tensor, "n"], k: int, seed: int) -> Int[Tensor, "n"]:
    """Fold id per example; whole groups go to one fold (groups shuffled, dealt round robin)."""
    uniq, inv = groups.unique(return_inverse=True)
    if len(uniq) < k:
        raise ValueError(
            f"folds={k}: only {len(uniq)} groups to hold out; use folds ≤ {len(uniq)} or group=None."
        )
    perm = torch.randperm(len(uniq), generator=torch.Generator().manual_seed(seed))
    fold_of_group = torch.empty(len(uniq), dtype=torch.long)
    fold_of_group[perm] = torch.arange(len(uniq)) % k
    return fold_of_group[inv]


# ============================================================================================ probes
def _standardise(x: Float[Tensor, "site n d"]) -> tuple[Tensor, Tensor]:
    mean = x.mean(1, keepdim=True)
    scale = x.std(1, keepdim=True).clamp_min(1e-6)
    return mean, scale


def _design(x: Tensor, mean: Tensor, scale: Tensor) -> Float[Tensor, "site n d1"]:
    a = (x - mean) / scale
    return torch.cat([a, torch.ones(*a.shape[:2], 1, dtype=a.dtype)], -1)


def _penalty(d1: int) -> Tensor:
    """Diagonal of P: 1 on the features, ~0 on the intercept (last coordinate)."""
    pen = torch.ones(d1, dtype=torch.float64)
    pen[-1] = 1e-8
    return pen


def _chol_solve(chol: Tensor, rhs: Tensor) -> Tensor:
    """``(LLᵀ)⁻¹B`` by two batched triangular solves (4× faster than ``cholesky_solve`` on CPU here)."""
    rhs = rhs.to(chol.dtype).expand(*chol.shape[:-1], rhs.shape[-1])
    half = torch.linalg.solve_triangular(chol, rhs, upper=False)
    return torch.linalg.solve_triangular(chol.mT, half, upper=True)


def _solve(gram: Tensor, rhs: Tensor, lam: Tensor, n: Tensor) -> Tensor:
    """(G + λn·P)⁻¹ B by batched Cholesky in float64; P leaves the last (intercept) coordinate free.

    Batched ``torch.linalg.solve`` on CPU is unreliable (pytorch#142815): always Cholesky.
    """
    d1 = gram.shape[-1]
    m = gram.double() + (lam * n)[..., None, None] * torch.diag(_penalty(d1))
    return _chol_solve(torch.linalg.cholesky(m), rhs).float()


@dataclass
class RidgeProbe:
    """Ridge classifiers, one per site: ``argmax_c ((x − μ)/σ) W[:d] + W[d]``."""

    mean: Float[Tensor, "site 1 d"]
    scale: Float[Tensor, "site 1 d"]
    weight: Float[Tensor, "site d1 c"]
    lam: Float[Tensor, "site"]
    cv_accuracy: Float[Tensor, "site lam"]
    lams: tuple[float, ...]

    def scores(self, x: Float[Tensor, "site n d"]) -> Float[Tensor, "site n c"]:
        w = self.weight[:, :-1] / self.scale.transpose(1, 2)  # raw coordinates: no copy of x
        b = self.weight[:, -1:] - self.mean @ w
        return torch.baddbmm(b, x, w)

    def predict(self, x: Float[Tensor, "site n d"]) -> Int[Tensor, "site n"]:
        return self.scores(x).argmax(-1)

    def accuracy(self, x: Float[Tensor, "site n d"], y: Int[Tensor, "n"]) -> Float[Tensor, "site"]:
        return (self.predict(x) == y).float().mean(-1)

    @property
    def direction(self) -> Float[Tensor, "site d"]:
        """Binary probes: the direction of ``score₁ − score₀`` in raw activation coordinates."""
        w = self.weight[:, :-1]
        return (w[..., 1] - w[..., 0]) / self.scale[:, 0]


def fit_ridge(
    x: Float[Tensor, "site n d"],
    y: Int[Tensor, "n"],
    *,
    lams: Sequence[float] = DEFAULT_LAMS,
    groups: Int[Tensor, "n"] | None = None,
    folds: int = 5,
    n_classes: int | None = None,
    seed: int = 0,
) -> RidgeProbe:
    """Ridge classifiers for all sites at once, λ per site chosen by K-fold CV on held-out groups.

    The multi-output ridge classifier (one-vs-rest least squares onto one-hot labels, prediction by
    argmax): ``W = (AᵀA + λn·P)⁻¹AᵀY`` on standardised ``A`` with a ones column. Rows are sorted by
    fold once, so every fold is a contiguous slice; one Gram matrix per fold ``G_k = A_kᵀA_k``
    (float32 GEMM, together one pass of ``n·d²`` per site), every fold's training Gram is
    ``G − G_k``, and all (fold, λ, site) systems are factored in one batched float64 Cholesky call.
    The held-out predictions of all λ come from one matrix product per fold. Ties in CV accuracy go
    to the larger λ. Cost: about one Gram matrix per site, i.e. one Newton step of a logistic fit.
    """
    if x.dim() != 3 or x.shape[1] != len(y):
        raise ValueError(f"x must be [site, n, d] with n = len(y) = {len(y)}; got {tuple(x.shape)}.")
    c = int(n_classes or int(y.max()) + 1)
    c = max(c, 2)
    s_n, n, d = x.shape
    groups = torch.arange(n) if groups is None else groups
    fold = _folds(groups, folds, seed)
    order = torch.argsort(fold, stable=True)
    bounds = [0] + torch.bincount(fold, minlength=folds).cumsum(0).tolist()
    # rows sorted by fold and centred, in one copy of x (memory bandwidth dominates on CPU)
    mean = x.mean(1, keepdim=True)
    xc = x.index_select(1, order).sub_(mean)
    y_sorted = y[order]
    targets = torch.nn.functional.one_hot(y_sorted, c).float()  # [n, c]
    lam_t = torch.tensor(list(lams), dtype=torch.float64)
    # per fold, the Gram of [x − μ, 1] and its right-hand side, assembled in float64
    g_fold = torch.empty(folds, s_n, d + 1, d + 1, dtype=torch.float64)
    b_fold = torch.empty(folds, s_n, d + 1, c, dtype=torch.float64)
    for k in range(folds):
        xk, tk = xc[:, bounds[k] : bounds[k + 1]], targets[bounds[k] : bounds[k + 1]]
        g_fold[k, :, :d, :d] = xk.transpose(1, 2) @ xk
        g_fold[k, :, :d, d] = g_fold[k, :, d, :d] = xk.sum(1)
        g_fold[k, :, d, d] = float(len(tk))
        b_fold[k, :, :d] = (tk.T @ xk).transpose(1, 2)
        b_fold[k, :, d] = tk.sum(0)
    g_all, b_all = g_fold.sum(0), b_fold.sum(0)
    # standardise in the Gram: σ² = diag(G)/(n − 1); A = [(x − μ)/σ, 1] = [x − μ, 1]·S⁻¹
    scale = (g_all.diagonal(dim1=-2, dim2=-1)[:, :d] / max(n - 1, 1)).sqrt().clamp_min(1e-6)
    inv = torch.cat([1.0 / scale, torch.ones(s_n, 1, dtype=torch.float64)], 1)  # [site, d1]
    g_fold = g_fold * inv[:, :, None] * inv[:, None, :]
    b_fold = b_fold * inv[:, :, None]
    g_all, b_all = g_fold.sum(0), b_fold.sum(0)
    n_k = torch.tensor([float(n - (bounds[k + 1] - bounds[k])) for k in range(folds)], dtype=torch.float64)
    pen = torch.diag(_penalty(d + 1))
    # [fold, lam, site, d1, d1]: every training Gram at every λ, one batched factorisation
    m = (g_all - g_fold)[:, None] + (lam_t[None, :] * n_k[:, None])[..., None, None, None] * pen
    w = _chol_solve(torch.linalg.cholesky(m), (b_all - b_fold)[:, None])
    w = (w * inv[:, :, None]).float()  # weights on [x − μ, 1]
    correct = torch.zeros(s_n, len(lams))
    for k in range(folds):
        xk = xc[:, bounds[k] : bounds[k + 1]]
        wk = w[k].permute(1, 2, 0, 3).reshape(s_n, d + 1, len(lams) * c)  # [site, d1, lam·c]
        pred = torch.baddbmm(wk[:, d:], xk, wk[:, :d]).view(s_n, -1, len(lams), c).argmax(-1)
        correct += (pred == y_sorted[bounds[k] : bounds[k + 1], None]).sum(1).float()
    cv = correct / n
    # highest CV accuracy; ties (within one example) to the largest λ
    best = cv.max(1, keepdim=True).values
    choice = torch.stack([((cv[s] >= best[s] - 0.5 / n).nonzero()[-1, 0]) for s in range(len(cv))])
    lam = lam_t[choice]
    m = g_all + (lam * n)[:, None, None] * pen
    w = _chol_solve(torch.linalg.cholesky(m), b_all).float()
    return RidgeProbe(mean, scale.float()[:, None], w, lam.float(), cv, tuple(lams))


def _ridge_fixed(
    x_tr: Tensor, targets: list[Tensor], x_te: Tensor, lams: Sequence[float]
) -> list[Float[Tensor, "site lam n_te"]]:
    """Predictions on ``x_te`` for several label sets at every λ (one Gram, shared by all labels)."""
    mean, scale = _standardise(x_tr)
    a, b = _design(x_tr, mean, scale), _design(x_te, mean, scale)
    gram = a.transpose(1, 2) @ a
    lam_t = torch.tensor(list(lams), dtype=torch.float64)[:, None].expand(-1, x_tr.shape[0])
    out = []
    for t in targets:
        rhs = (a.transpose(1, 2) @ t)[None].expand(len(lams), -1, -1, -1)
        w = _solve(gram[None].expand(len(lams), -1, -1, -1), rhs, lam_t, torch.tensor(float(x_tr.shape[1])))
        out.append((b[None] @ w).argmax(-1).transpose(0, 1))
    return out


@dataclass
class MeanProbe:
    """Nearest-class-mean classifiers per site; ``direction`` = μ₁ − μ₀ (binary), raw coordinates."""

    means: Float[Tensor, "site c d"]

    def predict(self, x: Float[Tensor, "site n d"]) -> Int[Tensor, "site n"]:
        return torch.cdist(x, self.means).argmin(-1)

    def accuracy(self, x: Float[Tensor, "site n d"], y: Int[Tensor, "n"]) -> Float[Tensor, "site"]:
        return (self.predict(x) == y).float().mean(-1)

    @property
    def direction(self) -> Float[Tensor, "site d"]:
        return self.means[:, 1] - self.means[:, 0]


def fit_diffmeans(x: Float[Tensor, "site n d"], y: Int[Tensor, "n"], n_classes: int | None = None) -> MeanProbe:
    """Class means per site (difference-of-means probe)."""
    c = max(int(n_classes or int(y.max()) + 1), 2)
    onehot = torch.nn.functional.one_hot(y, c).float()
    counts = onehot.sum(0).clamp_min(1)
    return MeanProbe((onehot.T @ x) / counts[:, None])


@dataclass
class BatchedLogisticProbe:
    """Logistic probes for all sites (binary: one sigmoid; multi-class: one-vs-rest sigmoids)."""

    weight: Float[Tensor, "site k d"]
    bias: Float[Tensor, "site k"]
    n_classes: int
    iterations: int

    def scores(self, x: Float[Tensor, "site n d"]) -> Float[Tensor, "site n k"]:
        return x @ self.weight.transpose(1, 2) + self.bias[:, None]

    def predict(self, x: Float[Tensor, "site n d"]) -> Int[Tensor, "site n"]:
        s = self.scores(x)
        return (s[..., 0] > 0).long() if self.n_classes == 2 else s.argmax(-1)

    def accuracy(self, x: Float[Tensor, "site n d"], y: Int[Tensor, "n"]) -> Float[Tensor, "site"]:
        return (self.predict(x) == y).float().mean(-1)

    @property
    def direction(self) -> Float[Tensor, "site d"]:
        """Binary probes: the weight vector in raw activation coordinates."""
        return self.weight[:, 0]


def fit_logistic_batched(
    x: Float[Tensor, "site n d"],
    y: Int[Tensor, "n"],
    *,
    C: float = 1.0,
    tol: float = 1e-6,
    max_iter: int = 50,
    n_classes: int | None = None,
) -> BatchedLogisticProbe:
    """L2-regularised logistic regression for all sites at once by Newton's method (IRLS).

    Minimises scikit-learn's ``LogisticRegression(C=C)`` objective on standardised features,
    ``(1/n)·Σᵢ log-loss + ‖w‖²/(2Cn)`` (intercept unpenalised). Each step solves
    ``H Δ = ∇`` with the exact Hessian ``H = (1/n)·ZᵀDZ + P/(Cn)`` (``Z = [(x − μ)/σ, 1]``,
    ``D = diag(pᵢ(1 − pᵢ))``: one float32 GEMM per site) by batched float64 Cholesky (never batched
    ``torch.linalg.solve``: pytorch#142815), with a backtracking (Armijo) line search whose
    candidates cost nothing (``Z(w − αΔ) = Zw − α·ZΔ``). Stops with scikit-learn's lbfgs criterion,
    ``max |∇| ≤ tol`` at every site, with a tighter default: at weak regularisation the objective is
    flat, and scikit-learn's default ``tol=1e-4`` stops up to 2 points of held-out accuracy away from
    the optimum on MiniLM tokens (its ``tol=1e-6`` lands within 0.03 points); Newton's last steps are
    quadratic, so 1e-6 costs about 10% more than 1e-4 here (BENCHMARKS.md). Multi-class labels:
    one-vs-rest sigmoids, batched. Cost per step: about one Gram matrix per site (one ridge fit),
    so a fit costs 8-12 ridge fits; it matches scikit-learn's accuracy, it is not the fast path
    (:func:`fit_ridge` is; BENCHMARKS.md).
    """
    if x.dim() != 3 or x.shape[1] != len(y):
        raise ValueError(f"x must be [site, n, d] with n = len(y) = {len(y)}; got {tuple(x.shape)}.")
    if C <= 0:
        raise ValueError(f"C={C!r}: must be positive (inverse regularisation strength, as in scikit-learn).")
    if tol <= 0 or max_iter < 1:
        raise ValueError(f"tol={tol!r}, max_iter={max_iter!r}: need tol > 0 and max_iter ≥ 1.")
    c = max(int(n_classes or int(y.max()) + 1), 2)
    s_n, n, d = x.shape
    targets = y.float()[:, None] if c == 2 else torch.nn.functional.one_hot(y, c).float()  # [n, k]
    k = targets.shape[1]
    mean = x.mean(1, keepdim=True)
    z = x - mean  # the one copy of x
    scale = (torch.linalg.vector_norm(z, dim=1, keepdim=True) / math.sqrt(max(n - 1, 1))).clamp_min(1e-6)
    z.div_(scale)
    lam = 1.0 / (C * n)
    w = torch.zeros(s_n, d, k)
    b = torch.zeros(s_n, 1, k)
    logits = torch.zeros(s_n, n, k)
    eye = torch.eye(d + 1, dtype=torch.float64)
    pen = eye.clone()
    pen[d, d] = 0.0

    def objective(lg: Tensor, ww: Tensor) -> Tensor:  # [site]
        ll = torch.nn.functional.softplus(lg) - lg * targets
        return ll.mean(1).sum(-1) + 0.5 * lam * (ww * ww).sum((-1, -2))

    obj = objective(logits, w)
    steps = (1.0, 0.5, 0.25, 0.1, 0.03, 0.01)
    done = 0
    for done in range(1, max_iter + 1):
        p = torch.sigmoid(logits)
        r = (p - targets).transpose(1, 2)  # [site, k, n]
        g_w = (r @ z).transpose(1, 2) / n + lam * w  # [site, d, k]
        g_b = r.sum(-1)[:, None] / n  # [site, 1, k]
        grad = torch.cat([g_w, g_b], 1)  # [site, d1, k]
        if grad.abs().amax((1, 2)).max() <= tol:
            break
        curv = (p * (1 - p)).transpose(1, 2)  # [site, k, n]
        h = torch.empty(s_n, k, d + 1, d + 1, dtype=torch.float64)
        for j in range(k):
            zd = z * curv[:, j, :, None].sqrt()
            h[:, j, :d, :d] = zd.transpose(1, 2) @ zd
            h[:, j, :d, d] = h[:, j, d, :d] = (curv[:, j : j + 1] @ z)[:, 0]
            h[:, j, d, d] = curv[:, j].sum(-1)
        h = h / n + lam * pen + 1e-10 * eye
        step = _chol_solve(torch.linalg.cholesky(h), grad.transpose(1, 2)[..., None].double())[..., 0]
        step = step.float().transpose(1, 2)  # [site, d1, k]
        zs = torch.baddbmm(step[:, d:], z, step[:, :d])  # [site, n, k]
        decrease = (grad * step).sum((1, 2))
        alpha = torch.zeros(s_n)
        new_obj = obj.clone()
        for a in steps:  # the first step length with sufficient decrease, per site
            cand = objective(logits - a * zs, w - a * step[:, :d])
            take = (alpha == 0) & (cand <= obj - 1e-4 * a * decrease)
            alpha = torch.where(take, a, alpha)
            new_obj = torch.where(take, cand, new_obj)
            if bool((alpha > 0).all()):
                break
        if not bool((alpha > 0).any()):
            break  # no site can decrease its objective further in float32
        a3 = alpha[:, None, None]
        w, b = w - a3 * step[:, :d], b - a3 * step[:, d:]
        logits = logits - a3 * zs
        obj = new_obj
    rw = (w / scale.transpose(1, 2)).transpose(1, 2)  # [site, k, d] raw coordinates
    rb = b[:, 0] - (rw * mean).sum(-1)
    return BatchedLogisticProbe(rw, rb, c, done)


@dataclass
class LogisticProbe:
    """A scikit-learn logistic-regression probe at one site, C chosen on held-out groups."""

    model: Any
    mean: Float[Tensor, "d"]
    scale: Float[Tensor, "d"]
    C: float
    cv_accuracy: dict[float, float]

    def predict(self, x: Float[Tensor, "n d"]) -> Int[Tensor, "n"]:
        z = ((x - self.mean) / self.scale).double().numpy()
        return torch.as_tensor(self.model.predict(z)).long()

    def accuracy(self, x: Float[Tensor, "n d"], y: Int[Tensor, "n"]) -> float:
        return (self.predict(x) == y).float().mean().item()

    @property
    def direction(self) -> Float[Tensor, "d"]:
        """Binary probes: the weight vector in raw activation coordinates."""
        coef = torch.as_tensor(self.model.coef_, dtype=torch.float32)
        return coef[0] / self.scale if coef.shape[0] == 1 else (coef[1] - coef[0]) / self.scale


def fit_logistic(
    x: Float[Tensor, "n d"],
    y: Int[Tensor, "n"],
    *,
    groups: Int[Tensor, "n"] | None = None,
    Cs: Sequence[float] = (0.01, 0.1, 1.0, 10.0),
    folds: int = 5,
    threads: int = 1,
    seed: int = 0,
    max_iter: int = 1000,
) -> LogisticProbe:
    """Cross-validated logistic regression (scikit-learn, lbfgs) at one site; C chosen on held-out groups."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    mean, scale = x.mean(0), x.std(0).clamp_min(1e-6)
    z = ((x - mean) / scale).double().numpy()
    yn = y.numpy()
    fold = _folds(torch.arange(len(y)) if groups is None else groups, folds, seed).numpy()
    cv: dict[float, float] = {}
    with threadpool_limits(limits=threads):
        for C in Cs:
            correct = 0
            for k in range(folds):
                tr, te = fold != k, fold == k
                m = LogisticRegression(C=C, max_iter=max_iter).fit(z[tr], yn[tr])
                correct += int((m.predict(z[te]) == yn[te]).sum())
            cv[float(C)] = correct / len(yn)
        best = max(cv.values())
        C = max(c for c, v in cv.items() if v >= best - 0.5 / len(yn))
        model = LogisticRegression(C=C, max_iter=max_iter).fit(z, yn)
    return LogisticProbe(model, mean, scale, C, cv)


# ============================================================================================ report
def _cos(u: Tensor, v: Tensor) -> Tensor:
    return torch.nn.functional.cosine_similarity(u, v, dim=-1)


@dataclass
class ProbeReport:
    """Per-site results of :func:`probe` (arrays indexed by site; see the module docstring)."""

    sites: list[str]
    layers: list[int]
    accuracy: Float[Tensor, "site"]
    ci_low: Float[Tensor, "site"]
    ci_high: Float[Tensor, "site"]
    n_test: int
    lam: Float[Tensor, "site"]
    diffmeans_accuracy: Float[Tensor, "site"]
    cos_ridge_diffmeans: Float[Tensor, "site"]
    task_rows: Float[Tensor, "site lam"]
    control_rows: Float[Tensor, "site lam"]
    lams: tuple[float, ...]
    majority: float
    position_only: Float[Tensor, "site"]
    n_types: int
    warnings: list[str] = field(default_factory=list)
    probe: RidgeProbe | None = None

    @property
    def selectivity_by_lam(self) -> Float[Tensor, "site lam"]:
        return self.task_rows - self.control_rows

    @property
    def selectivity(self) -> Float[Tensor, "site"]:
        """Task − control accuracy at the most selective λ of the grid (Hewitt & Liang)."""
        return self.selectivity_by_lam.max(1).values

    @property
    def control(self) -> Float[Tensor, "site"]:
        """Control-task accuracy at the most selective λ."""
        i = self.selectivity_by_lam.argmax(1)
        return self.control_rows[torch.arange(len(i)), i]

    @property
    def task_at_selective(self) -> Float[Tensor, "site"]:
        i = self.selectivity_by_lam.argmax(1)
        return self.task_rows[torch.arange(len(i)), i]

    def table(self) -> Any:
        """A pandas DataFrame, one row per site."""
        import pandas as pd

        i = self.selectivity_by_lam.argmax(1)
        return pd.DataFrame(
            {
                "site": self.sites,
                "layer": self.layers,
                "accuracy": self.accuracy.tolist(),
                "ci_low": self.ci_low.tolist(),
                "ci_high": self.ci_high.tolist(),
                "lam": self.lam.tolist(),
                "diffmeans_accuracy": self.diffmeans_accuracy.tolist(),
                "cos_ridge_diffmeans": self.cos_ridge_diffmeans.tolist(),
                "task_rows": self.task_at_selective.tolist(),
                "control": self.control.tolist(),
                "selectivity": self.selectivity.tolist(),
                "selective_lam": [self.lams[j] for j in i.tolist()],
                "position_only": self.position_only.tolist(),
                "majority": [self.majority] * len(self.sites),
            }
        )

    def plot(self, ax: Any = None) -> Any:
        return plot_probe(self, ax=ax)

    def _repr_html_(self) -> str:
        """Notebook display: the per-site table, then any warnings."""
        import html

        notes = "".join(f"<li>{html.escape(w)}</li>" for w in self.warnings)
        return (f"<p>ProbeReport: {len(self.sites)} sites, {self.n_test} held-out examples, "
                f"{self.n_types} control types</p>" + self.table().to_html(index=False, float_format="{:.3f}".format)
                + (f"<ul>{notes}</ul>" if notes else ""))


def probe(model: Any, task: Any, config: ProbeConfig | None = None, **kwargs: Any) -> ProbeReport:
    """Probe every site of ``config`` (or ``ProbeConfig(**kwargs)``): see the module docstring."""
    config = config or ProbeConfig(**kwargs)
    train = probe_data(model, task, config, "train")
    test = probe_data(model, task, config, "test")
    return report_from_data(train, test, config, d_model=model.cfg.d_model)


def report_from_data(train: ProbeData, test: ProbeData, config: ProbeConfig, d_model: int) -> ProbeReport:
    """The :class:`ProbeReport` of already captured train/test activations."""
    c = max(train.n_classes, test.n_classes, 2)
    ridge = fit_ridge(
        train.x, train.y, lams=config.lams, groups=train.groups, folds=config.folds, n_classes=c,
        seed=config.seed,
    )
    acc = ridge.accuracy(test.x, test.y)
    n_te = len(test.y)
    ci = [wilson_interval(a * n_te, n_te) for a in acc.tolist()]
    means = fit_diffmeans(train.x, train.y, c)
    dm_acc = means.accuracy(test.x, test.y)
    cos = _cos(ridge.direction, means.direction) if c == 2 else torch.full((len(acc),), float("nan"))

    # control task on a random row split of the pooled examples (types recur across the split)
    x = torch.cat([train.x, test.x], 1)
    y = torch.cat([train.y, test.y])
    types = torch.cat([train.types, test.types], 1)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(config.seed + 1))
    cut = (3 * len(y)) // 4
    tr, te = perm[:cut], perm[cut:]
    task_rows = torch.empty(len(acc), len(config.lams))
    control_rows = torch.empty(len(acc), len(config.lams))
    n_types = 0
    # sites that share a type assignment share one control labelling
    for s in range(len(acc)):
        ctl = control_labels(types[s], y, config.seed)
        n_types = max(n_types, len(types[s].unique()))
        onehot = [torch.nn.functional.one_hot(v[tr], c).float() for v in (y, ctl)]
        pred_task, pred_ctl = _ridge_fixed(x[s : s + 1, tr], onehot, x[s : s + 1, te], config.lams)
        task_rows[s] = (pred_task[0] == y[te]).float().mean(-1)
        control_rows[s] = (pred_ctl[0] == ctl[te]).float().mean(-1)
    warnings = []
    if config.control_type is not None and n_types < 10 * d_model:
        msg = (
            f"control task has {n_types} types, not much more than d_model={d_model}: a linear probe "
            "can memorise it; read selectivity at strong regularisation (large λ)."
        )
        log.warning(msg)
        warnings.append(msg)

    # baselines: majority class (test), position-only probe (one-hot of the probed position)
    majority = torch.bincount(test.y, minlength=c).max().item() / n_te
    n_pos = int(max(train.positions.max(), test.positions.max())) + 1
    pos_tr = torch.nn.functional.one_hot(train.positions, n_pos).float()
    pos_te = torch.nn.functional.one_hot(test.positions, n_pos).float()
    pos_acc = torch.empty(len(acc))
    for s in range(len(acc)):
        (pred,) = _ridge_fixed(
            pos_tr[s : s + 1], [torch.nn.functional.one_hot(train.y, c).float()], pos_te[s : s + 1], (1e-3,)
        )
        pos_acc[s] = (pred[0, 0] == test.y).float().mean()
    return ProbeReport(
        sites=train.sites, layers=train.layers, accuracy=acc,
        ci_low=torch.tensor([lo for lo, _ in ci]), ci_high=torch.tensor([hi for _, hi in ci]),
        n_test=n_te, lam=ridge.lam, diffmeans_accuracy=dm_acc, cos_ridge_diffmeans=cos,
        task_rows=task_rows, control_rows=control_rows, lams=config.lams, majority=majority,
        position_only=pos_acc, n_types=n_types, warnings=warnings, probe=ridge,
    )


def plot_probe(report: ProbeReport, ax: Any = None) -> Any:
    """Per-layer accuracy (95% Wilson band), control task, selectivity and baselines; one line per position."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    specs = sorted({s.split("@", 1)[1] if "@" in s else "" for s in report.sites})
    for spec in specs:
        idx = [i for i, s in enumerate(report.sites) if (s.split("@", 1)[1] if "@" in s else "") == spec]
        layers = [report.layers[i] for i in idx]
        tag = f" @{spec}" if spec else ""
        line = ax.plot(layers, report.accuracy[idx], marker="o", label=f"accuracy{tag}")[0]
        ax.fill_between(layers, report.ci_low[idx], report.ci_high[idx], color=line.get_color(), alpha=0.2)
        ax.plot(layers, report.control[idx], ls="--", color=line.get_color(), label=f"control{tag}")
        ax.plot(layers, report.selectivity[idx], ls=":", color=line.get_color(), label=f"selectivity{tag}")
        ax.plot(layers, report.position_only[idx], ls="-.", color=line.get_color(), alpha=0.5,
                label=f"position-only{tag}")
    ax.axhline(report.majority, color="grey", lw=1, label="majority")
    ax.set_xlabel("layer (0 = embedding)")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize="small")
    return ax


# ============================================================================================ causal
Behaviour = Callable[[Sequence[hooks.Hook]], float]


@dataclass
class CausalCheck:
    """Behaviour under erasure and steering at one point, against random subspaces/directions.

    ``erased_random[i]``: the i-th random subspace of the eraser's rank; ``steered[j]`` at
    ``alphas[j]``; ``steered_random[j][i]`` the i-th random direction of equal norm. ``damage_*``:
    the damage measure (e.g. 1 − cos of clean vs intervened embeddings) where one was given.
    """

    point: str
    rank: int
    clean: float
    erased: float
    erased_random: list[float]
    alphas: tuple[float, ...]
    steered: list[float]
    steered_random: list[list[float]]
    direction_norm: float
    resid_norm: float
    damage_erased: float = float("nan")
    damage_erased_random: list[float] = field(default_factory=list)
    damage_steered: list[float] = field(default_factory=list)
    damage_steered_random: list[list[float]] = field(default_factory=list)

    @property
    def erasure_effect(self) -> float:
        """Behaviour change under erasure beyond the mean random erasure (clean − erased − random gap)."""
        return (self.clean - self.erased) - (self.clean - sum(self.erased_random) / len(self.erased_random))

    def table(self) -> Any:
        """A pandas DataFrame: the behaviour clean, erased and steered at each α, each against the
        mean over its random controls (and the damage where one was measured)."""
        import pandas as pd

        def mean(v: Sequence[float]) -> float:
            return sum(v) / len(v) if len(v) else float("nan")

        rows = [{"intervention": "none", "behaviour": self.clean, "random": self.clean, "damage": 0.0,
                 "damage_random": 0.0},
                {"intervention": f"erase rank {self.rank}", "behaviour": self.erased,
                 "random": mean(self.erased_random), "damage": self.damage_erased,
                 "damage_random": mean(self.damage_erased_random)}]
        for j, alpha in enumerate(self.alphas):
            rows.append({"intervention": f"steer α={alpha:g}", "behaviour": self.steered[j],
                         "random": mean(self.steered_random[j]),
                         "damage": self.damage_steered[j] if self.damage_steered else float("nan"),
                         "damage_random": mean(self.damage_steered_random[j]) if self.damage_steered_random
                         else float("nan")})
        return pd.DataFrame(rows)

    def _repr_html_(self) -> str:
        return (f"<p>CausalCheck at {self.point}: erasure effect beyond random "
                f"{self.erasure_effect:.3f}</p>" + self.table().to_html(index=False, float_format="{:.3f}".format))


def _random_erase(point: str, mean: Tensor, q: Tensor) -> hooks.Hook:
    def fn(x: Tensor) -> Tensor:
        qq, mu = q.to(x), mean.to(x)
        return x - ((x - mu) @ qq) @ qq.T

    return hooks.Hook(point, fn)


def causal_check(
    point: str,
    x: Float[Tensor, "n d"],
    y: Int[Tensor, "n"],
    behaviour: Behaviour,
    *,
    steer_behaviour: Behaviour | None = None,
    damage: Behaviour | None = None,
    method: str = "leace",
    alphas: Sequence[float] = (0.5, 1.0, 2.0),
    n_random: int = 3,
    seed: int = 0,
) -> CausalCheck:
    """Erase the concept ``y`` at ``point`` (every position) and steer along its class-mean direction.

    Args:
        point: where to intervene (e.g. ``layer_point(model, 3)``).
        x: activations at ``point`` to fit the eraser and the direction on.
        y: their labels.
        behaviour: ``f(hooks) -> float``, the behaviour with the given hooks active (e.g. the
            sentence readout's accuracy, or the next-token loss).
        steer_behaviour: the behaviour measured while steering (default ``behaviour``), e.g. the
            fraction of class-0 inputs read as class 1.
        damage: optional ``f(hooks) -> float`` measuring damage on clean inputs.
        method: ``"leace"`` (concept-erasure's LeaceEraser: least-squares concept erasure) or
            ``"mean"`` (orthogonal projection off the class-mean differences, about the mean).
        alphas: steering doses, multiples of μ₁ − μ₀ (class 1 minus class 0 mean).
        n_random: random subspaces / directions drawn as the baseline.
    """
    if method not in ("leace", "mean"):
        raise ValueError(f"method={method!r}: must be 'leace' or 'mean'.")
    if n_random < 1:
        raise ValueError(f"n_random={n_random!r}: need at least one random baseline.")
    x = x.float()
    c = max(int(y.max()) + 1, 2)
    mean = x.mean(0)
    class_means = fit_diffmeans(x[None], y, c).means[0]
    d = x.shape[1]
    if method == "leace":
        from concept_erasure import LeaceEraser

        # k − 1 indicator columns: LEACE's rank is that of the class-mean differences
        eraser = LeaceEraser.fit(x, torch.nn.functional.one_hot(y, c)[:, 1:].float())
        rank = int(eraser.proj_left.shape[1])

        def erase_fn(a: Tensor) -> Tensor:
            return eraser(a.float()).to(a.dtype)

        erase_hook = hooks.Hook(point, erase_fn)
    else:
        q_c = hooks.orthonormal_basis(class_means - mean)
        rank = q_c.shape[1]
        erase_hook = _random_erase(point, mean, q_c)
    gen = torch.Generator().manual_seed(seed)
    randoms = [torch.linalg.qr(torch.randn(d, rank, generator=gen))[0] for _ in range(n_random)]
    direction = class_means[1] - class_means[0]
    rand_dirs = [torch.randn(d, generator=gen) for _ in range(n_random)]
    rand_dirs = [v / v.norm() * direction.norm() for v in rand_dirs]
    sb = steer_behaviour or behaviour
    out = CausalCheck(
        point=point, rank=rank, clean=behaviour([]), erased=behaviour([erase_hook]),
        erased_random=[behaviour([_random_erase(point, mean, q)]) for q in randoms],
        alphas=tuple(float(a) for a in alphas),
        steered=[sb([hooks.steer(point, direction, a)]) for a in alphas],
        steered_random=[[sb([hooks.steer(point, v, a)]) for v in rand_dirs] for a in alphas],
        direction_norm=direction.norm().item(), resid_norm=x.norm(dim=1).mean().item(),
    )
    if damage is not None:
        out.damage_erased = damage([erase_hook])
        out.damage_erased_random = [damage([_random_erase(point, mean, q)]) for q in randoms]
        out.damage_steered = [damage([hooks.steer(point, direction, a)]) for a in alphas]
        out.damage_steered_random = [[damage([hooks.steer(point, v, a)]) for v in rand_dirs] for a in alphas]
    return out


def loss_behaviour(model: Any, task: Any, rows: int = 256) -> Behaviour:
    """For causal models: ``f(hooks)`` = mean next-token loss on the test split's scored targets."""
    batch = task.tensors("test", rows=rows, columns=("input_ids", "target_mask"))

    @torch.no_grad()
    def f(hook_list: Sequence[hooks.Hook]) -> float:
        with hooks.apply(model, list(hook_list)):
            return task.loss(model, batch).item()

    return f


class SentenceReadout:
    """What MiniLM outputs: the mean-pooled final-layer embedding, and a ridge readout of a label from it.

    The readout is fitted on clean embeddings of the train split; ``accuracy(hooks)`` is its test
    accuracy with the hooks active, ``flipped(hooks)`` the fraction of test rows of class
    ``source`` read as another class, ``damage(hooks)`` is 1 − mean cos(clean, intervened embedding).
    """

    def __init__(self, model: Any, task: Any, label: str = "label", rows: int | None = None,
                 batch_size: int = 128, source: int = 0):
        self.model, self.batch_size, self.source = model, batch_size, source
        n = model.cfg.n_layers
        self.point = hooks.resid_post(n - 1)
        tr = task.tensors("train", rows=rows)
        self.test = task.tensors("test", rows=rows)
        self.y_test = self.test[label].long()
        emb_tr = self.embed([], tr)
        self.readout = fit_ridge(emb_tr[None], tr[label].long(), lams=(1e-2,), folds=2)
        self.clean = self.embed([], self.test)

    @torch.no_grad()
    def embed(self, hook_list: Sequence[hooks.Hook], data: dict[str, Tensor] | None = None) -> Float[Tensor, "n d"]:
        data = self.test if data is None else data
        ids, mask = data["input_ids"].long(), data["attention_mask"]
        out = []
        with hooks.apply(self.model, list(hook_list)):
            for s in range(0, len(ids), self.batch_size):
                m = mask[s : s + self.batch_size]
                h = hooks.capture(self.model, ids[s : s + self.batch_size], [self.point], attention_mask=m)
                h = h[self.point].float()
                w = m[..., None].float()
                out.append((h * w).sum(1) / w.sum(1))
        return torch.cat(out)

    def accuracy(self, hook_list: Sequence[hooks.Hook]) -> float:
        return self.readout.accuracy(self.embed(hook_list)[None], self.y_test).item()

    def flipped(self, hook_list: Sequence[hooks.Hook]) -> float:
        pred = self.readout.predict(self.embed(hook_list)[None])[0]
        src = self.y_test == self.source
        return (pred[src] != self.source).float().mean().item()

    def damage(self, hook_list: Sequence[hooks.Hook]) -> float:
        return 1.0 - _cos(self.embed(hook_list), self.clean).mean().item()


# ============================================================================================ sweeps
class _ProbeAnalysis:
    effects: tuple[str, ...] = ("accuracy",)
    collaterals: tuple[str, ...] = ()

    def __init__(self, config: ProbeConfig | None = None, *, site: str | None = None, name: str, **kwargs: Any):
        self.config = config or ProbeConfig(**kwargs)
        self.site = site
        self.name = name

    def _metrics(self, acc: Tensor, sites: list[str]) -> dict[str, float]:
        out = {f"acc_{s}": float(a) for s, a in zip(sites, acc.tolist())}
        out["accuracy"] = out[f"acc_{self.site}"]
        out["acc_mean"] = float(acc.mean())
        return out

    def _fit(self, model: Any, task: Any) -> tuple[RidgeProbe, ProbeData]:
        train = probe_data(model, task, self.config, "train")
        ridge = fit_ridge(
            train.x, train.y, lams=self.config.lams, groups=train.groups, folds=self.config.folds,
            n_classes=max(train.n_classes, 2), seed=self.config.seed,
        )
        return ridge, train

    def _choose_site(self, ridge: RidgeProbe, model: Any, task: Any, sites: list[str]) -> None:
        if self.site is None:
            test = probe_data(model, task, self.config, "test")
            self.site = sites[int(ridge.accuracy(test.x, test.y).argmax())]
        elif self.site not in sites:
            raise ValueError(f"site={self.site!r}: not one of the probed sites {sites}.")


class FrozenProbe(_ProbeAnalysis):
    """Probes fitted once on the clean weights, evaluated on each draw (representational drift).

    Metrics: ``acc_<site>`` per site, ``acc_mean``, and the effect ``accuracy`` at ``site`` (default:
    the site best on clean weights).
    """

    def __init__(self, config: ProbeConfig | None = None, *, site: str | None = None,
                 name: str = "frozen_probe", **kwargs: Any):
        super().__init__(config, site=site, name=name, **kwargs)

    def setup(self, model: Any, task: Any) -> None:
        self.ridge, train = self._fit(model, task)
        self.sites = train.sites
        self._choose_site(self.ridge, model, task, self.sites)

    def __call__(self, model: Any, task: Any) -> dict[str, float]:
        test = probe_data(model, task, self.config, "test")
        return self._metrics(self.ridge.accuracy(test.x, test.y), test.sites)


class RefitProbe(_ProbeAnalysis):
    """Probes refitted (λ re-chosen) on each draw: is the information still linearly there?

    Metrics as :class:`FrozenProbe`.
    """

    def __init__(self, config: ProbeConfig | None = None, *, site: str | None = None,
                 name: str = "refit_probe", **kwargs: Any):
        super().__init__(config, site=site, name=name, **kwargs)

    def setup(self, model: Any, task: Any) -> None:
        ridge, train = self._fit(model, task)
        self.sites = train.sites
        self._choose_site(ridge, model, task, self.sites)

    def __call__(self, model: Any, task: Any) -> dict[str, float]:
        ridge, _ = self._fit(model, task)
        test = probe_data(model, task, self.config, "test")
        return self._metrics(ridge.accuracy(test.x, test.y), test.sites)
