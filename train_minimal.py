"""Train Deep Speech 2 on synthetic speech, on a laptop CPU, in a few minutes.

    python train_minimal.py                          # train; writes runs/ds2/{checkpoint.pt, metrics.json, curves.png}
    python train_minimal.py --resume runs/ds2/checkpoint.pt --epochs 5      # continue a run, to 5 epochs
    python train_minimal.py --transcribe clip.wav --checkpoint runs/ds2/checkpoint.pt
    python train_minimal.py --data librispeech --data-dir LibriSpeech/dev-clean            # recorded speech
    torchrun --nproc_per_node 4 train_minimal.py --device cuda --batch-size 128   # 4 GPUs, one global batch

The script reads top to bottom: make the data, build the model, then for each epoch train (SortaGrad
batches -> forward -> CTC loss -> backward -> clip -> step, all in ``implementation.train_epoch``),
evaluate and checkpoint; finally decode with beam search and the word LM. Everything it uses lives in
implementation.py; the defaults of the flags are those of ``DS2Config`` and ``TrainConfig`` there.
"""

import argparse
import json
import os
import signal
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

import implementation as ds2

MODEL, TRAIN = ds2.DS2Config(), ds2.TrainConfig()  # the defaults of every model and training flag


class OneLineErrorParser(argparse.ArgumentParser):
    """Bad flags get one line on stderr and exit status 2 (no usage dump, no traceback)."""

    def error(self, message):
        self.exit(2, f"error: {message} (see --help)\n")


