"""The lesson's figures: every step of Deep Speech 2 (arXiv:1512.02595), drawn from the code that runs it.

    python visualization.py                                  # figures/ from runs/ds2/ (or a quick training)
    python visualization.py --out figs --checkpoint runs/ds2/checkpoint.pt --metrics runs/ds2/metrics.json

Writes eight PNG files into --out:

    01_spectrogram_pipeline.png   waveform -> power spectrogram -> log -> normalised, letters marked (§3.1)
    02_architecture.png           the model of a real DS2Config, with shapes measured by running it (§3)
    03_ctc_alignment.png          posteriorgram, greedy path and CTC forced alignment vs the true letters
    04_sortagrad.png              utterance lengths in batch order, epoch 1 (sorted) vs epoch 2 (§3.3)
    05_batchnorm.png              sequence-wise BatchNorm: statistics, and why padding must be masked (§3.2)
    06_training_curves.png        loss and error rates of a run (metrics.json) or of the quick training
    07_paper_results.png          the paper's reported numbers (ablations/paper_results.json) beside ours
    08_ctc_trellis.png               the CTC trellis of a tiny example: alpha recursion, allowed transitions

Every number drawn is computed here by implementation.py, read from a run's metrics.json, or one of the
paper's reported numbers (labelled with its table topic or section). When no checkpoint exists, the script
trains a small model for --quick-train-seconds and says so in the titles.
"""

import argparse
import json
import math
import os
import sys
import textwrap
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import torch
import torchaudio.functional as AF
from matplotlib.patches import FancyBboxPatch
from torch import nn

import implementation as ds2

FIGURE_NAMES = (
    "01_spectrogram_pipeline.png",
    "02_architecture.png",
    "03_ctc_alignment.png",
    "04_sortagrad.png",
    "05_batchnorm.png",
    "06_training_curves.png",
    "07_paper_results.png",
    "08_ctc_trellis.png",
)
PAPER = "the paper's (arXiv:1512.02595)"
SYMBOLS = ["blank", "␣", *ds2.ALPHABET[2:]]  # how each class is labelled on an axis

# The paper's reported numbers live in one file, ablations/paper_results.json (recalled and cross-checked;
# the paper's PDF is the authority). PAPER_RESULTS is the part the figures draw, keyed by table *topic*.
PAPER_RESULTS_PATH = Path(__file__).resolve().parent / "ablations" / "paper_results.json"


def load_paper_results(path=PAPER_RESULTS_PATH):
    """The paper's development-set WER (%) from ``ablations/paper_results.json``, shaped for the figures.

    Returns ``{"depth_bn": {layers, with_bn, without_bn, without_bn_deepest}, "sortagrad": {"baseline",
    "BatchNorm"}, "rnn_gru": {layers, "simple RNN", "GRU"}, "conv": {row: (regular, noisy)},
    "data_scaling": {hours, regular, noisy}}``; the file also holds each table's section and topic.
    """
    with open(path, encoding="utf-8") as f:
        tables = json.load(f)["tables"]
    depth_bn, sortagrad, rnn_gru = tables["depth_bn"], tables["sortagrad"], tables["rnn_gru"]
    scaling = tables["data_scaling"]
    return {
        "depth_bn": {  # Table 1 topic (§3.2): BatchNorm at each depth, simple RNNs
            "layers": depth_bn["layers"],
            "with_bn": depth_bn["with_bn"],
            "without_bn": depth_bn["without_bn"],
            "without_bn_deepest": depth_bn["without_bn"][-1],
        },
        "sortagrad": {  # Table 2 topic (§3.3): SortaGrad, without ("baseline") and with BatchNorm
            "baseline": sortagrad["baseline"],
            "BatchNorm": sortagrad["BatchNorm"],
        },
        "rnn_gru": {  # Table 3 topic (§3.4): simple RNN vs GRU by depth
            "layers": rnn_gru["layers"],
            "simple RNN": rnn_gru["simple RNN"],
            "GRU": rnn_gru["GRU"],
        },
        # Table 4 topic (§3.5): convolution layers, (regular dev, noisy dev)
        "conv": {name: tuple(pair) for name, pair in tables["conv"]["rows"].items()},
        "data_scaling": {  # §5.3: hours of training audio, regular and noisy dev
            "hours": scaling["hours"],
            "regular": scaling["regular"],
            "noisy": scaling["noisy"],
        },
    }


PAPER_RESULTS = load_paper_results()


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Write the Deep Speech 2 lesson's figures (PNG) from a trained checkpoint, or from a "
        "small model it trains itself when there is none.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", default="figures", help="folder for the PNG files (created if missing)")
    p.add_argument(
        "--checkpoint",
        default="runs/ds2/checkpoint.pt",
        help="trained model from train_minimal.py; if the file is missing, a small model is trained here",
    )
    p.add_argument(
        "--metrics",
        default="runs/ds2/metrics.json",
        help="a run's metrics.json for the training curves and our numbers beside the paper's",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for the synthetic utterances and quick training")
    p.add_argument(
        "--quick-train-seconds",
        type=float,
        default=45.0,
        help="time budget of the quick training used when --checkpoint does not exist",
    )
    p.add_argument(
        "--quick-train-size",
        type=int,
        default=300,
        help="synthetic training utterances for the quick training (also the SortaGrad figure's data)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for torch; 1 is fastest for this small model on a shared 2-core machine "
        "(more threads than free cores can make torch many times slower)",
    )
    args = p.parse_args(argv)
    if args.quick_train_seconds < 0:
        p.error(f"--quick-train-seconds must be >= 0, got {args.quick_train_seconds}")
    if args.quick_train_size < 16:
        p.error(f"--quick-train-size must be at least 16 (one batch), got {args.quick_train_size}")
    if args.threads < 1:
        p.error(f"--threads must be at least 1, got {args.threads}")
    return args


# ----------------------------------------------------------------------------------------------------------
# Helpers: files, time axes, data
# ----------------------------------------------------------------------------------------------------------


def save_figure(fig, path):
    """Atomic: write a temporary file next to ``path`` and rename it, so a reader never sees half a PNG."""
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def frame_edges_s(num_frames, config, stride=1):
    """Left and right edge (seconds) of ``num_frames`` frames, each drawn centred on its window.

    Input frame t covers samples ``[t * hop, t * hop + window)``, centre ``(t * hop + window / 2) / sr``;
    a frame after a time stride of ``stride`` is centred on input frame ``stride * t`` (the conv padding
    is half the kernel, so centres line up).
    """
    window, hop = ds2.frame_parameters(config.sample_rate, config.window_ms, config.stride_ms)
    step = stride * hop / config.sample_rate
    first_centre = window / 2 / config.sample_rate
    return first_centre - step / 2, first_centre - step / 2 + num_frames * step


def frame_centres_s(num_frames, config, stride=1):
    window, hop = ds2.frame_parameters(config.sample_rate, config.window_ms, config.stride_ms)
    return (np.arange(num_frames) * stride * hop + window / 2) / config.sample_rate


def time_stride(model):
    """Input frames per output frame: the product of the conv layers' time strides (§3.6)."""
    return int(np.prod([conv.stride[1] for conv in model.conv.layers]))


def example_utterance(seed, min_chars=18, max_chars=34):
    """One synthetic utterance with its per-character sample spans, from an unseen (dev-like) speaker."""
    rng = np.random.default_rng([seed, 2024])
    speaker = ds2.random_speaker(rng)
    text = ds2.random_sentence(rng)
    while not min_chars <= len(text) <= max_chars:
        text = ds2.random_sentence(rng)
    waveform, spans = ds2.synthesize_speech_with_alignment(text, speaker, rng)
    return {"waveform": waveform, "spans": spans, "text": text, "speaker": speaker}


def mark_characters(ax, text, spans, sample_rate, y, color="black", shade=True, fontsize=9):
    """Letters of ``text`` at the centres of their sample spans; alternate letters shaded."""
    for index, (char, (start, end)) in enumerate(zip(text, spans, strict=True)):
        if char == " ":
            continue
        t0, t1 = start / sample_rate, end / sample_rate
        if shade:
            ax.axvspan(t0, t1, color="tab:orange" if index % 2 else "tab:green", alpha=0.15, lw=0)
        ax.text((t0 + t1) / 2, y, char, ha="center", va="center", fontsize=fontsize, color=color)


# ----------------------------------------------------------------------------------------------------------
# The model: load the checkpoint, or train a small one quickly
# ----------------------------------------------------------------------------------------------------------


def quick_train(seconds, train_size, seed, dev_size=40, batch_size=16):
    """Train the default DS2Config on synthetic speech for about ``seconds``; returns (model, record).

    The one training loop (``implementation.fit``: SortaGrad batches -> forward -> CTC -> backward -> clip
    -> step, cosine learning rate, NaN skipping), cut short by a time budget; dev error rates (greedy)
    after each epoch and at the end.
    """
    began = time.time()
    splits = ds2.make_splits(train_size, dev_size, seed=seed, train_noise_fraction=0.5)
    data = {name: (ds2.featurize_batch(split.waveforms), split.texts) for name, split in splits.items()}
    frames = [f.shape[-1] for f in data["train"][0]]
    data_seconds = time.time() - began
    torch.manual_seed(seed)
    model = ds2.DeepSpeech2(ds2.DS2Config())
    # About as many epochs as the budget allows at ~0.25 s per step (the schedule's length; the time
    # budget stops it in any case).
    steps_per_epoch = ds2.steps_per_epoch(train_size, batch_size)
    epochs = max(1, round(seconds / (0.25 * steps_per_epoch)))
    config = ds2.TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed)
    step_losses = []
    train_began = time.time()
    state = ds2.fit(
        model,
        data["train"],
        config,
        dev={name: data[name] for name in ("dev-clean", "dev-noisy")},
        max_seconds=seconds,
        on_step=lambda state, loss: step_losses.append((state.step, loss)),
        log=lambda line: print(f"  quick training: {line}", flush=True),
    )
    return model, {
        "history": state.history,
        "step_losses": step_losses,
        "train_frames": frames,
        "train_size": train_size,
        "dev_size": dev_size,
        "seconds": time.time() - train_began,
        "data_seconds": data_seconds,
        "steps": state.step,
    }


