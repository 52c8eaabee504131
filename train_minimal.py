"""Train Deep Speech 2 on synthetic speech, on a laptop CPU, in a few minutes.

    python train_minimal.py                          # train; writes runs/ds2/{checkpoint.pt, metrics.json, curves.png}
    python train_minimal.py --resume runs/ds2/checkpoint.pt --epochs 5      # continue a run, to 5 epochs
    python train_minimal.py --transcribe clip.wav --checkpoint runs/ds2/checkpoint.pt   # [--stream: as it arrives]
    python train_minimal.py --data mandarin --out runs/mandarin        # Chinese characters (§3.9)
    python train_minimal.py --data librispeech --data-dir LibriSpeech/dev-clean            # recorded speech
    torchrun --nproc_per_node 4 train_minimal.py --device cuda --batch-size 128   # 4 GPUs, one global batch

Top to bottom: make the data, build the model, train with ``implementation.fit`` (each epoch: SortaGrad
batches -> forward -> CTC loss -> backward -> clip -> step, then evaluate; this script's hooks print,
checkpoint and stop on Ctrl-C), then decode with beam search and the LM (of words, or of characters). The
defaults are implementation.py's ``DS2Config`` and ``TrainConfig``; the data beyond letter-phones: corpora.py."""

import argparse
import json
import os
import signal
import sys
import time

import torch
from tqdm import tqdm

