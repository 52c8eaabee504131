"""CTC loss speed: our from-scratch alpha/beta recursion vs ``F.ctc_loss`` (PyTorch's native kernel).

Measured: forward + backward of the batch-mean CTC loss on random log-probabilities (default T=200
frames, B=16 utterances, 29 classes, targets of 30 labels), through ``log_softmax`` so the gradient
reaches the logits as it does in training. Both losses are timed in the same run, interleaved, after a
warm-up; the script prints the median and minimum over ``--repeats`` runs and the ratio ours / peer.
It also prints the largest absolute difference between the two losses and between the two gradients
with respect to the logits, so the benchmark shows they compute the same thing.

    python benchmarks/bench_ctc.py [--frames 200] [--batch 16] [--target-length 30] [--repeats 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import implementation as ds2  # noqa: E402


def loss_and_grad(loss_fn, logits, targets, input_lengths, target_lengths):
    """One forward + backward pass; returns (loss, d loss / d logits, seconds)."""
    logits = logits.detach().requires_grad_(True)
    start = time.perf_counter()
    loss = loss_fn(logits.log_softmax(dim=-1), targets, input_lengths, target_lengths)
    loss.backward()
    seconds = time.perf_counter() - start
    return loss.detach(), logits.grad, seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=200, help="input frames T (default 200)")
    parser.add_argument("--batch", type=int, default=16, help="utterances per batch B (default 16)")
    parser.add_argument("--target-length", type=int, default=30, help="labels per transcript S (default 30)")
    parser.add_argument("--repeats", type=int, default=30, help="timed runs of each loss (default 30)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default 0: torch's choice)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    classes = ds2.NUM_CLASSES
    logits = torch.randn(args.batch, args.frames, classes)  # (B, T, C)
    targets = torch.randint(1, classes, (args.batch, args.target_length))  # (B, S), no blanks
    # Mixed lengths, so padding in time and in labels is exercised too.
    input_lengths = torch.randint(args.frames * 3 // 4, args.frames + 1, (args.batch,))
    input_lengths[0] = args.frames
    target_lengths = torch.randint(args.target_length * 2 // 3, args.target_length + 1, (args.batch,))
    target_lengths[0] = args.target_length
    inputs = (targets, input_lengths, target_lengths)

    # Agreement check (also the warm-up).
    peer_loss, peer_grad, _ = loss_and_grad(ds2.ctc_loss, logits, *inputs)
    ours_loss, ours_grad, _ = loss_and_grad(ds2.ctc_loss_from_scratch, logits, *inputs)
    for _ in range(2):
        loss_and_grad(ds2.ctc_loss, logits, *inputs)
        loss_and_grad(ds2.ctc_loss_from_scratch, logits, *inputs)

    peer_times, ours_times = [], []
    for _ in range(args.repeats):  # interleaved, so both see the same machine load
        peer_times.append(loss_and_grad(ds2.ctc_loss, logits, *inputs)[2])
        ours_times.append(loss_and_grad(ds2.ctc_loss_from_scratch, logits, *inputs)[2])

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(
        f"CTC forward+backward, T={args.frames}, B={args.batch}, C={classes}, S<={args.target_length}, "
        f"{args.repeats} repeats (median / min)"
    )
    peer_med, ours_med = statistics.median(peer_times) * 1e3, statistics.median(ours_times) * 1e3
    peer_min, ours_min = min(peer_times) * 1e3, min(ours_times) * 1e3
    print(f"  peer F.ctc_loss              {peer_med:8.2f} ms / {peer_min:8.2f} ms")
    print(f"  ours ctc_loss_from_scratch   {ours_med:8.2f} ms / {ours_min:8.2f} ms")
    print(f"  ratio ours / peer            {ours_med / peer_med:8.2f}x   / {ours_min / peer_min:8.2f}x")
    print(f"  loss: peer {peer_loss.item():.6f}, ours {ours_loss.item():.6f}, ", end="")
    print(f"max |diff| {(peer_loss - ours_loss).abs().item():.2e}")
    print(f"  grad wrt logits: max |diff| {(peer_grad - ours_grad).abs().max().item():.2e}")


if __name__ == "__main__":
    main()
