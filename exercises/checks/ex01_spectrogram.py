"""Checks for exercise 1 (the log power spectrogram, DS2 §3.1).

Oracles: ``Tensor.unfold`` (framing), ``torch.stft`` (power spectrum), ``implementation.log_spectrogram``
and torchaudio's ``Spectrogram`` (the whole spectrogram), ``implementation.normalize_spectrogram``
(normalisation). Where a wrong answer matches a common mistake, the message names the mistake.
"""

from __future__ import annotations

import math

import torch
import torchaudio

import implementation as ds2
from checks.common import CheckFailed, Part, call, expect_close, expect_equal, expect_shape, is_close

EXERCISE = 1
FILENAME = "exercise_01_spectrogram.py"
TITLE = "the log power spectrogram (DS2 §3.1)"
MINUTES = 30


def _stft_power(waveform: torch.Tensor, window: int, hop: int, periodic: bool = True) -> torch.Tensor:
    hann = torch.hann_window(window, periodic=periodic, dtype=waveform.dtype)
    stft = torch.stft(waveform, n_fft=window, hop_length=hop, window=hann, center=False, return_complex=True)
    return stft.abs().square()  # (F, T)


# ---------------------------------------------------------------------------------------------------------
# Part a
# ---------------------------------------------------------------------------------------------------------


def _nearest(samples: float) -> set[int]:
    """The nearest integers to ``samples``: both neighbours at an exact half (round() and int(x + 0.5))."""
    return {round(samples), math.floor(samples + 0.5)}


def check_frame_arithmetic(module) -> None:
    for sample_rate, window_ms, stride_ms in [
        (16000, 20.0, 10.0),  # (320, 160)
        (8000, 20.0, 10.0),
        (48000, 20.0, 10.0),
        (16000, 25.0, 10.0),
        (22050, 20.0, 10.0),  # hop 220.5: an exact half, so 220 (round()) and 221 (int(x + 0.5)) both pass
        (11025, 25.0, 10.0),  # window 275.625: rounds up, where int() would truncate
        (22050, 20.0, 15.0),  # hop 330.75: rounds up, where int() would truncate
    ]:
        what = f"frame_sizes({sample_rate}, {window_ms}, {stride_ms})"
        got = call(module, "frame_sizes", sample_rate, window_ms, stride_ms)
        got = tuple(got) if isinstance(got, list | tuple) else got
        exact = (sample_rate * window_ms / 1000, sample_rate * stride_ms / 1000)  # (window, hop) in samples
        allowed = [_nearest(value) for value in exact]
        expected = (round(exact[0]), round(exact[1]))
        pair = isinstance(got, tuple) and len(got) == 2
        if pair and all(value in nearest for value, nearest in zip(got, allowed, strict=True)):
            continue
        for index, name in enumerate(("window", "hop")):
            if pair and got[index] == int(exact[index]) and int(exact[index]) not in allowed[index]:
                raise CheckFailed(
                    f"{what}: expected {expected}, got {got}: int() cuts the {name}, {exact[index]:g} samples, "
                    f"down to {int(exact[index])}; round to the nearest sample with round()"
                )
        expect_equal(what, got, expected, "each rounded to the nearest sample")
    # Frame counts against what unfold really produces, for every length around the edges and beyond.
    for window, hop in [(320, 160), (400, 160), (7, 3), (5, 5)]:
        for num_samples in [*range(0, 3 * window + 2 * hop + 2), 1000, 16000, 16001, 123457]:
            expected = (
                torch.zeros(num_samples).unfold(0, window, hop).shape[0] if num_samples >= window else 0
            )
            got = call(module, "count_frames", num_samples, window, hop)
            if isinstance(got, torch.Tensor) and got.numel() == 1:
                got = int(got)
            extra = "a signal shorter than one window has no frames" if num_samples < window else ""
            expect_equal(f"count_frames({num_samples}, window={window}, hop={hop})", got, expected, extra)


# ---------------------------------------------------------------------------------------------------------
# Part b
# ---------------------------------------------------------------------------------------------------------


