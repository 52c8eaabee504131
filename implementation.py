"""Deep Speech 2 in one module: spectrogram, model, CTC, decoders, language model, metrics, data, training.

A reproduction, at laptop scale, of

    Amodei et al., "Deep Speech 2: End-to-End Speech Recognition in English and Mandarin", 2015
    (arXiv:1512.02595).

Sections 1-10 build the recogniser in the order of the paper's section 3 (§3.1-3.8); then come the data, the
training loop and inference. Each section names the paper section it implements ("§" is always the paper's;
this module's own sections are written "section 11.6") and opens with the paper's idea and equation, then the
readable code that implements it. Where we depart from the paper the comment says so (see paper_notes.md).
The paper's facts come from a fact sheet (paper_notes.md says which); a detail we remember from the paper
but could not check against it is marked "recalled".

    1. Text (§3.1, §3.9)              the alphabet as data: English's 29 classes, blank = 0; the LM's tokens
    2. Spectrogram (§3.1)             log power spectrogram, 20 ms Hann windows, 10 ms stride; input checks
    3. Convolutional front-end (§3.5) 1-3 layers of 2D convolution over (frequency, time), Table 4 kernels
    4. Sequence-wise BatchNorm (§3.2) on the input-to-hidden projection W h^{l-1} only, masked statistics
    5. Recurrent stack (§3.2-3.4)     the GRU and simple-RNN steps as equations; lookahead convolution (§3.7)
    6. The model                      DS2Config + DeepSpeech2: (B, F, T) spectrograms -> (B, T', C) log-probs
    7. CTC loss (§3.1)                F.ctc_loss, and from scratch: the alpha and beta recursions
    8. Decoders (§3.8)                greedy; CTC prefix beam search with LM shallow fusion; flashlight's C++
    9. Language model (§3.8)          word (or character) n-gram, interpolated Kneser-Ney, ARPA files
   10. Metrics                        edit distance, corpus WER and CER
   11. Synthetic speech               letters as phones, speakers, coarticulation, noise, train/dev splits
   12. Training                       batching, SortaGrad (§3.3), the one training loop, evaluation, checkpoints
   13. Inference and files            audio files, long recordings, transcribe()

Fast paths. Training on a CPU runs faster through hand-written backward passes and fused statistics (the
engine room, ``fast_paths.py``); devices, mixed precision and data parallelism over processes (§4.1) live in
``devices.py``; corpora beyond the letter-phones and the on-disk cache in ``corpora.py``. One switch,
``FAST_PATHS`` (or ``with use_fast_paths(False):``), turns every fast path off: then only the readable code
in this module runs, and it computes the same numbers (tests/test_fast_paths.py compares the two).

Shapes use one notation throughout, one letter per meaning:
    B batch          T frames (T' after the conv strides)     S transcript length (L = 2S + 1 for CTC)
    F frequency bins (F' after the conv strides)              K conv channels
    I features into a recurrent layer (K * F' for the first)  H hidden size    D directions (1 or 2)
    C output classes (the alphabet and the blank: 29 for English)

Importing this module runs nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple, TypeVar

import numpy as np
import soundfile
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import fast_paths

# The engine room (fast_paths.py, devices.py): imported here, so implementation.pick_device etc. keep working.
from devices import SumOverProcesses as SumOverProcesses
from devices import (
    amp_dtype,
    distributed_world,
    global_batch_moments,
    grad_scaler,
    shard_loss,
    share_of_batches,
)
from devices import any_process as any_process
from devices import distribute as distribute
from devices import init_distributed as init_distributed
from devices import mps_is_available as mps_is_available
from devices import pick_device as pick_device
from fast_paths import BatchNormClippedReLU, GRURecurrence, RNNRecurrence, linear_moments
from fast_paths import Gram as Gram

# The one switch for the fast paths (nanoGPT's ``self.flash``, module-wide). True: training on a CPU runs
# the hand-written backward passes of fast_paths.py, inference runs PyTorch's fused GRU kernel. False: the
# readable code of sections 3-5 runs everywhere. The numbers agree to float tolerance.
FAST_PATHS = True


@contextlib.contextmanager
def use_fast_paths(enabled: bool) -> Iterator[None]:
    """``with use_fast_paths(False): ...`` runs the block on the readable code only."""
    global FAST_PATHS
    previous, FAST_PATHS = FAST_PATHS, bool(enabled)
    try:
        yield
    finally:
        FAST_PATHS = previous


# ----------------------------------------------------------------------------------------------------------
# 1. Text: the output alphabet (§3.1, §3.9)
# ----------------------------------------------------------------------------------------------------------
# DS2 emits characters. English: the letters, space, apostrophe, and the CTC blank. Mandarin (§3.9): the
# same network emits Chinese characters instead (several thousand in the paper, as recalled); only the
# output layer and the training data change. So the alphabet is data, part of a model's config and of its
# checkpoint: which symbols the output layer's classes stand for, how a transcript is normalised before it
# is encoded, and whether words are separated by spaces (English: the LM scores words) or not (Mandarin:
# the LM scores characters). The blank is index 0 because F.ctc_loss, torchaudio's decoders and most CTC
# code default to blank=0.

BLANK = 0
BLANK_SYMBOL = "<blank>"


@dataclass(frozen=True)
class Alphabet:
    """A model's output alphabet: class 0 is the CTC blank, class ``i >= 1`` emits ``symbols[i - 1]``.

    ``spaced``: words are separated by spaces (English), so a space is a symbol and the LM's tokens are
    words; otherwise (Mandarin) white space carries no sound and is removed, and the LM's tokens are the
    characters. ``lowercase``: fold upper case before encoding. ``hint``: what to do about a character
    outside the alphabet, for the error message.
    """

    name: str
    symbols: tuple[str, ...]
    spaced: bool = True
    lowercase: bool = True
    hint: str = ""

    def __post_init__(self):
        object.__setattr__(self, "symbols", tuple(self.symbols))
        problems = [s for s in self.symbols if not isinstance(s, str) or len(s) != 1]
        if problems or len(set(self.symbols)) != len(self.symbols) or not self.symbols:
            raise ValueError(f"alphabet {self.name!r}: symbols must be distinct single characters")
        if (" " in self.symbols) != self.spaced:
            raise ValueError(f"alphabet {self.name!r}: a spaced alphabet has the space as a symbol, else not")

    def __repr__(self) -> str:  # a model's config prints this, not several hundred characters
        return f"Alphabet({self.name!r}, {self.num_classes} classes)"

    @property
    def num_classes(self) -> int:
        """The output layer's width: the symbols and the blank."""
        return len(self.symbols) + 1

    @functools.cached_property
    def ids(self) -> dict[str, int]:
        """Symbol -> class index (the blank is not a symbol)."""
        return {symbol: index for index, symbol in enumerate(self.symbols, start=1)}

    def normalize(self, text: str) -> str:
        """Fold case (if ``lowercase``) and white space: runs into one space, or none if not ``spaced``.

        Only changes that cannot alter what was said are made; anything else outside the alphabet is left
        for ``encode`` to refuse by name.
        """
        if not isinstance(text, str):
            raise ValueError(f"a transcript must be a str, got {type(text).__name__}")
        text = text.lower() if self.lowercase else text
        return (" " if self.spaced else "").join(text.split())

    def outside(self, text: str) -> list[str]:
        """The characters of ``text`` that are not in the alphabet, sorted."""
        return sorted({char for char in text if char not in self.ids})

    def encode(self, text: str) -> Tensor:
        """Transcript -> label ids ``(S,)``, dtype long; never contains the blank."""
        normalized = self.normalize(text)
        if not normalized:
            raise ValueError(
                "the transcript is empty (or only white space): CTC needs at least one character to learn from"
            )
        unknown = self.outside(normalized)
        if unknown:
            raise ValueError(
                f"transcript {text!r} has characters outside the alphabet ({self.name}): {unknown}. {self.hint}"
            )
        return torch.tensor([self.ids[char] for char in normalized], dtype=torch.long)

    def decode(self, ids: Iterable[int] | Tensor) -> str:
        """Label ids -> text. Blanks (if any) are skipped; repeats are kept (this is not CTC collapsing)."""
        if isinstance(ids, Tensor):
            ids = ids.tolist()
        chars = []
        for index in ids:
            if not 0 <= index < self.num_classes:
                raise ValueError(
                    f"label id {index} is outside the {self.name} alphabet (0..{self.num_classes - 1})"
                )
            if index != BLANK:
                chars.append(self.symbols[index - 1])
        return "".join(chars)

    def tokens(self, text: str) -> list[str]:
        """What the language model scores: words (spaced alphabets) or characters."""
        text = self.normalize(text)
        return text.split() if self.spaced else list(text)

    def to_dict(self) -> dict:
        """Plain data for a checkpoint or JSON; ``Alphabet(**d)`` rebuilds it."""
        return {**asdict(self), "symbols": list(self.symbols)}


ENGLISH = Alphabet(
    "english",
    (" ", "'", *"abcdefghijklmnopqrstuvwxyz"),
    hint="Allowed: a-z, space and apostrophe; spell out digits and drop punctuation and accents.",
)
# The English alphabet's names as constants, for the code and exercises that work in English.
ALPHABET: tuple[str, ...] = (BLANK_SYMBOL, *ENGLISH.symbols)
NUM_CLASSES = ENGLISH.num_classes  # 29
_CHAR_TO_ID = ENGLISH.ids


def normalize_text(text: str, alphabet: Alphabet = ENGLISH) -> str:
    """``alphabet.normalize``: lower case, white space folded (English); see ``Alphabet.normalize``."""
    return alphabet.normalize(text)


def outside_alphabet(text: str, alphabet: Alphabet = ENGLISH) -> list[str]:
    """The characters of ``text`` that are not in the alphabet (the blank is not a character), sorted."""
    return alphabet.outside(text)


def encode_text(text: str, alphabet: Alphabet = ENGLISH) -> Tensor:
    """Transcript -> label ids, shape ``(S,)``, dtype long; never contains the blank.

    Upper case and repeated white space are normalised (``normalize_text``); any other character outside
    the alphabet raises ``ValueError`` naming it, e.g. digits must be spelt out ("7" -> "seven").
    """
    return alphabet.encode(text)


# The language model (section 9) marks where a sentence begins and ends, and scores a token it never saw
# as the unknown token; the beam search (section 8) uses the same three tokens.
BOS, EOS, UNK = "<s>", "</s>", "<unk>"


def decode_labels(ids: Iterable[int] | Tensor, alphabet: Alphabet = ENGLISH) -> str:
    """Label ids -> text. Blanks (if any) are skipped; repeats are kept (this is not CTC collapsing)."""
    return alphabet.decode(ids)


# ----------------------------------------------------------------------------------------------------------
# 2. Spectrogram (§3.1): the model's input
# ----------------------------------------------------------------------------------------------------------
# DS2 consumes a power spectrogram of normalised audio (§3.1); the 20 ms windows and 10 ms stride are the
# paper's values as we recall them (recalled). We frame without centre padding (torch.stft(center=False)):
# every frame then holds only real samples, so in a padded batch no frame of a short utterance ever sees
# another utterance's padding. The input checks come first: every path into the model goes through them.

SAMPLE_RATE = 16_000


def check_waveform(waveform: Tensor, sample_rate: int = SAMPLE_RATE, window_ms: float = 20.0) -> Tensor:
    """Validate audio before feature extraction; returns it as float32.

    Raises ``ValueError`` for: a non-tensor, an empty or shorter-than-one-window signal, NaN or inf
    samples. Shapes ``(samples,)`` and ``(B, samples)`` are accepted (use ``to_mono`` first for
    multi-channel audio).
    """
    if not isinstance(waveform, Tensor):
        waveform = torch.as_tensor(np.asarray(waveform))
    if waveform.dim() not in (1, 2):
        raise ValueError(
            f"expected a waveform of shape (samples,) or (batch, samples), got shape {tuple(waveform.shape)}"
        )
    window, _ = frame_parameters(sample_rate, window_ms)
    if waveform.shape[-1] == 0:
        raise ValueError("the audio is empty (0 samples)")
    if waveform.shape[-1] < window:
        raise ValueError(
            f"the audio is too short: {waveform.shape[-1]} samples ({1000 * waveform.shape[-1] / sample_rate:.1f} ms) "
            f"at {sample_rate} Hz, but one {window_ms:g} ms analysis window needs {window} samples"
        )
    if not waveform.is_floating_point():
        waveform = waveform.float()
    if not torch.isfinite(waveform).all():
        raise ValueError("the audio contains NaN or inf samples; check how it was loaded or generated")
    return waveform.float()


# Digital silence: no sample reaches 1e-6, about 8 steps of a 24-bit file (a 16-bit file's smallest step
# is 3e-5). Its spectrogram is the constant log(eps); normalised, that is all zeros, and whatever the model
# outputs for it is invented. Real recordings of a quiet room have noise well above this.
SILENT_PEAK = 1e-6


def is_silent(waveform: Tensor) -> bool:
    """True when no sample of ``waveform`` reaches ``SILENT_PEAK`` in magnitude."""
    return bool(waveform.abs().max() < SILENT_PEAK) if waveform.numel() else True


def _silent_message(waveform: Tensor) -> str:
    return (
        f"the audio is silent (peak amplitude {float(waveform.abs().max()):.1g} < {SILENT_PEAK:g}): there "
        "is nothing to transcribe. Check the recording level, the channel, and that the right file was loaded"
    )


def lengths_to_mask(lengths: Tensor, max_length: int) -> Tensor:
    """``(B,)`` lengths -> ``(B, T)`` boolean mask, True on valid frames."""
    return torch.arange(max_length, device=lengths.device)[None, :] < lengths[:, None]


def masked_moments(x: Tensor, valid: Tensor, dims: tuple[int, ...]) -> tuple[Tensor, Tensor, Tensor]:
    """Mean, biased variance and count of the valid values of ``x`` over ``dims`` (kept, as size 1).

    ``valid`` is a boolean mask that broadcasts against ``x``. Padding is set to 0 before any sum, so not
    even a NaN in it can reach a statistic. Two passes (the mean, then the squared deviations from it):
    the one-pass ``E[x^2] - E[x]^2`` loses digits in float32 when the mean is large against the spread.
    Every statistic over valid frames in this module is this function: the spectrogram's per-utterance
    normalisation below, BatchNorm's per-feature statistics in sections 3-4 (whose fast variants in
    fast_paths.py and devices.py are tested against it).
    """
    count = torch.broadcast_to(valid, x.shape).sum(dim=dims, keepdim=True)
    x = x.masked_fill(~valid, 0.0)
    mean = x.sum(dim=dims, keepdim=True) / count
    var = (x - mean).masked_fill(~valid, 0.0).square().sum(dim=dims, keepdim=True) / count
    return mean, var, count


def frame_parameters(sample_rate: int = SAMPLE_RATE, window_ms: float = 20.0, stride_ms: float = 10.0):
    """Window and hop in samples for a sample rate: 16 kHz, 20 ms, 10 ms -> (320, 160)."""
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int (Hz), got {sample_rate!r}")
    window = round(sample_rate * window_ms / 1000)
    hop = round(sample_rate * stride_ms / 1000)
    if window < 2 or hop < 1:
        raise ValueError(
            f"window_ms={window_ms} / stride_ms={stride_ms} give too few samples at {sample_rate} Hz"
        )
    return window, hop


