"""Training speed of the default Deep Speech 2: throughput, FLOP rate against the matmul peak, where the time goes.

Measured in one run, on the same threads:
  * the peak: fp32 ``torch.mm`` of two square matrices (best of several sizes and repeats) in GFLOP/s;
  * training steps of the default model through ``implementation.train_step`` (the one training loop's
    step: forward, CTC loss, backward, gradient clipping, Adam step) on batches of real synthetic
    utterances: milliseconds per step and audio seconds processed per wall second;
  * the step's floating-point operations, counted by ``torch.utils.flop_counter.FlopCounterMode``
    (convolutions, matmuls, their backward), divided by the step time: the model's FLOP rate, and its
    fraction of the matmul peak;
  * where a step's time goes (conv front-end, recurrent layers, output layer + CTC, each forward and
    backward; gradient clipping; optimizer), from hooks on the model and the optimizer, and how many
    operators one step dispatches (``torch.profiler``), with the five most expensive: a regression
    shows in one line;
  * two peers (unless ``--no-compare-packed``), the same steps interleaved with ours batch by batch so
    that a change in the host's load hits all three alike:
      - "packed GRU": our model with its recurrent layers run on a ``PackedSequence``, the way this
        lesson's GRU layer worked before 2026-11-30; everything else as ours, so it isolates the GRU;
      - "as of issue 11": the step as it ran when issue 11 was filed (commit 2761ddf^): the packed GRU
        and the conv front-end in PyTorch's default memory format, with ``nn.Conv2d``'s own backward;
  * the FLOPs that compute the recurrent layers' BatchNorm statistics from covariances
    (``fast_paths.linear_moments``, extra work the other steps do not do), and the FLOP rate without them;
  * the data side: synthesis speed (x real time, with a babble bank as ``make_splits`` builds one) and
    featurisation (one batched STFT per split).

    python benchmarks/bench_training.py [--batch-size 32] [--batches 8] [--threads 0] [--no-compare-packed]
"""

import argparse
import inspect
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import implementation as ds2  # noqa: E402

EVAL_BATCH = inspect.signature(ds2.evaluate).parameters["batch_size"].default  # dev evaluation's batch


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


class PackedGRULayer(ds2.GRULayer):
    """The peer: the same layer and parameters, run on a ``PackedSequence`` (the old way).

    On the CPU a packed GRU runs a per-time-step loop that recomputes the input projection frame by frame.
    """

    def forward(self, x, lengths):
        params = dict(self.gru.named_parameters())
        if self.norm is not None:
            weight = torch.cat([params["weight_ih" + s] for s in self._suffixes()])  # (D * 3H, F)
            mask = ds2.lengths_to_mask(lengths, x.shape[1])  # (B, T)
            scale, shift = self.norm.scale_and_shift(x @ weight.T, mask)  # (D * 3H,) each
            for index, suffix in enumerate(self._suffixes()):
                part = slice(index * 3 * self.hidden_size, (index + 1) * 3 * self.hidden_size)
                params["weight_ih" + suffix] = params["weight_ih" + suffix] * scale[part, None]
                params["bias_ih" + suffix] = shift[part]
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        output, _ = functional_call(self.gru, params, (packed,))
        output, _ = pad_packed_sequence(output, batch_first=True, total_length=x.shape[1])  # (B, T, D * H)
        if self.directions == 2:
            output = output[..., : self.hidden_size] + output[..., self.hidden_size :]  # (B, T, H)
        return output


class DefaultLayoutConvFrontEnd(ds2.ConvFrontEnd):
    """The conv front-end as it ran when issue 11 was filed (commit 2761ddf^), with today's BatchNorm.

    Weights and activations in PyTorch's default (B, K, F, T) memory format, and ``nn.Conv2d``'s own
    backward (both gradients in one call). Same parameters and outputs as ``ds2.ConvFrontEnd``.
    """

    def forward(self, spec, lengths):
        mask = ds2.lengths_to_mask(lengths, spec.shape[-1])
        x = (spec * mask[:, None, :]).unsqueeze(1)  # (B, 1, F, T)
        for conv, norm in zip(self.layers, self.norms, strict=True):
            x = conv(x)  # (B, K, F', T')
            lengths = ds2.conv_output_size(lengths, conv.kernel_size[1], conv.stride[1], conv.padding[1])
            mask = ds2.lengths_to_mask(lengths, x.shape[-1])
            if isinstance(norm, ds2.MaskedBatchNorm):
                x = norm(x.permute(0, 2, 3, 1), mask[:, None, :]).permute(0, 3, 1, 2)
            x = ds2.clipped_relu(x) * mask[:, None, None, :]
        batch, channels, freq, frames = x.shape
        return x.permute(0, 3, 1, 2).reshape(batch, frames, channels * freq), lengths