def parse_args(argv=None):
    p = OneLineErrorParser(
        description="Train Deep Speech 2 (Amodei et al. 2015) on synthetic speech, or transcribe a WAV file.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    # fmt: off
    a = p.add_argument_group("training").add_argument
    a("--epochs", type=int, default=TRAIN.epochs, help="passes over the training set")
    a("--batch-size", type=int, default=TRAIN.batch_size,
      help="utterances per minibatch; under torchrun the global minibatch, dealt out to the processes")
    a("--lr", type=float, default=TRAIN.lr, help=f"peak learning rate (cosine decay to {TRAIN.lr_floor:.0%}% of it)")
    a("--optimizer", choices=["adam", "sgd"], default=TRAIN.optimizer,
      help="adam, or SGD with Nesterov momentum, the paper's optimiser as we recall it (try --lr 0.05)")
    a("--momentum", type=float, default=TRAIN.momentum, help="momentum for --optimizer sgd")
    a("--clip", type=float, default=TRAIN.clip, help="clip the gradient's global norm to this")
    a("--no-sortagrad", action="store_true", help="shuffle epoch 1 too (turns off §3.3's curriculum)")
    a = p.add_argument_group("model (defaults: a 0.57M-parameter DS2 sized for a CPU)").add_argument
    a("--conv-layers", type=int, default=len(MODEL.conv_channels), choices=[1, 2, 3], help="2D conv layers (§3.5)")
    a("--conv-channels", type=int, default=MODEL.conv_channels[0], help="channels per conv layer (paper: 32/32/96)")
    a("--rnn-layers", type=int, default=MODEL.rnn_layers, help="recurrent layers (the paper: up to 7)")
    a("--hidden", type=int, default=MODEL.rnn_hidden, help="hidden units per recurrent layer")
    a("--rnn-type", choices=["gru", "rnn"], default=MODEL.rnn_type, help="GRU or simple RNN with clipped ReLU")
    a("--conv-type", choices=["2d", "1d"], default=MODEL.conv_type, help="2d: conv over (frequency, time); 1d: over time, bins as channels (Table 4 topic)")
    a("--no-batchnorm", action="store_true", help="turn off (sequence-wise) BatchNorm (§3.2)")
    a("--unidirectional", action="store_true", help="forward-only recurrent layers (§3.7)")
    a("--lookahead", type=int, default=MODEL.lookahead_context,
      help="future frames for the lookahead convolution (with --unidirectional)")
    a = p.add_argument_group("data (synthetic speech, synthesised once and cached on disk; or a real corpus)").add_argument
    a("--train-size", type=int, default=2000, help="training utterances (synthetic data)")
    a("--dev-size", type=int, default=200, help="utterances in each of dev-clean and dev-noisy (synthetic data)")
    a("--noise", type=float, default=0.5, help="fraction of training utterances with added noise (5-30 dB SNR; synthetic data)")
    a("--lm-sentences", type=int, default=20000, help="sentences of text to train the word LM on (synthetic data; a real corpus's LM learns from its training transcripts)")
    a("--data", choices=["letters", "espeak", "librispeech", "manifest"], default="letters",
      help=f"letters: the letter-phone speech of §11; espeak: English spoken by espeak-ng (needs {ds2.ESPEAK_REQUIREMENT}); "
           "librispeech: a LibriSpeech folder (--data-dir); manifest: a CSV/JSONL of audio paths and transcripts (--data-dir)")
    a("--data-dir", metavar="PATH", help="--data librispeech: a subset folder such as LibriSpeech/train-clean-100; --data manifest: the .csv/.jsonl file")
    a("--dev-dir", metavar="PATH", help="dev data in the same format as --data-dir; when absent, 10%% of the training speakers are held out")
    a("--min-seconds", type=float, default=0.5, help="real corpora: drop utterances shorter than this")
    a("--max-seconds", type=float, default=20.0, help="real corpora: drop utterances longer than this (0 = no limit)")
    a("--cache-dir", help=f"folder of the synthesised-data cache (default: ${ds2.SPLIT_CACHE_ENV}, else {ds2.split_cache_dir(None)})")
    a("--no-cache", action="store_true", help="synthesise the data afresh; neither read nor write the cache")
    a = p.add_argument_group("decoding (§3.8)").add_argument
    a("--beam-width", type=int, default=32, help="beam for the final beam-search evaluation")
    a("--alpha", type=float, default=0.5, help="LM weight")
    a("--beta", type=float, default=1.0, help="word insertion bonus")
    a("--decoder", choices=["beam", "flashlight"], default="beam",
      help="beam: the lesson's prefix beam search (Python); flashlight: torchaudio's ctc_decoder (C++, KenLM) for large LMs")
    a("--lm-path", metavar="FILE", help="a KenLM word LM (ARPA, or binary with --decoder flashlight) instead of the run's own lm.arpa")
    a = p.add_argument_group("run").add_argument
    a("--seed", type=int, default=TRAIN.seed, help="seed for data, initialisation and batch order")
    a("--device", default="auto", help="auto (CUDA, else Apple MPS, else CPU), cpu, cuda, cuda:N or mps")
    a("--amp", action="store_true", help="mixed precision on CUDA: bf16 autocast (fp16 + loss scaling on older GPUs), CTC loss in fp32")
    a("--threads", type=int, default=0, help="CPU threads for torch (0 = torch's default)")
    a("--workers", type=int, default=min(2, os.cpu_count() or 1), help="processes that synthesise the data and run the final beam search")
    a("--out", default="runs/ds2", help="run folder for checkpoint.pt, metrics.json, curves.png")
    a("--resume", metavar="CHECKPOINT", help="continue training from this checkpoint")
    a("--stop-after", type=int, default=0, metavar="STEPS",
      help="stop after this many optimizer steps, saving a resumable checkpoint as Ctrl-C does (0 = never)")
    a = p.add_argument_group("transcribe instead of training").add_argument
    a("--transcribe", metavar="WAV", help="transcribe this audio file (any sample rate, mono or stereo)")
    a("--checkpoint", default="runs/ds2/checkpoint.pt", help="checkpoint to transcribe with")
    # fmt: on
    args = p.parse_args(argv)
    for name in ("epochs", "batch_size", "train_size", "dev_size", "hidden", "rnn_layers", "conv_channels"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.lookahead and not args.unidirectional:
        p.error(
            "--lookahead needs --unidirectional: a bidirectional model already sees the whole future (§3.7)"
        )
    if not 0.0 <= args.noise <= 1.0:
        p.error(f"--noise is a fraction in [0, 1], got {args.noise}")
    if args.batch_size > args.train_size:
        p.error(f"--batch-size {args.batch_size} is larger than --train-size {args.train_size}")
    if args.lm_path and not os.path.isfile(args.lm_path):
        p.error(f"--lm-path {args.lm_path}: no such file (give a KenLM ARPA or binary language model)")
    real = args.data in ("librispeech", "manifest")
    if real and not args.data_dir:
        p.error(f"--data {args.data} needs --data-dir (a LibriSpeech folder or a manifest file)")
    if not real and (args.data_dir or args.dev_dir):
        p.error(f"--data-dir and --dev-dir are for --data librispeech or manifest, not --data {args.data}")
    return args


def plot_curves(history, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-")
    ax_loss.set(xlabel="epoch", ylabel="CTC loss (nats / utterance)", title="training loss")
    dev_splits = [name for name in history[0] if name.startswith("dev")]  # dev-clean/dev-noisy, or dev
    for split, style in zip(dev_splits, ("-", "--"), strict=False):
        ax_err.plot(epochs, [100 * h[split]["cer"] for h in history], "o" + style, label=f"{split} CER")
        ax_err.plot(epochs, [100 * h[split]["wer"] for h in history], "s" + style, label=f"{split} WER")
    ax_err.set(xlabel="epoch", ylabel="%", title="greedy error rates", yscale="log")
    ax_err.legend()
    speech = "synthetic speech" if "dev-clean" in dev_splits else "recorded speech"
    fig.suptitle(f"Deep Speech 2 on {speech} (train_minimal.py)")
    fig.tight_layout()
    ds2.atomic_write(path, lambda temporary: fig.savefig(temporary, dpi=110, format="png"))
    plt.close(fig)


def transcribe_file(args):
    model, _ = ds2.load_checkpoint(args.checkpoint)  # on the CPU, wherever it was trained
    model.to(ds2.pick_device(args.device))
    waveform, sample_rate = ds2.load_audio(args.transcribe)
    run_lm = os.path.join(os.path.dirname(args.checkpoint), "lm.arpa")
    lm_path = args.lm_path or (run_lm if os.path.isfile(run_lm) else None)
    decoder = None
    if args.decoder == "flashlight":
        decoder = ds2.flashlight_decoder(lm_path, (), args.beam_width, args.alpha, args.beta)
    lm = ds2.NGramLM.from_arpa(lm_path) if lm_path and decoder is None else None
    beam = args.beam_width if lm is not None else 0
    print(ds2.transcribe(model, waveform, sample_rate, lm, beam, args.alpha, args.beta, decoder=decoder))


def main(args):
    if args.transcribe:
        return transcribe_file(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = ds2.init_distributed(args.device)  # under torchrun: join the other processes (README)
    if args.amp and device.type != "cuda":  # CPUs without bf16 instructions emulate it: 10x slower here
        raise ValueError(f"--amp speeds up CUDA GPUs, and this run is on {device.type}: drop --amp")
    main_process = ds2.distributed_world()[0] == 0  # rank 0 alone prints and writes files
    if not main_process:
        sys.stdout = open(os.devnull, "w")  # the other processes train in silence; errors still show
    os.makedirs(args.out, exist_ok=True)
    checkpoint_path = os.path.join(args.out, "checkpoint.pt")
    t_start = time.time()

    # ---- the model's shape (first: a real corpus is checked for CTC feasibility against its strides)
    config = ds2.DS2Config(
        conv_channels=(args.conv_channels,) * args.conv_layers,
        conv_type=args.conv_type,
        rnn_type=args.rnn_type,
        rnn_layers=args.rnn_layers,
        rnn_hidden=args.hidden,
        bidirectional=not args.unidirectional,
        lookahead_context=args.lookahead,
        batch_norm=not args.no_batchnorm,
    )

    # ---- data: synthetic speech with disjoint speakers per split (cached on disk), a text corpus for the LM
    sources = []  # one line per split: "... from the cache ..." or "... synthesised ..."
    cache = dict(cache_dir=args.cache_dir, use_cache=not args.no_cache, log=sources.append)
    real = args.data in ("librispeech", "manifest")
    if real:  # recorded speech (§11.9): read, normalised, filtered, checked for CTC; says what it dropped
        splits = ds2.read_corpus_splits(
            args.data, args.data_dir, args.dev_dir, args.seed, args.min_seconds, args.max_seconds, config
        )
    else:  # letter-phones (§11.6) or English spoken by espeak-ng (§11.8), both cached (§11.7)
        corpus = "espeak" if args.data == "espeak" else "letters"
        splits = ds2.cached_splits(
            args.train_size, args.dev_size, args.seed, args.noise, args.workers, **cache, corpus=corpus
        )
    data = {name: (ds2.featurize_batch(split.waveforms), split.texts) for name, split in splits.items()}
    audio_seconds = splits["train"].durations_s().sum()
    cached = bool(sources) and all("from the cache" in line for line in sources)  # real/--no-cache: []
    dev_source = splits["dev"].source if real else ""
    del splits  # the waveforms are no longer needed: keep only the spectrograms
    if real:  # the word LM learns from the training transcripts (no grammar to sample from)
        lm = ds2.NGramLM.train(data["train"][1], order=3)
        print(
            f"data: {len(data['train'][1])} train utterances ({audio_seconds / 3600:.2f} h of audio), "
            f"{len(data['dev'][1])} dev from {dev_source}; LM on the {len(data['train'][1])} training "
            f"transcripts ({time.time() - t_start:.1f} s)"
        )
    else:
        lm_rng = np.random.default_rng([args.seed, 99])
        lm = ds2.NGramLM.train([ds2.random_sentence(lm_rng) for _ in range(args.lm_sentences)], order=3)
        print(
            f"data: {len(data['train'][1])} train utterances ({audio_seconds / 60:.1f} min of audio), "
            f"{args.dev_size} dev-clean, {args.dev_size} dev-noisy; LM on {args.lm_sentences} sentences "
            f"({time.time() - t_start:.1f} s; audio {'from the cache' if cached else 'synthesised'})"
        )
    if main_process:
        lm.to_arpa(os.path.join(args.out, "lm.arpa"))
    dev_splits = [name for name in data if name != "train"]  # dev-clean and dev-noisy, or the one "dev"
    if args.lm_path and args.decoder == "beam":  # an ARPA file replaces the run's own LM
        lm = ds2.NGramLM.from_arpa(args.lm_path)
    decoder = None  # flashlight: built now, so that a bad LM fails before training, not after
    if args.decoder == "flashlight" and main_process:
        words = {word for text in data["train"][1] for word in text.split()}  # lexicon: these + the LM's
        lm_path = args.lm_path or os.path.join(args.out, "lm.arpa")
        decoder = ds2.flashlight_decoder(lm_path, words, args.beam_width, args.alpha, args.beta)

    # ---- model, optimiser and the run's state (a fresh start, or where a checkpoint left off)
    train_config = ds2.TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        momentum=args.momentum,
        clip=args.clip,
        sortagrad=not args.no_sortagrad,
        seed=args.seed,
    )
    torch.manual_seed(args.seed)
    model = ds2.DeepSpeech2(config).to(device)
    optimizer = ds2.make_optimizer(model, train_config)
    precision = (args.amp, ds2.grad_scaler(device, args.amp))  # a GradScaler for --amp in float16 only
    state = ds2.TrainState()
    if args.resume:
        model, saved = ds2.load_checkpoint(args.resume, model)
        optimizer.load_state_dict(saved["optimizer"])
        state = ds2.TrainState(**{key: saved[key] for key in vars(state)})
        print(f"resumed from {args.resume}: epoch {state.epoch + 1}, batch {state.batch}, step {state.step}")
    trained = ds2.distribute(model)  # DistributedDataParallel under torchrun, else the model itself

    def save():  # the model itself (not the DDP wrapper), so any process count can load it
        if main_process:
            ds2.save_checkpoint(
                checkpoint_path, model, optimizer=optimizer.state_dict(), **vars(state), args=vars(args)
            )

    # ---- Ctrl-C asks for a stop at the next batch boundary. Installed before the "model:" line is
    # printed, so whoever sees that line (a person, or tests/test_bad_inputs.py) may press Ctrl-C.
    interrupted = []
    signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    print(f"model: {model.num_parameters():,} parameters, {config}; device {device}")

    def stop_requested():
        # Under torchrun every process stops at the same batch, even if Ctrl-C reached only some.
        return ds2.any_process(bool(interrupted)) or (args.stop_after and state.step >= args.stop_after)

    def stop():  # the one way out of an unfinished run: save where we are and say how to go on
        save()
        print(
            f"{'interrupted' if interrupted else 'stopped'} at step {state.step}: saved {checkpoint_path}; "
            f"continue with --resume {checkpoint_path} and the same flags"
        )
        return 130 if interrupted else 0

    # ---- train: one epoch at a time, evaluating on the held-out speakers after each
    while state.epoch < args.epochs:
        t_epoch = time.time()
        steps = ds2.steps_per_epoch(len(data["train"][1]), args.batch_size, ds2.distributed_world()[1])
        desc = f"epoch {state.epoch + 1}/{args.epochs}"
        bar = tqdm(total=steps, initial=state.batch, desc=desc, leave=False, disable=not main_process)
        if state.batch < steps and stop_requested():
            return stop()
        for loss in ds2.train_epoch(trained, optimizer, *data["train"], train_config, state, *precision):
            bar.update()
            bar.set_postfix(loss=f"{loss:.2f}")
            if state.batch < steps and stop_requested():
                return stop()
        bar.close()
        if not state.epoch_losses:
            print(
                f"error: every batch of epoch {state.epoch + 1} gave a NaN/inf loss; lower --lr",
                file=sys.stderr,
            )
            return 1
        record = {
            "epoch": state.epoch + 1,
            "train_loss": float(np.mean(state.epoch_losses)),
            "skipped_batches": state.epoch_skipped,
        }
        if not main_process:  # under torchrun, rank 0 alone evaluates, saves and reports
            state.end_epoch(record)
            continue
        for split in dev_splits:
            result = ds2.evaluate(model, *data[split])
            record[split] = {"cer": result["cer"], "wer": result["wer"]}
        record["seconds"] = time.time() - t_epoch
        state.end_epoch(record)
        rates = "".join(
            f"{split} CER {100 * record[split]['cer']:5.2f}% WER {100 * record[split]['wer']:5.2f}%  "
            for split in dev_splits
        )
        print(
            f"epoch {record['epoch']:2d}  loss {record['train_loss']:7.3f}  {rates}{record['seconds']:5.1f} s"
        )
        save()
        metrics = {"history": state.history, "args": vars(args)}
        ds2.atomic_write_text(os.path.join(args.out, "metrics.json"), json.dumps(metrics, indent=2))

    # ---- final evaluation: greedy and beam search with the word LM (§3.8), on rank 0 only
    if not main_process:
        return 130 if interrupted else 0
    if interrupted:  # Ctrl-C during the last epoch's evaluation: that epoch is already saved
        print(
            f"interrupted after the last epoch: saved {checkpoint_path}; for the final evaluation run "
            f"again with --resume {checkpoint_path} and the same flags"
        )
        return 130
    signal.signal(signal.SIGINT, signal.default_int_handler)  # from here on Ctrl-C stops at once
    final = {}
    for split in dev_splits:
        result = ds2.evaluate(
            model,
            *data[split],
            lm,
            args.beam_width,
            args.alpha,
            args.beta,
            decoder=decoder,
            workers=args.workers,
        )
        final[split] = {k: v for k, v in result.items() if not k.endswith("hypotheses")}
        references, greedy, beam = data[split][1][:5], result["hypotheses"][:5], result["beam_hypotheses"][:5]
        final[split]["examples"] = [
            {"reference": r, "greedy": g, "beam_lm": b}
            for r, g, b in zip(references, greedy, beam, strict=True)
        ]
    total_seconds = time.time() - t_start
    metrics = {"history": state.history, "final": final, "total_seconds": total_seconds, "args": vars(args)}
    ds2.atomic_write_text(os.path.join(args.out, "metrics.json"), json.dumps(metrics, indent=2))
    plot_curves(state.history, os.path.join(args.out, "curves.png"))
    for split in dev_splits:
        f = final[split]
        print(
            f"{split:9s}  greedy CER {100 * f['cer']:5.2f}% WER {100 * f['wer']:5.2f}%   "
            f"beam+LM CER {100 * f['beam_cer']:5.2f}% WER {100 * f['beam_wer']:5.2f}%"
        )
    print(
        f"total {total_seconds:.0f} s; run folder {args.out}/ (checkpoint.pt, metrics.json, curves.png, lm.arpa)"
    )
    return 0


if __name__ == "__main__":
    arguments = parse_args()
    try:
        sys.exit(main(arguments))
    except (ValueError, FileNotFoundError, ImportError) as error:  # bad input: one clear line, no traceback
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C outside the training loop: checkpoints on disk are whole (atomic)
        print("interrupted; any checkpoint already saved is intact (continue with --resume)", file=sys.stderr)
        sys.exit(130)
