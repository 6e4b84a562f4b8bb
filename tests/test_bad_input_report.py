"""Bad input to reports and verdicts (docs/bad-input.md, section "Reports and verdicts"): one test
``test_<row id>`` per row. Payloads in every string that reaches the page, planted views, a full disk,
verdicts that could be vacuous (below chance, absent at w0, a grid that cannot reach the effect),
typos that would select nothing, and names the plots must survive."""

from __future__ import annotations

import errno
import importlib.util
import logging
import os
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from interp.results import Results

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = "</script><script>document.title='x'</script>"
IMG = "<img src=x onerror=document.title='y'>"
NOSPACE = "<img/src=x/onerror=document.title='z'>"  # circuitsvis writes tokens as HTML: no space to mangle


def _check_report():
    spec = importlib.util.spec_from_file_location("check_report", ROOT / "scripts" / "check_report.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_report"] = module
    spec.loader.exec_module(module)
    return module


def curves(spec, chains=4, spread=0.01, meta=None):
    """Results from ``spec[(degradation, analysis, metric, kind)] = (baseline, [value per level],
    [ΔL per level])``; chain c adds spread·(c − 1.5) to every level's value (so the 95% bootstrap
    interval over 4 chains of a bounded metric is about mean ± spread)."""
    rows = []
    for (deg, analysis, metric, kind), (base, values, dls) in spec.items():
        rows.append({"degradation": deg, "level": None, "level_index": -1, "chain": -1, "draw": -1,
                     "baseline": True, "loss": 1.0, "delta_loss": 0.0, "divergence": 0.0, "analysis": analysis,
                     "metric": metric, "kind": kind, "value": base})
        for li, (v, dl) in enumerate(zip(values, dls)):
            for c in range(chains):
                rows.append({"degradation": deg, "level": 0.1 * (li + 1), "level_index": li, "chain": c, "draw": 0,
                             "baseline": False, "loss": 1.0 + dl, "delta_loss": dl, "divergence": dl,
                             "analysis": analysis, "metric": metric, "kind": kind,
                             "value": v + spread * (c - (chains - 1) / 2)})
    return Results(pd.DataFrame(rows), pd.DataFrame(), meta or {})


DL = [0.1, 0.2, 0.4, 0.8]


# ------------------------------------------------------------------------------------ security
def test_report_payload_in_names(tmp_path):
    """Script and markup payloads in the analysis, metric and degradation names, the title, the display
    names, sweep-file fields (meta) and the tokens and title of an attention view: all are text on the
    page; none runs (rendered in headless Chromium where it is installed)."""
    from interp.report import attention_view, write_report

    res = curves({(SCRIPT, IMG, SCRIPT + "m", "effect"): (0.95, [0.94, 0.9, 0.6, 0.3], DL),
                  (SCRIPT, IMG, "chance", "other"): (0.5, [0.5] * 4, DL)},
                 meta={"config": {"task": IMG, "out": SCRIPT, "degradation": {"type": SCRIPT}},
                       "note": IMG})
    view = attention_view([SCRIPT, IMG, NOSPACE], torch.rand(2, 3, 3), title=IMG, heads=[SCRIPT, IMG])
    page = write_report(res, tmp_path / "report.html", views=[view], title=SCRIPT, names={IMG: IMG + SCRIPT})
    html = page.read_text(encoding="utf-8")
    assert SCRIPT not in html and IMG not in html and NOSPACE not in html  # none appears as markup
    assert "&lt;/script&gt;&lt;script&gt;document.title=&#x27;x&#x27;&lt;/script&gt;" in html  # as text
    assert '"tokens": ["\\u0026lt;/script\\u0026gt;\\u0026lt;script' in html  # the view's data, escaped twice
    assert html.count("</script>") == 1  # the one circuitsvis bundle of the one view
    check = _check_report()
    assert check.injected_markup(html) == []
    if check.find_chromium() is None:
        pytest.skip("Chromium not installed (apt-get install chromium): checked on the HTML text only")
    assert check.check_report(page) == []  # title unchanged, no handler, no foreign script, view rendered


