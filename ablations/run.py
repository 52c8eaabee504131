"""The paper's findings in miniature: resumable sweeps of Deep Speech 2 variants on synthetic speech.

    python ablations/run.py lm              # one sweep -> ablations/results/lm.json and lm.png
    python ablations/run.py all             # every sweep, cheapest first; run it again to resume
    python ablations/run.py gru --quick     # a one-minute version (for tests) -> ablations/results/quick/
    python ablations/run.py --list          # the sweeps, their committed sizes and time budgets

Every run is a (sweep, variant, seed) key. It trains through implementation.py's one training loop
(``ds2.fit``: SortaGrad batches, ``train_step``, the learning-rate schedule) and is evaluated with
``ds2.evaluate`` (greedy, and prefix beam search with the word LM, §3.8). Every run also logs its
learning curves (greedy dev CER on fixed subsets every ``curve_every`` updates, through ``fit``'s
``on_step`` hook) and every update's loss with its batch's frames and characters, so that takeoff and
stability are measured, not guessed (ablations/findings.py turns them into verdicts). After each finished
run the sweep's JSON file is rewritten atomically, so an interrupted sweep continues where it stopped and
a finished run is never repeated; it runs happily in the background (``nohup ... &``) and commits nothing. The data come from ``corpora.cached_splits``: synthesised once, then read
from the on-disk cache. ablations/README.md says what each sweep runs, its size and its time budget,
and documents the JSON file.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import hashlib
import json
import math
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
# Format 2 (issue 24): learning curves, every update's loss with its batch's size, a held-out noise
# split, recurrent-only BatchNorm and an identity-initialised lookahead. Files of an older format are
# replaced, not resumed: their runs measured something else.
FORMAT = "deep-speech-2-lesson/ablation/2"
ORDER = ("lm", "sortagrad", "batchnorm", "gru", "lookahead", "stride", "conv", "noise", "scaling")
# dev-noisy-unseen: babble of voices never heard in training (see heldout_split), so the noise finding
# can fail; dev-noisy's white and pink noise come from the same generators as the training noise.
SPLITS = ("dev-clean", "dev-noisy", "dev-noisy-unseen")
CURVE_SPLITS = ("dev-clean", "dev-noisy")  # the learning curves' splits (cheap fixed subsets)
TAKEOFF_CER = 0.5  # a run has taken off once its dev-clean curve CER falls below this (findings.py checks it)


# ----------------------------------------------------------------------------------------------------------
# Sizes and runs
# ----------------------------------------------------------------------------------------------------------

# Epochs of the 2,000-utterance training set (125 updates each) every run gets: chosen from the pilot's
# numbers (ablations/pilot.py; ablations/README.md says why 8, and which variants were cut to pay for it).
BUDGET_EPOCHS = 8


@dataclass(frozen=True)
class Size:
    """How big a sweep's runs are (ablations/README.md: the pilot that chose the budget, the study's cost)."""

    train_size: int = 2000  # training utterances (synthetic, ~2.2 s each): the CLI's training set
    dev_size: int = 200  # utterances in each dev split: the CLI's dev sets
    epochs: int = BUDGET_EPOCHS
    batch_size: int = 16  # smaller than the CLI's 32: twice the updates for the same CPU time
    # Model initialisation and batch order; the data stay the same. The same list in every arm, so the
    # comparisons are paired by seed (findings.py), and at least 5 (issue 24).
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    model: tuple = ()  # (name, value) pairs overriding DS2Config's defaults for the sweep's base model
    train_noise_fraction: float = 0.5  # the CLI's default (the paper: about 40%, §5.2)
    data_seed: int = 0  # one synthetic corpus for every run (so seeds measure training, not data, noise)
    beam_width: int = 8  # prefix beam search for the final beam+LM numbers
    alpha: float = 0.5  # LM weight and word bonus: train_minimal.py's defaults
    beta: float = 1.0
    lm_sentences: int = 5000  # text the word trigram LM is drawn from (dev sentences removed: load_lm)
    parameter_tolerance: float | None = (
        0.10  # fixed-size comparisons: within this of the target (None: no check)
    )
    curve_every: int = 25  # updates between two points of a run's learning curves
    curve_size: int = 50  # the curves' utterances: the last curve_size of each of CURVE_SPLITS
    # Evaluations of the curve without a new best dev-noisy CER before training stops, the best weights
    # then restored (the scaling sweep: every size trained until it stops improving); None: the full budget.
    early_stopping: int | None = None
    budget_minutes: float = 120.0  # what the sweep is sized to (2 CPU cores, 2 jobs of 1 thread)
    note: str = ""  # how this size departs from the others, for the README and the JSON

    def base_model(self) -> dict:
        return ds2.DS2Config(**dict(self.model)).to_dict()

    def updates(self) -> int:
        return self.epochs * -(-self.train_size // self.batch_size)


# The tiny size of --quick: every sweep end to end in about a minute (tests/test_ablations.py).
QUICK = dict(
    train_size=24,
    dev_size=6,
    epochs=2,
    batch_size=8,
    seeds=(0,),
    model=(("conv_channels", (2, 2)), ("rnn_hidden", 12), ("rnn_layers", 1)),
    beam_width=2,
    lm_sentences=200,
    parameter_tolerance=None,  # too small to match sizes (a 1D conv alone outgrows the whole model)
    curve_every=2,
    curve_size=3,
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
    build: dict  # what build_model changes after DS2Config has built the model (see build_model)
    train: dict  # TrainConfig fields
    data: dict  # corpora.cached_splits arguments: train_size, dev_size, seed, train_noise_fraction
    decode: dict  # beam_width, alpha, beta, lm_sentences, and for the lm sweep its grid
    curves: dict  # curve_every, curve_size, early_stopping
    extra: dict = field(default_factory=dict)  # sweep-specific facts about the variant

    @property
    def key(self) -> str:
        return f"{self.variant}/seed{self.seed}"

    def spec(self) -> dict:
        """Everything that determines the run's result: a finished run with the same spec is not rerun."""
        return {
            "model": self.model,
            "build": self.build,
            "train": self.train,
            "data": self.data,
            "decode": self.decode,
            "curves": self.curves,
        }