def num_frames(num_samples: int | Tensor, sample_rate: int = SAMPLE_RATE, window_ms=20.0, stride_ms=10.0):
    """Frames produced from ``num_samples`` samples: ``1 + (N - window) // hop`` (0 if N < window)."""
    window, hop = frame_parameters(sample_rate, window_ms, stride_ms)
    if isinstance(num_samples, Tensor):
        return torch.where(num_samples >= window, 1 + (num_samples - window) // hop, 0)
    return 1 + (num_samples - window) // hop if num_samples >= window else 0


def log_spectrogram(
    waveform: Tensor,
    sample_rate: int = SAMPLE_RATE,
    window_ms: float = 20.0,
    stride_ms: float = 10.0,
    eps: float = 1e-10,
) -> Tensor:
    """Log power spectrogram (§3.1): ``log(|STFT|^2 + eps)``.

    Args:
        waveform: ``(samples,)`` or ``(B, samples)``, float, mono.
        sample_rate: Hz; sets the window (20 ms -> 320 samples at 16 kHz) and hop (10 ms -> 160).
        window_ms, stride_ms: analysis window and stride in milliseconds (20 ms / 10 ms: the paper's, as recalled).
        eps: added to the power before the log so silence gives a finite value.

    Returns:
        ``(F, T)`` or ``(B, F, T)`` with ``F = window // 2 + 1`` (161 at 16 kHz) and
        ``T = 1 + (samples - window) // hop``.
    """
    waveform = check_waveform(waveform, sample_rate, window_ms)
    window, hop = frame_parameters(sample_rate, window_ms, stride_ms)
    hann = torch.hann_window(window, periodic=True, device=waveform.device)
    stft = torch.stft(
        waveform, n_fft=window, hop_length=hop, window=hann, center=False, return_complex=True
    )  # (..., F, T)
    power = stft.real.square() + stft.imag.square()  # |X|^2, (..., F, T)
    return torch.log(power + eps)


def normalize_spectrogram(
    spec: Tensor, lengths: Tensor | None = None, floor_db: float | None = 50.0
) -> Tensor:
    """Per-utterance normalisation over valid frames only: zero mean, unit variance.

    Args:
        spec: natural-log power spectrogram ``(F, T)`` or ``(B, F, T)``.
        lengths: valid frames per utterance ``(B,)``; ``None`` means all frames are valid.
        floor_db: clamp each utterance at this many dB below its loudest valid bin before normalising
            (``None`` disables). Without the floor, near-silent stretches of clean audio sit tens of dB
            below anything a model trained on noisy audio has seen, and dev-clean comes out worse than
            dev-noisy (``DS2Config(spectrogram_floor_db=None)`` shows it). Whisper clamps at 80 dB
            for the same reason.

    Returns:
        Same shape; padded frames (``t >= length``) are exactly 0.
    """
    single = spec.dim() == 2
    if single:
        spec = spec.unsqueeze(0)  # (1, F, T)
    batch, _, frames = spec.shape
    if lengths is None:
        lengths = torch.full((batch,), frames, dtype=torch.long)
    lengths = lengths.to(spec.device)
    if (lengths < 1).any() or (lengths > frames).any():
        raise ValueError(f"lengths must be in 1..{frames} frames, got {lengths.tolist()}")
    valid = lengths_to_mask(lengths, frames)[:, None, :]  # (B, 1, T)
    if floor_db is not None:
        peak = spec.masked_fill(~valid, -math.inf).amax(dim=(1, 2), keepdim=True)  # (B, 1, 1)
        spec = torch.maximum(spec, peak - floor_db * math.log(10.0) / 10.0)  # dB -> natural log of power
    mean, var, _ = masked_moments(spec, valid, dims=(1, 2))  # (B, 1, 1) each
    normalized = (spec - mean) / (var.sqrt() + 1e-5)
    normalized = normalized.masked_fill(~valid, 0.0)
    return normalized[0] if single else normalized


# Per-utterance statistics need the whole recording, so a model trained on them cannot stream (§3.7).
# The causal alternative normalises frame t with statistics of frames 0..t only: the running mean and
# variance of everything heard so far, started from a prior (the training set's, weighted as
# ``CAUSAL_PRIOR_FRAMES`` frames) so that the first frames are not normalised by a handful of values. The
# floor follows the loudest bin heard so far, but is never lower than below a quiet training utterance's
# loudest bin: else the near-silence before the first word of a clean recording would go unfloored and
# drag the running statistics down for the rest of it. Late in an utterance this approaches the
# per-utterance normalisation; early on it leans on the prior. It runs in float64 on running sums, so a
# stream fed in chunks gets exactly what the whole recording gets.
NORMALIZATIONS = ("utterance", "causal")
CAUSAL_PRIOR_FRAMES = 5  # the prior weighs as much as 50 ms of audio: the statistics adapt fast


class CausalNormalizer:
    """Streaming-safe normalisation: ``normalizer(spec (B, F, t)) -> (B, F, t)``, state carried across calls.

    Frame ``t`` is floored at ``floor_db`` below the loudest bin of frames ``0..t`` (or the prior's peak,
    if louder), then normalised by the mean and standard deviation of every floored value of frames
    ``0..t`` and of the prior's: ``prior = (mean, var, peak)`` (``estimate_causal_prior``), its mean and
    variance counted as ``prior_frames`` frames. A fresh normalizer per utterance; calling it on the
    frames of one utterance in pieces gives what one call on all of them gives.
    """

    def __init__(self, prior: tuple[float, float, float], batch: int = 1, floor_db: float | None = 50.0,
                 prior_frames: int = CAUSAL_PRIOR_FRAMES):  # fmt: skip
        mean, var, peak = (float(v) for v in prior)
        self.floor = None if floor_db is None else floor_db * math.log(10.0) / 10.0  # dB -> ln of power
        self.peak = torch.full((batch, 1), peak, dtype=torch.float64)  # the loudest bin heard so far
        count = float(prior_frames)  # times F bins, once the first frames say how many bins there are
        self.sums = [torch.full((batch, 1), v) for v in (count, count * mean, count * (var + mean**2))]
        self.bins = None  # running (count, sum, sum of squares) per utterance, in float64

    def __call__(self, spec: Tensor) -> Tensor:
        x = spec.double()  # (B, F, t)
        bins = x.shape[1]
        if self.bins is None:  # the prior counts as prior_frames frames of F values
            self.bins, self.sums = bins, [value * bins for value in self.sums]
        if self.floor is not None:
            peak = torch.cummax(torch.maximum(x.amax(dim=1), self.peak), dim=1).values  # (B, t), heard so far
            self.peak = peak[:, -1:]
            x = torch.maximum(x, peak[:, None, :] - self.floor)
        count = self.sums[0] + bins * torch.arange(1, x.shape[2] + 1, dtype=torch.float64)  # (B, t)
        total = self.sums[1] + x.sum(dim=1).cumsum(dim=1)  # (B, t)
        squares = self.sums[2] + x.square().sum(dim=1).cumsum(dim=1)  # (B, t)
        self.sums = [count[:, -1:], total[:, -1:], squares[:, -1:]]
        mean = total / count
        std = (squares / count - mean.square()).clamp_min(0.0).sqrt()
        return ((x - mean[:, None, :]) / (std[:, None, :] + 1e-5)).to(spec.dtype)


def causal_normalize_spectrogram(
    spec: Tensor,
    prior: tuple[float, float, float],
    lengths: Tensor | None = None,
    floor_db: float | None = 50.0,
    prior_frames: int = CAUSAL_PRIOR_FRAMES,
) -> Tensor:
    """``CausalNormalizer`` over whole utterances: ``(F, T)`` or ``(B, F, T)``; padded frames are 0."""
    single = spec.dim() == 2
    spec = spec.unsqueeze(0) if single else spec  # (B, F, T)
    normalized = CausalNormalizer(prior, spec.shape[0], floor_db, prior_frames)(spec)
    if lengths is not None:  # frames past the end never reach a valid frame: they come after it
        valid = lengths_to_mask(lengths.to(spec.device), spec.shape[2])[:, None, :]  # (B, 1, T)
        normalized = normalized.masked_fill(~valid, 0.0)
    return normalized[0] if single else normalized


def estimate_causal_prior(
    spectrograms: Sequence[Tensor], floor_db: float | None = 50.0
) -> tuple[float, float, float]:
    """The causal normaliser's prior from training utterances' log power spectrograms ``(F, T_i)``:
    ``(mean, var, peak)``, the peak a quiet utterance's loudest bin (the 5th percentile over utterances),
    the mean and variance those of every value floored as ``CausalNormalizer`` floors it."""
    if not spectrograms:
        raise ValueError("estimate_causal_prior needs at least one spectrogram")
    prior_peak = float(np.percentile([float(spec.max()) for spec in spectrograms], 5))
    total, squares, count = 0.0, 0.0, 0
    for spec in spectrograms:
        x = spec.double()
        if floor_db is not None:
            peak = torch.cummax(x.amax(dim=0).clamp_min(prior_peak), dim=0).values  # (T,)
            x = torch.maximum(x, peak[None, :] - floor_db * math.log(10.0) / 10.0)
        total, squares, count = total + float(x.sum()), squares + float(x.square().sum()), count + x.numel()
    mean = total / count
    return mean, squares / count - mean**2, prior_peak


def featurize(
    waveform: Tensor,
    sample_rate: int = SAMPLE_RATE,
    expected_sample_rate: int = SAMPLE_RATE,
    floor_db=50.0,
    prior: tuple[float, float, float] | None = None,
) -> Tensor:
    """One mono utterance -> the model's input: normalised log power spectrogram ``(F, T)``.

    Normalised per utterance (``normalize_spectrogram``), or causally with ``prior`` given
    (``causal_normalize_spectrogram``; a model's ``DS2Config.normalize_prior``).

    Raises ``ValueError`` for multi-channel audio (down-mix with ``to_mono``), for a sample rate the
    model was not built for (resample, or use ``transcribe`` which does both for you), and for silent
    audio (every sample below ``SILENT_PEAK``), besides ``check_waveform``'s empty/short/NaN checks.
    """
    frame_parameters(sample_rate)  # a usable sample rate at all?
    if isinstance(waveform, Tensor) and waveform.dim() == 2:
        raise ValueError(
            f"expected mono audio of shape (samples,), got {tuple(waveform.shape)}; "
            "down-mix first with implementation.to_mono(waveform)"
        )
    if sample_rate != expected_sample_rate:
        raise ValueError(
            f"the audio is sampled at {sample_rate} Hz but the model expects {expected_sample_rate} Hz; "
            "resample it (torchaudio.functional.resample) or call transcribe(), which resamples"
        )
    waveform = check_waveform(waveform, sample_rate)
    if is_silent(waveform):
        raise ValueError(_silent_message(waveform))
    spec = log_spectrogram(waveform, sample_rate)  # (F, T)
    if prior is not None:
        return causal_normalize_spectrogram(spec, prior, floor_db=floor_db)
    return normalize_spectrogram(spec, floor_db=floor_db)


def featurize_batch(
    waveforms: Sequence[Tensor],
    sample_rate: int = SAMPLE_RATE,
    floor_db=50.0,
    batch_size: int = 64,
    prior: tuple[float, float, float] | None = None,
    raw: bool = False,
) -> list[Tensor]:
    """Many mono utterances -> their ``featurize`` outputs, a list of ``(F, T_i)``, with batched STFTs.

    Utterances of similar length are padded into ``(batch_size, samples)`` batches and go through one
    ``torch.stft`` each: the same numbers as ``featurize`` one by one (frames never overlap the padding,
    see ``log_spectrogram``; normalisation uses each utterance's valid frames), for far fewer calls.
    ``prior``: normalise causally (as ``featurize``); ``raw``: return the log power spectrograms.
    """
    waveforms = [check_waveform(waveform, sample_rate) for waveform in waveforms]
    for waveform in waveforms:
        if waveform.dim() != 1:
            raise ValueError(f"expected mono audio of shape (samples,), got {tuple(waveform.shape)}")
        if is_silent(waveform):
            raise ValueError(_silent_message(waveform))
    order = np.argsort([len(waveform) for waveform in waveforms], kind="stable")
    features: list[Tensor | None] = [None] * len(waveforms)
    for start in range(0, len(order), batch_size):
        chosen = order[start : start + batch_size]
        batch = nn.utils.rnn.pad_sequence([waveforms[i] for i in chosen], batch_first=True)  # (B, samples)
        lengths = num_frames(torch.tensor([len(waveforms[i]) for i in chosen]), sample_rate)  # (B,)
        spec = log_spectrogram(batch, sample_rate)  # (B, F, T)
        if raw:  # the log power spectrogram itself (estimate_causal_prior wants it)
            pass
        elif prior is not None:  # causal: frames past an utterance's end come after it, so never reach it
            spec = causal_normalize_spectrogram(spec, prior, lengths, floor_db=floor_db)  # (B, F, T)
        else:
            spec = normalize_spectrogram(spec, lengths, floor_db=floor_db)  # (B, F, T)
        for row, index in enumerate(chosen):
            features[index] = spec[row, :, : lengths[row]].clone()  # (F, T_i)
    return features


# ----------------------------------------------------------------------------------------------------------
# 3. Convolutional front-end (§3.5, Table 4)
# ----------------------------------------------------------------------------------------------------------
# Table 4's 2D layers, as (frequency x time): 41x11 stride 2x2, then 21x11 stride 2x1, then 21x11
# stride 2x1 (32, 32, 96 channels in the paper). Padding of half the kernel keeps every input frame
# inside some output frame. Each layer is conv -> BatchNorm -> clipped ReLU (§3.1's nonlinearity).

PAPER_CONV_KERNELS = ((41, 11), (21, 11), (21, 11))
PAPER_CONV_STRIDES = ((2, 2), (2, 1), (2, 1))
PAPER_CONV_CHANNELS = (32, 32, 96)


def clipped_relu(x: Tensor, ceiling: float = 20.0) -> Tensor:
    """The paper's nonlinearity (§3.1): ``sigma(x) = min(max(x, 0), 20)``."""
    return torch.clamp(x, min=0.0, max=ceiling)


def conv_output_size(size: int | Tensor, kernel: int, stride: int, padding: int):
    """Output length of a convolution along one axis: ``floor((size + 2p - k) / s) + 1``."""
    return (size + 2 * padding - kernel) // stride + 1


# Each conv layer is followed by BatchNorm (§3.2 applies it to the whole network, conv layers included).
# Padded frames are not audio, so BatchNorm's statistics come from the valid positions only.


class MaskedBatchNorm(nn.BatchNorm1d):
    """BatchNorm whose statistics come from valid positions only; padded positions come out as 0.

    ``forward(x, mask)`` takes ``x`` with features last, e.g. ``(B, T, I)``, and a boolean mask of the
    valid positions that broadcasts against ``x.shape[:-1]``, e.g. ``(B, T)``, or ``(B, 1, T)`` for
    ``x`` of shape ``(B, F', T, K)``. In training, each feature's mean and (biased) variance come from
    the valid positions (``masked_moments``) and the running estimates are updated with the unbiased
    variance, exactly as ``nn.BatchNorm1d`` does (tested against it); in eval mode the running estimates
    are used, so an utterance's output never depends on what it is batched with.
    """

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:  # type: ignore[override]
        scale, shift = self.scale_and_shift(x, mask)
        return (x * scale + shift).masked_fill(~mask[..., None], 0.0)

    def clipped_relu(self, x: Tensor, mask: Tensor) -> Tensor:
        """``clipped_relu(self(x, mask))`` with padding 0: a conv layer's BatchNorm and nonlinearity."""
        if FAST_PATHS and self._can_fuse(x):  # one pass less each way (fast_paths.BatchNormClippedReLU)
            return self._fused_clipped_relu(x, mask)
        return clipped_relu(self(x, mask)).masked_fill(~mask[..., None], 0.0)

    def scale_and_shift(self, x: Tensor, mask: Tensor, weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Per-feature ``(scale, shift)`` with ``BN(x) = x * scale + shift``; updates running estimates.

        With ``weight`` (O, I) (the fast paths only), the BatchNorm is of ``y = x @ weight.T`` and its
        statistics come from the covariance of ``x`` (``fast_paths.linear_moments``) without forming ``y``.
        """
        if self.training:
            x = x.to(torch.promote_types(x.dtype, torch.float32))  # float32+ statistics, also under --amp
            if weight is None:
                mean, var, count = self._feature_moments(x, mask)
            else:
                mean, var, count = linear_moments(x, mask, weight.to(x.dtype))
            self._update_running_estimates(mean, var, count)
        else:
            mean, var = self.running_mean, self.running_var  # of W x itself, with or without weight
        scale = torch.rsqrt(var + self.eps)
        if self.weight is not None:  # affine=False: no learned gamma and beta
            scale = scale * self.weight
        shift = -mean * scale
        return scale, shift if self.bias is None else shift + self.bias

    @staticmethod
    def _feature_moments(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Each feature's (last axis) mean, biased variance, and the count of valid positions."""
        if distributed_world()[1] > 1:  # torchrun: this process holds one shard of the global batch
            return global_batch_moments(x, mask)  # devices.py: the same statistics over every shard
        mean, var, count = masked_moments(x, mask[..., None], dims=tuple(range(x.dim() - 1)))
        return mean.flatten(), var.flatten(), count.flatten()[0]

    @torch.no_grad()
    def _update_running_estimates(self, mean: Tensor, var: Tensor, count: Tensor) -> None:
        """As ``nn.BatchNorm1d`` keeps them: the mean, and the unbiased variance."""
        self.running_mean.lerp_(mean.detach(), self.momentum)
        self.running_var.lerp_(var.detach() * count / max(int(count) - 1, 1), self.momentum)
        self.num_batches_tracked += 1

    def _can_fuse(self, x: Tensor) -> bool:
        """Training on the CPU in float32/64, one process, with learned gamma and beta."""
        return (
            self.training
            and self.weight is not None
            and x.device.type == "cpu"
            and distributed_world()[1] == 1
            and not torch.is_autocast_enabled("cpu")
        )

    def _fused_clipped_relu(self, x: Tensor, mask: Tensor) -> Tensor:
        count = torch.broadcast_to(mask, x.shape[:-1]).sum()
        y, mean, var = BatchNormClippedReLU.apply(x, mask[..., None], self.weight, self.bias, self.eps, count)
        self._update_running_estimates(mean, var, count)
        return y


class ConvFrontEnd(nn.Module):
    """1-3 convolution layers with the paper's kernels and strides (§3.5, Table 4 topic).

    ``conv_type="2d"`` (default) convolves over (frequency, time) with Table 4's 2D kernels. ``"1d"``
    convolves over time only, Table 4's 1D rows: each kernel spans every frequency bin, so the ``F`` bins
    are the input channels of a ``Conv1d`` with the same time kernel (11 frames) and time strides.
    ``time_stride`` is the first layer's stride in time (§3.6; Table 4's is 2); later layers stride 1.

    ``forward(spec (B, F, T), lengths (B,)) -> (features (B, T', I), out_lengths (B,))`` with
    ``I = K * F'`` (2D) or ``I = K`` (1D). Padded frames are zeroed before every layer, so a short
    utterance's output is the same whatever it is batched with (the conv's own zero padding and the
    batch's padding look alike).
    """

    def __init__(
        self,
        num_freq: int,
        channels: Sequence[int],
        batch_norm: bool = True,
        conv_type: str = "2d",
        time_stride: int = PAPER_CONV_STRIDES[0][1],
    ):
        super().__init__()
        if not 1 <= len(channels) <= 3:
            raise ValueError(f"the paper uses 1 to 3 convolutional layers (§3.5); got {len(channels)}")
        if conv_type not in ("1d", "2d"):
            raise ValueError(
                f"conv_type must be '1d' (time only) or '2d' (frequency x time), got {conv_type!r}"
            )
        if not 1 <= time_stride <= PAPER_CONV_KERNELS[0][1]:
            raise ValueError(
                f"time_stride must be 1 to {PAPER_CONV_KERNELS[0][1]} (the kernel's width in time, so no "
                f"frame is skipped), got {time_stride}"
            )
        self.conv_type = conv_type
        self.layers = nn.ModuleList()
        self.norms = nn.ModuleList()
        in_channels, freq = (1, num_freq) if conv_type == "2d" else (num_freq, 1)  # 1D: bins are channels
        for index, out_channels in enumerate(channels):
            kernel, stride = PAPER_CONV_KERNELS[index], PAPER_CONV_STRIDES[index]
            stride = (stride[0], time_stride) if index == 0 else stride
            padding = (kernel[0] // 2, kernel[1] // 2)
            # With BatchNorm after it, a conv bias would be cancelled by the mean subtraction.
            if conv_type == "2d":
                conv = nn.Conv2d(in_channels, out_channels, kernel, stride, padding, bias=not batch_norm)
                # Weights in channels-last memory too: with one input channel the input alone cannot tell
                # oneDNN which layout to use, and the default (B, K, F, T) path is 2-3x slower here.
                conv.to(memory_format=torch.channels_last)
                freq = conv_output_size(freq, kernel[0], stride[0], padding[0])
            else:  # the time axis of the 2D layer only
                conv = nn.Conv1d(
                    in_channels, out_channels, kernel[1], stride[1], padding[1], bias=not batch_norm
                )
            self.layers.append(conv)
            self.norms.append(MaskedBatchNorm(out_channels) if batch_norm else nn.Identity())
            in_channels = out_channels
        if freq < 1:
            raise ValueError(f"{num_freq} frequency bins are too few for {len(channels)} conv layers")
        self.output_features = in_channels * freq

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Frames out for frames in (exact; tested against real outputs for 1..500 frames)."""
        for conv in self.layers:  # time is the last axis of Conv1d and Conv2d alike
            lengths = conv_output_size(lengths, conv.kernel_size[-1], conv.stride[-1], conv.padding[-1])
        return lengths

    def forward(self, spec: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        mask = lengths_to_mask(lengths, spec.shape[-1])  # (B, T)
        if self.conv_type == "1d":
            return self._forward_1d(spec * mask[:, None, :], lengths)  # padding -> 0 before the first conv
        # Channels-last memory ((B, F, T, K) in memory): oneDNN's direct convolution kernels run 2-4x
        # faster on it than on (B, K, F, T) for these few-channel layers (benchmarks/bench_training.py).
        x = (spec * mask[:, None, :]).unsqueeze(1)  # (B, 1, F, T), padding -> 0 before the first conv
        x = x.contiguous(memory_format=torch.channels_last)
        for conv, norm in zip(self.layers, self.norms, strict=True):
            x = conv(x)  # (B, K, F', T'), channels-last
            lengths = conv_output_size(lengths, conv.kernel_size[1], conv.stride[1], conv.padding[1])
            mask = lengths_to_mask(lengths, x.shape[-1])  # (B, T')
            if isinstance(norm, MaskedBatchNorm):  # statistics over the valid (B, F', T') positions
                x = norm.clipped_relu(x.permute(0, 2, 3, 1), mask[:, None, :]).permute(0, 3, 1, 2)
            else:
                x = clipped_relu(x) * mask[:, None, None, :]  # (B, K, F', T'), padding stays 0
        batch, channels, freq, frames = x.shape
        features = x.permute(0, 3, 1, 2).reshape(batch, frames, channels * freq)  # (B, T', K * F')
        return features, lengths

    def _forward_1d(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        for conv, norm in zip(self.layers, self.norms, strict=True):
            x = conv(x)  # (B, K, T'): the first layer's input channels are the F bins
            lengths = conv_output_size(lengths, conv.kernel_size[0], conv.stride[0], conv.padding[0])
            mask = lengths_to_mask(lengths, x.shape[-1])  # (B, T')
            if isinstance(norm, MaskedBatchNorm):  # statistics over the valid (B, T') positions
                x = norm.clipped_relu(x.transpose(1, 2), mask).transpose(1, 2)  # (B, K, T')
            else:
                x = clipped_relu(x) * mask[:, None, :]  # (B, K, T'), padding stays 0
        return x.transpose(1, 2), lengths  # (B, T', K)


# ----------------------------------------------------------------------------------------------------------
# 4. Sequence-wise BatchNorm (§3.2)
# ----------------------------------------------------------------------------------------------------------
# The paper normalises only the vertical (input-to-hidden) term of a recurrent layer, never the recurrent one:
#     h_t^l = f( B(W^l h_t^{l-1}) + U^l h_{t-1}^l )
# with the mean and variance taken over every (utterance, time step) of the minibatch - "sequence-wise" -
# rather than separately per time step. Padded frames are not part of the sequence, so they are not part of
# the statistics. At inference the paper uses running (population) estimates.


class SequenceWiseBatchNorm(MaskedBatchNorm):
    """Sequence-wise BatchNorm (§3.2): ``forward(x (B, T, I), lengths (B,)) -> (B, T, I)``.

    Mean and variance are computed over all valid (batch x time) frames; padded frames are ignored and
    come out as 0. Running estimates are kept for eval mode, exactly as ``nn.BatchNorm1d`` keeps them.
    The recurrent layers of section 5 apply it to ``W h^{l-1}`` for every frame before their loop over time.
    """

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:  # type: ignore[override]
        if x.dim() != 3:
            raise ValueError(f"expected (B, T, I) input, got shape {tuple(x.shape)}")
        return super().forward(x, lengths_to_mask(lengths, x.shape[1]))


# ----------------------------------------------------------------------------------------------------------
# 5. Recurrent stack (§3.2-3.4) and lookahead convolution (§3.7)
# ----------------------------------------------------------------------------------------------------------


# A recurrent layer reads its input term B(W h^{l-1}) (section 4) one frame at a time and adds the
# recurrent term U h_{t-1}, which is never normalised. The two cells of Table 3's comparison, as equations:
#
#     simple RNN (§3.1):   h_t = clipped_relu( a_t + U h_{t-1} )                 a_t = B(W h_t^{l-1})
#     GRU (§3.4):          r_t = sigmoid( a_r + U_r h_{t-1} + b_r )               (reset gate)
#                          z_t = sigmoid( a_z + U_z h_{t-1} + b_z )               (update gate)
#                          n_t = tanh( a_n + r_t * (U_n h_{t-1} + b_n) )          (candidate)
#                          h_t = (1 - z_t) * n_t + z_t * h_{t-1}
#
# §3.4's GRU multiplies h_{t-1} by U_n *before* the reset gate, as PyTorch's nn.GRU does. Departure: the
# candidate's activation is tanh; §3.4 reports that tanh and clipped ReLU perform similarly. A bidirectional
# layer sums its two directions, h^l = h_forward + h_backward (§3.1), and the backward direction reads each
# utterance reversed *within its own length*, so it starts at the true last frame, not in the padding.


def simple_rnn_step(a_t: Tensor, h_prev: Tensor, U: Tensor) -> Tensor:
    """One step of the simple RNN: ``a_t (B, H)``, ``h_prev (B, H)``, ``U (H, H)`` -> ``h_t (B, H)``."""
    return clipped_relu(a_t + h_prev @ U.T)


def gru_step(a_t: Tensor, h_prev: Tensor, U: Tensor, b: Tensor) -> Tensor:
    """One GRU step: ``a_t (B, 3H)`` the input term of the three gates, ``U (3H, H)``, ``b (3H,)``."""
    a_r, a_z, a_n = a_t.chunk(3, dim=-1)  # reset, update, candidate: PyTorch's order
    U_r, U_z, U_n = U.chunk(3)
    b_r, b_z, b_n = b.chunk(3)
    r = torch.sigmoid(a_r + h_prev @ U_r.T + b_r)
    z = torch.sigmoid(a_z + h_prev @ U_z.T + b_z)
    n = torch.tanh(a_n + r * (h_prev @ U_n.T + b_n))
    return (1 - z) * n + z * h_prev


def run_over_time(step: Callable[[Tensor, Tensor], Tensor], a: Tensor, hidden: int) -> Tensor:
    """``h_t = step(a_t, h_{t-1})`` from ``h_{-1} = 0`` over ``a (B, T, G)``: ``(B, T, hidden)``."""
    h = a.new_zeros(a.shape[0], hidden)  # (B, H)
    outputs = []
    for t in range(a.shape[1]):
        h = step(a[:, t], h)
        outputs.append(h)
    return torch.stack(outputs, dim=1)  # (B, T, H)


def reverse_padded(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each sequence of ``x (B, T, ...)`` within its own length; padding stays where it is."""
    frames = x.shape[1]
    time = torch.arange(frames, device=x.device)[None, :]  # (1, T)
    index = torch.where(time < lengths[:, None], lengths[:, None] - 1 - time, time)  # (B, T)
    index = index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, index)


def both_directions(step_in_direction, a: Tensor, lengths: Tensor, directions: int, hidden: int) -> Tensor:
    """``h_forward + h_backward`` (§3.1) of a layer whose input term is ``a (B, T, D * G)``: ``(B, T, H)``.

    ``step_in_direction(d)`` is the step function of direction ``d``. Padded output frames are set to 0.
    """
    gates = a.shape[-1] // directions
    output = run_over_time(step_in_direction(0), a[..., :gates], hidden)  # (B, T, H)
    if directions == 2:
        backward_in = reverse_padded(a[..., gates:], lengths)  # each utterance from its true last frame
        output = output + reverse_padded(run_over_time(step_in_direction(1), backward_in, hidden), lengths)
    return output * lengths_to_mask(lengths, a.shape[1])[..., None]


class SimpleRNNLayer(nn.Module):
    """A simple recurrent layer with sequence-wise BatchNorm: ``h_t = clipped_relu(B(W h_t^{l-1}) + U h_{t-1})``.

    ``forward(x (B, T, I), lengths (B,)) -> (B, T, H)``; without BatchNorm the input term is ``W h + b``.
    ``nn.RNN`` has no clipped ReLU, so the layer is the equation as code (``simple_rnn_step``). Training
    on the CPU runs ``fast_paths.RNNRecurrence`` instead: the same numbers, with BPTT by hand.
    """

    def __init__(
        self, input_size: int, hidden_size: int, bidirectional: bool = True, batch_norm: bool = True
    ):
        super().__init__()
        self.directions = 2 if bidirectional else 1
        self.input_projection = nn.Linear(input_size, hidden_size * self.directions, bias=not batch_norm)
        self.norm = SequenceWiseBatchNorm(hidden_size * self.directions) if batch_norm else None
        self.recurrent = nn.ModuleList(
            nn.Linear(hidden_size, hidden_size, bias=False) for _ in range(self.directions)
        )
        self.hidden_size = hidden_size

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        if FAST_PATHS and x.device.type == "cpu" and torch.is_grad_enabled():
            return self._forward_fast(x, lengths)
        a = self.input_projection(x)  # W h^{l-1} (+ b): (B, T, D * H)
        if self.norm is not None:
            a = self.norm(a, lengths)  # B(W h^{l-1}), statistics over the valid frames (section 4)

        def step_in_direction(d: int):
            return lambda a_t, h_prev: simple_rnn_step(a_t, h_prev, self.recurrent[d].weight)

        return both_directions(step_in_direction, a, lengths, self.directions, self.hidden_size)

    def _forward_fast(self, x: Tensor, lengths: Tensor) -> Tensor:
        """Both directions at once with ``fast_paths.RNNRecurrence``, BatchNorm folded into ``W``."""
        mask = lengths_to_mask(lengths, x.shape[1])  # (B, T)
        projection = self.input_projection
        a, back = fast_paths.inputs_in_step_order(
            x, lengths, mask, projection.weight, projection.bias, self.norm, self.directions
        )  # (D, T, B, H)
        weights = torch.stack([layer.weight for layer in self.recurrent])  # (D, H, H)
        h = RNNRecurrence.apply(a, weights)  # (D, T, B, H)
        return fast_paths.sum_directions_in_frame_order(h, back) * mask[..., None]  # (B, T, H)


class GRULayer(nn.Module):
    """A (bi)directional GRU layer (§3.4) with sequence-wise BatchNorm on ``W h^{l-1}`` (§3.2).

    ``forward(x (B, T, I), lengths (B,)) -> (B, T, H)``: ``a = B(W h^{l-1})`` for every frame and both
    directions at once (``SequenceWiseBatchNorm``, gradients flowing through its mean and variance), then
    ``gru_step`` over time. ``self.gru`` (an ``nn.GRU``) holds the weights in PyTorch's layout, so that the
    fused kernel below and every checkpoint use them; with BatchNorm, BN's shift replaces the GRU's input
    bias, which is neither used nor trained. Two fast paths compute the same numbers (tested):

    * training on the CPU: ``fast_paths.GRURecurrence``, both directions at once with BPTT by hand;
    * otherwise (inference, GPUs): PyTorch's fused kernel ``torch.gru``. It computes ``W h^{l-1}`` inside,
      so no BatchNorm fits in between; but once its statistics are known BatchNorm of a linear map is
      linear, ``B(W x) = (diag(gamma / sigma) W) x + (beta - gamma mu / sigma)``, so it is folded into the
      input weights and bias and the kernel runs with those.

    No ``PackedSequence``: on the CPU a packed GRU falls back to a loop of small per-frame ops
    (``benchmarks/bench_training.py`` measures it), so every path runs on the padded tensor.
    """

    def __init__(
        self, input_size: int, hidden_size: int, bidirectional: bool = True, batch_norm: bool = True
    ):
        super().__init__()
        self.gru = nn.GRU(input_size, hidden_size, batch_first=True, bidirectional=bidirectional)
        self.directions = 2 if bidirectional else 1
        self.hidden_size = hidden_size
        # One BatchNorm over the stacked input projections of both directions (3H gates per direction).
        self.norm = SequenceWiseBatchNorm(3 * hidden_size * self.directions) if batch_norm else None
        if batch_norm:
            for suffix in self._suffixes():
                getattr(self.gru, "bias_ih" + suffix).requires_grad_(False).data.zero_()

    def _suffixes(self):
        return ["_l0", "_l0_reverse"][: self.directions]

    def _weights(self, name: str) -> list[Tensor]:
        """``nn.GRU``'s parameter ``name`` ("weight_ih", "bias_ih", "weight_hh", "bias_hh") per direction."""
        return [getattr(self.gru, name + suffix) for suffix in self._suffixes()]

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        if FAST_PATHS:  # training on the CPU: BPTT by hand; otherwise PyTorch's fused kernel
            training_on_cpu = x.device.type == "cpu" and torch.is_grad_enabled()
            return (self._forward_bptt if training_on_cpu else self._forward_kernel)(x, lengths)
        a = x @ torch.cat(self._weights("weight_ih")).T  # W h^{l-1}: (B, T, D * 3H)
        if self.norm is not None:
            a = self.norm(a, lengths)  # B(W h^{l-1}), statistics over the valid frames (section 4)
        else:
            a = a + torch.cat(self._weights("bias_ih"))
        U, b = self._weights("weight_hh"), self._weights("bias_hh")

        def step_in_direction(d: int):
            return lambda a_t, h_prev: gru_step(a_t, h_prev, U[d], b[d])

        return both_directions(step_in_direction, a, lengths, self.directions, self.hidden_size)

    def _forward_bptt(self, x: Tensor, lengths: Tensor) -> Tensor:
        """``fast_paths.GRURecurrence``, fed ``B(W h^{l-1})`` from one matmul with BatchNorm folded into ``W``."""
        mask = lengths_to_mask(lengths, x.shape[1])  # (B, T)
        weight, bias = torch.cat(self._weights("weight_ih")), torch.cat(self._weights("bias_ih"))
        gx, back = fast_paths.inputs_in_step_order(x, lengths, mask, weight, bias, self.norm, self.directions)
        U, b = (
            torch.stack(self._weights("weight_hh")),
            torch.stack(self._weights("bias_hh")),
        )  # (D, 3H, H), (D, 3H)
        h = GRURecurrence.apply(gx, U, b)  # (D, T, B, H), a view of a time-major (T, D, B, H) buffer
        return fast_paths.sum_directions_in_frame_order(h, back) * mask[..., None]  # (B, T, H)

    def _forward_kernel(self, x: Tensor, lengths: Tensor) -> Tensor:
        """Each direction with ``torch.gru``, BatchNorm folded into ``W``: ``(B, T, I) -> (B, T, H)``."""
        mask = lengths_to_mask(lengths, x.shape[1])  # (B, T)
        w_ih, b_ih = self._weights("weight_ih"), self._weights("bias_ih")  # (3H, I), (3H,) per direction
        if self.norm is not None:
            projected = x @ torch.cat(w_ih).T  # W h^{l-1}: (B, T, D * 3H), for the statistics
            scale, shift = self.norm.scale_and_shift(projected, mask)  # (D * 3H,) each
            scale, shift = scale.view(self.directions, -1), shift.view(self.directions, -1)  # (D, 3H)
            w_ih = [w * scale[d, :, None] for d, w in enumerate(w_ih)]  # diag(gamma / sigma) W
            b_ih = list(shift)  # BN's own shift replaces the input bias
        output = self._run(x, 0, w_ih[0], b_ih[0])  # (B, T, H)
        if self.directions == 2:
            backward = self._run(reverse_padded(x, lengths), 1, w_ih[1], b_ih[1])  # (B, T, H), reversed
            output = output + reverse_padded(backward, lengths)  # (B, T, H)
        return output * mask[..., None]

    def _run(self, x: Tensor, direction: int, w_ih: Tensor, b_ih: Tensor) -> Tensor:
        """One direction over the padded batch with the fused kernel: ``(B, T, I) -> (B, T, H)``."""
        suffix = self._suffixes()[direction]
        params = [w_ih, getattr(self.gru, "weight_hh" + suffix), b_ih, getattr(self.gru, "bias_hh" + suffix)]
        h0 = x.new_zeros(1, x.shape[0], self.hidden_size)  # (1, B, H)
        # torch.gru is the op behind nn.GRU.forward: (input, hx, params, has_biases, num_layers, dropout,
        # train, bidirectional, batch_first).
        output, _ = torch.gru(x, h0, params, True, 1, 0.0, self.training, False, True)
        return output


class LookaheadConvolution(nn.Module):
    """Row convolution (§3.7) for unidirectional models: each feature looks ``context`` frames ahead.

        r_{t,i} = sum_{j=1}^{context+1} W_{i,j} h_{t+j-1,i}

    A depthwise 1D convolution over time, padded with zeros on the right only, so frame t sees frames
    t..t+context and never the past of another frame's future. Frames past an utterance's end are zeroed
    first, so the lookahead never reads padding.
    """

    def __init__(self, features: int, context: int):
        super().__init__()
        if context < 1:
            raise ValueError(f"lookahead context must be >= 1 frame, got {context}")
        self.context = context
        self.weight = nn.Parameter(torch.randn(features, context + 1) / math.sqrt(context + 1))

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        x = x * lengths_to_mask(lengths, x.shape[1])[..., None]  # (B, T, H)
        padded = F.pad(x.transpose(1, 2), (0, self.context))  # (B, H, T + context)
        out = F.conv1d(padded, self.weight.unsqueeze(1), groups=x.shape[-1])  # (B, H, T)
        return out.transpose(1, 2)  # (B, T, H)


# ----------------------------------------------------------------------------------------------------------
# 6. The model
# ----------------------------------------------------------------------------------------------------------


@dataclass
class DS2Config:
    """Architecture of a Deep Speech 2 model. Defaults are the lesson's CPU-sized model.

    The paper's English models use 1-3 conv layers (32, 32, 96 channels) and up to 7 recurrent layers
    (Tables 1-4 topics); our fact sheet does not give their recurrent widths. We keep the layer types,
    kernels and strides and use fewer, narrower layers, which buys more updates per CPU-minute.
    """

    sample_rate: int = SAMPLE_RATE
    window_ms: float = 20.0  # 20 ms windows ... (§3.1, recalled)
    stride_ms: float = 10.0  # ... with a 10 ms stride
    spectrogram_floor_db: float | None = 50.0  # see normalize_spectrogram: clean vs noisy mismatch
    normalize: str = "utterance"  # "utterance": each utterance's own statistics; "causal": streamable
    normalize_prior: tuple[float, float, float] | None = (
        None  # "causal": the training set's (mean, var, peak)
    )
    conv_channels: tuple[int, ...] = (8, 8)  # one entry per conv layer (1-3); the paper: (32, 32, 96)
    conv_type: str = "2d"  # "2d": frequency x time; "1d": time only, bins as channels (Table 4 topic)
    conv_time_stride: int = 2  # the first conv layer's stride in time (§3.6): T' is about T / this
    rnn_type: str = "gru"  # "gru" (§3.4, the stronger of the two in Table 3) or "rnn" (clipped ReLU)
    rnn_layers: int = 2  # the paper: up to 7
    rnn_hidden: int = 128
    bidirectional: bool = True  # False: forward only, for streaming (§3.7)
    lookahead_context: int = 0  # frames of future context for unidirectional models (§3.7); 0 = none
    batch_norm: bool = True  # sequence-wise BN in the recurrent layers and BN in the conv layers (§3.2)
    alphabet: Alphabet = ENGLISH  # what the output classes stand for (section 1; §3.9: Mandarin)
    num_classes: int | None = None  # the alphabet's symbols + blank; a given value must agree with it

    def __post_init__(self):
        self.conv_channels = tuple(self.conv_channels)
        if isinstance(self.alphabet, dict):  # from a checkpoint or a JSON record
            self.alphabet = Alphabet(**self.alphabet)
        if self.num_classes is None:
            self.num_classes = self.alphabet.num_classes
        if self.normalize_prior is not None:
            self.normalize_prior = tuple(float(v) for v in self.normalize_prior)
        problems = []
        if self.normalize not in NORMALIZATIONS:
            problems.append(f"normalize must be one of {NORMALIZATIONS}, got {self.normalize!r}")
        if self.normalize_prior is not None and (
            len(self.normalize_prior) != 3 or self.normalize_prior[1] <= 0
        ):
            problems.append(f"normalize_prior must be (mean, variance > 0, peak), got {self.normalize_prior}")
        if not 1 <= len(self.conv_channels) <= 3:
            problems.append(f"conv_channels must list 1 to 3 layers (§3.5), got {self.conv_channels}")
        if any(int(c) < 1 for c in self.conv_channels):
            problems.append(f"every conv layer needs at least 1 channel, got {self.conv_channels}")
        if self.conv_type not in ("1d", "2d"):
            problems.append(f"conv_type must be '1d' or '2d', got {self.conv_type!r}")
        if not 1 <= self.conv_time_stride <= PAPER_CONV_KERNELS[0][1]:
            problems.append(
                f"conv_time_stride must be 1 to {PAPER_CONV_KERNELS[0][1]} (the kernel's width in time), "
                f"got {self.conv_time_stride}"
            )
        if self.rnn_type not in ("gru", "rnn"):
            problems.append(f"rnn_type must be 'gru' or 'rnn', got {self.rnn_type!r}")
        if self.rnn_layers < 1:
            problems.append(f"rnn_layers must be >= 1, got {self.rnn_layers}")
        if self.rnn_hidden < 1:
            problems.append(f"rnn_hidden must be >= 1, got {self.rnn_hidden}")
        if self.lookahead_context < 0:
            problems.append(f"lookahead_context must be >= 0, got {self.lookahead_context}")
        if self.bidirectional and self.lookahead_context > 0:
            problems.append(
                "lookahead convolution (§3.7) is for unidirectional models; set bidirectional=False "
                "or lookahead_context=0"
            )
        if self.num_classes != self.alphabet.num_classes:
            problems.append(
                f"num_classes must be {self.alphabet.num_classes} (the {self.alphabet.name} alphabet and the "
                f"blank), got {self.num_classes}"
            )
        if problems:
            raise ValueError("invalid DS2Config: " + "; ".join(problems))
        frame_parameters(self.sample_rate, self.window_ms, self.stride_ms)

    @property
    def num_freq(self) -> int:
        window, _ = frame_parameters(self.sample_rate, self.window_ms, self.stride_ms)
        return window // 2 + 1

    def to_dict(self) -> dict:
        prior = None if self.normalize_prior is None else list(self.normalize_prior)
        channels, alphabet = list(self.conv_channels), self.alphabet.to_dict()
        return {**asdict(self), "conv_channels": channels, "normalize_prior": prior, "alphabet": alphabet}

    @property
    def causal_prior(self) -> tuple[float, float, float] | None:
        """What ``featurize`` takes as ``prior``: the prior of a causal model, None for per-utterance."""
        if self.normalize == "causal" and self.normalize_prior is None:
            raise ValueError(
                "this causal model has no normalisation prior yet: estimate it from the training set "
                "(estimate_causal_prior) and set DS2Config.normalize_prior"
            )
        return self.normalize_prior if self.normalize == "causal" else None


class DeepSpeech2(nn.Module):
    """Deep Speech 2 (§3, Figure 1): conv front-end -> recurrent stack -> [lookahead] -> FC -> log-softmax.

    ``forward(spectrograms (B, F, T), lengths (B,)) -> (log_probs (B, T', C), out_lengths (B,))``
    with ``T'`` from ``output_lengths``. ``log_probs`` are per-frame log-probabilities over the alphabet's
    ``C = config.num_classes`` classes (blank = 0; 29 for English), batch-first; transpose to ``(T', B, C)`` for ``F.ctc_loss``.
    """

    def __init__(self, config: DS2Config | None = None):
        super().__init__()
        self.config = config = config or DS2Config()
        self.conv = ConvFrontEnd(
            config.num_freq,
            config.conv_channels,
            config.batch_norm,
            config.conv_type,
            config.conv_time_stride,
        )
        layer_type = GRULayer if config.rnn_type == "gru" else SimpleRNNLayer
        sizes = [self.conv.output_features] + [config.rnn_hidden] * config.rnn_layers
        self.rnns = nn.ModuleList(
            layer_type(sizes[i], sizes[i + 1], config.bidirectional, config.batch_norm)
            for i in range(config.rnn_layers)
        )
        self.lookahead = (
            LookaheadConvolution(config.rnn_hidden, config.lookahead_context)
            if config.lookahead_context
            else None
        )
        self.fc = nn.Linear(config.rnn_hidden, config.num_classes)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Output frames for input frames: only the conv strides change the length."""
        return self.conv.output_lengths(lengths)

    def forward(self, spectrograms: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        if spectrograms.dim() != 3 or spectrograms.shape[1] != self.config.num_freq:
            raise ValueError(
                f"expected spectrograms of shape (B, {self.config.num_freq}, T), got {tuple(spectrograms.shape)}"
            )
        lengths = lengths.to(spectrograms.device)
        x, lengths = self.conv(spectrograms, lengths)  # (B, T', I = K * F')
        for rnn in self.rnns:
            x = rnn(x, lengths)  # (B, T', H)
        if self.lookahead is not None:
            x = self.lookahead(x, lengths)  # (B, T', H)
        logits = self.fc(x)  # (B, T', C)
        return F.log_softmax(logits, dim=-1), lengths

    def num_parameters(self) -> int:
        """Trainable parameters (a GRU's input bias is replaced by BatchNorm's shift, so not counted)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------------------------------------
# 7. CTC loss (§3.1; Graves et al. 2006)
# ----------------------------------------------------------------------------------------------------------
# CTC sums the probability of every frame-level alignment that collapses to the transcript. The paths
# run over the "blank-extended" label l' = (blank, y1, blank, y2, ..., yS, blank) of length 2S + 1.


def _padded_targets(targets: Tensor, target_lengths: Tensor) -> Tensor:
    """Targets given padded ``(B, S)`` or concatenated ``(sum S,)`` -> padded ``(B, S_max)``."""
    if targets.dim() == 2:
        return targets
    pieces = torch.split(targets, target_lengths.tolist())
    return nn.utils.rnn.pad_sequence(list(pieces), batch_first=True, padding_value=BLANK)


def ctc_min_frames(targets: Tensor, target_lengths: Tensor) -> Tensor:
    """Fewest frames a CTC path for each transcript needs: ``S`` plus one blank per repeated pair."""
    padded = _padded_targets(targets, target_lengths)
    positions = torch.arange(padded.shape[1], device=padded.device)[None, :]
    valid_pairs = positions[:, 1:] < target_lengths[:, None]
    repeats = ((padded[:, 1:] == padded[:, :-1]) & valid_pairs).sum(dim=1)
    return target_lengths + repeats


def check_ctc_lengths(input_lengths: Tensor, targets: Tensor, target_lengths: Tensor) -> None:
    """Raise ``ValueError`` naming every utterance too short for its transcript under CTC.

    Such an utterance has no valid alignment: ``F.ctc_loss`` would return inf (or 0 with
    ``zero_infinity=True``, silently teaching nothing). Better to say so.
    """
    needed = ctc_min_frames(targets, target_lengths.to(targets.device)).cpu()
    have = input_lengths.cpu()
    short = (have < needed).nonzero().flatten().tolist()
    if short:
        details = ", ".join(f"#{i}: {int(have[i])} frames < {int(needed[i])} needed" for i in short[:5])
        raise ValueError(
            f"{len(short)} utterance(s) are too short for their transcripts under CTC ({details}). "
            "Each character needs an output frame (plus a blank between repeated letters): use longer "
            "audio, shorter transcripts, or fewer time strides in the conv front-end."
        )


def ctc_loss(log_probs: Tensor, targets: Tensor, input_lengths: Tensor, target_lengths: Tensor) -> Tensor:
    """CTC loss via ``F.ctc_loss``: mean over the batch of per-utterance negative log-likelihoods.

    Args:
        log_probs: ``(B, T, C)`` log-probabilities, batch-first as the model emits them.
        targets: padded ``(B, S)`` or concatenated ``(sum S,)`` label ids (no blanks).
        input_lengths, target_lengths: ``(B,)``.

    Note the reduction: ``F.ctc_loss(reduction="mean")`` also divides each loss by its target length;
    we do not, so the loss is the average of ``-log p(y|x)`` (nats per utterance).

    A PyTorch detail worth knowing: the gradient ``F.ctc_loss`` returns for ``log_probs`` is
    ``exp(log_probs) - gamma``, the gradient for the *logits* of a log_softmax, not ``-gamma``. It is
    right once it flows back through ``log_softmax`` (as in the model), but compare it with
    ``ctc_loss_from_scratch`` (whose gradient is exact for ``log_probs``) at the logits, not at ``log_probs``.
    """
    check_ctc_lengths(input_lengths, targets, target_lengths)
    losses = F.ctc_loss(
        log_probs.transpose(0, 1),  # (T, B, C) at the CTC boundary
        targets,
        input_lengths,
        target_lengths,
        blank=BLANK,
        reduction="none",
    )  # (B,)
    return losses.mean()


NEG_INF = -1e30  # a finite "minus infinity": log-space sums of impossible paths stay finite, so no NaN grads


def ctc_alpha(log_probs_ext: Tensor, can_skip: Tensor) -> Tensor:
    """The CTC forward (alpha) recursion in log space (paper_notes.md derives it).

    ``alpha_t(s) = log_probs_ext[t, s] + logsumexp(alpha_{t-1}(s), alpha_{t-1}(s-1), alpha_{t-1}(s-2))``
    where the ``s-2`` term is allowed only when ``l'_s`` is a label different from ``l'_{s-2}``
    (``can_skip``). Args: ``log_probs_ext (B, T, L)`` emission log-probs of each extended-label position,
    ``can_skip (B, L)``. Returns all alphas ``(B, T, L)``.
    """
    batch, frames, length = log_probs_ext.shape
    skip_penalty = torch.where(can_skip, 0.0, NEG_INF).to(log_probs_ext.dtype)  # (B, L)
    # Time-major storage, so each step reads and writes contiguous rows; two always-impossible positions
    # on the left, so s - 1 and s - 2 are plain slices of the previous row.
    emissions = log_probs_ext.transpose(0, 1).contiguous()  # (T, B, L)
    alphas = log_probs_ext.new_full((frames, batch, length + 2), NEG_INF)
    alphas[0, :, 2:4] = emissions[0, :, :2]  # a path starts with the first blank or the first label
    for t in range(1, frames):
        previous = alphas[t - 1]  # (B, L + 2)
        paths_in = torch.stack([previous[:, 2:], previous[:, 1:-1], previous[:, :-2] + skip_penalty])
        alphas[t, :, 2:] = torch.logsumexp(paths_in, dim=0) + emissions[t]  # (B, L)
    return alphas[:, :, 2:].transpose(0, 1)  # (B, T, L)


def ctc_beta(log_probs_ext: Tensor, can_skip: Tensor, input_lengths: Tensor, ext_lengths: Tensor) -> Tensor:
    """The CTC backward (beta) recursion in log space: the alpha recursion's mirror image.

    ``beta_t(s) = log_probs_ext[t, s] + logsumexp(beta_{t+1}(s), beta_{t+1}(s+1), beta_{t+1}(s+2))``
    where the ``s+2`` term is allowed only when ``can_skip[s+2]``, starting at each utterance's last frame
    ``T_b - 1`` in its last two states (the final blank and the final label). Args as ``ctc_alpha``, plus
    ``input_lengths (B,)`` and ``ext_lengths (B,) = 2 S + 1``. Returns all betas ``(B, T, L)``; frames and
    states past an utterance's end hold nothing meaningful.
    """
    batch, frames, length = log_probs_ext.shape
    impossible = log_probs_ext.new_full((batch, 2), NEG_INF)
    skip_penalty = torch.where(can_skip, 0.0, NEG_INF).to(log_probs_ext.dtype)  # (B, L): into state s
    skip_to = torch.cat([skip_penalty[:, 2:], impossible], dim=1)  # (B, L): from s into s + 2
    # A path leaving the last frame is done if it is in a final state: log 1 there, log 0 elsewhere. The
    # final label first, then the final blank, so an empty transcript (L = 1) keeps its one final state.
    rows = torch.arange(batch, device=log_probs_ext.device)
    done = log_probs_ext.new_full((batch, length), NEG_INF)
    done[rows, (ext_lengths - 2).clamp(min=0)] = torch.where(ext_lengths > 1, 0.0, NEG_INF).to(done.dtype)
    done[rows, ext_lengths - 1] = 0.0
    # Time-major storage; two always-impossible positions on the right, so s + 1 and s + 2 are slices.
    emissions = log_probs_ext.transpose(0, 1).contiguous()  # (T, B, L)
    betas = log_probs_ext.new_full((frames + 1, batch, length + 2), NEG_INF)  # row T: after the end
    for t in reversed(range(frames)):
        following = betas[t + 1]  # (B, L + 2)
        paths_out = torch.stack([following[:, :-2], following[:, 1:-1], following[:, 2:] + skip_to])
        rest = torch.where((input_lengths == t + 1)[:, None], done, torch.logsumexp(paths_out, dim=0))
        betas[t, :, :-2] = rest + emissions[t]  # (B, L)
    return betas[:frames, :, :-2].transpose(0, 1)  # (B, T, L)


class _CTCFromScratch(torch.autograd.Function):
    """CTC negative log-likelihood per utterance with the alpha-beta gradient (Graves et al. 2006, §4).

    ``nll = -log(alpha_T(L) + alpha_T(L - 1))`` from the alphas; with the betas as well, the occupancy of
    class k at frame t is ``gamma_t(k) = sum_{s: l'_s = k} exp(alpha_t(s) + beta_t(s) - log y_t(l'_s) + nll)``
    and ``d nll / d log y_t(k) = -gamma_t(k)``.
    """

    @staticmethod
    def forward(ctx, log_probs, extended, can_skip, input_lengths, ext_lengths):
        batch, frames, _ = log_probs.shape
        length = extended.shape[1]
        lp_ext = log_probs.gather(2, extended[:, None, :].expand(batch, frames, length))  # (B, T, L)
        alphas = ctc_alpha(lp_ext, can_skip)  # (B, T, L)
        betas = ctc_beta(lp_ext, can_skip, input_lengths, ext_lengths)  # (B, T, L)
        rows = torch.arange(batch, device=log_probs.device)
        last = alphas[rows, input_lengths - 1]  # (B, L) at each utterance's final frame
        end_blank = last[rows, ext_lengths - 1]
        end_label = torch.where(ext_lengths > 1, last[rows, (ext_lengths - 2).clamp(min=0)], NEG_INF)
        nll = -torch.logaddexp(end_blank, end_label)  # (B,)
        time = torch.arange(frames, device=log_probs.device)[None, :]  # (1, T)
        position = torch.arange(length, device=log_probs.device)[None, :]  # (1, L)
        valid = (time < input_lengths[:, None])[..., None] & (position < ext_lengths[:, None])[:, None, :]
        ctx.save_for_backward(lp_ext, alphas, betas, valid, extended, nll)
        ctx.num_classes = log_probs.shape[2]
        return nll

    @staticmethod
    def backward(ctx, grad_nll):
        lp_ext, alphas, betas, valid, extended, nll = ctx.saved_tensors
        batch, frames, _ = lp_ext.shape
        log_gamma = alphas + betas - lp_ext + nll[:, None, None]
        gamma = torch.where(valid, log_gamma.exp(), 0.0)  # (B, T, L)
        grad = lp_ext.new_zeros(batch, frames, ctx.num_classes)
        grad.scatter_add_(2, extended[:, None, :].expand(-1, frames, -1), gamma)  # sum over s with l'_s = k
        return -grad * grad_nll[:, None, None], None, None, None, None


def ctc_loss_from_scratch(
    log_probs: Tensor, targets: Tensor, input_lengths: Tensor, target_lengths: Tensor
) -> Tensor:
    """CTC loss computed by the alpha recursion (forward) and beta recursion (backward), in log space.

    Same signature and reduction as ``ctc_loss``: ``(B, T, C)`` log-probs, padded or concatenated
    targets; returns the batch mean of ``-log p(y|x)``. Matches ``F.ctc_loss`` in value and gradient
    (tests/test_implementation.py). Gradients are exact with respect to ``log_probs`` themselves.
    """
    check_ctc_lengths(input_lengths, targets, target_lengths)
    device = log_probs.device
    padded = _padded_targets(targets, target_lengths).to(device)  # (B, S)
    batch, max_label = padded.shape
    target_lengths = target_lengths.to(device)
    input_lengths = input_lengths.to(device)
    # Blank-extended label l' = (blank, y1, blank, y2, ..., yS, blank): (B, 2S + 1).
    extended = torch.full((batch, 2 * max_label + 1), BLANK, dtype=torch.long, device=device)
    extended[:, 1::2] = padded
    ext_lengths = 2 * target_lengths + 1
    # l'_{s-2} -> l'_s may skip the blank in between only if l'_s is a label that differs from l'_{s-2}.
    can_skip = torch.zeros_like(extended, dtype=torch.bool)
    can_skip[:, 2:] = (extended[:, 2:] != BLANK) & (extended[:, 2:] != extended[:, :-2])
    nll = _CTCFromScratch.apply(log_probs, extended, can_skip, input_lengths, ext_lengths)
    return nll.mean()


# ----------------------------------------------------------------------------------------------------------
# 8. Decoders (§3.8)
# ----------------------------------------------------------------------------------------------------------


# --- 8.1 Greedy decoding: the best path ---


def greedy_decode(
    log_probs: Tensor, lengths: Tensor | None = None, alphabet: Alphabet = ENGLISH
) -> list[str]:
    """Best-path decoding: argmax per frame, collapse repeats, drop blanks.

    Args:
        log_probs: ``(B, T, C)``, or ``(T, C)`` for one utterance (returns a one-item list).
        lengths: valid frames ``(B,)``; frames past them are ignored.
        alphabet: what the classes stand for (the model's ``config.alphabet``).
    """
    if log_probs.dim() == 2:
        log_probs = log_probs.unsqueeze(0)
    best = log_probs.argmax(dim=-1).cpu()  # (B, T)
    if lengths is None:
        lengths = torch.full((best.shape[0],), best.shape[1])
    texts = []
    for path, length in zip(best, lengths.tolist(), strict=True):
        path = path[:length]
        keep = torch.ones_like(path, dtype=torch.bool)
        keep[1:] = path[1:] != path[:-1]  # collapse repeats ...
        texts.append(alphabet.decode(path[keep & (path != BLANK)]))  # ... then drop blanks
    return texts


# --- 8.2 CTC prefix beam search with the language model (§3.8) ---


class BeamHypothesis(NamedTuple):
    """One result of the prefix beam search; log-probabilities are natural logs."""

    text: str
    ctc_log_prob: float  # log p_ctc(y|x): the sum over the alignments the search kept
    lm_log_prob: float  # log p_lm(y), including the end of sentence
    word_count: int  # the LM's tokens: words, or characters for an alphabet without spaces (Mandarin)
    score: float  # Q(y) = ctc_log_prob + alpha * lm_log_prob + beta * word_count (§3.8)


def log_add(a: float, b: float) -> float:
    """``log(exp(a) + exp(b))`` for Python floats, exact for ``-inf`` (probability 0)."""
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    high, low = (a, b) if a > b else (b, a)
    return high + math.log1p(math.exp(low - high))


def prefix_beam_search_nbest(
    log_probs: Tensor,
    beam_width: int = 32,
    lm: NGramLM | None = None,
    alpha: float = 0.0,
    beta: float = 0.0,
    prune_log_prob: float = -8.0,
    max_labels_per_frame: int | None = 12,
    alphabet: Alphabet = ENGLISH,
) -> list[BeamHypothesis]:
    """CTC prefix beam search with optional LM shallow fusion (§3.8); the final beam, best first.

    For each prefix y we keep two numbers: the probability of all kept alignments of frames 1..t that
    collapse to y and end in a blank, ``p_b``, and those ending in y's last label, ``p_nb``. Extending by
    a label equal to y's last needs a blank in between (taken from ``p_b``), which is how a doubled
    letter like "ll" is produced; repeating the last label without a blank stays on y (``p_nb``).

    Beams are ranked by ``Q(y) = log p_ctc(y|x) + alpha log p_lm(y) + beta word_count(y)``, where the LM
    term covers the completed words (each scored when the space after it arrives) and, at the end, the
    last word and the end of sentence. With an alphabet that does not separate words by spaces (Mandarin,
    §3.9) the LM is a character LM and every emitted character is a completed token, scored at once, and
    ``beta`` rewards characters rather than words. The CTC term is kept separate, so the ``ctc_log_prob`` reported
    is exact when nothing was pruned and a lower bound otherwise. Spaces are text, not just labels: a
    leading space is folded into the blank and a doubled space into one, so each result is a distinct
    text whose probability sums every kept alignment that reads as it.

    Args:
        log_probs: ``(T, C)`` log-probabilities of one utterance.
        beam_width: prefixes kept after every frame.
        lm: an ``NGramLM`` (or anything with ``sentence_log_prob(words, eos)`` in natural log), or None.
        alpha: LM weight; beta: word insertion bonus (the paper's alpha and beta).
        prune_log_prob: skip labels whose log-probability at a frame is below this (speed);
            ``-inf`` considers every label.
        max_labels_per_frame: consider at most this many of a frame's most probable labels (speed on
            unconfident, e.g. untrained, models); ``None`` for no cap.
        alphabet: what the classes stand for (the model's ``config.alphabet``) and what the LM's tokens are.
    """
    if np.ndim(log_probs) != 2:
        raise ValueError(f"expected (T, C) log-probabilities of one utterance, got {tuple(log_probs.shape)}")
    if beam_width < 1:
        raise ValueError(f"beam_width must be >= 1, got {beam_width}")
    if isinstance(log_probs, Tensor):
        frames = log_probs.detach().double().cpu().numpy()
    else:  # a numpy array (evaluate's worker processes get these: no torch kernels after a fork)
        frames = np.asarray(log_probs, dtype=np.float64)
    if frames.shape[1] != alphabet.num_classes:
        raise ValueError(
            f"{frames.shape[1]} classes, but the {alphabet.name} alphabet has {alphabet.num_classes}"
        )
    space = alphabet.ids.get(" ")  # None for an alphabet without spaces
    use_lm = lm is not None and (alpha != 0.0 or beta != 0.0)

    @functools.cache
    def lm_part(prefix: tuple[int, ...], final: bool) -> tuple[float, int]:
        """(log p_lm of the completed tokens [+ last word + </s> if final], number of those tokens)."""
        text = alphabet.decode(prefix)
        words = alphabet.tokens(text)
        if not final and alphabet.spaced and words and not text.endswith(" "):
            words = words[:-1]  # the last word is still being spelt
        if lm is None:
            return 0.0, len(words)
        return words_log_prob(tuple(words), final), len(words)

    @functools.cache
    def words_log_prob(words: tuple[str, ...], eos: bool) -> float:
        """ln p_lm(words [+ </s>]), built word by word on the cached score of the words before."""
        if not words:
            return lm.log_prob(EOS, (BOS,)) if eos else 0.0
        total = words_log_prob(words[:-1], False) + lm.log_prob(words[-1], (BOS, *words[:-1]))
        return total + (lm.log_prob(EOS, (BOS, *words)) if eos else 0.0)

    def score(prefix, p_b, p_nb, final=False):
        ctc = log_add(p_b, p_nb)
        if not use_lm:
            return ctc
        lm_log_prob, words = lm_part(prefix, final)
        return ctc + alpha * lm_log_prob + beta * words

    label_limit = max_labels_per_frame or frames.shape[1]
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, -math.inf)}  # prefix -> (p_b, p_nb)
    for frame in frames:
        most_probable = np.argsort(-frame, kind="stable")[:label_limit].tolist()
        candidates = [k for k in most_probable if frame[k] >= prune_log_prob] or most_probable[:1]
        next_beams: dict[tuple[int, ...], list[float]] = defaultdict(lambda: [-math.inf, -math.inf])
        for prefix, (p_b, p_nb) in beams.items():
            p_total = log_add(p_b, p_nb)
            last = prefix[-1] if prefix else None
            for k in candidates:
                p_k = frame[k]
                if k == BLANK:  # y stays y, now ending in a blank
                    entry = next_beams[prefix]
                    entry[0] = log_add(entry[0], p_total + p_k)
                    continue
                if k == space and last is None:
                    # A leading space adds nothing to the text: count it like a blank.
                    entry = next_beams[prefix]
                    entry[0] = log_add(entry[0], p_total + p_k)
                    continue
                if k == last:
                    same = next_beams[prefix]
                    same[1] = log_add(same[1], p_nb + p_k)  # "l" + "l" -> "l" (repeat collapses)
                    # "l" + blank + "l" -> "ll"; but " " + blank + " " is a double space: the same text.
                    entry = next_beams[prefix if k == space else (*prefix, k)]
                    entry[1] = log_add(entry[1], p_b + p_k)
                else:
                    entry = next_beams[(*prefix, k)]
                    entry[1] = log_add(entry[1], p_total + p_k)
        alive = [(prefix, probs) for prefix, probs in next_beams.items() if max(probs) > -math.inf]
        ranked = sorted(alive, key=lambda item: score(item[0], *item[1]), reverse=True)
        beams = {prefix: (p_b, p_nb) for prefix, (p_b, p_nb) in ranked[:beam_width]}

    # "the cat" and "the cat " read the same: merge texts, summing their CTC probabilities.
    merged: dict[str, tuple[float, tuple[int, ...]]] = {}
    for prefix, (p_b, p_nb) in beams.items():
        text = alphabet.decode(prefix).strip()
        previous = merged.get(text, (-math.inf, prefix))[0]
        merged[text] = (log_add(previous, log_add(p_b, p_nb)), prefix)
    results = []
    for text, (ctc, prefix) in merged.items():
        lm_log_prob, words = lm_part(prefix, True) if use_lm else (0.0, len(alphabet.tokens(text)))
        total = ctc + (alpha * lm_log_prob + beta * words if use_lm else 0.0)
        results.append(BeamHypothesis(text, ctc, lm_log_prob, words, total))
    return sorted(results, key=lambda h: h.score, reverse=True)