def packed_copy(model: ds2.DeepSpeech2, as_of_issue: bool = False) -> ds2.DeepSpeech2:
    """The same model (same weights) with every GRU layer replaced by the packed peer.

    ``as_of_issue``: the conv front-end too, as it ran when issue 11 was filed.
    """
    peer = ds2.DeepSpeech2(model.config)
    for layer in peer.rnns:
        layer.__class__ = PackedGRULayer
    peer.load_state_dict(model.state_dict())
    if as_of_issue:
        peer.conv.__class__ = DefaultLayoutConvFrontEnd
        peer.conv.to(memory_format=torch.contiguous_format)
    return peer


class StepTimer:
    """Wall-clock time of each phase of a training step, from module, tensor and optimizer hooks.

    Forward: conv front-end, recurrent layers, and the rest (lookahead, output layer, log-softmax, CTC).
    Backward runs in reverse: head (CTC, output layer), recurrent layers, conv front-end. Then gradient
    clipping and the optimizer step. Phases are contiguous, so they add up to the step.
    """

    def __init__(self, model: ds2.DeepSpeech2, optimizer: torch.optim.Optimizer):
        self.marks: dict[str, float] = {}
        self.totals: dict[str, float] = defaultdict(float)
        mark = self._mark
        model.register_forward_pre_hook(lambda *_: mark("start"))
        model.conv.register_forward_hook(lambda *_: mark("conv"))
        model.rnns[-1].register_forward_hook(self._after_recurrent)
        model.rnns[0].register_forward_pre_hook(self._before_recurrent)
        optimizer.register_step_pre_hook(lambda *_: mark("clip"))
        optimizer.register_step_post_hook(lambda *_: mark("optimizer"))
        self._loss = ds2.ctc_loss

        def loss_with_hook(*args):
            loss = self._loss(*args)
            mark("forward rest")
            loss.register_hook(lambda grad: mark("forward rest") or grad)  # backward begins
            return loss

        ds2.ctc_loss = loss_with_hook  # train_step looks the name up at call time

    def _mark(self, name: str) -> None:
        self.marks[name] = time.perf_counter()

    def _before_recurrent(self, module, inputs):
        inputs[0].register_hook(lambda grad: self._mark("backward recurrent") or grad)  # rnn grads done

    def _after_recurrent(self, module, inputs, output):
        self._mark("recurrent")
        output.register_hook(lambda grad: self._mark("backward head") or grad)  # head grads done

    def record(self, step_end: float) -> None:
        order = [
            ("start", "conv", "forward: conv front-end"),
            ("conv", "recurrent", "forward: recurrent layers"),
            ("recurrent", "forward rest", "forward: output layer + CTC"),
            ("forward rest", "backward head", "backward: CTC + output layer"),
            ("backward head", "backward recurrent", "backward: recurrent layers"),
            ("backward recurrent", "clip", "backward: conv front-end + clipping"),
            ("clip", "optimizer", "optimizer step"),
        ]
        for begin, end, label in order:
            self.totals[label] += self.marks[end] - self.marks[begin]
        self.totals["(other)"] += step_end - self.marks["optimizer"]

    def close(self) -> None:
        ds2.ctc_loss = self._loss


def time_steps(model, optimizer, batches, timer=None) -> list[float]:
    seconds = []
    for batch in batches:
        start = time.perf_counter()
        ds2.train_step(model, optimizer, batch)
        seconds.append(time.perf_counter() - start)
        if timer is not None:
            timer.record(time.perf_counter())
    return seconds


def time_interleaved(runs: list[tuple], batches) -> list[list[float]]:
    """Seconds per step for each ``(model, optimizer, timer)``, batch by batch, in a rotating order."""
    seconds: list[list[float]] = [[] for _ in runs]
    for index, batch in enumerate(batches):
        for position in range(len(runs)):
            which = (index + position) % len(runs)
            model, optimizer, timer = runs[which]
            seconds[which] += time_steps(model, optimizer, [batch], timer)
    return seconds


def batchnorm_statistics_flops(counter: FlopCounterMode) -> int:
    """FLOPs of the recurrent layers' ``torch.mm`` calls: exactly the covariance-based BatchNorm statistics.

    (``GRULayer``'s projections and recurrence run as batched matmuls, ``bmm``/``baddbmm``; only
    ``fast_paths.linear_moments`` and its backward use plain ``mm``.)
    """
    return sum(
        flops
        for module, by_op in counter.get_flop_counts().items()
        if ".rnns." in module and module.count(".") == 2  # each layer once, not its parents or children
        for op, flops in by_op.items()
        if str(op).endswith(".mm")
    )


