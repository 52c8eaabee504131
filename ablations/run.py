"""The paper's findings in miniature: resumable sweeps of Deep Speech 2 variants on synthetic speech.

    python ablations/run.py lm              # one sweep -> ablations/results/lm.json and lm.png
    python ablations/run.py all             # every sweep, cheapest first; run it again to resume
    python ablations/run.py gru --quick     # a one-minute version (for tests) -> ablations/results/quick/
    python ablations/run.py --list          # the sweeps, their committed sizes and time budgets

Every run is a (sweep, variant, seed) key. It trains through implementation.py's one training loop
(``ds2.fit``: SortaGrad batches, ``train_step``, the learning-rate schedule) and is evaluated with
``ds2.evaluate`` (greedy, and prefix beam search with the word LM, §3.8). After each finished run the
sweep's JSON file is rewritten atomically, so an interrupted sweep continues where it stopped and a
finished run is never repeated. The data come from ``corpora.cached_splits``: synthesised once, then read
from the on-disk cache. ablations/README.md says what each sweep runs, its size and its time budget,
and documents the JSON file.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import corpora  # noqa: E402
import implementation as ds2  # noqa: E402

RESULTS = ROOT / "ablations" / "results"
FORMAT = "deep-speech-2-lesson/ablation/1"
ORDER = ("lm", "sortagrad", "batchnorm", "gru", "lookahead", "stride", "conv", "noise", "scaling")
SPLITS = ("dev-clean", "dev-noisy")


# ----------------------------------------------------------------------------------------------------------
# Sizes and runs
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Size:
    """How big a sweep's runs are. Committed sizes fit ~20 minutes on 2 CPU cores (ablations/README.md)."""

    train_size: int = 600  # training utterances (synthetic, ~2.2 s each)
    dev_size: int = 100  # utterances in each of dev-clean and dev-noisy
    epochs: int = 4
    batch_size: int = 16  # smaller than the CLI's 32: twice the updates for the same CPU time
    seeds: tuple[int, ...] = (0, 1, 2)  # model initialisation and batch order; the data stay the same
    model: tuple = ()  # (name, value) pairs overriding DS2Config's defaults for the sweep's base model
    train_noise_fraction: float = 0.5  # the CLI's default (the paper: about 40%, §5.2)
    data_seed: int = 0  # one synthetic corpus for every run (so seeds measure training, not data, noise)
    beam_width: int = 8  # prefix beam search for the final beam+LM numbers
    alpha: float = 0.5  # LM weight and word bonus: train_minimal.py's defaults
    beta: float = 1.0
    lm_sentences: int = 5000  # text the word trigram LM is trained on
    parameter_tolerance: float | None = (
        0.10  # fixed-size comparisons: within this of the target (None: no check)
    )
    budget_minutes: float = 20.0  # what the sweep is sized to (2 CPU cores, 2 jobs of 1 thread)
    note: str = ""  # how this size departs from the others, for the README and the JSON

    def base_model(self) -> dict:
        return ds2.DS2Config(**dict(self.model)).to_dict()


# The tiny size of --quick: every sweep end to end in well under a minute (tests/test_ablations.py).
QUICK = dict(
    train_size=24,
    dev_size=6,
    epochs=1,
    batch_size=8,
    seeds=(0,),
    model=(("conv_channels", (2, 2)), ("rnn_hidden", 12), ("rnn_layers", 1)),
    beam_width=2,
    lm_sentences=200,
    parameter_tolerance=None,  # too small to match sizes (a 1D conv alone outgrows the whole model)
    budget_minutes=1.0,
)


@dataclass
class Run:
    """One (sweep, variant, seed): what to train, on what, and how to decode it."""

    sweep: str
    variant: str
    seed: int
    series: str  # the plot's line (or bar group) this run belongs to
    x: float | int | str  # the plot's x value
    model: dict  # DS2Config fields
    train: dict  # TrainConfig fields
    data: dict  # corpora.cached_splits arguments: train_size, dev_size, seed, train_noise_fraction
    decode: dict  # beam_width, alpha, beta, lm_sentences, and for the lm sweep its grid
    extra: dict = field(default_factory=dict)  # sweep-specific facts about the variant

    @property
    def key(self) -> str:
        return f"{self.variant}/seed{self.seed}"

    def spec(self) -> dict:
        """Everything that determines the run's result: a finished run with the same spec is not rerun."""
        return {"model": self.model, "train": self.train, "data": self.data, "decode": self.decode}


