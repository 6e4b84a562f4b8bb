"""Docstring examples run (``--doctest-modules`` over ``interp``, ``hooks``, ``analyses``): a line may
carry ``# doctest: +SKIP`` only in the modules listed here, each for a stated reason, and the call it
skips must be run by the named test file."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: module -> (why its example cannot run as a doctest, the test file that runs the call, the call)
ALLOWED = {
    "interp/app/demo.py": ("the quick demo takes most of a minute", "tests/interp/test_report.py", "run_demo("),
    "interp/app/demo_minilm.py": ("the quick MiniLM demo takes about a minute", "tests/interp/app/test_demo_minilm.py",
                                  "run_minilm_demo("),
    "interp/report.py": ("plotting a report takes seconds", "tests/interp/test_report.py", "write_report("),
    "interp/sweep/ray.py": ("starting Ray takes longer than every other example together",
                            "tests/interp/sweep/test_executors.py", "RayExecutor("),
    "interp/dissolve.py": ("a dissolution search runs several sweeps", "tests/interp/test_dissolution.py",
                           "dissolution("),
    "analyses/probing/__init__.py": ("fitting probes with their λ search and control task takes over ten seconds",
                                     "tests/analyses/test_probing.py", "probe("),
    "analyses/probing/_report.py": ("the same probe fit", "tests/analyses/test_probing.py", ".plot()"),
    "analyses/probing/_causal.py": ("needs a fitted probe's activations", "tests/analyses/test_probing.py",
                                    "causal_check("),
    "analyses/transcoders/__init__.py": ("training a transcoder takes tens of seconds",
                                         "tests/analyses/test_transcoders.py", "train_transcoder("),
    "analyses/transcoders/_train.py": ("training", "tests/analyses/test_transcoders.py", "train_transcoder("),
    "analyses/transcoders/_analysis.py": ("training", "tests/analyses/test_transcoders.py", "SparseMLP("),
    "analyses/circuit_tests/_draws.py": ("circuit tests at every draw of a sweep", "tests/analyses/test_circuit_tests.py",
                                         "assess_claim("),
}


def _skipping_modules() -> dict[str, int]:
    found = {}
    for package in ("interp", "hooks", "analyses"):
        for path in sorted((ROOT / package).rglob("*.py")):
            n = len(re.findall(r"doctest:\s*\+SKIP", path.read_text(encoding="utf-8")))
            if n:
                found[path.relative_to(ROOT).as_posix()] = n
    return found


def test_only_listed_modules_skip_examples():
    found = _skipping_modules()
    unlisted = sorted(set(found) - set(ALLOWED))
    assert not unlisted, (f"{unlisted} skip docstring examples; make them run on a small fixture (the root "
                          "conftest.py's doctest_namespace) or, if truly too slow, list them in ALLOWED with "
                          "the test that runs the same call")
    stale = sorted(set(ALLOWED) - set(found))
    assert not stale, f"{stale} skip no example any more: remove them from ALLOWED"


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_skipped_call_is_run_by_a_test(module):
    _, test_file, call = ALLOWED[module]
    assert call in (ROOT / module).read_text(encoding="utf-8"), f"{module}'s example no longer calls {call}"
    assert call in (ROOT / test_file).read_text(encoding="utf-8"), f"{test_file} does not run {call}"