def prefix_beam_search(
    log_probs: Tensor,
    beam_width: int = 32,
    lm: NGramLM | None = None,
    alpha: float = 0.0,
    beta: float = 0.0,
    prune_log_prob: float = -8.0,
    max_labels_per_frame: int | None = 12,
    alphabet: Alphabet = ENGLISH,
) -> str:
    """The best transcript of one utterance ``(T, C)`` under CTC prefix beam search (§3.8).

    See ``prefix_beam_search_nbest`` for the algorithm and arguments.
    """
    return prefix_beam_search_nbest(
        log_probs, beam_width, lm, alpha, beta, prune_log_prob, max_labels_per_frame, alphabet
    )[0].text


# --- 8.3 The production decoder ---
# ``prefix_beam_search`` is the lesson's reference: every line of it can be read and stepped through. It
# scores the LM in Python, fine for our grammar's few hundred words and far too slow for a LibriSpeech-
# sized LM. ``production_decoder.flashlight_decoder`` wraps torchaudio's C++ beam search (flashlight-text
# and KenLM) behind the same interface, ``decoder(log_probs (T, C)) -> str``, which ``evaluate`` and
# ``transcribe`` accept (``train_minimal.py --decoder flashlight``).


# ----------------------------------------------------------------------------------------------------------
# 9. Language model (§3.8): a word or character n-gram with interpolated Kneser-Ney smoothing
# ----------------------------------------------------------------------------------------------------------
# The paper decodes with an n-gram LM (§3.8; a KenLM-trained 5-gram for English, as recalled). We train a small one on the
# synthetic corpus. Its tokens are the alphabet's (``Alphabet.tokens``): words in English; in Mandarin, which
# writes no spaces, characters, so the same class is a character LM and the beam search scores it at every
# emitted character (§3.9's character-level decoding, as recalled). Interpolated Kneser-Ney (Chen & Goodman 1998) is stored the way ARPA files store any
# back-off model: for every seen n-gram its (interpolated) probability, and for every seen context a
# back-off weight; an unseen n-gram falls back to the shorter context times that weight. So the same
# object reads and writes ARPA files, and a KenLM model drops in.