def test_report_planted_view(tmp_path, caplog):
    """Only views that save_view recorded (with their SHA-256) are read back: a planted file and a
    recorded one changed afterwards are left out with a warning; names cannot leave views/."""
    from interp.report import load_views, save_view

    save_view(tmp_path, "attention_0", "<p>mine</p>")
    save_view(tmp_path, "attention_1", "<p>mine too</p>")
    (tmp_path / "views" / "evil.html").write_text("<script>document.title='x'</script>")
    (tmp_path / "views" / "attention_1.html").write_text("<script>document.title='x'</script>")
    with caplog.at_level(logging.WARNING, logger="interp.report"):
        assert load_views(tmp_path) == ["<p>mine</p>"]
    text = caplog.text
    assert "changed since the sweep wrote it" in text and "attention_1.html" in text
    assert "did not record (evil.html)" in text
    for bad in ("../../name", "a/b", "..", "", "a\\b", ".hidden", 3):
        with pytest.raises(ValueError, match="without path separators or '..'"):
            save_view(tmp_path, bad, "<p>x</p>")
    assert not (tmp_path.parent / "name.html").exists()


def test_report_write_fails_midway(tmp_path, monkeypatch):
    """A full disk while writing report.html: the error names the file, the previous report is intact
    and no temporary file is left."""
    import interp.report as report

    res = curves({("d", "a", "recovered", "effect"): (0.95, [0.94, 0.9, 0.6, 0.3], DL)})
    path = report.write_report(res, tmp_path / "report.html")
    before = path.read_text(encoding="utf-8")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match=re.escape(str(path)) + r" \(No space left on device\): nothing was replaced"):
        report.write_report(res, path, title="second")
    assert path.read_text(encoding="utf-8") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


# ------------------------------------------------------------------------------------ verdicts
def test_verdict_below_chance_probe():
    """A binary probe (chance 0.5) at accuracy 0.94: the relative criterion is half the way from chance
    (θ = 0.72), not half the accuracy (0.47, below chance), so a level at 0.49 is lost, never held. A
    probe at 0.52 is at chance at w0: it never holds, whatever the criterion."""
    res = curves({("d", "probe", "accuracy", "effect"): (0.938, [0.93, 0.90, 0.60, 0.49], DL),
                  ("d", "probe", "chance", "other"): (0.5, [0.5] * 4, DL),
                  ("d", "weak", "accuracy", "effect"): (0.52, [0.52, 0.51, 0.50, 0.50], DL),
                  ("d", "weak", "chance", "other"): (0.5, [0.5] * 4, DL)})
    lines = dict(line.split(": ", 1) for line in res.verdicts())
    assert lines["probe"].startswith("holds (accuracy ≥ 0.719 = chance 0.5 + 0.5× (value at w0 − chance)) up to ΔL")
    assert "[0.2, 0.4]" in lines["probe"]  # held at 0.90, lost at 0.60
    assert lines["weak"] == ("never holds (accuracy = 0.52 at the trained weights, within 10% of the range above "
                             "chance 0.5: there is no finding at w0 to track)")
    from interp.verdicts import answer_table

    answers = answer_table(res).set_index("analysis")
    assert answers.loc["probe", "answer"] == "lost" and answers.loc["weak", "answer"] == "never holds"
    assert answers.loc["weak", "answer"] == answer_table(res, {"accuracy": 0.3}).set_index("analysis").loc[
        "weak", "answer"]  # absent at w0 whatever the criterion


