"""Probe sweep analyses: ``FrozenProbe`` (fitted once on w0, representational drift) and ``RefitProbe``.

One-shot counterpart: :func:`analyses.probing.probe`.

Example::

    >>> from analyses.probing import FrozenProbe
    >>> FrozenProbe(label="label", positions=(-1,)).effects
    ('accuracy',)
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from analyses.probing._config import ProbeConfig
from analyses.probing._data import ProbeData, probe_data
from analyses.probing._fit import RidgeProbe, fit_ridge

__all__ = ["FrozenProbe", "RefitProbe"]


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
