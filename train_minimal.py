"""Train Deep Speech 2 on synthetic speech, on a laptop CPU, in a few minutes.

    python train_minimal.py --epochs 5               # train; writes runs/ds2/{checkpoint.pt, metrics.json, curves.png}
    python train_minimal.py --resume runs/ds2/checkpoint.pt --epochs 8      # continue a run
    python train_minimal.py --transcribe clip.wav --checkpoint runs/ds2/checkpoint.pt

The script reads top to bottom like the training loop it is: make data, build the model, then for each
epoch: SortaGrad batches -> forward -> CTC loss -> backward -> clip -> step; evaluate; checkpoint.
Everything it uses lives in implementation.py.
"""

import argparse
import json
import math
import os
import signal
import sys
import time

import numpy as np
import torch

import implementation as ds2


class OneLineErrorParser(argparse.ArgumentParser):
    """Bad flags get one line on stderr and exit status 2 (no usage dump, no traceback)."""

    def error(self, message):
        self.exit(2, f"error: {message} (see --help)\n")


def parse_args(argv=None):
    p = OneLineErrorParser(
        description="Train Deep Speech 2 (Amodei et al. 2015) on synthetic speech, or transcribe a WAV file.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=5, help="passes over the training set")
    g.add_argument("--batch-size", type=int, default=32, help="utterances per minibatch")
    g.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (cosine decay to 5%% of it)")
    g.add_argument(
        "--optimizer",
        choices=["adam", "sgd"],
        default="adam",
        help="adam, or the paper's SGD with Nesterov momentum (try --lr 0.05 with sgd)",
    )
    g.add_argument("--momentum", type=float, default=0.9, help="momentum for --optimizer sgd")
    g.add_argument("--clip", type=float, default=5.0, help="clip the gradient's global norm to this")
    g.add_argument(
        "--no-sortagrad", action="store_true", help="shuffle epoch 1 too (turns off §3.3's curriculum)"
    )
    g = p.add_argument_group("model (defaults: a 0.57M-parameter DS2 sized for a CPU)")
    g.add_argument("--conv-layers", type=int, default=2, choices=[1, 2, 3], help="2D conv layers (§3.5)")
    g.add_argument(
        "--conv-channels", type=int, default=8, help="channels per conv layer (the paper: 32/32/96)"
    )
    g.add_argument("--rnn-layers", type=int, default=2, help="recurrent layers (the paper: up to 7)")
    g.add_argument("--hidden", type=int, default=128, help="hidden units per recurrent layer")
    g.add_argument(
        "--rnn-type", choices=["gru", "rnn"], default="gru", help="GRU or simple RNN with clipped ReLU"
    )
    g.add_argument("--no-batchnorm", action="store_true", help="turn off (sequence-wise) BatchNorm (§3.2)")
    g.add_argument("--unidirectional", action="store_true", help="forward-only recurrent layers (§3.7)")
    g.add_argument(
        "--lookahead",
        type=int,
        default=0,
        help="future frames for the lookahead convolution (with --unidirectional)",
    )
    g = p.add_argument_group("data (synthetic speech, generated at start)")
    g.add_argument("--train-size", type=int, default=2000, help="training utterances")
    g.add_argument("--dev-size", type=int, default=200, help="utterances in each of dev-clean and dev-noisy")
    g.add_argument(
        "--noise",
        type=float,
        default=0.5,
        help="fraction of training utterances with added noise (5-30 dB SNR)",
    )
    g.add_argument(
        "--lm-sentences", type=int, default=20000, help="sentences of text to train the word LM on"
    )
    g = p.add_argument_group("decoding (§3.8)")
    g.add_argument("--beam-width", type=int, default=32, help="beam for the final beam-search evaluation")
    g.add_argument("--alpha", type=float, default=0.5, help="LM weight")
    g.add_argument("--beta", type=float, default=1.0, help="word insertion bonus")
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, default=0, help="seed for data, initialisation and batch order")
    g.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu or cuda")
    g.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = torch's default)")
    g.add_argument(
        "--workers", type=int, default=min(2, os.cpu_count() or 1), help="processes that synthesise the data"
    )
    g.add_argument("--out", default="runs/ds2", help="run folder for checkpoint.pt, metrics.json, curves.png")
    g.add_argument("--resume", metavar="CHECKPOINT", help="continue training from this checkpoint")
    g.add_argument(
        "--stop-after",
        type=int,
        default=0,
        metavar="STEPS",
        help="stop after this many optimizer steps, saving a resumable checkpoint as Ctrl-C does (0 = never)",
    )
    g = p.add_argument_group("transcribe instead of training")
    g.add_argument(
        "--transcribe", metavar="WAV", help="transcribe this audio file (any sample rate, mono or stereo)"
    )
    g.add_argument("--checkpoint", default="runs/ds2/checkpoint.pt", help="checkpoint to transcribe with")
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
    return args


