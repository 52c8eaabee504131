"""Training throughput of the default Deep Speech 2, and its FLOP rate against this machine's matmul peak.

Measured in one run, on the same threads:
  * the peak: fp32 ``torch.mm`` of two square matrices (best of several sizes and repeats) in GFLOP/s;
  * one training step of the default model (``train_minimal.py``'s: forward, CTC loss, backward, gradient
    clipping, Adam step) on batches of real synthetic utterances: audio seconds processed per wall second;
  * the step's floating-point operations, counted by ``torch.utils.flop_counter.FlopCounterMode``
    (convolutions, matmuls, their backward), divided by the step time: the model's FLOP rate, and its
    fraction of the matmul peak;
  * the data side: synthesis speed (x real time) and featurisation speed.

    python benchmarks/bench_training.py [--batch-size 32] [--batches 8] [--threads 0]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import implementation as ds2  # noqa: E402


def matmul_peak_gflops(repeats: int) -> tuple[float, int]:
    """Best fp32 matmul rate over a few sizes: the yardstick for 'how busy are the cores'."""
    best, best_size = 0.0, 0
    for size in (512, 1024, 2048):
        a, b = torch.randn(size, size), torch.randn(size, size)
        torch.mm(a, b)  # warm up
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            rate = 2 * size**3 / (time.perf_counter() - start) / 1e9
            if rate > best:
                best, best_size = rate, size
    return best, best_size


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--batch-size", type=int, default=32, help="utterances per step (train_minimal's default)"
    )
    parser.add_argument("--batches", type=int, default=8, help="batches of synthetic utterances to time")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    # Data: real synthetic utterances, as train_minimal.py makes them (half of them noisy).
    count = args.batch_size * args.batches
    start = time.perf_counter()
    split = ds2.make_split(
        "bench",
        count,
        ds2.make_speaker_pool(50, (args.seed, 0)),
        seed=(args.seed, 1),
        noise_kinds=ds2.NOISE_KINDS,
        snr_db=(5.0, 30.0),
        noisy_fraction=0.5,
    )
    synth_seconds = time.perf_counter() - start
    audio = split.durations_s()
    start = time.perf_counter()
    features = [ds2.featurize(w) for w in split.waveforms]
    featurize_seconds = time.perf_counter() - start
    # The batches of a later epoch of training: length-sorted pools, in random order (sortagrad_batches).
    groups = ds2.sortagrad_batches([f.shape[-1] for f in features], args.batch_size, epoch=1, seed=args.seed)
    batches = [ds2.collate([features[i] for i in g], [split.texts[i] for i in g]) for g in groups]
    batch_audio = [float(sum(audio[i] for i in g)) for g in groups]
    print(
        f"data: {count} utterances, {audio.sum():.0f} s of audio; synthesis {audio.sum() / synth_seconds:.0f}x "
        f"real time (1 process), featurize {audio.sum() / featurize_seconds:.0f}x real time"
    )

    torch.manual_seed(args.seed)
    model = ds2.DeepSpeech2()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    def step(batch):
        log_probs, out_lengths = model(batch.spectrograms, batch.lengths)
        loss = ds2.ctc_loss(log_probs, batch.targets, out_lengths, batch.target_lengths)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()

    model.train()
    flops = []
    for batch in batches:  # one pass to count the operations of every batch (and to warm up)
        with FlopCounterMode(display=False) as counter:
            step(batch)
        flops.append(counter.get_total_flops())

    peak_before, size = matmul_peak_gflops(repeats=5)
    step_seconds = []
    for batch in batches:
        start = time.perf_counter()
        step(batch)
        step_seconds.append(time.perf_counter() - start)
    peak_after, _ = matmul_peak_gflops(repeats=5)
    peak = max(peak_before, peak_after)

    audio_rate = sum(batch_audio) / sum(step_seconds)
    flop_rate = sum(flops) / sum(step_seconds) / 1e9
    print(f"peer  fp32 matmul peak ({size}x{size}):       {peak:8.1f} GFLOP/s")
    print(
        f"ours  {len(batches)} training steps, batch {args.batch_size} (~{sum(batch_audio) / len(batches):.0f} s audio each): "
        f"{1000 * statistics.median(step_seconds):5.0f} ms median, {sum(flops) / len(flops) / 1e9:.1f} GFLOP each"
    )
    print(f"      throughput:                       {audio_rate:8.0f} audio-seconds per wall-second")
    print(
        f"      model FLOP rate:                  {flop_rate:8.1f} GFLOP/s = {100 * flop_rate / peak:.0f}% of the matmul peak"
    )
    train_audio = 2000 * float(audio.mean())
    print(
        f"      {model.num_parameters():,} parameters; 5 epochs of train_minimal's 2000 utterances "
        f"(~{train_audio:,.0f} s of audio) would take ~{5 * train_audio / audio_rate:.0f} s of training at this rate"
    )


if __name__ == "__main__":
    main()