_LOG10 = math.log(10.0)
_KENLM_BINARY_MAGIC = b"mmap lm http://kheafield.com/code"  # the first bytes of a KenLM binary file


class NGramLM:
    """Word n-gram language model in ARPA back-off form.

    ``log_prob(word, context)`` and ``sentence_log_prob`` / ``score`` return **natural** logs (the beam
    search works in nats); ARPA files hold log10, converted on read and write. Words outside the
    vocabulary are scored as ``<unk>``.
    """

    def __init__(
        self, order: int, probs: dict[tuple[str, ...], float], backoffs: dict[tuple[str, ...], float]
    ):
        """``probs``/``backoffs``: n-gram tuple -> log10 value, as in an ARPA file."""
        if order < 1:
            raise ValueError(f"order must be >= 1, got {order}")
        self.order = order
        self.probs = probs
        self.backoffs = backoffs
        self.vocabulary = sorted({ngram[0] for ngram in probs if len(ngram) == 1})
        if UNK not in self.vocabulary:
            raise ValueError("the language model has no <unk> unigram; it cannot score unseen words")

    # --- training ------------------------------------------------------------------------------------
    @classmethod
    def train(cls, sentences: Iterable[str], order: int = 3, alphabet: Alphabet = ENGLISH) -> NGramLM:
        """Estimate an interpolated Kneser-Ney n-gram LM from sentences, split into ``alphabet.tokens``:
        words for English, characters for an alphabet without spaces (a character LM, §3.9).

        For an n-gram ``(h, w)`` at order k, with adjusted counts ``a`` (raw counts at the top order and
        for n-grams starting with ``<s>``; below that, the number of distinct words seen before it):

            p(w | h) = max(a(h, w) - D_k, 0) / a(h)  +  D_k N1+(h .) / a(h) * p(w | h[1:])

        and the unigram level interpolates with the uniform distribution over the vocabulary (which is
        where ``<unk>`` gets its probability). ``D_k = n1 / (n1 + 2 n2)`` from the count-of-counts.
        """
        if order < 1:
            raise ValueError(f"order must be >= 1, got {order}")
        sentences = [alphabet.tokens(s) for s in sentences]
        sentences = [s for s in sentences if s]
        if not sentences:
            raise ValueError("cannot train a language model on no text")
        counts: list[dict[tuple[str, ...], int]] = [defaultdict(int) for _ in range(order + 1)]
        for words in sentences:
            tokens = [BOS, *words, EOS]
            for k in range(1, order + 1):
                for i in range(len(tokens) - k + 1):
                    counts[k][tuple(tokens[i : i + k])] += 1
        # Adjusted (Kneser-Ney continuation) counts.
        adjusted: list[dict[tuple[str, ...], int]] = [defaultdict(int) for _ in range(order + 1)]
        adjusted[order] = dict(counts[order])
        for k in range(1, order):
            left_contexts: dict[tuple[str, ...], int] = defaultdict(int)
            for ngram in counts[k + 1]:
                left_contexts[ngram[1:]] += 1  # one more distinct word seen before ngram[1:]
            for ngram, count in counts[k].items():
                adjusted[k][ngram] = count if ngram[0] == BOS else left_contexts[ngram]
        adjusted[1].pop((BOS,), None)  # <s> is only ever a context, never predicted
        vocabulary = sorted({w for (w,) in adjusted[1]} | {UNK, EOS})

        def discount(k: int) -> float:
            values = list(adjusted[k].values())
            n1, n2 = values.count(1), values.count(2)
            return n1 / (n1 + 2 * n2) if n1 and n2 else 0.5

        probs: dict[tuple[str, ...], float] = {}
        backoffs: dict[tuple[str, ...], float] = {}
        # Unigrams: discounted continuation counts, interpolated with uniform over the vocabulary.
        d1 = discount(1)
        total1 = sum(adjusted[1].values())
        gamma1 = d1 * len(adjusted[1]) / total1
        unigram = {
            w: max(adjusted[1].get((w,), 0) - d1, 0.0) / total1 + gamma1 / len(vocabulary) for w in vocabulary
        }
        for w, p in unigram.items():
            probs[(w,)] = math.log10(p)
        probs[(BOS,)] = -99.0  # ARPA convention: <s> is never predicted

        def lower_prob(ngram: tuple[str, ...]) -> float:
            """p(w | h[1:]) under the already-built lower orders (back-off form), as a probability."""
            return 10.0 ** cls._log10_backoff(probs, backoffs, ngram[-1], ngram[:-1])

        for k in range(2, order + 1):
            dk = discount(k)
            by_context: dict[tuple[str, ...], list[tuple[str, int]]] = defaultdict(list)
            for ngram, a in adjusted[k].items():
                by_context[ngram[:-1]].append((ngram[-1], a))
            for context, followers in by_context.items():
                total = sum(a for _, a in followers)
                gamma = dk * len(followers) / total
                for word, a in followers:
                    p = max(a - dk, 0.0) / total + gamma * lower_prob(context[1:] + (word,))
                    probs[context + (word,)] = math.log10(p)
                backoffs[context] = math.log10(gamma) if gamma > 0 else -99.0
        return cls(order, probs, backoffs)

    # --- scoring -------------------------------------------------------------------------------------
    @staticmethod
    def _log10_backoff(probs, backoffs, word: str, context: tuple[str, ...]) -> float:
        """ARPA back-off: longest stored (context..., word), times the back-off weights skipped."""
        penalty = 0.0
        for start in range(len(context) + 1):
            history = context[start:]
            stored = probs.get(history + (word,))
            if stored is not None:
                return stored + penalty
            penalty += backoffs.get(history, 0.0)
        raise KeyError(word)  # unreachable when every vocabulary word has a unigram

    def log_prob(self, word: str, context: Sequence[str] = ()) -> float:
        """``ln p(word | context)``; context is the preceding words (``<s>`` first for a sentence start)."""
        if (word,) not in self.probs or word == BOS:
            word = UNK
        context = (
            tuple(w if (w,) in self.probs else UNK for w in context)[-(self.order - 1) :]
            if self.order > 1
            else ()
        )
        return self._log10_backoff(self.probs, self.backoffs, word, context) * _LOG10

    def sentence_log_prob(self, words: Sequence[str], eos: bool = True) -> float:
        """``ln p(words)`` from the start of a sentence, with ``</s>`` at the end if ``eos``."""
        history = [BOS]
        total = 0.0
        for word in [*words, EOS] if eos else list(words):
            total += self.log_prob(word, history)
            history.append(word)
        return total

    def score(self, sentence: str, eos: bool = True, alphabet: Alphabet = ENGLISH) -> float:
        """``ln p(sentence)`` (natural log) with ``<s>`` and ``</s>``; tokens as ``alphabet.tokens``."""
        return self.sentence_log_prob(alphabet.tokens(sentence), eos=eos)

    def check_alphabet(self, alphabet: Alphabet) -> None:
        """Refuse an LM whose tokens the alphabet cannot write (a word LM for a Mandarin model, a character
        LM for an English one): most of its vocabulary must be spellable, one character each if unspaced."""
        tokens = [t for t in self.vocabulary if t not in (BOS, EOS, UNK)]
        foreign = [
            t
            for t in tokens
            if alphabet.outside(alphabet.normalize(t)) or (not alphabet.spaced and len(t) != 1)
        ]
        if len(foreign) > len(tokens) / 2:
            kind = "words" if alphabet.spaced else "single characters"
            raise ValueError(
                f"the language model does not fit the model's {alphabet.name} alphabet: {len(foreign)} of its "
                f"{len(tokens)} tokens are not {kind} of it (e.g. {foreign[:3]}); decode with the LM trained "
                "for this model's language (the run's own lm.arpa)"
            )

    # --- ARPA files ----------------------------------------------------------------------------------
    def to_arpa(self, path: str | os.PathLike) -> None:
        """Write the model as an ARPA file (log10), atomically: a temporary file, then a rename."""
        by_order: dict[int, list[tuple[str, ...]]] = defaultdict(list)
        for ngram in self.probs:
            by_order[len(ngram)].append(ngram)
        lines = ["", "\\data\\"]
        lines += [f"ngram {k}={len(by_order[k])}" for k in range(1, self.order + 1)]
        for k in range(1, self.order + 1):
            lines += ["", f"\\{k}-grams:"]
            for ngram in sorted(by_order[k]):
                line = f"{self.probs[ngram]:.7f}\t{' '.join(ngram)}"
                if ngram in self.backoffs and k < self.order:
                    line += f"\t{self.backoffs[ngram]:.7f}"
                lines.append(line)
        lines += ["", "\\end\\", ""]
        atomic_write_text(path, "\n".join(lines))

    @classmethod
    def from_arpa(cls, path: str | os.PathLike) -> NGramLM:
        """Read an ARPA file (as written by ``to_arpa``, KenLM's ``lmplz`` or SRILM)."""
        with open(path, "rb") as handle:
            if handle.read(len(_KENLM_BINARY_MAGIC)) == _KENLM_BINARY_MAGIC:
                raise ValueError(
                    f"{os.fspath(path)!r} is a KenLM binary file; NGramLM reads ARPA files only: decode "
                    "with flashlight_decoder (--decoder flashlight), or give the ARPA file"
                )
        probs: dict[tuple[str, ...], float] = {}
        backoffs: dict[tuple[str, ...], float] = {}
        order = 0
        current = 0
        try:
            with open(path, encoding="utf-8") as handle:
                for raw in handle:
                    line = raw.strip()
                    if not line or line == "\\data\\" or line.startswith("ngram "):
                        if line.startswith("ngram "):
                            order = max(order, int(line.split()[1].split("=")[0]))
                        continue
                    if line == "\\end\\":
                        break
                    if line.startswith("\\") and line.endswith("-grams:"):
                        current = int(line[1:].split("-")[0])
                        continue
                    fields = line.split()
                    ngram = tuple(fields[1 : 1 + current])
                    if current == 0 or len(ngram) != current:
                        raise ValueError(f"malformed line {line!r}")
                    probs[ngram] = float(fields[0])
                    if len(fields) > 1 + current:
                        backoffs[ngram] = float(fields[1 + current])
        except (UnicodeDecodeError, ValueError, IndexError) as error:
            raise ValueError(f"{path} is not a readable ARPA language model: {error}") from error
        if not probs:
            raise ValueError(f"{path} holds no n-grams; is it an ARPA file?")
        return cls(order, probs, backoffs)


# ----------------------------------------------------------------------------------------------------------
# 10. Metrics: edit distance, word and character error rates
# ----------------------------------------------------------------------------------------------------------


def edit_distance(ref: Sequence, hyp: Sequence) -> int:
    """Levenshtein distance: fewest substitutions, insertions and deletions turning ``ref`` into ``hyp``.

    Works on any sequences: strings (characters) or lists of words. O(len(ref) * len(hyp)) time,
    O(len(hyp)) memory.
    """
    previous = list(range(len(hyp) + 1))
    for i, ref_item in enumerate(ref, start=1):
        current = [i] + [0] * len(hyp)
        for j, hyp_item in enumerate(hyp, start=1):
            current[j] = min(
                previous[j] + 1,  # deletion
                current[j - 1] + 1,  # insertion
                previous[j - 1] + (ref_item != hyp_item),  # substitution or match
            )
        previous = current
    return previous[-1]


