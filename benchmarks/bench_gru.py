"""GRU layer speed on the CPU: our recurrence (``GRURecurrence``) vs ``torch.gru``, the same layer and weights.

``GRULayer`` has two fast paths to the readable layer's result (tested equal in ``tests/test_fast_paths.py``):
  * ``_forward_bptt`` (CPU training): ``B(W h^{l-1})`` computed once, then ``fast_paths.GRURecurrence`` - a
    forward without autograd, one batched matmul per step for both directions, and a hand-written BPTT;
  * ``_forward_kernel`` (inference, GPUs; CPU training too before 2026-12-01): BatchNorm folded into
    ``W`` and ``torch.gru`` once per direction, which on the CPU records a dozen autograd ops per step.

Measured: one layer on random input of the default model's layer shapes (B=32 utterances, T=190 frames
after the conv front-end, lengths spread from T/2 to T; B=32 was train_minimal.py's batch until
2026-12-01, it trains in batches of 16 now: ``--batch 16``), the default model's two layers (328 -> 128 and
128 -> 128, bidirectional) and a unidirectional one; training (forward + backward, BatchNorm in
training mode) and inference (eval mode, no autograd). The two paths run interleaved in the same
process after a warm-up; the table gives the median wall time over ``--repeats`` and the ratio
torch.gru / ours, plus the same ratio in CPU time of this process, which a busy host disturbs less.
With ``--steps N``, also whole ``train_step``s of the default model (random spectrograms of 2-4 s and
transcripts), one model per path with the same weights, interleaved on the same batches.

    python benchmarks/bench_gru.py [--batch 32] [--frames 190] [--repeats 7] [--threads 0] [--steps 0]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import implementation as ds2  # noqa: E402

LAYERS = [  # (input size I, hidden size H, bidirectional): the default model's layers, then a unidirectional one
    (328, 128, True),
    (128, 128, True),
    (328, 128, False),
]


def time_layer(layer, x, lengths, grad_output, train: bool, repeats: int) -> dict[str, tuple]:
    """Median wall and CPU milliseconds of each path, interleaved: ``{path: (wall_ms, cpu_ms)}``."""
    layer.train(train)
    paths = {"torch.gru": layer._forward_kernel, "ours": layer._forward_bptt}
    wall, cpu = {name: [] for name in paths}, {name: [] for name in paths}

    def once(run):
        if train:
            layer.zero_grad(set_to_none=True)
            x.grad = None
            (run(x, lengths) * grad_output).sum().backward()
        else:
            with torch.no_grad():
                run(x, lengths)

    for run in paths.values():  # warm-up
        once(run)
    for _ in range(repeats):
        for name, run in paths.items():
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            once(run)
            wall[name].append(time.perf_counter() - start_wall)
            cpu[name].append(time.process_time() - start_cpu)
    return {name: (statistics.median(wall[name]) * 1e3, statistics.median(cpu[name]) * 1e3) for name in paths}


class FusedKernelGRULayer(ds2.GRULayer):
    """The same layer with the fused-kernel path for CPU training too (the lesson before 2026-12-01)."""

    _forward_bptt = ds2.GRULayer._forward_kernel


def time_training_steps(batch_size: int, steps: int, seed: int) -> dict[str, float]:
    """Median ms of ``ds2.train_step`` on the default model, each path, interleaved on the same batches."""
    torch.manual_seed(seed)
    models = {"torch.gru": ds2.DeepSpeech2(), "ours": ds2.DeepSpeech2()}
    models["ours"].load_state_dict(models["torch.gru"].state_dict())
    for layer in models["torch.gru"].rnns:
        layer.__class__ = FusedKernelGRULayer
    optimizers = {name: ds2.make_optimizer(model, ds2.TrainConfig()) for name, model in models.items()}
    rng, num_freq = random.Random(seed), ds2.DS2Config().num_freq
    batches = []
    for _ in range(steps + 1):  # 2-4 s utterances (frames of 10 ms), transcripts of 20-40 letters
        spectrograms = [torch.randn(num_freq, rng.randint(200, 400)) for _ in range(batch_size)]
        texts = [
            "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(rng.randint(20, 40))).strip()
            or "a"
            for _ in range(batch_size)
        ]
        batches.append(ds2.collate(spectrograms, texts))
    wall, cpu = {name: [] for name in models}, {name: [] for name in models}
    for index, batch in enumerate(batches):
        for name, model in models.items():
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            ds2.train_step(model, optimizers[name], batch)
            if index > 0:  # the first batch warms up
                wall[name].append(time.perf_counter() - start_wall)
                cpu[name].append(time.process_time() - start_cpu)
    return {
        name: (statistics.median(wall[name]) * 1e3, statistics.median(cpu[name]) * 1e3) for name in models
    }


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--batch", type=int, default=32, help="utterances per batch (train_minimal's default)"
    )
    parser.add_argument("--frames", type=int, default=190, help="frames T after the conv front-end (longest)")
    parser.add_argument(
        "--repeats", type=int, default=7, help="timed runs of each path (median reported); 0 skips the layers"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument(
        "--steps", type=int, default=0, help="also time this many whole training steps of the default model"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load {load:.1f}"
    )
    print(
        f"B={args.batch}, T={args.frames}, median of {args.repeats}; ratio = torch.gru / ours (>1: ours faster)"
    )
    print(
        f"{'layer':<20} {'mode':<10} {'torch.gru ms':>12} {'ours ms':>8} {'ratio':>6} {'CPU-time ratio':>15}"
    )
    generator = torch.Generator().manual_seed(args.seed)
    for input_size, hidden, bidirectional in LAYERS if args.repeats else []:
        torch.manual_seed(args.seed)
        layer = ds2.GRULayer(input_size, hidden, bidirectional=bidirectional)
        x = torch.randn(args.batch, args.frames, input_size, generator=generator, requires_grad=True)
        lengths = torch.randint(args.frames // 2, args.frames + 1, (args.batch,), generator=generator)
        lengths[0] = args.frames
        grad_output = torch.randn(args.batch, args.frames, hidden, generator=generator)
        name = f"{input_size}->{hidden} {'bi' if bidirectional else 'uni'}"
        for train in (True, False):
            times = time_layer(layer, x, lengths, grad_output, train, args.repeats)
            (peer_wall, peer_cpu), (ours_wall, ours_cpu) = times["torch.gru"], times["ours"]
            mode = "train" if train else "inference"
            print(
                f"{name:<20} {mode:<10} {peer_wall:>12.1f} {ours_wall:>8.1f} {peer_wall / ours_wall:>6.2f}"
                f" {peer_cpu / ours_cpu:>15.2f}",
                flush=True,
            )
    if args.steps:
        (peer_wall, peer_cpu), (ours_wall, ours_cpu) = time_training_steps(
            args.batch, args.steps, args.seed
        ).values()
        print(
            f"{'training step':<20} {'default':<10} {peer_wall:>12.1f} {ours_wall:>8.1f}"
            f" {peer_wall / ours_wall:>6.2f} {peer_cpu / ours_cpu:>15.2f}"
        )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load at the end: {load:.1f} (a busy host inflates both paths; compare ratios, not times)")


if __name__ == "__main__":
    main()
