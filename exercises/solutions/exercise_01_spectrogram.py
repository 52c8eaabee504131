"""Exercise 1: the log power spectrogram, the input Deep Speech 2 listens to (DS2 §3.1).

DS2 §3.1: the network's input is a spectrogram of power-normalised audio, computed on 20 ms windows
with a 10 ms stride. At 16 kHz that is a 320-sample window moved 160 samples at a time; each
window gives one column (a "frame") of the spectrogram: the power of each frequency in that 20 ms.

    waveform (N,) --a--> how many frames --b--> frames (T, W) --c--> power (F, T) --d--> log power
    padded batch of spectrograms (B, F, T) --e--> zero mean, unit variance over the valid frames

Parts:
    a. frame arithmetic: window and hop in samples; the number of frames from N samples
    b. framing: cut the waveform into overlapping frames
    c. windowing and the FFT: the power spectrum of every frame
    d. the log power spectrogram: parts a-c together, then the log
    e. per-utterance normalisation over the valid frames of a padded batch

Shapes: N samples, W window (samples), H hop (samples), T frames, F = W // 2 + 1 frequency bins, B batch.

Check your work: ``python exercises/check.py 1`` (or run this file). Read the docstrings first; hints
come with each failed check.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import Tensor

# implementation.py lives in the repository root; find it so this file runs from any directory.
ROOT = next(path for path in Path(__file__).resolve().parents if (path / "implementation.py").is_file())
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
import implementation as ds2  # noqa: E402

# ---------------------------------------------------------------------------------------------------------
# Part a: frame arithmetic
# ---------------------------------------------------------------------------------------------------------


def frame_sizes(sample_rate: int, window_ms: float = 20.0, stride_ms: float = 10.0) -> tuple[int, int]:
    """Window and hop in samples for a window and stride in milliseconds.

    Args:
        sample_rate: samples per second (Hz), e.g. 16000.
        window_ms: analysis window length in ms (the paper's 20 ms).
        stride_ms: distance between the starts of consecutive windows in ms (the paper's 10 ms).

    Returns:
        ``(window, hop)`` in samples, each rounded to the nearest integer: (320, 160) at 16 kHz.
    """
    # Milliseconds -> seconds -> samples; round, because 20 ms is not a whole number of samples at
    # every rate (at 22050 Hz it is 441, at 11025 Hz 220.5).
    window = round(sample_rate * window_ms / 1000)
    hop = round(sample_rate * stride_ms / 1000)
    return window, hop


def count_frames(num_samples: int, window: int, hop: int) -> int:
    """How many whole windows fit in a signal, stepping ``hop`` samples at a time.

    Frames start at samples 0, H, 2H, ...; a frame is kept only if all ``W`` of its samples exist (no
    padding at either end, like ``torch.stft(center=False)``). Count the starts ``k * H`` for which the
    frame's last sample, ``k * H + W - 1``, is still inside the signal.

    Args:
        num_samples: N, the signal length in samples (may be anything >= 0).
        window: W, samples per frame.
        hop: H, samples between frame starts.

    Returns:
        T, the number of frames (an int, never negative).
    """
    # The last start k*H must satisfy k*H + W <= N, i.e. k <= (N - W) / H; starts k = 0..floor(...).
    # A signal shorter than one window has no frame at all (and floor division of a negative number
    # would otherwise give a negative count).
    if num_samples < window:
        return 0
    return 1 + (num_samples - window) // hop


# ---------------------------------------------------------------------------------------------------------
# Part b: framing
# ---------------------------------------------------------------------------------------------------------


def frame_signal(waveform: Tensor, window: int, hop: int) -> Tensor:
    """Cut a waveform into overlapping frames.

    Frame ``t`` holds samples ``t * H .. t * H + W - 1``; with W = 2H every sample (except at the ends)
    lands in two frames.

    Args:
        waveform: ``(N,)`` float samples, ``N >= W``.
        window: W, samples per frame.
        hop: H, samples between frame starts.

    Returns:
        ``(T, W)`` with ``T = count_frames(N, W, H)``; row t is frame t.
    """
    frames = count_frames(waveform.shape[0], window, hop)
    starts = torch.arange(frames) * hop  # (T,) first sample of each frame
    index = starts[:, None] + torch.arange(window)[None, :]  # (T, W) sample index of every frame entry
    # waveform.unfold(0, window, hop) returns the same frames as a strided view, without the copy.
    return waveform[index]  # (T, W)


# ---------------------------------------------------------------------------------------------------------
# Part c: windowing and the FFT
# ---------------------------------------------------------------------------------------------------------


def power_spectrum(frames: Tensor) -> Tensor:
    """Power spectrum of every frame: ``|DFT(w * frame)|^2`` at the non-negative frequencies.

    Each frame is multiplied by the periodic Hann window ``w[n] = 0.5 - 0.5 cos(2 pi n / W)``,
    ``n = 0..W-1`` (what ``torch.hann_window(W)`` returns), so it tapers to zero at both ends and the FFT
    does not see a jump where the frame was cut. Then the discrete Fourier transform

        X[k] = sum_n w[n] x[n] exp(-2 pi i k n / W),    k = 0 .. W // 2

    (for a real signal the negative frequencies mirror these, so only ``F = W // 2 + 1`` bins are kept)
    and the power ``|X[k]|^2 = Re(X[k])^2 + Im(X[k])^2``. This is exactly what
    ``torch.stft(..., window=torch.hann_window(W), center=False)`` followed by ``abs() ** 2`` computes.

    Args:
        frames: ``(T, W)`` float frames (from ``frame_signal``).

    Returns:
        ``(F, T)`` power, frequency first: one column per frame, like a picture of the spectrogram
        (and like ``torch.stft``'s output).
    """
    width = frames.shape[-1]
    window = torch.hann_window(width, periodic=True, dtype=frames.dtype, device=frames.device)  # (W,)
    spectrum = torch.fft.rfft(frames * window, dim=-1)  # (T, F) complex: the DFT at k = 0..W//2
    power = spectrum.real.square() + spectrum.imag.square()  # (T, F); power, not magnitude
    return power.T  # (F, T): frequency first


# ---------------------------------------------------------------------------------------------------------
# Part d: the log power spectrogram
# ---------------------------------------------------------------------------------------------------------


def log_power_spectrogram(
    waveform: Tensor,
    sample_rate: int = ds2.SAMPLE_RATE,
    window_ms: float = 20.0,
    stride_ms: float = 10.0,
    eps: float = 1e-10,
) -> Tensor:
    """The log power spectrogram of one utterance (DS2 §3.1): ``log(power + eps)``, natural log.

    Power spans many orders of magnitude (a vowel is millions of times stronger than a quiet hiss); the
    log squeezes that range so a network can use it. ``eps`` keeps digital silence (power 0) finite.

    Args:
        waveform: ``(N,)`` float samples, at least one window long.
        sample_rate: Hz.
        window_ms, stride_ms: the paper's 20 ms window and 10 ms stride.
        eps: added to the power before the log.

    Returns:
        ``(F, T)``; ``F = 161`` and ``T = 1 + (N - 320) // 160`` at 16 kHz. Equals
        ``implementation.log_spectrogram`` and torchaudio's ``Spectrogram(power=2, center=False)`` + log.
    """
    window, hop = frame_sizes(sample_rate, window_ms, stride_ms)
    frames = frame_signal(waveform, window, hop)  # (T, W)
    return torch.log(power_spectrum(frames) + eps)  # (F, T)


# ---------------------------------------------------------------------------------------------------------
# Part e: normalisation over valid frames
# ---------------------------------------------------------------------------------------------------------


def normalize_over_valid_frames(spec: Tensor, lengths: Tensor) -> Tensor:
    """Per-utterance normalisation of a padded batch: zero mean and unit variance over valid frames only.

    Utterances differ in length, so a batch is padded to the longest: utterance b's frames
    ``t >= lengths[b]`` are padding and may hold anything (zeros, leftovers from another buffer, even inf
    or NaN: select the valid values, never multiply by a 0/1 mask, since inf * 0 is NaN). For
    each utterance take one mean and one variance over all its values ``spec[b, f, t]`` with ``t <
    lengths[b]`` (every frequency, valid frames only), and return

        (spec[b] - mean_b) / (std_b + 1e-5),     std_b = sqrt(population variance, i.e. divide by the count)

    on the valid frames and exactly 0 on the padded ones. Padding must not change anything: the same
    utterance must come out the same whatever is in its padding.

    Args:
        spec: ``(B, F, T)`` log power spectrograms, padded along time.
        lengths: ``(B,)`` long, valid frames per utterance, each in ``1..T``.

    Returns:
        ``(B, F, T)``; matches ``implementation.normalize_spectrogram(spec, lengths, floor_db=None)``.
    """
    valid = ds2.lengths_to_mask(lengths, spec.shape[-1])[:, None, :]  # (B, 1, T), True on valid frames
    count = lengths * spec.shape[1]  # (B,) values that enter each utterance's statistics
    # masked_fill rather than multiplying by the mask: garbage * 0 is NaN when the garbage is inf or NaN.
    mean = spec.masked_fill(~valid, 0.0).sum(dim=(1, 2)) / count  # (B,)
    centred = spec - mean[:, None, None]  # (B, F, T)
    variance = centred.masked_fill(~valid, 0.0).square().sum(dim=(1, 2)) / count  # (B,)
    normalized = centred / (variance.sqrt()[:, None, None] + 1e-5)  # (B, F, T)
    return normalized.masked_fill(~valid, 0.0)  # padding comes out as exactly 0


if __name__ == "__main__":
    # Running this file checks it: the same as `python exercises/check.py 1` for this very file.
    sys.path.insert(0, str(ROOT / "exercises"))
    from check import check_file

    sys.exit(check_file(__file__))
