"""notebook.ipynb: the committed file carries the outputs of a full run, and still runs top to bottom.

The committed notebook is executed (full sizes) and stored with its outputs by the command in its first
markdown cell, so that it reads without running. These tests check that those outputs are there (every
code cell executed, in order, with no errors, and the figures present), that the file stays small, that
the notebook trains only through the library's one loop, and (slow) that it still executes top to bottom
with the tiny DS2_NOTEBOOK_FAST=1 parameters in this interpreter.
"""

import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebook.ipynb"
EXECUTE_COMMAND = "jupyter nbconvert --to notebook --execute --inplace notebook.ipynb"
MAX_BYTES = 3_000_000


def read_notebook():
    return nbformat.read(NOTEBOOK, as_version=4)


def code_cells(nb):
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def test_notebook_has_a_tagged_parameters_cell_first():
    first = code_cells(read_notebook())[0]
    assert "parameters" in first.metadata.get("tags", []), "the first code cell must be tagged 'parameters'"
    for name in ("TRAIN_SIZE", "EPOCHS", "DEV_SIZE", "DS2_NOTEBOOK_FAST"):
        assert name in first.source


def test_first_markdown_cell_documents_the_execute_command():
    first_markdown = next(cell for cell in read_notebook().cells if cell.cell_type == "markdown")
    assert EXECUTE_COMMAND in first_markdown.source, (
        f"say in the first markdown cell how the stored outputs were made: {EXECUTE_COMMAND}"
    )


def test_committed_notebook_carries_the_outputs_of_one_full_run():
    nb = read_notebook()
    cells = code_cells(nb)
    counts = [cell.execution_count for cell in cells]
    assert all(count is not None for count in counts), (
        f"code cells {[i for i, c in enumerate(counts) if c is None]} were never executed; "
        f"re-run `python -m {EXECUTE_COMMAND}`"
    )
    assert counts == list(range(1, len(cells) + 1)), (
        f"execution counts {counts} are not 1..{len(cells)}: the outputs come from more than one run"
    )
    errors = [
        f"cell {index}: {output.get('ename')}: {output.get('evalue')}"
        for index, cell in enumerate(cells)
        for output in cell.outputs
        if output.output_type == "error"
    ]
    assert not errors, errors
    # Every code cell but the parameters prints or draws something.
    silent = [index for index, cell in enumerate(cells[1:], start=1) if not cell.outputs]
    assert not silent, f"code cells {silent} have no stored output"
    figures = [
        output
        for cell in cells
        for output in cell.outputs
        if output.output_type in ("display_data", "execute_result") and "image/png" in output.get("data", {})
    ]
    assert len(figures) >= 4, f"expected the notebook's figures among the outputs, found {len(figures)}"
    # The stored run is the full one, not the tiny test-suite run.
    text = "".join(output.get("text", "") for cell in cells for output in cell.outputs)
    assert "no such utterance in this run" not in text, (
        "the stored run has no utterance that greedy gets wrong and beam+LM right: was it a FAST run?"
    )
    assert "Traceback" not in text


def test_notebook_file_stays_small():
    size = NOTEBOOK.stat().st_size
    assert size < MAX_BYTES, (
        f"notebook.ipynb is {size:,} bytes; keep it under {MAX_BYTES:,} (smaller figures)"
    )


def test_notebook_trains_only_through_the_library_loop():
    source = "\n".join(cell.source for cell in code_cells(read_notebook()))
    assert "clip_grad_norm_" not in source, "train with ds2.fit / ds2.train_epoch, which clip for you"
    assert ".backward(" not in source, "the notebook must not run its own training loop"
    assert "ds2.fit(" in source or "ds2.train_epoch(" in source


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(monkeypatch):
    monkeypatch.setenv("DS2_NOTEBOOK_FAST", "1")  # the kernel inherits this environment
    nb = read_notebook()
    for cell in code_cells(nb):  # run from a clean slate, not on top of the committed outputs
        cell.outputs, cell.execution_count = [], None
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
