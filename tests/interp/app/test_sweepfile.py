"""`interp sweep CONFIG.toml` and `interp report DIR`: validation, a real tiny sweep, report rebuild."""

import textwrap

import pytest

from interp.results import Results
from interp.app.sweepfile import load_sweep_config, rebuild_report, run_sweep_file

VALID = """
out = "run"
seed = 3
[model]
organism = "induction"
[degradation]
type = "WeightNoise"
relative = true
draws_per_level = 2
[levels]
values = [0.05, 0.2]
[[analyses]]
type = "HeadAblation"
name = "induction_heads"
heads = [[1, 0], [1, 1]]
eval_rows = 64
"""


def write(tmp_path, text, name="sweep.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_valid_file_builds_the_parts(tmp_path):
    cfg = load_sweep_config(write(tmp_path, VALID))
    assert cfg["seed"] == 3 and cfg["levels"] == [0.05, 0.2]
    assert type(cfg["degradation"]).__name__ == "WeightNoise" and cfg["degradation"].relative
    assert cfg["analyses"][0].heads == [[1, 0], [1, 1]]
    assert cfg["out"] == tmp_path / "run"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("seed = 3", "seeed = 3"), r"'seeed' \(did you mean 'seed'\?\)"),
        (('type = "WeightNoise"', 'type = "WeightNoize"'), r"Unknown degradation type 'WeightNoize'.*'WeightNoise'"),
        (("relative = true", "relativ = true"), r"\[degradation\].*'relativ'"),
        (("values = [0.05, 0.2]", "values = []"), "non-empty list"),
        (("values = [0.05, 0.2]", "values = [0.1]\nnbeta = [10.0]"), "exactly one of"),
        (('type = "HeadAblation"', 'type = "HeadAblations"'), "Unknown analysis type"),
        (("eval_rows = 64", "eval_rowz = 64"), r"\[\[analyses\]\] #1.*'eval_rowz'"),
        (('organism = "induction"', 'organism = "inductio"'), "Unknown organism 'inductio'"),
        (("[levels]", "[level]"), "Unknown key"),
        (('type = "HeadAblation"\nname = "induction_heads"\nheads = [[1, 0], [1, 1]]',
          'type = "CausalScrubbing"\nhypothesis = "induction.nope"'), "induction has"),
    ],
)
def test_bad_files_name_the_problem(tmp_path, edit, message):
    with pytest.raises(ValueError, match=message):
        load_sweep_config(write(tmp_path, VALID.replace(*edit)))


def test_ready_made_hypotheses_and_probe_configs_by_name(tmp_path):
    text = VALID.replace('type = "HeadAblation"\nname = "induction_heads"\nheads = [[1, 0], [1, 1]]\neval_rows = 64',
                         'type = "CausalScrubbing"\nhypothesis = "induction.correct"\neval_rows = 64\n'
                         '[[analyses]]\ntype = "FrozenProbe"\nlabel = "period"')
    scrub, probe = load_sweep_config(write(tmp_path, text))["analyses"]
    assert scrub.effects == ("recovered", "kl_recovered") and probe.label == "period"
    bad = text.replace('label = "period"', 'labl = "period"')
    with pytest.raises(ValueError, match="labl"):
        load_sweep_config(write(tmp_path, bad, "bad.toml"))


def test_invalid_toml_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="not valid TOML"):
        load_sweep_config(write(tmp_path, "out = [unclosed"))
    with pytest.raises(FileNotFoundError, match="not found"):
        load_sweep_config(tmp_path / "nope.toml")


def test_sweep_file_runs_saves_and_report_rebuilds(tmp_path):
    report = run_sweep_file(write(tmp_path, VALID), progress=False)
    assert report == tmp_path / "run" / "report.html"
    res = Results.load(tmp_path / "run" / "results")
    assert set(res.table["level_index"]) == {-1, 0, 1}
    survival = res.survival()
    assert list(survival["metric"]) == ["loss_carried"]
    report.unlink()
    assert rebuild_report(tmp_path / "run").exists()
    # the raw sweep directory alone is enough as well
    assert rebuild_report(tmp_path / "run" / "sweep").exists()
    with pytest.raises(ValueError, match="holds no interp results"):
        rebuild_report(tmp_path)