def write_json(path, data):
    """Atomic: a reader sees the old file or the new one, never half of one."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def plot_curves(history, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-")
    ax_loss.set(xlabel="epoch", ylabel="CTC loss (nats / utterance)", title="training loss")
    for split, style in (("dev-clean", "-"), ("dev-noisy", "--")):
        ax_err.plot(epochs, [100 * h[split]["cer"] for h in history], "o" + style, label=f"{split} CER")
        ax_err.plot(epochs, [100 * h[split]["wer"] for h in history], "s" + style, label=f"{split} WER")
    ax_err.set(xlabel="epoch", ylabel="%", title="greedy error rates", yscale="log")
    ax_err.legend()
    fig.suptitle("Deep Speech 2 on synthetic speech (train_minimal.py)")
    fig.tight_layout()
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def transcribe_file(args):
    model, _ = ds2.load_checkpoint(args.checkpoint)
    waveform, sample_rate = ds2.load_audio(args.transcribe)
    lm_path = os.path.join(os.path.dirname(args.checkpoint), "lm.arpa")
    lm = ds2.NGramLM.from_arpa(lm_path) if os.path.isfile(lm_path) else None
    beam = args.beam_width if lm is not None else 0
    print(ds2.transcribe(model, waveform, sample_rate, lm, beam, args.alpha, args.beta))


def main(args):
    if args.transcribe:
        return transcribe_file(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = ds2.pick_device(args.device)
    os.makedirs(args.out, exist_ok=True)
    checkpoint_path = os.path.join(args.out, "checkpoint.pt")
    t_start = time.time()

    # ---- data: synthetic speech with disjoint speakers per split, and a text corpus for the LM
    splits = ds2.make_splits(
        args.train_size, args.dev_size, seed=args.seed, train_noise_fraction=args.noise, workers=args.workers
    )
    features = {name: [ds2.featurize(w) for w in split.waveforms] for name, split in splits.items()}
    texts = {name: split.texts for name, split in splits.items()}
    train_frames = [f.shape[-1] for f in features["train"]]
    audio_seconds = sum(w.numel() for w in splits["train"].waveforms) / ds2.SAMPLE_RATE
    del splits  # the waveforms are no longer needed: keep only the spectrograms
    rng = np.random.default_rng([args.seed, 99])
    lm = ds2.NGramLM.train([ds2.random_sentence(rng) for _ in range(args.lm_sentences)], order=3)
    lm.to_arpa(os.path.join(args.out, "lm.arpa"))
    print(
        f"data: {len(train_frames)} train utterances ({audio_seconds / 60:.1f} min of audio), "
        f"{args.dev_size} dev-clean, {args.dev_size} dev-noisy; LM on {args.lm_sentences} sentences "
        f"({time.time() - t_start:.1f} s)"
    )

    # ---- model and optimiser
    torch.manual_seed(args.seed)
    config = ds2.DS2Config(
        conv_channels=(args.conv_channels,) * args.conv_layers,
        rnn_type=args.rnn_type,
        rnn_layers=args.rnn_layers,
        rnn_hidden=args.hidden,
        bidirectional=not args.unidirectional,
        lookahead_context=args.lookahead,
        batch_norm=not args.no_batchnorm,
    )
    model = ds2.DeepSpeech2(config).to(device)
    if args.optimizer == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    else:  # the paper trains with SGD and Nesterov momentum
        optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum, nesterov=True)
    steps_per_epoch = math.ceil(len(train_frames) / args.batch_size)
    total_steps = args.epochs * steps_per_epoch

    def lr_at(step):  # cosine decay from lr to 5% of it over the whole run
        return args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step / total_steps, 1.0))))

    history, start_epoch, start_batch, step = [], 0, 0, 0
    partial_losses, partial_skipped = [], 0  # the interrupted epoch's losses so far, when resuming mid-epoch
    if args.resume:
        model, state = ds2.load_checkpoint(args.resume, model)
        optimizer.load_state_dict(state["optimizer"])
        history, start_epoch, start_batch, step = (
            state["history"],
            state["epoch"],
            state["batch"],
            state["step"],
        )
        partial_losses, partial_skipped = state["epoch_losses"], state["epoch_skipped"]
        print(f"resumed from {args.resume}: epoch {start_epoch + 1}, batch {start_batch}, step {step}")

    # ---- Ctrl-C saves a resumable checkpoint at the next batch boundary. Installed before the "model:"
    # line is printed, so whoever sees that line (a person, or tests/test_bad_inputs.py) may press Ctrl-C.
    interrupted = []
    signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    print(f"model: {model.num_parameters():,} parameters, {config}; device {device}")

    def save(epoch, batch, epoch_losses=(), epoch_skipped=0):
        ds2.save_checkpoint(
            checkpoint_path,
            model,
            optimizer=optimizer.state_dict(),
            epoch=epoch,
            batch=batch,
            step=step,
            history=history,
            epoch_losses=list(epoch_losses),
            epoch_skipped=epoch_skipped,
            args=vars(args),
        )

    # ---- train
    from tqdm import tqdm

    for epoch in range(start_epoch, args.epochs):
        t_epoch = time.time()
        model.train()
        batches = ds2.sortagrad_batches(
            train_frames, args.batch_size, epoch, args.seed, not args.no_sortagrad
        )
        losses, skipped = (partial_losses, partial_skipped) if epoch == start_epoch else ([], 0)
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{args.epochs}", leave=False, dynamic_ncols=True)
        for index, batch_indices in enumerate(bar):
            if epoch == start_epoch and index < start_batch:
                continue  # already trained on before the interruption
            if interrupted or (args.stop_after and step >= args.stop_after):
                save(epoch, index, losses, skipped)
                print(
                    f"{'interrupted' if interrupted else 'stopped'} at step {step}: saved {checkpoint_path}; "
                    f"continue with --resume {checkpoint_path} and the same flags"
                )
                return 130 if interrupted else 0
            batch = ds2.collate(
                [features["train"][i] for i in batch_indices], [texts["train"][i] for i in batch_indices]
            ).to(device)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            log_probs, out_lengths = model(batch.spectrograms, batch.lengths)  # (B, T', 29)
            loss = ds2.ctc_loss(log_probs, batch.targets, out_lengths, batch.target_lengths)
            if not torch.isfinite(loss):  # never step on a NaN/inf loss: count it and move on
                skipped += 1
                step += 1
                continue
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            optimizer.step()
            step += 1
            losses.append(loss.item())
            bar.set_postfix(loss=f"{loss.item():.2f}")
        if not losses:
            print(f"error: every batch of epoch {epoch + 1} gave a NaN/inf loss; lower --lr", file=sys.stderr)
            return 1

        # ---- evaluate on the held-out speakers (greedy decoding each epoch)
        record = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "skipped_batches": skipped}
        for split in ("dev-clean", "dev-noisy"):
            result = ds2.evaluate(model, features[split], texts[split])
            record[split] = {"cer": result["cer"], "wer": result["wer"]}
        record["seconds"] = time.time() - t_epoch
        history.append(record)
        print(
            f"epoch {epoch + 1:2d}  loss {record['train_loss']:7.3f}  "
            f"dev-clean CER {100 * record['dev-clean']['cer']:5.2f}% WER {100 * record['dev-clean']['wer']:5.2f}%  "
            f"dev-noisy CER {100 * record['dev-noisy']['cer']:5.2f}% WER {100 * record['dev-noisy']['wer']:5.2f}%  "
            f"{record['seconds']:5.1f} s"
        )
        save(epoch + 1, 0)
        write_json(os.path.join(args.out, "metrics.json"), {"history": history, "args": vars(args)})

    # ---- final evaluation: greedy and beam search with the word LM (§3.8)
    if interrupted:  # Ctrl-C during the last epoch's evaluation: that epoch is already saved
        print(
            f"interrupted after the last epoch: saved {checkpoint_path}; for the final evaluation run "
            f"again with --resume {checkpoint_path} and the same flags"
        )
        return 130
    signal.signal(signal.SIGINT, signal.default_int_handler)  # from here on Ctrl-C stops at once
    final = {}
    for split in ("dev-clean", "dev-noisy"):
        result = ds2.evaluate(
            model, features[split], texts[split], lm, args.beam_width, args.alpha, args.beta
        )
        final[split] = {k: v for k, v in result.items() if not k.endswith("hypotheses")}
        final[split]["examples"] = [
            {"reference": r, "greedy": g, "beam_lm": b}
            for r, g, b in zip(
                texts[split][:5], result["hypotheses"][:5], result["beam_hypotheses"][:5], strict=True
            )
        ]
    total_seconds = time.time() - t_start
    metrics = {"history": history, "final": final, "total_seconds": total_seconds, "args": vars(args)}
    write_json(os.path.join(args.out, "metrics.json"), metrics)
    plot_curves(history, os.path.join(args.out, "curves.png"))
    for split in ("dev-clean", "dev-noisy"):
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
    except (ValueError, FileNotFoundError) as error:  # bad input: one clear line, no traceback
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C outside the training loop: checkpoints on disk are whole (atomic)
        print("interrupted; any checkpoint already saved is intact (continue with --resume)", file=sys.stderr)
        sys.exit(130)