def make_run(sweep, size: Size, variant, series, x, seed, model=None, train=None, data=None, decode=None):
    return Run(
        sweep=sweep,
        variant=variant,
        seed=seed,
        series=series,
        x=x,
        model=ds2.DS2Config(**(model or size.base_model())).to_dict(),
        train=asdict(
            ds2.TrainConfig(
                **{"epochs": size.epochs, "batch_size": size.batch_size, "seed": seed, **(train or {})}
            )
        ),
        data={
            "train_size": size.train_size,
            "dev_size": size.dev_size,
            "seed": size.data_seed,
            "synthesis_code": corpora.synthesis_fingerprint()[:16],  # another synthesiser's audio: other data
            "train_noise_fraction": size.train_noise_fraction,
            **(data or {}),
        },
        decode={
            "beam_width": size.beam_width,
            "alpha": size.alpha,
            "beta": size.beta,
            "lm_sentences": size.lm_sentences,
            **(decode or {}),
        },
    )


def count_parameters(model: dict) -> int:
    with torch.device("meta"):  # no memory, no initialisation: only the shapes
        return ds2.DeepSpeech2(ds2.DS2Config(**model)).num_parameters()


def matched(model: dict, target: int, tolerance: float | None = 0.10) -> dict:
    """``model`` with its ``rnn_hidden`` chosen so its parameter count is closest to ``target``.

    The paper compares depths and layer types at a fixed parameter count (Tables 1 and 3 topics), so
    deeper models get narrower layers. Raises if no width comes within ``tolerance`` of the target.
    """
    count = lambda hidden: count_parameters({**model, "rnn_hidden": hidden})  # noqa: E731
    low, high = 2, 2048  # count grows with the width: bisect
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if count(middle) < target else (low, middle)
    hidden = min((low, high), key=lambda h: abs(count(h) - target))
    if tolerance is not None and abs(count(hidden) - target) > tolerance * target:
        raise ValueError(f"no rnn_hidden brings {model} within {tolerance:.0%} of {target:,} parameters")
    return {**model, "rnn_hidden": hidden}


# ----------------------------------------------------------------------------------------------------------
# The sweeps: what each varies (committed sizes in SIZES below)
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sweep:
    title: str
    paper_reference: str
    question: str
    x_label: str
    splits: tuple[str, ...] = SPLITS  # drawn in the figure (both are always measured)
    x_scale: str = "linear"
    y_scale: str = "linear"
    panels: tuple = (("greedy", "cer"), ("beam_lm", "wer"))  # (decoder, metric) of the two panels


SWEEPS = {
    "lm": Sweep(
        "greedy vs beam search vs beam search + word LM",
        "§3.8",
        "How much do beam search and a word trigram LM (Q = log p_ctc + alpha log p_lm + beta words) add "
        "over greedy decoding of the same model, and how do alpha and beta trade off?",
        "decoder",
        panels=(("decoded", "cer"), ("decoded", "wer")),
    ),
    "sortagrad": Sweep(
        "SortaGrad with and without BatchNorm",
        "§3.3, Table 2 topic",
        "Does sorting the first epoch by length (SortaGrad) lower the error, with and without BatchNorm, "
        "and does it steady the first epoch's loss?",
        "model",
    ),
    "batchnorm": Sweep(
        "sequence-wise BatchNorm at 1, 3 and 5 recurrent layers (simple RNNs, fixed parameter count)",
        "§3.2, Table 1 topic",
        "Does sequence-wise BatchNorm help, and does its benefit grow with depth, at a fixed number of "
        "parameters?",
        "recurrent layers",
    ),
    "gru": Sweep(
        "GRU vs simple RNN at 1, 3 and 5 layers (fixed parameter count)",
        "§3.4, Table 3 topic",
        "At the same number of parameters, does a GRU beat a simple RNN (clipped ReLU) at each depth?",
        "recurrent layers",
    ),
    "lookahead": Sweep(
        "bidirectional vs unidirectional vs unidirectional + lookahead (fixed parameter count)",
        "§3.7",
        "How much of the bidirectional model's accuracy does a forward-only model recover with a "
        "lookahead (row) convolution over a few future frames?",
        "recurrent direction and future context",
    ),
    "stride": Sweep(
        "time stride 2 vs 3 vs 4 of the first convolution",
        "§3.6",
        "How much time per epoch does a larger time stride save, and what does it cost in error while "
        "CTC still fits (each character needs an output frame)?",
        "time stride of the first conv layer",
    ),
    "conv": Sweep(
        "1D (time only) vs 2D (frequency x time) convolutions, 1-3 layers (fixed parameter count)",
        "§3.5, Table 4 topic",
        "Do 2D convolutions beat 1D convolutions over time, and is the gap larger on noisy speech?",
        "convolution layers",
    ),
    "noise": Sweep(
        "training with added noise: 0, 50% or 80% of the training utterances",
        "§5.2",
        "Does adding noise to part of the training set help on the noisy dev set, and what does it cost "
        "on the clean one?",
        "fraction of training utterances with added noise",
    ),
    "scaling": Sweep(
        "dev error against hours of training audio (the same number of updates for every size)",
        "§5.3, Table 10 topic",
        "How does the error fall with more training audio, and how does a fitted power law compare with "
        "the paper's about 40% relative per 10x data?",
        "hours of training audio",
        x_scale="log",
        y_scale="log",
    ),
}


