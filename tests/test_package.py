"""The distribution: fast, side-effect-free imports and the console entry points."""

import subprocess
import sys

import pytest


def _run(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.strip()


def test_import_is_light():
    """`import interp, hooks, analyses` pulls in neither TransformerLens nor transformers."""
    out = _run(
        "import sys, interp, hooks, analyses; "
        "print(sorted(m for m in ('transformer_lens', 'transformers', 'datasets', 'matplotlib') "
        "if m in sys.modules))"
    )
    assert out == "[]"


def test_import_time_under_one_second():
    """Median of three cold imports, measured inside the interpreter (no interpreter start-up)."""
    times = [
        float(_run("import time; t = time.perf_counter(); import interp, hooks, analyses; "
                   "print(time.perf_counter() - t)"))
        for _ in range(3)
    ]
    assert sorted(times)[1] < 1.0, times


def test_lazy_names_resolve_and_unknown_name_errors():
    import interp

    assert callable(interp.load_model)
    assert interp.organisms.names() == ["induction", "induction_full", "induction_ngram", "minilm", "modadd"]
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        interp.nonexistent  # noqa: B018


@pytest.mark.parametrize("entry", [["interp"], [sys.executable, "-m", "interp"]])
def test_cli_help(entry):
    res = subprocess.run(entry + ["--help"], capture_output=True, text=True)
    assert res.returncode == 0
    assert "organisms" in res.stdout and "demo" in res.stdout


def test_cli_organisms_list():
    res = subprocess.run(["interp", "organisms", "list"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    names = [line.split()[0] for line in res.stdout.splitlines()]
    assert names == ["induction", "induction_full", "induction_ngram", "minilm", "modadd"]


def test_cli_unknown_organism_suggests_close_name():
    res = subprocess.run(
        ["interp", "organisms", "train", "inductoin", "--out", "unused"], capture_output=True, text=True
    )
    assert res.returncode == 2
    assert "Unknown organism 'inductoin'" in res.stderr and "'induction'" in res.stderr


def test_console_script_points_to_the_app_layer():
    import tomllib
    from pathlib import Path

    meta = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert meta["project"]["scripts"]["interp"] == "interp.app.cli:main"


def test_torch_threads_do_not_leak_between_test_modules(tmp_path):
    """tests/conftest.py: a module's set_num_threads (at import, in a fixture, in a test) stays in it."""
    import shutil
    import textwrap
    from pathlib import Path

    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_a.py").write_text(textwrap.dedent("""
        import torch
        torch.set_num_threads(6)              # at import: undone when collection ends
        TORCH_THREADS = 2                     # this module's own tests run with 2

        def test_a():
            assert torch.get_num_threads() == 2
            torch.set_num_threads(5)          # inside a test: put back after the module
    """))
    (tmp_path / "test_b.py").write_text(textwrap.dedent("""
        import torch

        def test_b():                         # no TORCH_THREADS: the suite's default, not test_a's 5
            assert torch.get_num_threads() == 3
    """))
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "4", "INTERP_TEST_THREADS": "3"}
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                         capture_output=True, text=True, cwd=tmp_path, env=env)
    assert res.returncode == 0 and "2 passed" in res.stdout, res.stdout + res.stderr