import corpora
import implementation as ds2
import production_decoder

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
    a("--epochs", type=int, help=f"passes over the training set (default {TRAIN.epochs}; --data mandarin: {corpora.RECIPES['mandarin']['epochs']})%(default).0s")
    a("--batch-size", type=int, default=TRAIN.batch_size, help="utterances per minibatch; under torchrun the global minibatch, dealt out to the processes")
    a("--lr", type=float, help=f"peak learning rate, cosine decay to {TRAIN.lr_floor:.0%}% of it (default {TRAIN.lr}; --data mandarin with sgd: {corpora.RECIPES['mandarin']['lr']})%(default).0s")
    a("--optimizer", choices=["adam", "sgd"], help=f"adam, or SGD with Nesterov momentum, the paper's optimiser as we recall it (try --lr 0.05) (default {TRAIN.optimizer}; --data mandarin: {corpora.RECIPES['mandarin']['optimizer']})%(default).0s")
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
    a("--normalize", choices=ds2.NORMALIZATIONS, default=MODEL.normalize, help="utterance: each utterance's own mean and variance (needs the whole recording); causal: statistics of the audio heard so far, from a training-set prior (streamable, --stream)")
    a("--lookahead", type=int, default=MODEL.lookahead_context, help="future frames for the lookahead convolution (with --unidirectional)")
    a = p.add_argument_group("data (synthetic speech, synthesised once and cached on disk; or a real corpus)").add_argument
    a("--train-size", type=int, help=f"training utterances (synthetic data; default {corpora.TRAIN_SIZE}; --data mandarin: {corpora.RECIPES['mandarin']['train_size']})%(default).0s")
    a("--dev-size", type=int, default=200, help="utterances in each of dev-clean and dev-noisy (synthetic data)")
    a("--noise", type=float, default=0.5, help="fraction of training utterances with added noise (5-30 dB SNR; synthetic data)")
    a("--lm-sentences", type=int, default=20000, help="sentences of text to train the word LM on (synthetic data; a real corpus's LM learns from its training transcripts)")
    a("--data", choices=["letters", "espeak", "mandarin", "librispeech", "manifest"], default="letters",
      help=f"letters: the letter-phone speech of §11; espeak: English spoken by espeak-ng (needs {corpora.ESPEAK_REQUIREMENT}); mandarin: Chinese characters spoken by espeak-ng (§3.9); "
           "librispeech: a LibriSpeech folder (--data-dir); manifest: a CSV/JSONL of audio paths and transcripts (--data-dir)")
    a("--data-dir", metavar="PATH", help="--data librispeech: a subset folder such as LibriSpeech/train-clean-100; --data manifest: the .csv/.jsonl file")
    a("--dev-dir", metavar="PATH", help="dev data in the same format as --data-dir; when absent, 10%% of the training speakers are held out")
    a("--min-seconds", type=float, default=0.5, help="real corpora: drop utterances shorter than this")
    a("--max-seconds", type=float, default=20.0, help="real corpora: drop utterances longer than this (0 = no limit)")
    a("--cache-dir", help=f"folder of the synthesised-data cache (default: ${corpora.SPLIT_CACHE_ENV}, else {corpora.split_cache_dir(None)})")
    a("--no-cache", action="store_true", help="synthesise the data afresh; neither read nor write the cache")
    a = p.add_argument_group("decoding (§3.8)").add_argument
    a("--beam-width", type=int, default=32, help="beam for the final beam-search evaluation")
    a("--alpha", type=float, help="LM weight (default: {english} for the word LM; {mandarin} for Mandarin's character LM)%(default).0s".format_map({k: v[0] for k, v in corpora.DECODING.items()}))
    a("--beta", type=float, help="bonus per word (default: {english}); per character for Mandarin ({mandarin})%(default).0s".format_map({k: v[1] for k, v in corpora.DECODING.items()}))
    a("--decoder", choices=["beam", "flashlight"], default="beam", help="beam: the lesson's prefix beam search (Python); flashlight: torchaudio's ctc_decoder (C++, KenLM) for large LMs")
    a("--lm-path", metavar="FILE", help="a KenLM word LM (ARPA, or binary with --decoder flashlight) instead of the run's own lm.arpa")
    a = p.add_argument_group("run").add_argument
    a("--seed", type=int, default=TRAIN.seed, help="seed for data, initialisation and batch order")
    a("--device", default="auto", help="auto (CUDA, else Apple MPS, else CPU), cpu, cuda, cuda:N or mps")
    a("--amp", action="store_true", help="mixed precision on CUDA: bf16 autocast (fp16 + loss scaling on older GPUs), CTC loss in fp32")
    a("--threads", type=int, default=0, help="CPU threads for torch (0 = torch's default)")
    a("--workers", type=int, default=min(2, os.cpu_count() or 1), help="processes that synthesise the data and run the final beam search")
    a("--out", default="runs/ds2", help="run folder for checkpoint.pt, metrics.json, curves.png")
    a("--resume", metavar="CHECKPOINT", help="continue training from this checkpoint")
    a("--stop-after", type=int, default=0, metavar="STEPS", help="stop after this many optimizer steps, saving a resumable checkpoint as Ctrl-C does (0 = never)")
    a = p.add_argument_group("transcribe instead of training").add_argument
    a("--transcribe", metavar="WAV", help="transcribe this audio file (any sample rate, mono or stereo)")
    a("--checkpoint", default="runs/ds2/checkpoint.pt", help="checkpoint to transcribe with")
    a("--stream", action="store_true", help="play the file through the model in chunks, printing the transcript as it grows (needs a model trained with --unidirectional --normalize causal)")
    a("--chunk-ms", type=float, default=80.0, help="with --stream: milliseconds of audio per chunk")
    # fmt: on
    args = p.parse_args(argv)
    args.train_size, args.epochs, args.optimizer, args.lr = corpora.training_recipe(args.data, args.train_size, args.epochs, args.optimizer, args.lr)  # fmt: skip
    for name in ("epochs", "batch_size", "train_size", "dev_size", "hidden", "rnn_layers", "conv_channels"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.lookahead and not args.unidirectional:
        p.error("--lookahead needs --unidirectional: a bidirectional model already sees the whole future (§3.7)")  # fmt: skip
    if args.stream and not args.transcribe:
        p.error("--stream plays a file through a model: give it with --transcribe FILE --checkpoint C")
    if not 0.0 <= args.noise <= 1.0:
        p.error(f"--noise is a fraction in [0, 1], got {args.noise}")
    if args.batch_size > args.train_size:
        p.error(f"--batch-size {args.batch_size} is larger than --train-size {args.train_size}")
    if args.decoder == "flashlight" and args.data == "mandarin":
        p.error("--decoder flashlight decodes English words with a lexicon; Mandarin uses --decoder beam")
    if args.lm_path and not os.path.isfile(args.lm_path):
        p.error(f"--lm-path {args.lm_path}: no such file (give a KenLM ARPA or binary language model)")
    if (real := args.data in ("librispeech", "manifest")) != bool(args.data_dir) or (args.dev_dir and not real):  # fmt: skip
        p.error(f"--data {args.data} needs --data-dir (a LibriSpeech folder or a manifest file)" if real else f"--data-dir and --dev-dir are for --data librispeech or manifest, not --data {args.data}")  # fmt: skip
    return args


def configs(args):  # the model (its alphabet is the data's: corpora.training_data) and the training recipe
    model = ds2.DS2Config(
        conv_channels=(args.conv_channels,) * args.conv_layers, conv_type=args.conv_type, rnn_type=args.rnn_type,
        rnn_layers=args.rnn_layers, rnn_hidden=args.hidden, bidirectional=not args.unidirectional,
        lookahead_context=args.lookahead, batch_norm=not args.no_batchnorm, normalize=args.normalize)  # fmt: skip
    return model, ds2.TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
        momentum=args.momentum, clip=args.clip, sortagrad=not args.no_sortagrad, seed=args.seed)  # fmt: skip