def runs_lm(size: Size) -> list[Run]:
    # One model per seed, decoded many ways; the alpha x beta grid on the first seed's model.
    grid = {"alpha": [0.0, 0.5, 1.0, 2.0], "beta": [0.0, 1.0, 2.0, 4.0]}
    return [
        make_run(
            "lm", size, "default-model", "decoders", "decoders", seed, decode={"grid": grid} if i == 0 else {}
        )
        for i, seed in enumerate(size.seeds)
    ]


def simple_rnn_target(size: Size) -> int:
    """The parameter count of the sweeps on simple RNNs: the base model with 3 simple-RNN layers."""
    return count_parameters({**size.base_model(), "rnn_type": "rnn", "rnn_layers": 3})


def runs_sortagrad(size: Size) -> list[Run]:
    # The 3-layer simple RNN of the batchnorm sweep: the paper's Table 2 topic is about simple RNNs too.
    runs = []
    for batch_norm in (False, True):  # the paper's order (Table 2 topic): baseline, then BatchNorm
        for sortagrad in (False, True):
            changes = {"rnn_type": "rnn", "rnn_layers": 3, "batch_norm": batch_norm}
            model = matched(
                {**size.base_model(), **changes}, simple_rnn_target(size), size.parameter_tolerance
            )
            variant = f"{'bn' if batch_norm else 'no-bn'}-{'sortagrad' if sortagrad else 'shuffled'}"
            series = "SortaGrad" if sortagrad else "not sorted"
            x = "BatchNorm" if batch_norm else "no BatchNorm"
            runs += [
                make_run("sortagrad", size, variant, series, x, seed, model, {"sortagrad": sortagrad})
                for seed in size.seeds
            ]
    return runs


def _depth_sweep(name: str, size: Size, kinds) -> list[Run]:
    base, target = size.base_model(), simple_rnn_target(size)
    runs = []
    for series, changes in kinds:
        for layers in (1, 3, 5):
            model = matched({**base, **changes, "rnn_layers": layers}, target, size.parameter_tolerance)
            variant = f"{series.replace(' ', '-').lower()}-{layers}"
            runs += [make_run(name, size, variant, series, layers, seed, model) for seed in size.seeds]
    return runs


def runs_batchnorm(size: Size) -> list[Run]:
    # Table 1 topic is about simple RNNs: with and without BatchNorm at each depth.
    kinds = [("BatchNorm", {"rnn_type": "rnn"}), ("no BatchNorm", {"rnn_type": "rnn", "batch_norm": False})]
    return _depth_sweep("batchnorm", size, kinds)


def runs_gru(size: Size) -> list[Run]:
    return _depth_sweep("gru", size, [("simple RNN", {"rnn_type": "rnn"}), ("GRU", {"rnn_type": "gru"})])


def runs_lookahead(size: Size) -> list[Run]:
    base = size.base_model()
    target = count_parameters(base)  # the bidirectional model's size
    stride_ms = base["stride_ms"] * base["conv_time_stride"]  # one output frame
    variants = [
        ("bidirectional", "bidirectional", {}),
        ("forward-only", "forward only", {"bidirectional": False}),
    ]
    variants += [
        (f"lookahead-{c}", f"forward +{c * stride_ms:g} ms", {"bidirectional": False, "lookahead_context": c})
        for c in (3, 10)  # output frames of future context
    ]
    runs = []
    for variant, label, changes in variants:
        model = matched({**base, **changes}, target, size.parameter_tolerance) if changes else base
        runs += [make_run("lookahead", size, variant, "GRU", label, seed, model) for seed in size.seeds]
    return runs


def runs_stride(size: Size) -> list[Run]:
    return [
        make_run(
            "stride",
            size,
            f"stride-{s}",
            "time stride",
            s,
            seed,
            {**size.base_model(), "conv_time_stride": s},
        )
        for s in (2, 3, 4)
        for seed in size.seeds
    ]