def test_verdict_hypothesis_recovering_little():
    """A hypothesis that recovers 1.7% of the loss never holds: not by the relative criterion (0.5 ×
    0.017 would let it "hold over the whole grid"), nor by an absolute one below it."""
    res = curves({("d", "scrub_weak", "recovered", "effect"): (0.017, [0.017, 0.016, 0.017, 0.015], DL)},
                 spread=0.001)
    expected = ("scrub_weak: never holds (recovered = 0.017 at the trained weights, within 10% of the range above "
                "no recovery 0: there is no finding at w0 to track)")
    assert res.verdicts() == [expected]
    assert res.verdicts({"recovered": 0.01}) == [expected]


def test_verdict_threshold_typo(tmp_path):
    """A threshold for a metric that is not an effect of the results would select nothing."""
    from interp.report import parse_thresholds, write_report

    res = curves({("d", "a", "recovered", "effect"): (0.95, [0.94, 0.9, 0.6, 0.3], DL)})
    msg = r"thresholds: \['typo_metric'\] are not effect metrics of these results .*effect metrics: \['recovered'\]"
    with pytest.raises(ValueError, match=msg):
        res.verdicts({"typo_metric": 0.9})
    with pytest.raises(ValueError, match=msg):
        write_report(res, tmp_path / "r.html", thresholds={"typo_metric": 0.9})
    with pytest.raises(ValueError, match=r"thresholds\['recovered'\]='high'"):
        res.verdicts({"recovered": "high"})
    for item in ("recovered", "recovered=high", "=0.9", "recovered=nan"):
        with pytest.raises(ValueError, match=f"--threshold {re.escape(repr(item))}: give METRIC=NUMBER"):
            parse_thresholds([item])
    assert parse_thresholds(["recovered=0.9", "kl_recovered = 0.8"]) == {"recovered": 0.9, "kl_recovered": 0.8}
    from interp.app.cli import main

    res.save(tmp_path / "saved")
    assert main(["report", str(tmp_path / "saved"), "--threshold", "typo_metric=0.9"]) == 2
    assert main(["report", str(tmp_path / "saved"), "--threshold", "recovered=0.85"]) == 0
    assert "a: holds (recovered ≥ 0.85) up to ΔL" in (tmp_path / "saved" / "report.html").read_text(encoding="utf-8")


def test_verdict_effect_order():
    """The verdict speaks about the analysis's first effect (recovered, as causal scrubbing returns
    it), not the alphabetically first (kl_recovered)."""
    res = curves({("d", "scrub", "recovered", "effect"): (0.95, [0.94, 0.9, 0.6, 0.3], DL),
                  ("d", "scrub", "kl_recovered", "effect"): (0.9, [0.9, 0.9, 0.9, 0.9], DL)})
    (line,) = res.verdicts()
    assert line.startswith("scrub: holds (recovered ≥ 0.475")


def test_grid_cannot_reach_effect():
    """Every level moved the loss by at most ΔL 0.0085 against the hypothesis's 2.9-nat gap: "holds
    over the whole grid" says no dissolution point was reached, and loudly that the grid cannot test it."""
    tiny = [0.001, 0.002, 0.004, 0.0085]
    res = curves({("d", "scrub", "recovered", "effect"): (0.95, [0.95, 0.95, 0.94, 0.94], tiny),
                  ("d", "scrub", "gap", "other"): (2.9, [2.9] * 4, tiny)})
    (line,) = res.verdicts({"recovered": 0.9})
    assert "over the whole grid under d: no dissolution point reached (grid max ΔL 0.0085)" in line
    assert "WARNING: the grid moved the loss by at most ΔL 0.0085 nats/token against the effect's gap of 2.9" in line
    from interp.verdicts import answer_table

    row = answer_table(res, {"recovered": 0.9}).iloc[0]
    assert row["answer"] == "holds" and row["where"] == "not reached: grid max ΔL 0.0085"
    assert row["warning"].startswith("WARNING")