def edit_alignment(ref: Sequence, hyp: Sequence) -> list[tuple]:
    """One minimal alignment behind ``edit_distance``: ``(ref_item, hyp_item)`` pairs in order, with
    ``None`` for the missing side of an insertion or deletion. Pairs that differ are the edits, so you can
    see *which* characters were confused. Keeps the whole table: O(len(ref) * len(hyp)) memory."""
    rows, cols = len(ref) + 1, len(hyp) + 1
    table = [[i + j if i == 0 or j == 0 else 0 for j in range(cols)] for i in range(rows)]
    for i in range(1, rows):
        for j in range(1, cols):
            match = table[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1])
            table[i][j] = min(match, table[i - 1][j] + 1, table[i][j - 1] + 1)
    pairs, i, j = [], rows - 1, cols - 1
    while i > 0 or j > 0:  # walk back along one cheapest path
        if i > 0 and j > 0 and table[i][j] == table[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
            pairs.append((ref[i - 1], hyp[j - 1]))
            i, j = i - 1, j - 1
        elif i > 0 and table[i][j] == table[i - 1][j] + 1:
            pairs.append((ref[i - 1], None))  # deleted
            i -= 1
        else:
            pairs.append((None, hyp[j - 1]))  # inserted
            j -= 1
    return pairs[::-1]


def _as_list(texts: str | Sequence[str]) -> list[str]:
    return [texts] if isinstance(texts, str) else list(texts)


def word_error_rate(refs: str | Sequence[str], hyps: str | Sequence[str]) -> float:
    """Corpus WER: total word edits / total reference words (not a mean of per-utterance rates)."""
    refs, hyps = _as_list(refs), _as_list(hyps)
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    total = sum(len(r.split()) for r in refs)
    if total == 0:
        raise ValueError("the references hold no words, so WER is undefined")
    return sum(edit_distance(r.split(), h.split()) for r, h in zip(refs, hyps, strict=True)) / total


def character_error_rate(refs: str | Sequence[str], hyps: str | Sequence[str]) -> float:
    """Corpus CER: total character edits (spaces included) / total reference characters."""
    refs, hyps = _as_list(refs), _as_list(hyps)
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    total = sum(len(r) for r in refs)
    if total == 0:
        raise ValueError("the references hold no characters, so CER is undefined")
    return sum(edit_distance(r, h) for r, h in zip(refs, hyps, strict=True)) / total


# ----------------------------------------------------------------------------------------------------------
# 11. Synthetic speech
# ----------------------------------------------------------------------------------------------------------
# Synthetic speech for training a Deep Speech 2 recogniser on a laptop CPU.
#
# Deep Speech 2 (Amodei et al. 2015) trains on thousands of hours of transcribed speech. A lesson cannot ship
# that, so this module *makes* speech-like audio from text, fast and deterministically, with enough of real
# speech's structure that recognising it teaches the same things: the recogniser has to find letters whose
# sound depends on their neighbours, separate speakers from content, and cope with noise.
#
# How the audio is made -- the source-filter model of speech (Fant 1960):
#
# * **Sources.** A glottal pulse train at the speaker's pitch (voicing), white noise passed through the
#   vocal tract (aspiration, as in "h"), and white noise shaped into a band of its own (frication, as in
#   "s", and the bursts of stops).
# * **Filter.** The vocal tract is a set of three resonances (formants F1-F3) whose frequencies move over
#   time. Each letter sets formant *targets*; the tracks are interpolated between targets, so formants glide
#   from one letter into the next (coarticulation): the same vowel sounds different after "b" and after "d".
#   The time-varying filter is applied frame by frame in the frequency domain (overlap-add, 16 ms frames).
# * **Phones.** Each letter a-z is a "phone" made of one to three parts (closure, burst, aspiration, steady
#   voicing...), with classes like real speech: vowels, glides and liquids, nasals, fricatives, stops. Their
#   distinguishing features differ by at least 150 Hz (three spectrogram bins at the lesson's 50 Hz
#   resolution) or in their shape over time. The apostrophe is a click; a space is a pause.
# * **Speakers.** Pitch (with declination and a slow contour), vocal tract length (scales every formant),
#   speaking rate (with per-letter jitter) and loudness differ between speakers.
# * **Sentences.** Words come from a fixed vocabulary and a small grammar, so a word n-gram language model
#   genuinely helps the decoder (§3.8).
#
# Everything draws from a ``numpy.random.Generator`` and uses numpy's FFT, so a seed gives bit-identical audio
# on every run. Generation runs far faster than real time (benchmarks/bench_training.py prints the rate).

# --- 11.1 Text: vocabulary and grammar (a language model can only help if word order is predictable) ---

_DETERMINERS = ("the", "a", "this", "that", "my", "your", "our", "his", "her", "one", "every", "no")
_ADJECTIVES = (
    "big", "small", "little", "good", "bad", "old", "new", "red", "blue", "green", "yellow", "black",
    "white", "happy", "sad", "tall", "short", "long", "cold", "hot", "dark", "bright", "quiet", "loud",
    "sweet", "funny", "pretty", "busy", "sleepy", "hungry", "kind", "brave", "clever", "tiny", "warm",
    "soft", "fast", "slow", "lazy", "full",
)  # fmt: skip
_NOUNS = (
    "dog", "cat", "bird", "fish", "horse", "cow", "sheep", "duck", "rabbit", "mouse", "fox", "zebra",
    "man", "woman", "boy", "girl", "child", "teacher", "doctor", "farmer", "friend", "baby", "queen",
    "house", "car", "book", "ball", "door", "tree", "apple", "cup", "box", "hat", "bed", "chair", "table",
    "window", "garden", "river", "hill", "road", "boat", "train", "letter", "bottle", "kitten", "puppy",
    "flower", "song", "cookie", "coffee", "school", "street", "key", "shoe", "bell", "jacket", "juice",
    "pizza", "sky", "day", "soup", "zoo",
)  # fmt: skip
# (base form, third person singular): "we see", "the dog sees".
_TRANSITIVE_VERBS = (
    ("see", "sees"), ("like", "likes"), ("want", "wants"), ("find", "finds"), ("take", "takes"),
    ("need", "needs"), ("have", "has"), ("love", "loves"), ("keep", "keeps"), ("call", "calls"),
    ("carry", "carries"), ("watch", "watches"), ("follow", "follows"), ("feed", "feeds"),
    ("help", "helps"), ("hold", "holds"), ("open", "opens"), ("push", "pushes"), ("pull", "pulls"),
    ("kick", "kicks"), ("bring", "brings"), ("miss", "misses"), ("wash", "washes"), ("fill", "fills"),
    ("sell", "sells"), ("buy", "buys"), ("draw", "draws"),
)  # fmt: skip
_INTRANSITIVE_VERBS = (
    ("sleep", "sleeps"), ("run", "runs"), ("sit", "sits"), ("wait", "waits"), ("fall", "falls"),
    ("smile", "smiles"), ("sing", "sings"), ("swim", "swims"), ("jump", "jumps"), ("play", "plays"),
    ("walk", "walks"), ("cry", "cries"), ("laugh", "laughs"), ("stay", "stays"), ("stop", "stops"),
)  # fmt: skip
_ADVERBS = (
    "today", "now", "again", "here", "there", "too", "soon", "slowly", "quickly", "often", "still",
    "tonight", "outside", "together", "well",
)  # fmt: skip
_PREPOSITIONS = ("in", "on", "under", "near", "with", "behind", "by", "from", "into", "over", "at")
_PLAIN_PRONOUNS = ("i", "you", "we", "they")  # take the base form of a verb
_THIRD_PERSON_PRONOUNS = ("he", "she", "it")  # take the third person singular
_OBJECT_PRONOUNS = ("me", "him", "us", "them")
_BEING = ("i'm", "you're", "we're", "they're", "he's", "she's", "it's")  # pronoun + "is/are/am" + adjective
_PHRASES = (
    ("thank", "you"), ("good", "morning"), ("good", "night"), ("see", "you", "soon"), ("yes", "please"),
    ("no", "thank", "you"), ("well", "done"), ("how", "are", "you"), ("hello", "there"), ("good", "luck"),
    ("that's", "all"),
)  # fmt: skip
_FUNCTION_WORDS = (
    "an", "please", "don't", "doesn't", "can't", "won't", "let's", "that's", "isn't", "do", "does", "can",
    "will", "where", "what", "who", "is", "are",
)  # fmt: skip

VOCABULARY: tuple[str, ...] = tuple(
    dict.fromkeys(  # keeps the first occurrence, so the order is stable and there are no duplicates
        [
            *_DETERMINERS,
            *_ADJECTIVES,
            *_NOUNS,
            *(form for pair in _TRANSITIVE_VERBS + _INTRANSITIVE_VERBS for form in pair),
            *_ADVERBS,
            *_PREPOSITIONS,
            *_PLAIN_PRONOUNS,
            *_THIRD_PERSON_PRONOUNS,
            *_OBJECT_PRONOUNS,
            *_BEING,
            *(word for phrase in _PHRASES for word in phrase),
            *_FUNCTION_WORDS,
        ]
    )
)

MIN_WORDS, MAX_WORDS = 2, 8
Option = TypeVar("Option")


def _pick(rng: np.random.Generator, options: Sequence[Option]) -> Option:
    return options[int(rng.integers(len(options)))]


def _noun_phrase(rng: np.random.Generator, adjective_probability: float = 0.5) -> list[str]:
    determiner = _pick(rng, _DETERMINERS)
    words = [_pick(rng, _ADJECTIVES)] if rng.random() < adjective_probability else []
    words.append(_pick(rng, _NOUNS))
    if determiner == "a" and words[0][0] in "aeiou":
        determiner = "an"  # "an old dog": the grammar stays English, so the language model learns English
    return [determiner, *words]


def _optional(rng: np.random.Generator, probability: float, words: list[str]) -> list[str]:
    return words if rng.random() < probability else []


def _statement(rng: np.random.Generator) -> list[str]:
    kind = rng.integers(6)
    if kind == 0:  # the little dog sleeps outside
        return [
            *_noun_phrase(rng),
            _pick(rng, _INTRANSITIVE_VERBS)[1],
            *_optional(rng, 0.4, [_pick(rng, _ADVERBS)]),
        ]
    if kind == 1:  # the old man sees a red ball in the garden
        return [
            *_noun_phrase(rng),
            _pick(rng, _TRANSITIVE_VERBS)[1],
            *_noun_phrase(rng),
            *_optional(rng, 0.3, [_pick(rng, _PREPOSITIONS), *_noun_phrase(rng, 0.0)]),
        ]
    if kind == 2:  # we like the green house today
        return [
            _pick(rng, _PLAIN_PRONOUNS),
            _pick(rng, _TRANSITIVE_VERBS)[0],
            *_noun_phrase(rng),
            *_optional(rng, 0.3, [_pick(rng, _ADVERBS)]),
        ]
    if kind == 3:  # we can't swim today
        return [
            _pick(rng, _PLAIN_PRONOUNS),
            _pick(rng, ("can't", "won't", "don't")),
            _pick(rng, _INTRANSITIVE_VERBS)[0],
            *_optional(rng, 0.4, [_pick(rng, _ADVERBS)]),
        ]
    if kind == 4:  # the cat doesn't like soup
        return [*_noun_phrase(rng, 0.3), "doesn't", _pick(rng, _TRANSITIVE_VERBS)[0], *_noun_phrase(rng, 0.3)]
    return [_pick(rng, _THIRD_PERSON_PRONOUNS), _pick(rng, _TRANSITIVE_VERBS)[1], *_noun_phrase(rng)]


def _command(rng: np.random.Generator) -> list[str]:
    kind = rng.integers(3)
    if kind == 0:  # please open the door
        opener = _optional(rng, 0.6, [_pick(rng, ("please", "don't"))])
        return [*opener, _pick(rng, _TRANSITIVE_VERBS)[0], *_noun_phrase(rng)]
    if kind == 1:  # bring me the cup
        return [_pick(rng, _TRANSITIVE_VERBS)[0], _pick(rng, _OBJECT_PRONOUNS), *_noun_phrase(rng)]
    return ["let's", _pick(rng, _INTRANSITIVE_VERBS)[0], *_optional(rng, 0.5, [_pick(rng, _ADVERBS)])]


def _question(rng: np.random.Generator) -> list[str]:
    kind = rng.integers(5)
    if kind == 0:  # do you see the big dog / will we feed the cat
        return [
            _pick(rng, ("do", "will")),
            _pick(rng, _PLAIN_PRONOUNS),
            _pick(rng, _TRANSITIVE_VERBS)[0],
            *_noun_phrase(rng),
        ]
    if kind == 1:  # does the cat want a cookie
        return ["does", *_noun_phrase(rng, 0.3), _pick(rng, _TRANSITIVE_VERBS)[0], *_noun_phrase(rng, 0.3)]
    if kind == 2:  # can we play outside
        return [
            "can",
            _pick(rng, _PLAIN_PRONOUNS),
            _pick(rng, _INTRANSITIVE_VERBS)[0],
            *_optional(rng, 0.5, [_pick(rng, _ADVERBS)]),
        ]
    if kind == 3:  # where is my little cat
        return [_pick(rng, ("where", "what")), "is", *_noun_phrase(rng)]
    return ["who", _pick(rng, _TRANSITIVE_VERBS)[1], *_noun_phrase(rng)]


def _description(rng: np.random.Generator) -> list[str]:
    kind = rng.integers(4)
    if kind == 0:  # the soup is hot
        return [*_noun_phrase(rng, 0.2), _pick(rng, ("is", "isn't")), _pick(rng, _ADJECTIVES)]
    if kind == 1:  # it's a good day
        return [_pick(rng, ("it's", "that's")), *_noun_phrase(rng, 0.7)]
    if kind == 2:  # the cat is in the box
        return [*_noun_phrase(rng), "is", _pick(rng, _PREPOSITIONS), *_noun_phrase(rng, 0.3)]
    return [_pick(rng, _BEING), _pick(rng, _ADJECTIVES), *_optional(rng, 0.4, [_pick(rng, _ADVERBS)])]


# How often each kind of sentence is drawn; statements dominate, as in read speech.
_SENTENCE_KINDS = ((_statement, 0.4), (_command, 0.15), (_question, 0.2), (_description, 0.2))


def random_sentence(rng: np.random.Generator) -> str:
    """Draws a sentence of 2 to 8 words from the module's grammar.

    Args:
        rng: the random generator; the same state gives the same sentence.

    Returns:
        Lower-case words from ``VOCABULARY`` separated by single spaces, e.g. "the little dog sleeps".
    """
    if rng.random() < 0.05:
        return " ".join(_pick(rng, _PHRASES))  # "thank you": short fixed phrases, like real speech has
    kinds, weights = zip(*_SENTENCE_KINDS, strict=True)
    while True:  # a few templates can run long; drawing again keeps every sentence within the limits
        words = kinds[int(rng.choice(len(kinds), p=np.array(weights) / sum(weights)))](rng)
        if MIN_WORDS <= len(words) <= MAX_WORDS:
            return " ".join(words)


# --- 11.2 Speakers ---


@dataclass(frozen=True)
class Speaker:
    """The voice of one synthetic speaker.

    Attributes:
        pitch_hz: average fundamental frequency in Hz (80-260: low male voice to child).
        tract_scale: multiplies every formant frequency; a shorter vocal tract (children, most women) has
            higher formants (0.85-1.15).
        rate: speaking-rate factor; letter durations are divided by it (0.75 slow to 1.3 fast).
        gain_db: loudness relative to the normalised level, in dB (-10 to +10).
    """

    pitch_hz: float
    tract_scale: float
    rate: float
    gain_db: float


def random_speaker(rng: np.random.Generator) -> Speaker:
    """Draws a speaker with pitch, vocal tract length, speaking rate and loudness in the ranges of ``Speaker``.

    Pitch is drawn on a log scale (voices are spread evenly in musical terms, not in Hz), and a high
    pitch tends to come with a short vocal tract, as it does in people.
    """
    position = rng.random()  # 0 = the lowest voice, 1 = the highest
    pitch_hz = 80.0 * (260.0 / 80.0) ** position
    tract_scale = float(np.clip(0.87 + 0.22 * position + rng.normal(0.0, 0.05), 0.85, 1.15))
    return Speaker(
        pitch_hz=float(pitch_hz),
        tract_scale=tract_scale,
        rate=float(rng.uniform(0.75, 1.3)),
        gain_db=float(rng.uniform(-10.0, 10.0)),
    )


# --- 11.3 Phones: what each letter sounds like ---


@dataclass(frozen=True)
class _Part:
    """One stretch of a letter with steady sources, e.g. the closure, burst or aspiration of a stop.

    Levels are root-mean-square amplitudes; a vowel's voicing is 1.
    """

    duration_ms: float
    voicing: float = 0.0  # glottal pulses through the vocal tract
    aspiration: float = 0.0  # noise through the vocal tract: "h", the puff after "p t k"
    frication: float = 0.0  # noise through its own band: "s", bursts; not shaped by the formants
    band_hz: tuple[float, float] = (0.0, 0.0)  # the frication band, for the average vocal tract
    burst: bool = False  # a sharp onset with a fast decay (a stop's release) instead of a steady level


Triple = tuple[float, float, float]  # (F1, F2, F3): frequencies in Hz, or peak levels
_VOWEL_LEVELS = (1.0, 0.7, 0.45)  # F2 and F3 weaker than F1, as the glottal source's spectrum falls


@dataclass(frozen=True)
class _Letter:
    """A letter as a phone: its parts in time order and the formant targets it pulls the tract towards.

    ``formants_start`` and ``formants_end`` are (F1, F2, F3) in Hz for the average tract; they differ for
    sounds with moving formants ("w", "y"). ``None`` means the letter does not move the tract: the formants
    glide straight through it from one neighbour to the other.
    """

    parts: tuple[_Part, ...]
    formants_start: Triple | None = None
    formants_end: Triple | None = None
    formant_levels: Triple = _VOWEL_LEVELS  # peak amplitude of F1, F2, F3


_NASAL_LEVELS = (1.0, 0.18, 0.1)  # a nasal murmur: a strong low resonance, little above it
_VOICE_BAR_LEVELS = (1.0, 0.05, 0.03)  # voicing behind a closed mouth: only a low "voice bar" gets out
_WHISPER_LEVELS = (0.5, 1.0, 0.8)  # aspiration: with the glottis open, F1 is damped
_SIBILANT_BAND = (4800.0, 7400.0)
_LABIODENTAL_BAND = (1000.0, 7600.0)  # "f" and "v": weak and spread over everything
_LABIAL_BURST = (300.0, 1200.0)  # stop bursts: the place of the closure sets the burst's band
_ALVEOLAR_BURST = (3800.0, 6800.0)
_VELAR_BURST = (1800.0, 2800.0)


def _stop(
    burst_band: tuple[float, float],
    locus: Triple,
    voiced: bool,
    burst_ms: float = 8.0,
    aspiration_ms: float = 30.0,
) -> _Letter:
    """A stop: closure (silent, or a voice bar if voiced), a burst, and aspiration if voiceless.

    ``locus`` is where the formants point during the closure; the transitions into the next vowel are a
    stop's main cue to its place in real speech.
    """
    if voiced:
        parts = (_Part(50, voicing=0.15), _Part(burst_ms, frication=0.35, band_hz=burst_band, burst=True))
        return _Letter(parts, locus, locus, _VOICE_BAR_LEVELS)
    parts = (
        _Part(50),
        _Part(burst_ms, frication=0.55, band_hz=burst_band, burst=True),
        _Part(aspiration_ms, aspiration=0.3),
    )
    return _Letter(parts, locus, locus, _WHISPER_LEVELS)


def _vowel(start: Triple, end: Triple | None = None, levels: Triple = _VOWEL_LEVELS) -> _Letter:
    return _Letter((_Part(110, voicing=1.0),), start, start if end is None else end, levels)


def _glide(
    start: Triple, end: Triple, duration_ms: float, levels: Triple = _VOWEL_LEVELS, voicing: float = 0.8
) -> _Letter:
    return _Letter((_Part(duration_ms, voicing=voicing),), start, end, levels)


def _fricative(band: tuple[float, float], level: float, voice_bar_formants: Triple | None = None) -> _Letter:
    if voice_bar_formants is None:
        return _Letter((_Part(100, frication=level, band_hz=band),))  # voiceless: the tract is not excited
    part = _Part(100, voicing=0.2, frication=level, band_hz=band)
    return _Letter((part,), voice_bar_formants, voice_bar_formants, _VOICE_BAR_LEVELS)


_LETTERS: dict[str, _Letter] = {
    # Vowels: voicing with three formants (values near Peterson & Barney's 1952 averages). Formant
    # levels and movement differ too: unlike frequencies, they survive a change of vocal tract length.
    "a": _vowel((800, 1350, 2650), levels=(1.0, 0.9, 0.5)),  # open: strong F1 and F2
    "e": _vowel((500, 1900, 2600)),
    "i": _vowel((300, 2300, 3100), levels=(1.0, 0.5, 0.6)),
    "o": _vowel((600, 1000, 2450), (450, 800, 2350)),  # as in "go": it closes towards "u"
    "u": _vowel((300, 700, 2200), levels=(1.0, 0.45, 0.2)),  # rounded: dark, little above F2
    # Glides and liquids: voiced, shorter, with formants that move.
    "y": _glide((260, 2400, 3200), (500, 1700, 2500), 80),
    "w": _glide((250, 600, 2100), (420, 1300, 2400), 70, voicing=0.75),
    "l": _glide((350, 1000, 2900), (420, 1250, 2800), 75, levels=(1.0, 0.25, 0.7)),  # weak F2, strong F3
    "r": _glide((420, 1150, 1600), (480, 1300, 1950), 80),  # the low F3 is what makes an "r"
    "j": _Letter(  # an affricate: closure, a short "sh"-like friction, then voicing
        (_Part(30), _Part(35, frication=0.45, band_hz=(1800.0, 3000.0)), _Part(45, voicing=0.8)),
        (300, 2000, 2700),
        (300, 2000, 2700),
    ),
    # Nasals: a weaker murmur with one strong low resonance; the faint F2 tells "m" from "n".
    "m": _glide((250, 1000, 2200), (250, 1000, 2200), 80, levels=_NASAL_LEVELS, voicing=0.4),
    "n": _glide((250, 1800, 2700), (250, 1800, 2700), 80, levels=_NASAL_LEVELS, voicing=0.4),
    # Fricatives: noise bands; the voiced ones add a voice bar.
    "s": _fricative(_SIBILANT_BAND, 0.55),
    "z": _fricative(_SIBILANT_BAND, 0.4, voice_bar_formants=(200, 1600, 2600)),
    "f": _fricative(_LABIODENTAL_BAND, 0.22),
    "v": _fricative(_LABIODENTAL_BAND, 0.18, voice_bar_formants=(200, 1100, 2300)),
    "c": _fricative((2400.0, 4000.0), 0.5),  # like the "sh" in "ship"
    "x": _Letter(  # "ks": a velar closure and burst, then friction in a band of its own
        (
            _Part(30),
            _Part(10, frication=0.5, band_hz=_VELAR_BURST, burst=True),
            _Part(60, frication=0.45, band_hz=(3500.0, 5000.0)),
        )
    ),
    "h": _Letter(  # a whispered neutral vowel
        (_Part(90, aspiration=0.45),), (500, 1500, 2500), (500, 1500, 2500), _WHISPER_LEVELS
    ),
    # Stops.
    "p": _stop(_LABIAL_BURST, (250, 800, 2200), voiced=False),
    "b": _stop(_LABIAL_BURST, (200, 800, 2200), voiced=True),
    "t": _stop(_ALVEOLAR_BURST, (300, 1800, 2700), voiced=False),
    "d": _stop(_ALVEOLAR_BURST, (200, 1800, 2700), voiced=True),
    "k": _stop(_VELAR_BURST, (280, 2100, 2500), voiced=False, burst_ms=12.0, aspiration_ms=35.0),
    "g": _stop(_VELAR_BURST, (200, 2100, 2500), voiced=True, burst_ms=12.0),
    "q": _Letter(  # "kw": a burst between "k" and "p", then a "w" glide instead of aspiration
        (_Part(50), _Part(12, frication=0.55, band_hz=(1300.0, 2100.0), burst=True), _Part(55, voicing=0.8)),
        (250, 600, 2100),
        (400, 1000, 2300),
    ),
    # The apostrophe: a short broadband click between two brief silences.
    "'": _Letter((_Part(15), _Part(5, frication=0.8, band_hz=(150.0, 7800.0), burst=True), _Part(15))),
}

# --- 11.4 Synthesis ---

_FORMANT_BANDWIDTHS_HZ = np.array([90.0, 110.0, 160.0])
_NEUTRAL_FORMANTS = (500.0, 1500.0, 2500.0)  # a relaxed tract ("uh"), used when no letter sets targets
_GLIDE_MS = 30.0  # formants reach a letter's target up to this long after it starts (a third at most)
_REPEAT_DIP_MS = 25.0  # between two identical letters ("ll"), so they stay two letters
_REPEAT_DIP_LEVEL = 0.1
_RAMP_MS = 5.0  # sources fade in and out over this long, so parts join without clicks
_PAUSE_MS = (60.0, 150.0)  # between words, before dividing by the speaking rate
_EDGE_SILENCE_MS = (50.0, 150.0)  # before the first and after the last letter
_DURATION_JITTER = 0.12  # standard deviation of a letter's log duration: nobody speaks like a metronome
_TARGET_ACTIVE_RMS = 0.03  # speech level (pauses excluded) before the gain: +10 dB rarely needs the guard
_ROOM_TONE_DB = -60.0  # a faint noise floor relative to the speech, so silence is never exactly zero
_FILTER_FRAME_MS = 16.0  # frames of the time-varying vocal tract filter


def check_speakable(text: str) -> None:
    """Raises ValueError unless ``text`` has a letter and only a-z, space and apostrophe.

    The synthesiser speaks exactly what it is given, so unlike ``encode_text`` it does not fold upper
    case: the same alphabet check (``outside_alphabet``) runs on the text as it is.
    """
    unknown = outside_alphabet(text)
    if unknown:
        raise ValueError(
            f"cannot speak the characters {unknown} in {text!r}: the alphabet is a-z, space and "
            "apostrophe; lower-case the text and remove digits and punctuation first"
        )
    if not text.strip(" '"):
        raise ValueError(f"text {text!r} has no letters to speak; pass at least one of a-z")


def _check_sample_rate(sample_rate: int) -> None:
    if sample_rate < SAMPLE_RATE:
        raise ValueError(
            f"sample_rate={sample_rate} is too low: the fricatives reach 7.4 kHz, so use {SAMPLE_RATE} (the lesson's "
            "rate) or higher"
        )


def _smooth(signal: np.ndarray, width: int) -> np.ndarray:
    """Moving average over ``width`` samples (a box filter via cumulative sums, so O(samples))."""
    if width <= 1:
        return signal
    left = width // 2
    padded = np.pad(signal, (left, width - 1 - left))
    sums = np.concatenate(([0.0], np.cumsum(padded)))
    return (sums[width:] - sums[:-width]) / width


def _band_shape(frequencies: np.ndarray, band_hz: tuple[float, float], order: int = 4) -> np.ndarray:
    """Magnitude of a Butterworth-like band-pass: flat inside ``band_hz``, falling 24 dB/octave outside it."""
    low, high = band_hz
    with np.errstate(divide="ignore"):
        high_pass = 1.0 / np.sqrt(1.0 + (low / np.maximum(frequencies, 1e-3)) ** (2 * order))
    return high_pass / np.sqrt(1.0 + (frequencies / high) ** (2 * order))


def _frication(part: _Part, num_samples: int, band_scale: float, rng: np.random.Generator, sample_rate: int):
    """Band-limited noise for one part, with unit RMS times its envelope, shape ``(num_samples,)``."""
    spectrum = np.fft.rfft(rng.standard_normal(num_samples))
    band = (part.band_hz[0] * band_scale, min(part.band_hz[1] * band_scale, 0.49 * sample_rate))
    noise = np.fft.irfft(
        spectrum * _band_shape(np.fft.rfftfreq(num_samples, 1.0 / sample_rate), band), num_samples
    )
    noise /= np.sqrt(np.mean(noise**2)) + 1e-12
    time = np.arange(num_samples)
    if part.burst:  # a release: on within half a millisecond, then decaying over the part
        attack = max(1, int(0.0005 * sample_rate))
        envelope = np.minimum(time / attack, 1.0) * np.exp(-3.0 * time / num_samples)
    else:  # steady friction with raised-cosine fades, so it starts and stops without a click
        fade = max(1, min(int(_RAMP_MS / 1000 * sample_rate), num_samples // 3))
        envelope = np.ones(num_samples)
        ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(fade) / fade)
        envelope[:fade], envelope[num_samples - fade :] = ramp, ramp[::-1]
    return part.frication * noise * envelope


def _glottal_pulses(f0_hz: np.ndarray, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """A glottal pulse train with jitter and shimmer, unit power, shape ``(samples,)``.

    One pulse per pitch period, at the moments where the accumulated phase passes a whole cycle; each
    pulse is split between two samples for sub-sample timing. Pulses of height sqrt(period) give the
    train a power of 1 at any pitch, like the unit-variance noise sources.
    """
    cycles = np.cumsum(f0_hz) / sample_rate  # (samples,) phase in cycles
    pulse_cycles = np.arange(1, int(cycles[-1]) + 1)
    after = np.searchsorted(cycles, pulse_cycles)  # first sample at or past each whole cycle
    before = np.maximum(after - 1, 0)
    fraction = (pulse_cycles - cycles[before]) / np.maximum(cycles[after] - cycles[before], 1e-12)
    period = sample_rate / f0_hz[after]  # (pulses,) samples
    # Jitter (1% of a period) and shimmer (8% of amplitude): the cycle-to-cycle wobble of a real larynx.
    position = before + fraction + rng.normal(0.0, 0.01, len(after)) * period
    position = np.clip(position, 0.0, len(f0_hz) - 2.0)
    amplitude = np.sqrt(period) * (1.0 + 0.08 * rng.standard_normal(len(after)))
    first = position.astype(np.int64)
    split = position - first
    pulses = np.zeros(len(f0_hz))
    pulses[first] += amplitude * (1.0 - split)  # periods are >= 30 samples, so no index repeats
    pulses[first + 1] += amplitude * split
    return pulses


def _pitch_track(
    num_samples: int, speaker: Speaker, rng: np.random.Generator, sample_rate: int
) -> np.ndarray:
    """Fundamental frequency in Hz for every sample, shape ``(samples,)``.

    Pitch falls over a sentence (declination) and rises and falls slowly around the speaker's average.
    """
    progress = np.arange(num_samples) / num_samples
    declination = rng.uniform(0.1, 0.25) * (0.5 - progress)  # natural log: starts 5-13% high, ends as low
    seconds = np.arange(num_samples) / sample_rate
    contour = rng.uniform(0.03, 0.07) * np.sin(
        2 * np.pi * rng.uniform(1.0, 3.0) * seconds + rng.uniform(0, 2 * np.pi)
    )
    return speaker.pitch_hz * np.exp(declination + contour)


def _vocal_tract_envelopes(
    frame_centres: np.ndarray,
    keypoints: list[tuple[float, ...]],
    tract_scale: float,
    sample_rate: int,
    n_fft: int,
) -> np.ndarray:
    """Magnitude response of the vocal tract at each frame, shape ``(frames, n_fft // 2 + 1)``.

    The formants' frequencies and peak levels are interpolated between the letters' targets
    (coarticulation). Each formant is a resonance peak (Lorentzian magnitude); a gentle tilt stands for
    the glottal source's falling spectrum, and a high-pass removes DC. Every frame is scaled to unit mean
    square, so a source's level alone sets how loud a part is.
    """
    if not keypoints:
        keypoints = [(0.0, *_NEUTRAL_FORMANTS, *_VOWEL_LEVELS)]
    table = np.array(keypoints)  # (keypoints, 7): time in samples, F1-F3 in Hz, their levels
    tracks = np.stack(
        [np.interp(frame_centres, table[:, 0], table[:, column]) for column in range(1, 7)], axis=1
    )
    tracks = tracks.astype(np.float32)  # single precision: twice as fast, and still deterministic
    formants = tracks[:, :3] * np.float32(tract_scale)  # (frames, 3) Hz
    levels = tracks[:, 3:]  # (frames, 3)
    frequencies = np.fft.rfftfreq(n_fft, 1.0 / sample_rate).astype(np.float32)  # (bins,)
    half_bandwidths = (0.5 * _FORMANT_BANDWIDTHS_HZ).astype(np.float32)
    detuning = (frequencies[None, None, :] - formants[:, :, None]) / half_bandwidths[None, :, None]
    envelope = np.sum(levels[:, :, None] / np.sqrt(1.0 + detuning**2), axis=1)  # (frames, bins)
    tilt = (1.0 + (frequencies / 500.0) ** 2) ** -0.75  # -9 dB per octave above 500 Hz
    high_pass = frequencies / np.sqrt(frequencies**2 + 70.0**2)
    envelope *= tilt * high_pass
    return envelope / np.sqrt(np.mean(envelope**2, axis=1, keepdims=True))


def _filter_by_frames(sources: np.ndarray, envelopes: np.ndarray, hop: int, window: int) -> np.ndarray:
    """Filters signals with a filter that changes every ``hop`` samples (overlap-add in the frequency domain).

    Each frame is Hann-windowed, zero-padded to twice its length (room for the filter's ringing, so it
    does not wrap around), multiplied by its frame's zero-phase ``envelope``, and added back in place. With
    a constant envelope of 1 the output equals the input.

    Args:
        sources: ``(channels, samples)``.
        envelopes: ``(frames, window + 1)`` magnitudes for an FFT of ``2 * window``; frame ``t`` is centred on
            sample ``t * hop - window // 2`` (see ``_filter_frame_centres``).
        hop: samples between frames, ``window // 2`` or ``window // 4``, so the Hann windows sum to a
            constant.
        window: frame length in samples.

    Returns:
        ``(channels, samples)`` filtered signals.
    """
    channels, num_samples = sources.shape
    num_frames = envelopes.shape[0]
    n_fft = 2 * window
    padded = np.pad(sources, ((0, 0), (window, num_frames * hop)))
    frames = np.lib.stride_tricks.sliding_window_view(padded, window, axis=1)[:, ::hop][:, :num_frames]
    buffer = np.zeros((channels, num_frames, n_fft))  # float64: numpy's float32 FFT is slower
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(window) / window)  # periodic, so shifted copies sum flat
    buffer[:, :, window // 2 : window // 2 + window] = frames * hann  # centred: ringing has room both sides
    spectra = np.fft.rfft(buffer, axis=-1) * envelopes  # (channels, frames, window + 1)
    filtered = np.fft.irfft(spectra, n_fft, axis=-1)  # (channels, frames, n_fft)
    chunks = n_fft // hop
    output = np.zeros((channels, num_frames + chunks - 1, hop))
    filtered = filtered.reshape(channels, num_frames, chunks, hop)
    for chunk in range(chunks):  # overlap-add, one hop-sized slice of every frame at a time
        output[:, chunk : chunk + num_frames] += filtered[:, :, chunk]
    offset = window + window // 2  # padding before the source plus the centring inside the buffer
    return output.reshape(channels, -1)[:, offset : offset + num_samples] * (hop / (0.5 * window))


def _filter_frame_centres(num_samples: int, hop: int, window: int) -> np.ndarray:
    """Sample at the centre of each frame of ``_filter_by_frames``, shape ``(frames,)``."""
    num_frames = math.ceil((num_samples + window) / hop) + 1
    return np.arange(num_frames) * hop - window // 2


def _active_rms(waveform: np.ndarray, sample_rate: int) -> float:
    """RMS over the 10 ms frames within 30 dB of the loudest: the speech level, pauses excluded."""
    frame = sample_rate // 100
    usable = len(waveform) // frame * frame
    powers = np.mean(waveform[:usable].reshape(-1, frame) ** 2, axis=1)
    return float(np.sqrt(np.mean(powers[powers > 1e-3 * powers.max()])))


def synthesize_speech_with_alignment(
    text: str, speaker: Speaker, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Speaks ``text`` in ``speaker``'s voice and says where each character is.

    Args:
        text: lower-case a-z, space and apostrophe.
        speaker: the voice.
        rng: the random generator; the same state gives bit-identical audio.
        sample_rate: in Hz, at least ``SAMPLE_RATE`` (16 kHz).

    Returns:
        The waveform, float32 ``(samples,)`` mono within [-1, 1], and for each character of ``text`` its
        ``(start, end)`` in samples. Spans do not overlap; the dip between repeated letters and the
        silence at either end belong to no character.

    Raises:
        ValueError: if ``text`` has a character outside the alphabet, or no letter.
    """
    check_speakable(text)
    _check_sample_rate(sample_rate)
    samples_per_ms = sample_rate / 1000.0

    # 1. Plan: when each part of each letter happens, and where the formant targets are.
    time = int(rng.uniform(*_EDGE_SILENCE_MS) * samples_per_ms)
    parts: list[tuple[int, int, _Part, float]] = []  # (start, samples, part, loudness of its word)
    keypoints: list[tuple[float, ...]] = []  # (time in samples, F1, F2, F3, level 1, level 2, level 3)
    spans: list[tuple[int, int]] = []
    word_loudness = 1.0
    previous = " "
    for character in text:
        if character == " ":
            pause = int(rng.uniform(*_PAUSE_MS) / speaker.rate * samples_per_ms)
            spans.append((time, time + pause))
            time += pause
            previous = character
            continue
        if previous == " ":
            word_loudness = 10.0 ** (rng.normal(0.0, 1.5) / 20.0)  # some words are said a little louder
        letter = _LETTERS[character]
        if character == previous:  # a dip keeps "ll" two letters (CTC needs a blank between them too)
            last = letter.parts[-1]  # the dip continues the letter's last part, much quieter
            dip = dataclasses.replace(
                last,
                duration_ms=_REPEAT_DIP_MS,
                voicing=last.voicing * _REPEAT_DIP_LEVEL,
                aspiration=last.aspiration * _REPEAT_DIP_LEVEL,
                frication=last.frication * _REPEAT_DIP_LEVEL,
                burst=False,
            )
            length = int(_REPEAT_DIP_MS / speaker.rate * samples_per_ms)
            parts.append((time, length, dip, word_loudness))
            time += length
        stretch = math.exp(rng.normal(0.0, _DURATION_JITTER)) / speaker.rate
        start = time
        for part in letter.parts:
            length = max(1, int(part.duration_ms * stretch * samples_per_ms))
            parts.append((time, length, part, word_loudness))
            time += length
        spans.append((start, time))
        if letter.formants_start is not None:
            glide = min(_GLIDE_MS * samples_per_ms, (time - start) / 3)
            keypoints.append((start + glide, *letter.formants_start, *letter.formant_levels))
            keypoints.append((time - glide, *letter.formants_end, *letter.formant_levels))
        previous = character
    num_samples = time + int(rng.uniform(*_EDGE_SILENCE_MS) * samples_per_ms)

    # 2. Sources: per-sample levels (smoothed, so parts join without clicks) and the frication noise.
    voicing = np.zeros(num_samples)
    aspiration = np.zeros(num_samples)
    frication = np.zeros(num_samples)
    band_scale = math.sqrt(speaker.tract_scale)  # the front cavity shapes friction; it scales less
    for start, length, part, loudness in parts:
        voicing[start : start + length] = part.voicing * loudness
        aspiration[start : start + length] = part.aspiration * loudness
        if part.frication > 0:
            frication[start : start + length] += loudness * _frication(
                part, length, band_scale, rng, sample_rate
            )
    ramp = int(_RAMP_MS * samples_per_ms)
    voicing, aspiration = _smooth(voicing, ramp), _smooth(aspiration, ramp)
    pulses = _glottal_pulses(_pitch_track(num_samples, speaker, rng, sample_rate), rng, sample_rate)
    breath = rng.standard_normal(num_samples)

    # 3. Filter: voicing and aspiration both pass through the moving vocal tract.
    window = int(_FILTER_FRAME_MS * samples_per_ms) // 4 * 4
    hop = window // 2  # the tract moves slowly: 8 ms steps are smooth enough, and twice as fast as 4 ms
    centres = _filter_frame_centres(num_samples, hop, window)
    envelopes = _vocal_tract_envelopes(centres, keypoints, speaker.tract_scale, sample_rate, 2 * window)
    voiced, whispered = _filter_by_frames(np.stack([pulses, breath]), envelopes, hop, window)
    waveform = voicing * voiced + aspiration * whispered + frication

    # 4. Level: normalise the speech, add the room tone, apply the speaker's gain, never clip.
    waveform *= _TARGET_ACTIVE_RMS / _active_rms(waveform, sample_rate)
    waveform += rng.standard_normal(num_samples) * _TARGET_ACTIVE_RMS * 10.0 ** (_ROOM_TONE_DB / 20.0)
    waveform *= 10.0 ** (speaker.gain_db / 20.0)
    peak = np.max(np.abs(waveform))
    if peak > 0.99:
        waveform *= 0.99 / peak
    return torch.from_numpy(waveform.astype(np.float32)), spans


def synthesize_speech(
    text: str, speaker: Speaker, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE
) -> torch.Tensor:
    """Speaks ``text`` in ``speaker``'s voice.

    Args:
        text: lower-case a-z, space and apostrophe, e.g. "the little dog sleeps".
        speaker: the voice (see ``random_speaker``).
        rng: the random generator; the same state gives bit-identical audio.
        sample_rate: in Hz, at least ``SAMPLE_RATE`` (16 kHz).

    Returns:
        float32 ``(samples,)`` mono, within [-1, 1]; about 100 ms per letter at an average rate.

    Raises:
        ValueError: if ``text`` has a character outside the alphabet (the message names it), or no letter.
    """
    return synthesize_speech_with_alignment(text, speaker, rng, sample_rate)[0]


# --- 11.5 Noise (the paper's noisy dev set, Table 4 topic; training with added noise, §5.2) ---

NOISE_KINDS = ("white", "pink", "babble")


def _babble(
    num_samples: int, rng: np.random.Generator, sample_rate: int, bank: Sequence[np.ndarray] = ()
) -> np.ndarray:
    """3 to 6 other synthetic speakers talking at once, each at the same level, shape ``(samples,)``.

    Without a ``bank`` every talker is a new voice, synthesised for this utterance alone (the costly
    part of synthesis: 3-6 voices per noisy utterance). With one (``make_babble_bank``), the talkers are
    drawn from it, all different, each joined at a random point.
    """
    mixture = np.zeros(num_samples)
    count = int(rng.integers(3, 7))
    if bank:
        for k in rng.choice(len(bank), size=min(count, len(bank)), replace=False):
            talker = bank[int(k)]
            if len(talker) < num_samples:  # an utterance longer than the bank's talkers: loop the talker
                talker = np.tile(talker, -(-num_samples // len(talker)))
            start = int(rng.integers(len(talker) - num_samples + 1))
            piece = talker[start : start + num_samples].astype(np.float64)
            mixture += piece / max(float(np.sqrt(np.mean(piece**2))), 1e-8)
        return mixture
    for _ in range(count):
        speaker = random_speaker(rng)
        speech = [synthesize_speech(random_sentence(rng), speaker, rng, sample_rate).numpy()]
        while sum(len(piece) for piece in speech) < num_samples:  # one talker keeps talking
            speech.append(synthesize_speech(random_sentence(rng), speaker, rng, sample_rate).numpy())
        talker = np.concatenate(speech).astype(np.float64)
        start = int(rng.integers(len(talker) - num_samples + 1))  # join the conversation anywhere
        talker = talker[start : start + num_samples]
        mixture += talker / np.sqrt(np.mean(talker**2))
    return mixture


BABBLE_TALKERS = 64  # the most voices in a training split's babble bank (make_babble_bank)
BABBLE_SECONDS = 12.0  # how long each of them talks


def babble_bank_size(babble_utterances: float) -> int:
    """Voices in the bank for a split expected to hold this many babble utterances (``make_splits``).

    One voice for every 5 of them, at least 6 (a mixture takes up to 6 different talkers) and at most
    ``BABBLE_TALKERS``: the default training split (2,000 utterances, half noisy, a third of those babble)
    gets 64 voices, each heard in about 23 mixtures at different points. New voices for every utterance,
    as the dev-noisy split keeps, would cost 3-6 voices per babble utterance: about half of the default
    data's synthesis time (``benchmarks/bench_training.py`` prints the synthesis speed).
    """
    return int(min(BABBLE_TALKERS, max(6, round(babble_utterances / 5))))


def map_in_processes(function: Callable, recipe, num_items: int, workers: int) -> list:
    """``function(recipe, range(num_items))`` split over `workers` forked processes, items in order.

    Item i must depend only on (recipe, i); then the result is the same for any number of workers.
    `function` must not call torch kernels (torch's OpenMP pool does not survive a fork). The splits,
    the babble banks, corpora.py's espeak-ng splits and ``evaluate``'s beam search all fan out this way.
    """
    if workers <= 1 or num_items < 2 * workers:
        return function(recipe, range(num_items))
    import concurrent.futures
    import multiprocessing

    chunks = [range(start, num_items, workers) for start in range(workers)]
    context = multiprocessing.get_context(
        "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    )
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        parts = list(pool.map(function, [recipe] * workers, chunks))
    by_index = {
        i: item
        for chunk, part in zip(chunks, parts, strict=True)
        for i, item in zip(chunk, part, strict=True)
    }
    return [by_index[i] for i in range(num_items)]


def _babble_talkers(recipe: tuple, indices: Iterable[int]) -> list[np.ndarray]:
    """Talkers ``indices`` of a babble bank, ``recipe = (seed_words, seconds, sample_rate)``: float32."""
    seed_words, seconds, sample_rate = recipe
    talkers = []
    for index in indices:
        rng = np.random.default_rng([*seed_words, 2**31 + index])  # never an utterance's seed (index < 2^31)
        speaker = random_speaker(rng)
        speech, samples = [], 0
        while samples < seconds * sample_rate:  # one talker keeps talking
            speech.append(synthesize_speech(random_sentence(rng), speaker, rng, sample_rate).numpy())
            samples += len(speech[-1])
        talkers.append(np.concatenate(speech))
    return talkers


def make_babble_bank(
    seed: Seed,
    talkers: int = BABBLE_TALKERS,
    seconds: float = BABBLE_SECONDS,
    sample_rate: int = SAMPLE_RATE,
    workers: int = 1,
) -> list[np.ndarray]:
    """``talkers`` random voices, each saying random sentences for about ``seconds``: babble for a split.

    Synthesised once per split, so that babble costs one voice per talker rather than 3-6 new voices per
    noisy utterance (``make_split``'s ``babble_talkers``). Talker k depends on ``(seed, k)`` alone: the
    same for any number of ``workers``.
    """
    if talkers < 1 or seconds <= 0:
        raise ValueError(f"a babble bank needs talkers >= 1 and seconds > 0, got {talkers} and {seconds}")
    recipe = (_seed_words(seed), float(seconds), sample_rate)
    return map_in_processes(_babble_talkers, recipe, talkers, workers)


def make_noise(
    num_samples: int,
    kind: str,
    rng: np.random.Generator,
    sample_rate: int = SAMPLE_RATE,
    babble_bank: Sequence[np.ndarray] = (),
) -> np.ndarray:
    """Noise of one kind, float64 ``(samples,)``, at an arbitrary level (``add_noise`` sets the level).

    "white" is flat; "pink" falls 3 dB per octave (power proportional to 1/f, like much real-world
    noise); "babble" is other people talking, the hardest kind because it looks like the signal (its
    talkers come from ``babble_bank`` when one is given, see ``make_babble_bank``).
    """
    if kind == "white":
        return rng.standard_normal(num_samples)
    if kind == "pink":
        spectrum = np.fft.rfft(rng.standard_normal(num_samples))
        frequencies = np.fft.rfftfreq(num_samples, 1.0 / sample_rate)
        spectrum /= np.sqrt(np.maximum(frequencies, 20.0))  # below 20 Hz, flat: no DC drift
        spectrum[0] = 0.0
        return np.fft.irfft(spectrum, num_samples)
    if kind == "babble":
        return _babble(num_samples, rng, sample_rate, babble_bank)
    raise ValueError(f"unknown noise kind {kind!r}; choose one of {NOISE_KINDS}")


def add_noise(
    waveform: torch.Tensor,
    snr_db: float,
    kind: str,
    rng: np.random.Generator,
    sample_rate: int = SAMPLE_RATE,
    babble_bank: Sequence[np.ndarray] = (),
) -> torch.Tensor:
    """Adds noise at a signal-to-noise ratio.

    SNR = 10 log10(signal power / noise power), both powers averaged over the whole utterance; the noise
    is scaled so the achieved SNR equals ``snr_db`` (to float32 precision). The sum is not clipped, so at
    low SNR a loud utterance can exceed [-1, 1] slightly.

    Args:
        waveform: float ``(samples,)`` clean speech.
        snr_db: the signal-to-noise ratio in dB, e.g. 10.
        kind: "white", "pink" or "babble" (see ``make_noise``).
        rng: the random generator.
        sample_rate: in Hz.
        babble_bank: talkers for "babble" (``make_babble_bank``); empty: new voices for this utterance.

    Returns:
        float32 ``(samples,)``, the noisy waveform.
    """
    if waveform.dim() != 1 or waveform.numel() == 0:
        raise ValueError(
            f"add_noise needs one mono waveform of shape (samples,), got {tuple(waveform.shape)}"
        )
    if not math.isfinite(snr_db):
        raise ValueError(f"snr_db must be a finite number of dB, got {snr_db}")
    # numpy from here on (no torch kernels), so this also runs in forked worker processes (make_split).
    signal = np.asarray(waveform.detach().cpu().numpy(), dtype=np.float64)
    signal_power = np.mean(signal**2)
    if signal_power == 0:
        raise ValueError("the waveform is silent, so no SNR can be defined; pass speech")
    noise = make_noise(len(signal), kind, rng, sample_rate, babble_bank)
    noise *= np.sqrt(signal_power / (np.mean(noise**2) * 10.0 ** (snr_db / 10.0)))
    return torch.from_numpy((signal + noise).astype(np.float32))


# --- 11.6 Data sets: train, dev-clean and dev-noisy, with disjoint speakers ---


@dataclass
class SyntheticSplit:
    """One data set split: utterances with their transcripts and speakers.

    Attributes:
        waveforms: float32 ``(samples,)`` each.
        texts: the transcripts.
        speakers: who said each utterance.
        name: e.g. "train", "dev-clean", "dev-noisy".
        noise: per utterance, "clean" or the noise kind added.
        snr_db: per utterance, the SNR of the added noise in dB (``math.inf`` when clean).
        sample_rate: in Hz.
    """

    waveforms: list[torch.Tensor]
    texts: list[str]
    speakers: list  # Speaker here; corpora.py's splits hold their own kinds of speaker
    name: str
    noise: list[str] = field(default_factory=list)
    snr_db: list[float] = field(default_factory=list)
    sample_rate: int = SAMPLE_RATE

    def __len__(self) -> int:
        return len(self.texts)

    def durations_s(self) -> np.ndarray:
        """Length of each utterance in seconds, shape ``(utterances,)``."""
        return np.array([len(waveform) for waveform in self.waveforms]) / self.sample_rate


Seed = int | tuple[int, ...]


def _seed_words(seed: Seed) -> list[int]:
    return [seed] if isinstance(seed, int) else list(seed)


def make_speaker_pool(num_speakers: int, seed: Seed) -> list[Speaker]:
    """Draws ``num_speakers`` speakers; different seeds give different (disjoint) pools."""
    if num_speakers < 1:
        raise ValueError(f"num_speakers must be at least 1, got {num_speakers}")
    rng = np.random.default_rng([*_seed_words(seed), 0x5EA])  # 0x5EA: a stream of its own for speakers
    return [random_speaker(rng) for _ in range(num_speakers)]


@dataclass(frozen=True)
class SplitRecipe:
    """Everything that determines a split's audio: utterance ``i`` is a function of this and ``i`` alone."""

    seed_words: list[int]  # the split's seed; utterance i draws from default_rng([*seed_words, i])
    speakers: tuple[Speaker, ...]  # the pool each utterance's speaker is drawn from
    noise_kinds: tuple[str, ...]  # kinds of noise to draw from; empty: clean audio
    snr_db: tuple[float, float]  # (low, high) range of a noisy utterance's SNR, dB
    noisy_fraction: float  # probability that an utterance gets noise
    sample_rate: int  # Hz
    # Talkers for babble (make_babble_bank, itself a function of seed_words); empty: new voices each time.
    babble_bank: tuple[np.ndarray, ...] = field(default=(), compare=False, repr=False)


def check_split_arguments(
    num_utterances, speakers, noise_kinds, snr_db, noisy_fraction, pool="make_speaker_pool"
):
    """A split maker's arguments checked, with a message that says what to pass; returns the SNR range."""
    if num_utterances < 0:
        raise ValueError(f"num_utterances must be >= 0, got {num_utterances}")
    if not speakers:
        raise ValueError(f"speakers is empty; pass a pool from {pool}")
    unknown = sorted(set(noise_kinds) - set(NOISE_KINDS))
    if unknown:
        raise ValueError(f"unknown noise kinds {unknown}; choose from {NOISE_KINDS}")
    if not 0.0 <= noisy_fraction <= 1.0:
        raise ValueError(f"noisy_fraction must be between 0 and 1, got {noisy_fraction}")
    return (snr_db, snr_db) if isinstance(snr_db, (int, float)) else tuple(snr_db)


def make_split(
    name: str,
    num_utterances: int,
    speakers: Sequence[Speaker],
    seed: Seed,
    noise_kinds: Sequence[str] = (),
    snr_db: float | tuple[float, float] = 10.0,
    noisy_fraction: float = 1.0,
    sample_rate: int = SAMPLE_RATE,
    workers: int = 1,
    babble_talkers: int = 0,
) -> SyntheticSplit:
    """Synthesises a split: random sentences said by speakers drawn from ``speakers``.

    Utterance ``i`` draws from its own generator, seeded by ``(seed, i)``, so it is the same whatever the
    split's size.

    Args:
        name: the split's name.
        num_utterances: how many utterances.
        speakers: the pool to draw each utterance's speaker from (see ``make_speaker_pool``).
        seed: an int or a tuple of ints.
        noise_kinds: kinds to draw from for noisy utterances (see ``NOISE_KINDS``); empty for clean audio.
        snr_db: a fixed SNR in dB, or a ``(low, high)`` range to draw each noisy utterance's SNR from.
        noisy_fraction: the probability that an utterance gets noise (when ``noise_kinds`` is not empty).
        sample_rate: in Hz.
        workers: processes to synthesise in (the result is the same for any number).
        babble_talkers: > 0: babble comes from a bank of this many voices made once for the split
            (``make_babble_bank``, ``BABBLE_SECONDS`` each); 0: from 3-6 new voices per utterance.

    Returns:
        The split; ``split.noise`` and ``split.snr_db`` record what was added to each utterance.
    """
    low, high = check_split_arguments(num_utterances, speakers, noise_kinds, snr_db, noisy_fraction)
    bank = ()
    if babble_talkers > 0 and "babble" in noise_kinds and noisy_fraction > 0 and num_utterances > 0:
        bank = tuple(make_babble_bank(seed, babble_talkers, BABBLE_SECONDS, sample_rate, workers))
    recipe = SplitRecipe(
        _seed_words(seed), tuple(speakers), tuple(noise_kinds), (low, high), noisy_fraction, sample_rate, bank
    )
    utterances = map_in_processes(_synthesize_utterances, recipe, num_utterances, workers)
    split = SyntheticSplit([], [], [], name, sample_rate=sample_rate)
    for samples, text, speaker, kind, snr in utterances:
        split.waveforms.append(torch.from_numpy(samples))
        split.texts.append(text)
        split.speakers.append(speaker)
        split.noise.append(kind)
        split.snr_db.append(snr)
    return split


def _synthesize_utterances(
    recipe: SplitRecipe, indices: Iterable[int]
) -> list[tuple[np.ndarray, str, Speaker, str, float]]:
    """Utterances ``indices`` of a split (see make_split): ``(samples, text, speaker, noise, snr_db)``.

    Runs in forked worker processes, so it must not call torch kernels: torch's OpenMP thread pool does
    not survive a fork (the child would hang). Synthesis and noise are numpy throughout.
    """
    speakers, noise_kinds, sample_rate = recipe.speakers, recipe.noise_kinds, recipe.sample_rate
    (low, high), noisy_fraction = recipe.snr_db, recipe.noisy_fraction
    utterances = []
    for index in indices:
        rng = np.random.default_rng([*recipe.seed_words, index])
        speaker = speakers[int(rng.integers(len(speakers)))]
        text = random_sentence(rng)
        waveform = synthesize_speech(text, speaker, rng, sample_rate)
        kind, snr = "clean", math.inf
        if noise_kinds and rng.random() < noisy_fraction:
            kind, snr = str(noise_kinds[int(rng.integers(len(noise_kinds)))]), float(rng.uniform(low, high))
            waveform = add_noise(waveform, snr, kind, rng, sample_rate, recipe.babble_bank)
        utterances.append((waveform.numpy(), text, speaker, kind, snr))
    return utterances


def make_splits(
    train_size: int,
    dev_size: int,
    seed: int = 0,
    train_noise_fraction: float = 0.0,
    train_snr_db: tuple[float, float] = (5.0, 30.0),
    num_train_speakers: int = 200,
    num_dev_speakers: int = 40,
    sample_rate: int = SAMPLE_RATE,
    workers: int = 1,
) -> dict[str, SyntheticSplit]:
    """Makes the lesson's three splits, each with its own speakers.

    "train" is clean unless ``train_noise_fraction`` > 0 (noise augmentation: that fraction of utterances
    gets white, pink or babble noise at an SNR drawn from ``train_snr_db``; its babble talkers come from
    one bank of voices for the split, ``babble_bank_size``). "dev-clean" is clean;
    "dev-noisy" has noise of a kind drawn per utterance at 10 dB SNR, like the paper's regular and
    noisy development sets (Table 4 topic, §3.5). No speaker appears in two splits, so the dev
    sets measure how well the model handles voices it has never heard.

    Returns:
        {"train": ..., "dev-clean": ..., "dev-noisy": ...}
    """
    pools = {
        "train": make_speaker_pool(num_train_speakers, (seed, 0)),
        "dev-clean": make_speaker_pool(num_dev_speakers, (seed, 1)),
        "dev-noisy": make_speaker_pool(num_dev_speakers, (seed, 2)),
    }
    names = list(pools)
    for position, name in enumerate(names):  # continuous draws never collide, but say so if they did
        for other in names[position + 1 :]:
            if set(pools[name]) & set(pools[other]):
                raise RuntimeError(f"speaker pools of {name} and {other} overlap; choose another seed")
    bank = babble_bank_size(train_size * train_noise_fraction / len(NOISE_KINDS))
    return three_splits(
        make_split,
        pools,
        train_size,
        dev_size,
        seed,
        train_noise_fraction,
        train_snr_db,
        sample_rate,
        workers,
        babble_talkers=bank,
    )


def three_splits(
    make: Callable[..., SyntheticSplit],
    pools: dict[str, Sequence],
    train_size: int,
    dev_size: int,
    seed: int,
    train_noise_fraction: float,
    train_snr_db: tuple[float, float],
    sample_rate: int,
    workers: int,
    **train_options,
) -> dict[str, SyntheticSplit]:
    """The recipe of the three splits, for any split maker (``make_split``, corpora's espeak-ng one).

    Each split has its own seed and speaker pool (``pools``). "train" gets noise of every kind on
    ``train_noise_fraction`` of its utterances at an SNR drawn from ``train_snr_db`` (``train_options``
    go to its maker alone); "dev-clean" none; "dev-noisy" a kind drawn per utterance at 10 dB SNR.
    """
    common = dict(sample_rate=sample_rate, workers=workers)
    noise = NOISE_KINDS if train_noise_fraction > 0 else ()
    return {
        "train": make(
            "train",
            train_size,
            pools["train"],
            (seed, 10),
            noise,
            train_snr_db,
            train_noise_fraction,
            **common,
            **train_options,
        ),
        "dev-clean": make("dev-clean", dev_size, pools["dev-clean"], (seed, 11), **common),
        "dev-noisy": make("dev-noisy", dev_size, pools["dev-noisy"], (seed, 12), NOISE_KINDS, 10.0, **common),
    }


def grammar_lm(seed: int, sentences: int = 20_000, order: int = 3) -> NGramLM:
    """The word LM of the letter-phone corpus (section 9): ``sentences`` of the grammar, drawn with ``seed``.

    The text is drawn from its own stream (``[seed, 99]``), not from the splits' utterances.
    """
    rng = np.random.default_rng([seed, 99])
    return NGramLM.train([random_sentence(rng) for _ in range(sentences)], order=order)


def shared_sentences(train_split: SyntheticSplit, dev_split: SyntheticSplit) -> set[str]:
    """Sentences that appear in both splits (short ones like "thank you" will; a dev WER on them is easy)."""
    return set(train_split.texts) & set(dev_split.texts)


# ----------------------------------------------------------------------------------------------------------
# 12. Training: batching, SortaGrad (§3.3), the one training loop, evaluation, checkpoints
# ----------------------------------------------------------------------------------------------------------


# --- 12.1 Batches and SortaGrad (§3.3) ---


@dataclass
class Batch:
    """A padded minibatch. ``spectrograms (B, F, T)``, ``lengths (B,)`` frames, ``targets (B, S)``."""

    spectrograms: Tensor
    lengths: Tensor
    targets: Tensor
    target_lengths: Tensor
    texts: list[str]

    def to(self, device) -> Batch:
        return Batch(
            self.spectrograms.to(device),
            self.lengths.to(device),
            self.targets.to(device),
            self.target_lengths.to(device),
            self.texts,
        )


def pad_spectrograms(specs: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """List of ``(F, T_i)`` -> zero-padded batch ``(B, F, T_max)`` and lengths ``(B,)``."""
    lengths = torch.tensor([spec.shape[-1] for spec in specs], dtype=torch.long)
    batch = specs[0].new_zeros(len(specs), specs[0].shape[0], int(lengths.max()))
    for index, spec in enumerate(specs):
        batch[index, :, : spec.shape[-1]] = spec
    return batch, lengths


def collate(spectrograms: Sequence[Tensor], texts: Sequence[str], alphabet: Alphabet = ENGLISH) -> Batch:
    """Pad a list of ``(F, T_i)`` spectrograms and their transcripts (encoded in ``alphabet``) into a ``Batch``."""
    padded, lengths = pad_spectrograms(spectrograms)
    labels = [alphabet.encode(text) for text in texts]
    target_lengths = torch.tensor([len(label) for label in labels], dtype=torch.long)
    targets = nn.utils.rnn.pad_sequence(labels, batch_first=True, padding_value=BLANK)
    return Batch(padded, lengths, targets, target_lengths, [alphabet.normalize(t) for t in texts])


def sortagrad_batches(
    lengths: Sequence[int], batch_size: int, epoch: int, seed: int = 0, sortagrad: bool = True
) -> list[list[int]]:
    """Minibatches of indices for one epoch, with SortaGrad (§3.3).

    Epoch 0 (with ``sortagrad``): utterances in increasing order of length, so the model meets short,
    easy utterances - and small CTC losses - first, which the paper finds stabilises early training.
    Later epochs (or ``sortagrad=False``): random order. To waste little compute on padding, a random
    epoch shuffles the utterances, sorts them by length within pools of 50 batches, cuts the pools into
    batches and shuffles the batches (after the first epoch §3.3 goes back to random minibatches). Every
    index appears exactly once per epoch; the order is deterministic for ``(seed, epoch)``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(lengths) == 0:
        raise ValueError("cannot make batches from an empty dataset")
    lengths = np.asarray(lengths)
    if sortagrad and epoch == 0:
        order = np.argsort(lengths, kind="stable")
        return [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    pool = batch_size * 50
    batches = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size].tolist() for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def distributed_batches(
    lengths: Sequence[int],
    batch_size: int,
    epoch: int,
    seed: int = 0,
    sortagrad: bool = True,
    rank: int = 0,
    world_size: int = 1,
) -> list[list[int]]:
    """This process's share of each global minibatch of ``sortagrad_batches`` under data parallelism (§4.1).

    ``batch_size`` is the *global* batch, the plan the same on every process; ``devices.share_of_batches``
    deals each batch out to the ``world_size`` processes. With ``world_size == 1`` this is
    ``sortagrad_batches``.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    if batch_size < world_size:
        raise ValueError(
            f"the batch size ({batch_size}) is the global batch, shared by {world_size} processes: it must "
            "be at least the number of processes, so that each has an utterance"
        )
    plan = sortagrad_batches(lengths, batch_size, epoch, seed, sortagrad)
    return plan if world_size == 1 else share_of_batches(plan, lengths, rank, world_size)


# --- 12.2 The one training loop: learning-rate schedule, train_step, train_epoch, fit ---
# Every runner (train_minimal.py, visualization.py, setup.py, the notebook, the benchmarks, the ablation
# sweeps) trains through these functions, so a fix made here is made everywhere.


@dataclass
class TrainConfig:
    """How to train: the optimiser, schedule and batching. Defaults are the lesson's CPU recipe.

    The paper trains with SGD and Nesterov momentum (recalled); on a CPU-sized model and a few hundred
    updates Adam converges faster, so it is the default here and the
    paper's choice is one flag away (``optimizer="sgd"``, try ``lr=0.05``). The cosine schedule and the
    clipping threshold are ours: the fact sheet does not give the paper's.
    """

    # Small batches: a step's cost grows with the audio in it, so halving the batch doubles the updates an
    # epoch buys at about the same price, and on 2,000 utterances updates are what is scarce (the sweep
    # behind these defaults, with its dates and numbers: benchmarks/README.md).
    epochs: int = 3
    batch_size: int = 16  # utterances per minibatch
    lr: float = 3e-3  # peak learning rate
    lr_floor: float = 0.05  # the cosine decay ends at this fraction of ``lr``
    optimizer: str = "adam"  # "adam" or "sgd" (SGD with Nesterov momentum)
    momentum: float = 0.9  # for "sgd"
    clip: float = 5.0  # the gradient's global norm is clipped to this
    sortagrad: bool = True  # §3.3: the first epoch in order of increasing length
    seed: int = 0  # batch order (and, in the CLI, data and initialisation)
    # Mixed precision is not a field here but an argument of train_step/train_epoch/fit, like the device:
    # a field would change every recorded ablation run's spec (asdict(TrainConfig)) and force reruns.

    def __post_init__(self):
        problems = []
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            problems.append(f"lr must be positive, got {self.lr}")
        if not 0.0 <= self.lr_floor <= 1.0:
            problems.append(f"lr_floor is a fraction in [0, 1], got {self.lr_floor}")
        if self.optimizer not in ("adam", "sgd"):
            problems.append(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if not self.clip > 0:
            problems.append(f"clip must be positive, got {self.clip}")
        if problems:
            raise ValueError("invalid TrainConfig: " + "; ".join(problems))


def unwrapped(model: nn.Module) -> nn.Module:
    """The model inside ``DistributedDataParallel`` (``distribute``), however many times wrapped."""
    while isinstance(getattr(model, "module", None), nn.Module):
        model = model.module
    return model


def learning_rate(step: int, total_steps: int, peak: float, floor: float = 0.05) -> float:
    """Cosine decay from ``peak`` at step 0 to ``floor * peak`` at ``total_steps`` (and after)."""
    progress = min(step / max(total_steps, 1), 1.0)
    return peak * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam, or SGD with Nesterov momentum, over the model's trainable parameters."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum, nesterov=True)
    return torch.optim.Adam(parameters, lr=config.lr)


def train_step(
    model: DeepSpeech2,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    clip: float = 5.0,
    amp: bool = False,
    scaler: torch.amp.GradScaler | None = None,
) -> float:
    """One update: forward -> CTC loss -> backward -> clip the gradient norm -> optimizer step.

    Returns the batch's loss (mean over its utterances, nats). A NaN or inf loss is returned as it is and
    nothing is updated: one bad batch must not poison the weights (the caller counts it as skipped).
    With ``amp`` the forward runs in autocast (``amp_dtype``) and the CTC loss in float32: its sums over
    alignments of products of many probabilities lose their precision in 16 bits. ``scaler`` (from
    ``grad_scaler``, float16 only) scales the loss for the backward pass.
    Under torchrun ``model`` is the ``DistributedDataParallel`` wrapper and ``batch`` this process's share
    of the global batch; the loss returned, and the gradient, are the global batch's (``shard_loss``).
    """
    model.train()
    device = batch.spectrograms.device
    with torch.autocast(device.type, amp_dtype(device)) if amp else contextlib.nullcontext():
        log_probs, out_lengths = model(batch.spectrograms, batch.lengths)  # (B, T', C)
    log_probs = log_probs.float()  # the CTC loss in float32, whatever the forward ran in
    loss = ctc_loss(log_probs, batch.targets, out_lengths, batch.target_lengths)
    value = loss.item()
    if distributed_world()[1] > 1:  # every process decides alike, so all skip a bad batch or none
        loss, value = shard_loss(loss, value, len(batch.texts))
    if not math.isfinite(value):
        return value
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        return value
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)  # clip the true gradient, not the scaled one
    nn.utils.clip_grad_norm_(model.parameters(), clip)
    scaler.step(optimizer)  # skipped when a gradient overflowed (then the scale is lowered)
    scaler.update()
    return value


@dataclass
class TrainState:
    """Where a run stands, saved in every checkpoint so that ``--resume`` continues exactly.

    ``batch`` counts the batches of epoch ``epoch`` already trained on (the epoch's batch order is a
    function of the seed and the epoch, so it is recomputed, not saved). ``step`` counts optimizer steps
    taken, skipped NaN/inf batches included, and sets the learning rate.
    """

    epoch: int = 0  # epochs finished
    batch: int = 0  # batches of the current epoch finished
    step: int = 0
    epoch_losses: list[float] = field(default_factory=list)  # the current epoch's finite losses so far
    epoch_skipped: int = 0  # the current epoch's NaN/inf batches so far
    history: list[dict] = field(default_factory=list)  # one record per finished epoch

    def end_epoch(self, record: dict) -> None:
        """File the finished epoch's record and move to the start of the next epoch."""
        self.history.append(record)
        self.epoch, self.batch, self.epoch_losses, self.epoch_skipped = self.epoch + 1, 0, [], 0


def steps_per_epoch(num_utterances: int, batch_size: int, world_size: int = 1) -> int:
    """Optimizer steps per epoch: global batches of ``batch_size`` (see ``distributed_batches``)."""
    steps = math.ceil(num_utterances / batch_size)
    # Over several processes the one short batch of a plan (if shorter than world_size) joins another.
    if world_size > 1 and steps > 1 and 0 < num_utterances % batch_size < world_size:
        steps -= 1
    return steps


def train_epoch(
    model: DeepSpeech2,
    optimizer: torch.optim.Optimizer,
    spectrograms: Sequence[Tensor],
    texts: Sequence[str],
    config: TrainConfig,
    state: TrainState,
    amp: bool = False,
    scaler: torch.amp.GradScaler | None = None,
) -> Iterator[float]:
    """Train the rest of epoch ``state.epoch``, yielding each batch's loss right after its step.

    Batches come from ``sortagrad_batches`` (§3.3); the learning rate follows ``learning_rate`` over
    ``config.epochs`` epochs. ``state`` is brought up to date *before* each yield, so a caller may stop
    between two yields (Ctrl-C, a step budget, a time budget), save ``state`` and later resume exactly.
    When the generator is exhausted the epoch is complete; the caller evaluates and calls
    ``state.end_epoch(record)``. Under torchrun (a process group is initialised) each process trains on
    its share of every global batch of ``config.batch_size`` utterances (``distributed_batches``).
    ``amp``: mixed precision (``train_step``); in float16, pass one ``grad_scaler`` for the whole run (a
    new one is made for the epoch otherwise, and spends a few skipped steps finding its scale again).
    """
    device = next(model.parameters()).device
    scaler = grad_scaler(device, amp) if scaler is None else scaler
    lengths = [spec.shape[-1] for spec in spectrograms]
    rank, world_size = distributed_world()
    batches = distributed_batches(
        lengths, config.batch_size, state.epoch, config.seed, config.sortagrad, rank, world_size
    )
    total_steps = config.epochs * len(batches)
    alphabet = unwrapped(model).config.alphabet
    for index in range(state.batch, len(batches)):
        chosen = batches[index]
        batch = collate([spectrograms[i] for i in chosen], [texts[i] for i in chosen], alphabet).to(device)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(state.step, total_steps, config.lr, config.lr_floor)
        loss = train_step(model, optimizer, batch, config.clip, amp, scaler)
        state.step, state.batch = state.step + 1, index + 1
        if math.isfinite(loss):
            state.epoch_losses.append(loss)
        else:
            state.epoch_skipped += 1
        yield loss


def fit(
    model: DeepSpeech2,
    train: tuple[Sequence[Tensor], Sequence[str]],
    config: TrainConfig,
    dev: dict[str, tuple[Sequence[Tensor], Sequence[str]]] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    state: TrainState | None = None,
    max_seconds: float | None = None,
    on_step: Callable[[TrainState, float], None] | None = None,
    log: Callable[[str], None] | None = print,
    amp: bool = False,
    should_stop: Callable[[TrainState], bool] | None = None,
    on_epoch: Callable[[TrainState, dict], None] | None = None,
) -> TrainState:
    """Train for ``config.epochs`` epochs, evaluating on ``dev`` after each: the one training loop.

    Each epoch's record: ``epoch``, ``train_loss`` (mean of its finite losses), ``skipped_batches``,
    ``steps`` (so far), greedy ``{"cer", "wer"}`` per dev split, and ``seconds``. Hooks, all optional:
    ``on_step(state, loss)`` after every step (a progress bar, a learning curve); ``on_epoch(state,
    record)`` after each epoch is filed (print it, save a checkpoint); ``should_stop(state)`` before every
    batch of an epoch but the first one finished: True returns at once, mid-epoch, with ``state`` ready for
    a checkpoint that resumes exactly (Ctrl-C, a step budget). ``max_seconds`` instead ends training at
    the next step past the budget and files that part-epoch's record. ``amp``: mixed precision
    (``train_step``). Under torchrun the model trains through ``distribute`` and rank 0 alone evaluates.
    Raises ``FloatingPointError`` when every batch of an epoch gave a NaN/inf loss.

    Returns:
        The ``TrainState`` (``state.history`` holds the records; ``state.epoch < config.epochs`` if stopped).
    """
    optimizer = optimizer or make_optimizer(model, config)
    state = state or TrainState()
    scaler = grad_scaler(next(model.parameters()).device, amp)  # one for the run (float16 only)
    trained = distribute(model)  # DistributedDataParallel under torchrun, else the model itself
    rank, world_size = distributed_world()
    steps = steps_per_epoch(len(train[1]), config.batch_size, world_size)

    def stopping() -> bool:  # the epoch's last batch always runs: an epoch is then evaluated whole
        return should_stop is not None and state.batch < steps and should_stop(state)

    began = time.perf_counter()
    out_of_time = False
    while state.epoch < config.epochs and not out_of_time:
        epoch_began = time.perf_counter()
        if stopping():
            return state
        for loss in train_epoch(trained, optimizer, *train, config, state, amp, scaler):
            if on_step is not None:
                on_step(state, loss)
            if max_seconds is not None and time.perf_counter() - began > max_seconds:
                out_of_time = True
                break
            if stopping():
                return state
        if not state.epoch_losses:
            raise FloatingPointError(
                f"every batch of epoch {state.epoch + 1} gave a NaN/inf loss; lower the learning rate"
            )
        record = {
            "epoch": state.epoch + 1,
            "train_loss": float(np.mean(state.epoch_losses)),
            "skipped_batches": state.epoch_skipped,
            "steps": state.step,
        }
        for name, (dev_spectrograms, dev_texts) in (dev or {}).items() if rank == 0 else ():
            result = evaluate(model, dev_spectrograms, dev_texts)
            record[name] = {k: result[k] for k in ("cer", "wer") if k in result}  # no WER without spaces
        record["seconds"] = time.perf_counter() - epoch_began
        state.end_epoch(record)
        if log is not None:
            errors = "  ".join(
                f"{name} CER {100 * record[name]['cer']:.2f}%" for name in record if name in (dev or {})
            )
            log(
                f"epoch {record['epoch']}  loss {record['train_loss']:.3f}  {errors}  {record['seconds']:.1f} s"
            )
        if on_epoch is not None:
            on_epoch(state, record)
    model.eval()
    return state


# --- 12.3 Evaluation ---


@torch.no_grad()
def predict(model: DeepSpeech2, spectrograms: Sequence[Tensor], batch_size: int = 32):
    """Log-probabilities for a list of ``(F, T_i)`` spectrograms: a list of ``(T'_i, C)`` CPU tensors."""
    model.eval()
    device = next(model.parameters()).device
    order = np.argsort([spec.shape[-1] for spec in spectrograms])  # similar lengths batch together
    outputs: list[Tensor | None] = [None] * len(spectrograms)
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        padded, lengths = pad_spectrograms([spectrograms[i] for i in indices])
        log_probs, out_lengths = model(padded.to(device), lengths.to(device))
        for row, index in enumerate(indices):
            outputs[index] = log_probs[row, : out_lengths[row]].float().cpu()
    return outputs


def evaluate(
    model: DeepSpeech2,
    spectrograms: Sequence[Tensor],
    texts: Sequence[str],
    lm: NGramLM | None = None,
    beam_width: int = 0,
    alpha: float = 0.0,
    beta: float = 0.0,
    batch_size: int = 32,
    decoder: Callable[[Tensor], str] | None = None,
    workers: int = 1,
) -> dict:
    """Corpus CER and WER with greedy decoding, and with beam search (+ LM) when ``beam_width > 0``.

    Texts are read in the model's alphabet (``model.config.alphabet``). Without spaces between words
    (Mandarin) there is no WER: CER is the metric, and the result has no ``wer`` / ``beam_wer``.
    ``decoder`` (e.g. ``flashlight_decoder(...)``), when given, replaces ``prefix_beam_search`` for the
    ``beam_*`` results: ``decoder(log_probs (T, C)) -> str``. ``workers`` > 1 runs ``prefix_beam_search``
    (pure Python, one utterance at a time) in that many forked processes; the results are the same.
    """
    alphabet = unwrapped(model).config.alphabet
    texts = [alphabet.normalize(text) for text in texts]  # the references as the model writes them
    log_probs = predict(model, spectrograms, batch_size)
    greedy = [greedy_decode(lp, alphabet=alphabet)[0] for lp in log_probs]

    def rates(hypotheses: list[str], prefix: str = "") -> dict:
        cer = {f"{prefix}cer": character_error_rate(texts, hypotheses)}
        return cer | ({f"{prefix}wer": word_error_rate(texts, hypotheses)} if alphabet.spaced else {})

    result = {**rates(greedy), "hypotheses": greedy}
    if decoder is not None:
        beam = [decoder(lp) for lp in log_probs]
    elif beam_width > 0:
        if lm is not None:
            lm.check_alphabet(alphabet)
        search = (beam_width, lm, alpha, beta, alphabet)
        frames = [lp.numpy() for lp in log_probs]  # numpy: the workers must not run torch kernels
        beam = map_in_processes(_beam_search_items, (frames, search), len(frames), workers)
    if beam_width > 0 or decoder is not None:
        result |= {**rates(beam, "beam_"), "beam_hypotheses": beam}
    return result


def error_rates(result: dict, prefix: str = "") -> str:
    """``evaluate``'s rates as a line, e.g. "CER  0.31% WER  0.52%" (``prefix="beam_"``: the beam's);
    without WER where the text has no spaces between words (Mandarin)."""
    rates = [f"{n.upper()} {100 * result[prefix + n]:5.2f}%" for n in ("cer", "wer") if prefix + n in result]
    return " ".join(rates)


def _beam_search_items(recipe: tuple, indices: Iterable[int]) -> list[str]:
    """``prefix_beam_search`` on utterances ``indices`` of ``recipe = (frames, (beam_width, lm, alpha, beta, alphabet))``."""
    frames, (beam_width, lm, alpha, beta, alphabet) = recipe
    return [prefix_beam_search(frames[i], beam_width, lm, alpha, beta, alphabet=alphabet) for i in indices]


# --- 12.4 Checkpoints, written atomically ---


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Write a file so that readers see the old file or the new one, never half of one.

    ``write(temporary_path)`` writes the content to a temporary file in the destination's folder, which
    is then renamed over ``path`` (atomic on POSIX and Windows). On any error the temporary file is
    removed and the old file, if any, is left as it was.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    os.close(handle)
    try:
        write(temporary)
        umask = os.umask(0)  # mkstemp made it private (0600): give it the usual permissions
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """``atomic_write`` for a text file (UTF-8)."""

    def write(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8") as file:
            file.write(text)

    atomic_write(path, write)


CHECKPOINT_FORMAT = "deep-speech-2-lesson/1"


def save_checkpoint(path: str | os.PathLike, model: DeepSpeech2, **state) -> None:
    """Save the model (config + weights) and any training state, atomically.

    ``state`` may hold an optimizer/scheduler ``state_dict()``, the epoch, metrics: anything
    ``torch.load(weights_only=True)`` can read back (tensors, numbers, strings, lists, dicts). The file is
    written next to its destination and renamed over it, so a crash mid-save leaves the old checkpoint.
    """
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": model.config.to_dict(),
        "model": model.state_dict(),
        **state,
    }
    atomic_write(path, lambda temporary: torch.save(payload, temporary))


def load_checkpoint(
    path: str | os.PathLike, model: DeepSpeech2 | None = None, map_location="cpu"
) -> tuple[DeepSpeech2, dict]:
    """Load a checkpoint safely; returns ``(model, state)``.

    Uses ``torch.load(weights_only=True)``: a file that would run code when unpickled is refused. If
    ``model`` is given, its architecture must match the checkpoint's; otherwise a model is built from the
    saved config, alphabet included (an older checkpoint without one is read as English, with a warning).
    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` (saying what to do) for a truncated,
    corrupt, foreign or mismatched one (another architecture or another alphabet).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path!r}; train one with `python train_minimal.py`")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # pickle, zip and torch errors all mean the same thing to a learner
        text = str(error)
        message = text.splitlines()[0] if text else type(error).__name__
        if "GLOBAL" in text or "Unsupported global" in text:  # a pickled class or function: code
            raise ValueError(
                f"{path!r} was refused: it holds Python objects that could run code when loaded "
                "(torch.load(weights_only=True) allows only tensors and plain data). Only load "
                "checkpoints written by save_checkpoint from a source you trust."
            ) from error
        detail = next((line for line in text.splitlines() if "Unsupported" in line), message)
        raise ValueError(
            f"{path!r} is not a readable checkpoint (truncated or corrupt?): {detail.strip()}. "
            "Re-train, or resume from an earlier checkpoint."
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path!r} is not a checkpoint of this lesson (format {CHECKPOINT_FORMAT!r}); "
            "was it written by implementation.save_checkpoint?"
        )
    saved = dict(payload.get("config") or {})
    if "alphabet" not in saved:  # written before the alphabet was part of the config: English's 29 symbols
        saved["alphabet"] = ENGLISH
        warnings.warn(
            f"{path!r} stores no alphabet (an older checkpoint); reading it as English ({ENGLISH.num_classes} "
            "classes). Save it again (save_checkpoint) to store the alphabet with it.",
            stacklevel=2,
        )
    try:
        config = DS2Config(**saved)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path!r} holds an invalid model config: {error}") from error
    if model is None:
        model = DeepSpeech2(config)
    elif model.config != config:
        names = [f.name for f in dataclasses.fields(DS2Config)]
        differences = [
            f"{k}: checkpoint {getattr(config, k)!r} vs model {getattr(model.config, k)!r}"
            for k in names
            if getattr(config, k) != getattr(model.config, k)
        ]
        raise ValueError(
            f"{path!r} holds a different architecture ({'; '.join(differences)}). Build the model from the "
            "checkpoint (load_checkpoint(path) without a model) or train a new one with these flags."
        )
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as error:
        raise ValueError(
            f"{path!r}: weights do not fit the saved config: {str(error).splitlines()[0]}"
        ) from error
    state = {k: v for k, v in payload.items() if k not in ("format", "config", "model")}
    return model, state


# ----------------------------------------------------------------------------------------------------------
# 13. Inference and files: checking and loading audio, long recordings, transcribe()
# ----------------------------------------------------------------------------------------------------------
# Everything between a file on disk (or a waveform from a microphone) and the model: validation with
def to_mono(waveform: Tensor) -> Tensor:
    """Down-mix ``(channels, samples)`` to ``(samples,)`` by averaging; ``(samples,)`` passes through.

    A 2-D input is read as channels-first, the layout of ``torchaudio.load``; a ``(samples, channels)``
    array with few columns (as ``soundfile.read`` returns) is transposed first.
    """
    if not isinstance(waveform, Tensor):
        waveform = torch.as_tensor(np.asarray(waveform))
    if waveform.dim() == 1:
        return waveform
    if waveform.dim() != 2:
        raise ValueError(
            f"expected (samples,) or (channels, samples) audio, got shape {tuple(waveform.shape)}"
        )
    # (samples, channels): soundfile's layout. Not (channels, 0): an empty file read channels-first.
    if 0 < waveform.shape[1] < waveform.shape[0]:
        waveform = waveform.T
    return waveform.float().mean(dim=0)


def write_wav(path: str | Path, waveform: torch.Tensor, sample_rate: int = SAMPLE_RATE) -> None:
    """Writes a mono waveform `(samples,)` as a 16-bit PCM WAV file, for listening."""
    if waveform.dim() != 1:
        raise ValueError(f"write_wav needs a mono waveform of shape (samples,), got {tuple(waveform.shape)}")
    samples = waveform.detach().cpu().float().clamp(-1.0, 1.0).numpy()
    soundfile.write(str(path), samples, sample_rate, subtype="PCM_16")


def load_audio(path: str | os.PathLike) -> tuple[Tensor, int]:
    """Read an audio file with soundfile: ``(channels, samples)`` float32 in [-1, 1] and the sample rate."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no audio file at {path!r}")
    try:
        data, sample_rate = soundfile.read(path, dtype="float32", always_2d=True)  # (samples, channels)
    except Exception as error:
        raise ValueError(f"{path!r} is not a readable audio file (WAV, FLAC, OGG...): {error}") from error
    return torch.from_numpy(data.T.copy()), int(sample_rate)


def chunk_boundaries(
    waveform: Tensor,
    sample_rate: int,
    max_chunk_s: float = 20.0,
    search_s: float = 3.0,
    min_chunk_s: float = 1.0,
) -> list[tuple[int, int]]:
    """Cut a long mono recording into chunks of at most ``max_chunk_s`` seconds, at quiet moments.

    Each cut falls in the middle of the quietest 10 ms frame among the last ``search_s`` seconds of a
    chunk - in speech, usually a pause between words - so few words are cut in two. The last chunk is kept
    at least ``min_chunk_s`` long, so no piece is too short to featurize.

    Args:
        waveform: ``(samples,)`` mono audio.
        sample_rate: Hz.

    Returns:
        ``[(start, end), ...]`` sample indices: contiguous, covering every sample exactly once.
    """
    if not 0.01 <= min_chunk_s < search_s - 0.01 < max_chunk_s:
        raise ValueError(
            f"need 0.01 <= min_chunk_s < search_s - 0.01 < max_chunk_s, got {min_chunk_s}, {search_s}, "
            f"{max_chunk_s} s"
        )
    frame = max(1, round(0.010 * sample_rate))  # 10 ms
    max_length, search = round(max_chunk_s * sample_rate), round(search_s * sample_rate)
    min_length = round(min_chunk_s * sample_rate)
    total = waveform.shape[-1]
    chunks, start = [], 0
    while total - start > max_length:
        low = start + max_length - search
        high = min(start + max_length, total - min_length)  # leave the last chunk at least min_length
        count = (high - low) // frame
        energy = waveform[low : low + count * frame].reshape(count, frame).square().sum(dim=1)  # (count,)
        cut = low + int(torch.argmin(energy)) * frame + frame // 2
        chunks.append((start, cut))
        start = cut
    chunks.append((start, total))
    return chunks


@torch.no_grad()
def transcribe(
    model: DeepSpeech2,
    waveform: Tensor,
    sample_rate: int,
    lm: NGramLM | None = None,
    beam_width: int = 0,
    alpha: float = 0.0,
    beta: float = 0.0,
    max_chunk_s: float = 20.0,
    decoder: Callable[[Tensor], str] | None = None,
) -> str:
    """Audio in, text out: down-mix to mono, cut into chunks, resample to the model's rate, featurize, decode.

    Recordings longer than ``max_chunk_s`` seconds are cut at quiet moments (``chunk_boundaries``); each
    chunk is decoded on its own and the texts are joined with spaces. Memory then stays that of one
    chunk however long the recording, and each chunk's normalisation statistics (``normalize_spectrogram``)
    come from a stretch about as long as the utterances the model was trained on. A silent chunk inside
    a longer recording contributes nothing.

    Sample rates below the model's (say 8 kHz telephone audio for a 16 kHz model) are upsampled and
    transcribed, with a ``UserWarning``: upsampling cannot restore the content above half the original
    rate (4-8 kHz for 8 kHz audio, where fricatives like "s" and "f" live), so expect more errors. It
    is not refused because a degraded transcript is still useful, and the caller is told.

    Args:
        waveform: ``(samples,)`` or ``(channels, samples)``, any sample rate.
        sample_rate: Hz.
        beam_width: 0 for greedy decoding, else prefix beam search (with ``lm``, ``alpha``, ``beta``).
        max_chunk_s: longest piece given to the model at once, seconds.
        decoder: ``decoder(log_probs (T, C)) -> str`` (e.g. ``flashlight_decoder``), used instead of the
            above when given.

    Raises:
        ValueError: empty, too short, NaN/inf or silent audio (see ``check_waveform``, ``featurize``).
    """
    import torchaudio.functional as AF

    if lm is not None and beam_width > 0 and decoder is None:
        lm.check_alphabet(model.config.alphabet)
    model_rate = model.config.sample_rate
    waveform = check_waveform(to_mono(waveform), sample_rate, model.config.window_ms)
    if is_silent(waveform):
        raise ValueError(_silent_message(waveform))
    if sample_rate < model_rate:
        warnings.warn(
            f"the audio is sampled at {sample_rate} Hz, below the model's {model_rate} Hz: upsampling "
            f"cannot restore what was above {sample_rate // 2} Hz, so expect more errors",
            stacklevel=3,  # the caller's line (1 is this one, 2 torch.no_grad's wrapper)
        )
    texts = []
    for start, end in chunk_boundaries(waveform, sample_rate, max_chunk_s):
        chunk = waveform[start:end]  # (samples,)
        if is_silent(chunk):  # a pause in a longer recording (a wholly silent one was refused above)
            continue
        if sample_rate != model_rate:  # per chunk, so memory stays that of one chunk
            chunk = AF.resample(chunk, sample_rate, model_rate)
        spec = featurize(
            chunk, model_rate, model_rate, model.config.spectrogram_floor_db, model.config.causal_prior
        )
        (log_probs,) = predict(model, [spec])
        if decoder is not None:
            text = decoder(log_probs)
        elif beam_width > 0:
            text = prefix_beam_search(log_probs, beam_width, lm, alpha, beta, alphabet=model.config.alphabet)
        else:
            text = greedy_decode(log_probs, alphabet=model.config.alphabet)[0]
        if text.strip():
            texts.append(text.strip())  # a chunk may begin or end in a word gap: one space between chunks
    return " ".join(texts)


# --- 13.1 Streaming: transcribing audio as it arrives (§3.7, §7) ---
# A unidirectional model with a lookahead convolution (§3.7) needs only a bounded future, so it can answer
# while the speaker is still speaking, if every stage before it needs no more future than it does: the
# spectrogram's frames are complete once their 20 ms window has arrived, the causal normalisation uses only
# what was heard (section 2), each convolution needs half its kernel of future frames, the forward
# recurrence none, and the lookahead its ``context`` frames. So a stream carries, from chunk to chunk, the
# samples of an unfinished window, the normaliser's running sums, each conv layer's last input frames, each
# recurrent layer's h_{t-1} and the lookahead's last frames, and emits each output frame as soon as its
# inputs exist. At the end of the stream the right-hand zero padding that the whole-utterance forward
# uses is fed in, so chunk by chunk gives what the whole recording gives (tests/test_streaming.py).


def algorithmic_latency_ms(config: DS2Config) -> float:
    """Audio that must arrive after an output frame's own window before that frame can be computed, in ms:
    the conv layers' right context plus the lookahead convolution's (network latency; compute is extra)."""
    needed, strides = config.lookahead_context, 1  # output frames past output frame 0
    for index in reversed(range(len(config.conv_channels))):
        stride = config.conv_time_stride if index == 0 else PAPER_CONV_STRIDES[index][1]
        needed, strides = needed * stride + PAPER_CONV_KERNELS[index][1] // 2, strides * stride
    return needed * config.stride_ms  # input frames past frame 0, each one stride of the STFT later


class StreamingRecognizer:
    """Greedy transcripts of ``B`` streams as their audio arrives, then beam search (+ LM) at the end.

    ``feed(chunk)`` takes the next samples (``(samples,)`` for one stream, ``(B, samples)`` for ``B``
    aligned streams; any length, even less than one STFT window) and returns the characters that became
    final: greedy decoding of the frames that could be computed. ``finish()`` flushes what is left (the
    right-hand padding of the whole-utterance forward) and returns the last characters; ``log_probs`` then
    holds every output frame, ``(T', C)`` per stream, equal to what ``model`` computes on the whole
    recording; ``transcript(lm, beam_width, alpha, beta)`` decodes them with prefix beam search.
    The model must be unidirectional and normalise causally (``DS2Config.normalize="causal"``).
    """

    def __init__(self, model: DeepSpeech2, batch: int = 1):
        config = model.config
        if config.bidirectional:
            raise ValueError(
                "a bidirectional model reads every utterance backwards from its end, so it cannot stream; "
                "train a forward-only one: train_minimal.py --unidirectional --lookahead 5 --normalize causal"
            )
        if config.normalize != "causal":
            raise ValueError(
                "this model normalises each utterance with statistics of the whole recording, so it cannot "
                "stream; train one with --normalize causal (statistics of the audio heard so far)"
            )
        self.model, self.config, self.batch = model.eval(), config, batch
        self.window, self.hop = frame_parameters(config.sample_rate, config.window_ms, config.stride_ms)
        self.samples = torch.zeros(batch, 0)  # received, not yet part of a complete frame
        self.normalizer = CausalNormalizer(config.causal_prior, batch, config.spectrogram_floor_db)
        # Per conv layer: its last input frames (time last), starting at absolute frame ``start``, and the
        # input frames received so far. Before the first frame: the layer's zero padding.
        self.conv_state = []
        for conv in model.conv.layers:
            pad = conv.padding[-1]
            shape = (batch, conv.in_channels, *([self._bins(conv)] if conv.weight.dim() == 4 else []), pad)
            self.conv_state.append({"frames": torch.zeros(shape), "start": -pad, "received": 0})
        self.hidden = [torch.zeros(batch, rnn.hidden_size) for rnn in model.rnns]  # h_{t-1} per layer
        self.ahead = torch.zeros(batch, 0, config.rnn_hidden)  # recurrent outputs awaiting their future
        self.outputs: list[Tensor] = []  # (B, t, C) per step
        self.last_label = [BLANK] * batch
        self.finished = False

    def _bins(self, conv) -> int:
        """Frequency rows into a 2D conv layer: the spectrogram's bins through the layers before it."""
        rows = self.config.num_freq
        for layer in self.model.conv.layers:
            if layer is conv:
                return rows
            rows = conv_output_size(rows, layer.kernel_size[0], layer.stride[0], layer.padding[0])
        raise ValueError("not a layer of this model")

    @torch.no_grad()
    def feed(self, chunk: Tensor) -> str | list[str]:
        if self.finished:
            raise ValueError("this stream has finished; start a new StreamingRecognizer")
        chunk = torch.as_tensor(chunk, dtype=torch.float32)
        single = chunk.dim() == 1
        chunk = chunk.reshape(self.batch, -1)  # (B, samples)
        if not torch.isfinite(chunk).all():
            raise ValueError("the audio contains NaN or inf samples")
        self.samples = torch.cat([self.samples, chunk], dim=1)
        frames = num_frames(
            self.samples.shape[1], self.config.sample_rate, self.config.window_ms, self.config.stride_ms
        )
        if frames == 0:
            return self._text([[] for _ in range(self.batch)], single)
        used = self.samples[:, : (frames - 1) * self.hop + self.window]
        self.samples = self.samples[:, frames * self.hop :]  # the part of a frame still to come
        spec = log_spectrogram(used, self.config.sample_rate, self.config.window_ms, self.config.stride_ms)
        return self._text(self._network(self.normalizer(spec)), single)  # (B, F, t) in

    @torch.no_grad()
    def finish(self) -> str | list[str]:
        """End of the streams: the right-hand zero padding goes in, the last frames come out."""
        if self.conv_state[0]["received"] == 0:
            raise ValueError("the stream is too short: it never filled one analysis window")
        self.finished = True
        return self._text(self._network(None), self.batch == 1)

    @property
    def log_probs(self) -> list[Tensor]:
        """Every output frame so far, ``(T', C)`` per stream."""
        classes = self.config.num_classes
        frames = torch.cat(self.outputs, dim=1) if self.outputs else torch.zeros(self.batch, 0, classes)
        return list(frames)

    def transcript(
        self, lm: NGramLM | None = None, beam_width: int = 32, alpha: float = 0.0, beta: float = 0.0
    ):
        """The final transcript of each stream (after ``finish``): prefix beam search with the LM (§3.8)."""
        alphabet = self.config.alphabet
        if lm is not None:
            lm.check_alphabet(alphabet)
        texts = [
            prefix_beam_search(lp, beam_width, lm, alpha, beta, alphabet=alphabet) for lp in self.log_probs
        ]
        return texts[0] if self.batch == 1 else texts

    def _network(self, spec: Tensor | None) -> list[list[int]]:
        """New normalised frames (None: the end) through the network; each stream's newly final labels."""
        final = spec is None
        x = self.conv_state[0]["frames"][..., :0] if final else spec  # (B, F, t), or no new frames
        for conv, norm, state in zip(
            self.model.conv.layers, self.model.conv.norms, self.conv_state, strict=True
        ):
            if conv.weight.dim() == 4 and x.dim() == 3:
                x = x.unsqueeze(1)  # (B, 1, F, t): one input channel
            x = self._conv_step(conv, norm, state, x, final)  # (B, K, F', t') or (B, K, t')
        if x.dim() == 4:  # (B, K, F', t') -> (B, t', K * F'), as ConvFrontEnd
            x = x.permute(0, 3, 1, 2).reshape(x.shape[0], x.shape[3], x.shape[1] * x.shape[2])
        else:
            x = x.transpose(1, 2)  # (B, t', K)
        for index, rnn in enumerate(self.model.rnns):
            x = self._recurrent_step(index, rnn, x)  # (B, t', H)
        if self.model.lookahead is not None:
            x = self._lookahead_step(x, final)  # (B, t'', H)
        log_probs = F.log_softmax(self.model.fc(x), dim=-1)  # (B, t'', C)
        self.outputs.append(log_probs)
        labels = []
        for stream, best in enumerate(log_probs.argmax(dim=-1).tolist()):  # greedy: collapse, drop blanks
            emitted = []
            for label in best:
                if label != BLANK and label != self.last_label[stream]:
                    emitted.append(label)
                self.last_label[stream] = label
            labels.append(emitted)
        return labels

    def _conv_step(self, conv, norm, state: dict, x: Tensor, final: bool) -> Tensor:
        """Every output frame of one conv layer whose inputs have arrived (all of them when ``final``)."""
        pad, stride = conv.padding[-1], conv.stride[-1]
        state["received"] += x.shape[-1]
        last_needed = state["received"] - 1
        if final:  # the end: the layer's right-hand zero padding, then as many outputs as a whole forward
            x = torch.cat([x, x.new_zeros(*x.shape[:-1], pad)], dim=-1)
            last_needed += pad
        frames = torch.cat([state["frames"], x], dim=-1)  # absolute frames start .. start + len - 1
        first = (state["start"] + pad + stride - 1) // stride  # the first output frame not yet computed
        last = min((last_needed - pad) // stride, (state["received"] - 1) // stride)  # the last now possible
        if last < first:
            state["frames"] = frames
            return frames.new_zeros(*self._out_shape(conv, frames), 0)
        begin, end = first * stride - pad - state["start"], last * stride + pad - state["start"] + 1
        if conv.weight.dim() == 4:  # frequency x time, the frequency axis padded as in the whole forward
            y = F.conv2d(
                frames[..., begin:end], conv.weight, conv.bias, (conv.stride[0], stride), (conv.padding[0], 0)
            )
        else:
            y = F.conv1d(frames[..., begin:end], conv.weight, conv.bias, stride)
        keep = (last + 1) * stride - pad - state["start"]  # the next output's first input frame
        state["frames"], state["start"] = frames[..., keep:], (last + 1) * stride - pad
        if isinstance(norm, MaskedBatchNorm):  # eval mode: the running estimates, as in the whole forward
            channels_last = y.movedim(1, -1)  # (B, F', t', K) or (B, t', K)
            y = norm.clipped_relu(
                channels_last, torch.ones(channels_last.shape[:-1], dtype=torch.bool)
            ).movedim(-1, 1)
        else:
            y = clipped_relu(y)
        return y

    def _out_shape(self, conv, frames: Tensor) -> tuple:
        if conv.weight.dim() == 4:
            rows = conv_output_size(frames.shape[2], conv.kernel_size[0], conv.stride[0], conv.padding[0])
            return (frames.shape[0], conv.out_channels, rows)
        return (frames.shape[0], conv.out_channels)

    def _recurrent_step(self, index: int, rnn, x: Tensor) -> Tensor:
        """The forward recurrence over the new frames, from the h_{t-1} the last chunk left (section 5)."""
        if x.shape[1] == 0:
            return x.new_zeros(x.shape[0], 0, rnn.hidden_size)
        lengths = torch.full((x.shape[0],), x.shape[1])
        if isinstance(rnn, GRULayer):
            a = x @ rnn._weights("weight_ih")[0].T  # W h^{l-1}: (B, t, 3H)
            a = rnn.norm(a, lengths) if rnn.norm is not None else a + rnn._weights("bias_ih")[0]
            U, b = rnn._weights("weight_hh")[0], rnn._weights("bias_hh")[0]
            step = lambda a_t, h: gru_step(a_t, h, U, b)  # noqa: E731
        else:
            a = rnn.input_projection(x)  # W h^{l-1} (+ b): (B, t, H)
            a = rnn.norm(a, lengths) if rnn.norm is not None else a
            step = lambda a_t, h: simple_rnn_step(a_t, h, rnn.recurrent[0].weight)  # noqa: E731
        outputs, h = [], self.hidden[index]
        for t in range(a.shape[1]):
            h = step(a[:, t], h)
            outputs.append(h)
        self.hidden[index] = h
        return torch.stack(outputs, dim=1)  # (B, t, H)

    def _lookahead_step(self, x: Tensor, final: bool) -> Tensor:
        """Row convolution (§3.7): frame t once frames t..t+context exist; zeros after the end, as ever."""
        context = self.model.lookahead.context
        frames = torch.cat([self.ahead, x], dim=1)  # (B, waiting + new, H)
        if final:
            frames = torch.cat([frames, frames.new_zeros(frames.shape[0], context, frames.shape[2])], dim=1)
        ready = max(frames.shape[1] - context, 0)
        weight = self.model.lookahead.weight  # (H, context + 1)
        out = sum(frames[:, j : j + ready] * weight[:, j] for j in range(context + 1))  # (B, ready, H)
        self.ahead = frames[:, ready:]
        return out if ready else frames.new_zeros(frames.shape[0], 0, frames.shape[2])

    def _text(self, labels: list[list[int]], single: bool):
        texts = [self.config.alphabet.decode(row) for row in labels]
        return texts[0] if single else texts


def stream_recording(
    model: DeepSpeech2, waveform: Tensor, sample_rate: int, chunk_ms: float = 80.0
) -> tuple[list[tuple[float, str, float]], StreamingRecognizer]:
    """Play a recording through a ``StreamingRecognizer`` in chunks of ``chunk_ms``, as a microphone would.

    Returns ``(events, recognizer)``: one event per chunk and one for the end of the stream, ``(seconds of
    audio heard, greedy transcript so far, seconds of compute for that chunk)``; the recognizer is finished
    (``recognizer.transcript(lm, ...)`` decodes its frames with beam search).
    """
    import torchaudio.functional as AF

    waveform = check_waveform(to_mono(waveform), sample_rate, model.config.window_ms)
    if sample_rate != model.config.sample_rate:  # a file is resampled whole; a live stream would per chunk
        waveform, sample_rate = (
            AF.resample(waveform, sample_rate, model.config.sample_rate),
            model.config.sample_rate,
        )
    recognizer, step = StreamingRecognizer(model), max(1, round(sample_rate * chunk_ms / 1000))
    events, text = [], ""
    for start in range(
        0, len(waveform) + 1, step
    ):  # the last "chunk" (start == len) is the end of the stream
        began = time.perf_counter()
        text += (
            recognizer.feed(waveform[start : start + step]) if start < len(waveform) else recognizer.finish()
        )
        heard = min(start + step, len(waveform)) / sample_rate
        events.append((heard, text, time.perf_counter() - began))
    if not recognizer.finished:
        began = time.perf_counter()
        text += recognizer.finish()
        events.append((len(waveform) / sample_rate, text, time.perf_counter() - began))
    return events, recognizer


def stream_report(events: list[tuple[float, str, float]], config: DS2Config, chunk_ms: float) -> list[str]:
    """Lines for ``stream_recording``'s events: the latency budget, the transcript each time it grew (in
    audio time: when it was known), and the compute per chunk against the audio's duration."""
    latency = algorithmic_latency_ms(config)
    lookahead = config.lookahead_context * config.stride_ms * config.conv_time_stride
    lines = [
        f"streaming in {chunk_ms:g} ms chunks: each output frame waits for {latency:g} ms more audio "
        f"(conv context {latency - lookahead:g} ms + lookahead {lookahead:g} ms), then for its compute"
    ]
    previous = ""
    for heard, text, _ in events:
        if text != previous:
            lines.append(f"{heard:6.2f} s  {text}")
        previous = text
    compute = np.array([seconds for _, _, seconds in events]) * 1000  # ms
    lines.append(
        f"compute per chunk: median {np.median(compute):.1f} ms, p98 {np.percentile(compute, 98):.1f} ms; "
        f"real-time factor {compute.sum() / 1000 / max(events[-1][0], 1e-9):.3f} (compute / audio)"
    )
    return lines


if __name__ == "__main__":
    # A tour: write a few synthetic utterances to listen to, time the generator, run the model once.
    import time as clock

    out_folder = "synthetic_samples"
    os.makedirs(out_folder, exist_ok=True)
    demo_rng = np.random.default_rng(0)
    for number in range(3):
        demo_speaker, demo_text = random_speaker(demo_rng), random_sentence(demo_rng)
        demo_audio = synthesize_speech(demo_text, demo_speaker, demo_rng)
        demo_path = os.path.join(out_folder, f"synthetic_{number}.wav")
        write_wav(demo_path, demo_audio)
        print(f"{demo_path}  {len(demo_audio) / SAMPLE_RATE:.2f} s  {demo_text!r}  {demo_speaker}")
    began = clock.perf_counter()
    demo_split = make_split("speed", 200, make_speaker_pool(50, 1), seed=2)
    elapsed = clock.perf_counter() - began
    print(f"synthesis: {demo_split.durations_s().sum() / elapsed:.0f}x faster than real time on one process")
    model = DeepSpeech2()
    spec = featurize(demo_split.waveforms[0])
    log_probs, lengths = model(spec[None], torch.tensor([spec.shape[-1]]))
    print(f"DeepSpeech2 with {model.num_parameters():,} parameters (untrained)")
    print(
        f"{len(demo_split.waveforms[0]) / SAMPLE_RATE:.2f} s of audio -> spectrogram {tuple(spec.shape)} -> log-probs {tuple(log_probs.shape)}"
    )
