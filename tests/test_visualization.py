"""visualization.py writes every figure as a valid PNG, quick-training when there is no checkpoint; the
paper's numbers it draws are ablations/paper_results.json's; the CTC trellis figure's alphas are exact."""

import itertools
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest
import torch

import implementation as ds2
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


PAPER_JSON = ROOT / "ablations" / "paper_results.json"


def _paper_tables():
    return json.loads(PAPER_JSON.read_text(encoding="utf-8"))["tables"]


def test_paper_numbers_are_the_ones_in_paper_results_json():
    """visualization.PAPER_RESULTS is ablations/paper_results.json's tables, in the figures' shape."""
    tables = _paper_tables()
    depth, sortagrad, rnn_gru, scaling = (
        tables[k] for k in ("depth_bn", "sortagrad", "rnn_gru", "data_scaling")
    )
    assert visualization.PAPER_RESULTS == {
        "depth_bn": {
            "layers": depth["layers"],
            "with_bn": depth["with_bn"],
            "without_bn": depth["without_bn"],
            "without_bn_deepest": depth["without_bn"][-1],
        },
        "sortagrad": {"baseline": sortagrad["baseline"], "BatchNorm": sortagrad["BatchNorm"]},
        "rnn_gru": {"layers": rnn_gru["layers"], "simple RNN": rnn_gru["simple RNN"], "GRU": rnn_gru["GRU"]},
        "conv": {name: tuple(pair) for name, pair in tables["conv"]["rows"].items()},
        "data_scaling": {"hours": scaling["hours"], "regular": scaling["regular"], "noisy": scaling["noisy"]},
    }


def test_paper_numbers_follow_the_json_file(tmp_path):
    """Change a number in the file and the figures' numbers change: they are read, not copied."""
    data = json.loads(PAPER_JSON.read_text(encoding="utf-8"))
    data["tables"]["rnn_gru"]["GRU"][0] = 99.5
    data["tables"]["conv"]["rows"]["3-layer 2D"] = [1.25, 2.5]
    data["tables"]["depth_bn"]["without_bn"][-1] = 42.0
    path = tmp_path / "paper_results.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    results = visualization.load_paper_results(path)
    assert results["rnn_gru"]["GRU"][0] == 99.5
    assert results["conv"]["3-layer 2D"] == (1.25, 2.5)
    assert results["depth_bn"]["without_bn"][-1] == results["depth_bn"]["without_bn_deepest"] == 42.0


def _captured_figure(monkeypatch, draw):
    """The matplotlib figure ``draw()`` saves, kept instead of written."""
    figures = []
    monkeypatch.setattr(visualization, "save_figure", lambda fig, path: figures.append(fig))
    result = draw()
    (fig,) = figures
    return fig, result


def test_paper_results_figure_draws_the_json_numbers(tmp_path, monkeypatch):
    fig, _ = _captured_figure(
        monkeypatch,
        lambda: visualization.figure_paper_results(
            tmp_path / "p.png", None, str(tmp_path / "none.json"), None
        ),
    )
    ax_bn, ax_sort, ax_gru, ax_conv, ax_data, _ = fig.axes
    tables = _paper_tables()

    def lines(ax):
        return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}

    def bars(ax):
        return {container.get_label(): [bar.get_height() for bar in container] for container in ax.containers}

    depth = tables["depth_bn"]
    assert lines(ax_bn) == {
        "with BatchNorm": (depth["layers"], depth["with_bn"]),
        "without BatchNorm": (depth["layers"], depth["without_bn"]),
    }
    assert "Table 1 topic" in ax_bn.get_title() and "each depth" in ax_bn.get_title()
    sortagrad = tables["sortagrad"]
    assert bars(ax_sort) == {
        label: [sortagrad["baseline"][label], sortagrad["BatchNorm"][label]]
        for label in ("not sorted", "SortaGrad")
    }
    rnn_gru = tables["rnn_gru"]
    assert lines(ax_gru) == {name: (rnn_gru["layers"], rnn_gru[name]) for name in ("simple RNN", "GRU")}
    rows = tables["conv"]["rows"]
    assert bars(ax_conv) == {
        "regular dev": [pair[0] for pair in rows.values()],
        "noisy dev": [pair[1] for pair in rows.values()],
    }
    assert [t.get_text() for t in ax_conv.get_xticklabels()] == [name.replace(" ", "\n", 1) for name in rows]
    scaling = tables["data_scaling"]
    assert lines(ax_data) == {
        f"{name} dev": (scaling["hours"], scaling[name]) for name in ("regular", "noisy")
    }
    assert f"§{scaling['section']}:" in ax_data.get_title()


# ---------------------------------------------------------------------------------------------------------
# The CTC trellis figure
# ---------------------------------------------------------------------------------------------------------


def _brute_force_trellis(log_probs, text):
    """alpha_t(s) and the state occupancy by enumerating every path (prefix) over blank and the text's
    letters: the oracle for visualization.ctc_trellis, which runs implementation.ctc_alpha."""
    labels = ds2.encode_text(text).tolist()
    frames, states = log_probs.shape[0], 2 * len(labels) + 1
    symbols = sorted({ds2.BLANK, *labels})

    def state(prefix):
        """The state of l' = (_, l1, _, ..., lS, _) a path prefix is in; None if it cannot read ``text``."""
        collapsed = [k for i, k in enumerate(prefix) if (i == 0 or k != prefix[i - 1]) and k != ds2.BLANK]
        if collapsed != labels[: len(collapsed)]:
            return None
        return 2 * len(collapsed) if prefix[-1] == ds2.BLANK else 2 * len(collapsed) - 1

    def probability(path):
        return math.exp(sum(log_probs[t, k].item() for t, k in enumerate(path)))

    alpha = torch.zeros(frames, states, dtype=torch.float64)
    for t in range(frames):
        for prefix in itertools.product(symbols, repeat=t + 1):
            s = state(prefix)
            if s is not None:
                alpha[t, s] += probability(prefix)
    occupancy = torch.zeros(frames, states, dtype=torch.float64)
    for path in itertools.product(symbols, repeat=frames):
        if state(path) in (states - 1, states - 2):  # reads the whole text
            for t in range(frames):
                occupancy[t, state(path[: t + 1])] += probability(path)
    total = alpha[-1, -1] + alpha[-1, -2]
    return alpha, occupancy / total, total


