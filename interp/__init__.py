"""interp: mechanistic interpretability on trained and naturally degraded weights.

Every analysis runs on the trained weights and on degraded copies: samples of the tempered local
Bayesian posterior (SGLD at a grid of temperatures), plus Gaussian weight noise, activation noise and
earlier checkpoints as baselines. Real mechanisms persist over a range of temperatures; spurious ones
dissolve.

Importing ``interp`` is cheap: TransformerLens, torch-heavy modules and the organisms load on first
use of the names below.

Example::

    >>> import interp
    >>> model, task = interp.organisms.load("induction")
    >>> task.evaluate(model)["accuracy"] > 0.9
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hooks._lazy import attach

__version__ = "0.1.0"

# The public names, listed once: type checkers read these imports; at run time `attach` reads the
# same block and imports each module on first access of one of its names.
if TYPE_CHECKING:  # pragma: no cover
    from interp import checks, degradations, objectives, organisms, sweep, verdicts
    from interp.analysis import Analysis
    from interp.degradations import (
        ActivationNoise, Checkpoints, Draw, LossIncrease, NBeta, TemperedPosterior, WeightNoise,
        estimate_component_llcs, estimate_llc,
    )
    from interp.crossing import Dissolution, DissolutionComparison, compare_dissolutions
    from interp.dissolve import dissolution
    from interp.models import load_model
    from interp.divergence import DivergenceMeter
    from interp.objectives import Behavioural, CorpusLoss, Objective
    from interp.results import Results
    from interp.sweep import LocalExecutor, ModelRecipe, RayExecutor, SweepJobsFailed, run_sweep
    from interp.sweep.plan import SweepPlan, plan
    from interp.tasks import Task

__getattr__, __dir__, __all__ = attach(__name__, __file__)
__all__.append("__version__")