def check_framing(module) -> None:
    generator = torch.Generator().manual_seed(1)
    for num_samples, window, hop in [
        (320, 320, 160),
        (479, 320, 160),
        (480, 320, 160),
        (1234, 320, 160),
        (16000, 320, 160),
        (50, 7, 3),
    ]:
        waveform = torch.randn(num_samples, generator=generator)
        expected = waveform.unfold(0, window, hop)  # (T, W)
        what = f"frame_signal of {num_samples} samples (window {window}, hop {hop})"
        got = expect_shape(what, call(module, "frame_signal", waveform, window, hop), expected.shape)
        for frame in range(expected.shape[0]):
            if not torch.equal(got[frame].to(expected.dtype), expected[frame]):
                start = frame * hop
                raise CheckFailed(
                    f"{what}: frame {frame} should hold samples {start}..{start + window - 1} of the "
                    f"waveform, but it differs (first values expected {expected[frame, :3].tolist()}, "
                    f"got {got[frame, :3].tolist()})"
                )


# ---------------------------------------------------------------------------------------------------------
# Part c
# ---------------------------------------------------------------------------------------------------------


def check_power_spectrum(module) -> None:
    generator = torch.Generator().manual_seed(2)
    for window, hop, num_samples in [(320, 160, 4000), (160, 80, 1000), (8, 4, 40)]:
        waveform = torch.randn(num_samples, generator=generator)
        frames = waveform.unfold(0, window, hop).contiguous()  # (T, W), the oracle's own framing
        expected = _stft_power(waveform, window, hop)  # (F, T)
        what = f"power_spectrum of ({frames.shape[0]}, {window}) frames"
        got = call(module, "power_spectrum", frames)
        atol = 1e-5 * float(expected.max())
        if not is_close(got, expected, atol, 1e-4):
            # Name the usual mistakes before showing numbers.
            spectrum = torch.fft.rfft(frames * torch.hann_window(window), dim=-1)
            mistakes = [
                (expected.T, "your result is (T, F); return frequency first, (F, T)"),
                (spectrum.abs().T, "that is the magnitude |X|; the power is |X|^2"),
                (
                    torch.fft.rfft(frames, dim=-1).abs().square().T,
                    "the frames were not multiplied by the Hann window",
                ),
                (
                    _stft_power(waveform, window, hop, periodic=False),
                    "that is the symmetric Hann window; use the periodic one, torch.hann_window(W)",
                ),
                (
                    torch.fft.rfft(frames * torch.hamming_window(window), dim=-1).abs().square().T,
                    "that is a Hamming window (0.54 - 0.46 cos); the lesson uses the Hann window "
                    "(0.5 - 0.5 cos), torch.hann_window(W)",
                ),
            ]
            for candidate, message in mistakes:
                if is_close(got, candidate, atol, 1e-4):
                    raise CheckFailed(f"{what}: {message}")
        expect_close(what, got, expected, atol=atol, rtol=1e-4)


# ---------------------------------------------------------------------------------------------------------
# Part d
# ---------------------------------------------------------------------------------------------------------


def _name_the_log(what: str, got, waveform: torch.Tensor, sample_rate: int) -> None:
    """Raise CheckFailed if ``got`` is the power spectrogram under a wrong (or no) logarithm."""
    window, hop = ds2.frame_parameters(sample_rate)
    power = _stft_power(waveform, window, hop)  # (F, T)
    for candidate, message in [
        (torch.log10(power + 1e-10), "that is log10; the lesson uses the natural log, torch.log"),
        (
            10 * torch.log10(power + 1e-10),
            "that is decibels, 10 log10(power); the lesson uses the natural log, torch.log(power + eps)",
        ),
        (
            torch.log1p(power),
            "that is log1p(power) = log(1 + power), which squashes every quiet bin to about 0; add eps "
            "(1e-10), not 1: torch.log(power + eps)",
        ),
        (power, "that is the power itself; take its logarithm, torch.log(power + eps)"),
    ]:
        if is_close(
            got, candidate, 1e-3 * float(candidate.abs().max()) if candidate is power else 1e-3, 1e-4
        ):
            raise CheckFailed(f"{what}: {message}")


