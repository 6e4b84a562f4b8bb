"""``probe``: the one-shot probe of every site with controls and baselines, its report and its plot.

See :mod:`analyses.probing` for what the report's columns mean (accuracy with a Wilson interval,
Hewitt & Liang control task and selectivity, majority and position-only baselines, ridge vs
difference-of-means direction).

Example::

    >>> from analyses.probing import probe
    >>> report = probe(model, task, label="label", positions=(-1,))   # doctest: +SKIP
    >>> fig = report.plot()                                            # doctest: +SKIP
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from analyses.probing._config import ProbeConfig
from analyses.probing._data import ProbeData, probe_data
from analyses.probing._fit import RidgeProbe, _ridge_fixed, control_labels, fit_diffmeans, fit_ridge, wilson_interval

__all__ = ["ProbeReport", "probe", "report_from_data", "plot_probe"]

log = logging.getLogger("analyses.probing")


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
        """:func:`plot_probe` of this report; returns the Figure."""
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
    """Per-layer accuracy (95% Wilson band), control task, selectivity and baselines; one line per
    position. Draws on ``ax`` if given; returns the Figure (as every plot function of ``analyses``)."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("plot_probe needs matplotlib: pip install 'interp[plot]'.") from err

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
    return ax.figure