def test_clean_window_collateral_typo():
    res = curves({("d", "abl", "loss_carried", "effect"): (2.0, [2.0, 2.0, 1.0, 1.0], DL),
                  ("d", "abl", "kl_unclaimed", "collateral"): (0.2, [0.1, 0.1, 0.1, 0.2], DL)})
    with pytest.raises(ValueError, match=r"clean_window\(collateral='typo'\): no analysis returns this metric"):
        res.clean_window(collateral="typo")
    res.table.loc[res.table["metric"] == "kl_unclaimed", "kind"] = "other"
    empty = res.clean_window()
    assert empty.empty and "no analysis declares a collateral" in empty.attrs["why"]


def test_clean_window_not_attributable():
    """A ratio that rises because a collateral shared by all hypotheses fell is not attributed to the
    hypothesis; one whose own collateral fell more than the others' is."""
    from interp.verdicts import clean_window_findings

    spec = {("d", "weak", "recovered", "effect"): (0.108, [0.108] * 4, DL),
            ("d", "weak", "kl_unclaimed", "collateral"): (0.2, [0.1] * 4, DL),
            ("d", "other", "recovered", "effect"): (0.9, [0.9] * 4, DL),
            ("d", "other", "kl_unclaimed", "collateral"): (0.2, [0.1] * 4, DL)}
    res = curves(spec, spread=0.002)
    cw = res.clean_window()
    assert cw["better_than_w0"].all() and not cw["attributable"].astype(bool).any()
    text = "\n".join(clean_window_findings(res))
    assert "weak (recovered/kl_unclaimed) under d: better than at w0 (0.54)" in text
    assert "NOT attributable to the hypothesis there: kl_unclaimed fell as much under the other analyses" in text
    spec[("d", "other", "kl_unclaimed", "collateral")] = (0.2, [0.2] * 4, DL)  # only the hypothesis's fell
    cw = curves(spec, spread=0.002).clean_window().set_index("analysis")
    assert cw.loc["weak", "attributable"].tolist() == [True] * 4


def test_analysis_effects_given_as_a_string():
    """effects="recovered" would be read as the metrics r, e, c, …"""
    from interp.analysis import wrap_analysis

    class Scrub:
        name, effects, collaterals = "s", "recovered", ()

        def setup(self, model, task):
            pass

        def __call__(self, model, task):
            return {"recovered": 1.0}

    with pytest.raises(ValueError, match=r"Analysis 's': effects='recovered' is one string.*effects=\('recovered',\)"):
        wrap_analysis(Scrub())

    def fn(model, task):
        return {}
    fn.collaterals = "kl"
    with pytest.raises(ValueError, match="collaterals='kl' is one string"):
        wrap_analysis(fn)
    fn.collaterals = (1, 2)
    with pytest.raises(ValueError, match="a tuple of metric names"):
        wrap_analysis(fn)


def test_report_odd_analysis_names(tmp_path):
    """Analysis names that are ints or hold '$' (matplotlib mathtext), and an analysis that returns {}
    beside one that does not: the report renders; results with no rows at all say so."""
    import interp
    from interp.report import write_report
    from reliability_tiny import tiny_bridge, tiny_task

    res = curves({("d", 7, "recovered", "effect"): (0.95, [0.94, 0.9, 0.6, 0.3], DL),
                  ("d", "cost $x$ and $y", "score $a", "effect"): (2.0, [2.0, 1.9, 1.0, 0.5], DL)})
    html = write_report(res, tmp_path / "a.html").read_text(encoding="utf-8")
    assert "<td>7</td>" in html and "cost $x$ and $y" in html

    def nothing(model, task):
        return {}

    def price(model, task):
        return {"price $5$": 1.0}
    swept = interp.run_sweep(tiny_bridge(), tiny_task(), [nothing, price], interp.WeightNoise(draws_per_level=1),
                             [0.01], eval_rows=8, progress=False)
    assert "price $5$" in write_report(swept, tmp_path / "b.html").read_text(encoding="utf-8")
    with pytest.raises(ValueError, match="these results hold no rows"):  # (a sweep refuses to store none)
        write_report(curves({}), tmp_path / "c.html")