def dev_splits(record):
    """The dev splits in a metrics record: dev-clean and dev-noisy (synthetic data) or dev (a real corpus)."""
    return [
        name for name, value in record.items() if isinstance(value, dict) and {"cer", "wer"} <= set(value)
    ]


def read_metrics(path):
    """A run's metrics.json as a dict, or None when missing; a malformed file is reported, not fatal."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            metrics = json.load(f)
        for record in metrics["history"]:
            record["epoch"], record["train_loss"]  # noqa: B018
            if not dev_splits(record):
                raise KeyError(f"epoch {record['epoch']} has no dev split with a CER and a WER")
        return metrics
    except (OSError, ValueError, KeyError, TypeError) as error:
        print(
            f"warning: ignoring {path}: not a metrics.json of train_minimal.py ({error!r})", file=sys.stderr
        )
        return None


# ----------------------------------------------------------------------------------------------------------
# 1. The spectrogram pipeline (§3.1)
# ----------------------------------------------------------------------------------------------------------


def figure_spectrogram_pipeline(path, utterance, config):
    waveform, spans, text = utterance["waveform"], utterance["spans"], utterance["text"]
    sr = config.sample_rate
    log_spec = ds2.log_spectrogram(waveform, sr, config.window_ms, config.stride_ms)  # (F, T), ln power
    power = log_spec.exp()  # |X|^2 (+ eps), what the log is taken of
    normalised = ds2.featurize(waveform, sr, sr, config.spectrogram_floor_db)  # (F, T)
    num_freq, frames = log_spec.shape
    window, hop = ds2.frame_parameters(sr, config.window_ms, config.stride_ms)
    bin_hz = sr / window
    left, right = frame_edges_s(frames, config)
    extent = (left, right, -bin_hz / 2, (num_freq - 1) * bin_hz + bin_hz / 2)

    fig, axes = plt.subplots(
        4, 1, figsize=(11, 11), sharex=True, gridspec_kw={"height_ratios": [1, 1.3, 1.3, 1.3]}
    )
    t = np.arange(len(waveform)) / sr
    axes[0].plot(t, waveform.numpy(), lw=0.4, color="tab:blue")
    peak = float(waveform.abs().max())
    axes[0].set_ylim(-1.25 * peak, 1.45 * peak)
    mark_characters(axes[0], text, spans, sr, y=1.25 * peak)
    axes[0].set(
        ylabel="amplitude",
        title=f'(a) waveform, {len(waveform) / sr:.2f} s at {sr} Hz: "{text}"\nshaded: the samples of each letter, '
        "from synthesize_speech_with_alignment",
    )
    panels = [
        (
            power,
            "power |X|²",
            f"(b) power spectrogram |STFT|²: {config.window_ms:g} ms Hann windows, {config.stride_ms:g} ms "
            f"stride, {num_freq} bins {bin_hz:g} Hz apart; on a linear scale a few loud bins dominate",
        ),
        (log_spec, "ln power", "(c) log power spectrogram, log_spectrogram(): quiet detail becomes visible"),
        (
            normalised,
            "z-score",
            f"(d) featurize(): floored {config.spectrogram_floor_db:g} dB below the peak, then zero mean and "
            "unit variance per utterance: the model's input",
        ),
    ]
    for ax, (image, label, title) in zip(axes[1:], panels, strict=True):
        shown = ax.imshow(
            image.numpy(), origin="lower", aspect="auto", extent=extent, cmap="magma", interpolation="nearest"
        )
        fig.colorbar(shown, ax=ax, pad=0.01, label=label)
        ax.set(ylabel="frequency (Hz)", title=title)
        ax.title.set_fontsize(10.5)
        mark_characters(ax, text, spans, sr, y=0.93 * sr / 2, color="white", shade=False, fontsize=8)
    axes[0].title.set_fontsize(10.5)
    fig.colorbar(axes[1].images[0], ax=axes[0], pad=0.01).ax.set_visible(False)  # (a) as wide as the others
    axes[0].set_xlim(left, right)
    axes[-1].set_xlabel(f"time (s); one frame every {config.stride_ms:g} ms, drawn at its window's centre")
    fig.suptitle("Deep Speech 2 input (§3.1): from audio to a normalised log power spectrogram", fontsize=13)
    fig.tight_layout()
    save_figure(fig, path)


# ----------------------------------------------------------------------------------------------------------
# 2. The architecture, with shapes measured by running the model
# ----------------------------------------------------------------------------------------------------------


def measure_stages(model, spectrogram):
    """Run one utterance through ``model`` with forward hooks; returns [(name, detail, shape, params)]."""
    config = model.config
    shapes = {}
    hooks = []

    def keep(name):
        def hook(module, inputs, output):
            shapes[name] = tuple((output[0] if isinstance(output, tuple) else output).shape)

        return hook

    for index, conv in enumerate(model.conv.layers):
        hooks.append(conv.register_forward_hook(keep(f"conv{index}")))
    hooks.append(model.conv.register_forward_hook(keep("conv")))
    for index, rnn in enumerate(model.rnns):
        hooks.append(rnn.register_forward_hook(keep(f"rnn{index}")))
    if model.lookahead is not None:
        hooks.append(model.lookahead.register_forward_hook(keep("lookahead")))
    hooks.append(model.fc.register_forward_hook(keep("fc")))
    model.eval()
    with torch.no_grad():
        log_probs, _ = model(spectrogram[None], torch.tensor([spectrogram.shape[-1]]))
    for hook in hooks:
        hook.remove()

    def count(*modules):
        return sum(p.numel() for m in modules for p in m.parameters() if p.requires_grad)

    window, hop = ds2.frame_parameters(config.sample_rate, config.window_ms, config.stride_ms)
    stages = [
        (
            "input: normalised log power spectrogram (§3.1)",
            f"{spectrogram.shape[0]} frequency bins (0-{config.sample_rate // 2} Hz) x {spectrogram.shape[1]} "
            f"frames of {config.stride_ms:g} ms",
            ("B", "F", "T"),
            (1, *spectrogram.shape),
            0,
        )
    ]
    stride = 1
    for index, conv in enumerate(model.conv.layers):
        stride *= conv.stride[1]
        kh, kw = conv.kernel_size
        sh, sw = conv.stride
        norm = "masked BatchNorm + " if config.batch_norm else ""
        stages.append(
            (
                f"conv {index + 1}: 2D convolution over (frequency, time) (§3.5, Table 4 topic)",
                f"{conv.in_channels}->{conv.out_channels} channels, kernel {kh}x{kw}, stride {sh}x{sw} "
                f"(freq x time), then {norm}clipped ReLU; a frame is now {stride * config.stride_ms:g} ms",
                ("B", "C", "F'", "T'"),
                shapes[f"conv{index}"],
                count(conv, model.conv.norms[index]),
            )
        )
    stages.append(
        (
            "flatten channels x frequency into one feature vector per frame",
            "the recurrent layers read one vector per output frame",
            ("B", "T'", "C·F'"),
            shapes["conv"],
            0,
        )
    )
    for index, rnn in enumerate(model.rnns):
        kind = "GRU (§3.4)" if config.rnn_type == "gru" else "simple RNN, clipped ReLU (§3.1)"
        directions = "bidirectional (forward + backward summed)" if config.bidirectional else "forward only"
        bn = "sequence-wise BatchNorm on W h only (§3.2)" if config.batch_norm else "no BatchNorm"
        stages.append(
            (
                f"recurrent layer {index + 1}: {kind}",
                f"{directions}, {config.rnn_hidden} units; {bn}",
                ("B", "T'", "H"),
                shapes[f"rnn{index}"],
                count(rnn),
            )
        )
    if model.lookahead is not None:
        stages.append(
            (
                "lookahead (row) convolution (§3.7)",
                f"each unit sees {config.lookahead_context} future frames",
                ("B", "T'", "H"),
                shapes["lookahead"],
                count(model.lookahead),
            )
        )
    stages.append(
        (
            "fully connected layer",
            f"{config.rnn_hidden} -> {config.num_classes} classes: blank, space, apostrophe, a-z",
            ("B", "T'", "C"),
            shapes["fc"],
            count(model.fc),
        )
    )
    stages.append(
        (
            "log-softmax -> CTC loss (§3.1) / greedy or beam-search decoding (§3.8)",
            "per-frame log-probabilities over the alphabet; CTC sums over every alignment to the transcript",
            ("B", "T'", "C"),
            tuple(log_probs.shape),
            0,
        )
    )
    return stages


def figure_architecture(path, model, spectrogram, source):
    config = model.config
    stages = measure_stages(model, spectrogram)
    height = 0.95 * len(stages) + 1.6
    fig, ax = plt.subplots(figsize=(11, height))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, len(stages))
    ax.axis("off")
    colours = {
        "input": "#dbe9f6",
        "conv": "#fde4c8",
        "flatten": "#eeeeee",
        "recurrent": "#d9f0d3",
        "lookahead": "#d9f0d3",
        "fully": "#e8dff2",
        "log-softmax": "#f6d5d5",
    }
    for row, (name, detail, axes_names, shape, params) in enumerate(stages):
        y = len(stages) - row - 1
        colour = next((c for key, c in colours.items() if name.startswith(key)), "#ffffff")
        ax.add_patch(
            FancyBboxPatch(
                (0.02, y + 0.12),
                0.96,
                0.74,
                boxstyle="round,pad=0.005,rounding_size=0.02",
                facecolor=colour,
                edgecolor="#555555",
                lw=1,
            )
        )
        ax.text(0.04, y + 0.64, name, fontsize=10.5, weight="bold", va="center")
        ax.text(0.04, y + 0.34, detail, fontsize=9, va="center", color="#333333")
        shape_text = "(" + ", ".join(f"{a}={s}" for a, s in zip(axes_names, shape, strict=True)) + ")"
        ax.text(0.96, y + 0.64, shape_text, fontsize=10, family="monospace", ha="right", va="center")
        if params:
            ax.text(
                0.96, y + 0.34, f"{params:,} parameters", fontsize=9, ha="right", va="center", color="#333333"
            )
        if row < len(stages) - 1:
            ax.annotate(
                "",
                xy=(0.5, y + 0.1),
                xytext=(0.5, y - 0.1 + 0.2 - 0.06),
                arrowprops={"arrowstyle": "<-", "color": "#555555", "lw": 1.2},
            )
    seconds = spectrogram.shape[-1] * config.stride_ms / 1000
    fig.suptitle(
        f"Deep Speech 2 as built here: {model.num_parameters():,} parameters ({source})\n"
        f"DS2Config(conv_channels={config.conv_channels}, rnn_type={config.rnn_type!r}, "
        f"rnn_layers={config.rnn_layers}, rnn_hidden={config.rnn_hidden}, bidirectional={config.bidirectional}, "
        f"batch_norm={config.batch_norm})\nshapes measured with forward hooks on one {seconds:.2f} s utterance "
        "(B = batch, C = channels or classes, F = frequency bins, T = frames, H = hidden units)",
        fontsize=10.5,
    )
    fig.tight_layout()
    save_figure(fig, path)


# ----------------------------------------------------------------------------------------------------------
# 3. CTC at work: posteriorgram, greedy path, forced alignment
# ----------------------------------------------------------------------------------------------------------


def figure_ctc(path, model, utterance, source):
    config = model.config
    sr = config.sample_rate
    text, spans = utterance["text"], utterance["spans"]
    spec = ds2.featurize(utterance["waveform"], sr, sr, config.spectrogram_floor_db)  # (F, T)
    (log_probs,) = ds2.predict(model, [spec])  # (T', 29)
    greedy = ds2.greedy_decode(log_probs)[0]
    targets = ds2.encode_text(text)
    alignment, scores = AF.forced_align(log_probs[None], targets[None].int(), blank=ds2.BLANK)  # (1, T')
    token_spans = AF.merge_tokens(alignment[0], scores[0].exp())
    stride = time_stride(model)
    frames = log_probs.shape[0]
    centres = frame_centres_s(frames, config, stride)
    left, right = frame_edges_s(frames, config, stride)
    best = log_probs.argmax(-1).numpy()
    cer = ds2.character_error_rate(text, greedy)

    fig, axes = plt.subplots(
        3,
        1,
        figsize=(12, 10.5),
        sharex=True,
        layout="constrained",
        gridspec_kw={"height_ratios": [1, 2.3, 0.9]},
    )
    num_freq = spec.shape[0]
    bin_hz = sr / ds2.frame_parameters(sr, config.window_ms, config.stride_ms)[0]
    l0, r0 = frame_edges_s(spec.shape[-1], config)
    axes[0].imshow(
        spec.numpy(),
        origin="lower",
        aspect="auto",
        cmap="magma",
        interpolation="nearest",
        extent=(l0, r0, -bin_hz / 2, (num_freq - 0.5) * bin_hz),
    )
    mark_characters(axes[0], text, spans, sr, y=0.9 * sr / 2, color="white", shade=False)
    axes[0].set(
        ylabel="frequency (Hz)",
        title="(a) the input: normalised log spectrogram, letters at their true "
        "positions (from the synthesiser)",
    )

    ax = axes[1]
    image = ax.imshow(
        log_probs.exp().numpy().T,
        origin="lower",
        aspect="auto",
        cmap="Greys",
        extent=(left, right, -0.5, ds2.NUM_CLASSES - 0.5),
        interpolation="nearest",
        vmin=0,
        vmax=1,
    )
    fig.colorbar(image, ax=axes, pad=0.01, fraction=0.025, label="p(class | frame)")
    ax.plot(
        centres,
        alignment[0].numpy(),
        "s",
        ms=5,
        color="tab:red",
        alpha=0.55,
        label="CTC forced alignment of the transcript (torchaudio forced_align)",
    )
    ax.plot(
        centres,
        best,
        "o",
        ms=2.5,
        color="tab:blue",
        label="greedy path: argmax per frame (then collapse repeats, drop blanks)",
    )
    ax.set_yticks(range(ds2.NUM_CLASSES), SYMBOLS, fontsize=7.5)
    ax.set(
        ylabel="output class",
        title=f"(b) posteriorgram p(class | frame), one frame per {stride * config.stride_ms:g} ms: CTC is "
        "'peaky', mostly blank, each letter a short run of frames",
    )
    ax.title.set_fontsize(10.5)
    fig.legend(loc="outside lower center", ncols=2, fontsize=9)

    ax = axes[2]
    ax.set_ylim(0, 3)
    ax.set_yticks([0.5, 1.5, 2.5], ["greedy", "forced", "true"])
    mark_characters(ax, text, spans, sr, y=2.5)
    for span in token_spans:
        t = 0.5 * (centres[span.start] + centres[span.end - 1])
        ax.text(
            t,
            1.5,
            ds2.ALPHABET[span.token].replace(" ", "␣"),
            ha="center",
            va="center",
            fontsize=9,
            color="tab:red",
        )
    previous = ds2.BLANK
    for frame, label in enumerate(best):
        if label != ds2.BLANK and label != previous:
            ax.text(
                centres[frame],
                0.5,
                ds2.ALPHABET[label].replace(" ", "␣"),
                ha="center",
                va="center",
                fontsize=9,
                color="tab:blue",
            )
        previous = label
    ax.set(
        xlabel="time (s)",
        title="(c) where each letter is: synthesiser's truth (shaded), forced alignment, greedy spikes",
    )
    ax.set_xlim(l0, r0)
    fig.suptitle(
        f'CTC at work (§3.1) — {source}\nreference: "{text}"\ngreedy:     "{greedy}"   (CER {100 * cer:.1f}%)',
        fontsize=11,
    )
    save_figure(fig, path)


# ----------------------------------------------------------------------------------------------------------
# 3b. The CTC trellis: the alpha and beta recursions on the blank-extended label (Graves et al. 2006)
# ----------------------------------------------------------------------------------------------------------


def ctc_trellis(log_probs, text):
    """Alphas, betas and state occupancies of one utterance's CTC trellis, by implementation.py's recursion.

    Args:
        log_probs: ``(T, C)`` per-frame log-probabilities.
        text: the transcript; its states are the blank-extended label l' = (_, y1, _, y2, ..., yS, _).

    Returns:
        dict with ``extended`` ``(L,)`` class ids of l', ``can_skip`` ``(L,)`` (may a path enter state s
        from s - 2?), ``log_alpha`` and ``log_beta`` ``(T, L)`` (both include frame t's own emission, as in
        Graves et al. 2006), ``occupancy`` ``(T, L)`` (the probability that a path reading ``text`` is in
        state s at frame t; each row sums to 1) and ``log_p`` = ln p(text | x).
    """
    targets = ds2.encode_text(text)  # (S,)
    extended = torch.full((2 * len(targets) + 1,), ds2.BLANK, dtype=torch.long)
    extended[1::2] = targets  # (L,) = (2S + 1,)
    length = len(extended)
    # The same rule as ctc_loss_from_scratch: a skip s - 2 -> s jumps over a blank, allowed only into a
    # letter that differs from the letter before that blank.
    can_skip = torch.zeros(length, dtype=torch.bool)
    can_skip[2:] = (extended[2:] != ds2.BLANK) & (extended[2:] != extended[:-2])
    emissions = log_probs[:, extended]  # (T, L): ln y_t(l'_s)
    log_alpha = ds2.ctc_alpha(emissions[None], can_skip[None])[0]  # (T, L)
    # beta is the alpha recursion run backwards: time and states reversed. Reversed, state r = L - 1 - s
    # may be entered from r - 2 exactly when the original path may go from s to s + 2: can_skip[s + 2].
    skip_reversed = torch.zeros(length, dtype=torch.bool)
    skip_reversed[2:] = can_skip.flip(0)[:-2]
    log_beta = ds2.ctc_alpha(emissions.flip(0, 1)[None], skip_reversed[None])[0].flip(0, 1)  # (T, L)
    log_p = torch.logsumexp(log_alpha[-1, -2:], dim=0)  # a path ends in the last letter or the last blank
    occupancy = (log_alpha + log_beta - emissions - log_p).exp()  # (T, L)
    return {
        "extended": extended,
        "can_skip": can_skip,
        "log_alpha": log_alpha,
        "log_beta": log_beta,
        "occupancy": occupancy,
        "log_p": log_p,
    }


def _trellis_value(value):
    """A probability short enough for a trellis node: 0.123, 0.0045, 6e-05."""
    return f"{value:.3f}" if value >= 0.0095 else f"{value:.2g}" if value >= 1e-4 else f"{value:.0e}"


def _spread_alignment(labels, frames):
    """A CTC path of ``frames`` symbols that reads ``labels``: the shortest one (a blank between equal
    neighbours), its first symbols held one frame longer until it fills the frames."""
    shortest = []
    for label in labels:
        if shortest and shortest[-1] == label:
            shortest.append(ds2.BLANK)
        shortest.append(label)
    if frames < len(shortest):
        raise ValueError(f"{frames} frames are too few for a CTC path of {len(shortest)} symbols")
    held = [1] * len(shortest)
    for extra in range(frames - len(shortest)):
        held[extra % len(shortest)] += 1
    return [symbol for symbol, times in zip(shortest, held, strict=True) for _ in range(times)]


def figure_ctc_trellis(path, text="all", frames=6, seed=0):
    """The CTC trellis of a tiny example: states of the blank-extended label against frames.

    The per-frame probabilities are a seeded draw that leans towards one alignment of ``text``, so the
    figure needs no trained model. The alphas and betas come from ``implementation.ctc_alpha``,
    the recursion ``ctc_loss_from_scratch`` runs; ``-ln p(y|x)`` from the alphas is shown beside
    ``implementation.ctc_loss`` (``F.ctc_loss``) on the same numbers. Returns the ``ctc_trellis`` dict.
    """
    generator = torch.Generator().manual_seed(seed)
    targets = ds2.encode_text(text)  # (S,)
    # Probabilities that lean towards one alignment of the transcript, with noise so that others count.
    alignment = _spread_alignment(targets.tolist(), frames)
    logits = torch.full((frames, ds2.NUM_CLASSES), -4.0)  # (T, C): letters not in the text are unlikely
    used = sorted({ds2.BLANK, *targets.tolist()})
    logits[:, used] = torch.randn(frames, len(used), generator=generator)
    logits[torch.arange(frames), torch.tensor(alignment)] += 2.0
    log_probs = logits.log_softmax(-1)  # (T, C)
    trellis = ctc_trellis(log_probs, text)
    reference = ds2.ctc_loss(
        log_probs[None], targets[None], torch.tensor([frames]), torch.tensor([len(targets)])
    )
    extended, can_skip = trellis["extended"].tolist(), trellis["can_skip"].tolist()
    length = len(extended)
    alpha = trellis["log_alpha"].exp().numpy()  # (T, L)
    occupancy = trellis["occupancy"].numpy()  # (T, L)
    reachable = trellis["log_alpha"].numpy() > -1e20  # some path prefix gets here from a start state
    live = occupancy > 1e-12  # on some complete path that reads the transcript
    names = ["_" if k == ds2.BLANK else ds2.ALPHABET[k] for k in extended]

    fig, axes = plt.subplots(1, 2, figsize=(15.5, 6.6))
    moves = {
        0: ("stay: s -> s", "#888888"),
        1: ("advance: s-1 -> s", "tab:blue"),
        2: ("skip a blank: s-2 -> s (only into a letter unlike the one before the blank)", "tab:green"),
    }
    for ax in axes:
        for t in range(1, frames):
            for s in range(length):
                for step in (0, 1, 2):
                    source = s - step
                    if source < 0 or (step == 2 and not can_skip[s]) or not reachable[t - 1, source]:
                        continue
                    on_path = live[t - 1, source] and live[t, s]
                    ax.annotate(
                        "",
                        xy=(t + 1, s),
                        xytext=(t, source),
                        arrowprops={
                            "arrowstyle": "-|>",
                            "color": moves[step][1],
                            "lw": 1.3 if on_path else 0.6,
                            "alpha": 0.9 if on_path else 0.25,
                            "shrinkA": 13,
                            "shrinkB": 13,
                        },
                    )
        # The skip CTC forbids: between two equal letters the blank is compulsory ("l l" reads as one l).
        repeats = [s for s in range(2, length) if extended[s] != ds2.BLANK and extended[s] == extended[s - 2]]
        for s in repeats:
            t = next((t for t in range(1, frames) if reachable[t - 1, s - 2] and reachable[t, s]), None)
            if t is None:
                continue
            ax.annotate(
                "",
                xy=(t + 1, s),
                xytext=(t, s - 2),
                arrowprops={
                    "arrowstyle": "-|>",
                    "color": "tab:red",
                    "lw": 1.4,
                    "ls": "--",
                    "shrinkA": 13,
                    "shrinkB": 13,
                },
            )
            ax.text(
                t + 0.5, s - 1, "✗", color="tab:red", fontsize=16, ha="center", va="center", weight="bold"
            )
        ax.set_xlim(0.4, frames + 0.6)
        ax.set_ylim(length - 0.4, -0.8)  # l'_1 at the top
        ax.set_xticks(range(1, frames + 1))
        ax.set_yticks(range(length), [f"s={s + 1}:  {name}" for s, name in enumerate(names)], fontsize=10)
        ax.set_xlabel("frame t")
        for s in (0, 1):
            ax.annotate("start", xy=(1, s), xytext=(0.45, s), fontsize=8, va="center", color="#444444")
        for s in (length - 2, length - 1):
            ax.scatter([frames], [s], s=1500, facecolor="none", edgecolor="black", lw=1.2, zorder=2)
    axes[0].set_ylabel("state s of the blank-extended label l'  (_ = blank)")

    ax = axes[0]
    for t in range(frames):
        for s in range(length):
            face = "#cfe3f5" if live[t, s] else "#eeeeee" if reachable[t, s] else "white"
            ax.scatter([t + 1], [s], s=1100, facecolor=face, edgecolor="#555555", zorder=3)
            label = _trellis_value(alpha[t, s]) if reachable[t, s] else "0"
            ax.text(t + 1, s, label, ha="center", va="center", fontsize=7.5, zorder=4)
    ax.set_title(
        r"(a) $\alpha_t(s) = y_t(l'_s)\,[\alpha_{t-1}(s) + \alpha_{t-1}(s-1) + \alpha_{t-1}(s-2)]$, the last "
        "term only where a skip is allowed\nblue: on a complete path; grey: reached, but the transcript cannot be "
        "finished from it",
        fontsize=9.5,
    )
    handles = [plt.Line2D([], [], color=c, lw=1.5, label=label) for label, c in moves.values()]
    handles.append(
        plt.Line2D([], [], color="tab:red", ls="--", lw=1.5, label="forbidden: skip between equal letters")
    )
    ax.legend(handles=handles, fontsize=8, loc="lower left", bbox_to_anchor=(0.0, -0.32), ncols=2)

    ax = axes[1]
    for t in range(frames):
        for s in range(length):
            colour = plt.cm.Blues(0.1 + 0.8 * occupancy[t, s]) if live[t, s] else "white"
            ax.scatter([t + 1], [s], s=1100, facecolor=colour, edgecolor="#555555", zorder=3)
            ax.text(
                t + 1,
                s,
                (f"{occupancy[t, s]:.2f}" if occupancy[t, s] >= 0.005 else "<.01") if live[t, s] else "",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if occupancy[t, s] > 0.6 else "black",
                zorder=4,
            )
        ax.text(t + 1, -0.6, f"sum {occupancy[t].sum():.2f}", ha="center", va="center", fontsize=8)
    ax.set_title(
        r"(b) $\alpha_t(s)\,\beta_t(s)\,/\,(y_t(l'_s)\,p(y|x))$: the probability that a path of the transcript "
        "is\nin state s at frame t (columns sum to 1); "
        r"$\partial(-\ln p)/\partial \ln y_t(k)$ is minus its sum over the states of class k",
        fontsize=9.5,
    )
    fig.suptitle(
        f'The CTC trellis of "{text}" over {frames} frames (§3.1; Graves et al. 2006): a path may start in '
        f"the first blank or the first letter and end in the last letter or the last blank.\n"
        f"-ln p(y|x) = {-trellis['log_p'].item():.4f} from these alphas (implementation.ctc_alpha), "
        f"{reference.item():.4f} from ds2.ctc_loss (F.ctc_loss). Per-frame probabilities: a seeded draw, "
        "not a trained model.",
        fontsize=10.5,
    )
    fig.tight_layout()
    save_figure(fig, path)
    return trellis


# ----------------------------------------------------------------------------------------------------------
# 4. SortaGrad (§3.3)
# ----------------------------------------------------------------------------------------------------------


def figure_sortagrad(path, frames, seed, batch_size=16, stride_ms=10.0):
    frames = np.asarray(frames)
    fig, axes = plt.subplots(2, 1, figsize=(11, 7), sharex=True, sharey=True)
    for ax, epoch in zip(axes, (0, 1), strict=True):
        batches = ds2.sortagrad_batches(frames, batch_size, epoch, seed)
        position = 0
        padded = valid = 0
        for index, batch in enumerate(batches):
            seconds = frames[batch] * stride_ms / 1000
            x = np.arange(position, position + len(batch))
            ax.scatter(x, seconds, s=6, color="tab:blue" if index % 2 else "tab:orange")
            ax.hlines(seconds.max(), x[0] - 0.5, x[-1] + 0.5, color="black", lw=0.8)
            padded += len(batch) * frames[batch].max()
            valid += frames[batch].sum()
            position += len(batch)
        kind = "sorted by length (SortaGrad)" if epoch == 0 else "batches of similar lengths in random order"
        ax.set(
            ylabel="utterance length (s)",
            title=f"epoch {epoch + 1}: {kind}; {len(batches)} batches of {batch_size}, "
            f"{100 * (1 - valid / padded):.1f}% of the padded frames are padding",
        )
    axes[-1].set_xlabel(
        "position in the epoch (utterances in training order); black line: each batch's longest "
        "utterance, to which the batch is padded"
    )
    fig.suptitle(
        f"SortaGrad (§3.3): implementation.sortagrad_batches on {len(frames)} synthetic training utterances\n"
        "the first epoch goes from short to long (small CTC losses first); later epochs are shuffled",
        fontsize=11.5,
    )
    fig.tight_layout()
    save_figure(fig, path)


# ----------------------------------------------------------------------------------------------------------
# 5. Sequence-wise BatchNorm (§3.2)
# ----------------------------------------------------------------------------------------------------------


@torch.no_grad()
def input_projections(model, spectrograms):
    """``W h^{l-1}`` of the first recurrent layer, per utterance: the term §3.2's BatchNorm normalises."""
    model.eval()
    outputs = []
    rnn = model.rnns[0]
    for spec in spectrograms:
        features, _ = model.conv(spec[None], torch.tensor([spec.shape[-1]]))  # (1, T', K * F')
        if isinstance(rnn, ds2.GRULayer):
            weight = torch.cat(
                [rnn.gru.weight_ih_l0] + ([rnn.gru.weight_ih_l0_reverse] if rnn.directions == 2 else [])
            )
            outputs.append((features @ weight.T)[0])  # (T', D * 3H)
        else:
            outputs.append(rnn.input_projection(features)[0])  # (T', D * H)
    return outputs