def default_build(model: dict) -> dict:
    """The model as DS2Config builds it, except a lookahead layer that starts as the identity (§3.7)."""
    return {
        "recurrent_batch_norm": bool(model["batch_norm"]),
        "lookahead_init": "identity" if model["lookahead_context"] else None,
    }


def make_run(
    sweep, size: Size, variant, series, x, seed, model=None, train=None, data=None, decode=None, build=None
):
    model = ds2.DS2Config(**(model or size.base_model())).to_dict()
    return Run(
        sweep=sweep,
        variant=variant,
        seed=seed,
        series=series,
        x=x,
        model=model,
        build={**default_build(model), **(build or {})},
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
            "lm_without_dev_sentences": True,  # load_lm: the LM never read a dev transcript
            **(decode or {}),
        },
        curves={
            "curve_every": size.curve_every,
            "curve_size": size.curve_size,
            "early_stopping": size.early_stopping,
        },
    )


def build_model(model: dict, build: dict | None = None) -> ds2.DeepSpeech2:
    """``DeepSpeech2(DS2Config(**model))`` with the changes DS2Config has no field for.

    ``recurrent_batch_norm=False`` with ``batch_norm=True``: the recurrent layers are rebuilt without
    sequence-wise BatchNorm (their input term ``W h + b``), the conv layers keep theirs, so a sweep
    toggles §3.2's recurrent BatchNorm alone (Table 1 topic). ``lookahead_init="identity"``: the
    lookahead (row) convolution starts as the identity on the current frame, ``W[:, 0] = 1``, so the
    model begins as the forward-only model and the comparison keeps the paper's sense (§3.7): what the
    future frames add, not a layer that starts by scrambling the outputs across them.
    """
    net = ds2.DeepSpeech2(ds2.DS2Config(**model))
    build = build or default_build(net.config.to_dict())
    if net.config.batch_norm and not build.get("recurrent_batch_norm", True):
        layer = type(net.rnns[0])
        sizes = [net.conv.output_features] + [net.config.rnn_hidden] * net.config.rnn_layers
        net.rnns = nn.ModuleList(
            layer(sizes[i], sizes[i + 1], net.config.bidirectional, False) for i in range(len(net.rnns))
        )
    elif not net.config.batch_norm and build.get("recurrent_batch_norm", False):
        raise ValueError("recurrent BatchNorm without the conv layers' BatchNorm is not a variant we run")
    if net.lookahead is not None and build.get("lookahead_init") == "identity":
        with torch.no_grad():
            net.lookahead.weight.zero_()
            net.lookahead.weight[:, 0] = 1.0  # r_t = h_t: the forward-only model's output
    return net


def count_parameters(model: dict, build: dict | None = None) -> int:
    with torch.device("meta"):  # no memory, no initialisation: only the shapes
        return build_model(model, build).num_parameters()


def matched(model: dict, target: int, tolerance: float | None = 0.10, build: dict | None = None) -> dict:
    """``model`` with its ``rnn_hidden`` chosen so its parameter count is closest to ``target``.

    The paper compares depths and layer types at a fixed parameter count (Tables 1 and 3 topics), so
    deeper models get narrower layers. ``build`` as in ``build_model`` (counted with it). Raises if no
    width comes within ``tolerance`` of the target.
    """
    count = lambda hidden: count_parameters({**model, "rnn_hidden": hidden}, build)  # noqa: E731
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
    # A sweep whose finding includes time trains every run itself, its arms side by side on the same host,
    # rather than reusing an identical run another sweep timed under other load.
    timed: bool = False


