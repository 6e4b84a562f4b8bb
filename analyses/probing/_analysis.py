"""Probe sweep analyses: ``FrozenProbe`` (fitted once on w0, representational drift) and ``RefitProbe``.

One-shot counterpart: :func:`analyses.probing.probe`.

Example::

    >>> from analyses.probing import FrozenProbe
    >>> FrozenProbe(label="label", positions=(-1,)).effects
    ('accuracy',)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from analyses._base import Params
from analyses.probing._config import DEFAULT_LAMS, ProbeConfig
from analyses.probing._data import ProbeData, probe_data
from analyses.probing._fit import RidgeProbe, fit_ridge
from analyses.probing._labels import LabelSpec
from interp.checks import bad_value

__all__ = ["FrozenProbe", "RefitProbe"]


_FIELDS = ("label", "positions", "layers", "group", "control_type", "lams", "folds", "eval_rows", "batch_size",
           "seed", "progress")


class _ProbeAnalysis(Params):
    effects: tuple[str, ...] = ("accuracy",)
    collaterals: tuple[str, ...] = ()

    def __init__(self, config: ProbeConfig | None = None, *, site: str | None = None, name: str,
                 label: LabelSpec = "label", positions: tuple[str | int, ...] | None = None, layers: tuple[int, ...] | None = None,
                 group: str | None = None, control_type: LabelSpec | None = "token",
                 lams: tuple[float, ...] = DEFAULT_LAMS, folds: int = 5, eval_rows: int | None = None,
                 batch_size: int = 64, seed: int = 0, progress: bool = False):
        given = dict(label=label, positions=positions, layers=layers, group=group, control_type=control_type,
                     lams=lams, folds=folds, eval_rows=eval_rows, batch_size=batch_size, seed=seed, progress=progress)
        if config is not None:
            if not isinstance(config, ProbeConfig):
                raise bad_value(type(self).__name__, "config", config, "a ProbeConfig or None",
                                "Pass ProbeConfig(...) or its fields as keywords.")
            default = ProbeConfig()
            changed = sorted(k for k, v in given.items() if v is not getattr(default, k) and v != getattr(default, k))
            if changed:
                raise ValueError(f"{type(self).__name__}: give either config=ProbeConfig(...) or its fields as "
                                 f"keywords ({changed}), not both.")
            given = {k: getattr(config, k) for k in _FIELDS}
        self.config = config if config is not None else ProbeConfig(**given)
        for k, v in given.items():
            setattr(self, k, v)
        self.site = site
        self.name = name

    @classmethod
    def _param_names(cls) -> list[str]:  # the ProbeConfig fields, given as keywords or through config
        return [*_FIELDS, "site", "name"]

    def _metrics(self, acc: Tensor, sites: list[str], labels: Tensor | None = None) -> dict[str, float]:
        out = {f"acc_{s}": float(a) for s, a in zip(sites, acc.tolist())}
        out["accuracy"] = out[f"acc_{self.site_}"]
        out["acc_mean"] = float(acc.mean())
        if labels is not None and labels.numel():  # chance: the majority class's share of the test labels
            out["chance"] = float(torch.unique(labels, return_counts=True)[1].max()) / labels.numel()
        return out

    def _fit(self, model: Any, task: Any) -> tuple[RidgeProbe, ProbeData]:
        train = probe_data(model, task, self.config, "train")
        ridge = fit_ridge(
            train.x, train.y, lams=self.config.lams, groups=train.groups, folds=self.config.folds,
            n_classes=max(train.n_classes, 2), seed=self.config.seed,
        )
        return ridge, train

    def _choose_site(self, ridge: RidgeProbe, model: Any, task: Any, sites: list[str]) -> str:
        """The site of the effect ``accuracy``: ``site`` if given, else the best on clean weights."""
        if self.site is None:
            test = probe_data(model, task, self.config, "test")
            return sites[int(ridge.accuracy(test.x, test.y).argmax())]
        if self.site not in sites:
            raise ValueError(f"site={self.site!r}: not one of the probed sites {sites}.")
        return self.site

    def _check_ready(self) -> None:
        if not hasattr(self, "site_"):
            raise RuntimeError(f"{self.name}: call setup(model, task) on the clean weights first.")


class FrozenProbe(_ProbeAnalysis):
    """Probes fitted once on the clean weights, evaluated on each draw (representational drift).

    Arguments: ``config`` or the :class:`ProbeConfig` fields as keywords, ``site`` (the site of the
    effect; ``None``: the best on clean weights), ``name``. Fitted by :meth:`setup`: ``probe_`` (the
    ridge probes), ``sites_`` and ``site_`` (the chosen site; ``site`` itself is never changed).

    Metrics: ``acc_<site>`` per site, ``acc_mean``, the effect ``accuracy`` at ``site_``, and ``chance`` (the
    majority class's share of the test labels: the accuracy a probe has with no information, the floor
    its verdicts are measured from).
    One-shot counterpart: :func:`probe`.
    """

    def __init__(self, config: ProbeConfig | None = None, *, site: str | None = None,
                 name: str = "frozen_probe", **fields: Any):
        super().__init__(config, site=site, name=name, **fields)

    def setup(self, model: Any, task: Any) -> None:
        self.probe_, train = self._fit(model, task)
        self.sites_ = train.sites
        self.site_ = self._choose_site(self.probe_, model, task, self.sites_)

    def __call__(self, model: Any, task: Any) -> dict[str, float]:
        self._check_ready()
        test = probe_data(model, task, self.config, "test")
        return self._metrics(self.probe_.accuracy(test.x, test.y), test.sites, test.y)


class RefitProbe(_ProbeAnalysis):
    """Probes refitted (λ re-chosen) on each draw: is the information still linearly there?

    Arguments and metrics as :class:`FrozenProbe`; fitted by :meth:`setup`: ``sites_``, ``site_``.
    """

    def __init__(self, config: ProbeConfig | None = None, *, site: str | None = None,
                 name: str = "refit_probe", **fields: Any):
        super().__init__(config, site=site, name=name, **fields)

    def setup(self, model: Any, task: Any) -> None:
        ridge, train = self._fit(model, task)
        self.sites_ = train.sites
        self.site_ = self._choose_site(ridge, model, task, self.sites_)

    def __call__(self, model: Any, task: Any) -> dict[str, float]:
        self._check_ready()
        ridge, _ = self._fit(model, task)
        test = probe_data(model, task, self.config, "test")
        return self._metrics(ridge.accuracy(test.x, test.y), test.sites, test.y)