def test_scrubbing_warnings_once(organism, caplog):
    """The small-class warning once per analysis and sweep (it was printed at every draw); the
    vacuous-rule warning only for a hypothesis that does recover much (not one at 0.3%)."""
    from analyses.scrubbing import Agree, CausalScrubbing, Hypothesis, VacuousRuleWarning
    from analyses.scrubbing._hypothesis import Head

    model, task = organism
    from analyses.scrubbing.induction import hypotheses

    a = CausalScrubbing(hypotheses()["correct"], eval_rows=16, seeds=1, bootstrap=10, min_class=10**6)
    a.setup(model, task)
    with caplog.at_level(logging.WARNING, logger="analyses.scrubbing._analysis"):
        first, second = a(model, task), a(model, task)
    assert first["flag_small_class"] == second["flag_small_class"] == 1.0
    assert caplog.text.count("came from a class with fewer than min_class") == 1
    assert "Said once for this analysis in this sweep" in caplog.text

    def next_token(cols):
        ids = cols["input_ids"].long()
        return torch.cat([ids[:, 1:], torch.full_like(ids[:, :1], -1)], 1)

    weak = CausalScrubbing(Hypothesis([Head(0, 0, Agree.on(next_token, "next token", per_position=True))]),
                           eval_rows=16, seeds=1, bootstrap=10)
    weak.setup(model, task)
    with warnings.catch_warnings():
        warnings.simplefilter("error", VacuousRuleWarning)
        out = weak(model, task)
    assert out["recovered"] < 0.1


# ------------------------------------------------------------------------ against weight noise
def test_verdict_outlasts_weight_noise():
    """For a hypothesis under the tempered posterior and weight noise, the verdict says whether it
    outlasts the noise at equal ΔL (intervals of dissolution apart), does not, or is undecided; also
    given the weight-noise sweep's results separately (noise=)."""
    from interp.verdicts import answer_table

    late = ([0.95, 0.94, 0.93, 0.92, 0.5], [0.1, 0.2, 0.4, 0.8, 1.6])
    early = ([0.95, 0.5, 0.4, 0.3, 0.2], [0.1, 0.2, 0.4, 0.8, 1.6])
    both = curves({("TemperedPosterior", "scrub", "recovered", "effect"): (0.96, *late),
                   ("WeightNoise", "scrub", "recovered", "effect"): (0.96, *early)})
    (line,) = both.verdicts({"recovered": 0.9})
    assert line.endswith("; outlasts the weight-noise baseline at equal ΔL: dissolves within ΔL [0.8, 1.6] under "
                         "TemperedPosterior, against [0.1, 0.2] under WeightNoise")
    table = answer_table(both, {"recovered": 0.9}).set_index("degradation")
    assert table.loc["TemperedPosterior", "vs_weight_noise"] == "outlasts"
    swapped = curves({("TemperedPosterior", "scrub", "recovered", "effect"): (0.96, *early),
                      ("WeightNoise", "scrub", "recovered", "effect"): (0.96, *late)})
    assert "does not outlast the weight-noise baseline at equal ΔL" in swapped.verdicts({"recovered": 0.9})[0]
    same = curves({("TemperedPosterior", "scrub", "recovered", "effect"): (0.96, *late)})
    noise = curves({("WeightNoise", "scrub", "recovered", "effect"): (0.96, *late)})
    assert "undecided against the weight-noise baseline at equal ΔL" in same.verdicts({"recovered": 0.9},
                                                                                       noise=noise)[0]
    with pytest.raises(ValueError, match="not WeightNoise"):
        same.verdicts(noise=same)
    assert np.isfinite(both.dissolution("scrub", "recovered", threshold=0.9, degradation="WeightNoise").delta_loss)
