"""visualization.py writes every figure as a valid PNG, quick-training when there is no checkpoint."""

import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest

import visualization

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_visualization_writes_every_figure_as_a_valid_png(tmp_path):
    out = tmp_path / "figures"
    command = [
        sys.executable,
        str(ROOT / "visualization.py"),
        "--out",
        str(out),
        "--checkpoint",
        str(tmp_path / "no-such-checkpoint.pt"),  # forces the quick training
        "--metrics",
        str(tmp_path / "no-such-metrics.json"),
        "--quick-train-seconds",
        "2",
        "--quick-train-size",
        "32",
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "training a small model" in result.stdout
    for name in visualization.FIGURE_NAMES:
        path = out / name
        assert path.is_file(), f"{name} was not written"
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE), f"{name} is not a PNG"
        image = matplotlib.image.imread(path)
        height, width = image.shape[:2]
        assert 300 <= width <= 4000 and 200 <= height <= 4000, f"{name} is {width}x{height} pixels"
        assert image.std() > 0.01, f"{name} looks blank"
    assert not list(out.glob("*.tmp*")), "temporary files were left behind"


def test_help_lists_every_option():
    result = subprocess.run(
        [sys.executable, str(ROOT / "visualization.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0
    for flag in ("--out", "--checkpoint", "--metrics", "--seed", "--quick-train-seconds"):
        assert flag in result.stdout


def test_paper_numbers_are_the_ones_in_paper_notes():
    # A few anchors from PAPER_FACTS.md (via paper_notes.md): the figure must not drift from them.
    results = visualization.PAPER_RESULTS
    assert results["sortagrad"]["baseline"] == {"not sorted": 11.96, "SortaGrad": 10.83}
    assert results["rnn_gru"]["GRU"] == [10.53, 8.00, 7.79, 8.19]
    assert results["conv"]["3-layer 2D"] == (8.61, 14.74)
    assert results["data_scaling"]["regular"][-1] == 8.46 and results["data_scaling"]["noisy"][-1] == 13.59