SWEEPS = {
    "lm": Sweep(
        "greedy vs beam search vs beam search + word LM (2xGRU, the base model)",
        "§3.8",
        "How much do beam search and a word trigram LM (Q = log p_ctc + alpha log p_lm + beta words) add "
        "over greedy decoding of the same model, and how do alpha and beta trade off?",
        "decoder",
        panels=(("decoded", "cer"), ("decoded", "wer")),
    ),
    "sortagrad": Sweep(
        "SortaGrad with and without recurrent BatchNorm (3-layer simple RNNs)",
        "§3.3, Table 2 topic",
        "Does sorting the first epoch by length (SortaGrad) lower the error, with and without recurrent "
        "BatchNorm, and does it steady early training (loss per character, takeoff)?",
        "model",
    ),
    "batchnorm": Sweep(
        "recurrent (sequence-wise) BatchNorm at 1, 3 and 5 simple-RNN layers (conv BatchNorm kept, "
        "fixed parameter count)",
        "§3.2, Table 1 topic",
        "Does sequence-wise BatchNorm in the recurrent layers help, and does its benefit grow with depth, "
        "at a fixed number of parameters?",
        "recurrent layers",
    ),
    "gru": Sweep(
        "GRU vs simple RNN at 3 and 5 layers, both with recurrent BatchNorm (fixed parameter count)",
        "§3.4, Table 3 topic",
        "At the same number of parameters, does a GRU beat a simple RNN (clipped ReLU) at each depth?",
        "recurrent layers",
    ),
    "lookahead": Sweep(
        "bidirectional vs forward-only vs forward-only + lookahead, 2xGRU (fixed parameter count)",
        "§3.7",
        "How much of the bidirectional model's accuracy does a forward-only model recover with a "
        "lookahead (row) convolution over a few future frames, started as the identity?",
        "recurrent direction and future context",
    ),
    "stride": Sweep(
        "time stride 2 vs 4 of the first convolution (2xGRU, the base model)",
        "§3.6",
        "How much time per epoch does a larger time stride save, and what does it cost in error while "
        "CTC still fits (each character needs an output frame)?",
        "time stride of the first conv layer",
        timed=True,
    ),
    "conv": Sweep(
        "1D (time only) vs 2D (frequency x time) convolutions, 2 and 3 layers, 2xGRU (fixed parameter count)",
        "§3.5, Table 4 topic",
        "Do 2D convolutions beat 1D convolutions over time, and is the gap larger on noisy speech?",
        "convolution layers",
    ),
    "noise": Sweep(
        "training with added noise: none or 50% of the training utterances (2xGRU, the base model)",
        "§5.2",
        "Does adding noise to part of the training set help on noisy speech, noise never heard in "
        "training included, and what does it cost on clean speech?",
        "fraction of training utterances with added noise",
    ),
    "scaling": Sweep(
        "dev error against hours of training audio, each size trained until it stopped improving (2xGRU, early "
        "stopping on dev-noisy)",
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
    # Its runs decode three ways (decode_many_ways), so their spec says so: a base run of another sweep
    # has no beam-only result, and must not be reused here (nor these there).
    grid = {"alpha": [0.0, 0.5, 1.0, 2.0], "beta": [0.0, 1.0, 2.0, 4.0]}
    decoders = {"decoders": ["greedy", "beam", "beam_lm"]}
    return [
        make_run(
            "lm",
            size,
            "default-model",
            "decoders",
            "decoders",
            seed,
            decode={**decoders, "grid": grid} if i == 0 else decoders,
        )
        for i, seed in enumerate(size.seeds)
    ]


SIMPLE_RNN = {"rnn_type": "rnn", "rnn_layers": 3}
WITHOUT_RECURRENT_BN = {"recurrent_batch_norm": False}  # a build: the conv layers keep their BatchNorm


def simple_rnn_target(size: Size) -> int:
    """The parameter count of the sweeps on simple RNNs: the base model with 3 simple-RNN layers."""
    return count_parameters({**size.base_model(), **SIMPLE_RNN})


def runs_sortagrad(size: Size) -> list[Run]:
    # The 3-layer simple RNN of the batchnorm sweep (the same runs: reused): Table 2 topic is about
    # simple RNNs too, and "without BatchNorm" means without §3.2's recurrent BatchNorm.
    runs = []
    for recurrent_bn in (False, True):  # the paper's order (Table 2 topic): baseline, then BatchNorm
        build = None if recurrent_bn else WITHOUT_RECURRENT_BN
        model = matched(
            {**size.base_model(), **SIMPLE_RNN}, simple_rnn_target(size), size.parameter_tolerance, build
        )
        for sortagrad in (False, True):
            variant = f"{'bn' if recurrent_bn else 'no-bn'}-{'sortagrad' if sortagrad else 'shuffled'}"
            series = "SortaGrad" if sortagrad else "not sorted"
            x = "BatchNorm" if recurrent_bn else "no BatchNorm"
            runs += [
                make_run(
                    "sortagrad", size, variant, series, x, seed, model, {"sortagrad": sortagrad}, build=build
                )
                for seed in size.seeds
            ]
    return runs


def _depth_sweep(name: str, size: Size, kinds, depths=(1, 3, 5)) -> list[Run]:
    base, target = size.base_model(), simple_rnn_target(size)
    runs = []
    for series, changes, build in kinds:
        for layers in depths:
            model = matched(
                {**base, **changes, "rnn_layers": layers}, target, size.parameter_tolerance, build
            )
            variant = f"{series.replace(' ', '-').lower()}-{layers}"
            runs += [
                make_run(name, size, variant, series, layers, seed, model, build=build) for seed in size.seeds
            ]
    return runs


def runs_batchnorm(size: Size) -> list[Run]:
    # Table 1 topic: simple RNNs with and without §3.2's sequence-wise BatchNorm at each depth; the conv
    # layers keep their BatchNorm in both arms, so only the recurrent BatchNorm differs.
    kinds = [
        ("BatchNorm", {"rnn_type": "rnn"}, None),
        ("no BatchNorm", {"rnn_type": "rnn"}, WITHOUT_RECURRENT_BN),
    ]
    return _depth_sweep("batchnorm", size, kinds)


def runs_gru(size: Size) -> list[Run]:
    # 3 and 5 layers: the 1-layer pair was cut to fit the study's compute (ablations/README.md).
    kinds = [("simple RNN", {"rnn_type": "rnn"}, None), ("GRU", {"rnn_type": "gru"}, None)]
    return _depth_sweep("gru", size, kinds, depths=(3, 5))


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
        for c in (10,)  # output frames of future context (200 ms; 60 ms was cut to fit the compute)
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
        for s in (2, 4)  # stride 3 was cut to fit the study's compute (ablations/README.md)
        for seed in size.seeds
    ]


def runs_conv(size: Size) -> list[Run]:
    base = size.base_model()
    target = count_parameters(base)  # the default 2-layer 2D model's size
    channels_2d = base["conv_channels"][0]
    channels_1d = 8 * channels_2d  # no frequency axis left to hold features: more channels instead
    runs = []
    for conv_type, channels in (("2d", channels_2d), ("1d", channels_1d)):
        for layers in (2, 3):  # 1 layer was cut to fit the study's compute (ablations/README.md)
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
        for f in (0.0, 0.5)  # 80% was cut to fit the study's compute (ablations/README.md)
        for seed in size.seeds
    ]


