"""The example notebooks (examples/*.ipynb) run top to bottom, and are committed without outputs.

Each notebook is executed with nbclient in a fresh kernel that runs *this* interpreter
(``sys.executable``, i.e. the environment the tests run in, whatever kernelspecs the machine has
installed), with the working directory set to a temporary folder. Any cell error fails the test.

The kernel gets ``OMP_NUM_THREADS=1`` unless the environment sets it: the notebooks' models are tiny,
and on a busy 2-core machine torch's default threading oversubscribes the cores (measured here: the
quickstart's sweep cell took 349 s with default threads against 30 s with one).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
KERNEL = "interp-tests"


def _kernel_manager(tmp: Path):
    """A kernel manager whose only kernelspec launches ipykernel on ``sys.executable``."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    spec = tmp / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python (interp tests)",
        "language": "python",
    }))
    ksm = KernelSpecManager(kernel_dirs=[str(tmp / "kernels")], ensure_native_kernel=False)
    return AsyncKernelManager(kernel_name=KERNEL, kernel_spec_manager=ksm)


def test_notebooks_exist():
    names = [p.name for p in NOTEBOOKS]
    for expected in ("01-quickstart.ipynb", "02-circuit-validation.ipynb", "03-probing-minilm.ipynb",
                     "04-residual-norms.ipynb", "05-transcoders-modadd.ipynb", "06-minilm-degradation.ipynb"):
        assert expected in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_has_no_outputs(path: Path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {i} has outputs: strip them before committing"
            assert cell.execution_count is None, f"{path.name} cell {i} has an execution count"
    assert "widgets" not in nb.metadata, f"{path.name} carries widget state"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from nbclient import NotebookClient

    if "OMP_NUM_THREADS" not in os.environ:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")  # inherited by the kernel

    nb = nbformat.read(path, as_version=4)
    # one extra cell, run last: the kernel really is this interpreter
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    workdir = tmp_path / "run"
    workdir.mkdir()
    client = NotebookClient(
        nb, km=_kernel_manager(tmp_path), timeout=600, allow_errors=False,
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    printed = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
    assert printed.strip() == sys.executable
