"""Spectrogram speed: ``implementation.log_spectrogram`` vs torchaudio's ``Spectrogram`` + log.

Peer: ``torchaudio.transforms.Spectrogram(n_fft=320, hop_length=160, center=False, power=2)`` (a periodic
Hann window, like ours), constructed once outside the timing loop, followed by ``torch.log(x + 1e-10)``.
Ours: ``log_spectrogram`` (``torch.stft``, 20 ms windows, 10 ms stride at 16 kHz, same eps), which also
validates its input (shape, length, NaN/inf) on every call; that check is part of what is timed.

Two workloads: a batch (default 16 utterances x 4 s) and single utterances (default 2 s). Each call is
timed separately, interleaved peer/ours, after a warm-up; the script prints median and minimum over
``--repeats`` calls, the ratio ours / peer, and the largest absolute difference between the outputs.

    python benchmarks/bench_spectrogram.py [--batch 16] [--batch-seconds 4] [--single-seconds 2] [--repeats 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
import torchaudio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import implementation as ds2  # noqa: E402


def time_call(fn, waveform):
    start = time.perf_counter()
    out = fn(waveform)
    return out, time.perf_counter() - start


def compare(name, peer, ours, waveform, repeats):
    """Time ``peer`` and ``ours`` on the same input, interleaved; print ms, the ratio and max |diff|."""
    peer_out, _ = time_call(peer, waveform)
    ours_out, _ = time_call(ours, waveform)
    for _ in range(5):  # warm-up
        peer(waveform)
        ours(waveform)
    peer_times, ours_times = [], []
    for _ in range(repeats):
        peer_times.append(time_call(peer, waveform)[1])
        ours_times.append(time_call(ours, waveform)[1])
    peer_med, ours_med = statistics.median(peer_times) * 1e3, statistics.median(ours_times) * 1e3
    peer_min, ours_min = min(peer_times) * 1e3, min(ours_times) * 1e3
    # Differences in log power are large only where the power is tiny (the log of eps-level values),
    # so report both the raw max and the max over bins with power above 1e-6 of the utterance peak.
    diff = (peer_out - ours_out).abs()
    loud = ours_out > ours_out.amax(dim=(-2, -1), keepdim=True) - 6 * 2.302585
    print(f"{name}: input {tuple(waveform.shape)} -> output {tuple(ours_out.shape)}, {repeats} repeats")
    print(f"  peer torchaudio Spectrogram + log   {peer_med:8.3f} ms / {peer_min:8.3f} ms (median / min)")
    print(f"  ours log_spectrogram                {ours_med:8.3f} ms / {ours_min:8.3f} ms")
    print(
        f"  ratio ours / peer                   {ours_med / peer_med:8.3f}x   / {ours_min / peer_min:8.3f}x"
    )
    print(f"  max |diff| of log power: all bins {diff.max().item():.2e}, ", end="")
    print(f"bins within 60 dB of the peak {diff[loud].max().item():.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=16, help="utterances in the batched case (default 16)")
    parser.add_argument("--batch-seconds", type=float, default=4.0, help="seconds per batched utterance (4)")
    parser.add_argument(
        "--single-seconds", type=float, default=2.0, help="seconds of the single utterance (2)"
    )
    parser.add_argument("--repeats", type=int, default=200, help="timed calls per case (default 200)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default 0: torch's choice)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    rate = ds2.SAMPLE_RATE
    window, hop = ds2.frame_parameters(rate)
    transform = torchaudio.transforms.Spectrogram(n_fft=window, hop_length=hop, center=False, power=2)

    def peer(waveform):
        return torch.log(transform(waveform) + 1e-10)

    def ours(waveform):
        return ds2.log_spectrogram(waveform, rate)

    print(
        f"torch {torch.__version__}, torchaudio {torchaudio.__version__}, {torch.get_num_threads()} threads"
    )
    # Speech-like amplitude: a random signal at about -20 dBFS.
    batch = 0.1 * torch.randn(args.batch, int(args.batch_seconds * rate))
    single = 0.1 * torch.randn(int(args.single_seconds * rate))
    with torch.inference_mode():
        compare("batch", peer, ours, batch, args.repeats)
        compare("single", peer, ours, single, args.repeats * 5)


if __name__ == "__main__":
    main()
