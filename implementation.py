"""Deep Speech 2 in one module: spectrogram, model, CTC, decoders, language model, metrics, data.

A reproduction, at laptop scale, of

    Amodei et al., "Deep Speech 2: End-to-End Speech Recognition in English and Mandarin", 2015
    (arXiv:1512.02595).

The module follows the paper's order. Each section is fenced with a rule and names the paper section it
implements; where we depart from the paper the comment says so (see also paper_notes.md).

    1. Text (§3.1)                    the 29-symbol English alphabet, blank = 0
    2. Spectrogram (§3.1)             log power spectrogram, 20 ms Hann windows, 10 ms stride; batching
    3. Convolutional front-end (§3.5) 1-3 layers of 2D convolution over (frequency, time), Table 4 kernels
    4. Sequence-wise BatchNorm (§3.2) on the input-to-hidden projection W h^{l-1} only, masked statistics
    5. Recurrent stack (§3.2-3.4)     bidirectional GRU or simple RNN; lookahead convolution (§3.7)
    6. The model                      DS2Config + DeepSpeech2: (B, F, T) spectrograms -> (B, T', 29) log-probs
    7. CTC loss (§3.1)                F.ctc_loss wrapper and a from-scratch alpha/beta implementation
    8. Decoders (§3.8)                greedy, and CTC prefix beam search with LM shallow fusion; flashlight's
                                      C++ beam search with a KenLM word LM (torchaudio) for large LMs
    9. Language model (§3.8)          word n-gram with interpolated Kneser-Ney smoothing, ARPA files
   10. Metrics                        edit distance, corpus WER and CER
   11. Synthetic speech               letters as phones, speakers, coarticulation, noise, train/dev splits
   12. Training                       batching, SortaGrad (§3.3), the one training loop, evaluation,
                                      checkpoints; data parallelism over processes with torchrun (§4.1)
   13. Inference and files            audio checks and files, long recordings, transcribe()

Shapes use one notation throughout, one letter per meaning:
    B batch          T frames (T' after the conv strides)     S transcript length (L = 2S + 1 for CTC)
    F frequency bins (F' after the conv strides)              K conv channels
    I features into a recurrent layer (K * F' for the first)  H hidden size    D directions (1 or 2)
    C output classes (29: the alphabet and the blank)

Importing this module runs nothing; demos live behind ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import dataclasses
import functools
import locale
import math
import os
import shutil
import tempfile
import threading
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
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

# ----------------------------------------------------------------------------------------------------------
# 1. Text: the output alphabet (§3.1)
# ----------------------------------------------------------------------------------------------------------
# English DS2 emits characters: the letters, space, apostrophe, and the CTC blank. The blank is index 0
# because F.ctc_loss, torchaudio's decoders and most CTC code default to blank=0.

BLANK = 0
BLANK_SYMBOL = "<blank>"
ALPHABET: tuple[str, ...] = (BLANK_SYMBOL, " ", "'", *"abcdefghijklmnopqrstuvwxyz")
NUM_CLASSES = len(ALPHABET)  # 29
_CHAR_TO_ID = {char: index for index, char in enumerate(ALPHABET) if index != BLANK}


def normalize_text(text: str) -> str:
    """Lower-case a transcript and fold runs of white space into single spaces.

    Only changes that cannot alter what was said are made; anything else outside the alphabet is left
    for ``encode_text`` to refuse by name.
    """
    if not isinstance(text, str):
        raise ValueError(f"a transcript must be a str, got {type(text).__name__}")
    return " ".join(text.lower().split())


def outside_alphabet(text: str) -> list[str]:
    """The characters of ``text`` that are not in the alphabet (the blank is not a character), sorted."""
    return sorted({char for char in text if char not in _CHAR_TO_ID})


def encode_text(text: str) -> Tensor:
    """Transcript -> label ids, shape ``(S,)``, dtype long; never contains the blank.

    Upper case and repeated white space are normalised (``normalize_text``); any other character outside
    the alphabet raises ``ValueError`` naming it, e.g. digits must be spelt out ("7" -> "seven").
    """
    normalized = normalize_text(text)
    if not normalized:
        raise ValueError(
            "the transcript is empty (or only white space): CTC needs at least one character to learn from"
        )
    unknown = outside_alphabet(normalized)
    if unknown:
        raise ValueError(
            f"transcript {text!r} has characters outside the alphabet: {unknown}. "
            "Allowed: a-z, space and apostrophe; spell out digits and drop punctuation and accents."
        )
    return torch.tensor([_CHAR_TO_ID[char] for char in normalized], dtype=torch.long)


def decode_labels(ids: Iterable[int] | Tensor) -> str:
    """Label ids -> text. Blanks (if any) are skipped; repeats are kept (this is not CTC collapsing)."""
    if isinstance(ids, Tensor):
        ids = ids.tolist()
    chars = []
    for index in ids:
        if not 0 <= index < NUM_CLASSES:
            raise ValueError(f"label id {index} is outside the alphabet (0..{NUM_CLASSES - 1})")
        if index != BLANK:
            chars.append(ALPHABET[index])
    return "".join(chars)


# ----------------------------------------------------------------------------------------------------------
# 2. Spectrogram (§3.1): the model's input
# ----------------------------------------------------------------------------------------------------------
# DS2 consumes a power spectrogram of normalised audio (§3.1); the 20 ms windows and 10 ms stride are the
# paper's values as we recall them (recalled, not on our fact sheet). We frame without centre padding (torch.stft(center=False)): every frame then holds only real
# samples, so in a padded batch no frame of a short utterance ever sees another utterance's padding.

SAMPLE_RATE = 16_000


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
            below anything a model trained on noisy audio has seen; a prototype of this lesson measured
            dev-clean CER 14% without it and 2% with a 50 dB floor. Whisper clamps at 80 dB for the
            same reason.

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
    valid = (torch.arange(frames, device=spec.device)[None, :] < lengths[:, None])[:, None, :]  # (B, 1, T)
    count = valid.sum(dim=(1, 2)) * spec.shape[1]  # valid values per utterance, (B,)
    if floor_db is not None:
        peak = spec.masked_fill(~valid, -math.inf).amax(dim=(1, 2), keepdim=True)  # (B, 1, 1)
        spec = torch.maximum(spec, peak - floor_db * math.log(10.0) / 10.0)  # dB -> natural log of power
    masked = spec.masked_fill(~valid, 0.0)
    mean = masked.sum(dim=(1, 2)) / count  # (B,)
    var = (masked - mean[:, None, None]).masked_fill(~valid, 0.0).square().sum(dim=(1, 2)) / count
    normalized = (spec - mean[:, None, None]) / (var[:, None, None].sqrt() + 1e-5)
    normalized = normalized.masked_fill(~valid, 0.0)
    return normalized[0] if single else normalized


def featurize(
    waveform: Tensor, sample_rate: int = SAMPLE_RATE, expected_sample_rate: int = SAMPLE_RATE, floor_db=50.0
) -> Tensor:
    """One mono utterance -> the model's input: normalised log power spectrogram ``(F, T)``.

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
    return normalize_spectrogram(log_spectrogram(waveform, sample_rate), floor_db=floor_db)


def featurize_batch(
    waveforms: Sequence[Tensor], sample_rate: int = SAMPLE_RATE, floor_db=50.0, batch_size: int = 64
) -> list[Tensor]:
    """Many mono utterances -> their ``featurize`` outputs, a list of ``(F, T_i)``, with batched STFTs.

    Utterances of similar length are padded into ``(batch_size, samples)`` batches and go through one
    ``torch.stft`` each: the same numbers as ``featurize`` one by one (frames never overlap the padding,
    see ``log_spectrogram``; normalisation uses each utterance's valid frames), for far fewer calls.
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


def lengths_to_mask(lengths: Tensor, max_length: int) -> Tensor:
    """``(B,)`` lengths -> ``(B, T)`` boolean mask, True on valid frames."""
    return torch.arange(max_length, device=lengths.device)[None, :] < lengths[:, None]


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
# The paper normalises only the vertical (input-to-hidden) term of a recurrent layer:
#     h_t^l = f( B(W^l h_t^{l-1}) + U^l h_{t-1}^l )
# with the mean and variance taken over every (utterance, time step) of the minibatch - "sequence-wise" -
# rather than separately per time step. Padded frames are not part of the sequence, so they must not be
# part of the statistics. At inference the paper uses running (population) estimates, so an utterance's
# output never depends on what it is batched with.


class MaskedBatchNorm(nn.BatchNorm1d):
    """BatchNorm whose statistics come from valid frames only; padded frames come out as 0.

    ``forward(x, mask)`` takes ``x`` with features last, e.g. ``(B, T, I)``, and a boolean mask of the
    valid positions that broadcasts against ``x.shape[:-1]``, e.g. ``(B, T)``, or ``(B, 1, T)`` for
    ``x`` of shape ``(B, F', T, C)``.
    In training, the mean and (biased) variance of each feature are taken over the valid frames only and
    the running estimates are updated with the unbiased variance, exactly as ``nn.BatchNorm1d`` does
    (tested against it); in eval mode the running estimates are used. Padded values are replaced by 0
    before any sum, so not even a NaN in the padding can reach a statistic.
    """

    def scale_and_shift(self, x: Tensor, mask: Tensor, weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Per-feature ``(scale, shift)`` with ``BN(x) = x * scale + shift``; updates running estimates.

        With ``weight`` (O, I), the BatchNorm is of ``y = x @ weight.T`` (O features), and its training
        statistics come from the mean and covariance of ``x`` (``_linear_moments``) without forming ``y``:
        ``GRULayer`` normalises ``W h^{l-1}`` this way and folds ``scale`` into ``W``.
        """
        if self.training:
            x = x.to(torch.promote_types(x.dtype, torch.float32))  # float32+ statistics, also under --amp
            if weight is None:
                mean, var, count = _masked_moments(x, mask)
            else:
                mean, var, count = _linear_moments(x, mask, weight.to(x.dtype))
            self._update_running_estimates(mean, var, count)
        else:
            mean, var = self.running_mean, self.running_var  # of W x itself, with or without weight
        scale = torch.rsqrt(var + self.eps)
        if self.weight is not None:  # affine=False: no learned gamma and beta
            scale = scale * self.weight
        shift = -mean * scale
        return scale, shift if self.bias is None else shift + self.bias

    @torch.no_grad()
    def _update_running_estimates(self, mean: Tensor, var: Tensor, count: Tensor) -> None:
        """As ``nn.BatchNorm1d`` keeps them: the mean, and the unbiased variance."""
        self.running_mean.lerp_(mean.detach(), self.momentum)
        self.running_var.lerp_(var.detach() * count / max(int(count) - 1, 1), self.momentum)
        self.num_batches_tracked += 1

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:  # type: ignore[override]
        scale, shift = self.scale_and_shift(x, mask)
        return (x * scale + shift).masked_fill(~mask[..., None], 0.0)

    def clipped_relu(self, x: Tensor, mask: Tensor) -> Tensor:
        """``clipped_relu(self(x, mask))`` with padding 0: a conv layer's BatchNorm and nonlinearity.

        Training on the CPU in float32/64, one process, with learned gamma and beta, this runs fused
        (``BatchNormClippedReLU``: half the passes over the tensor, forward and backward); otherwise as
        written. Tested equal, values and gradients.
        """
        valid = mask[..., None]
        fused = self.training and self.weight is not None and x.device.type == "cpu"
        fused = fused and distributed_world()[1] == 1 and not torch.is_autocast_enabled("cpu")
        if not fused:
            return clipped_relu(self(x, mask)).masked_fill(~valid, 0.0)
        count = torch.broadcast_to(mask, x.shape[:-1]).sum()
        y, mean, var = BatchNormClippedReLU.apply(x, valid, self.weight, self.bias, self.eps, count)
        self._update_running_estimates(mean, var, count)
        return y


class BatchNormClippedReLU(torch.autograd.Function):
    """``clipped_relu(BN(x))`` over the valid positions, 0 on padding, with its backward by hand.

    ``apply(x (..., K), valid (broadcasts against x), weight (K,), bias (K,), eps, count) -> (y, mean,
    var)``, ``count`` the valid positions per feature; ``mean`` and the biased ``var`` are returned for
    the running estimates (no gradient). The same function as ``MaskedBatchNorm`` then ``clipped_relu``
    then zeroing the padding, in about 15 passes over ``x`` (forward and backward) instead of about 28:
    autograd would keep and revisit every intermediate. With ``g`` the gradient that passes the
    nonlinearity (where 0 < y < 20) and ``x_hat`` the normalised input, BatchNorm's backward is

        dx = gamma / sigma * (g - mean(g) - x_hat * mean(g * x_hat)),   dgamma = sum(g x_hat), dbeta = sum(g)

    over the valid positions (and 0 on padding).
    """

    @staticmethod
    def forward(ctx, x, valid, weight, bias, eps, count):  # type: ignore[override]
        dims = tuple(range(x.dim() - 1))
        centred = x.masked_fill(~valid, 0.0)
        mean = centred.sum(dim=dims) / count
        centred.sub_(mean).masked_fill_(~valid, 0.0)
        var = centred.square().sum(dim=dims) / count  # biased
        inverse_std = torch.rsqrt(var + eps)
        x_hat = centred.mul_(inverse_std)  # 0 on padding
        y = torch.addcmul(bias, x_hat, weight).clamp_(0.0, 20.0).masked_fill_(~valid, 0.0)
        ctx.save_for_backward(x_hat, y, valid, weight * inverse_std, count)
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y, _grad_mean, _grad_var):  # type: ignore[override]
        x_hat, y, valid, scale, count = ctx.saved_tensors
        dims = tuple(range(y.dim() - 1))
        g = torch.ops.aten.hardtanh_backward(grad_y, y, 0.0, 20.0)  # 0 where y is 0 (padding too) or 20
        grad_bias = g.sum(dim=dims)
        grad_weight = (g * x_hat).sum(dim=dims)
        grad_x = torch.addcmul(-grad_bias / count * scale, g, scale)
        grad_x.addcmul_(x_hat, -grad_weight / count * scale).masked_fill_(~valid, 0.0)
        return grad_x, None, grad_weight, grad_bias, None, None


class SumOverProcesses(torch.autograd.Function):
    """``y = x_0 + x_1 + ... + x_{N-1}`` over the N processes (an all-reduce), with its gradient.

    Every process gets the same ``y`` and computes its own loss ``L_r`` from it; the loss trained on is
    the sum (DDP averages it), so ``dL/dx_r = sum_s dL_s/dy``: the backward is an all-reduce too, as in
    ``nn.SyncBatchNorm``. (``torch.distributed.nn.functional.all_reduce`` does the same and is
    deprecated in torch 2.14; this is that function, written out.)
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        total = x.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        total = grad.clone()
        dist.all_reduce(total)
        return total


def _masked_moments(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Mean, biased variance and valid-value count per feature (last axis) over the valid positions."""
    valid = mask[..., None]  # (B, T, 1) or (B, 1, T, 1): broadcasts against x
    dims = tuple(range(x.dim() - 1))
    count = torch.broadcast_to(mask, x.shape[:-1]).sum()  # valid values per feature
    x = x.masked_fill(~valid, 0.0)
    if distributed_world()[1] > 1:  # torchrun: this process holds one shard of the global batch
        return _global_batch_moments(x, valid, dims, count)
    mean = x.sum(dim=dims) / count  # one per feature
    var = (x - mean).masked_fill(~valid, 0.0).square().sum(dim=dims) / count  # biased, one per feature
    return mean, var, count


class Gram(torch.autograd.Function):
    """``Gram.apply(x (N, I)) -> x^T x (I, I)``, whose backward is one matmul, ``x (G + G^T)``.

    (Autograd would see two operands and make two matmuls.)
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return x.T @ x

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return x @ (grad + grad.T)


def _linear_moments(x: Tensor, mask: Tensor, weight: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Mean and biased variance of ``y = x @ weight.T`` over the valid rows, without forming ``y``.

    ``x (B, T, I)``, ``mask (B, T)``, ``weight (O, I)``. With ``m`` and ``C`` the mean and covariance of
    the valid rows of ``x``, ``y``'s mean is ``W m`` and its variance the diagonal of ``W C W^T``. Two
    passes, as ``_masked_moments`` makes, so no digits are lost to a large mean: the mean, then ``C`` from
    the centred rows in one (I x I) matmul. For a GRU layer (I = 328, O = 768 here) this replaces a dozen
    elementwise passes over the (B, T, 768) product, forward and backward, by two small matmuls.
    Under torchrun the sums and ``C`` are all-reduced, as ``_global_batch_moments`` does.
    """
    valid = mask[..., None]  # (B, T, 1)
    features = x.shape[-1]
    count = mask.sum()  # valid rows
    x = x.masked_fill(~valid, 0.0)
    sums = x.sum(dim=(0, 1))  # (I,)
    distributed = distributed_world()[1] > 1
    if distributed:  # the global batch's sums and count, in float64 as in _global_batch_moments
        totals = SumOverProcesses.apply(torch.cat([sums.double(), count.double()[None]]))
        sums, count = totals[:-1].to(x.dtype), totals[-1].detach().round().long()
    x_mean = sums / count  # (I,)
    with torch.autocast(x.device.type, enabled=False):  # statistics in float32 also under --amp
        centred = (x - x_mean).masked_fill(~valid, 0.0).reshape(-1, features)  # (B * T, I)
        covariance = Gram.apply(centred)  # (I, I), times the count
        if distributed:
            covariance = SumOverProcesses.apply(covariance)
        mean = weight @ x_mean  # (O,)
        var = ((weight @ covariance) * weight).sum(dim=1).clamp_min(0.0) / count  # (O,), biased
    return mean, var, count