def profile_step(model, optimizer, batch) -> tuple[int, list[tuple[str, float, int]]]:
    """Operators dispatched by one step, and the five with the most self time (ms, calls)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        ds2.train_step(model, optimizer, batch)
    events = prof.key_averages()
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:5]
    return sum(e.count for e in events if e.key.startswith("aten::")), [
        (e.key, e.self_cpu_time_total / 1000, e.count) for e in top
    ]


def estimate_default_run(threads: int = 0, utterances: int = 64, steps: int = 2) -> dict:
    """A short measurement (about 15-30 s) that predicts ``python train_minimal.py`` with its defaults here.

    Synthesises and featurises ``utterances`` training-like utterances, times ``steps`` training steps
    of the default model at the default batch size on utterances of about the mean length, one evaluation batch
    and the LM's training, and scales each to the default run. Returns the pieces and ``total_s``; the
    final beam-search evaluation is not included (``beam_s`` is None).
    """
    import numpy as np

    import train_minimal

    args = train_minimal.parse_args([])  # the CLI's own defaults
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        # Synthesis as make_splits makes the training split: half the utterances noisy, babble from a bank.
        began = time.perf_counter()
        probe_bank = 6
        ds2.make_babble_bank((7, 11), probe_bank)
        bank_s = (
            (time.perf_counter() - began)
            * ds2.babble_bank_size(args.train_size * args.noise / len(ds2.NOISE_KINDS))
            / probe_bank
        )
        began = time.perf_counter()
        split = ds2.make_split(
            "probe",
            utterances,
            ds2.make_speaker_pool(64, 7),
            seed=(7, 10),
            noise_kinds=ds2.NOISE_KINDS,
            snr_db=(5.0, 30.0),
            noisy_fraction=args.noise,
            babble_talkers=probe_bank,
        )
        synthesis_s = (time.perf_counter() - began) / utterances
        began = time.perf_counter()
        features = ds2.featurize_batch(split.waveforms)
        featurize_s = (time.perf_counter() - began) / utterances
        # A batch of utterances around the mean length: a step's time grows about linearly with the
        # frames, so this step's time is about the mean step's (the median's would be ~10% short).
        durations = split.durations_s()
        order = np.argsort(durations)
        at_mean = int(np.searchsorted(durations[order], durations.mean()))
        middle = min(max(0, at_mean - args.batch_size // 2), max(0, len(order) - args.batch_size))
        chosen = order[middle : middle + args.batch_size].tolist()
        batch = ds2.collate([features[i] for i in chosen], [split.texts[i] for i in chosen])
        torch.manual_seed(0)
        model = ds2.DeepSpeech2()
        optimizer = ds2.make_optimizer(model, ds2.TrainConfig())
        step_s = min(time_steps(model, optimizer, [batch] * steps))
        # One evaluation batch as ds2.evaluate runs it (its own batch size, not the training batch's).
        middle = min(max(0, at_mean - EVAL_BATCH // 2), max(0, len(order) - EVAL_BATCH))
        chosen = order[middle : middle + EVAL_BATCH].tolist()
        began = time.perf_counter()
        ds2.predict(model, [features[i] for i in chosen], batch_size=EVAL_BATCH)
        eval_batch_s = time.perf_counter() - began
        rng = np.random.default_rng(0)
        began = time.perf_counter()
        ds2.NGramLM.train([ds2.random_sentence(rng) for _ in range(2000)], order=3)
        lm_s = (time.perf_counter() - began) * args.lm_sentences / 2000
    finally:
        torch.set_num_threads(previous)
    total_steps = ds2.steps_per_epoch(args.train_size, args.batch_size) * args.epochs
    all_utterances = args.train_size + 2 * args.dev_size
    workers = max(1, min(args.workers, os.cpu_count() or 1))
    data_s = (all_utterances * synthesis_s + bank_s) / workers + all_utterances * featurize_s
    eval_s = args.epochs * 2 * ds2.steps_per_epoch(args.dev_size, EVAL_BATCH) * eval_batch_s
    pieces = {"data_s": data_s + lm_s, "train_s": total_steps * step_s, "eval_s": eval_s}
    return {
        **pieces,
        "total_s": sum(pieces.values()),
        "beam_s": None,
        "step_s": step_s,
        "steps": total_steps,
        "threads": torch.get_num_threads() if not threads else threads,
    }


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--batch-size", type=int, default=32, help="utterances per step (train_minimal's default)"
    )
    parser.add_argument("--batches", type=int, default=8, help="batches of synthetic utterances to time")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument(
        "--no-compare-packed", action="store_true", help="skip the PackedSequence peer (saves time)"
    )
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
        babble_talkers=ds2.babble_bank_size(count * 0.5 / len(ds2.NOISE_KINDS)),  # as make_splits would
    )
    synth_seconds = time.perf_counter() - start
    audio = split.durations_s()
    start = time.perf_counter()
    features = ds2.featurize_batch(split.waveforms)
    featurize_seconds = time.perf_counter() - start
    # The batches of a later epoch of training: length-sorted pools, in random order (sortagrad_batches).
    groups = ds2.sortagrad_batches([f.shape[-1] for f in features], args.batch_size, epoch=1, seed=args.seed)
    batches = [ds2.collate([features[i] for i in g], [split.texts[i] for i in g]) for g in groups]
    batch_audio = [float(sum(audio[i] for i in g)) for g in groups]
    print(
        f"data: {count} utterances, {audio.sum():.0f} s of audio; synthesis {audio.sum() / synth_seconds:.0f}x "
        f"real time (1 process), featurize {audio.sum() / featurize_seconds:.0f}x real time (batched STFT)"
    )

    torch.manual_seed(args.seed)
    model = ds2.DeepSpeech2()
    optimizer = ds2.make_optimizer(model, ds2.TrainConfig())
    flops, statistics_flops = [], []
    for batch in batches:  # one pass to count the operations of every batch (and to warm up)
        with FlopCounterMode(display=False) as counter:
            ds2.train_step(model, optimizer, batch)
        flops.append(counter.get_total_flops())
        statistics_flops.append(batchnorm_statistics_flops(counter))
    runs = [(model, optimizer, StepTimer(model, optimizer))]
    if not args.no_compare_packed:
        for as_of_issue in (False, True):
            peer = packed_copy(model, as_of_issue)
            peer_optimizer = ds2.make_optimizer(peer, ds2.TrainConfig())
            time_steps(peer, peer_optimizer, batches[:1])  # warm up
            runs.append((peer, peer_optimizer, None))

    peak_before, size = matmul_peak_gflops(repeats=5)
    step_seconds, *peer_seconds = time_interleaved(runs, batches)
    timer = runs[0][2]
    timer.close()
    peak_after, _ = matmul_peak_gflops(repeats=5)
    peak = max(peak_before, peak_after)

    audio_rate = sum(batch_audio) / sum(step_seconds)
    flop_rate = sum(flops) / sum(step_seconds) / 1e9
    model_flop_rate = (sum(flops) - sum(statistics_flops)) / sum(step_seconds) / 1e9
    print(f"peer  fp32 matmul peak ({size}x{size}):       {peak:8.1f} GFLOP/s")
    print(
        f"ours  {len(batches)} training steps, batch {args.batch_size} (~{sum(batch_audio) / len(batches):.0f} s audio each): "
        f"{1000 * statistics.median(step_seconds):5.0f} ms median, {sum(flops) / len(flops) / 1e9:.1f} GFLOP each"
    )
    print(f"      throughput:                       {audio_rate:8.0f} audio-seconds per wall-second")
    print(
        f"      FLOP rate:                        {flop_rate:8.1f} GFLOP/s = {100 * flop_rate / peak:.0f}% of the matmul peak"
    )
    print(
        f"      without the {sum(statistics_flops) / len(flops) / 1e9:.1f} GFLOP per step of BatchNorm statistics: "
        f"{model_flop_rate:.1f} GFLOP/s = {100 * model_flop_rate / peak:.0f}% of the peak"
    )
    names = ("packed GRU", "as of issue 11")
    for name, seconds in zip(names, peer_seconds, strict=False):
        print(
            f"peer  {name + ':':15s} {1000 * statistics.median(seconds):5.0f} ms median, "
            f"{sum(batch_audio) / sum(seconds):.0f} audio-s/s; ours is {sum(seconds) / sum(step_seconds):.2f}x faster"
        )
    total = sum(timer.totals.values())
    print("where a step's time goes (share of the timed steps):")
    for label, seconds in timer.totals.items():
        print(f"      {label:38s} {1000 * seconds / len(batches):6.0f} ms  {100 * seconds / total:4.0f}%")
    middle = sorted(range(len(batches)), key=lambda i: step_seconds[i])[len(batches) // 2]
    operators, top = profile_step(model, optimizer, batches[middle])
    print(
        f"operators per step (profiler, the median batch of {batches[middle].spectrograms.shape[-1]} frames): {operators:,}"
    )
    for name, ms, calls in top:
        print(f"      {name:38s} {ms:7.1f} ms self time in {calls:5d} calls")
    defaults = ds2.TrainConfig()  # train_minimal's epochs (its batch may run at another rate than this one)
    train_audio = 2000 * float(audio.mean())
    print(
        f"      {model.num_parameters():,} parameters; {defaults.epochs} epochs of train_minimal's 2000 utterances "
        f"(~{train_audio:,.0f} s of audio) would take ~{defaults.epochs * train_audio / audio_rate:.0f} s of "
        "training at this rate"
    )


if __name__ == "__main__":
    main()
