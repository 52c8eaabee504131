"""Streaming speed (§3.7) and batch dispatch (§7.1), in one run, on one thread.

    python benchmarks/bench_streaming.py [--checkpoint C] [--utterances 8] [--streams 1 4 16 64] [--threads 1]

Measured with ``implementation.StreamingRecognizer`` on the default unidirectional model with a lookahead
of 5 frames and causal normalisation (``--checkpoint``: a trained one, e.g. ``train_minimal.py
--unidirectional --lookahead 5 --normalize causal``; speed does not depend on the weights), fed letter-phone
utterances of the lesson's dev speakers:

  * per-chunk compute at 20, 80 and 160 ms chunks: median and 98th percentile, and the real-time factor
    (compute seconds per second of audio; below 1 keeps up with a live stream);
  * batch dispatch (§7.1): N streams whose chunks of 80 ms arrive together in real time, served either one
    chunk at a time (a recogniser per stream, first come first served) or by batching every chunk that is
    ready into one call (one recogniser for the N streams). Arrivals are simulated on a clock; every compute
    time is measured. For each N: the latency from a chunk's arrival to its characters, median and 98th
    percentile, and whether the server keeps up (its compute per 80 ms of audio below 80 ms).

The network's own latency (the conv layers' and the lookahead's right context, ``algorithmic_latency_ms``)
comes on top of these: a chunk's characters are those of the frames its audio completed.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import implementation as ds2  # noqa: E402


def load_model(checkpoint: str | None) -> ds2.DeepSpeech2:
    if checkpoint:
        model, _ = ds2.load_checkpoint(checkpoint)
        return model.eval()
    torch.manual_seed(0)
    config = ds2.DS2Config(
        bidirectional=False, lookahead_context=5, normalize="causal", normalize_prior=(-6, 12, 2)
    )
    return ds2.DeepSpeech2(config).eval()


def utterances(count: int, seconds: float) -> list[torch.Tensor]:
    """Dev-speaker letter-phone utterances, each cut (or repeated) to ``seconds`` so streams align."""
    split = ds2.make_split("dev", count, ds2.make_speaker_pool(40, (0, 1)), seed=(0, 11))
    length = int(seconds * ds2.SAMPLE_RATE)
    return [w.repeat(-(-length // len(w)))[:length] for w in split.waveforms]


def chunk_compute(model, waveforms, chunk_ms: float) -> tuple[list[float], float]:
    """Compute seconds of every chunk of every utterance, streamed one at a time; and the audio seconds."""
    times, audio = [], 0.0
    for waveform in waveforms:
        events, _ = ds2.stream_recording(model, waveform, ds2.SAMPLE_RATE, chunk_ms)
        times += [seconds for _, _, seconds in events]
        audio += len(waveform) / ds2.SAMPLE_RATE
    return times, audio


def dispatch(model, waveforms, streams: int, chunk_ms: float, batched: bool) -> dict:
    """Simulated real-time arrival of ``streams`` aligned streams; measured compute; chunk latencies."""
    step = int(ds2.SAMPLE_RATE * chunk_ms / 1000)
    audio = torch.stack([waveforms[i % len(waveforms)] for i in range(streams)])  # (N, samples)
    ticks = audio.shape[1] // step
    if batched:
        recognizers = [ds2.StreamingRecognizer(model, batch=streams)]
    else:
        recognizers = [ds2.StreamingRecognizer(model) for _ in range(streams)]
    free_at, latencies, busy = 0.0, [], 0.0
    for tick in range(ticks):
        arrival = (tick + 1) * chunk_ms / 1000  # the chunk [tick, tick + 1) is complete at this time
        chunk = audio[:, tick * step : (tick + 1) * step]
        jobs = [(recognizers[0], chunk)] if batched else list(zip(recognizers, chunk, strict=True))
        for recognizer, samples in jobs:
            began = time.perf_counter()
            recognizer.feed(samples)
            compute = time.perf_counter() - began
            start = max(free_at, arrival)
            free_at = start + compute
            busy += compute
            latencies += [free_at - arrival] * (streams if batched else 1)
    audio_seconds = ticks * chunk_ms / 1000
    return {
        "p50": 1000 * float(np.percentile(latencies, 50)),
        "p98": 1000 * float(np.percentile(latencies, 98)),
        "load": busy / audio_seconds,  # compute seconds per second of audio, all streams
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checkpoint", help="a streaming model's checkpoint (default: the default model, untrained)"
    )
    parser.add_argument("--utterances", type=int, default=8, help="utterances for the per-chunk timings")
    parser.add_argument(
        "--seconds", type=float, default=2.4, help="audio per stream in the dispatch simulation"
    )
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the comparison: one core)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.checkpoint)
    latency = ds2.algorithmic_latency_ms(model.config)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); {model.num_parameters():,} parameters"
    )
    print(f"the network's latency (conv context + lookahead): {latency:g} ms of audio after each frame")
    waveforms = utterances(args.utterances, args.seconds)
    chunk_compute(model, waveforms[:1], 80.0)  # warm-up
    print("\nchunk    median compute   p98 compute   real-time factor (compute / audio)")
    for chunk_ms in (20.0, 80.0, 160.0):
        times, audio = chunk_compute(model, waveforms, chunk_ms)
        p50, p98 = 1000 * statistics.median(times), 1000 * float(np.percentile(times, 98))
        print(f"{chunk_ms:4.0f} ms  {p50:11.2f} ms  {p98:10.2f} ms   {sum(times) / audio:.3f}")
    print("\nbatch dispatch (§7.1): streams of 80 ms chunks arriving together in real time")
    print("streams   one at a time: p50 / p98 latency, load     batched: p50 / p98 latency, load")
    for streams in args.streams:
        alone = dispatch(model, waveforms, streams, 80.0, batched=False)
        together = dispatch(model, waveforms, streams, 80.0, batched=True)
        cells = [
            f"{r['p50']:8.1f} / {r['p98']:8.1f} ms, {r['load']:5.2f} {'(keeps up)' if r['load'] < 1 else '(falls behind)'}"
            for r in (alone, together)
        ]
        print(f"{streams:7d}   {cells[0]}   {cells[1]}")
    print("load: compute seconds per second of audio over all streams; above 1 the queue grows without end")


if __name__ == "__main__":
    main()
