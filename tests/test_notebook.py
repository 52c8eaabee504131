"""notebook.ipynb runs top to bottom (with the tiny DS2_NOTEBOOK_FAST=1 parameters) in this interpreter."""

import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebook.ipynb"


def test_notebook_has_a_tagged_parameters_cell_first_and_uses_the_one_training_loop():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code_cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert "parameters" in code_cells[0].metadata.get("tags", []), (
        "the first code cell must be tagged 'parameters'"
    )
    for name in ("TRAIN_SIZE", "DEV_SIZE", "DS2_NOTEBOOK_FAST"):
        assert name in code_cells[0].source
    source = "\n".join(cell.source for cell in code_cells)
    assert "clip_grad_norm_" not in source and ".backward(" not in source, "train with implementation's loop"
    assert "ds2.fit(" in source or "ds2.train_epoch(" in source


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(monkeypatch):
    monkeypatch.setenv("DS2_NOTEBOOK_FAST", "1")  # the kernel inherits this environment
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # Last cell: report which Python the kernel ran, so we know it was this interpreter (and its packages).
    nb.cells.append(nbformat.v4.new_code_cell("import sys\nprint(sys.executable)"))
    # jupyter_client starts a kernel spec whose command is "python" with sys.executable: this interpreter.
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=240,  # per cell
        resources={"metadata": {"path": str(ROOT)}},  # run where implementation.py is importable
    )
    client.execute()
    executable = "".join(output.get("text", "") for output in nb.cells[-1].outputs).strip()
    assert os.path.realpath(executable) == os.path.realpath(sys.executable)
    errors = [
        output
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "error"
    ]
    assert not errors
