"""Per-component learning coefficients as a table: :class:`ComponentLLCs`, what
``estimate_component_llcs(..., components=...)`` returns.

A component's **weight-restricted** λ̂ samples only its weights (a head's Q/K/V rows and O columns,
an MLP, the embedding, every node of a hypothesis), the rest held at w0; a **data-restricted** λ̂
takes the loss on another data distribution q′ in place of the objective (Wang, Hoogland, van
Wingerden, Furman, Murfet 2025, "Differentiation and specialization of attention heads via the
refined local learning coefficient", ICLR): with L′ the loss on q′ and V the component's weights,

    λ̂(w0; V, q′) = B·(E_{w ~ p′}[L′(w)] − L′(w0)),   p′(w) ∝ exp(−B·L′(w) − γ/2·‖w − w0‖²) on V.

Each entry is an :class:`~interp.degradations.LLCEstimate` with a 95% interval (Student's t over the
chains, widened by the shared error of L(w0)). Index by component name (``est["head 1.0"].mean``),
or by ``(component, data)`` when several data distributions were given.

Example::

    >>> from interp.degradations import estimate_component_llcs
    >>> from interp.degradations.oracles import DeepLinearNetworks
    >>> net = DeepLinearNetworks([([3, 2, 3], 1), ([2, 2, 2], 0)])
    >>> est = estimate_component_llcs(net, net.loss, components={"a": "nets.0.*", "b": "nets.1.*"}, nbeta=100.0,
    ...                               lr=1e-3, localization=1.0, chains=2, n_draws=20, burnin=10, progress=False)
    >>> list(est), est["a"].n_weights
    (['a', 'b'], 12)
    >>> sorted(est.to_frame().columns)[:3]
    ['chains', 'component', 'data']
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from interp.stats import t_quantile_975

__all__ = ["ComponentLLCs", "ComponentLLC", "llc_interval"]


def llc_interval(estimate: Any) -> tuple[float, float]:
    """95% interval of an LLC estimate: mean ± t₀.₉₇₅(k − 1)·stderr over its k successful chains
    (1.96 for many chains; NaN bounds with a single chain)."""
    k = len(getattr(estimate, "per_chain", ()) or ())
    t = t_quantile_975(k - 1) if k > 1 else math.nan
    se = float(estimate.stderr)
    return float(estimate.mean) - t * se, float(estimate.mean) + t * se


@dataclass(frozen=True)
class ComponentLLC:
    """One row of a :class:`ComponentLLCs` table: the component's name, the restrict it sampled,
    the number of weights it moved, the data it was measured on and its estimate. ``mean``,
    ``stderr`` and ``interval`` read through to the estimate."""

    component: str
    restrict: Any
    n_weights: int
    data: str | None
    estimate: Any

    @property
    def mean(self) -> float:
        return float(self.estimate.mean)

    @property
    def stderr(self) -> float:
        return float(self.estimate.stderr)

    @property
    def interval(self) -> tuple[float, float]:
        return llc_interval(self.estimate)

    def __getattr__(self, name: str) -> Any:  # the estimate's other fields (nbeta, lr, chains, ...)
        if name.startswith("_") or name == "estimate":
            raise AttributeError(name)
        return getattr(self.estimate, name)


class ComponentLLCs(Mapping[Any, ComponentLLC]):
    """Per-component λ̂ (and per data distribution), a read-only mapping.

    Keys are component names, or ``(component, data)`` pairs when more than one data distribution
    was measured (a missing key raises a ``KeyError`` listing the keys). :meth:`to_frame` gives a pandas DataFrame with one
    row per entry: ``component``, ``data``, ``restrict``, ``n_weights``, ``llc``, ``stderr``, ``lo``,
    ``hi`` (95% interval), ``nbeta``, ``lr``, ``localization``, ``chains``, ``failed_chains``,
    ``objective``, ``units``.
    """

    def __init__(self, rows: list[ComponentLLC]) -> None:
        self.rows = tuple(rows)
        datas = {r.data for r in self.rows}
        self._by_pair = len(datas) > 1
        self._index = {((r.component, r.data) if self._by_pair else r.component): r for r in self.rows}

    def __getitem__(self, key: Any) -> ComponentLLC:
        if key in self._index:
            return self._index[key]
        raise KeyError(f"no component {key!r} in this table; keys: {list(self._index)}")

    def __iter__(self) -> Iterator[Any]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def to_frame(self) -> Any:
        """The table as a ``pandas.DataFrame`` (one row per component and data distribution)."""
        import pandas as pd

        out = []
        for r in self.rows:
            lo, hi = r.interval
            e = r.estimate
            out.append(dict(component=r.component, data=r.data, restrict=repr(r.restrict), n_weights=r.n_weights,
                            llc=r.mean, stderr=r.stderr, lo=lo, hi=hi, nbeta=e.nbeta, lr=e.lr,
                            localization=e.localization, chains=len(e.per_chain), failed_chains=len(e.failed),
                            objective=e.objective, units=e.units))
        return pd.DataFrame(out)

    def __repr__(self) -> str:
        lines = [f"ComponentLLCs({len(self)} entries)"]
        for key, r in self._index.items():
            lo, hi = r.interval
            lines.append(f"  {key!s:<28} λ̂ = {r.mean:8.3f} ± {r.stderr:.3f}  [{lo:.3f}, {hi:.3f}]  "
                         f"({r.n_weights} weights)")
        return "\n".join(lines)