@pytest.mark.parametrize("text, frames", [("all", 6), ("abc", 5), ("see", 5)])
def test_ctc_trellis_matches_brute_force_enumeration(text, frames):
    log_probs = torch.randn(
        frames, ds2.NUM_CLASSES, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    log_probs = log_probs.log_softmax(-1)
    trellis = visualization.ctc_trellis(log_probs, text)
    alpha, occupancy, total = _brute_force_trellis(log_probs, text)
    torch.testing.assert_close(trellis["log_alpha"].exp(), alpha, rtol=1e-9, atol=1e-300)
    torch.testing.assert_close(trellis["occupancy"], occupancy, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(trellis["log_p"].exp(), total, rtol=1e-9, atol=0.0)
    torch.testing.assert_close(trellis["occupancy"].sum(dim=1), torch.ones(frames, dtype=torch.float64))


def test_ctc_trellis_figure_shows_the_alphas_and_agrees_with_ctc_loss(tmp_path, monkeypatch):
    fig, trellis = _captured_figure(monkeypatch, lambda: visualization.figure_ctc_trellis(tmp_path / "t.png"))
    alpha = trellis["log_alpha"].exp()
    reachable = trellis["log_alpha"] > -1e20
    node_texts = [text.get_text() for text in fig.axes[0].texts]
    expected = [visualization._trellis_value(a.item()) for a in alpha[reachable]]
    missing = [value for value in expected if value not in node_texts]
    assert not missing and int(reachable.sum()) > 10, f"alphas not drawn: {missing}"
    from_alphas, from_ctc_loss = re.search(
        r"-ln p\(y\|x\) = ([\d.]+) from these alphas.*?([\d.]+) from ds2\.ctc_loss",
        fig.get_suptitle(),
        re.S,
    ).groups()
    assert from_alphas == from_ctc_loss and float(from_alphas) > 0
    # "all": one forbidden skip (between the two l's) per panel; "abc" has none.
    assert [text.get_text() for text in fig.axes[0].texts].count("✗") == 1
    fig, _ = _captured_figure(
        monkeypatch, lambda: visualization.figure_ctc_trellis(tmp_path / "t.png", "abc", 5)
    )
    assert [text.get_text() for text in fig.axes[0].texts].count("✗") == 0


def test_ctc_trellis_figure_is_a_png_registered_in_the_figure_list(tmp_path):
    assert "08_ctc_trellis.png" in visualization.FIGURE_NAMES
    path = tmp_path / "08_ctc_trellis.png"
    visualization.figure_ctc_trellis(path)
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    image = matplotlib.image.imread(path)
    height, width = image.shape[:2]
    assert 300 <= width <= 4000 and 200 <= height <= 4000 and image.std() > 0.01


def test_metrics_of_a_real_corpus_run_with_one_dev_split_are_read_and_drawn(tmp_path, capsys):
    """A --data librispeech/manifest run writes one "dev" split; it is a valid metrics.json, not a bad file."""
    history = [
        {"epoch": e, "train_loss": 9.0 / e, "skipped_batches": 0, "dev": {"cer": 0.5 / e, "wer": 0.9 / e}}
        for e in (1, 2)
    ]
    final = {"dev": {"cer": 0.2, "wer": 0.4, "beam_cer": 0.1, "beam_wer": 0.3}}
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"history": history, "final": final, "args": {}}))
    metrics = visualization.read_metrics(str(path))
    assert metrics is not None and "warning" not in capsys.readouterr().err
    rows, _ = visualization.our_numbers(metrics, str(path), None)
    assert [label.split("\n")[0] for label, _ in rows] == ["dev"] * 3
    assert [value for _, value in rows] == pytest.approx([40.0, 30.0, 20.0])
    visualization.figure_training_curves(tmp_path / "curves.png", metrics, str(path), None)
    assert (tmp_path / "curves.png").read_bytes().startswith(PNG_SIGNATURE)
    path.write_text(json.dumps({"history": [{"epoch": 1, "train_loss": 1.0}]}))  # no dev split at all
    assert visualization.read_metrics(str(path)) is None and "no dev split" in capsys.readouterr().err


def test_the_scaling_figure_draws_each_splits_power_law():
    """The scaling sweep's panels draw the fitted power law of dev-clean and of dev-noisy, each from its own fit."""
    results = json.loads((ROOT / "ablations" / "results" / "scaling.json").read_text(encoding="utf-8"))
    laws = results["analysis"]["power_law"]
    fig, ax = visualization.plt.subplots()
    visualization._ablation_panel(ax, results, "cer", "greedy")
    lines = {line.get_label(): line for line in ax.get_lines()}
    for split, key in (("dev-clean", "greedy_cer"), ("dev-noisy", "dev-noisy_greedy_cer")):
        fit = laws[key]
        line = lines.get(f"{split} {fit['label']}")
        assert line is not None, f"no {split} power law among {sorted(lines)}"
        hours, percent = line.get_data()
        assert percent == pytest.approx(100 * fit["a"] * hours ** fit["b"])
    visualization.plt.close(fig)