def check_log_spectrogram(module) -> None:
    generator = torch.Generator().manual_seed(3)
    for sample_rate, seconds in [(16000, 0.5), (8000, 0.73), (16000, 0.02)]:
        num_samples = round(sample_rate * seconds) + 37
        waveform = torch.randn(num_samples, generator=generator) * 0.1
        expected = ds2.log_spectrogram(waveform, sample_rate)  # (F, T)
        what = f"log_power_spectrogram of {num_samples} samples at {sample_rate} Hz"
        got = call(module, "log_power_spectrogram", waveform, sample_rate)
        if not is_close(got, expected, 1e-3, 1e-4):
            _name_the_log(what, got, waveform, sample_rate)
        expect_close(what, got, expected, atol=1e-3, rtol=1e-4)
    # Second oracle: torchaudio's Spectrogram (power=2, no centre padding), then the log.
    waveform = torch.randn(16000, generator=generator)
    spectrogram = torchaudio.transforms.Spectrogram(n_fft=320, hop_length=160, power=2.0, center=False)
    expected = torch.log(spectrogram(waveform) + 1e-10)
    got = call(module, "log_power_spectrogram", waveform)
    expect_close(
        "log_power_spectrogram of 1 s at 16 kHz (default arguments) vs torchaudio",
        got,
        expected,
        atol=1e-3,
        rtol=1e-4,
    )
    # Digital silence must stay finite: that is what eps is for.
    got = call(module, "log_power_spectrogram", torch.zeros(800))
    expect_close(
        "log_power_spectrogram of 800 zeros",
        got,
        torch.full((161, 4), float(torch.log(torch.tensor(1e-10)))),
        atol=1e-3,
    )


# ---------------------------------------------------------------------------------------------------------
# Part e
# ---------------------------------------------------------------------------------------------------------


def check_normalisation(module) -> None:
    generator = torch.Generator().manual_seed(4)
    lengths = torch.tensor([40, 17, 1, 33])
    clean = torch.randn(4, 161, 40, generator=generator) * 3.0 - 7.0  # (B, F, T) log-power-like values
    clean = clean.masked_fill(~ds2.lengths_to_mask(lengths, 40)[:, None, :], 0.0)
    expected = ds2.normalize_spectrogram(clean, lengths, floor_db=None)  # (B, F, T)
    # The learner gets garbage in the padding: it must change nothing.
    garbage = clean.clone()
    padding = ~ds2.lengths_to_mask(lengths, 40)[:, None, :].expand_as(clean)
    garbage[padding] = torch.rand(int(padding.sum()), generator=generator) * 1e4 + 1e3
    got = call(module, "normalize_over_valid_frames", garbage, lengths)
    what = "normalize_over_valid_frames of a padded batch (lengths 40, 17, 1, 33; garbage in the padding)"
    got = expect_shape(what, got, expected.shape)
    if not torch.equal(got.detach()[padding], torch.zeros(int(padding.sum()))):
        raise CheckFailed(
            f"{what}: padded frames must come out as exactly 0 (largest there: {got.detach()[padding].abs().max():.3g})"
        )
    if not is_close(got, expected, 1e-4, 1e-4):
        with_padding = (garbage - garbage.mean(dim=(1, 2), keepdim=True)) / (
            garbage.std(dim=(1, 2), unbiased=False, keepdim=True) + 1e-5
        )
        if is_close(got[~padding], with_padding[~padding], 1e-3, 1e-3):
            raise CheckFailed(
                f"{what}: your mean and variance include the padded frames; use only t < lengths[b]"
            )
        counts = lengths[:, None, None]  # (B, 1, 1)
        bin_mean = clean.sum(dim=2, keepdim=True) / counts  # (B, F, 1): one mean per frequency bin
        bin_var = (clean - bin_mean).masked_fill(padding, 0.0).square().sum(dim=2, keepdim=True) / counts
        per_bin = ((clean - bin_mean) / (bin_var.sqrt() + 1e-5)).masked_fill(padding, 0.0)
        if is_close(got, per_bin, 1e-3, 1e-3):
            raise CheckFailed(
                f"{what}: you normalised each frequency bin separately; use one mean and one std per utterance"
            )
    expect_close(what, got, expected, atol=1e-4, rtol=1e-4)
    # Padding that holds inf and NaN (leftovers of a failed computation, say) must change nothing either.
    poisoned = garbage.clone()
    poisoned[padding] = torch.where(
        torch.rand(int(padding.sum()), generator=generator) < 0.5, float("inf"), float("nan")
    )
    what = "normalize_over_valid_frames of the same batch with inf and NaN in the padding"
    got = expect_shape(what, call(module, "normalize_over_valid_frames", poisoned, lengths), expected.shape)
    if not torch.isfinite(got.detach()[~padding]).all():
        raise CheckFailed(
            f"{what}: NaN or inf came out on valid frames: the padded values entered some arithmetic. "
            "Multiplying by a 0/1 mask does not remove them (inf * 0 and NaN * 0 are NaN); select with "
            "masked_fill (or torch.where) instead"
        )
    if not torch.equal(got.detach()[padding], torch.zeros(int(padding.sum()))):
        raise CheckFailed(
            f"{what}: padded frames must come out as exactly 0 (multiplying NaN by a 0/1 mask gives NaN, "
            "not 0: use masked_fill)"
        )
    expect_close(what, got, expected, atol=1e-4, rtol=1e-4)
    # A batch of one, no padding, and values far from 0: the plain case.
    single = torch.randn(1, 161, 25, generator=generator) * 5 + 100
    expect_close(
        "normalize_over_valid_frames of one unpadded utterance",
        call(module, "normalize_over_valid_frames", single, torch.tensor([25])),
        ds2.normalize_spectrogram(single, torch.tensor([25]), floor_db=None),
        atol=1e-4,
    )