@torch.no_grad()
def batch_statistics(norm, batch, lengths):
    """Mean and variance a BatchNorm module computes for ``batch (B, T, F)``: read from its running
    estimates after one training step with momentum 1 (so they equal the batch's own statistics)."""
    norm.reset_running_stats()
    norm.momentum = 1.0
    norm.train()
    if isinstance(norm, ds2.SequenceWiseBatchNorm):
        norm(batch, lengths)
    else:  # plain BatchNorm1d: every (utterance, frame) of the padded batch, padding included
        norm(batch.reshape(-1, batch.shape[-1]))
    return norm.running_mean.clone(), norm.running_var.clone()


@torch.no_grad()
def normalise(norm, batch, lengths):
    norm.train()
    if isinstance(norm, ds2.SequenceWiseBatchNorm):
        return norm(batch, lengths)
    return norm(batch.reshape(-1, batch.shape[-1])).reshape(batch.shape)


def figure_batchnorm(path, model, spectrograms, source):
    config = model.config
    projections = input_projections(model, spectrograms)
    features = projections[0].shape[-1]
    frame_s = time_stride(model) * config.stride_ms / 1000
    masked = ds2.SequenceWiseBatchNorm(features)  # gamma = 1, beta = 0: the bare normalisation
    plain = nn.BatchNorm1d(features)
    norms = {"masked": masked, "plain": plain}

    fig, axes = plt.subplots(1, 3, figsize=(17, 5.6))
    # (a) per-feature statistics over a real batch, before and after sequence-wise BN
    batch, lengths = ds2.pad_spectrograms([p.T for p in projections])  # (B, features, T)
    batch = batch.transpose(1, 2)  # (B, T, features)
    mask = ds2.lengths_to_mask(lengths, batch.shape[1])
    valid = batch[mask]  # (valid frames, features)
    after = normalise(masked, batch, lengths)[mask]
    ax = axes[0]
    ax.scatter(valid.mean(0), valid.std(0), s=5, alpha=0.5, label="W h, before BN")
    ax.scatter(
        after.mean(0), after.std(0), s=30, color="tab:red", marker="x", label="B(W h): sequence-wise BN"
    )
    ax.set(
        xlabel="mean over valid frames",
        ylabel="standard deviation over valid frames",
        title=f"(a) {features} features of W h (layer 1) over a batch of\n{len(projections)} utterances "
        f"({int(lengths.sum())} frames): BN puts every one at (0, 1)",
    )
    ax.title.set_fontsize(10)
    ax.legend(fontsize=9)

    # (b) one utterance padded more and more: the statistics plain BatchNorm1d computes vs masked BN
    short = int(np.argmin([p.shape[0] for p in projections]))
    utterance = projections[short]  # (T_a, features)
    n = utterance.shape[0]
    true_mean, true_var = batch_statistics(masked, utterance[None], torch.tensor([n]))
    std = true_var.sqrt()
    padding_fractions, rows = [], []
    for total in range(n, 4 * n + 1, max(1, n // 8)):
        padded = torch.zeros(1, total, features)
        padded[0, :n] = utterance
        rows.append([batch_statistics(norm, padded, torch.tensor([n])) for norm in (masked, plain)])
        padding_fractions.append(100 * (1 - n / total))
    ax = axes[1]
    for index, (label, colour) in enumerate(
        (("masked (SequenceWiseBatchNorm)", "tab:green"), ("plain BatchNorm1d over padded frames", "tab:red"))
    ):
        mean_error = [((row[index][0] - true_mean).abs() / std).mean().item() for row in rows]
        var_ratio = [(row[index][1] / true_var).mean().item() for row in rows]
        ax.plot(padding_fractions, mean_error, "-", color=colour, label=f"{label}: |mean error| / std")
        ax.plot(padding_fractions, var_ratio, "--", color=colour, label=f"{label}: variance / true variance")
    ax.set(
        xlabel="padding in the batch (% of its frames)",
        ylabel="averaged over features",
        title=f"(b) statistics of one {n * frame_s:.2f} s utterance, padded as a longer\n"
        "partner would pad it: the mean is pulled to 0, the variance distorted",
    )
    ax.title.set_fontsize(10)
    ax.legend(fontsize=7.5)

    # (c) the utterance's normalised output as its batch partner grows. The partner is the utterance's own
    # frames repeated to each length, so its frames have the utterance's statistics: whatever changes is
    # the padding. (With a real partner, the output also changes with the partner's content: that is
    # BatchNorm in training mode, and why the paper uses running estimates at inference.)
    alone = {name: normalise(norm, utterance[None], torch.tensor([n]))[0] for name, norm in norms.items()}
    partner_lengths = sorted(
        set(range(max(2, n // 4), 4 * n + 1, max(1, n // 12))) | {n, 2 * n, 3 * n, 4 * n}
    )
    changes = {name: [] for name in norms}
    for k in partner_lengths:
        partner = utterance.repeat(math.ceil(k / n), 1)[:k]  # (k, features)
        pair, pair_lengths = ds2.pad_spectrograms([utterance.T, partner.T])
        pair = pair.transpose(1, 2)  # (2, max(n, k), features)
        for name, norm in norms.items():
            out = normalise(norm, pair, pair_lengths)[0, :n]  # the utterance's valid frames
            changes[name].append((out - alone[name]).square().mean().sqrt().item())
    ax = axes[2]
    seconds = np.array(partner_lengths) * frame_s
    ax.plot(
        seconds,
        changes["masked"],
        color="tab:green",
        label="masked (SequenceWiseBatchNorm):\n0 at whole repeats, small between",
    )
    ax.plot(seconds, changes["plain"], color="tab:red", label="plain BatchNorm1d over padded frames")
    ax.axvline(n * frame_s, color="grey", ls=":", lw=1)
    ax.text(
        n * frame_s,
        0.97,
        " no padding here",
        fontsize=8,
        color="grey",
        va="top",
        transform=ax.get_xaxis_transform(),
    )
    ax.set(
        xlabel="length of the batch partner (s)",
        ylabel="RMS change of the utterance's normalised output",
        title=f"(c) the {n * frame_s:.2f} s utterance batched with a partner of\ngrowing length that "
        "sounds like it (its own frames, repeated)",
    )
    ax.title.set_fontsize(10)
    ax.legend(fontsize=8, loc="center right")
    fig.suptitle(f"Sequence-wise BatchNorm (§3.2) on W h of recurrent layer 1 — {source}", fontsize=12)
    fig.tight_layout()
    save_figure(fig, path)


# ----------------------------------------------------------------------------------------------------------
# 6. Training curves
# ----------------------------------------------------------------------------------------------------------


def plot_run_curves(history, path):
    """curves.png of a train_minimal.py run: training loss and greedy dev error rates per epoch."""
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-")
    ax_loss.set(xlabel="epoch", ylabel="CTC loss (nats / utterance)", title="training loss")
    dev_splits = [name for name in history[0] if name.startswith("dev")]  # dev-clean/dev-noisy, or dev
    for split, style in zip(dev_splits, ("-", "--"), strict=False):
        for rate, marker in (("cer", "o"), ("wer", "s")):  # no WER for text without spaces (Mandarin)
            if rate in history[0][split]:
                values = [100 * h[split][rate] for h in history]
                ax_err.plot(epochs, values, marker + style, label=f"{split} {rate.upper()}")
    ax_err.set(xlabel="epoch", ylabel="%", title="greedy error rates", yscale="log")
    ax_err.legend()
    speech = "synthetic speech" if "dev-clean" in dev_splits else "recorded speech"
    fig.suptitle(f"Deep Speech 2 on {speech} (train_minimal.py)")
    fig.tight_layout()
    ds2.atomic_write(path, lambda temporary: fig.savefig(temporary, dpi=110, format="png"))
    plt.close(fig)


def figure_training_curves(path, metrics, metrics_path, quick):
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(12, 4.6))
    if metrics is not None:
        history = metrics["history"]
        source = f"the run in {metrics_path} (train_minimal.py)"
        epochs = [h["epoch"] for h in history]
        ax_loss.plot(
            epochs, [h["train_loss"] for h in history], "o-", label="mean training loss of the epoch"
        )
        ax_loss.set_xlabel("epoch")
    elif quick is not None:
        history = quick["history"]
        source = (
            f"no {metrics_path}: this script's quick training ({quick['steps']} steps, "
            f"{quick['seconds']:.0f} s, {quick['train_size']} utterances)"
        )
        steps, losses = zip(*quick["step_losses"], strict=True)
        ax_loss.plot(steps, losses, "-", lw=0.8, label="training loss per batch")
        ax_loss.set_xlabel("optimizer step")
        epochs = [h["steps"] for h in history]
    else:
        for ax in (ax_loss, ax_err):
            ax.axis("off")
        ax_loss.text(
            0.0,
            0.5,
            f"no {metrics_path} and no quick training in this run:\n"
            "train with `python train_minimal.py` to see its curves here",
            fontsize=12,
            va="center",
        )
        fig.suptitle("Training curves: no run found")
        save_figure(fig, path)
        return
    ax_loss.set(ylabel="CTC loss (nats per utterance)", yscale="log", title="training loss")
    ax_loss.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax_loss.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax_loss.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    for ax in (ax_loss, ax_err):
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax_loss.legend()
    for split, style in zip(dev_splits(history[0]), ("-", "--", ":", "-."), strict=False):
        ax_err.plot(
            epochs,
            [100 * h[split]["cer"] for h in history],
            "o" + style,
            color="tab:blue",
            label=f"{split} CER",
        )
        ax_err.plot(
            epochs,
            [100 * h[split]["wer"] for h in history],
            "s" + style,
            color="tab:orange",
            label=f"{split} WER",
        )
    ax_err.set(
        xlabel=ax_loss.get_xlabel() if metrics is None else "epoch",
        ylabel="error rate (%)",
        title="greedy error rates on unseen speakers (after each epoch)",
    )
    ax_err.set_ylim(bottom=0)
    ax_err.legend(fontsize=9)
    fig.suptitle(f"Training Deep Speech 2 on synthetic speech — {source}", fontsize=11)
    fig.tight_layout()
    save_figure(fig, path)


# ----------------------------------------------------------------------------------------------------------
# 7. The paper's results, and ours beside them
# ----------------------------------------------------------------------------------------------------------


def our_numbers(metrics, metrics_path, quick):
    """[(label, value %)] for our greedy / beam+LM error rates, and a caption naming where they come from."""
    if metrics is not None:
        final = metrics.get("final")
        if final:
            rows = []
            for split in dev_splits(final):
                rows += [(f"{split}\nWER\ngreedy", 100 * final[split]["wer"])]
                if "beam_wer" in final[split]:
                    rows += [(f"{split}\nWER\nbeam+LM", 100 * final[split]["beam_wer"])]
                rows += [(f"{split}\nCER\ngreedy", 100 * final[split]["cer"])]
            args = metrics.get("args", {})
            return rows, (
                f"ours: {metrics_path}, final evaluation ({args.get('train_size', '?')} synthetic "
                f"utterances, {len(metrics['history'])} epochs)"
            )
        last = metrics["history"][-1]
        rows = [
            (f"{s}\n{m.upper()}\ngreedy", 100 * last[s][m]) for s in dev_splits(last) for m in ("wer", "cer")
        ]
        return rows, f"ours: {metrics_path}, epoch {last['epoch']} (no final evaluation in the file)"
    if quick is not None:
        last = quick["history"][-1]
        rows = [
            (f"{s}\n{m.upper()}\ngreedy", 100 * last[s][m])
            for s in ("dev-clean", "dev-noisy")
            for m in ("wer", "cer")
        ]
        return rows, (
            f"no run ({metrics_path} missing): this script's {quick['seconds']:.0f} s quick "
            f"training, {quick['train_size']} utterances"
        )
    return [], f"no run: {metrics_path} missing; train with python train_minimal.py"


def figure_paper_results(path, metrics, metrics_path, quick):
    fig, axes = plt.subplots(2, 3, figsize=(16, 9.5))
    (ax_bn, ax_sort, ax_gru), (ax_conv, ax_data, ax_ours) = axes
    r = PAPER_RESULTS["depth_bn"]
    for key, label, style, colour, dy in (
        ("with_bn", "with BatchNorm", "o-", "tab:blue", -12),
        ("without_bn", "without BatchNorm", "s--", "tab:red", 6),
    ):
        ax_bn.plot(r["layers"], r[key], style, color=colour, label=label)
        for x, y in zip(r["layers"], r[key], strict=True):
            ax_bn.annotate(
                f"{y:.2f}",
                (x, y),
                textcoords="offset points",
                xytext=(0, dy),
                ha="center",
                fontsize=8,
                color=colour,
            )
    ax_bn.set(
        xlabel="recurrent layers (simple RNN)",
        ylabel="dev WER (%)",
        xticks=r["layers"],
        title=f"{PAPER}\nTable 1 topic, §3.2: BatchNorm at each depth",
    )
    ax_bn.margins(y=0.12)  # room for the value labels
    ax_bn.legend(fontsize=8)

    r = PAPER_RESULTS["sortagrad"]
    x = np.arange(2)
    for offset, (label, colour) in zip(
        (-0.2, 0.2), (("not sorted", "tab:gray"), ("SortaGrad", "tab:green")), strict=True
    ):
        values = [r["baseline"][label], r["BatchNorm"][label]]
        bars = ax_sort.bar(x + offset, values, 0.4, color=colour, label=label)
        ax_sort.bar_label(bars, fmt="%.2f", fontsize=8)
    ax_sort.set(
        xticks=x,
        xticklabels=["baseline", "BatchNorm"],
        ylabel="dev WER (%)",
        title=f"{PAPER}\nTable 2 topic, §3.3: SortaGrad",
    )
    ax_sort.legend(fontsize=8, loc="lower right")

    r = PAPER_RESULTS["rnn_gru"]
    for label, marker in (("simple RNN", "o-"), ("GRU", "s-")):
        ax_gru.plot(r["layers"], r[label], marker, label=label)
        for x_value, y in zip(r["layers"], r[label], strict=True):
            ax_gru.annotate(
                f"{y:.2f}", (x_value, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8
            )
    ax_gru.set(
        xlabel="recurrent layers",
        ylabel="dev WER (%)",
        xticks=r["layers"],
        title=f"{PAPER}\nTable 3 topic, §3.4: simple RNN vs GRU",
    )
    ax_gru.legend(fontsize=8)

    r = PAPER_RESULTS["conv"]
    names = list(r)
    x = np.arange(len(names))
    for offset, index, label, colour in (
        (-0.2, 0, "regular dev", "tab:blue"),
        (0.2, 1, "noisy dev", "tab:orange"),
    ):
        bars = ax_conv.bar(x + offset, [r[n][index] for n in names], 0.4, label=label, color=colour)
        ax_conv.bar_label(bars, fmt="%.1f", fontsize=7)
    ax_conv.set(xticks=x, ylabel="dev WER (%)", title=f"{PAPER}\nTable 4 topic, §3.5: convolution layers")
    ax_conv.set_xticklabels([n.replace(" ", "\n", 1) for n in names], fontsize=8)
    ax_conv.legend(fontsize=8)

    r = PAPER_RESULTS["data_scaling"]
    for label, marker in (("regular", "o-"), ("noisy", "s--")):
        ax_data.plot(r["hours"], r[label], marker, label=f"{label} dev")
    ax_data.set(
        xscale="log",
        yscale="log",
        xlabel="hours of training audio",
        ylabel="dev WER (%)",
        title=f"{PAPER}\n§5.3: data scaling (~40% relative per 10x data)",
    )
    ax_data.legend(fontsize=8)
    ax_data.set_yticks([10, 15, 20, 30, 50], ["10", "15", "20", "30", "50"])
    ax_data.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())

    rows, caption = our_numbers(metrics, metrics_path, quick)
    if rows:
        labels, values = zip(*rows, strict=True)
        colours = ["tab:blue" if "clean" in label else "tab:orange" for label in labels]
        bars = ax_ours.bar(range(len(values)), values, color=colours)
        ax_ours.bar_label(bars, fmt="%.1f", fontsize=8)
        ax_ours.set_xticks(range(len(values)), labels, fontsize=7.5)
        ax_ours.set(
            ylabel="error rate (%)",
            title="measured here (synthetic speech, not the paper's data)\n" + textwrap.fill(caption, 60),
        )
        ax_ours.title.set_fontsize(8.5)
    else:
        ax_ours.axis("off")
        ax_ours.text(
            0.5,
            0.5,
            "No run of ours to compare:\n" + caption,
            ha="center",
            va="center",
            fontsize=11,
            wrap=True,
        )
    fig.suptitle(
        "The paper's reported development-set WER (recalled values from ablations/paper_results.json; the "
        "paper's PDF is the authority)\nand our own measured error rates. Ours are on synthetic speech with a tiny model: "
        "compare trends, not values.",
        fontsize=11.5,
    )
    fig.tight_layout()
    save_figure(fig, path)


# ----------------------------------------------------------------------------------------------------------
# 8. Ablation sweeps (ablations/run.py): a finished sweep of ours beside the paper's numbers
# ----------------------------------------------------------------------------------------------------------

# The paper's table of the same topic for each sweep (keys of PAPER_RESULTS); the other sweeps have no
# table on our fact sheet, so only our numbers are drawn.
ABLATION_PAPER_TABLES = {
    "batchnorm": "depth_bn",
    "sortagrad": "sortagrad",
    "gru": "rnn_gru",
    "conv": "conv",
    "scaling": "data_scaling",
}


def _paper_panel(ax, key):
    """The paper's dev WER for one table topic (from ablations/paper_results.json), labelled as the paper's."""
    r = PAPER_RESULTS[key]
    if key in ("depth_bn", "rnn_gru"):
        series = ("with_bn", "without_bn") if key == "depth_bn" else ("simple RNN", "GRU")
        for label in series:
            ax.plot(r["layers"], r[label], "o-", label=label.replace("_", " "))
        ax.set(xlabel="recurrent layers", xticks=r["layers"])
        title = "Table 1 topic, §3.2: BatchNorm at each depth" if key == "depth_bn" else "Table 3 topic, §3.4"
    elif key == "sortagrad":
        x = np.arange(2)
        for offset, label in ((-0.2, "not sorted"), (0.2, "SortaGrad")):
            bars = ax.bar(x + offset, [r["baseline"][label], r["BatchNorm"][label]], 0.4, label=label)
            ax.bar_label(bars, fmt="%.2f", fontsize=7)
        ax.set_xticks(x, ["no BatchNorm", "BatchNorm"])
        title = "Table 2 topic, §3.3: SortaGrad"
    elif key == "conv":
        names = list(r)
        x = np.arange(len(names))
        for offset, index, label in ((-0.2, 0, "regular dev"), (0.2, 1, "noisy dev")):
            ax.bar(x + offset, [r[n][index] for n in names], 0.4, label=label)
        ax.set_xticks(x, [n.replace(" ", "\n", 1) for n in names], fontsize=7)
        title = "Table 4 topic, §3.5: convolutions"
    else:  # data_scaling
        for label, style in (("regular", "o-"), ("noisy", "s--")):
            ax.plot(r["hours"], r[label], style, label=f"{label} dev")
        per_10x = load_relative_improvement_per_10x()
        ax.set(xscale="log", yscale="log", xlabel="hours of training audio")
        ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        title = f"Table 10 topic, §5.3: about {per_10x}% relative per 10x data"
    ax.set(ylabel="dev WER (%)", title=f"{PAPER}\n{title}")
    ax.title.set_fontsize(8.5)
    ax.legend(fontsize=7)


def load_relative_improvement_per_10x(path=PAPER_RESULTS_PATH):
    """The paper's 'about N% relative improvement for each 10x more data' (§5.3), N from the JSON file."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)["other"]["relative_improvement_per_10x_data"]["value"]


DECODER_NAMES = {"greedy": "greedy", "beam_lm": "beam + LM", "decoded": "dev"}


def _ablation_panel(ax, results, metric, decoder):
    """Our error rate (mean over seeds, min-max bars) per variant: one line per series, x from the sweep."""
    summary, plot = results["summary"], results["plot"]
    xs = [row["x"] for row in summary]
    categorical = any(isinstance(x, str) for x in xs)
    categories = list(dict.fromkeys(str(x) for x in xs))
    series = list(dict.fromkeys(row["series"] for row in summary))
    for s_index, name in enumerate(series):
        rows = [row for row in summary if row["series"] == name and row[plot["splits"][0]]]
        for split, style in zip(plot["splits"], ("o-", "s--"), strict=False):
            stats = [row[split][decoder][metric] for row in rows]
            if categorical:  # spread the series a little so their bars do not overlap
                x = np.array([categories.index(str(row["x"])) for row in rows]) + 0.08 * (s_index - 0.5)
            else:
                x = np.array([row["x"] for row in rows], dtype=float)
            mean = np.array([100 * s["mean"] for s in stats])
            spread = [mean - [100 * s["min"] for s in stats], [100 * s["max"] for s in stats] - mean]
            label = split if len(series) == 1 else f"{name}, {split}" if len(plot["splits"]) > 1 else name
            ax.errorbar(
                x, mean, yerr=spread, fmt=style if not categorical else style[0], capsize=3, label=label
            )
    laws = results.get("analysis", {}).get("power_law", {})
    for split, style in zip(plot["splits"], (":", "-."), strict=False):
        # the scaling sweep: error = a * hours^b fitted on each split's means (log-log); dev-clean's key
        # has no prefix, the others' are prefixed with the split's name
        fit = laws.get(f"{decoder}_{metric}" if split == "dev-clean" else f"{split}_{decoder}_{metric}")
        if fit:
            hours = np.geomspace(min(xs), max(xs), 20)
            label = f"{split} {fit['label']}"
            ax.plot(hours, 100 * fit["a"] * hours ** fit["b"], style, color="black", label=label)
    ax.set(
        xlabel=plot["x_label"],
        ylabel=f"{metric.upper()} (%)",
        xscale=plot.get("x_scale", "linear"),
        yscale=plot.get("y_scale", "linear"),
        title=f"measured here: {DECODER_NAMES[decoder]} {metric.upper()}\n"
        f"mean of {results['size']['seeds_per_variant']} seed(s), bars min to max",
    )
    if categorical:  # after ax.set: setting a scale resets the ticks
        ax.set_xticks(range(len(categories)), categories, fontsize=7)
    elif plot.get("x_scale") != "log":
        ax.set_xticks(sorted({row["x"] for row in summary}))
    for axis, scale in ((ax.xaxis, plot.get("x_scale")), (ax.yaxis, plot.get("y_scale"))):
        if scale == "log":  # 0.02 and 30, not 2 x 10^-2 and 3 x 10^1
            axis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.title.set_fontsize(8.5)
    ax.legend(fontsize=7)


def _ablation_extra_panel(ax, name, results):
    """The sweep's own extra view: the LM's alpha x beta grid, first-epoch losses, or time per epoch."""
    runs = [run for run in results["runs"] if run.get("final")]
    if name == "lm":  # alpha x beta heat map of one trained model's dev-clean WER
        grid = next(run["extra"]["grid"] for run in runs if "grid" in run.get("extra", {}))
        wer = 100 * np.array(grid["dev-clean"]["wer"])  # (alphas, betas)
        image = ax.imshow(wer, origin="lower", cmap="viridis_r", aspect="auto")
        middle = (wer.min() + wer.max()) / 2
        for (i, j), value in np.ndenumerate(wer):  # dark text on the light (low-WER) cells
            colour = "black" if value < middle else "white"
            ax.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=7, color=colour)
        ax.set_xticks(range(len(grid["beta"])), grid["beta"])
        ax.set_yticks(range(len(grid["alpha"])), grid["alpha"])
        ax.set(xlabel="beta (word bonus)", ylabel="alpha (LM weight)", title="beam + LM dev-clean WER (%)")
        plt.colorbar(image, ax=ax)
    elif name == "sortagrad":  # the first epoch's losses, step by step
        for variant in dict.fromkeys(run["variant"] for run in runs):
            curves = [run["first_epoch_step_losses"] for run in runs if run["variant"] == variant]
            steps = min(len(c) for c in curves)
            ax.plot(np.mean([c[:steps] for c in curves], axis=0), label=variant)
        ax.set(xlabel="step of epoch 1", ylabel="CTC loss (mean over seeds)", yscale="log")
        ax.set_title("first-epoch loss: SortaGrad vs shuffled", fontsize=8.5)
        ax.legend(fontsize=7)
    elif name == "stride":  # time per epoch
        rows = results["summary"]
        means = [row["seconds_per_epoch"]["mean"] for row in rows]
        bars = ax.bar([str(row["x"]) for row in rows], means)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
        ax.set(xlabel="time stride of the first conv layer", ylabel="seconds per epoch (mean over seeds)")
        ax.set_title("training time per epoch", fontsize=8.5)


def figure_ablation(name, results_path, out_path):
    """One sweep of ``ablations/run.py`` (its results JSON) beside the paper's numbers for the same topic.

    Panels: our greedy CER and our beam+LM WER per variant (mean over seeds, bars from min to max; dev-clean
    solid, dev-noisy dashed where the sweep evaluates both), the sweep's own extra view (SortaGrad's
    first-epoch losses, the LM's alpha x beta heat map, the time per epoch of each stride), and the paper's
    dev WER for the table of the same topic, labelled as the paper's (ablations/paper_results.json).
    """
    with open(results_path, encoding="utf-8") as f:
        results = json.load(f)
    if not any(run.get("final") for run in results["runs"]):
        raise ValueError(f"{results_path} has no finished run to draw; run `python ablations/run.py {name}`")
    paper = ABLATION_PAPER_TABLES.get(name)
    extra = name in ("lm", "sortagrad", "stride")
    panels = 2 + extra + (paper is not None)
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.6))
    for ax, (decoder, metric) in zip(axes, results["plot"]["panels"], strict=False):
        _ablation_panel(ax, results, metric, decoder)
    if extra:
        _ablation_extra_panel(axes[2], name, results)
    if paper is not None:
        _paper_panel(axes[-1], paper)
    fig.suptitle(
        textwrap.fill(
            f"ablations/run.py {name}: {results['title']} ({results['paper_reference']}). Ours: synthetic "
            f"speech, {results['size']['description']}. Compare trends, not values, with the paper's. "
            f"Question: {results['question']}",
            40 * panels,
        ),
        fontsize=9,
    )
    fig.tight_layout()
    save_figure(fig, out_path)


# ----------------------------------------------------------------------------------------------------------


def main(args):
    torch.set_num_threads(args.threads)
    began = time.time()
    os.makedirs(args.out, exist_ok=True)
    metrics = read_metrics(args.metrics)
    quick = None
    if os.path.isfile(args.checkpoint):
        model, _ = ds2.load_checkpoint(args.checkpoint)
        source = f"trained model {args.checkpoint}"
        print(f"model: {args.checkpoint} ({model.num_parameters():,} parameters)")
    else:
        print(
            f"no checkpoint at {args.checkpoint}: training a small model for {args.quick_train_seconds:g} s"
        )
        model, quick = quick_train(args.quick_train_seconds, args.quick_train_size, args.seed)
        source = (
            f"no checkpoint: quick-trained here for {quick['seconds']:.0f} s on {quick['train_size']} "
            "synthetic utterances"
        )
    model.eval()
    config = model.config

    utterance = example_utterance(args.seed)
    spectrogram = ds2.featurize(
        utterance["waveform"], config.sample_rate, config.sample_rate, config.spectrogram_floor_db
    )
    if quick is not None:
        train_frames = quick["train_frames"]
    else:  # real synthetic lengths for the SortaGrad figure: the same generator train_minimal.py uses
        split = ds2.make_split(
            "train", args.quick_train_size, ds2.make_speaker_pool(200, (args.seed, 0)), seed=(args.seed, 10)
        )
        train_frames = [
            ds2.num_frames(len(w), config.sample_rate, config.window_ms, config.stride_ms)
            for w in split.waveforms
        ]
    dev = ds2.make_split("dev-clean", 16, ds2.make_speaker_pool(40, (args.seed, 1)), seed=(args.seed, 11))
    dev_specs = [
        ds2.featurize(w, config.sample_rate, config.sample_rate, config.spectrogram_floor_db)
        for w in dev.waveforms
    ]

    path = lambda name: os.path.join(args.out, name)  # noqa: E731
    figure_spectrogram_pipeline(path(FIGURE_NAMES[0]), utterance, config)
    figure_architecture(path(FIGURE_NAMES[1]), model, spectrogram, source)
    figure_ctc(path(FIGURE_NAMES[2]), model, utterance, source)
    figure_sortagrad(path(FIGURE_NAMES[3]), train_frames, args.seed, stride_ms=config.stride_ms)
    figure_batchnorm(path(FIGURE_NAMES[4]), model, dev_specs, source)
    figure_training_curves(path(FIGURE_NAMES[5]), metrics, args.metrics, quick)
    figure_paper_results(path(FIGURE_NAMES[6]), metrics, args.metrics, quick)
    figure_ctc_trellis(path(FIGURE_NAMES[7]))
    for name in FIGURE_NAMES:
        print(f"wrote {path(name)}")
    print(f"total {time.time() - began:.0f} s")
    return 0


if __name__ == "__main__":
    arguments = parse_args()
    try:
        sys.exit(main(arguments))
    except (ValueError, FileNotFoundError) as error:  # bad input: one clear line, no traceback
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