def _global_batch_moments(
    x: Tensor, valid: Tensor, dims: tuple, count: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Mean, biased variance and valid-value count per feature over *every* process's shard.

    Data parallelism (§4.1, torchrun): each process holds a shard of the global minibatch, and BatchNorm
    must see the global batch, as one process would. Two all-reduces, the same two passes one process
    makes: the sums and valid-value counts give the global mean, then the squared deviations from it give
    the variance (a single pass of sums of squares, E[x^2] - E[x]^2, loses digits in float32 when the mean
    is large against the spread). ``x`` is already 0 in the padding, which therefore never counts. The
    sums are differentiable (``SumOverProcesses``), so every process's frames get the gradient of the
    global statistics. The first pass runs in float64 so that counts beyond float32's 2^24 stay exact.
    """
    sums = SumOverProcesses.apply(torch.cat([x.sum(dim=dims).double(), count.double()[None]]))  # (I + 1,)
    total = sums[-1].detach()  # valid values per feature in the global batch
    mean = (sums[:-1] / total).to(x.dtype)  # (I,)
    deviations = (x - mean).masked_fill(~valid, 0.0).square().sum(dim=dims)  # (I,)
    var = SumOverProcesses.apply(deviations) / total.to(x.dtype)  # (I,), biased
    return mean, var, total.round().long()  # a count like the one-process one


class SequenceWiseBatchNorm(MaskedBatchNorm):
    """Sequence-wise BatchNorm (§3.2): ``forward(x (B, T, I), lengths (B,)) -> (B, T, I)``.

    Mean and variance are computed over all valid (batch x time) frames; padded frames are ignored and
    come out as 0. Running estimates are kept for eval mode, exactly as ``nn.BatchNorm1d`` keeps them.
    """

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:  # type: ignore[override]
        if x.dim() != 3:
            raise ValueError(f"expected (B, T, I) input, got shape {tuple(x.shape)}")
        return super().forward(x, lengths_to_mask(lengths, x.shape[1]))


# ----------------------------------------------------------------------------------------------------------
# 5. Recurrent stack (§3.2-3.4) and lookahead convolution (§3.7)
# ----------------------------------------------------------------------------------------------------------


_GRU_NAMES = ("weight_ih", "bias_ih", "weight_hh", "bias_hh")  # nn.GRU's parameters, per direction


class GRURecurrence(torch.autograd.Function):
    """The GRU recurrence (§3.4) over all time steps, both directions at once, with its BPTT by hand.

    ``GRURecurrence.apply(gx (D, T, B, 3H), weight_hh (D, 3H, H), bias_hh (D, 3H)) -> h (D, T, B, H)``.
    ``gx`` holds the input gates ``B(W h^{l-1})`` (reset, update, candidate; PyTorch's order), already
    projected and normalised for every frame, time-major, in the order each direction reads them.
    With ``U = weight_hh`` and ``b = bias_hh`` split the same way, each step is PyTorch's GRU exactly:

        r_t = sigmoid(gx_r + U_r h_{t-1} + b_r)
        z_t = sigmoid(gx_z + U_z h_{t-1} + b_z)
        n_t = tanh(gx_n + r_t * (U_n h_{t-1} + b_n))      (§3.4: U h is computed before r multiplies it)
        h_t = (1 - z_t) * n_t + z_t * h_{t-1}             with h_{-1} = 0

    Why by hand: on the CPU, ``torch.gru`` under autograd records a dozen small ops per step and
    direction, and its backward replays them and accumulates ``dU`` step by step. Here the forward runs
    without a graph: five ops per step for both directions (D is the batch of one in-place batched
    matmul), into time-major buffers whose per-step slices are contiguous. The backward walks the steps in
    reverse with three ops per step: one multiply makes all three gates' gradients from ``dh_t`` and
    factors computed for every step at once beforehand, then ``dh_{t-1}``; ``dU`` is one matmul over
    all steps at the end. ``tests/test_implementation.py`` checks it against ``torch.gru`` and by
    ``gradcheck``. ``GRULayer`` uses it for training on the CPU. Under CPU autocast the recurrence runs
    in float32.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu", cast_inputs=torch.float32)
    def forward(ctx, gx: Tensor, weight_hh: Tensor, bias_hh: Tensor) -> Tensor:  # type: ignore[override]
        directions, frames, batch, gates = gx.shape  # (D, T, B, 3H)
        hidden = gates // 3
        rz_part, n_part = slice(0, 2 * hidden), slice(2 * hidden, gates)
        # Time-major buffers: each step's (D, B, .) slice is contiguous, so the matmul writes in place.
        # hh[t] ends as (r_t, z_t, U_n h_{t-1} + b_n): what the backward needs.
        hh = gx.new_empty(frames, directions, batch, gates)
        n = gx.new_empty(frames, directions, batch, hidden)
        h = gx.new_empty(frames, directions, batch, hidden)
        u_transposed, bias = weight_hh.transpose(1, 2), bias_hh[:, None]  # (D, H, 3H), (D, 1, 3H)
        h_prev = gx.new_zeros(directions, batch, hidden)  # h_{-1} = 0
        # Each step's (D, B, .) view of each tensor, taken once up front rather than sliced in the loop.
        tensors = (hh, hh[..., rz_part], hh[..., :hidden], hh[..., hidden : 2 * hidden], hh[..., n_part])
        tensors += (gx[..., rz_part].transpose(0, 1), gx[..., n_part].transpose(0, 1), n, h)
        steps = zip(*(tensor.unbind(0) for tensor in tensors), strict=True)
        for hh_t, rz_t, r, z, hh_n, gx_rz, gx_n, n_t, h_t in steps:
            torch.baddbmm(bias, h_prev, u_transposed, out=hh_t)  # U h_{t-1} + b: (D, B, 3H)
            torch.add(gx_rz, rz_t, out=rz_t).sigmoid_()  # r_t, z_t
            torch.addcmul(gx_n, r, hh_n, out=n_t).tanh_()  # n_t
            h_prev = torch.lerp(n_t, h_prev, z, out=h_t)  # n + z (h_{t-1} - n) = (1 - z) n + z h_{t-1}
        ctx.save_for_backward(weight_hh, hh, n, h)
        return h.transpose(0, 1)  # (D, T, B, H): a view of the time-major buffer

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_h: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # type: ignore[override]
        weight_hh, hh, n, h = ctx.saved_tensors  # time-major: (T, D, B, .)
        frames, directions, batch, gates = hh.shape
        hidden = gates // 3
        r, z, hh_n = hh[..., :hidden], hh[..., hidden : 2 * hidden], hh[..., 2 * hidden :]  # (T, D, B, H)
        # With a_* the pre-activations (r = sigmoid(a_r), ...) and dh the whole gradient reaching h_t
        # (sigmoid' = s (1 - s), tanh' = 1 - tanh^2):
        #   da_n = dh (1 - z) (1 - n^2)     da_z = dh (h_{t-1} - n) z (1 - z)     da_r = da_n hh_n r (1 - r)
        # and d(U h_{t-1} + b) = (da_r, da_z, da_n r). Each is dh times a factor known for every step
        # before the loop, so the loop makes all three with one multiply.
        one_minus_z = 1 - z
        to_candidate = n.square().neg_().add_(1).mul_(one_minus_z)  # (1 - n^2)(1 - z)
        factors = hh.new_empty(frames, directions, batch, 3, hidden)
        torch.mul((1 - r).mul_(r).mul_(hh_n), to_candidate, out=factors[..., 0, :])  # reset
        to_update = factors[..., 1, :]  # (h_{t-1} - n) z (1 - z), with h_{-1} = 0
        torch.sub(h[:-1], n[1:], out=to_update[1:])
        torch.neg(n[0], out=to_update[0])
        to_update.mul_(z).mul_(one_minus_z)
        torch.mul(to_candidate, r, out=factors[..., 2, :])  # candidate, through r
        # d(U h_{t-1} + b), gate by gate; direction-major, as d gx is returned: (D, T, B, 3, H)
        grad_hh = hh.new_empty(directions, frames, batch, 3, hidden)
        grad_hh_flat = grad_hh.view(directions, frames, batch, gates)
        dh = hh.new_empty(frames, directions, batch, hidden)  # the whole gradient reaching each h_t
        grad_from_output = grad_h.transpose(0, 1)  # (T, D, B, H)
        dh[-1] = grad_from_output[-1]
        views = [tensor.unbind(0) for tensor in (dh, dh.unsqueeze(3), factors, z, grad_from_output)]
        views += [tensor.unbind(1) for tensor in (grad_hh, grad_hh_flat)]
        dh_t, dh_3, factor, z_t, from_output, grad_hh_t, grad_hh_flat_t = views
        for t in reversed(range(frames)):
            torch.mul(dh_3[t], factor[t], out=grad_hh_t[t])  # (D, B, 3, H)
            if t > 0:  # dh_{t-1} = (gradient from the output) + z dh_t + U^T d(U h_{t-1} + b)
                torch.addcmul(from_output[t - 1], dh_t[t], z_t[t], out=dh_t[t - 1])
                dh_t[t - 1].baddbmm_(grad_hh_flat_t[t], weight_hh)
        # dU = sum over steps and utterances of d(U h_{t-1} + b) h_{t-1}^T: one matmul (h_{-1} = 0 adds
        # nothing, so step 0 is left out); db = the same sum without the h.
        steps_after_first = (directions, (frames - 1) * batch)
        h_prev = h[:-1].transpose(0, 1).reshape(*steps_after_first, hidden)  # (D, (T - 1) B, H)
        grad_weight = grad_hh_flat[:, 1:].reshape(*steps_after_first, gates).transpose(1, 2) @ h_prev
        grad_bias = grad_hh_flat.view(directions, frames * batch, gates).sum(dim=1)  # (D, 3H)
        # d gx: the reset and update gates enter like U h + b; the candidate's is da_n, without the r.
        torch.mul(
            dh.transpose(0, 1), to_candidate.transpose(0, 1), out=grad_hh[..., 2, :]
        )  # reuses the buffer
        return grad_hh_flat, grad_weight, grad_bias  # (D, T, B, 3H), (D, 3H, H), (D, 3H)


def recurrence_order(lengths: Tensor, frames: int, directions: int) -> tuple[Tensor, Tensor]:
    """Where each direction reads its frames, as row indices: ``(read (D*T*B,), back (B*T*D,))``.

    Direction 0 reads frame ``t`` at step ``t``. Direction 1 reads each utterance reversed within its
    own length (as ``reverse_padded``), so it starts at the true last frame; padding comes after.
    ``read`` picks rows of a ``(B, T)``-ordered table (the layer's input frames) in ``(D, T, B)`` step
    order; ``back`` picks rows of the time-major ``(T, D, B)`` outputs in ``(B, T, D)`` frame order.
    Reversing within a length is its own inverse, so one step-for-frame map serves both ways.
    """
    batch = lengths.shape[0]
    time = torch.arange(frames, device=lengths.device)[:, None]  # (T, 1)
    reversed_time = torch.where(time < lengths, lengths - 1 - time, time)  # (T, B)
    step = torch.stack([time.expand(frames, batch), reversed_time])[:directions]  # (D, T, B)
    direction = torch.arange(directions, device=lengths.device)[:, None, None]  # (D, 1, 1)
    utterance = torch.arange(batch, device=lengths.device)  # (B,)
    read = utterance * frames + step  # (D, T, B)
    back = (
        step * directions + direction
    ) * batch + utterance  # (D, T, B): frame (b, t) of d is at step[d, t, b]
    return read.reshape(-1), back.permute(2, 1, 0).reshape(-1)


class GRULayer(nn.Module):
    """One (bi)directional GRU layer with sequence-wise BatchNorm on ``W h^{l-1}`` (§3.2, §3.4).

    BatchNorm's (masked, sequence-wise) statistics come from ``W h^{l-1}`` for every frame and both
    directions at once. The recurrent term ``U h_{t-1}`` is never normalised, and gradients flow through
    ``mu`` and ``sigma`` as they should. ``tests/test_implementation.py`` checks
    the layer against an explicit per-step GRU that applies ``SequenceWiseBatchNorm`` to ``W x``.

    Two paths run the recurrence, tested equal (outputs and every gradient):

    * Training on the CPU: ``GRURecurrence``, our own loop over time for both directions at once with a
      hand-written backward (BPTT), fed ``B(W h^{l-1})`` directly.
    * Otherwise (inference, GPU): PyTorch's fused GRU kernel ``torch.gru``. It computes ``W h^{l-1}``
      inside, so we cannot slip a BatchNorm in between. But BatchNorm of a linear map is itself linear
      once its statistics are known:

          B(W x) = gamma * (W x - mu) / sigma + beta = (diag(gamma / sigma) W) x + (beta - gamma mu / sigma)

      so the statistics are folded into the GRU's input weights and bias, and the kernel runs with those.

    PyTorch's GRU matches §3.4's variant (``U_h h_{t-1}`` is computed before the reset gate multiplies
    it). Departure: its candidate activation is tanh; §3.4 reports tanh and clipped ReLU perform similarly.

    Bidirectional outputs are summed (``h^l = h_forward + h_backward``), not concatenated.

    Padding, without ``PackedSequence``: on the CPU a packed GRU falls back to a loop of small per-frame
    ops (a whole training step 1.77x slower on 2026-12-01: ``benchmarks/bench_training.py``'s "packed
    GRU" peer), so both paths run on
    the padded tensor. The forward direction is exact as it is: padding comes after an utterance's last
    frame, so it cannot reach a valid frame. The backward direction runs forward over each utterance
    reversed *within its own length* (``reverse_padded``, ``recurrence_order``), so it starts at the true
    last frame, and its output is reversed back. Padded output frames are set to 0.
    """

    def __init__(
        self, input_size: int, hidden_size: int, bidirectional: bool = True, batch_norm: bool = True
    ):
        super().__init__()
        # nn.GRU holds the parameters (weight_ih_l0, weight_hh_l0, ..., *_reverse) in PyTorch's layout.
        self.gru = nn.GRU(input_size, hidden_size, batch_first=True, bidirectional=bidirectional)
        self.directions = 2 if bidirectional else 1
        self.hidden_size = hidden_size
        # One BatchNorm over the stacked input projections of both directions (3H gates per direction).
        self.norm = MaskedBatchNorm(3 * hidden_size * self.directions) if batch_norm else None
        if batch_norm:  # BN's shift replaces the GRU's input bias, so that bias is neither used nor trained
            for suffix in self._suffixes():
                getattr(self.gru, "bias_ih" + suffix).requires_grad_(False).data.zero_()

    def _suffixes(self):
        return ["_l0", "_l0_reverse"][: self.directions]

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        mask = lengths_to_mask(lengths, x.shape[1])  # (B, T)
        # Training on the CPU, our recurrence beats torch.gru under autograd (``benchmarks/bench_gru.py``).
        # Without autograd (inference) torch.gru is as fast or faster; on a GPU cuDNN's fused kernel wins.
        training_on_cpu = x.device.type == "cpu" and torch.is_grad_enabled()
        run = self._run_recurrence if training_on_cpu else self._run_fused_kernel
        return run(x, lengths, mask) * mask[..., None]  # (B, T, H), padding -> 0

    def _run_recurrence(self, x: Tensor, lengths: Tensor, mask: Tensor) -> Tensor:
        """Both directions at once with ``GRURecurrence``: ``(B, T, I) -> (B, T, H)`` (padding not yet 0).

        BatchNorm of ``W h^{l-1}`` (§3.2) is folded into ``W`` here too, as in ``_run_fused_kernel``, but
        with training statistics: ``scale_and_shift`` takes them from ``h^{l-1}``'s mean and covariance
        (``_linear_moments``), and gradients flow through them. So the input gates ``B(W h^{l-1})`` come
        out of one batched matmul, directly in the order each direction reads its frames.
        """
        parameters = {name: [getattr(self.gru, name + s) for s in self._suffixes()] for name in _GRU_NAMES}
        weight, bias = torch.cat(parameters["weight_ih"]), torch.cat(parameters["bias_ih"])  # W, b: all D
        gx, back = inputs_in_step_order(x, lengths, mask, weight, bias, self.norm, self.directions)
        h = GRURecurrence.apply(
            gx, torch.stack(parameters["weight_hh"]), torch.stack(parameters["bias_hh"])
        )  # (D, T, B, H), a view of a time-major (T, D, B, H) buffer
        return sum_directions_in_frame_order(h, back)  # h_forward + h_backward: (B, T, H)

    def _run_fused_kernel(self, x: Tensor, lengths: Tensor, mask: Tensor) -> Tensor:
        """Each direction with ``torch.gru``, BatchNorm folded into ``W``: ``(B, T, I) -> (B, T, H)``."""
        gru = self.gru
        w_ih = [getattr(gru, "weight_ih" + s) for s in self._suffixes()]  # (3H, I) per direction
        b_ih = [getattr(gru, "bias_ih" + s) for s in self._suffixes()]  # (3H,) per direction
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
        return output

    def _run(self, x: Tensor, direction: int, w_ih: Tensor, b_ih: Tensor) -> Tensor:
        """One direction over the padded batch with the fused kernel: ``(B, T, I) -> (B, T, H)``."""
        suffix = self._suffixes()[direction]
        params = [w_ih, getattr(self.gru, "weight_hh" + suffix), b_ih, getattr(self.gru, "bias_hh" + suffix)]
        h0 = x.new_zeros(1, x.shape[0], self.hidden_size)  # (1, B, H)
        # torch.gru is the op behind nn.GRU.forward: (input, hx, params, has_biases, num_layers, dropout,
        # train, bidirectional, batch_first).
        output, _ = torch.gru(x, h0, params, True, 1, 0.0, self.training, False, True)
        return output


class RNNRecurrence(torch.autograd.Function):
    """The simple recurrence ``h_t = clipped_relu(a_t + U h_{t-1})`` over all steps, both directions at
    once, with its BPTT by hand (as ``GRURecurrence`` does for the GRU).

    ``RNNRecurrence.apply(a (D, T, B, H), weight (D, H, H)) -> h (D, T, B, H)``, ``a`` the input term
    ``B(W h^{l-1}) + b`` in each direction's reading order, ``h_{-1} = 0``. Two ops per step forward (one
    in-place batched matmul, the clip) and two backward: the gradient through the clip is ``dh`` where
    ``0 < h < 20`` and 0 elsewhere, then ``dh_{t-1}`` gains ``U^T`` times it; ``dU`` is one matmul at the
    end. ``SimpleRNNLayer`` uses it for training on the CPU.
    """

    @staticmethod
    def forward(ctx, a: Tensor, weight: Tensor) -> Tensor:  # type: ignore[override]
        directions, frames, batch, hidden = a.shape
        h = a.new_empty(frames, directions, batch, hidden)  # time-major: contiguous steps
        h_prev, u_transposed = a.new_zeros(directions, batch, hidden), weight.transpose(1, 2)
        for a_t, h_t in zip(a.unbind(1), h.unbind(0), strict=True):
            h_prev = torch.baddbmm(a_t, h_prev, u_transposed, out=h_t).clamp_(0.0, 20.0)
        ctx.save_for_backward(weight, h)
        return h.transpose(0, 1)  # (D, T, B, H): a view of the time-major buffer

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_h: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        weight, h = ctx.saved_tensors  # (D, H, H), (T, D, B, H)
        frames, directions, batch, hidden = h.shape
        grad_a = h.new_empty(directions, frames, batch, hidden)  # d loss / d(a_t + U h_{t-1})
        from_output = grad_h.unbind(1)  # (D, B, H) per step
        dh = from_output[-1]  # the whole gradient reaching h_t
        for t in reversed(range(frames)):
            g = torch.ops.aten.hardtanh_backward(dh, h[t], 0.0, 20.0)  # through the clip
            grad_a[:, t] = g
            if t > 0:
                dh = torch.baddbmm(from_output[t - 1], g, weight)  # + U^T g
        steps_after_first = (directions, (frames - 1) * batch, hidden)
        h_prev = h[:-1].transpose(0, 1).reshape(steps_after_first)  # (D, (T - 1) B, H)
        grad_weight = grad_a[:, 1:].reshape(steps_after_first).transpose(1, 2) @ h_prev  # (D, H, H)
        return grad_a, grad_weight


class SimpleRNNLayer(nn.Module):
    """A simple (vanilla) recurrent layer, written out step by step (§3.1-3.2):

        h_t = clipped_relu( B(W h_t^{l-1}) + U h_{t-1} + b )

    ``nn.RNN`` has no clipped ReLU, so this layer is the equation as code: the input projection for all
    frames in one matmul, then a loop over time for the recurrent term. The backward direction runs on
    each utterance reversed within its own length, so it starts at the true last frame, not in padding.
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

    def _run(self, inputs: Tensor, recurrent: nn.Linear) -> Tensor:
        hidden = inputs.new_zeros(inputs.shape[0], self.hidden_size)  # (B, H)
        outputs = []
        for t in range(inputs.shape[1]):
            hidden = clipped_relu(inputs[:, t] + recurrent(hidden))  # (B, H)
            outputs.append(hidden)
        return torch.stack(outputs, dim=1)  # (B, T, H)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        # Training on the CPU: RNNRecurrence (two ops per step and direction-batched). Otherwise the
        # equation as written, one step at a time; the two are tested equal.
        run = self._run_recurrence if x.device.type == "cpu" and torch.is_grad_enabled() else self._run_loop
        return run(x, lengths)

    def _run_loop(self, x: Tensor, lengths: Tensor) -> Tensor:
        projected = self.input_projection(x)  # W h^{l-1}: (B, T, D * H)
        if self.norm is not None:
            projected = self.norm(projected, lengths)
        forward_in = projected[..., : self.hidden_size]
        output = self._run(forward_in, self.recurrent[0])  # (B, T, H)
        if self.directions == 2:
            backward_in = reverse_padded(projected[..., self.hidden_size :], lengths)
            output = output + reverse_padded(self._run(backward_in, self.recurrent[1]), lengths)
        return output * lengths_to_mask(lengths, x.shape[1])[..., None]

    def _run_recurrence(self, x: Tensor, lengths: Tensor) -> Tensor:
        """Both directions at once with ``RNNRecurrence``, BatchNorm folded into ``W`` (as ``GRULayer``)."""
        mask = lengths_to_mask(lengths, x.shape[1])  # (B, T)
        projection = self.input_projection
        a, back = inputs_in_step_order(
            x, lengths, mask, projection.weight, projection.bias, self.norm, self.directions
        )  # (D, T, B, H)
        weights = torch.stack([layer.weight for layer in self.recurrent])  # (D, H, H)
        h = RNNRecurrence.apply(a, weights)  # (D, T, B, H)
        return sum_directions_in_frame_order(h, back) * mask[..., None]  # (B, T, H)


def inputs_in_step_order(
    x: Tensor,
    lengths: Tensor,
    mask: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    norm: MaskedBatchNorm | None,
    directions: int,
) -> tuple[Tensor, Tensor]:
    """A recurrent layer's input term ``B(W h^{l-1})`` (or ``W h^{l-1} + b``), in each direction's step order.

    ``x (B, T, I)``, ``weight (D * G, I)`` (D directions of G gates each), ``bias (D * G,)``. BatchNorm of
    ``W h^{l-1}`` (§3.2) is folded into ``W`` with training statistics taken from ``h^{l-1}``'s mean and
    covariance (``MaskedBatchNorm.scale_and_shift(..., weight=W)``; gradients flow through them), and BN's
    shift replaces the bias. So the whole term is one batched matmul over the frames already gathered in
    step order (``recurrence_order``). Returns ``(a (D, T, B, G), back)``, ``back`` for
    ``sum_directions_in_frame_order``. Whatever fills the padding of ``x`` never reaches a valid frame.
    """
    batch, frames, features = x.shape
    gates = weight.shape[0] // directions
    x = x.masked_fill(~mask[..., None], 0.0)
    if norm is not None:
        scale, bias = norm.scale_and_shift(x, mask, weight=weight)  # of W h^{l-1}: (D * G,) each
        weight = weight * scale[:, None]  # diag(gamma / sigma) W
    read, back = recurrence_order(lengths, frames, directions)
    steps = x.reshape(-1, features).index_select(0, read).view(directions, frames * batch, features)
    a = torch.baddbmm(
        bias.view(directions, 1, gates), steps, weight.view(directions, gates, features).transpose(1, 2)
    )
    return a.view(directions, frames, batch, gates), back


def sum_directions_in_frame_order(h: Tensor, back: Tensor) -> Tensor:
    """``h (D, T, B, H)`` (a view of a time-major buffer, as the recurrences return) -> ``(B, T, H)``, the
    directions summed (§3.1: ``h_forward + h_backward``), each frame back where ``inputs_in_step_order``
    took it from."""
    directions, frames, batch, hidden = h.shape
    h = h.transpose(0, 1).reshape(-1, hidden).index_select(0, back)  # (B * T * D, H), in frame order
    return h.view(batch, frames, directions, hidden).sum(dim=2)


def reverse_padded(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each sequence of ``x (B, T, ...)`` within its own length; padding stays where it is."""
    frames = x.shape[1]
    time = torch.arange(frames, device=x.device)[None, :]  # (1, T)
    index = torch.where(time < lengths[:, None], lengths[:, None] - 1 - time, time)  # (B, T)
    index = index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, index)


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
    conv_channels: tuple[int, ...] = (8, 8)  # one entry per conv layer (1-3); the paper: (32, 32, 96)
    conv_type: str = "2d"  # "2d": frequency x time; "1d": time only, bins as channels (Table 4 topic)
    conv_time_stride: int = 2  # the first conv layer's stride in time (§3.6): T' is about T / this
    rnn_type: str = "gru"  # "gru" (§3.4, the stronger of the two in Table 3) or "rnn" (clipped ReLU)
    rnn_layers: int = 2  # the paper: up to 7
    rnn_hidden: int = 128
    bidirectional: bool = True  # False: forward only, for streaming (§3.7)
    lookahead_context: int = 0  # frames of future context for unidirectional models (§3.7); 0 = none
    batch_norm: bool = True  # sequence-wise BN in the recurrent layers and BN in the conv layers (§3.2)
    num_classes: int = NUM_CLASSES

    def __post_init__(self):
        self.conv_channels = tuple(self.conv_channels)
        problems = []
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
        if self.num_classes != NUM_CLASSES:
            problems.append(f"num_classes must be {NUM_CLASSES} (the alphabet), got {self.num_classes}")
        if problems:
            raise ValueError("invalid DS2Config: " + "; ".join(problems))
        frame_parameters(self.sample_rate, self.window_ms, self.stride_ms)

    @property
    def num_freq(self) -> int:
        window, _ = frame_parameters(self.sample_rate, self.window_ms, self.stride_ms)
        return window // 2 + 1

    def to_dict(self) -> dict:
        return {**asdict(self), "conv_channels": list(self.conv_channels)}


class DeepSpeech2(nn.Module):
    """Deep Speech 2 (§3, Figure 1): conv front-end -> recurrent stack -> [lookahead] -> FC -> log-softmax.

    ``forward(spectrograms (B, F, T), lengths (B,)) -> (log_probs (B, T', 29), out_lengths (B,))``
    with ``T'`` from ``output_lengths``. ``log_probs`` are per-frame log-probabilities over the alphabet
    (blank = 0), batch-first; transpose to ``(T', B, 29)`` for ``F.ctc_loss``.
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
        logits = self.fc(x)  # (B, T', 29)
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


def _ctc_alpha(log_probs_ext: Tensor, can_skip: Tensor) -> Tensor:
    """The CTC forward (alpha) recursion in log space.

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


class _CTCFromScratch(torch.autograd.Function):
    """CTC negative log-likelihood per utterance with the alpha-beta gradient (Graves et al. 2006, §4).

    The beta (backward) recursion is the alpha recursion run on each utterance reversed in time, with its
    extended label reversed. Both run in one loop, stacked along the batch (the loop's cost is per step,
    not per row). With both, the occupancy of class k at frame t is
    ``gamma_t(k) = sum_{s: l'_s = k} exp(alpha_t(s) + beta_t(s) - log y_t(l'_s) + nll)`` and
    ``d nll / d log y_t(k) = -gamma_t(k)``.
    """

    @staticmethod
    def forward(ctx, log_probs, extended, can_skip, input_lengths, ext_lengths):
        batch, frames, _ = log_probs.shape
        length = extended.shape[1]
        lp_ext = log_probs.gather(2, extended[:, None, :].expand(batch, frames, length))  # (B, T, L)
        # Reverse time within each utterance and positions within each extended label.
        time = torch.arange(frames, device=log_probs.device)[None, :]
        t_rev = (input_lengths[:, None] - 1 - time).clamp(min=0)  # (B, T)
        pos = torch.arange(length, device=log_probs.device)[None, :]
        s_rev = (ext_lengths[:, None] - 1 - pos).clamp(min=0)  # (B, L)
        valid_pos = pos < ext_lengths[:, None]  # (B, L)
        lp_rev = lp_ext.gather(1, t_rev[..., None].expand(-1, -1, length))
        lp_rev = lp_rev.gather(2, s_rev[:, None, :].expand(-1, frames, -1))
        lp_rev = lp_rev.masked_fill(~valid_pos[:, None, :], NEG_INF)  # (B, T, L)
        skip_rev = can_skip.gather(1, (s_rev + 2).clamp(max=length - 1)) & (s_rev + 2 < ext_lengths[:, None])
        both = _ctc_alpha(torch.cat([lp_ext, lp_rev]), torch.cat([can_skip, skip_rev]))  # (2B, T, L)
        alphas, betas_rev = both[:batch], both[batch:]
        betas = betas_rev.gather(1, t_rev[..., None].expand(-1, -1, length))
        betas = betas.gather(2, s_rev[:, None, :].expand(-1, frames, -1))  # (B, T, L), un-reversed
        rows = torch.arange(batch, device=log_probs.device)
        last = alphas[rows, input_lengths - 1]  # (B, L) at each utterance's final frame
        end_blank = last[rows, ext_lengths - 1]
        end_label = torch.where(ext_lengths > 1, last[rows, (ext_lengths - 2).clamp(min=0)], NEG_INF)
        nll = -torch.logaddexp(end_blank, end_label)  # (B,)
        valid = (time < input_lengths[:, None])[..., None] & valid_pos[:, None, :]  # (B, T, L)
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


def greedy_decode(log_probs: Tensor, lengths: Tensor | None = None) -> list[str]:
    """Best-path decoding: argmax per frame, collapse repeats, drop blanks.

    Args:
        log_probs: ``(B, T, C)``, or ``(T, C)`` for one utterance (returns a one-item list).
        lengths: valid frames ``(B,)``; frames past them are ignored.
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
        texts.append(decode_labels(path[keep & (path != BLANK)]))  # ... then drop blanks
    return texts


class BeamHypothesis(NamedTuple):
    """One result of the prefix beam search; log-probabilities are natural logs."""

    text: str
    ctc_log_prob: float  # log p_ctc(y|x): the sum over the alignments the search kept
    lm_log_prob: float  # log p_lm(y), including the end of sentence
    word_count: int
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
) -> list[BeamHypothesis]:
    """CTC prefix beam search with optional word-LM shallow fusion (§3.8); the final beam, best first.

    For each prefix y we keep two numbers: the probability of all kept alignments of frames 1..t that
    collapse to y and end in a blank, ``p_b``, and those ending in y's last label, ``p_nb``. Extending by
    a label equal to y's last needs a blank in between (taken from ``p_b``), which is how a doubled
    letter like "ll" is produced; repeating the last label without a blank stays on y (``p_nb``).

    Beams are ranked by ``Q(y) = log p_ctc(y|x) + alpha log p_lm(y) + beta word_count(y)``, where the LM
    term covers the completed words (each scored when the space after it arrives) and, at the end, the
    last word and the end of sentence. The CTC term is kept separate, so the ``ctc_log_prob`` reported
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
    """
    if np.ndim(log_probs) != 2:
        raise ValueError(f"expected (T, C) log-probabilities of one utterance, got {tuple(log_probs.shape)}")
    if beam_width < 1:
        raise ValueError(f"beam_width must be >= 1, got {beam_width}")
    if isinstance(log_probs, Tensor):
        frames = log_probs.detach().double().cpu().numpy()
    else:  # a numpy array (evaluate's worker processes get these: no torch kernels after a fork)
        frames = np.asarray(log_probs, dtype=np.float64)
    space = _CHAR_TO_ID[" "]
    use_lm = lm is not None and (alpha != 0.0 or beta != 0.0)

    @functools.cache
    def lm_part(prefix: tuple[int, ...], final: bool) -> tuple[float, int]:
        """(log p_lm of the completed words [+ last word + </s> if final], number of those words)."""
        text = decode_labels(prefix)
        words = text.split()
        if not final and words and not text.endswith(" "):
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
        text = decode_labels(prefix).strip()
        previous = merged.get(text, (-math.inf, prefix))[0]
        merged[text] = (log_add(previous, log_add(p_b, p_nb)), prefix)
    results = []
    for text, (ctc, prefix) in merged.items():
        lm_log_prob, words = lm_part(prefix, True) if use_lm else (0.0, len(text.split()))
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
) -> str:
    """The best transcript of one utterance ``(T, C)`` under CTC prefix beam search (§3.8).

    See ``prefix_beam_search_nbest`` for the algorithm and arguments.
    """
    return prefix_beam_search_nbest(
        log_probs, beam_width, lm, alpha, beta, prune_log_prob, max_labels_per_frame
    )[0].text


# --- 8.2 The production decoder: flashlight-text's beam search with a KenLM word LM (via torchaudio) ---
# ``prefix_beam_search`` above is the lesson's reference: every line of it can be read and stepped through.
# It scores the LM in Python, which is fine for our 200-word grammar and far too slow for a LibriSpeech-
# sized LM (hundreds of thousands of words, millions of n-grams). torchaudio's ``ctc_decoder`` wraps the
# C++ beam search of flashlight-text (wav2letter's decoder) and KenLM, which reads ARPA and binary LMs.
# How we drive it, and why:
# * Lexicon decoding. flashlight's lexicon-free decoder asks its LM about every *token*, so it wants a
#   character LM. A word LM (the paper's, §3.8) needs the lexicon decoder: it walks a trie of spellings
#   and scores the LM when a word's spelling completes. It can only output words of its lexicon, so we
#   build the lexicon from the LM's own vocabulary (the unigrams of an ARPA file), plus any words passed in
#   (e.g. the training transcripts'; needed for a binary LM, whose vocabulary we cannot read). Our own
#   beam search can spell any word (an unseen one scores as ``<unk>``): a trade-off to know about.
# * Every word ends in a space. Our space (label 1) is flashlight's "silence" token, renamed "|" because
#   lexicon files separate tokens by spaces, and each word is spelt with a trailing "|" ("cat c a t |"),
#   as in torchaudio's tutorial. Measured why: spelt without it, a word is complete on its last letter
#   and the decoder is back at the trie's root, where a repeat of that letter cannot continue (at the
#   root only a silence repeats), so a trained model's held "sssss" before a space was read as "sing sky"
#   (dev-clean WER 15%, against greedy's 1%). Our model emits no space after the last word, so we append
#   one frame in which the space is certain (log-probability 0): the last word completes on it for free.
# * The same score. KenLM scores in log10 and we in nats, so ``lm_weight = alpha ln 10`` and ``word_score =
#   beta``; with ``log_add=True`` alignments of the same text are summed, as ours are. Where the two find
#   the same text their scores agree: within 0.01 nats on most utterances of the trained default model,
#   within 0.1 on flat synthetic posteriors, where flashlight's is the higher (it merges hypotheses by LM
#   state and trie position, which may sum in a little of another text); tests/test_devices_decoders.py.
# * Without an LM it decodes lexicon-free: a plain CTC beam search over characters.

FLASHLIGHT_REQUIREMENT = "flashlight-text==0.0.7"
FLASHLIGHT_TOKENS = tuple("|" if symbol == " " else symbol for symbol in ALPHABET)  # index = our label id
_KENLM_BINARY_MAGIC = b"mmap lm http://kheafield.com/code"  # the first bytes of a KenLM binary file


def language_model_format(path: str | os.PathLike) -> str:
    """``"arpa"`` or ``"binary"`` (KenLM's ``build_binary``) from the file's first bytes; else ValueError."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no language model at {path!r}: give a KenLM ARPA or binary file")
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if head.startswith(_KENLM_BINARY_MAGIC):
        return "binary"
    if head.lstrip().startswith(b"\\data\\"):
        return "arpa"
    hint = " (gzip: unpack it first)" if head.startswith(b"\x1f\x8b") else ""
    raise ValueError(
        f"{path!r} is neither an ARPA language model (its first line is \\data\\) nor a KenLM binary file{hint}"
    )


def arpa_vocabulary(path: str | os.PathLike) -> list[str]:
    """The words of an ARPA file's unigram section, in file order, without ``<s>``, ``</s>``, ``<unk>``.

    Reads only the unigrams (a LibriSpeech 4-gram's 200,000 words take a second), not the n-grams.
    """
    words, in_unigrams = [], False
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            line = line.strip()
            if line == "\\1-grams:":
                in_unigrams = True
            elif in_unigrams and line.startswith("\\"):
                break
            elif in_unigrams and line:
                fields = line.split()
                if len(fields) >= 2 and fields[1] not in (BOS, EOS, UNK):
                    words.append(fields[1])
    if not words:
        raise ValueError(f"{os.fspath(path)!r} has no \\1-grams: section with words; is it an ARPA file?")
    return words


def _spellable(word: str) -> bool:
    """A single word made of the alphabet's letters and apostrophes only."""
    return bool(word) and " " not in word and not outside_alphabet(word)


def _import_ctc_decoder():
    """torchaudio's ``ctc_decoder``, or one clear ImportError naming the package to install."""
    try:
        import flashlight.lib.text.decoder  # noqa: F401  (the C++ decoder torchaudio wraps)
        from torchaudio.models.decoder import ctc_decoder
    except (ImportError, RuntimeError) as error:
        raise ImportError(
            f"--decoder flashlight needs flashlight-text: pip install {FLASHLIGHT_REQUIREMENT} ({error})"
        ) from None
    return ctc_decoder


def flashlight_decoder(
    lm_path: str | os.PathLike | None = None,
    words: Iterable[str] = (),
    beam_width: int = 32,
    alpha: float = 0.0,
    beta: float = 0.0,
    beam_threshold: float = 50.0,
) -> FlashlightDecoder:
    """A CTC beam-search decoder from flashlight-text (torchaudio's ``ctc_decoder``), with a KenLM word LM.

    The score is §3.8's ``Q(y) = log p_ctc(y|x) + alpha log p_lm(y) + beta word_count(y)``, as in
    ``prefix_beam_search``. See the comment above for the lexicon and the scales.

    Args:
        lm_path: a KenLM ARPA or binary file (``NGramLM.to_arpa`` writes one), or None for no LM.
        words: more words for the lexicon, beside an ARPA LM's own (needed with a binary LM). Words with
            characters outside the alphabet (after lower-casing) cannot be spelt and are left out.
        beam_width: hypotheses kept per frame.
        alpha: LM weight (on the natural-log LM score); beta: word insertion bonus.
        beam_threshold: drop hypotheses this far (nats) below the best one (speed).

    Returns:
        ``decode``: ``decode(log_probs) -> str`` for the ``(T, C)`` log-probabilities of one utterance;
        ``decode.best(log_probs) -> (text, score)``.

    Raises:
        ImportError: flashlight-text is not installed. FileNotFoundError / ValueError: a missing or
        unreadable LM, or no word to build a lexicon from.
    """
    if beam_width < 1:
        raise ValueError(f"beam_width must be >= 1, got {beam_width}")
    ctc_decoder = _import_ctc_decoder()
    vocabulary = list(words)
    if lm_path is not None:
        lm_path = os.fspath(lm_path)
        if language_model_format(lm_path) == "arpa":
            vocabulary = arpa_vocabulary(lm_path) + vocabulary
        elif not vocabulary:
            raise ValueError(
                f"{lm_path!r} is a KenLM binary file, whose words cannot be read here: pass the words to "
                "decode (words=...), or give the ARPA file"
            )
    # word as the LM spells it -> our letters (a LibriSpeech LM is upper case)
    lexicon = {word: normalize_text(word) for word in dict.fromkeys(vocabulary)}
    lexicon = {word: text for word, text in lexicon.items() if _spellable(text)}
    if lm_path is not None and not lexicon:
        raise ValueError("none of the language model's words can be spelt in the alphabet (a-z and ')")
    options = dict(tokens=list(FLASHLIGHT_TOKENS), beam_size=beam_width, beam_threshold=beam_threshold)
    options |= dict(blank_token=FLASHLIGHT_TOKENS[BLANK], sil_token="|", log_add=True)
    with tempfile.TemporaryDirectory() as folder:
        lexicon_path = None
        if lexicon:
            lexicon_path = os.path.join(folder, "lexicon.txt")  # one line per word: "word w o r d |"
            with open(lexicon_path, "w", encoding="utf-8") as handle:
                handle.writelines(f"{word} {' '.join(text)} |\n" for word, text in lexicon.items())
        try:
            decoder = ctc_decoder(
                lexicon_path, lm=lm_path, lm_weight=alpha * math.log(10.0), word_score=beta, **options
            )
        except RuntimeError as error:  # KenLM's parse errors: the last line says what was wrong
            lines = [line for line in str(error).splitlines() if line.strip()]
            reason = lines[-1] if lines else error
            raise ValueError(f"{lm_path!r}: KenLM could not read it: {reason}") from None

    return FlashlightDecoder(decoder, lexicon)


class FlashlightDecoder:
    """``decode(log_probs (T, C)) -> str`` with flashlight-text's beam search; made by ``flashlight_decoder``."""

    def __init__(self, decoder, lexicon: dict[str, str]):
        self.decoder = decoder  # torchaudio's CTCDecoder
        self.lexicon = lexicon  # word as the LM spells it -> our letters; empty when lexicon-free

    def best(self, log_probs: Tensor) -> tuple[str, float]:
        """``(text, score)`` of the best hypothesis; the score is §3.8's Q(y) in nats."""
        if log_probs.dim() != 2 or log_probs.shape[1] != NUM_CLASSES:
            raise ValueError(f"expected (T, {NUM_CLASSES}) log-probabilities, got {tuple(log_probs.shape)}")
        emissions = log_probs.detach().float().cpu()  # (T, C)
        if self.lexicon:  # one more frame, a certain space, on which the last word completes (see above)
            space = torch.full((1, NUM_CLASSES), -1e30)  # (1, C): log-probability "never" ...
            space[0, _CHAR_TO_ID[" "]] = 0.0  # ... but for the space: certain
            emissions = torch.cat([emissions, space])  # (T + 1, C)
        hypotheses = self.decoder(emissions.contiguous()[None])[0]  # emissions (1, T, C)
        if not hypotheses:  # every hypothesis was pruned, e.g. no lexicon word fits: nothing to say
            return "", -math.inf
        best = hypotheses[0]
        if self.lexicon:  # the words (adjacent words need not be separated by a space label)
            text = " ".join(self.lexicon.get(word, normalize_text(word)) for word in best.words)
        else:  # lexicon-free: the letters, runs of spaces folded
            text = " ".join(decode_labels(best.tokens).split())
        return text, float(best.score)

    def __call__(self, log_probs: Tensor) -> str:
        return self.best(log_probs)[0]


# ----------------------------------------------------------------------------------------------------------
# 9. Language model (§3.8): a word n-gram with interpolated Kneser-Ney smoothing
# ----------------------------------------------------------------------------------------------------------
# The paper decodes with an n-gram LM (§3.8; a KenLM-trained 5-gram for English, as recalled). We train a small one on the
# synthetic corpus. Interpolated Kneser-Ney (Chen & Goodman 1998) is stored the way ARPA files store any
# back-off model: for every seen n-gram its (interpolated) probability, and for every seen context a
# back-off weight; an unseen n-gram falls back to the shorter context times that weight. So the same
# object reads and writes ARPA files, and a KenLM model drops in.

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
_LOG10 = math.log(10.0)


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
    def train(cls, sentences: Iterable[str], order: int = 3) -> NGramLM:
        """Estimate an interpolated Kneser-Ney n-gram LM from sentences (words split on white space).

        For an n-gram ``(h, w)`` at order k, with adjusted counts ``a`` (raw counts at the top order and
        for n-grams starting with ``<s>``; below that, the number of distinct words seen before it):

            p(w | h) = max(a(h, w) - D_k, 0) / a(h)  +  D_k N1+(h .) / a(h) * p(w | h[1:])

        and the unigram level interpolates with the uniform distribution over the vocabulary (which is
        where ``<unk>`` gets its probability). ``D_k = n1 / (n1 + 2 n2)`` from the count-of-counts.
        """
        if order < 1:
            raise ValueError(f"order must be >= 1, got {order}")
        sentences = [normalize_text(s).split() for s in sentences]
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

    def score(self, sentence: str, eos: bool = True) -> float:
        """``ln p(sentence)`` (natural log) with ``<s>`` and ``</s>``."""
        return self.sentence_log_prob(normalize_text(sentence).split(), eos=eos)

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
#   genuinely helps the decoder (paper section 3.8).
#
# Everything draws from a ``numpy.random.Generator`` and uses numpy's FFT, so a seed gives bit-identical audio
# on every run. Generation runs about 200-300 times faster than real time on one CPU core.

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


# --- 11.5 Noise (the paper's noisy dev set, Table 4 topic; training with added noise, section 5) ---

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
    return _map_in_processes(_babble_talkers, recipe, talkers, workers)


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
    speakers: list[Speaker | EspeakSpeaker]
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
    if num_utterances < 0:
        raise ValueError(f"num_utterances must be >= 0, got {num_utterances}")
    if not speakers:
        raise ValueError("speakers is empty; pass a pool from make_speaker_pool")
    unknown = sorted(set(noise_kinds) - set(NOISE_KINDS))
    if unknown:
        raise ValueError(f"unknown noise kinds {unknown}; choose from {NOISE_KINDS}")
    if not 0.0 <= noisy_fraction <= 1.0:
        raise ValueError(f"noisy_fraction must be between 0 and 1, got {noisy_fraction}")
    low, high = (snr_db, snr_db) if isinstance(snr_db, (int, float)) else snr_db
    bank = ()
    if babble_talkers > 0 and "babble" in noise_kinds and noisy_fraction > 0 and num_utterances > 0:
        bank = tuple(make_babble_bank(seed, babble_talkers, BABBLE_SECONDS, sample_rate, workers))
    recipe = SplitRecipe(
        _seed_words(seed), tuple(speakers), tuple(noise_kinds), (low, high), noisy_fraction, sample_rate, bank
    )
    indices = range(num_utterances)
    if workers > 1 and num_utterances >= 2 * workers:
        # Utterance i depends only on (seed, i), so splitting the work between processes changes nothing.
        import concurrent.futures
        import multiprocessing

        chunks = [range(start, num_utterances, workers) for start in range(workers)]
        context = multiprocessing.get_context(
            "fork" if "fork" in multiprocessing.get_all_start_methods() else None
        )
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            parts = list(pool.map(_synthesize_utterances, [recipe] * workers, chunks))
        by_index = {
            i: item
            for chunk, part in zip(chunks, parts, strict=True)
            for i, item in zip(chunk, part, strict=True)
        }
        utterances = [by_index[i] for i in indices]
    else:
        utterances = _synthesize_utterances(recipe, indices)
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
    noisy development sets (Table 4 topic, section 3.5). No speaker appears in two splits, so the dev
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
    train = make_split(
        "train",
        train_size,
        pools["train"],
        seed=(seed, 10),
        noise_kinds=NOISE_KINDS if train_noise_fraction > 0 else (),
        snr_db=train_snr_db,
        noisy_fraction=train_noise_fraction,
        sample_rate=sample_rate,
        workers=workers,
        babble_talkers=babble_bank_size(train_size * train_noise_fraction / len(NOISE_KINDS)),
    )
    dev_clean = make_split(
        "dev-clean", dev_size, pools["dev-clean"], seed=(seed, 11), sample_rate=sample_rate, workers=workers
    )
    dev_noisy = make_split(
        "dev-noisy",
        dev_size,
        pools["dev-noisy"],
        seed=(seed, 12),
        noise_kinds=NOISE_KINDS,
        snr_db=10.0,
        sample_rate=sample_rate,
        workers=workers,
    )
    return {"train": train, "dev-clean": dev_clean, "dev-noisy": dev_noisy}


def shared_sentences(train_split: SyntheticSplit, dev_split: SyntheticSplit) -> set[str]:
    """Sentences that appear in both splits (short ones like "thank you" will; a dev WER on them is easy)."""
    return set(train_split.texts) & set(dev_split.texts)


# --- 11.7 Cache of synthesised splits ---
# Every training run, figure and ablation sweep asks for the same few splits, and synthesis is not free
# (about half a minute for the CLI's default 2,000 + 2 x 200 utterances on one core; babble noise costs
# the most). So each split is kept on disk, one file per split, named by a hash of its *recipe* (the
# arguments of make_splits that determine it: a dev split does not depend on the training set's size) and
# checked against a hash of the *synthesis code* (sections 11.1-11.6 of this file, and numpy's version):
# edit the synthesiser and every entry is stale. The waveforms are stored as float32 exactly as they were
# synthesised, so a run from the cache is bit-identical to one without it. Files are written atomically;
# a truncated, corrupt or stale entry is reported with one warning and synthesised again.

SPLIT_CACHE_FORMAT = "deep-speech-2-lesson/split-cache/1"
SPLIT_CACHE_ENV = "DS2_CACHE_DIR"  # moves the cache folder (so does cached_splits(cache_dir=...))


def split_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``cache_dir``, else ``$DS2_CACHE_DIR``, else ``~/.cache/deep-speech-2-lesson``."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get(SPLIT_CACHE_ENV):
        return Path(os.environ[SPLIT_CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "deep-speech-2-lesson"


@functools.cache
def synthesis_code_hash() -> str:
    """sha256 of the synthesis code: this file's section 11 up to this subsection, and numpy's version."""
    import hashlib

    source = Path(__file__).read_text(encoding="utf-8")
    start, end = source.find("# 11. Synthetic speech"), source.find("# --- 11.7 Cache of synthesised")
    code = source[start:end] if 0 <= start < end else source  # markers moved: hash everything (safe)
    return hashlib.sha256(f"{code}\nnumpy {np.__version__}".encode()).hexdigest()


@functools.cache
def espeak_code_hash() -> str:
    """sha256 of the code behind an espeak corpus: section 11 up to 11.7 (grammar, noise, levels) and
    11.8, with numpy's, torch's and torchaudio's versions (torchaudio resamples). The espeak-ng library's
    version is part of the recipe instead (see ``cached_splits``)."""
    import hashlib
    from importlib.metadata import version

    source = Path(__file__).read_text(encoding="utf-8")
    start, end = source.find("# 11. Synthetic speech"), source.find("# --- 11.7 Cache of synthesised")
    # "\n" + heading: the headings themselves, not these strings (11.7 comes before them)
    start_8 = source.find("\n# --- 11.8 English from espeak-ng")
    end_8 = source.find("\n# --- 11.9 Real corpora")
    if end_8 < start_8:
        end_8 = source.find("\n# 12. Training")
    if 0 <= start < end <= start_8 < end_8:
        code = source[start:end] + source[start_8:end_8]
    else:  # markers moved: hash everything (safe)
        code = source
    versions = f"numpy {np.__version__} torch {torch.__version__} torchaudio {version('torchaudio')}"
    return hashlib.sha256(f"{code}\n{versions}".encode()).hexdigest()


def _split_recipes(
    train_size, dev_size, seed, train_noise_fraction, train_snr_db, num_train_speakers, num_dev_speakers, rate
) -> dict[str, dict]:
    """Each split's recipe: exactly the make_splits arguments its audio depends on (not ``workers``)."""
    train = {
        "num_utterances": train_size,
        "noise_fraction": float(train_noise_fraction),
        "snr_db": [float(x) for x in train_snr_db],
        "num_speakers": num_train_speakers,
    }
    dev = {"num_utterances": dev_size, "num_speakers": num_dev_speakers}
    recipes = {"train": train, "dev-clean": dict(dev), "dev-noisy": dict(dev)}
    return {
        name: {"split": name, "seed": seed, "sample_rate": rate, **recipe} for name, recipe in recipes.items()
    }


def _split_checksum(samples: Tensor, offsets: Tensor, metadata: list) -> str:
    import hashlib
    import json

    digest = hashlib.sha256(samples.numpy().tobytes())
    digest.update(offsets.numpy().tobytes())
    digest.update(json.dumps(metadata).encode())
    return digest.hexdigest()


def _speaker_values(speaker: Speaker | EspeakSpeaker) -> list:
    """A speaker as plain data (str, int, float) for the cache; ``type(speaker)(*values)`` rebuilds it."""
    if isinstance(speaker, Speaker):
        return [float(getattr(speaker, f.name)) for f in dataclasses.fields(Speaker)]
    values = dataclasses.astuple(speaker)
    return [
        v if isinstance(v, str) else int(v) if isinstance(v, (int, np.integer)) else float(v) for v in values
    ]


def _save_split(path: Path, split: SyntheticSplit, recipe: str, code: str | None = None) -> None:
    """One file per split: the waveforms as one float32 tensor plus offsets, and plain-data metadata.

    ``code`` is the hash of the code that made the audio (default: ``synthesis_code_hash()``).
    """
    lengths = [len(waveform) for waveform in split.waveforms]
    offsets = torch.tensor([0, *np.cumsum(lengths, dtype=np.int64)], dtype=torch.int64)  # (N + 1,)
    samples = torch.cat(split.waveforms) if split.waveforms else torch.zeros(0)  # (total samples,)
    speakers = [_speaker_values(speaker) for speaker in split.speakers]
    metadata = [split.name, split.sample_rate, split.texts, split.noise, split.snr_db, speakers]
    payload = {
        "format": SPLIT_CACHE_FORMAT,
        "recipe": recipe,
        "code": code or synthesis_code_hash(),
        "samples": samples.float().contiguous(),
        "offsets": offsets,
        "metadata": metadata,
        "checksum": _split_checksum(samples.float().contiguous(), offsets, metadata),
    }
    atomic_write(path, lambda temporary: torch.save(payload, temporary))


def _load_split(
    path: Path, recipe: str, code: str | None = None, speaker_type: type = Speaker
) -> tuple[SyntheticSplit | None, str]:
    """``(split, "")`` from a valid entry, else ``(None, why it cannot be used)``.

    ``code``: the hash the entry must have been written with (default: ``synthesis_code_hash()``);
    ``speaker_type``: ``Speaker`` (letter-phones) or ``EspeakSpeaker``.
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, garbage, a pickled object: all mean "make it again"
        return None, f"corrupt (unreadable: {type(error).__name__})"
    if not isinstance(payload, dict) or payload.get("format") != SPLIT_CACHE_FORMAT:
        return None, "corrupt (not a split-cache entry of this lesson)"
    if payload.get("recipe") != recipe:
        return None, "stale (written for another recipe)"
    if payload.get("code") != (code or synthesis_code_hash()):
        return None, "stale (written by other synthesis code, or other library versions)"
    try:
        samples, offsets, metadata = payload["samples"], payload["offsets"], payload["metadata"]
        if _split_checksum(samples, offsets, metadata) != payload["checksum"]:
            return None, "corrupt (checksum mismatch)"
        name, sample_rate, texts, noise, snr_db, speakers = metadata
        split = SyntheticSplit(
            waveforms=[samples[offsets[i] : offsets[i + 1]] for i in range(len(texts))],
            texts=list(texts),
            speakers=[speaker_type(*values) for values in speakers],
            name=name,
            noise=list(noise),
            snr_db=[float(x) for x in snr_db],
            sample_rate=int(sample_rate),
        )
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as error:
        return None, f"corrupt ({type(error).__name__}: {error})"
    return split, ""


def cached_splits(
    train_size: int,
    dev_size: int,
    seed: int = 0,
    train_noise_fraction: float = 0.0,
    workers: int = 1,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    train_snr_db: tuple[float, float] = (5.0, 30.0),
    num_train_speakers: int = 200,
    num_dev_speakers: int = 40,
    sample_rate: int = SAMPLE_RATE,
    log: Callable[[str], None] | None = None,
    corpus: str = "letters",
) -> dict[str, SyntheticSplit]:
    """``make_splits`` through an on-disk cache: the same three splits, synthesised once per recipe.

    The arguments are ``make_splits``'s (``workers`` only changes the speed), plus: ``cache_dir`` (default
    ``split_cache_dir()``: ``$DS2_CACHE_DIR`` or ``~/.cache/deep-speech-2-lesson``), ``use_cache=False`` to
    synthesise without reading or writing the cache, and ``log`` to receive one line per split saying
    where it came from. Utterance ``i`` of a split depends only on the split's recipe and ``i``, so the
    training set and the dev sets are cached (and made) separately: a dev split is shared by runs with
    different training sets. A corrupt or stale entry gives one ``warnings.warn`` line and is remade.

    ``corpus="espeak"`` does the same for ``make_espeak_splits`` (§11.8, its default voices): the key
    then also holds the voices and the espeak-ng library's version, and the code hash is
    ``espeak_code_hash()`` (sections 11.1-11.6 and 11.8, numpy's, torch's and torchaudio's versions).

    Returns:
        {"train": ..., "dev-clean": ..., "dev-noisy": ...}, equal to ``make_splits``'s result (or
        ``make_espeak_splits``'s).
    """
    import hashlib
    import json

    if corpus not in ("letters", "espeak"):
        raise ValueError(f"corpus must be 'letters' or 'espeak', got {corpus!r}")
    make = make_splits if corpus == "letters" else make_espeak_splits
    arguments = dict(
        seed=seed,
        train_noise_fraction=train_noise_fraction,
        train_snr_db=train_snr_db,
        num_train_speakers=num_train_speakers,
        num_dev_speakers=num_dev_speakers,
        sample_rate=sample_rate,
        workers=workers,
    )
    if not use_cache:
        return make(train_size, dev_size, **arguments)
    folder = split_cache_dir(cache_dir)
    recipes = _split_recipes(
        train_size,
        dev_size,
        seed,
        train_noise_fraction,
        train_snr_db,
        num_train_speakers,
        num_dev_speakers,
        sample_rate,
    )
    code, speaker_type, prefix = None, Speaker, ""  # None: synthesis_code_hash()
    if corpus == "espeak":  # the recipe also names the voices and the library that speaks them
        code, speaker_type, prefix = espeak_code_hash(), EspeakSpeaker, "espeak-"
        voices = {"train": ESPEAK_TRAIN_VOICES, "dev-clean": ESPEAK_DEV_VOICES}
        voices["dev-noisy"] = ESPEAK_DEV_VOICES
        for name, recipe in recipes.items():
            recipe |= {"corpus": corpus, "voices": list(voices[name]), "espeak": espeak_version()}
    splits: dict[str, SyntheticSplit] = {}
    paths, keys = {}, {}
    for name, recipe in recipes.items():
        keys[name] = json.dumps(recipe, sort_keys=True)
        digest = hashlib.sha256(keys[name].encode()).hexdigest()[:16]
        paths[name] = folder / f"{prefix}{name}-{recipe['num_utterances']}utt-seed{seed}-{digest}.pt"
        if not paths[name].exists():
            continue
        split, problem = _load_split(paths[name], keys[name], code, speaker_type)
        if split is None:
            warnings.warn(f"split cache: {paths[name]} is {problem}; synthesising it again", stacklevel=2)
        else:
            splits[name] = split
            if log is not None:
                log(f"{name}: {len(split)} utterances from the cache ({paths[name]})")
    missing = [name for name in recipes if name not in splits]
    groups = [("train",), ("dev-clean", "dev-noisy")]  # make_splits(n, 0) and make_splits(0, n)
    for group in (group for group in groups if set(group) & set(missing)):
        began = time.perf_counter()
        sizes = (train_size, 0) if group == ("train",) else (0, dev_size)
        made = make(*sizes, **arguments)
        for name in group:
            if name in missing:
                splits[name] = made[name]
                _save_split(paths[name], made[name], keys[name], code)
                if log is not None:
                    log(
                        f"{name}: {len(made[name])} utterances synthesised in "
                        f"{time.perf_counter() - began:.1f} s, cached at {paths[name]}"
                    )
    return {name: splits[name] for name in recipes}


# --- 11.8 English from espeak-ng: a second synthetic corpus (``--data espeak``) ---
# The letter-phone corpus above spells phonetically: every letter has one sound, so the recogniser's job
# is phonetics. Real English is not spelt as it sounds ("one", "laugh", "friend"; "by" and "buy", "your"
# and "you're" sound the same), so a recogniser must learn English orthography from sound, and the word
# language model (§3.8) earns its keep. espeak-ng, a formant synthesiser, speaks real English in many
# accents, much faster than real time; the PyPI package ``espeakng-loader`` ships its shared library and
# data, so no system package is needed. We call the C library through ``ctypes``.
#
# The corpus: the lesson's grammar and vocabulary (`random_sentence`), spoken by English accents
# (espeak-ng "voices") x voice variants (male, female, Klatt-synthesiser voices) with speaking rate,
# pitch, intonation range and loudness drawn per speaker; resampled from espeak-ng's 22,050 Hz to 16 kHz
# with torchaudio; the same noise as the letter-phones. The dev splits use *accents that never occur in
# training* (Scottish and Lancastrian English), so they measure generalisation to new accents.
#
# Determinism. espeak-ng keeps state between utterances in C globals (pitch-flutter position, automatic
# gain, noise generator, ...) that neither espeak_Terminate nor a new espeak_Initialize resets; measured:
# the same sentence spoken twice in a row differs, even in length. So each utterance is spoken by a
# freshly loaded copy of the library (dlopen, initialise, speak, terminate, dlclose): about 9 ms of CPU
# for a 1.3 s sentence here, half of it loading the English dictionary, x140 faster than real time. Then an utterance depends only on its own seed,
# whatever was spoken before it and in whichever process, so a split is the same for any number of
# workers. Because the library's state lives in the process, use worker processes, never threads.
#
# Licence: espeak-ng is GPL-3.0-or-later. This module does not ship, copy into the repository or link
# against it: it loads the shared library that the user installed from PyPI, at run time, on request.

ESPEAK_REQUIREMENT = "espeakng-loader==0.2.4"
ESPEAK_INSTALL_HINT = f"python -m pip install {ESPEAK_REQUIREMENT} (it ships libespeak-ng and its data)"
ESPEAK_SAMPLE_RATE = 22_050  # espeak-ng's native output rate, in Hz (checked when the library starts)

# Accents, as espeak-ng voice names (the file names under espeak-ng-data/lang/gmw). Train and dev are
# disjoint: dev-clean and dev-noisy are spoken only in accents the model never hears in training.
ESPEAK_TRAIN_VOICES: tuple[str, ...] = (
    "en",  # Great Britain ("en-gb" is not a voice name in espeak-ng 1.52)
    "en-us",  # America
    "en-us-nyc",  # New York City
    "en-gb-x-rp",  # Received Pronunciation
    "en-gb-x-gbcwmd",  # West Midlands
    "en-029",  # Caribbean
)
ESPEAK_DEV_VOICES: tuple[str, ...] = (
    "en-gb-scotland",  # Scotland
    "en-gb-x-gbclan",  # Lancaster
)
# Voice variants (espeak-ng-data/voices/!v): "" keeps the accent's own voice; m1-m7 and f1-f5 change
# pitch range, formant frequencies and voice quality; klatt and klatt2 use espeak-ng's Klatt synthesiser,
# a different source and filter. The novelty voices (robots, whisper, croak) are left out.
ESPEAK_VARIANTS: tuple[str, ...] = (
    "", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
)  # fmt: skip
ESPEAK_RATE_WPM = (130, 230)  # speaking rate, words per minute (espeak-ng's default is 175)
ESPEAK_PITCH = (25, 75)  # espeak-ng's base pitch, 0-100; 50 keeps the voice's own
ESPEAK_PITCH_RANGE = (25, 85)  # how far the pitch moves in intonation, 0-100 (0 = monotone; default 50)

# The C API (espeak-ng's speak_lib.h): the constants we use.
_AUDIO_OUTPUT_SYNCHRONOUS = 2  # espeak_Synth returns when the audio is done, delivered to our callback
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_ESPEAK_RATE, _ESPEAK_PITCH, _ESPEAK_RANGE = 1, 3, 4  # espeak_PARAMETER
_EE_OK = 0
# int callback(short *samples, int num_samples, espeak_EVENT *events): return 0 to continue.
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)
_INT, _UINT, _POINTER = ctypes.c_int, ctypes.c_uint, ctypes.c_void_p
_SIGNATURES = {  # name: (argument types, result type)
    "espeak_Initialize": ((_INT, _INT, ctypes.c_char_p, _INT), _INT),  # (output, buffer ms, data, options)
    "espeak_SetSynthCallback": ((_SYNTH_CALLBACK,), None),
    "espeak_SetVoiceByName": ((ctypes.c_char_p,), _INT),
    "espeak_SetParameter": ((_INT, _INT, _INT), _INT),  # (parameter, value, relative)
    "espeak_ng_SetRandSeed": ((ctypes.c_long,), _INT),
    # (text, size, position, position type, end position, flags, unique identifier, user data)
    "espeak_Synth": ((_POINTER, ctypes.c_size_t, _UINT, _INT, _UINT, _UINT, _POINTER, _POINTER), _INT),
    "espeak_Synchronize": ((), _INT),
    "espeak_Terminate": ((), _INT),
    "espeak_Info": ((_POINTER,), ctypes.c_char_p),
}


@dataclass(frozen=True)
class EspeakSpeaker:
    """One espeak-ng speaker: an accent, a voice variant, and how they speak.

    Attributes:
        voice: the accent, an espeak-ng voice name such as "en-us" or "en-gb-scotland".
        variant: a voice variant such as "f3" or "klatt" (see `ESPEAK_VARIANTS`), "" for none.
        rate_wpm: speaking rate in words per minute (130-230; espeak-ng's default is 175).
        pitch: base pitch on espeak-ng's 0-100 scale (50 keeps the voice's own).
        pitch_range: intonation range, 0-100 (0 is a monotone; 50 is espeak-ng's default).
        gain_db: loudness relative to the normalised level, in dB (-10 to +10, as `Speaker.gain_db`).
    """

    voice: str
    variant: str
    rate_wpm: int
    pitch: int
    pitch_range: int
    gain_db: float

    @property
    def voice_name(self) -> str:
        """What espeak_SetVoiceByName takes: "en-us+f3", or "en-us" without a variant."""
        return f"{self.voice}+{self.variant}" if self.variant else self.voice


def random_espeak_speaker(
    rng: np.random.Generator, voices: Sequence[str], variants: Sequence[str] = ESPEAK_VARIANTS
) -> EspeakSpeaker:
    """Draws a speaker: an accent from `voices`, a variant, and rate, pitch, range and loudness."""
    return EspeakSpeaker(
        voice=str(voices[int(rng.integers(len(voices)))]),
        variant=str(variants[int(rng.integers(len(variants)))]),
        rate_wpm=int(rng.integers(ESPEAK_RATE_WPM[0], ESPEAK_RATE_WPM[1] + 1)),
        pitch=int(rng.integers(ESPEAK_PITCH[0], ESPEAK_PITCH[1] + 1)),
        pitch_range=int(rng.integers(ESPEAK_PITCH_RANGE[0], ESPEAK_PITCH_RANGE[1] + 1)),
        gain_db=float(rng.uniform(-10.0, 10.0)),
    )


def make_espeak_speaker_pool(
    num_speakers: int, voices: Sequence[str], seed: Seed, variants: Sequence[str] = ESPEAK_VARIANTS
) -> list[EspeakSpeaker]:
    """Draws `num_speakers` speakers of the accents `voices` (see `make_speaker_pool`)."""
    if num_speakers < 1:
        raise ValueError(f"num_speakers must be at least 1, got {num_speakers}")
    if not voices or not variants:
        raise ValueError("voices and variants must each name at least one espeak-ng voice")
    rng = np.random.default_rng([*_seed_words(seed), 0xE5])  # 0xE5: a stream of its own for speakers
    return [random_espeak_speaker(rng, voices, variants) for _ in range(num_speakers)]


# --- the ctypes binding ---


@functools.cache
def _espeak_files() -> tuple[str, str]:
    """(library, data folder) of the installed espeak-ng, the library copied to a path of our own.

    The private copy: if other code in this process (phonemizer, say) has loaded the package's
    libespeak-ng, dlclose would not unload it, and its state and ours would mix. A copy at another
    path is another library to the dynamic loader. Raises ImportError with the install command.
    """
    try:
        import espeakng_loader
    except ImportError:
        raise ImportError(f"espeak-ng is not available: {ESPEAK_INSTALL_HINT}") from None
    try:
        library, data = espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
        folder = tempfile.mkdtemp(prefix="ds2-espeak-")
        atexit.register(shutil.rmtree, folder, True)  # forked workers leave with os._exit: no removal
        private = os.path.join(folder, os.path.basename(library))
        shutil.copyfile(library, private)
    except (OSError, RuntimeError) as error:  # RuntimeError: espeakng_loader's "data path not exists"
        raise ImportError(f"espeak-ng is not available ({error}): {ESPEAK_INSTALL_HINT}") from None
    return private, data


_ESPEAK_LOCK = threading.Lock()  # the library's state is per process: threads take turns


def _load_espeak() -> tuple[ctypes.CDLL, int]:
    """A fresh instance of libespeak-ng, initialised for synchronous output: (library, sample rate)."""
    library_path, data_path = _espeak_files()
    try:
        library = ctypes.CDLL(library_path)
        for name, (argtypes, restype) in _SIGNATURES.items():
            function = getattr(library, name)
            function.argtypes, function.restype = argtypes, restype
    except (OSError, AttributeError) as error:
        raise ImportError(f"espeak-ng is not available ({error}): {ESPEAK_INSTALL_HINT}") from None
    sample_rate = library.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), 0)
    if sample_rate <= 0:
        _unload_espeak(library)
        raise ImportError(
            f"espeak-ng is not available (it found no data in {data_path}): {ESPEAK_INSTALL_HINT}"
        )
    return library, sample_rate


def _unload_espeak(library: ctypes.CDLL) -> None:
    import _ctypes

    library.espeak_Terminate()
    unload = getattr(_ctypes, "dlclose", None) or _ctypes.FreeLibrary  # POSIX, Windows
    unload(library._handle)  # the last reference: the loader unmaps the library, and its state with it


@contextlib.contextmanager
def _fresh_espeak() -> Iterator[ctypes.CDLL]:
    """A freshly loaded libespeak-ng for one use; unloaded afterwards, taking its C state with it.

    espeak_Initialize sets the process's LC_CTYPE locale; we put it back. Threads take turns.
    """
    with _ESPEAK_LOCK:
        previous_locale = locale.setlocale(locale.LC_CTYPE)
        library, sample_rate = _load_espeak()
        try:
            if sample_rate != ESPEAK_SAMPLE_RATE:
                raise RuntimeError(
                    f"espeak-ng speaks at {sample_rate} Hz; this code expects {ESPEAK_SAMPLE_RATE}"
                )
            yield library
        finally:
            _unload_espeak(library)
            locale.setlocale(locale.LC_CTYPE, previous_locale)


def espeak_speak(text: str, speaker: EspeakSpeaker, seed: int = 0) -> np.ndarray:
    """Speaks `text` with espeak-ng, as it comes out: float32 `(samples,)` at `ESPEAK_SAMPLE_RATE` Hz.

    Each call loads a fresh copy of the C library (see the section's notes), so the audio depends only on
    the arguments. numpy only, no torch kernels: safe in forked worker processes.

    Args:
        text: lower-case words, a-z, space and apostrophe (see `check_speakable`).
        speaker: the accent, variant, rate and pitch (`gain_db` is applied later, by the caller).
        seed: seeds espeak-ng's own noise generator (breath and frication noise).

    Returns:
        float32 samples in [-1, 1), with about 10 ms of silence at each end.
    """
    check_speakable(text)
    chunks: list[np.ndarray] = []

    def receive(samples, num_samples, events):  # espeak_Synth calls this every ~100 ms of audio
        if num_samples > 0:
            chunks.append(np.ctypeslib.as_array(samples, shape=(num_samples,)).copy())  # int16
        return 0  # 0 = go on

    callback = _SYNTH_CALLBACK(receive)  # referenced until espeak_Synth has returned
    with _fresh_espeak() as library:
        library.espeak_SetSynthCallback(callback)
        if library.espeak_SetVoiceByName(speaker.voice_name.encode()) != _EE_OK:
            raise ValueError(
                f"espeak-ng has no voice {speaker.voice_name!r}; accents such as {ESPEAK_TRAIN_VOICES}, "
                f"variants such as {ESPEAK_VARIANTS[1:4]} (see espeak-ng-data/lang and voices/!v)"
            )
        library.espeak_SetParameter(_ESPEAK_RATE, speaker.rate_wpm, 0)
        library.espeak_SetParameter(_ESPEAK_PITCH, speaker.pitch, 0)
        library.espeak_SetParameter(_ESPEAK_RANGE, speaker.pitch_range, 0)
        library.espeak_ng_SetRandSeed(seed)
        encoded = text.encode() + b"\0"
        status = library.espeak_Synth(
            encoded, len(encoded), 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None
        )
        library.espeak_Synchronize()
    if status != _EE_OK or not chunks:
        raise RuntimeError(f"espeak-ng failed to speak {text!r} (status {status})")
    return np.concatenate(chunks).astype(np.float32) / 32768.0


@functools.cache
def espeak_version() -> str:
    """E.g. "espeak-ng 1.52.0 (espeakng-loader 0.2.4)": part of the cache key of an espeak corpus."""
    from importlib.metadata import version

    with _fresh_espeak() as library:
        return (
            f"espeak-ng {library.espeak_Info(None).decode()} (espeakng-loader {version('espeakng-loader')})"
        )


def check_espeak_available() -> None:
    """Raises ImportError, in one line with the install command, unless espeak-ng can speak here.

    Also speaks a short sentence twice: if the two differ, the library kept its state between loads
    (a platform whose dlclose does not unload), and the corpus will not be reproducible; that is a
    warning, not an error.
    """
    speaker = EspeakSpeaker("en-us", "", 175, 50, 50, 0.0)
    first, second = espeak_speak("hello there", speaker), espeak_speak("hello there", speaker)
    if not np.array_equal(first, second):
        warnings.warn(
            "espeak-ng kept state between utterances on this platform: the espeak corpus will differ "
            "from run to run and with the number of workers",
            stacklevel=2,
        )


@functools.cache
def _resampler(orig_freq: int, new_freq: int):
    import torchaudio

    # transforms.Resample is functional.resample with its windowed-sinc kernel computed once (5x faster
    # here for 2 s utterances; the two agree to 4e-5).
    return torchaudio.transforms.Resample(orig_freq, new_freq)


def _resample(waveform: np.ndarray, orig_freq: int, new_freq: int) -> np.ndarray:
    """float `(samples,)` at `orig_freq` Hz -> float32 at `new_freq` Hz, with torchaudio (torch kernels:
    call it in the main process, not in a forked worker)."""
    if orig_freq == new_freq:
        return np.asarray(waveform, dtype=np.float32)
    with torch.no_grad():
        return _resampler(orig_freq, new_freq)(torch.from_numpy(np.asarray(waveform, np.float32))).numpy()


def _level_espeak_audio(
    waveform: np.ndarray, speaker: EspeakSpeaker, rng: np.random.Generator, sample_rate: int
) -> np.ndarray:
    """Resampled espeak audio -> the letter-phones' level and framing: edge silence, room tone, gain.

    Speech (pauses excluded) is scaled to the letter-phones' level; 50-150 ms of silence is added at each
    end (espeak-ng leaves about 10 ms); a faint noise floor 60 dB below the speech fills every silence;
    then the speaker's gain. numpy only: runs in worker processes. Returns float64 `(samples,)`.
    """
    samples_per_ms = sample_rate / 1000.0
    lead, trail = (int(rng.uniform(*_EDGE_SILENCE_MS) * samples_per_ms) for _ in range(2))
    waveform = np.asarray(waveform, dtype=np.float64)
    waveform = np.pad(waveform * (_TARGET_ACTIVE_RMS / _active_rms(waveform, sample_rate)), (lead, trail))
    waveform += rng.standard_normal(len(waveform)) * _TARGET_ACTIVE_RMS * 10.0 ** (_ROOM_TONE_DB / 20.0)
    return waveform * 10.0 ** (speaker.gain_db / 20.0)


def synthesize_espeak_speech(
    text: str, speaker: EspeakSpeaker, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE
) -> torch.Tensor:
    """English speech from espeak-ng at `sample_rate`, at the letter-phone corpus's level.

    The espeak counterpart of `synthesize_speech`: speak (`espeak_speak`), resample from 22,050 Hz with
    torchaudio, normalise the level, add edge silence and a faint noise floor, apply `speaker.gain_db`.

    Args:
        text: lower-case words, a-z, space and apostrophe.
        speaker: who speaks (see `EspeakSpeaker`).
        rng: the random generator; the same state gives the same audio.
        sample_rate: in Hz.

    Returns:
        float32 `(samples,)`.
    """
    raw = espeak_speak(text, speaker, seed=int(rng.integers(2**31)))
    waveform = _resample(raw, ESPEAK_SAMPLE_RATE, sample_rate)
    return torch.from_numpy(_level_espeak_audio(waveform, speaker, rng, sample_rate).astype(np.float32))


# --- the splits ---


def _map_in_processes(function: Callable, recipe, num_items: int, workers: int) -> list:
    """``function(recipe, range(num_items))`` split over `workers` forked processes, items in order.

    Item i must depend only on (recipe, i); then the result is the same for any number of workers.
    `function` must not call torch kernels (torch's OpenMP pool does not survive a fork).
    (make_split could share this helper.)
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


def _speak_utterances(recipe, indices) -> list[tuple]:
    """Stage 1 (worker processes): draw each utterance's speaker, sentence and noise; speak it at 22.05 kHz."""
    seed_words, speakers, noise_kinds, low, high, noisy_fraction = recipe
    utterances = []
    for index in indices:
        rng = np.random.default_rng([*seed_words, index])
        speaker = speakers[int(rng.integers(len(speakers)))]
        text = random_sentence(rng)
        raw = espeak_speak(text, speaker, seed=int(rng.integers(2**31)))
        kind, snr = "clean", math.inf
        if noise_kinds and rng.random() < noisy_fraction:
            kind, snr = str(noise_kinds[int(rng.integers(len(noise_kinds)))]), float(rng.uniform(low, high))
        utterances.append((raw, text, speaker, kind, snr))
    return utterances


def _finish_utterances(recipe, indices) -> list[np.ndarray]:
    """Stage 3 (worker processes): level, edge silence and room tone, gain, then the drawn noise."""
    seed_words, waveforms, speakers, kinds, snrs, sample_rate = recipe
    finished = []
    for index in indices:
        rng = np.random.default_rng([*seed_words, index, 0x2])  # 0x2: the stream for levels and noise
        waveform = _level_espeak_audio(waveforms[index], speakers[index], rng, sample_rate)
        if kinds[index] != "clean":
            noisy = add_noise(torch.from_numpy(waveform), snrs[index], kinds[index], rng, sample_rate)
            waveform = noisy.numpy()
        finished.append(waveform.astype(np.float32))
    return finished


def make_espeak_split(
    name: str,
    num_utterances: int,
    speakers: Sequence[EspeakSpeaker],
    seed: Seed,
    noise_kinds: Sequence[str] = (),
    snr_db: float | tuple[float, float] = 10.0,
    noisy_fraction: float = 1.0,
    sample_rate: int = SAMPLE_RATE,
    workers: int = 1,
) -> SyntheticSplit:
    """Synthesises a split of English from espeak-ng: `make_split` with espeak-ng speakers.

    Utterance `i` draws its speaker, sentence, espeak-ng seed and noise from its own generator, seeded by
    `(seed, i)`, so it is the same whatever the split's size and the number of workers.

    Three stages, so that forked workers never run torch kernels: (1) workers speak each sentence at
    22,050 Hz; (2) this process resamples to `sample_rate` with torchaudio; (3) workers set the level and
    add noise (babble noise, made of letter-phone speech, is the slow part: ~0.1 s an utterance).

    Args: as `make_split`, with `speakers` from `make_espeak_speaker_pool`.

    Returns:
        The split; `split.noise` and `split.snr_db` record what was added to each utterance.
    """
    if num_utterances < 0:
        raise ValueError(f"num_utterances must be >= 0, got {num_utterances}")
    if not speakers:
        raise ValueError("speakers is empty; pass a pool from make_espeak_speaker_pool")
    unknown = sorted(set(noise_kinds) - set(NOISE_KINDS))
    if unknown:
        raise ValueError(f"unknown noise kinds {unknown}; choose from {NOISE_KINDS}")
    if not 0.0 <= noisy_fraction <= 1.0:
        raise ValueError(f"noisy_fraction must be between 0 and 1, got {noisy_fraction}")
    low, high = (snr_db, snr_db) if isinstance(snr_db, (int, float)) else snr_db
    _espeak_files()  # before forking: one private copy of the library, removed when this process exits
    seed_words = _seed_words(seed)
    recipe = (seed_words, tuple(speakers), tuple(noise_kinds), low, high, noisy_fraction)
    spoken = _map_in_processes(_speak_utterances, recipe, num_utterances, workers)
    resampled = [_resample(raw, ESPEAK_SAMPLE_RATE, sample_rate) for raw, *_ in spoken]  # (samples,) each
    texts = [text for _, text, _, _, _ in spoken]
    chosen = [speaker for _, _, speaker, _, _ in spoken]
    kinds = [kind for _, _, _, kind, _ in spoken]
    snrs = [snr for _, _, _, _, snr in spoken]
    recipe = (seed_words, resampled, chosen, kinds, snrs, sample_rate)
    waveforms = _map_in_processes(_finish_utterances, recipe, num_utterances, workers)
    return SyntheticSplit(
        [torch.from_numpy(w) for w in waveforms], texts, chosen, name, kinds, snrs, sample_rate=sample_rate
    )


def make_espeak_splits(
    train_size: int,
    dev_size: int,
    seed: int = 0,
    train_noise_fraction: float = 0.0,
    train_snr_db: tuple[float, float] = (5.0, 30.0),
    num_train_speakers: int = 200,
    num_dev_speakers: int = 40,
    sample_rate: int = SAMPLE_RATE,
    workers: int = 1,
    train_voices: Sequence[str] = ESPEAK_TRAIN_VOICES,
    dev_voices: Sequence[str] = ESPEAK_DEV_VOICES,
) -> dict[str, SyntheticSplit]:
    """The three splits of `make_splits`, spoken in English by espeak-ng; dev in accents unheard in train.

    "train" is spoken in `train_voices`, "dev-clean" and "dev-noisy" in `dev_voices` (by default
    Scottish and Lancastrian English), so no accent of a dev split occurs in training; the two dev splits
    share those accents but not their speakers (each has its own pool of rates and pitches). Noise as in
    `make_splits`: `train_noise_fraction` of "train" gets white, pink or babble noise at an SNR drawn
    from `train_snr_db`; "dev-noisy" gets one of them at 10 dB SNR.

    Raises ImportError (one line, with the install command) when espeak-ng is not installed.

    Returns:
        {"train": ..., "dev-clean": ..., "dev-noisy": ...}
    """
    shared = sorted(set(train_voices) & set(dev_voices))
    if shared:
        raise ValueError(
            f"train_voices and dev_voices share {shared}; the dev accents must be unheard in training"
        )
    check_espeak_available()
    pools = {
        "train": make_espeak_speaker_pool(num_train_speakers, train_voices, (seed, 0)),
        "dev-clean": make_espeak_speaker_pool(num_dev_speakers, dev_voices, (seed, 1)),
        "dev-noisy": make_espeak_speaker_pool(num_dev_speakers, dev_voices, (seed, 2)),
    }
    if set(pools["dev-clean"]) & set(pools["dev-noisy"]):  # ints drawn from small ranges could collide
        raise RuntimeError("the speaker pools of dev-clean and dev-noisy overlap; choose another seed")
    train = make_espeak_split(
        "train",
        train_size,
        pools["train"],
        seed=(seed, 10),
        noise_kinds=NOISE_KINDS if train_noise_fraction > 0 else (),
        snr_db=train_snr_db,
        noisy_fraction=train_noise_fraction,
        sample_rate=sample_rate,
        workers=workers,
    )
    dev_clean = make_espeak_split(
        "dev-clean", dev_size, pools["dev-clean"], seed=(seed, 11), sample_rate=sample_rate, workers=workers
    )
    dev_noisy = make_espeak_split(
        "dev-noisy",
        dev_size,
        pools["dev-noisy"],
        seed=(seed, 12),
        noise_kinds=NOISE_KINDS,
        snr_db=10.0,
        sample_rate=sample_rate,
        workers=workers,
    )
    return {"train": train, "dev-clean": dev_clean, "dev-noisy": dev_noisy}


# --- 11.9 Real corpora: LibriSpeech folders and manifests (``--data librispeech`` / ``manifest``) ---
# The same pipeline on recorded speech. LibriSpeech (Panayotov et al. 2015; openslr.org/12) is read as it
# unpacks: speaker/chapter/speaker-chapter-NNNN.flac beside speaker-chapter.trans.txt, whose lines are
# "speaker-chapter-NNNN TRANSCRIPT IN UPPER CASE". Any other corpus comes in as a manifest: a CSV (with a
# header) or JSONL file naming each utterance's audio file and transcript.
#
# Nothing is silently changed. Lower-casing and folding white space are normalisations (`normalize_text`);
# a transcript with anything else outside the alphabet (a digit, a hyphen, an accented letter) is reported
# with its file and line and skipped, not edited. Audio is down-mixed (`to_mono`) and resampled to the
# model's rate (torchaudio, as for espeak-ng). Utterances are filtered by duration (very long ones cost
# memory and padding), and every utterance's CTC feasibility is checked before training: the conv
# front-end's output frames (`DeepSpeech2.output_lengths`) must be at least the transcript's length plus
# one blank per repeated letter (`ctc_min_frames`), else no alignment exists (§3.1). Everything dropped
# is counted by reason. The dev set is a folder or manifest of its own (``--dev-dir``), or else 10% of
# the training *speakers*, held out whole, so the dev error measures unheard voices as in §11.6.
#
# Memory: the splits are held in memory as spectrograms (about 0.25 GB per hour of audio, plus the
# waveforms while featurizing), so use a subset (a manifest of some utterances) on a laptop.

CORPUS_AUDIO_KEYS = ("audio", "audio_filepath", "path", "file", "wav")  # manifest columns (or JSON keys)
CORPUS_TEXT_KEYS = ("text", "transcript", "sentence")  # ... for the transcript
CORPUS_SPEAKER_KEYS = ("speaker", "speaker_id", "client_id")  # ... for the speaker (optional)


@dataclass(frozen=True)
class CorpusUtterance:
    """One entry of a corpus index: where the audio is, what is said (normalised), who says it.

    Attributes:
        audio: the audio file.
        text: the transcript, normalised to the alphabet (lower case, single spaces).
        speaker: the speaker's id; "" when the corpus does not say.
        where: the transcript's "file:line", for messages.
    """

    audio: Path
    text: str
    speaker: str
    where: str


@dataclass
class CorpusSplit(SyntheticSplit):
    """A split of recorded speech: a ``SyntheticSplit`` (so training and evaluation run unchanged) whose
    ``speakers`` are speaker ids and whose ``noise``/``snr_db`` are empty (no noise was added), plus:

    Attributes:
        files: each utterance's audio file.
        source: where the split came from, in words (a folder, a manifest, held-out speakers of one).
        dropped: how many utterances were left out, by reason.
        problems: one line per skipped transcript or unreadable file, "file:line: what was wrong".
        sample_rates: how many of the kept files had each sample rate (the others were resampled).
    """

    files: list[str] = field(default_factory=list)
    source: str = ""
    dropped: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    sample_rates: dict[int, int] = field(default_factory=dict)  # the files' own rates, Hz -> utterances


def _check_transcript(text: str, where: str) -> tuple[str, str, str]:
    """``(normalised text, "", "")`` or ``("", reason, problem line)`` for a transcript that cannot be used."""
    normalized = normalize_text(text)
    if not normalized:
        return "", "empty transcript", f"{where}: the transcript is empty; skipped"
    unknown = outside_alphabet(normalized)
    if unknown:
        return (
            "",
            "characters outside the alphabet",
            f"{where}: transcript {text.strip()!r} has characters outside the alphabet {unknown} "
            "(spell digits out, drop punctuation); skipped",
        )
    return normalized, "", ""


def read_librispeech(folder: str | os.PathLike) -> tuple[list[CorpusUtterance], dict[str, int], list[str]]:
    """Index of a folder in LibriSpeech's layout (``speaker/chapter/*.flac`` + ``*.trans.txt``).

    Every ``*.trans.txt`` under ``folder`` is read (point it at one subset such as
    ``LibriSpeech/dev-clean``: a parent folder would mix the subsets). A line is ``ID TRANSCRIPT``; the
    audio is ``ID.flac`` beside it and the speaker is the first part of ``ID``. No audio is read here.

    Returns:
        ``(utterances, dropped, problems)``: the usable entries in file order; how many lines were
        skipped, by reason; one line per skipped transcript, "file:line: what was wrong".

    Raises:
        FileNotFoundError: no such folder, or no transcripts in it.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"no folder {str(folder)!r}: point --data-dir at a LibriSpeech subset such as "
            "LibriSpeech/train-clean-100 (from openslr.org/12)"
        )
    transcripts = sorted(folder.rglob("*.trans.txt"))
    if not transcripts:
        raise FileNotFoundError(
            f"no *.trans.txt files under {str(folder)!r}: expected LibriSpeech's layout, "
            "speaker/chapter/speaker-chapter.trans.txt with speaker-chapter-NNNN.flac beside it"
        )
    # Pointed at LibriSpeech/ itself? Then dev and test speech would be trained on: refuse.
    parts = [path.relative_to(folder).parts for path in transcripts]
    subsets = sorted({part[0] for part in parts if len(part) == 4})  # subset/speaker/chapter/file
    train = [subset for subset in subsets if subset.startswith("train")]
    if train and any(subset.startswith(("dev", "test")) for subset in subsets):
        raise ValueError(
            f"{folder} holds the LibriSpeech subsets {subsets}, training and held-out ones together: point "
            f"this at a training subset (e.g. {folder / train[0]}) and --dev-dir at a dev subset"
        )
    utterances, dropped, problems = [], defaultdict(int), []
    for path in transcripts:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            utterance_id, _, text = line.strip().partition(" ")
            audio = path.parent / f"{utterance_id}.flac"
            text, reason, problem = _check_transcript(text, where)
            if not reason and not audio.is_file():
                reason = "missing audio file"
                problem = f"{where}: no audio file {audio.name} beside it; skipped"
            if reason:
                dropped[reason] += 1
                problems.append(problem)
                continue
            utterances.append(CorpusUtterance(audio, text, utterance_id.split("-")[0], where))
    return utterances, dict(dropped), problems


def read_manifest(path: str | os.PathLike) -> tuple[list[CorpusUtterance], dict[str, int], list[str]]:
    """Index of a manifest: a CSV file with a header (``.csv``; ``.tsv`` for tabs) or JSON lines (``.jsonl``).

    Each row (or JSON object) names an audio file (column ``audio``, ``audio_filepath`` (NeMo), ``path``,
    ``file`` or ``wav``) and its transcript (``text``, ``transcript`` or ``sentence``), optionally its
    speaker (``speaker``, ``speaker_id`` or ``client_id``). Relative audio paths are relative to the
    manifest's folder. No audio is read here.

    Returns:
        ``(utterances, dropped, problems)`` as ``read_librispeech``.

    Raises:
        FileNotFoundError: no such file. ValueError: an unknown file type, or a CSV header without an
        audio or a transcript column.
    """
    import csv
    import json

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"no manifest file {str(path)!r}: --data manifest needs a .csv, .tsv or .jsonl file"
        )
    suffix = path.suffix.lower()
    rows: list[tuple[int, dict | None, str]] = []  # (line, record or None, what was wrong)
    if suffix in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8-sig") as file:  # -sig: a spreadsheet's BOM
            reader = csv.DictReader(file, delimiter="\t" if suffix == ".tsv" else ",")
            header = reader.fieldnames or []
            for keys, what in ((CORPUS_AUDIO_KEYS, "audio path"), (CORPUS_TEXT_KEYS, "transcript")):
                if not set(keys) & set(header):
                    raise ValueError(
                        f"{path}: the header {header} has no {what} column; name it one of {list(keys)}"
                    )
            for record in reader:
                rows.append((reader.line_num, record, ""))
    elif suffix in (".jsonl", ".json"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                rows.append((number, None, f"not a JSON object ({error.msg})"))
                continue
            rows.append((number, record, "" if isinstance(record, dict) else "not a JSON object"))
    else:
        raise ValueError(
            f"{path}: a manifest must be a .csv, .tsv or .jsonl file, got {suffix or 'no suffix'!r}"
        )
    utterances, dropped, problems = [], defaultdict(int), []
    for number, record, wrong in rows:
        where = f"{path}:{number}"
        if not wrong:
            audio = next((record[k] for k in CORPUS_AUDIO_KEYS if record.get(k)), None)
            text = next((record[k] for k in CORPUS_TEXT_KEYS if record.get(k) is not None), None)
            if not isinstance(audio, str) or not isinstance(text, str):
                wrong = f"needs an audio path ({'/'.join(CORPUS_AUDIO_KEYS)}) and a transcript ({'/'.join(CORPUS_TEXT_KEYS)})"
        if wrong:
            dropped["malformed entry"] += 1
            problems.append(f"{where}: {wrong}; skipped")
            continue
        text, reason, problem = _check_transcript(text, where)
        audio = Path(audio).expanduser()
        audio = audio if audio.is_absolute() else path.parent / audio
        if not reason and not audio.is_file():
            reason, problem = "missing audio file", f"{where}: no audio file {str(audio)!r}; skipped"
        if reason:
            dropped[reason] += 1
            problems.append(problem)
            continue
        speaker = next((str(record[k]) for k in CORPUS_SPEAKER_KEYS if record.get(k) not in (None, "")), "")
        utterances.append(CorpusUtterance(audio, text, speaker, where))
    return utterances, dict(dropped), problems


def hold_out_speakers(
    utterances: Sequence[CorpusUtterance], fraction: float = 0.1, seed: int = 0
) -> tuple[list[CorpusUtterance], list[CorpusUtterance], str]:
    """Splits an index into (train, dev) with ``fraction`` of the *speakers* in dev, all their utterances.

    The speakers are drawn with ``seed``, so the split is the same on every run. When some utterance has
    no speaker (a manifest without a speaker column), ``fraction`` of the *utterances* are held out
    instead, and the description says that dev speakers may also be heard in training.

    Returns:
        ``(train, dev, description)``, e.g. "held-out speakers: 4 of 40 (10%, seed 0)".
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the dev fraction must be between 0 and 1, got {fraction}")
    rng = np.random.default_rng([seed, 0xDE7])  # 0xDE7: a stream of its own for the dev split
    speakers = sorted({u.speaker for u in utterances})
    if "" in speakers:
        count = min(len(utterances) - 1, max(1, round(fraction * len(utterances))))
        if count < 1:
            raise ValueError("too few utterances to hold some out for dev; give --dev-dir")
        held = set(rng.permutation(len(utterances))[:count].tolist())
        dev = [u for i, u in enumerate(utterances) if i in held]
        train = [u for i, u in enumerate(utterances) if i not in held]
        how = (
            f"held-out utterances: {count} of {len(utterances)} ({fraction:.0%}, seed {seed}); no "
            "speakers are named, so dev speakers may also be heard in training"
        )
        return train, dev, how
    if len(speakers) < 2:
        raise ValueError(
            f"all utterances are by one speaker ({speakers[0] if speakers else 'none'}): no speakers to "
            "hold out for dev; give --dev-dir"
        )
    count = min(len(speakers) - 1, max(1, round(fraction * len(speakers))))
    held = {speakers[i] for i in rng.permutation(len(speakers))[:count].tolist()}
    train = [u for u in utterances if u.speaker not in held]
    dev = [u for u in utterances if u.speaker in held]
    return train, dev, f"held-out speakers: {count} of {len(speakers)} ({fraction:.0%}, seed {seed})"


def load_corpus_split(
    utterances: Sequence[CorpusUtterance],
    name: str,
    config: DS2Config | None = None,
    min_seconds: float = 0.5,
    max_seconds: float = 20.0,
    source: str = "",
) -> CorpusSplit:
    """Reads the audio of an index into a split, dropping (and counting) what cannot be trained on.

    Per utterance: the duration from the file's header (``soundfile.info``, nothing decoded) against
    ``[min_seconds, max_seconds]`` (``max_seconds=0``: no limit); then the audio, down-mixed and
    resampled to ``config.sample_rate``; then silence (``is_silent``) and CTC feasibility: the model's
    output frames for this audio (``DeepSpeech2(config).output_lengths``) against ``ctc_min_frames`` of
    the transcript.

    Returns:
        The split, ``dropped`` counting each reason, ``problems`` naming each unreadable file, and
        ``sample_rates`` counting the files' own rates (all but ``config.sample_rate`` were resampled).
    """
    config = config or DS2Config()
    if min_seconds < 0 or max_seconds < 0 or (max_seconds and max_seconds < min_seconds):
        raise ValueError(
            f"the duration limits must satisfy 0 <= min <= max (max 0: no limit), got {min_seconds} and {max_seconds}"
        )
    front_end = DeepSpeech2(config)  # only for output_lengths: how the conv strides shorten time
    split = CorpusSplit([], [], [], name, sample_rate=config.sample_rate, source=source)
    dropped: dict[str, int] = defaultdict(int)
    rates: dict[int, int] = defaultdict(int)
    for utterance in utterances:
        try:
            info = soundfile.info(str(utterance.audio))  # the header only
            seconds = info.frames / info.samplerate
            if min_seconds <= seconds and not (max_seconds and seconds > max_seconds):
                waveform, rate = load_audio(utterance.audio)  # (channels, samples)
        except Exception as error:  # soundfile's own errors, or load_audio's ValueError
            dropped["unreadable audio"] += 1
            split.problems.append(f"{utterance.where}: cannot read {utterance.audio} ({error}); skipped")
            continue
        if seconds < min_seconds:
            dropped[f"shorter than {min_seconds:g} s"] += 1
            continue
        if max_seconds and seconds > max_seconds:
            dropped[f"longer than {max_seconds:g} s"] += 1
            continue
        mono = _resample(to_mono(waveform).numpy(), rate, config.sample_rate)  # (samples,)
        if not np.isfinite(mono).all():
            dropped["NaN or inf samples"] += 1
            continue
        if len(mono) == 0 or is_silent(torch.from_numpy(mono)):
            dropped["silent"] += 1
            continue
        labels = encode_text(utterance.text)  # (S,)
        needed = int(ctc_min_frames(labels[None], torch.tensor([len(labels)]))[0])
        frames = num_frames(len(mono), config.sample_rate, config.window_ms, config.stride_ms)
        if int(front_end.output_lengths(torch.tensor([frames]))[0]) < needed:
            dropped["too short for the transcript under CTC"] += 1
            continue
        split.waveforms.append(torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32)))
        split.texts.append(utterance.text)
        split.speakers.append(utterance.speaker)
        split.files.append(str(utterance.audio))
        rates[rate] += 1
    split.dropped, split.sample_rates = dict(dropped), dict(rates)
    return split


def _report_split(split: CorpusSplit, log: Callable[[str], None], shown: int = 10) -> None:
    """One line for the split, then its problems (the first ``shown``, then a count of the rest)."""
    dropped = ", ".join(f"{count} {reason}" for reason, count in sorted(split.dropped.items()))
    minutes = split.durations_s().sum() / 60 if len(split) else 0.0
    amount = f"{minutes / 60:.1f} h" if minutes >= 60 else f"{minutes:.1f} min"
    log(
        f"{split.name}: {len(split)} utterances ({amount}) from {split.source}; "
        f"dropped {sum(split.dropped.values())}{': ' + dropped if dropped else ''}"
    )
    resampled = {rate: n for rate, n in sorted(split.sample_rates.items()) if rate != split.sample_rate}
    if resampled:
        rates = ", ".join(f"{n} at {rate} Hz" for rate, n in resampled.items())
        log(f"  resampled to {split.sample_rate} Hz: {rates}")
    if any(rate < split.sample_rate for rate in resampled):
        log("  upsampled audio has nothing above half its own rate (8 kHz audio: 4 kHz): expect more errors")
    for line in split.problems[:shown]:
        log(f"  {line}")
    if len(split.problems) > shown:
        log(f"  ... and {len(split.problems) - shown} more (all in the split's .problems)")


def read_corpus_splits(
    kind: str,
    data_dir: str | os.PathLike,
    dev_dir: str | os.PathLike | None = None,
    seed: int = 0,
    min_seconds: float = 0.5,
    max_seconds: float = 20.0,
    config: DS2Config | None = None,
    dev_fraction: float = 0.1,
    log: Callable[[str], None] | None = print,
) -> dict[str, CorpusSplit]:
    """A recorded corpus as the pipeline's splits: ``{"train": ..., "dev": ...}``.

    Args:
        kind: "librispeech" (a folder, see ``read_librispeech``) or "manifest" (see ``read_manifest``).
        data_dir: the training folder or manifest.
        dev_dir: the dev folder or manifest, in the same format; ``None``: hold out ``dev_fraction`` of
            the training speakers (``hold_out_speakers``, drawn with ``seed``).
        min_seconds, max_seconds: keep utterances of this duration (``max_seconds=0``: no limit).
        config: the model's configuration, for the sample rate and the CTC feasibility check.
        log: receives one line per split (kept, dropped by reason) and one per problem.

    Raises:
        FileNotFoundError, ValueError: a missing folder or file, a bad manifest, dev files that are also
        training files, or a split left empty by the filters (the message says what was dropped).
    """
    readers = {"librispeech": read_librispeech, "manifest": read_manifest}
    if kind not in readers:
        raise ValueError(f"kind must be one of {list(readers)}, got {kind!r}")
    config = config or DS2Config()
    train_index, train_dropped, train_problems = readers[kind](data_dir)
    if dev_dir is not None:
        dev_index, dev_dropped, dev_problems = readers[kind](dev_dir)
        shared = {u.audio.resolve() for u in train_index} & {u.audio.resolve() for u in dev_index}
        if shared:
            raise ValueError(
                f"{len(shared)} audio files are in both the training data and --dev-dir "
                f"(e.g. {sorted(shared)[0]}): the dev set must be held out"
            )
        overlap = ({u.speaker for u in train_index} & {u.speaker for u in dev_index}) - {""}
        dev_source = str(dev_dir)
        if overlap:  # allowed (a corpus may have no disjoint dev set), but the dev error is then easier
            dev_source += f" ({len(overlap)} of its speakers also speak in training)"
    else:
        train_index, dev_index, how = hold_out_speakers(train_index, dev_fraction, seed)
        dev_dropped, dev_problems, dev_source = {}, [], f"{data_dir} ({how})"
    splits = {}
    for name, index, dropped, problems, source in (
        ("train", train_index, train_dropped, train_problems, str(data_dir)),
        ("dev", dev_index, dev_dropped, dev_problems, dev_source),
    ):
        split = load_corpus_split(index, name, config, min_seconds, max_seconds, source)
        split.dropped = {**dropped, **split.dropped}
        split.problems = [*problems, *split.problems]
        if log is not None:
            _report_split(split, log)
        if not len(split):
            raise ValueError(
                f"no usable {name} utterances in {source} (dropped: {split.dropped or 'none; it is empty'}); "
                "check the path, --min-seconds and --max-seconds"
            )
        splits[name] = split
    return splits


# ----------------------------------------------------------------------------------------------------------
# 12. Training: batching, SortaGrad (§3.3), the one training loop, evaluation, checkpoints
# ----------------------------------------------------------------------------------------------------------


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


def collate(spectrograms: Sequence[Tensor], texts: Sequence[str]) -> Batch:
    """Pad a list of ``(F, T_i)`` spectrograms and their transcripts into a ``Batch``."""
    padded, lengths = pad_spectrograms(spectrograms)
    labels = [encode_text(text) for text in texts]
    target_lengths = torch.tensor([len(label) for label in labels], dtype=torch.long)
    targets = nn.utils.rnn.pad_sequence(labels, batch_first=True, padding_value=BLANK)
    return Batch(padded, lengths, targets, target_lengths, [normalize_text(t) for t in texts])


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
    """This process's share of each global minibatch, for data parallelism over ``world_size`` processes.

    ``batch_size`` is the *global* batch: the SortaGrad plan is ``sortagrad_batches(lengths, batch_size,
    epoch, seed, sortagrad)``, the same on every process (the seed and epoch fix it), so one step on N
    processes trains on exactly the utterances one process would train on in that step. Each global batch
    (its utterances sorted by length) is dealt out like cards, ``batch[rank::world_size]``: every process
    gets the same number of utterances (+-1) with a similar mix of lengths, so none waits long for the
    others at the gradient all-reduce. A global batch smaller than ``world_size`` (the last one, when the
    data does not divide evenly) joins its neighbour, so every process has work at every step. Over the
    processes each utterance appears exactly once per epoch; epoch 0 stays globally sorted. With
    ``world_size == 1`` this is ``sortagrad_batches``.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    if batch_size < world_size:
        raise ValueError(
            f"the batch size ({batch_size}) is the global batch, shared by {world_size} processes: it must "
            "be at least the number of processes, so that each has an utterance"
        )
    plan = sortagrad_batches(lengths, batch_size, epoch, seed, sortagrad)
    if world_size == 1:
        return plan
    if len(lengths) < world_size:
        raise ValueError(f"{len(lengths)} utterances cannot keep {world_size} processes busy")
    merged = [list(batch) for batch in plan]
    # Only the last batch of a pool can be short, and only the last pool is not whole: at most one.
    for index in reversed(range(len(merged))):
        if len(merged[index]) < world_size:  # too small to share: join the batch before it (or after)
            short = merged.pop(index)
            merged[max(index - 1, 0)] += short
    shares = []
    for batch in merged:
        batch = sorted(batch, key=lambda i: (lengths[i], i))  # a joined batch is sorted again
        shares.append(batch[rank::world_size])
    return shares


# --- 12.3 The one training loop: learning-rate schedule, train_step, train_epoch, fit ---
# Every runner (train_minimal.py, visualization.py, setup.py, the notebook, the benchmarks, the ablation
# sweeps) trains through these functions, so a fix made here is made everywhere.


@dataclass
class TrainConfig:
    """How to train: the optimiser, schedule and batching. Defaults are the lesson's CPU recipe.

    The paper trains with SGD and Nesterov momentum (recalled; not on our fact sheet of the paper); on a
    CPU-sized model and a few thousand updates Adam converges faster, so it is the default here and the
    paper's choice is one flag away (``optimizer="sgd"``, try ``lr=0.05``). The cosine schedule and the
    clipping threshold are ours: the fact sheet does not give the paper's.
    """

    # 3 epochs of 16 utterances a batch (375 updates), not 5 of 32 (315): a step's cost grows with the
    # audio in it, so halving the batch doubles the updates an epoch buys at about the same price, and on
    # 2,000 utterances the updates are what is scarce. `python train_minimal.py --epochs 5 --batch-size 32`
    # (the recipe until 2026-12-01) ends at dev-noisy greedy CER 5.28% after 148 s of epochs; these
    # defaults at 5.42% after 80 s (seed 0, one host, the same day; seed 1: 4.42%). Smaller still buys
    # accuracy, not time: batch 8 reached 4.06%, but its 3 epochs took 108 s (benchmarks/README.md).
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


def amp_dtype(device: torch.device | str) -> torch.dtype:
    """The autocast dtype of mixed precision (``--amp``) on ``device``.

    bfloat16 has float32's exponent range (8 bits) with fewer mantissa bits, so activations and gradients
    neither overflow nor underflow and no loss scaling is needed: it is used on CUDA GPUs that support it
    (Ampere and later) and on the CPU. Older GPUs get float16, whose narrow range needs a ``GradScaler``
    (``grad_scaler``). On the CPU, bf16 is faster only where the hardware has bf16 instructions (AMX,
    AVX-512 BF16); elsewhere it is emulated and slower. Apple's MPS is refused: untested here.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        return torch.bfloat16
    raise ValueError(f"--amp (mixed precision) runs on CUDA or the CPU, not on {device.type}; drop --amp")


def grad_scaler(device: torch.device | str, amp: bool) -> torch.amp.GradScaler | None:
    """A ``GradScaler`` when ``amp`` computes in float16 (small gradients would underflow to 0), else None.

    The scaler multiplies the loss by a large factor before ``backward`` and divides the gradients by it
    before the step; it lowers the factor (and skips that step) when a gradient overflows.
    """
    device = torch.device(device)
    if amp and amp_dtype(device) == torch.float16:
        return torch.amp.GradScaler(device.type)
    return None


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
    for index in range(state.batch, len(batches)):
        chosen = batches[index]
        batch = collate([spectrograms[i] for i in chosen], [texts[i] for i in chosen]).to(device)
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
) -> TrainState:
    """Train for ``config.epochs`` epochs (or until ``max_seconds``), evaluating on ``dev`` after each.

    The loop for scripts and the notebook; ``train_minimal.py`` drives ``train_epoch`` itself for its
    progress bar and Ctrl-C handling. Each epoch's record: ``epoch``, ``train_loss`` (mean of its finite
    losses), ``skipped_batches``, ``steps`` (so far), ``seconds``, and greedy ``{"cer", "wer"}`` per dev
    split. ``on_step(state, loss)`` is called after every step (e.g. to log a learning curve). ``amp``:
    mixed precision (``train_step``).

    Returns:
        The final ``TrainState`` (``state.history`` holds the records).
    """
    optimizer = optimizer or make_optimizer(model, config)
    state = state or TrainState()
    scaler = grad_scaler(next(model.parameters()).device, amp)  # one for the run (float16 only)
    began = time.perf_counter()
    out_of_time = False
    while state.epoch < config.epochs and not out_of_time:
        epoch_began = time.perf_counter()
        for loss in train_epoch(model, optimizer, *train, config, state, amp, scaler):
            if on_step is not None:
                on_step(state, loss)
            if max_seconds is not None and time.perf_counter() - began > max_seconds:
                out_of_time = True
                break
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
        for name, (dev_spectrograms, dev_texts) in (dev or {}).items():
            result = evaluate(model, dev_spectrograms, dev_texts)
            record[name] = {"cer": result["cer"], "wer": result["wer"]}
        record["seconds"] = time.perf_counter() - epoch_began
        state.end_epoch(record)
        if log is not None:
            errors = "  ".join(f"{name} CER {100 * record[name]['cer']:.2f}%" for name in dev or {})
            log(
                f"epoch {record['epoch']}  loss {record['train_loss']:.3f}  {errors}  {record['seconds']:.1f} s"
            )
    model.eval()
    return state


def mps_is_available() -> bool:
    """Whether Apple's Metal GPU backend (MPS, Apple-silicon Macs) can be used by this torch build."""
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def pick_device(name: str = "auto") -> torch.device:
    """The device to train on: ``"auto"`` takes CUDA, else Apple MPS, else the CPU.

    ``"cpu"``, ``"cuda"``, ``"cuda:N"`` and ``"mps"`` are taken as asked; one that is absent, or a name
    that is none of these, raises ``ValueError`` saying what to use instead.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name} was asked for, but no CUDA GPU is available; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                f"numbered 0 to {torch.cuda.device_count() - 1}"
            )
    elif device.type == "mps" and not mps_is_available():
        raise ValueError(
            f"--device {name} was asked for, but Apple's MPS backend is not available (it needs an "
            "Apple-silicon Mac and a torch build with MPS); use --device cpu"
        )
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {name!r} is not supported here: use auto, cpu, cuda, cuda:N or mps")
    return device


# --- Data parallelism with torchrun (§4.1: synchronous SGD over many GPUs) ---
# The paper trains one model on many GPUs with synchronous SGD: every GPU holds a copy of the model and a
# share of the minibatch, and the gradients are summed across GPUs (an all-reduce) before every step, so
# all copies take the same step - the minibatch is simply spread over more hardware. PyTorch's
# DistributedDataParallel (DDP) does the all-reduce during the backward pass. What is ours: the batch plan
# (``distributed_batches``: SortaGrad over the global batch), the loss weighting that makes the update
# exactly the global batch's (``shard_loss``), and BatchNorm statistics over the global batch
# (``_global_batch_moments``). ``torchrun --nproc_per_node N train_minimal.py ...`` starts N processes.


def distributed_world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process: ``(0, 1)`` unless a process group is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: str = "auto") -> torch.device:
    """This process's device; under torchrun, also join the process group (NCCL on CUDA, gloo on CPU).

    torchrun starts one process per GPU and tells each where it stands in environment variables:
    ``RANK`` (0 to WORLD_SIZE - 1 over all nodes), ``WORLD_SIZE``, ``LOCAL_RANK`` (which GPU of this
    node is its own) and ``MASTER_ADDR``/``MASTER_PORT`` to meet the others at. Without them (plain
    ``python``) this is ``pick_device(device)`` and no group is joined.
    """
    chosen = pick_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return chosen
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if chosen.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"torchrun started local rank {local_rank}, but this node has {torch.cuda.device_count()} "
                "CUDA GPU(s): set --nproc_per_node to at most the number of GPUs"
            )
        chosen, backend = torch.device("cuda", local_rank), "nccl"  # one GPU per process
        torch.cuda.set_device(chosen)
    elif chosen.type == "cpu":
        backend = "gloo"
    else:
        raise ValueError(f"torchrun runs on CUDA GPUs (NCCL) or CPUs (gloo), not on {chosen.type!r}")
    if not dist.is_initialized():
        dist.init_process_group(backend)
        atexit.register(dist.destroy_process_group)  # leave the group cleanly when the process ends
    return chosen


def distribute(model: nn.Module) -> nn.Module:
    """``model`` wrapped in ``DistributedDataParallel`` when there are several processes, else ``model``.

    DDP broadcasts rank 0's weights at the start (so every copy begins equal) and averages the gradients
    over the processes during ``backward``. ``forward_sync_buffers=False``: the BatchNorm running
    estimates need no broadcast before every forward, as every process updates them from the same global
    statistics (they are still copied from rank 0 once, at the start). Train through the wrapper; save,
    load and evaluate the model itself.
    """
    if distributed_world()[1] == 1:
        return model
    device = next(model.parameters()).device
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device] if device.type == "cuda" else None, forward_sync_buffers=False
    )


def shard_loss(loss: Tensor, value: float, count: int) -> tuple[Tensor, float]:
    """``(loss to backpropagate, the global batch's mean loss)`` for this process's ``count`` utterances.

    ``loss`` (its float ``value``) is the mean over this process's share. DDP *averages* gradients over
    the processes, and shares may differ by one utterance, so each share's loss is weighted by
    ``count * world_size / global_count``: the average is then the gradient of the global batch's mean
    loss, the update one process would make. The global mean (NaN or inf if any share's is) is the same
    on every process, so all of them skip a bad batch or none does.
    """
    totals = torch.tensor([value * count, float(count)], dtype=torch.float64, device=loss.device)
    dist.all_reduce(totals)  # sums over the processes
    global_sum, global_count = totals.tolist()
    return loss * (count * dist.get_world_size() / global_count), global_sum / global_count


def any_process(flag: bool) -> bool:
    """True on every process if ``flag`` is true on any (Ctrl-C reaches them at different moments).

    A collective under torchrun: every process must call it at the same point, then all act alike.
    """
    if distributed_world()[1] == 1:
        return bool(flag)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    tensor = torch.tensor([float(bool(flag))], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


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

    ``decoder`` (e.g. ``flashlight_decoder(...)``), when given, replaces ``prefix_beam_search`` for the
    ``beam_*`` results: ``decoder(log_probs (T, C)) -> str``. ``workers`` > 1 runs ``prefix_beam_search``
    (pure Python, one utterance at a time) in that many forked processes; the results are the same.
    """
    log_probs = predict(model, spectrograms, batch_size)
    greedy = [greedy_decode(lp)[0] for lp in log_probs]
    result = {
        "cer": character_error_rate(texts, greedy),
        "wer": word_error_rate(texts, greedy),
        "hypotheses": greedy,
    }
    if decoder is not None:
        beam = [decoder(lp) for lp in log_probs]
    elif beam_width > 0:
        search = (beam_width, lm, alpha, beta)
        frames = [lp.numpy() for lp in log_probs]  # numpy: the workers must not run torch kernels
        beam = _map_in_processes(_beam_search_items, (frames, search), len(frames), workers)
    if beam_width > 0 or decoder is not None:
        result |= {
            "beam_cer": character_error_rate(texts, beam),
            "beam_wer": word_error_rate(texts, beam),
            "beam_hypotheses": beam,
        }
    return result


def _beam_search_items(recipe: tuple, indices: Iterable[int]) -> list[str]:
    """``prefix_beam_search`` on utterances ``indices`` of ``recipe = (frames, (beam_width, lm, alpha, beta))``."""
    frames, (beam_width, lm, alpha, beta) = recipe
    return [prefix_beam_search(frames[i], beam_width, lm, alpha, beta) for i in indices]


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
    saved config. Raises ``FileNotFoundError`` for a missing file and ``ValueError`` (saying what to do)
    for a truncated, corrupt, foreign or mismatched one.
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
    try:
        config = DS2Config(**payload["config"])
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path!r} holds an invalid model config: {error}") from error
    if model is None:
        model = DeepSpeech2(config)
    elif model.config != config:
        saved, wanted = config.to_dict(), model.config.to_dict()
        differences = [
            f"{k}: checkpoint {saved[k]!r} vs model {wanted[k]!r}" for k in saved if saved[k] != wanted[k]
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
# errors that say what to do, down-mixing, reading and writing audio with soundfile, cutting long
# recordings at quiet moments, and transcribe(). Plus the one helper that writes files atomically.


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
        spec = featurize(chunk, model_rate, model_rate, model.config.spectrogram_floor_db)
        (log_probs,) = predict(model, [spec])
        if decoder is not None:
            text = decoder(log_probs)
        elif beam_width > 0:
            text = prefix_beam_search(log_probs, beam_width, lm, alpha, beta)
        else:
            text = greedy_decode(log_probs)[0]
        if text.strip():
            texts.append(text.strip())  # a chunk may begin or end in a word gap: one space between chunks
    return " ".join(texts)


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
