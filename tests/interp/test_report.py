"""The main job end to end (quick mode) and its HTML report, rendered in headless Chromium if present."""

import importlib.util
from html import escape as html_escape
import sys
from pathlib import Path

import pytest

from interp.results import Results

ROOT = Path(__file__).resolve().parents[2]


def _check_report():
    spec = importlib.util.spec_from_file_location("check_report", ROOT / "scripts" / "check_report.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_report"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from interp.app.demo import run_demo

    out = tmp_path_factory.mktemp("demo")
    return out, run_demo(out, progress=False, quick=True)


@pytest.mark.slow
def test_demo_writes_results_and_report(demo):
    out, summary = demo
    assert summary["clean"]["accuracy"] > 0.95
    res = Results.load(out / "results")
    assert set(res.table["degradation"]) == {"TemperedPosterior", "WeightNoise"}
    assert set(res.table["analysis"]) == {
        "scrub_correct", "scrub_wrong_heads", "prev_token_head", "norms", "head_scores"}
    # the calibrated level: measured loss increase near the 0.3 nats/token asked for
    tp = res.table[(res.table["degradation"] == "TemperedPosterior") & ~res.table["baseline"]]
    assert 0.1 < tp["delta_loss"].mean() < 0.6
    assert res.meta["parts"][0]["levels"]["0"]["calibration"]["target"] == 0.3
    html = Path(summary["report"]).read_text()
    for section in ("Effects and collateral against loss", "Other metrics against loss", "Survival of effects",
                    "Calibration", "Attention"):
        assert section in html
    assert html.count('<div id="circuits-vis-') == 2  # clean weights and a degraded draw
    survival = summary["survival"]
    assert set(zip(survival["analysis"], survival["metric"])) == {
        ("scrub_correct", "recovered"), ("scrub_correct", "kl_recovered"),
        ("scrub_wrong_heads", "recovered"), ("scrub_wrong_heads", "kl_recovered"),
        ("prev_token_head", "loss_carried")}
    assert len(survival) == 10  # for each of the two degradations
    # at the trained weights the correct hypothesis explains the behaviour, the wrong heads do not
    base = survival.set_index(["degradation", "analysis", "metric"])["baseline"]
    assert base["TemperedPosterior", "scrub_correct", "recovered"] > 0.9
    assert base["TemperedPosterior", "scrub_wrong_heads", "recovered"] < 0.4
    # against the absolute 90%: the correct hypothesis holds at the trained weights, the wrong one never
    absolute = summary["survival_absolute"].set_index(["degradation", "analysis", "metric"])
    assert len(absolute) == 8 and (absolute["threshold"] == 0.9).all()
    assert absolute.loc[("TemperedPosterior", "scrub_correct", "recovered"), "held_at_baseline"]
    wrong = absolute.xs("scrub_wrong_heads", level="analysis")
    assert not wrong["held_at_baseline"].any() and wrong["last_held_level"].isna().all()
    assert "Against absolute thresholds" in html


@pytest.mark.slow
def test_report_renders_in_headless_chromium(demo):
    check = _check_report()
    if check.find_chromium() is None:
        pytest.skip("Chromium not installed (apt-get install chromium)")
    assert check.check_report(Path(demo[1]["report"])) == []
    # the verdicts are on the first screen at 1280 × 800 and nothing is wider than the window
    assert check.check_layout(Path(demo[1]["report"]), 1280, 800) == []


@pytest.mark.slow
def test_demo_answers_first(demo):
    """The report's first section is one verdict line per analysis (the demo also returns them)."""
    out, summary = demo
    html = Path(summary["report"]).read_text()
    top = html.index("<section id='verdicts'>")
    assert top < html.index("<img") and top < html.index("<h2>Survival and dissolution")
    verdicts = summary["verdicts"]
    assert any(v.startswith("correct induction hypothesis: ") for v in verdicts)
    assert "wrong-heads hypothesis: never holds (recovered = " in "\n".join(verdicts)
    for v in verdicts:
        assert html_escape(v) in html[top:top + 20_000]
    # the same verdicts in the notebook view of the saved results (thresholds kept in meta)
    assert Results.load(out / "results").verdicts(names=None)[0].split(": ", 1)[1] in Results.load(
        out / "results")._repr_html_()


def _synthetic():
    from test_results_survival import CURVES, synthetic

    return synthetic(CURVES)


def test_verdict_lines_come_first_and_tables_are_readable(tmp_path):
    from interp.report import write_report

    res = _synthetic()
    html = write_report(res, tmp_path / "r.html", thresholds={"recovered": 0.9},
                        names={"correct": "correct hypothesis", "wrong": "wrong hypothesis"}).read_text()
    body = html[html.index("<body>"):]
    first_h2 = body.index("<h2>")
    assert body[first_h2:].startswith("<h2>Verdicts</h2>")
    verdicts = body[first_h2:body.index("</ul>", first_h2)]
    assert "correct hypothesis: holds (recovered ≥ 0.9) up to ΔL" in verdicts
    assert "wrong hypothesis: never holds (recovered = 0.24 &lt; 0.9 at the trained weights)" in verdicts
    assert body.index("<h2>Verdicts</h2>") < body.index("<img")
    assert "<details><summary>Raw summary" in html  # the raw table is collapsed
    assert html.count("<table") == html.count("<div class='wrap'><table")  # every table scrolls in its box


def test_failed_levels_are_said_as_such_in_the_verdicts(tmp_path):
    from interp.report import write_report

    res = _synthetic()
    res.meta = {"levels": {"1": {"calibration": {"target": 0.2, "nbeta": 50.0, "converged": False,
                                                 "rounds": [{}, {}]}}}}
    html = write_report(res, tmp_path / "r.html", thresholds={"recovered": 0.9}).read_text()
    top = html[:html.index("</section>")]
    assert "<li class='failed'>d level 1: failed (calibration to ΔL 0.2 did not converge in 2 rounds)" in top
    assert "1 failed level(s) not counted" in top
    assert "failed (calibration to ΔL 0.2" in res._repr_html_()


def test_report_of_a_model_without_a_loss_reads_the_divergence(tmp_path):
    """A sweep whose task has no loss (as MiniLM's): the verdicts, the survival table and the figures
    are along the behavioural divergence, named with its units (before: ΔL, NaN everywhere)."""
    from test_results_survival import no_loss_results

    from interp.report import write_report

    html = write_report(no_loss_results(), tmp_path / "r.html").read_text()
    top = html[:html.index("</section>")]
    assert "align: holds (cosine ≥ 0.5 = 0.5× its value at w0) up to divergence " in top
    assert "normalised MSE under WeightNoise" in top
    assert "interpolated between the grid's levels on the measured divergence (normalised MSE)" in top
    assert "against divergence from w0 (normalised MSE)" in html
    assert "<th>last_held_divergence</th>" in html.replace("\u200b", "")  # headers break after "_"


def test_layout_checker_catches_overflow_and_buried_verdicts(tmp_path):
    check = _check_report()
    if check.find_chromium() is None:
        pytest.skip("Chromium not installed (apt-get install chromium)")
    page = tmp_path / "wide.html"
    page.write_text("<html><head></head><body><div style='height:1500px'>intro</div><section id='verdicts'>"
                    "<ul class='verdicts'><li>x: holds</li></ul></section>"
                    "<table><tr>" + "<td>wide cell value</td>" * 200 + "</tr></table></body></html>")
    problems = check.check_layout(page, 1280, 800)
    assert any("horizontal overflow" in p for p in problems)
    assert any("not all on the first screen" in p for p in problems)


def test_checker_catches_a_broken_page(tmp_path):
    check = _check_report()
    if check.find_chromium() is None:
        pytest.skip("Chromium not installed (apt-get install chromium)")
    page = tmp_path / "bad.html"
    page.write_text('<html><head></head><body><div id="circuits-vis-x"></div>'
                    "<script>undefinedFunction();</script></body></html>")
    problems = check.check_report(page)
    assert any("undefinedFunction" in p for p in problems)
    assert any("circuits-vis-x" in p for p in problems)


def test_answer_table_first_units_and_readable_calibration(tmp_path):
    """The page opens with the answer table (one row per analysis × degradation), defines the axes
    (what the divergence compares, on which rows), says when the posterior was calibrated on another
    objective than the task, and gives the calibration as a table, levels in one notation."""
    from test_bad_input_report import DL, curves

    from interp._figures import metric_label
    from interp.report import write_report

    res = curves({("TemperedPosterior", "scrub", "recovered", "effect"): (0.95, [0.94, 0.9, 0.6, 0.3], DL),
                  ("WeightNoise", "scrub", "recovered", "effect"): (0.95, [0.95, 0.94, 0.93, 0.92], DL)},
                 meta={"config": {"task": "ioi", "eval_rows": 64},
                       "levels": {"0": {"calibration": {"target": 0.1, "objective": "corpus", "units": "nats/token",
                                                        "converged": True}}}})
    html = write_report(res, tmp_path / "r.html", thresholds={"recovered": 0.9}).read_text().replace("\u200b", "")
    top = html[:html.index("</section>")]
    assert top.index("<table") < top.index("<ul class='verdicts'>")  # the answers, then the prose
    for cell in ("<td>scrub</td>", "<td>lost</td>", "<td>dissolves at ΔL 0.2 [0.1, 0.4]</td>", "<td>holds</td>",
                 "<td>not reached: grid max ΔL 0.8</td>", "<td>does not outlast</td>"):
        assert cell in top, cell
    assert "KL(p<sub>w0</sub> ‖ p<sub>w</sub>) of the next-token distributions" in top
    assert "the sweep's 64 fixed evaluation rows" in top
    assert "calibrated to a target increase of corpus (nats/token), not of the task's loss" in top
    calibration = html[html.index("<h2>Calibration</h2>"):]
    assert calibration.startswith("<h2>Calibration</h2><div class='wrap'><table")
    assert "<td>σ=0.1</td>" in html and "<td>w0</td>" in html  # one notation for levels
    assert metric_label("recovered") == "recovered (fraction of the loss gap recovered)"
    assert metric_label("acc_L3") == "acc_L3 (fraction correct)"