def make_decoder(args, run_lm, words=()):
    """--decoder flashlight: torchaudio's beam search with --lm-path, else the run's LM; else None."""
    flashlight = production_decoder.flashlight_decoder if args.decoder == "flashlight" else None
    return flashlight and flashlight(args.lm_path or run_lm, words, args.beam_width, args.alpha, args.beta)


def set_decoding(args, alphabet):  # --alpha and --beta, else the defaults for the model's language's LM
    args.alpha, args.beta = (v if v is not None else d for v, d in zip((args.alpha, args.beta), corpora.DECODING[alphabet.name], strict=True))  # fmt: skip


def transcribe_file(args):
    model, _ = ds2.load_checkpoint(args.checkpoint)  # on the CPU, wherever it was trained
    set_decoding(args, model.config.alphabet)
    model.to(ds2.pick_device(args.device))
    waveform, sample_rate = ds2.load_audio(args.transcribe)
    run_lm = path if os.path.isfile(path := os.path.join(os.path.dirname(args.checkpoint), "lm.arpa")) else None  # fmt: skip
    decoder, lm_path = make_decoder(args, run_lm), args.lm_path or run_lm
    lm = ds2.NGramLM.from_arpa(lm_path) if lm_path and decoder is None else None
    beam = args.beam_width if lm is not None else 0
    if not args.stream:
        return print(ds2.transcribe(model, waveform, sample_rate, lm, beam, args.alpha, args.beta, decoder=decoder))  # fmt: skip
    events, recognizer = ds2.stream_recording(model, waveform, sample_rate, args.chunk_ms)  # §3.7, §7
    print("\n".join(ds2.stream_report(events, model.config, args.chunk_ms)))
    print(f"final{' (beam + LM)' if lm else ''}: {recognizer.transcript(lm, beam, args.alpha, args.beta) if lm else events[-1][1]}")  # fmt: skip


class Run:
    """This script's hooks into ``implementation.fit``: a progress bar; after each epoch a printed line, a
    checkpoint and metrics.json (rank 0 alone writes); a stop at Ctrl-C or after ``--stop-after`` steps."""

    def __init__(self, args, model, optimizer, state, main_process, num_utterances):
        self.args, self.model, self.optimizer, self.state = args, model, optimizer, state
        self.main_process, self.checkpoint, self.bar = main_process, os.path.join(args.out, "checkpoint.pt"), None  # fmt: skip
        self.steps, self.interrupted = ds2.steps_per_epoch(num_utterances, args.batch_size, ds2.distributed_world()[1]), []  # fmt: skip
        signal.signal(signal.SIGINT, lambda *_: self.interrupted.append(True))  # stop at the next batch

    def save(self, final=None):  # the model itself, not DDP's wrapper: any number of processes loads it
        if self.main_process:
            state, args = self.state, vars(self.args)
            ds2.save_checkpoint(self.checkpoint, self.model, optimizer=self.optimizer.state_dict(), **vars(state), args=args)  # fmt: skip
            history = [{k: v for k, v in record.items() if k != "steps"} for record in state.history]
            metrics = {"history": history, **(final or {}), "args": args}
            ds2.atomic_write_text(os.path.join(args["out"], "metrics.json"), json.dumps(metrics, indent=2))

    def should_stop(self, state):  # asked on every process at the same batch: they all stop, or none
        return ds2.any_process(bool(self.interrupted)) or 0 < self.args.stop_after <= state.step

    def on_step(self, state, loss):
        if self.bar is None:  # the epoch's first step in this run (which may resume mid-epoch)
            self.bar = tqdm(total=self.steps, initial=state.batch - 1, desc=f"epoch {state.epoch + 1}/{self.args.epochs}", leave=False, disable=not self.main_process)  # fmt: skip
        self.bar.update()
        self.bar.set_postfix(loss=f"{loss:.2f}")

    def on_epoch(self, state, record):
        self.bar = self.bar.close() if self.bar is not None else None
        rates = "".join(f"{s} {ds2.error_rates(record[s])}  " for s in record if s.startswith("dev"))
        print(f"epoch {record['epoch']:2d}  loss {record['train_loss']:7.3f}  {rates}{record['seconds']:5.1f} s")  # fmt: skip
        self.save()


def final_evaluation(args, model, data, lm, decoder):
    """Greedy and beam search (+ the LM, §3.8) on each dev split: ``{split: rates and 5 examples}``."""
    final = {}
    for split in (name for name in data if name != "train"):  # dev-clean and dev-noisy, or the one "dev"
        result = ds2.evaluate(model, *data[split], lm, args.beam_width, args.alpha, args.beta, decoder=decoder, workers=args.workers)  # fmt: skip
        f = final[split] = {k: v for k, v in result.items() if not k.endswith("hypotheses")}
        examples = zip(data[split][1], result["hypotheses"], result["beam_hypotheses"], strict=True)
        f["examples"] = [{"reference": r, "greedy": g, "beam_lm": b} for r, g, b in list(examples)[:5]]
        print(f"{split:9s}  greedy {ds2.error_rates(f)}   beam+LM {ds2.error_rates(f, 'beam_')}")
    return final


