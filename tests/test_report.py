"""The main job end to end (quick mode) and its HTML report, rendered in headless Chromium if present."""

import importlib.util
import sys
from pathlib import Path

import pytest

from interp.results import Results

ROOT = Path(__file__).resolve().parents[1]


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