def runs_conv(size: Size) -> list[Run]:
    base = size.base_model()
    target = count_parameters(base)  # the default 2-layer 2D model's size
    channels_2d = base["conv_channels"][0]
    channels_1d = 8 * channels_2d  # no frequency axis left to hold features: more channels instead
    runs = []
    for conv_type, channels in (("2d", channels_2d), ("1d", channels_1d)):
        for layers in (1, 2, 3):
            changes = {"conv_type": conv_type, "conv_channels": (channels,) * layers}
            model = matched({**base, **changes}, target, size.parameter_tolerance)
            variant, series = f"{conv_type}-{layers}", f"{conv_type.upper()} ({channels} channels)"
            runs += [make_run("conv", size, variant, series, layers, seed, model) for seed in size.seeds]
    return runs


def runs_noise(size: Size) -> list[Run]:
    return [
        make_run(
            "noise", size, f"noise-{f:g}", "trained with noise", f, seed, data={"train_noise_fraction": f}
        )
        for f in (0.0, 0.5, 0.8)
        for seed in size.seeds
    ]


def runs_scaling(size: Size) -> list[Run]:
    # Every size gets about the same number of updates (updates_per_run), so more audio means more
    # distinct examples, not more training: the largest set is seen about once, the smallest many times.
    sizes = [size.train_size // 2**k for k in range(4, -1, -1)]  # 5 sizes, 2x apart
    passes = size.train_size * size.epochs  # utterances seen by every run
    runs = []
    for n in sizes:
        epochs = max(1, round(passes / n))
        runs += [
            make_run(
                "scaling", size, f"train-{n}", "trained", n, seed, None, {"epochs": epochs}, {"train_size": n}
            )
            for seed in size.seeds
        ]
    return runs


BUILDERS = {
    "lm": runs_lm,
    "sortagrad": runs_sortagrad,
    "batchnorm": runs_batchnorm,
    "gru": runs_gru,
    "lookahead": runs_lookahead,
    "stride": runs_stride,
    "conv": runs_conv,
    "noise": runs_noise,
    "scaling": runs_scaling,
}

# The committed sizes: each sweep fits about 20 minutes on 2 CPU cores with --jobs 2 (ablations/README.md
# has the estimates). In the committed results the default 0.57M-parameter model trains at about 21 ms
# per utterance per epoch on one core, so a run of 600 utterances x 4 epochs (150 updates of 16) takes
# about a minute with its evaluation (55-59 s: the lookahead sweep's bidirectional runs). Larger runs
# saturate dev-clean: 800 x 5 reached a greedy CER near 2% (lm.json: 1.7%, the mean over 3 seeds).
SIZES = {
    "lm": Size(train_size=800, epochs=5, note="one larger model per seed, decoded many ways"),
    "sortagrad": Size(),
    "batchnorm": Size(),
    "gru": Size(),
    "lookahead": Size(),
    "stride": Size(),
    "conv": Size(),
    "noise": Size(),
    "scaling": Size(
        train_size=1200,
        epochs=2,
        seeds=(0, 1),
        note="5 training sets of 75 to 1,200 utterances, each trained on 2,400 utterance-passes",
    ),
}


def size_of(name: str, quick: bool) -> Size:
    if not quick:
        return SIZES[name]
    overrides = {"train_size": 32, "epochs": 1} if name == "scaling" else {}
    return Size(**{**QUICK, **overrides}, note="--quick: a tiny model and data set, for tests")


# ----------------------------------------------------------------------------------------------------------
# Executing one run (in this process, or in a worker process)
# ----------------------------------------------------------------------------------------------------------

_DATA: dict = {}  # featurised splits of this process, by data recipe (the last two)
_LMS: dict = {}


def load_data(data: dict, cache_dir: str | None) -> dict:
    """``{"train"|"dev-clean"|"dev-noisy": (spectrograms, texts)}`` plus ``"train_hours"``, memoised."""
    key = json.dumps(data, sort_keys=True)
    if key not in _DATA:
        recipe = {k: v for k, v in data.items() if k != "synthesis_code"}
        splits = corpora.cached_splits(**recipe, cache_dir=cache_dir)
        featurised = {name: (ds2.featurize_batch(s.waveforms), s.texts) for name, s in splits.items()}
        featurised["train_hours"] = float(splits["train"].durations_s().sum() / 3600)
        while len(_DATA) >= 2:
            _DATA.pop(next(iter(_DATA)))
        _DATA[key] = featurised
    return _DATA[key]


def load_lm(data_seed: int, sentences: int) -> ds2.NGramLM:
    if (data_seed, sentences) not in _LMS:  # the same text corpus train_minimal.py trains its LM on
        _LMS[data_seed, sentences] = ds2.grammar_lm(data_seed, sentences)
    return _LMS[data_seed, sentences]


def fits_ctc(model: ds2.DeepSpeech2, spectrograms, texts) -> list[bool]:
    """Per utterance: does the model output enough frames for the transcript under CTC?"""
    out_lengths = model.output_lengths(torch.tensor([spec.shape[-1] for spec in spectrograms]))
    targets = [ds2.encode_text(text) for text in texts]
    padded = nn.utils.rnn.pad_sequence(targets, batch_first=True)  # (B, S)
    needed = ds2.ctc_min_frames(padded, torch.tensor([len(t) for t in targets]))
    return (out_lengths >= needed).tolist()


def rates(refs, hyps) -> dict:
    return {"cer": ds2.character_error_rate(refs, hyps), "wer": ds2.word_error_rate(refs, hyps)}


def execute(run: dict, cache_dir: str | None = None, threads: int = 1) -> dict:
    """Train and evaluate one run; returns its JSON record (``final`` is None if training diverged)."""
    torch.set_num_threads(threads)
    began = time.perf_counter()
    data = load_data(run["data"], cache_dir)
    decode = run["decode"]
    lm = load_lm(run["data"]["seed"], decode["lm_sentences"])
    torch.manual_seed(run["seed"])
    model = ds2.DeepSpeech2(ds2.DS2Config(**run["model"]))
    config = ds2.TrainConfig(**run["train"])
    specs, texts = data["train"]
    keep = fits_ctc(model, specs, texts)  # a larger time stride leaves some transcripts no alignment
    train = (
        [s for s, k in zip(specs, keep, strict=True) if k],
        [t for t, k in zip(texts, keep, strict=True) if k],
    )
    first_epoch = []
    record = {
        **{k: run[k] for k in ("sweep", "variant", "seed", "series", "x")},
        "key": f"{run['variant']}/seed{run['seed']}",
        "spec": {k: run[k] for k in ("model", "train", "data", "decode")},
        "parameters": model.num_parameters(),
        "train_utterances": len(train[1]),
        "dropped_for_ctc": len(texts) - len(train[1]),
        "train_hours": data["train_hours"],
        "synthesis_code": corpora.synthesis_fingerprint()[
            :16
        ],  # the fingerprint of the synthesiser that made this process's data
        "extra": dict(run.get("extra", {})),
        "error": None,
        "final": None,
    }
    train_began = time.perf_counter()
    try:  # the one training loop; dev=None so that each epoch's "seconds" is training time only
        state = ds2.fit(
            model,
            train,
            config,
            dev=None,
            on_step=lambda s, loss: first_epoch.append(loss) if s.epoch == 0 else None,
            log=None,
        )
        record["epochs"] = state.history
    except FloatingPointError as error:  # every batch of an epoch NaN/inf: a result, not a crash
        record["epochs"], record["error"] = [], f"diverged: {error}"
    record["train_seconds"] = time.perf_counter() - train_began
    record["first_epoch_step_losses"] = [float(x) for x in first_epoch]
    if record["error"] is None:
        record["final"] = {}
        for split in SPLITS:
            specs, texts = data[split]
            record["extra"][f"{split}_fits_ctc"] = float(np.mean(fits_ctc(model, specs, texts)))
            if run["sweep"] == "lm":
                record["final"][split] = decode_many_ways(
                    model, specs, texts, lm, decode, record["extra"], split
                )
                continue
            result = ds2.evaluate(
                model, specs, texts, lm, decode["beam_width"], decode["alpha"], decode["beta"]
            )
            record["final"][split] = {
                "greedy": {"cer": result["cer"], "wer": result["wer"]},
                "beam_lm": {"cer": result["beam_cer"], "wer": result["beam_wer"]},
            }
    record["wall_seconds"] = time.perf_counter() - began
    record["finished_at"] = datetime.datetime.now().isoformat(timespec="seconds")
    return record


def decode_many_ways(model, specs, texts, lm, decode, extra, split) -> dict:
    """The lm sweep: one set of log-probabilities, decoded greedily, by beam search, and with the LM."""
    log_probs = ds2.predict(model, specs)
    width = decode["beam_width"]
    final = {
        "greedy": rates(texts, [ds2.greedy_decode(lp)[0] for lp in log_probs]),
        "beam": rates(texts, [ds2.prefix_beam_search(lp, width) for lp in log_probs]),
        "beam_lm": rates(
            texts,
            [ds2.prefix_beam_search(lp, width, lm, decode["alpha"], decode["beta"]) for lp in log_probs],
        ),
    }
    if "grid" in decode:  # alpha x beta: every cell decodes the whole split again
        alphas, betas = decode["grid"]["alpha"], decode["grid"]["beta"]
        cells = [
            [rates(texts, [ds2.prefix_beam_search(lp, width, lm, a, b) for lp in log_probs]) for b in betas]
            for a in alphas
        ]
        grid = extra.setdefault("grid", {"alpha": alphas, "beta": betas})
        grid[split] = {m: [[cell[m] for cell in row] for row in cells] for m in ("cer", "wer")}
    return final


# ----------------------------------------------------------------------------------------------------------
# Results file: summary over seeds, analysis, atomic rewrite after every run
# ----------------------------------------------------------------------------------------------------------


def stats(values) -> dict | None:
    values = [float(v) for v in values]
    if not values:
        return None
    return {
        "mean": float(np.mean(values)),
        "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "n": len(values),
        "values": values,
    }


def summarise(runs: list[dict]) -> list[dict]:
    """One row per variant: mean, spread and values over its finished seeds."""
    rows = []
    for variant in dict.fromkeys(run["variant"] for run in runs):
        group = [run for run in runs if run["variant"] == variant]
        done = [run for run in group if run["final"] is not None]
        row = {
            "variant": variant,
            "series": group[0]["series"],
            "x": group[0]["x"],
            "seeds": len(group),
            "diverged": len(group) - len(done),
            "parameters": group[0]["parameters"],
            "train_hours": group[0]["train_hours"],
            "wall_seconds": stats(run["wall_seconds"] for run in group),
            "seconds_per_epoch": stats(np.mean([e["seconds"] for e in run["epochs"]]) for run in done),
            "first_epoch_loss": stats(np.mean(run["first_epoch_step_losses"]) for run in done),
            "first_epoch_loss_max": stats(max(run["first_epoch_step_losses"]) for run in done),
            "final_train_loss": stats(run["epochs"][-1]["train_loss"] for run in done),
        }
        for split in SPLITS:
            decoders = done[0]["final"][split] if done else {}
            row[split] = {
                decoder: {m: stats(run["final"][split][decoder][m] for run in done) for m in ("cer", "wer")}
                for decoder in decoders
            }
        rows.append(row)
    return rows


def power_law(hours, errors) -> dict:
    """Least squares in log-log: ``error = a * hours ** b``; a 10x larger data set multiplies by 10^b."""
    b, log_a = np.polyfit(np.log(hours), np.log(errors), 1)
    per_10x = 100 * (1 - 10**b)
    return {"a": float(np.exp(log_a)), "b": float(b), "relative_improvement_per_10x": float(per_10x)}


def analyse(name: str, runs: list[dict], summary: list[dict]) -> dict:
    if name == "scaling":
        fits = {}
        for decoder in ("greedy", "beam_lm"):
            for metric in ("cer", "wer"):  # a power law needs positive errors
                rows = [
                    row
                    for row in summary
                    if row["dev-clean"] and row["dev-clean"][decoder][metric]["mean"] > 0
                ]
                if len(rows) >= 2:
                    hours = [row["train_hours"] for row in rows]
                    fit = power_law(hours, [row["dev-clean"][decoder][metric]["mean"] for row in rows])
                    fit["label"] = f"fit: {fit['relative_improvement_per_10x']:.0f}% relative per 10x"
                    fits[f"{decoder}_{metric}"] = fit
        return {"power_law": fits, "x_is": "hours of training audio (the summary's train_hours)"}
    if name == "lm":
        grids = [run["extra"]["grid"] for run in runs if "grid" in run["extra"]]
        if grids and "dev-clean" in grids[0]:
            grid = grids[0]
            wer = np.array(grid["dev-clean"]["wer"])
            i, j = np.unravel_index(int(np.argmin(wer)), wer.shape)
            return {
                "best_on_dev_clean": {
                    "alpha": grid["alpha"][i],
                    "beta": grid["beta"][j],
                    "wer": float(wer[i, j]),
                }
            }
    if name == "stride":
        return {"dev-clean_fits_ctc": {str(run["x"]): run["extra"].get("dev-clean_fits_ctc") for run in runs}}
    return {}


def document(name: str, size: Size, quick: bool, runs: list[Run], records: dict) -> dict:
    sweep = SWEEPS[name]
    finished = [records[run.key] for run in runs if run.key in records]
    summary = summarise(finished)
    if name == "scaling":  # plot against hours of audio, not utterances
        for row in summary:
            row["x"] = row["train_hours"]
    if name == "lm":  # the decoders are the variants of this sweep
        summary = (
            [
                {
                    **summary[0],
                    "variant": decoder,
                    "series": "decoder",
                    "x": label,
                    **{split: {"decoded": summary[0][split][decoder]} for split in SPLITS},
                }
                for decoder, label in (("greedy", "greedy"), ("beam", "beam"), ("beam_lm", "beam + LM"))
            ]
            if summary and summary[0]["dev-clean"]
            else []
        )
    return {
        "format": FORMAT,
        "sweep": name,
        "title": sweep.title,
        "paper_reference": sweep.paper_reference,
        "question": sweep.question,
        "quick": quick,
        "size": {
            **asdict(size),
            "seeds_per_variant": len(size.seeds),
            "runs": len(runs),
            "description": describe(name, size),
        },
        "plot": {
            "x_label": sweep.x_label,
            "x_scale": sweep.x_scale,
            "y_scale": sweep.y_scale,
            "splits": list(sweep.splits),
            "panels": [list(panel) for panel in sweep.panels],
        },
        "complete": len(finished) == len(runs),
        "total_wall_seconds": float(sum(record["wall_seconds"] for record in finished)),
        "updated_at": datetime.datetime.now().isoformat(timespec="seconds"),
        "runs": finished,
        "summary": summary,
        "analysis": analyse(name, finished, summary) if finished else {},
    }


def describe(name: str, size: Size) -> str:
    model = ds2.DS2Config(**size.base_model())
    text = (
        f"{size.train_size} training utterances, {size.epochs} epochs of batch {size.batch_size}, "
        f"{len(size.seeds)} seed(s); base model {model.rnn_layers}x{model.rnn_type.upper()}-{model.rnn_hidden}, "
        f"conv {list(model.conv_channels)}"
    )
    return f"{text}; {size.note}" if size.note else text


def settings(size: Size) -> dict:
    return json.loads(json.dumps(asdict(size)))  # tuples -> lists, as the file holds them


# ----------------------------------------------------------------------------------------------------------
# Driving a sweep
# ----------------------------------------------------------------------------------------------------------


def run_sweep(name: str, args) -> bool:
    """Run the unfinished runs of one sweep; True when the sweep is complete."""
    size = size_of(name, args.quick)
    runs = BUILDERS[name](size)
    out = Path(args.out)
    path = out / f"{name}.json"
    records: dict[str, dict] = {}
    if path.exists() and not args.fresh:
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("format") != FORMAT or {k: saved["size"].get(k) for k in settings(size)} != settings(
            size
        ):
            raise ValueError(
                f"{path} was written with other settings than `{name}` has now; pass --fresh to discard "
                "its runs, or --out to write elsewhere"
            )
        specs = {run.key: run.spec() for run in runs}
        for record in saved["runs"]:
            if json.loads(json.dumps(specs.get(record["key"]))) == record["spec"]:
                records[record["key"]] = record
            elif record["key"] in specs:
                print(f"{name}: {record['key']} was run with another spec; running it again")
    pending = [run for run in runs if run.key not in records]
    print(
        f"== {name}: {SWEEPS[name].title} ({SWEEPS[name].paper_reference}); {len(runs)} runs, "
        f"{len(runs) - len(pending)} already finished; {describe(name, size)}",
        flush=True,
    )

    def save():
        ds2.atomic_write_text(path, json.dumps(document(name, size, args.quick, runs, records), indent=1))

    def report(record, note=""):
        records[record["key"]] = record
        save()
        final = record["final"]
        errors = (
            f"dev-clean CER {100 * final['dev-clean']['greedy']['cer']:.1f}% greedy, "
            f"{100 * final['dev-clean']['beam_lm']['cer']:.1f}% beam+LM"
            if final
            else record["error"]
        )
        print(
            f"[{name} {len(records)}/{len(runs)}] {record['variant']} seed {record['seed']}: "
            f"{record['parameters']:,} params, {record['wall_seconds']:.0f} s, {errors}{note}",
            flush=True,
        )

    elsewhere = finished_elsewhere(out, name)  # the same spec in another sweep: deterministic, so reuse it
    for run in list(pending):
        other = elsewhere.get(json.dumps(run.spec(), sort_keys=True))
        if other is not None:
            pending.remove(run)
            fields = {k: getattr(run, k) for k in ("sweep", "variant", "seed", "series", "x")}
            record = {**other, **fields, "key": run.key, "reused_from": f"{other['sweep']}/{other['key']}"}
            report(record, f" (the identical run of {record['reused_from']}, not trained again)")
    for record in execute_all(pending, args):
        report(record)
    if not pending and not path.exists():
        save()
    if len(records) == len(runs):
        save()
        if not args.no_plot:
            import visualization

            visualization.figure_ablation(name, path, out / f"{name}.png")
        print(f"{name}: wrote {path}" + ("" if args.no_plot else f" and {out / name}.png"), flush=True)
        return True
    return False


def finished_elsewhere(out: Path, name: str) -> dict[str, dict]:
    """Finished runs in the other sweeps' files in ``out``, by spec (model, training, data, decoding)."""
    found = {}
    for path in sorted(out.glob("*.json")):
        if path.stem == name:
            continue
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(saved, dict) and saved.get("format") == FORMAT:
            for record in saved.get("runs", []):
                if "reused_from" not in record:
                    found.setdefault(json.dumps(record["spec"], sort_keys=True), record)
    return found


def execute_all(pending: list[Run], args):
    """Yield each pending run's record as it finishes: here (--jobs 1) or in worker processes."""
    for data in {json.dumps(run.data, sort_keys=True): run.data for run in pending}.values():
        # Fill the cache once, here, before any worker asks for the same split.
        lines = []
        recipe = {k: v for k, v in data.items() if k != "synthesis_code"}
        corpora.cached_splits(**recipe, workers=args.jobs, cache_dir=args.cache_dir, log=lines.append)
        print("  data: " + "; ".join(line.split(" (")[0].split(", cached")[0] for line in lines), flush=True)
    items = [dataclasses.asdict(run) for run in pending]
    if args.jobs == 1:
        for item in items:
            yield execute(item, args.cache_dir, args.threads)
        return
    import concurrent.futures
    import multiprocessing

    # "spawn": torch's thread pool does not survive a fork; each worker imports this file afresh.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
        futures = [pool.submit(execute, item, args.cache_dir, args.threads) for item in items]
        try:
            for future in concurrent.futures.as_completed(futures):
                yield future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Run the Deep Speech 2 ablation sweeps (resumable). Results: ablations/results/NAME.json "
        "and NAME.png.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("sweeps", nargs="*", metavar="NAME", help=f"sweeps to run: {', '.join(ORDER)}, or all")
    p.add_argument("--quick", action="store_true", help="a tiny one-minute version of each sweep (for tests)")
    p.add_argument("--out", help="results folder (default: ablations/results, or ablations/results/quick)")
    p.add_argument(
        "--jobs", type=int, default=min(2, os.cpu_count() or 1), help="runs in parallel (processes)"
    )
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per run")
    p.add_argument(
        "--cache-dir", help=f"synthesised-data cache (default: ${corpora.SPLIT_CACHE_ENV} or ~/.cache/...)"
    )
    p.add_argument("--fresh", action="store_true", help="discard the sweep's finished runs and start over")
    p.add_argument("--no-plot", action="store_true", help="write the JSON only, no PNG")
    p.add_argument("--list", action="store_true", help="list the sweeps with their sizes, then exit")
    args = p.parse_args(argv)
    names = list(ORDER) if "all" in args.sweeps else args.sweeps
    unknown = [name for name in names if name not in SWEEPS]
    if unknown:
        p.error(f"unknown sweep(s) {unknown}; choose from {', '.join(ORDER)} or all")
    if not names and not args.list:
        p.error("name a sweep (or all); --list shows them")
    if args.jobs < 1 or args.threads < 1:
        p.error("--jobs and --threads must be at least 1")
    args.names = [name for name in ORDER if name in names]
    args.out = args.out or str(RESULTS / "quick" if args.quick else RESULTS)
    return args


def main(args) -> int:
    if args.list:
        for name in ORDER:
            size = size_of(name, args.quick)
            print(
                f"{name:10s} {len(BUILDERS[name](size)):3d} runs, ~{size.budget_minutes:g} min: {describe(name, size)}"
            )
        return 0
    began, failed = time.perf_counter(), []
    for name in args.names:
        try:
            run_sweep(name, args)
        except (
            ValueError,
            FileNotFoundError,
            RuntimeError,
        ) as error:  # one sweep's problem: go on to the next
            print(f"error: {name}: {error}", file=sys.stderr, flush=True)
            failed.append(name)
    print(f"done in {(time.perf_counter() - began) / 60:.1f} min" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    arguments = parse_args()
    try:
        sys.exit(main(arguments))
    except KeyboardInterrupt:
        print("interrupted: finished runs are saved; run the same command to continue", file=sys.stderr)
        sys.exit(130)
