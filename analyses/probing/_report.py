"""``probe``: the one-shot probe of every site with controls and baselines, its report and its plot.

See :mod:`analyses.probing` for what the report's columns mean (accuracy with a Wilson interval,
Hewitt & Liang control task and selectivity, majority and position-only baselines, ridge vs
difference-of-means direction).

Example (skipped as a docstring example for the probe's cost, see :mod:`analyses.probing`;
``tests/analyses/test_probing.py`` plots a report)::

    >>> from analyses.probing import probe
    >>> report = probe(model, task, label="label", positions=("sep_pos",))   # doctest: +SKIP
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
from analyses.probing._fit import (
    RidgeProbe,
    _ridge_fixed,
    cluster_bootstrap_interval,
    control_labels,
    fit_diffmeans,
    fit_ridge,
    wilson_interval,
)

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
    lams: tuple[float, ...]
    majority: float
    position_only: Float[Tensor, "site"]
    n_types: int
    task_rows: Float[Tensor, "site lam"]
    control_rows: Float[Tensor, "site lam"]
    selectivity_cv: Float[Tensor, "site lam"]
    selectivity_task: Float[Tensor, "site"]
    selectivity_control: Float[Tensor, "site"]
    selectivity: Float[Tensor, "site"]
    selectivity_ci_low: Float[Tensor, "site"]
    selectivity_ci_high: Float[Tensor, "site"]
    selectivity_lam: Float[Tensor, "site"]
    warnings: list[str] = field(default_factory=list)
    probe: RidgeProbe | None = None

    @property
    def selectivity_by_lam(self) -> Float[Tensor, "site lam"]:
        """Task − control accuracy on the control split's held-out rows at every λ of the grid
        (descriptive: the headline :attr:`selectivity` is at the λ cross-validated inside training rows)."""
        return self.task_rows - self.control_rows

    @property
    def control(self) -> Float[Tensor, "site"]:
        """Control-task accuracy on the control split at ``selectivity_lam`` (= ``selectivity_control``)."""
        return self.selectivity_control

    @property
    def task_at_selective(self) -> Float[Tensor, "site"]:
        """Task accuracy on the control split at ``selectivity_lam`` (= ``selectivity_task``)."""
        return self.selectivity_task

    def table(self) -> Any:
        """A pandas DataFrame, one row per site.

        ``accuracy`` (``ci_low``/``ci_high``: Wilson) is on the held-out groups at the cross-validated
        ``lam``. The ``selectivity_*`` columns are one measurement on another split (a random row split
        where control types recur): ``selectivity = selectivity_task − selectivity_control``, both at
        ``selectivity_lam`` on the same rows, with a cluster-bootstrap interval over control types.
        """
        import pandas as pd

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
                "selectivity_task": self.selectivity_task.tolist(),
                "selectivity_control": self.selectivity_control.tolist(),
                "selectivity": self.selectivity.tolist(),
                "selectivity_ci_low": self.selectivity_ci_low.tolist(),
                "selectivity_ci_high": self.selectivity_ci_high.tolist(),
                "selectivity_lam": self.selectivity_lam.tolist(),
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

    # control task (Hewitt & Liang) on a random row split of the pooled examples (types recur across it)
    x = torch.cat([train.x, test.x], 1)
    y = torch.cat([train.y, test.y])
    types = torch.cat([train.types, test.types], 1)
    sel = _control_task(x, y, types, c, config)
    n_types = sel.pop("n_types")
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
        lams=config.lams, majority=majority, position_only=pos_acc, n_types=n_types, **sel,
        warnings=warnings, probe=ridge,
    )


def _control_task(x: Tensor, y: Tensor, types: Tensor, c: int, config: ProbeConfig) -> dict[str, Any]:
    """Task and control probes on one random row split of the pooled examples, at one λ per site.

    Types must recur across this split (a control label is memorisable only for a type seen in
    training), so it is not the held-out-groups split of the headline accuracy. λ is chosen per site
    by K-fold cross-validation of the selectivity *inside the split's training rows* (ties to the
    larger λ), then task and control accuracy are measured on the split's held-out rows at that λ:
    ``selectivity = selectivity_task − selectivity_control`` on the same rows and λ, with a 95%
    cluster-bootstrap interval over control types of the paired per-row difference.
    """
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(config.seed + 1))
    cut = (3 * len(y)) // 4
    tr, te = perm[:cut], perm[cut:]
    fold = torch.arange(len(tr)) % config.folds  # tr is already a random order: random folds
    n_site, n_lam = x.shape[0], len(config.lams)
    out = {k: torch.empty(n_site, n_lam) for k in ("task_rows", "control_rows", "selectivity_cv")}
    for k in ("selectivity_task", "selectivity_control", "selectivity", "selectivity_ci_low", "selectivity_ci_high"):
        out[k] = torch.empty(n_site)
    out["selectivity_lam"] = torch.empty(n_site, dtype=torch.float64)  # exactly the grid's values
    n_types = 0
    for s in range(n_site):
        ctl = control_labels(types[s], y, config.seed)
        n_types = max(n_types, len(types[s].unique()))
        labels = (y, ctl)
        # λ: cross-validated selectivity inside the training rows
        diff = torch.zeros(n_lam)
        for k in range(config.folds):
            fit, val = tr[fold != k], tr[fold == k]
            onehot = [torch.nn.functional.one_hot(v[fit], c).float() for v in labels]
            p_task, p_ctl = _ridge_fixed(x[s : s + 1, fit], onehot, x[s : s + 1, val], config.lams)
            diff += ((p_task[0] == y[val]).float() - (p_ctl[0] == ctl[val]).float()).sum(-1)
        cv = diff / len(tr)
        j = int((cv >= cv.max() - 0.5 / len(tr)).nonzero()[-1, 0])
        # task and control at that λ, on the held-out rows
        onehot = [torch.nn.functional.one_hot(v[tr], c).float() for v in labels]
        p_task, p_ctl = _ridge_fixed(x[s : s + 1, tr], onehot, x[s : s + 1, te], config.lams)
        hit_task, hit_ctl = (p_task[0] == y[te]).float(), (p_ctl[0] == ctl[te]).float()
        out["task_rows"][s], out["control_rows"][s], out["selectivity_cv"][s] = hit_task.mean(-1), hit_ctl.mean(-1), cv
        d = hit_task[j] - hit_ctl[j]
        out["selectivity_task"][s], out["selectivity_control"][s] = hit_task[j].mean(), hit_ctl[j].mean()
        out["selectivity"][s] = out["selectivity_task"][s] - out["selectivity_control"][s]
        out["selectivity_lam"][s] = config.lams[j]
        clusters = torch.arange(len(te)) if config.control_type is None else types[s][te]
        lo, hi = cluster_bootstrap_interval(d, clusters, seed=config.seed + 2)
        out["selectivity_ci_low"][s], out["selectivity_ci_high"][s] = lo, hi
    out["n_types"] = n_types
    return out


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
        ax.plot(layers, report.selectivity_control[idx], ls="--", color=line.get_color(), label=f"control (row split){tag}")
        ax.plot(layers, report.selectivity[idx], ls=":", color=line.get_color(), label=f"selectivity{tag}")
        ax.plot(layers, report.position_only[idx], ls="-.", color=line.get_color(), alpha=0.5,
                label=f"position-only{tag}")
    ax.axhline(report.majority, color="grey", lw=1, label="majority")
    ax.set_xlabel("layer (0 = embedding)")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize="small")
    return ax.figure