SCALING_SIZES = 5  # training sets 2x apart: the largest has 16x the smallest's audio (issue 24: >= 16x)


def runs_scaling(size: Size) -> list[Run]:
    # Every size trains to convergence: at most size.epochs' worth of updates of the largest set
    # (the same cap for every size), stopped early when the dev-noisy curve stops improving
    # (size.early_stopping evaluations without a new best), then evaluated with its best weights.
    sizes = [size.train_size // 2**k for k in range(SCALING_SIZES - 1, -1, -1)]
    cap = size.updates()
    runs = []
    for n in sizes:
        epochs = max(1, round(cap / -(-n // size.batch_size)))
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

# The committed sizes. The budget (epochs of the 2,000-utterance set) is the one the pilot chose
# (ablations/pilot.py; its numbers and the study's total compute are in ablations/README.md). At one
# thread an update of 16 utterances costs about 0.2-0.55 s depending on the model (ablations/README.md
# says how that was timed), a 50-utterance curve point about as much per split.
SIZES = {
    "lm": Size(note="one model per seed, decoded many ways"),
    "sortagrad": Size(),
    "batchnorm": Size(),
    "gru": Size(),
    "lookahead": Size(),
    "stride": Size(),
    "conv": Size(),
    "noise": Size(),
    "scaling": Size(
        early_stopping=8,
        note="5 training sets of 125 to 2,000 utterances, each trained until its dev-noisy curve stopped "
        f"improving for 8 points (200 updates), at most {Size().updates()} updates; the best weights evaluated",
    ),
}


def size_of(name: str, quick: bool) -> Size:
    if not quick:
        return SIZES[name]
    overrides = {"train_size": 32, "epochs": 1, "early_stopping": 2} if name == "scaling" else {}
    return Size(**{**QUICK, **overrides}, note="--quick: a tiny model and data set, for tests")


# ----------------------------------------------------------------------------------------------------------
# Executing one run (in this process, or in a worker process)
# ----------------------------------------------------------------------------------------------------------

_DATA: dict = {}  # featurised splits of this process, by data recipe (the last two)
_LMS: dict = {}

# The held-out noise condition: babble at 10 dB SNR whose 3-6 talkers are new voices for every utterance,
# drawn from the utterance's own generator, so never one of the training split's babble bank (whose
# voices come from the training split's seed). Its speakers are a pool of their own, as dev-noisy's are.
HELDOUT = {"name": "dev-noisy-unseen", "noise": "babble", "snr_db": 10.0, "pool": 3, "split_seed": 13}


def heldout_split(data: dict, cache_dir: str | None, workers: int = 1) -> ds2.SyntheticSplit:
    """dev-noisy-unseen (see HELDOUT): synthesised once, then read from the split cache."""
    pool = ds2.make_speaker_pool(40, (data["seed"], HELDOUT["pool"]))
    recipe = json.dumps({**HELDOUT, "dev_size": data["dev_size"], "seed": data["seed"]}, sort_keys=True)
    digest = hashlib.sha256(recipe.encode()).hexdigest()[:16]
    path = corpora.split_cache_dir(cache_dir) / f"{HELDOUT['name']}-{data['dev_size']}utt-{digest}.pt"
    if path.exists():
        split, _ = corpora._load_split(path, recipe)  # the cache's own reader: stale or corrupt -> None
        if split is not None:
            return split
    split = ds2.make_split(
        HELDOUT["name"],
        data["dev_size"],
        pool,
        (data["seed"], HELDOUT["split_seed"]),
        (HELDOUT["noise"],),
        HELDOUT["snr_db"],
        workers=workers,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    corpora._save_split(path, split, recipe)
    return split


def load_data(data: dict, cache_dir: str | None) -> dict:
    """``{split: (spectrograms, texts)}`` for train and SPLITS, plus ``"train_hours"``, memoised."""
    key = json.dumps(data, sort_keys=True)
    if key not in _DATA:
        recipe = {k: v for k, v in data.items() if k != "synthesis_code"}
        splits = corpora.cached_splits(**recipe, cache_dir=cache_dir)
        splits[HELDOUT["name"]] = heldout_split(data, cache_dir)
        featurised = {name: (ds2.featurize_batch(s.waveforms), s.texts) for name, s in splits.items()}
        featurised["train_hours"] = float(splits["train"].durations_s().sum() / 3600)
        while len(_DATA) >= 2:
            _DATA.pop(next(iter(_DATA)))
        _DATA[key] = featurised
    return _DATA[key]


def lm_text(data_seed: int, sentences: int) -> list[str]:
    """The text ``ds2.grammar_lm`` trains on: ``sentences`` of the grammar from the stream ``[seed, 99]``."""
    rng = np.random.default_rng([data_seed, 99])
    return [ds2.random_sentence(rng) for _ in range(sentences)]


def load_lm(data_seed: int, sentences: int, dev_texts=()) -> tuple[ds2.NGramLM, int]:
    """The word trigram LM, trained without any sentence a dev split says: ``(lm, sentences removed)``.

    The grammar repeats short sentences, so about a tenth of its text is some dev transcript verbatim;
    an LM that has read the dev sentences would score them as memorised, not predicted.
    """
    banned = {ds2.normalize_text(text) for text in dev_texts}
    key = (data_seed, sentences, hash(frozenset(banned)))
    if key not in _LMS:
        text = lm_text(data_seed, sentences)
        kept = [sentence for sentence in text if ds2.normalize_text(sentence) not in banned]
        _LMS[key] = ds2.NGramLM.train(kept, order=3), len(text) - len(kept)
    return _LMS[key]


def fits_ctc(model: ds2.DeepSpeech2, spectrograms, texts) -> list[bool]:
    """Per utterance: does the model output enough frames for the transcript under CTC?"""
    out_lengths = model.output_lengths(torch.tensor([spec.shape[-1] for spec in spectrograms]))
    targets = [ds2.encode_text(text) for text in texts]
    padded = nn.utils.rnn.pad_sequence(targets, batch_first=True)  # (B, S)
    needed = ds2.ctc_min_frames(padded, torch.tensor([len(t) for t in targets]))
    return (out_lengths >= needed).tolist()


def rates(refs, hyps) -> dict:
    return {"cer": ds2.character_error_rate(refs, hyps), "wer": ds2.word_error_rate(refs, hyps)}


def greedy_rates(model, specs, texts) -> dict:
    return rates(texts, [ds2.greedy_decode(lp)[0] for lp in ds2.predict(model, specs)])


class Recorder:
    """``fit``'s hooks for one run: every update's loss and batch size, and the learning curves.

    ``on_step`` logs each update's loss (the batch's mean over utterances, nats) with the batch's input
    frames and characters, so the loss can be read per frame or per character: a per-utterance loss grows
    with length, and SortaGrad's first batches are the shortest by construction (§3.3). Every
    ``curve_every`` updates (and at update 0, before any) it measures greedy CER and WER on the curve
    subsets; with ``early_stopping`` it keeps the best weights by dev-noisy curve CER and ``should_stop``
    ends training once that many points pass without a new best. Curve time is kept apart, so a run's
    seconds per epoch are training alone.
    """

    def __init__(self, model, train, config, curve_data: dict, every: int, patience: int | None):
        self.model, self.config, self.curve_data, self.every, self.patience = (
            model,
            config,
            curve_data,
            every,
            patience,
        )
        self.frames = [int(spec.shape[-1]) for spec in train[0]]
        self.characters = [len(ds2.encode_text(text)) for text in train[1]]
        self.plans: dict[int, list[list[int]]] = {}
        self.steps = {"loss": [], "frames": [], "characters": [], "utterances": []}
        self.first_epoch_lengths: list[list[int]] = []
        self.curves = {"updates": [], **{split: {"cer": [], "wer": []} for split in curve_data}}
        self.curve_seconds: dict[int, float] = {}  # by epoch index (0-based)
        self.best, self.best_update, self.best_weights, self.since_best = math.inf, None, None, 0

    def plan(self, epoch: int) -> list[list[int]]:
        if epoch not in self.plans:  # the same batches train_epoch makes (one process)
            c = self.config
            self.plans = {epoch: ds2.sortagrad_batches(self.frames, c.batch_size, epoch, c.seed, c.sortagrad)}
        return self.plans[epoch]

    def on_step(self, state, loss: float) -> None:
        chosen = self.plan(state.epoch)[state.batch - 1]
        self.steps["loss"].append(float(loss))
        self.steps["frames"].append(sum(self.frames[i] for i in chosen))
        self.steps["characters"].append(sum(self.characters[i] for i in chosen))
        self.steps["utterances"].append(len(chosen))
        if state.epoch == 0:
            self.first_epoch_lengths.append([self.frames[i] for i in chosen])
        if state.step % self.every == 0:
            self.measure(state.step, state.epoch)

    def measure(self, update: int, epoch: int = 0) -> None:
        began = time.perf_counter()
        self.curves["updates"].append(update)
        for split, (specs, texts) in self.curve_data.items():
            for metric, value in greedy_rates(self.model, specs, texts).items():
                self.curves[split][metric].append(value)
        if self.patience is not None:
            noisy = self.curves["dev-noisy"]["cer"][-1]
            if noisy < self.best:
                self.best, self.best_update, self.since_best = noisy, update, 0
                self.best_weights = copy.deepcopy(self.model.state_dict())
            else:
                self.since_best += 1
        self.curve_seconds[epoch] = self.curve_seconds.get(epoch, 0.0) + time.perf_counter() - began

    def should_stop(self, state) -> bool:
        return self.patience is not None and self.since_best >= self.patience


def takeoff(curves: dict) -> dict:
    """Took off: the dev-clean curve CER ever fell below TAKEOFF_CER; t50: the first update it did."""
    below = [
        u for u, cer in zip(curves["updates"], curves["dev-clean"]["cer"], strict=True) if cer < TAKEOFF_CER
    ]
    return {
        "criterion": f"dev-clean curve CER < {TAKEOFF_CER:g}",
        "took_off": bool(below),
        "t50": below[0] if below else None,
    }


def execute(run: dict, cache_dir: str | None = None, threads: int = 1) -> dict:
    """Train and evaluate one run; returns its JSON record (``final`` is None if training diverged)."""
    torch.set_num_threads(threads)
    began = time.perf_counter()
    data = load_data(run["data"], cache_dir)
    decode, curves = run["decode"], run["curves"]
    lm, lm_removed = load_lm(
        run["data"]["seed"], decode["lm_sentences"], [t for split in SPLITS for t in data[split][1]]
    )
    torch.manual_seed(run["seed"])
    model = build_model(run["model"], run["build"])
    config = ds2.TrainConfig(**run["train"])
    specs, texts = data["train"]
    keep = fits_ctc(model, specs, texts)  # a larger time stride leaves some transcripts no alignment
    train = (
        [s for s, k in zip(specs, keep, strict=True) if k],
        [t for t, k in zip(texts, keep, strict=True) if k],
    )
    subset = curves["curve_size"]  # the last utterances of each split: fixed, the same for every run
    curve_data = {split: (data[split][0][-subset:], data[split][1][-subset:]) for split in CURVE_SPLITS}
    recorder = Recorder(model, train, config, curve_data, curves["curve_every"], curves["early_stopping"])
    record = {
        **{k: run[k] for k in ("sweep", "variant", "seed", "series", "x")},
        "key": f"{run['variant']}/seed{run['seed']}",
        "spec": {k: run[k] for k in ("model", "build", "train", "data", "decode", "curves")},
        "parameters": model.num_parameters(),
        "train_utterances": len(train[1]),
        "dropped_for_ctc": len(texts) - len(train[1]),
        "train_hours": data["train_hours"],
        "synthesis_code": corpora.synthesis_fingerprint()[
            :16
        ],  # the fingerprint of the synthesiser that made this process's data
        "extra": {**run.get("extra", {}), "lm_sentences_removed_as_dev": lm_removed},
        "error": None,
        "final": None,
    }
    train_began = time.perf_counter()
    recorder.measure(0, -1)  # update 0: the untrained model (all blanks, CER near 100%)
    try:  # the one training loop; dev=None: the curves come from the recorder's hooks instead
        state = ds2.fit(
            model,
            train,
            config,
            dev=None,
            on_step=recorder.on_step,
            should_stop=recorder.should_stop,
            log=None,
        )
        if recorder.curves["updates"][-1] != state.step:  # the last update is always a curve point
            recorder.measure(state.step, state.epoch if state.batch else state.epoch - 1)
        record["epochs"] = [
            {**e, "seconds": e["seconds"] - recorder.curve_seconds.get(e["epoch"] - 1, 0.0)}
            for e in state.history
        ]
        record["updates"] = state.step
        if recorder.best_weights is not None:  # early stopping: evaluate the best weights
            model.load_state_dict(recorder.best_weights)
            record["early_stopping"] = {
                "best_update": recorder.best_update,
                "stopped_at": state.step,
                "best_curve_dev_noisy_cer": recorder.best,
            }
    except FloatingPointError as error:  # every batch of an epoch NaN/inf: a result, not a crash
        record["epochs"], record["error"] = [], f"diverged: {error}"
        record["updates"] = len(recorder.steps["loss"])
    record["curve_seconds"] = sum(recorder.curve_seconds.values())
    record["train_seconds"] = time.perf_counter() - train_began - record["curve_seconds"]
    record["steps"] = recorder.steps
    record["first_epoch_batch_frames"] = recorder.first_epoch_lengths
    first = len(recorder.first_epoch_lengths)
    record["first_epoch_step_losses"] = recorder.steps["loss"][:first]
    record["curves"] = {
        "every": curves["curve_every"],
        "utterances": subset,
        "which": f"the last {subset} utterances of each of {', '.join(CURVE_SPLITS)}; greedy decoding",
        **recorder.curves,
    }
    record["takeoff"] = takeoff(recorder.curves)
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
    if "grid" in decode and split in CURVE_SPLITS:  # alpha x beta: every cell decodes the split again
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


def per_character(run: dict) -> list[float]:
    """Each update's loss per character of its batch: the batch's summed CTC loss over its characters."""
    steps = run["steps"]
    return [
        loss * utterances / characters
        for loss, utterances, characters in zip(
            steps["loss"], steps["utterances"], steps["characters"], strict=True
        )
    ]


def summarise(runs: list[dict]) -> list[dict]:
    """One row per variant: mean, spread and values over its finished seeds (for the figure).

    The means here mix seeds that took off with seeds that did not; ``took_off`` says how many did, and
    findings.py never judges from these means (it pairs the seeds and shows takeoff beside every verdict).
    """
    rows = []
    for variant in dict.fromkeys(run["variant"] for run in runs):
        group = [run for run in runs if run["variant"] == variant]
        done = [run for run in group if run["final"] is not None]
        first = lambda run: per_character(run)[1 : len(run["first_epoch_step_losses"])]  # noqa: E731
        row = {
            "variant": variant,
            "series": group[0]["series"],
            "x": group[0]["x"],
            "seeds": len(group),
            "diverged": len(group) - len(done),
            "took_off": sum(run["takeoff"]["took_off"] for run in group),
            "t50": [run["takeoff"]["t50"] for run in group],  # None: never took off (censored)
            "parameters": group[0]["parameters"],
            "train_hours": group[0]["train_hours"],
            "wall_seconds": stats(run["wall_seconds"] for run in group),
            "seconds_per_epoch": stats(np.mean([e["seconds"] for e in run["epochs"]]) for run in done),
            "first_epoch_loss": stats(np.mean(run["first_epoch_step_losses"]) for run in done),
            "first_epoch_loss_max": stats(max(run["first_epoch_step_losses"]) for run in done),
            # after the first update: the loss before it measures the initialisation, not the batch order
            "first_epoch_loss_per_char_max": stats(max(first(run)) for run in done if first(run)),
            "final_train_loss": stats(run["epochs"][-1]["train_loss"] for run in done if run["epochs"]),
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
        for split in ("dev-clean", "dev-noisy"):  # dev-clean's keyed without a prefix (the figure reads them)
            for decoder in ("greedy", "beam_lm"):
                for metric in ("cer", "wer"):  # a power law needs positive errors
                    rows = [row for row in summary if row[split] and row[split][decoder][metric]["mean"] > 0]
                    if len(rows) >= 2:
                        hours = [row["train_hours"] for row in rows]
                        fit = power_law(hours, [row[split][decoder][metric]["mean"] for row in rows])
                        fit["label"] = f"fit: {fit['relative_improvement_per_10x']:.0f}% relative per 10x"
                        prefix = "" if split == "dev-clean" else f"{split}_"
                        fits[f"{prefix}{decoder}_{metric}"] = fit
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
        "splits": list(SPLITS),
        "heldout_noise": {**HELDOUT, "why": "noise never heard in training: new babble voices per utterance"},
        "title": sweep.title,
        "paper_reference": sweep.paper_reference,
        "question": sweep.question,
        "quick": quick,
        "size": {
            **asdict(size),
            "seeds_per_variant": len(size.seeds),
            "runs": len(runs),
            "description": describe(name, size, runs),
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


def describe(name: str, size: Size, runs: list[Run] | None = None) -> str:
    """The sweep's size and the models it actually runs (the figure's title quotes it)."""
    runs = BUILDERS[name](size) if runs is None else runs
    models = []
    for run in runs:
        m = run.model
        cell = f"{'bi' if m['bidirectional'] else 'forward '}{m['rnn_type'].upper()}"
        recurrent_bn = run.build.get("recurrent_batch_norm", m["batch_norm"])
        text = (
            f"{m['rnn_layers']}x{cell}-{m['rnn_hidden']}"
            + ("" if recurrent_bn else " without recurrent BN")
            + (f" + lookahead {m['lookahead_context']}" if m["lookahead_context"] else "")
            + f", conv {m['conv_type']} {list(m['conv_channels'])}"
            + (f" time stride {m['conv_time_stride']}" if m["conv_time_stride"] != 2 else "")
        )
        models.append(text)
    counts = [count_parameters(run.model, run.build) for run in runs]
    updates = ds2.steps_per_epoch(size.train_size, size.batch_size) * size.epochs
    text = (
        f"{size.train_size} training utterances, {size.epochs} epochs of batch {size.batch_size} "
        f"({updates} updates), {len(size.seeds)} paired seeds; models: {'; '.join(dict.fromkeys(models))} "
        f"({min(counts):,} to {max(counts):,} parameters)"
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
        if saved.get("format") != FORMAT:  # another design (git keeps the old file): start this one afresh
            print(
                f"{name}: {path} holds results of format {saved.get('format')!r}; replacing them with {FORMAT!r}"
            )
            saved = {"format": FORMAT, "size": settings(size), "runs": []}
        if {k: saved["size"].get(k) for k in settings(size)} != settings(size):
            raise ValueError(
                f"{path} was written with other settings than `{name}` has now; pass --fresh to discard "
                "its runs, or --out to write elsewhere"
            )
        specs = {run.key: run.spec() for run in runs}
        for record in saved["runs"]:
            if SWEEPS[name].timed and "reused_from" in record:
                print(f"{name}: {record['key']} was reused from {record['reused_from']}; timing it here")
            elif json.loads(json.dumps(specs.get(record["key"]))) == record["spec"]:
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
        t50 = record["takeoff"]["t50"]
        errors = (
            f"dev-clean CER {100 * final['dev-clean']['greedy']['cer']:.1f}% greedy, "
            f"{100 * final['dev-clean']['beam_lm']['cer']:.1f}% beam+LM; dev-noisy greedy "
            f"{100 * final['dev-noisy']['greedy']['cer']:.1f}%; "
            + (
                f"took off at update {t50}"
                if t50 is not None
                else f"never took off in {record['updates']} updates"
            )
            if final
            else record["error"]
        )
        print(
            f"[{name} {len(records)}/{len(runs)}] {record['variant']} seed {record['seed']}: "
            f"{record['parameters']:,} params, {record['wall_seconds']:.0f} s, {errors}{note}",
            flush=True,
        )

    # The same spec in another sweep: deterministic, so reuse it (not its time: a timed sweep trains its own).
    elsewhere = {} if SWEEPS[name].timed else finished_elsewhere(out, name)
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
            from ablations import curves

            curves.figure_curves(path, out / f"{name}_curves.png")  # every seed's curve, and takeoff
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
        heldout_split(data, args.cache_dir, workers=args.jobs)  # and the held-out noise split, once
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
            runs = BUILDERS[name](size)
            updates = sum(
                ds2.steps_per_epoch(r.data["train_size"], size.batch_size) * r.train["epochs"] for r in runs
            )
            print(
                f"{name:10s} {len(runs):3d} runs, {updates:,} updates at most: {describe(name, size, runs)}"
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
