"""Bad input to sweeps, stores and resumes (docs/bad-input.md, section "Sweeps, stores and resumes").

One test per catalogue row, named ``test_<row id>``: resumes that check what they resume (task data,
objective data, analysis parameters and version), inputs validated before ``config.json`` and the
baseline are written, stores whose records were changed, the out lock on early failures, and the
CLI's ``report``/``sweep``/``organisms`` surface. Everything runs on the tiny 1-layer bridge
(``tests/reliability_tiny.py``): each sweep takes well under a second.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
import torch

from interp.degradations import WeightNoise
from interp.sweep import run_sweep
from interp.sweep.store import StoreCorrupt
from reliability_tiny import LossProbe, tiny_task


def _noise() -> WeightNoise:
    return WeightNoise(draws_per_level=2, eval_rows=8)


def _sweep(model, task, analyses, out, levels=(0.1,), degradation=None, **kw):
    return run_sweep(model, task, list(analyses), degradation or _noise(), list(levels), out=out, eval_rows=8,
                     progress=False, **kw)


# ------------------------------------------------------------------------------------------ resumes
def test_resume_with_other_task_data(tiny, tmp_path):
    model, task = tiny
    first = _sweep(model, task, [LossProbe()], tmp_path)
    again = _sweep(model, tiny_task(), [LossProbe()], tmp_path)  # the same data rebuilt: resumes exactly
    assert again.table.equals(first.table)
    other = tiny_task(seed=1)  # same name 'tiny', other rows (another split seed / corpus)
    assert other.name == task.name
    with pytest.raises(ValueError, match=r"differs in \['task_data'\].*task data differs: rows digest "
                                         r"[0-9a-f]{12}… stored vs [0-9a-f]{12}… now \(a task named 'tiny' "
                                         r"with other rows"):
        _sweep(model, other, [LossProbe()], tmp_path)
    assert len(list((tmp_path).glob("rows.jsonl"))) == 1
    assert _sweep(model, task, [LossProbe()], tmp_path).table.equals(first.table)  # nothing was mixed in


def test_resume_with_other_objective_data(tiny, tmp_path):
    from interp.degradations import TemperedPosterior
    from interp.objectives import CorpusLoss

    model, task = tiny
    sampler = lambda corpus: TemperedPosterior(localization=100.0, lr=1e-4, chains=1, n_draws=1, burnin=1,  # noqa: E731
                                               batch_size=8, eval_rows=8, progress=False,
                                               objective=CorpusLoss(corpus))
    _sweep(model, task, [LossProbe()], tmp_path, levels=[300.0], degradation=sampler(tiny_task(seed=2)))
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert re.fullmatch(r"[0-9a-f]{64}", cfg["objective_data"]) and cfg["objective_data"] != cfg["task_data"]
    with pytest.raises(ValueError, match=r"objective data differs: rows digest [0-9a-f]{12}… stored vs "
                                         r"[0-9a-f]{12}… now \(the posterior samples on other data\)"):
        _sweep(model, task, [LossProbe()], tmp_path, levels=[300.0], degradation=sampler(tiny_task(seed=3)))


def test_resume_with_other_analysis(tiny, tmp_path):
    model, task = tiny
    _sweep(model, task, [LossProbe()], tmp_path)
    # renamed: another analysis, never resumed beside the old one's rows
    with pytest.raises(ValueError, match=r"analyses differ: stored \['loss_probe'\], now \['renamed'\] .*a "
                                         r"renamed analysis is another analysis"):
        _sweep(model, task, [LossProbe(name="renamed")], tmp_path)
    # a parameter changed, on a user class that declares its parameters (get_params, the scikit-learn way)
    class Declared(LossProbe):
        def __init__(self, rows=8):
            super().__init__(name="declared")
            self.rows = rows

        def get_params(self):
            return {"rows": self.rows}

    _sweep(model, task, [Declared()], tmp_path / "declared")
    with pytest.raises(ValueError, match=r"analysis 'declared' differs: params\.rows 8 vs 16"):
        _sweep(model, task, [Declared(rows=16)], tmp_path / "declared")
    # a shipped analysis: its parameters (get_params(), as for any analysis) are part of the identity
    from analyses import ResidualNorms

    _sweep(model, task, [ResidualNorms(eval_rows=8)], tmp_path / "shipped")
    with pytest.raises(ValueError, match=r"analysis 'norms' differs: params\.eval_rows 8 vs 4"):
        _sweep(model, task, [ResidualNorms(eval_rows=4)], tmp_path / "shipped")


def test_resume_with_other_analysis_version(tiny, tmp_path):
    model, task = tiny
    scale = {"factor": 1.0}

    def score(model, task):
        return {"score": 4.2 * scale["factor"]}

    _sweep(model, task, [score], tmp_path)
    scale["factor"] = 1000.0  # the output's scale changed: invisible to any check ...
    mixed = _sweep(model, task, [score], tmp_path)  # ... so it resumes (the finished draws are kept)
    assert mixed.table["value"].tolist() == pytest.approx([4.2] * 3)
    score.version = 2  # ... until the user says so: a version bump
    with pytest.raises(ValueError, match=r"analysis 'score' differs: version null vs 2 \(its version changed"):
        _sweep(model, task, [score], tmp_path)

    class Scaled(LossProbe):
        version = "2024-06"

    _sweep(model, task, [Scaled(name="v")], tmp_path / "cls")
    Scaled.version = "2024-07"
    with pytest.raises(ValueError, match=r"analysis 'v' differs: version 2024-06 vs 2024-07"):
        _sweep(model, task, [Scaled(name="v")], tmp_path / "cls")


def test_resume_of_a_sweep_stored_before_fingerprints(tiny, tmp_path, caplog):
    model, task = tiny
    first = _sweep(model, task, [LossProbe()], tmp_path)
    cfg_file = tmp_path / "config.json"
    cfg = json.loads(cfg_file.read_text())
    del cfg["task_data"]
    cfg["analyses"] = [{k: v for k, v in a.items() if k != "params"} for a in cfg["analyses"]]
    cfg_file.write_text(json.dumps(cfg))  # what an older interp wrote
    with caplog.at_level("WARNING"):
        again = _sweep(model, task, [LossProbe()], tmp_path)
    assert again.table.equals(first.table)
    assert "cannot check that the task's data is the same" in caplog.text


# ------------------------------------------------------------------------------------------- stores
def _records(tmp_path: Path) -> list[str]:
    return (tmp_path / "rows.jsonl").read_text().splitlines(keepends=True)


def test_store_record_tampered(tiny, tmp_path):
    model, task = tiny
    _sweep(model, task, [LossProbe()], tmp_path)
    rows = tmp_path / "rows.jsonl"
    lines = _records(tmp_path)
    good = "".join(lines)
    rec = json.loads(lines[1])
    rec["rows"][0]["value"] += 1.0  # a changed value inside a line that still parses
    rows.write_text(lines[0] + json.dumps(rec) + "\n" + "".join(lines[2:]))
    with pytest.raises(StoreCorrupt, match=rf"{rows} line 2 is corrupt: a record whose content does not match "
                                           r"its checksum .* The 1 lines before it are intact"):
        _sweep(model, task, [LossProbe()], tmp_path)
    rec = json.loads(lines[1])
    rec["rows"] = []
    rec.pop("sha256")
    rows.write_text(lines[0] + json.dumps(rec) + "\n" + "".join(lines[2:]))
    with pytest.raises(StoreCorrupt, match=r"line 2 is corrupt: a record with no rows"):
        _sweep(model, task, [LossProbe()], tmp_path)
    rec = json.loads(lines[1])
    rec["key"][0] = 7  # a level the sweep does not have
    rec.pop("sha256")
    rows.write_text(good + json.dumps(rec) + "\n")
    with pytest.raises(StoreCorrupt, match=r"line 4 is corrupt: a record keyed to level index 7, but the sweep "
                                           r"has 1 level\(s\)"):
        _sweep(model, task, [LossProbe()], tmp_path)
    from interp.results import Results

    with pytest.raises(StoreCorrupt, match=r"line 4 is corrupt: a record keyed to level index 7"):
        Results.load(tmp_path)
    rows.write_text(good)
    assert len(_sweep(model, task, [LossProbe()], tmp_path).table) == 3 * 2


def test_analysis_returns_no_metrics(tiny, tmp_path):
    model, task = tiny

    def nothing(model, task):
        return {}

    with pytest.raises(ValueError, match=r"draw \[-1, -1, -1\] has no metrics: every analysis returned an empty "
                                         r"dict"):
        _sweep(model, task, [nothing], tmp_path)
    assert not (tmp_path / "config.json").exists()  # the fixed rerun is not refused


def test_analysis_misses_its_declared_effect(tiny, tmp_path):
    model, task = tiny

    class Claim:
        name, effects, collaterals = "claim", ("recovered",), ()

        def __call__(self, model, task):
            return {"recoverd": 0.9}  # a typo: the declared effect never appears

    with pytest.raises(ValueError, match=r"Analysis 'claim' declares \['recovered'\] in its effects/collaterals but "
                                         r"its call at the trained weights returned only \['recoverd'\]"):
        _sweep(model, task, [Claim()], tmp_path)
    assert not (tmp_path / "config.json").exists()


def test_sweep_fails_before_its_loop(tiny, tmp_path):
    model, task = tiny

    class Broken(type(task)):
        def tensors(self, *a, **k):
            raise RuntimeError("tensors failed")

    broken = Broken(task.name, task.dataset)
    with pytest.raises(RuntimeError, match="tensors failed"):
        _sweep(model, broken, [LossProbe()], tmp_path)
    assert not (tmp_path / "sweep.lock").exists()
    _sweep(model, task, [LossProbe()], tmp_path)  # the rerun in the same process is not refused


# ------------------------------------------------------------------------------------ interp report
def _cli(capsys, *argv) -> tuple[int, str]:
    from interp.app.cli import main

    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


def test_report_pools_sweeps_of_one_degradation(tiny, tmp_path):
    from interp.app.sweepfile import _separate_sweeps, rebuild_report
    from interp.results import Results

    model, task = tiny
    _sweep(model, task, [LossProbe()], tmp_path / "small", levels=[0.05])
    _sweep(model, task, [LossProbe()], tmp_path / "large", levels=[0.3])
    loaded = [(p, Results.load(p)) for p in (tmp_path / "large", tmp_path / "small")]
    s = Results.concat(_separate_sweeps(loaded)).summary()
    drawn = s[(s["level_index"] == 0) & (s["metric"] == "loss")]
    # one row per sweep, each with its own 2 draws, never σ 0.05 and 0.3 pooled into 4
    assert sorted(drawn["degradation"]) == ["WeightNoise [large]", "WeightNoise [small]"]
    assert drawn["n_draws"].tolist() == [2, 2] and sorted(drawn["level"]) == [0.05, 0.3]
    import shutil

    shutil.copytree(tmp_path / "small", tmp_path / "small-copy")
    with pytest.raises(ValueError, match=r"small and .*small-copy hold the same sweep \(identical config.json\): a "
                                         r"copy\. Reporting both would count every draw twice"):
        rebuild_report(tmp_path)


def test_report_on_unfinished_or_damaged_results(tiny, tmp_path, capsys):
    model, task = tiny
    killed = tmp_path / "killed" / "sweep"  # what `interp sweep` leaves when killed before its first record
    killed.mkdir(parents=True)
    (killed / "rows.jsonl").write_text('{"key": [-1, -1, -1], "ro')  # a torn first line
    (killed / "sweep.lock").write_text(json.dumps({"pid": 999999, "host": "h", "started": 0}))
    code, err = _cli(capsys, "report", str(tmp_path / "killed"))
    assert code == 2 and "new out directory" not in err
    assert re.fullmatch(r"interp: error: .*killed/sweep holds no rows yet \(its sweep\.lock says a sweep is still "
                        r"writing to it, or was killed\): its sweep stopped before storing its first draw\. Rerun "
                        r"the same `interp sweep`/`interp demo` command: it resumes there .*", err)
    # corrupt JSON: the file is named
    done = tmp_path / "done"
    _sweep(model, task, [LossProbe()], done / "sweep")
    (done / "sweep" / "config.json").write_text("{")
    code, err = _cli(capsys, "report", str(done))
    assert code == 2 and f"{done / 'sweep' / 'config.json'} is corrupt (JSONDecodeError at line 1 column 2)" in err
    assert "\n" not in err
    # saved results without draws.parquet
    saved = tmp_path / "saved"
    _sweep(model, task, [LossProbe()], None).save(saved / "results")
    (saved / "results" / "draws.parquet").unlink()
    code, err = _cli(capsys, "report", str(saved))
    assert code == 2 and "has table.parquet but not draws.parquet: the results were not saved completely" in err
    assert "\n" not in err


# ------------------------------------------------------------------------------- validate first
def test_sweep_inputs_checked_before_writing(tiny, tmp_path):
    from interp.degradations import ActivationNoise, Checkpoints, TemperedPosterior

    model, task = tiny
    garbage = tmp_path / "step100.pt"
    garbage.write_bytes(b"not a checkpoint")
    sampler = dict(localization=100.0, lr=1e-4, chains=1, n_draws=1, burnin=1, batch_size=8, eval_rows=8,
                   progress=False)
    bad = [
        (WeightNoise(draws_per_level=2, eval_rows=8, restrict="blocks.7.*"), [0.1], r"restrict.*'blocks\.7\.\*'"),
        (TemperedPosterior(restrict=["blocks.9.attn.*"], **sampler), [300.0], r"restrict.*'blocks\.9\.attn\.\*'"),
        (ActivationNoise(points=["blocks.0.hook_resid_pots"], draws_per_level=2, eval_rows=8), [0.1],
         r"unknown point 'blocks\.0\.hook_resid_pots'.*closest valid names: 'blocks\.0\.hook_resid_post'"),
        (Checkpoints([garbage], eval_rows=8), [None], r"step100\.pt cannot be read as a weights-only torch state dict"),
    ]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for i, (degradation, levels, message) in enumerate(bad):
        out = tmp_path / f"out{i}"
        with pytest.raises(ValueError, match=message):
            _sweep(model, task, [LossProbe()], out, levels=levels, degradation=degradation)
        assert not (out / "config.json").exists() and not (out / "rows.jsonl").exists()  # nothing to refuse
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    fixed = WeightNoise(draws_per_level=2, eval_rows=8, restrict="blocks.0.*")
    assert len(_sweep(model, task, [LossProbe()], tmp_path / "out0", degradation=fixed).draws) == 2


def test_sweep_file_restrict_checked_before_writing(tmp_path, sweep_file, capsys):
    path = sweep_file(tmp_path / "sweep.toml", "runs")
    path.write_text(path.read_text().replace('relative = true', 'relative = true\nrestrict = ["blocks.1.atn.*"]'))
    for executor in ("local", "ray"):  # the Ray jobs load their own model: the driver checks first
        code, err = _cli(capsys, "-q", "sweep", str(path), "--executor", executor)
        assert code == 2 and "blocks.1.atn.*" in err and "\n" not in err
        assert not (tmp_path / "runs" / "sweep" / "config.json").exists()
    path.write_text(path.read_text().replace("blocks.1.atn.*", "blocks.1.attn.*").replace("0.05, 0.3", "0.05"))
    code, err = _cli(capsys, "-q", "sweep", str(path))  # the corrected file runs in the same out
    assert code == 0, err
    assert (tmp_path / "runs" / "report.html").exists()


def test_dissolution_arguments_checked_first(tiny, tmp_path):
    import interp

    model, task = tiny
    noise = WeightNoise(relative=True, draws_per_level=2, eval_rows=8)
    calls = {"n": 0}

    def agreement(model, task):  # a plain function is an analysis here too
        calls["n"] += 1
        with torch.no_grad():
            return {"loss": float(task.loss(model, task.tensors("test", rows=8)))}

    bad = [
        (dict(metric="loss", threshold="0.9"), r"threshold='0\.9': must be a finite number"),
        (dict(metric="loss", relative=2.0), r"relative=2\.0: must be in \(0, 1\]"),
        (dict(metric="loss", threshold=1.0, limits=(3.0, 0.003)), r"limits=\(3\.0, 0\.003\): reversed or empty; give "
                                                                 r"\(low, high\) with low < high, e\.g\. limits=\(0\.003, 3\.0\)"),
        (dict(metric="los", threshold=1.0), r"metric='los': agreement returns \['loss'\] at the trained weights; "
                                            r"name one of them, e\.g\. metric='loss'"),
        (dict(metric="loss", threshold=1.0, progress="yes"), r"progress='yes': True, False or None"),
    ]
    for kwargs, message in bad:
        with pytest.raises(ValueError, match=message):
            interp.dissolution(model, task, agreement, noise, eval_rows=8, out=tmp_path, **kwargs)
        assert not any(tmp_path.iterdir())  # no level's sweep ran
    assert calls["n"] == 1  # only the metric check called it, once, at the trained weights
    d = interp.dissolution(model, task, agreement, noise, metric="loss", threshold=0.0, start=0.01,
                           limits=(0.01, 0.03), eval_rows=8, progress=False)
    assert d.analysis == "agreement" and d.outcome == "holds_throughout"


# ------------------------------------------------------------------------------------ CLI frictions
def test_cli_help_and_listing(capsys):
    from interp.app.cli import _organism_table, build_parser

    rows = [("induction", "a " * 40), ("induction_full", "b"), ("minilm", "c")]
    for width in (None, 50):
        lines = _organism_table(rows, width=width).splitlines()
        col = len("induction_full") + 2  # every description starts in one column
        assert all(line[:col].rstrip() in ("", "induction", "induction_full", "minilm") and line[col] != " "
                   for line in lines)
        assert [line[:col].rstrip() for line in lines if line[0] != " "] == ["induction", "induction_full", "minilm"]
        assert all(len(line) <= (width or 1000) for line in lines)
    assert len(_organism_table(rows, width=50).splitlines()) > 3  # wrapped under its column
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    sweep_help, report_help = sub["sweep"].format_help(), sub["report"].format_help()
    assert "docs/sweep-files.md" in sweep_help and "examples/sweep-weight-noise.toml" in sweep_help
    assert "interp.app.sweepfile" not in sweep_help and '[[analyses]]' in sweep_help
    assert "Rebuild DIR/report.html" in report_help
    root = Path(__file__).resolve().parents[1]
    assert (root / "examples" / "sweep-weight-noise.toml").exists() and (root / "docs" / "sweep-files.md").exists()
    # the documented example parses as a sweep file (nothing is run)
    import tomllib

    example = tomllib.loads((root / "docs" / "sweep-files.md").read_text().split("```toml\n")[1].split("```")[0])
    assert set(example) == {"out", "seed", "model", "degradation", "levels", "analyses"}


# ------------------------------------------------------------------------------------------ progress
def test_progress_shows_calibration_and_the_whole_sweep(tiny, capsys, caplog):
    import logging

    from interp.degradations import Degradation, LevelAxis, LossIncrease

    model, task = tiny
    calibration_log = logging.getLogger("interp.degradations")

    class Calibrating(Degradation):
        """Weight noise whose levels first 'calibrate' in two logged rounds, as the sampler does."""

        name = "Calibrating"
        level_axis = LevelAxis("delta", "target loss increase")

        def check_level(self, level):
            if not isinstance(level, LossIncrease):
                raise ValueError(f"Calibrating level={level!r}: a LossIncrease.")

        def replicates(self):
            return 1

        def draws(self, model, target=None, level=None):
            for r, b in enumerate((50.0, 120.0)):
                calibration_log.info("calibration: B=%.4g ΔL=%.4g (target %.4g)", b, 0.05 * (r + 1), level.delta)
            yield from _noise().draws(model, target, 0.1)

    before = (calibration_log.level, list(calibration_log.filters))
    with caplog.at_level(logging.WARNING):
        run_sweep(model, task, [LossProbe()], Calibrating(),
                  [LossIncrease(0.1), LossIncrease(0.2)], eval_rows=8, progress=True)
    err = capsys.readouterr().err
    assert "calibrating LossIncrease(0.1): round 1 done (B=50 ΔL=0.05 (target 0.1)); round 2 running" in err
    assert "calibrating LossIncrease(0.2): round 2 done (B=120 ΔL=0.1 (target 0.2))" in err
    assert "Calibrating level 2/2 (LossIncrease(0.2))" in err and "4draw" in err  # the whole sweep, one bar
    assert not [r for r in caplog.records if r.levelno < logging.WARNING]  # no INFO leaked to handlers
    assert (calibration_log.level, list(calibration_log.filters)) == before
    run_sweep(model, task, [LossProbe()], _noise(), [0.1, 0.2], eval_rows=8, progress=True)
    err = capsys.readouterr().err
    assert "WeightNoise level 2/2 (0.2)" in err and "4/4" in err  # the total is known for shipped degradations
    run_sweep(model, task, [LossProbe()], _noise(), [0.1], eval_rows=8, progress=False)
    assert capsys.readouterr().err == ""


def test_dissolution_progress_default():
    import inspect

    import interp

    assert inspect.signature(interp.dissolution).parameters["progress"].default is None
    from interp.sweep.kernel import interactive as _interactive

    assert _interactive() is False  # pytest's captured stderr is not a terminal: quiet