HINTS = {
    "a": (
        "Milliseconds to samples: how many samples are in one second, and what fraction of a second is 20 ms?",
        "Frames start at 0, H, 2H, ... and frame k needs samples up to k*H + W - 1 < N. Count the k that fit, "
        "and handle N < W (no frame at all) before dividing.",
        "frame_sizes: round(sample_rate * window_ms / 1000) and the same for the stride. count_frames: 0 if "
        "N < W, else 1 + (N - W) // H.",
    ),
    "b": (
        "Row t of the result is a slice of the waveform: which one?",
        "Build a (T, W) tensor of sample indices, starts[:, None] + offsets[None, :], with starts = arange(T) * H "
        "and offsets = arange(W); then index the waveform with it.",
        "T = count_frames(len(waveform), W, H); index = torch.arange(T)[:, None] * H + torch.arange(W)[None, :]; "
        "return waveform[index]  (waveform.unfold(0, W, H) is the same thing as a view).",
    ),
    "c": (
        "Three steps per frame: multiply by the window, take the FFT of a real signal, take the squared "
        "magnitude. Then mind the output layout: frequency first.",
        "torch.hann_window(W) is the periodic Hann window; torch.fft.rfft(x, dim=-1) keeps the W // 2 + 1 "
        "non-negative frequencies; power is real**2 + imag**2 (or abs()**2).",
        "spectrum = torch.fft.rfft(frames * torch.hann_window(W), dim=-1)  # (T, F); "
        "return (spectrum.real**2 + spectrum.imag**2).T  # (F, T)",
    ),
    "d": (
        "This part is glue: parts a, b and c in order, then a logarithm.",
        "frame_sizes gives (W, H) for the sample rate; frame the waveform; power_spectrum; natural log of "
        "(power + eps) so that silence stays finite.",
        "window, hop = frame_sizes(sample_rate, window_ms, stride_ms); "
        "return torch.log(power_spectrum(frame_signal(waveform, window, hop)) + eps)",
    ),
    "e": (
        "Build a boolean mask of the valid frames first; padding must not enter the mean or the variance, and "
        "must come out as 0.",
        "mask = implementation.lengths_to_mask(lengths, T)[:, None, :]  # (B, 1, T). Per utterance: "
        "count = lengths * F; mean = (values where mask, else 0).sum over (F, T) / count; the same for the "
        "squared deviations. Use masked_fill, not multiplication (garbage * 0 can be NaN).",
        "mean = spec.masked_fill(~mask, 0).sum((1, 2)) / count; centred = spec - mean[:, None, None]; "
        "var = centred.masked_fill(~mask, 0).square().sum((1, 2)) / count; "
        "out = centred / (var.sqrt()[:, None, None] + 1e-5); return out.masked_fill(~mask, 0)",
    ),
}

PARTS = [
    Part("a", "frame arithmetic", ("frame_sizes", "count_frames"), check_frame_arithmetic, HINTS["a"]),
    Part("b", "framing", ("frame_signal",), check_framing, HINTS["b"]),
    Part("c", "window + FFT -> power spectrum", ("power_spectrum",), check_power_spectrum, HINTS["c"]),
    Part("d", "log power spectrogram", ("log_power_spectrogram",), check_log_spectrogram, HINTS["d"]),
    Part(
        "e",
        "normalisation over valid frames",
        ("normalize_over_valid_frames",),
        check_normalisation,
        HINTS["e"],
    ),
]