def main(args):
    if args.transcribe:
        return transcribe_file(args)
    torch.set_num_threads(args.threads or torch.get_num_threads())  # --threads 0: torch's default
    device = ds2.init_distributed(args.device)  # under torchrun: join the other processes (README)
    if args.amp and device.type != "cuda":  # CPUs without bf16 instructions emulate it: 10x slower here
        raise ValueError(f"--amp speeds up CUDA GPUs, and this run is on {device.type}: drop --amp")
    main_process = ds2.distributed_world()[0] == 0  # rank 0 alone prints and writes files
    if not main_process:
        sys.stdout = open(os.devnull, "w")  # the other processes train in silence; errors still show
    os.makedirs(args.out, exist_ok=True)
    t_start, run_lm = time.time(), os.path.join(args.out, "lm.arpa")

    # ---- data (a real corpus is checked for CTC feasibility against the model's strides), the word LM
    config, train_config = configs(args)
    data, lm, summary, config = corpora.training_data(args, config)
    set_decoding(args, config.alphabet)
    print(summary)
    if main_process:
        lm.to_arpa(run_lm)
    words = {word for text in data["train"][1] for word in text.split()}  # flashlight's lexicon, + the LM's
    decoder = make_decoder(args, run_lm, words) if main_process else None  # now: a bad LM fails early
    lm = ds2.NGramLM.from_arpa(args.lm_path) if args.lm_path and args.decoder == "beam" else lm

    # ---- model, optimiser and the run's state (a fresh start, or where a checkpoint left off)
    torch.manual_seed(args.seed)
    model = ds2.DeepSpeech2(config).to(device)
    optimizer, state = ds2.make_optimizer(model, train_config), ds2.TrainState()
    if args.resume:
        model, saved = ds2.load_checkpoint(args.resume, model)
        optimizer.load_state_dict(saved["optimizer"])
        state = ds2.TrainState(**{key: saved[key] for key in vars(state)})
        print(f"resumed from {args.resume}: epoch {state.epoch + 1}, batch {state.batch}, step {state.step}")

    # ---- train with the one loop, evaluating on the held-out speakers after each epoch. Ctrl-C is caught
    # before the "model:" line is printed, so whoever sees that line (tests/test_bad_inputs.py) may press it.
    run = Run(args, model, optimizer, state, main_process, len(data["train"][1]))
    print(f"model: {model.num_parameters():,} parameters, {config}; device {device}")
    dev = {name: split for name, split in data.items() if name != "train"}
    hooks = dict(on_step=run.on_step, on_epoch=run.on_epoch, should_stop=run.should_stop)
    try:
        ds2.fit(model, data["train"], train_config, dev, optimizer, state, log=None, amp=args.amp, **hooks)
    except FloatingPointError:
        run.bar = run.bar and run.bar.close()  # the error goes on a line of its own
        print(f"error: every batch of epoch {state.epoch + 1} gave a NaN/inf loss; lower --lr", file=sys.stderr)  # fmt: skip
        return 1
    status, again = (130 if run.interrupted else 0), f"--resume {run.checkpoint} and the same flags"
    if state.epoch < args.epochs:  # stopped early: save where we are and say how to go on
        run.save()
        print(f"{'interrupted' if status else 'stopped'} at step {state.step}: saved {run.checkpoint}; continue with {again}")  # fmt: skip
        return status
    if status and main_process:  # Ctrl-C during the last epoch's evaluation: that epoch is saved
        print(f"interrupted after the last epoch: saved {run.checkpoint}; for the final evaluation run again with {again}")  # fmt: skip
    if status or not main_process:
        return status

    # ---- final evaluation: greedy and beam search with the word LM (§3.8), on rank 0 only
    signal.signal(signal.SIGINT, signal.default_int_handler)  # from here on Ctrl-C stops at once
    final = final_evaluation(args, model, data, lm, decoder)
    total_seconds = time.time() - t_start
    run.save({"final": final, "total_seconds": total_seconds})
    from visualization import plot_run_curves  # matplotlib, only now

    plot_run_curves(state.history, os.path.join(args.out, "curves.png"))
    print(f"total {total_seconds:.0f} s; run folder {args.out}/ (checkpoint.pt, metrics.json, curves.png, lm.arpa)")  # fmt: skip
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
