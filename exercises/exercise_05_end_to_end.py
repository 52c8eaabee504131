"""Exercise 5: Deep Speech 2 end to end: spectrogram -> model -> CTC -> training -> decoding -> CER (DS2 §3).

Exercises 1-4 built the pieces; this one wires them into the system of DS2 §3 and Figure 1, and trains
it. The model itself is ``implementation.DeepSpeech2`` (conv front-end, bidirectional GRUs with
sequence-wise BatchNorm, a softmax over the 29 symbols); the synthetic speech comes from
``implementation.make_splits``, whose train and dev splits are said by *different* speakers, so the
error rate at the end measures how well the model handles voices it has never heard.

    waveform --(a)--> spectrogram (F, T) --collate--> batch (B, F, T) --model--> log-probs (B, T', 29)
        --(b) CTC loss, backward, clip, step--> trained model --(c) SortaGrad epochs--> ...
        --(d) greedy decoding--> transcripts --> CER on held-out speakers --(e) all of it, for real

Parts:
    a. featurize a split: one normalised log spectrogram per utterance (§3.1)
    b. one training step: collate, forward, CTC loss (§3.1), backward, gradient clipping, optimizer step
    c. the training loop: a given number of steps over SortaGrad minibatches (§3.3)
    d. greedy decoding and the corpus character error rate on a held-out split (eval mode, §3.2)
    e. train for a minute and a half of CPU and transcribe speakers the model has never heard

Shapes: B batch, F frequency bins (161), T spectrogram frames, T' output frames (about T / 2: the conv
front-end strides by 2 in time), C classes (29; blank = 0), S transcript length.

Check your work: ``python exercises/check.py 5`` (or run this file). Part e trains a real model: give it
two minutes or so.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

# implementation.py lives in the repository root; find it so this file runs from any directory.
ROOT = next(path for path in Path(__file__).resolve().parents if (path / "implementation.py").is_file())
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
import implementation as ds2  # noqa: E402

# ---------------------------------------------------------------------------------------------------------
# Part a: the model's input, one utterance at a time
# ---------------------------------------------------------------------------------------------------------


def featurize_split(waveforms: Sequence[Tensor], sample_rate: int = ds2.SAMPLE_RATE) -> list[Tensor]:
    """Every utterance of a split -> its normalised log power spectrogram (DS2 §3.1; exercise 1).

    Each waveform is turned into a log power spectrogram (20 ms Hann windows, 10 ms stride) and then
    normalised *on its own*: zero mean and unit variance over its own frames, after flooring it 50 dB
    below its loudest bin (``implementation.normalize_spectrogram`` explains the floor). Normalising one
    utterance at a time means a spectrogram never depends on which other utterances it is later batched
    with, and training and evaluation see exactly the same kind of input. ``implementation.py`` has
    exercise 1's pieces in library form: ``log_spectrogram``, ``normalize_spectrogram`` and ``featurize``.

    Args:
        waveforms: ``(samples_i,)`` float waveforms of different lengths.
        sample_rate: Hz (16000 for the synthetic speech).

    Returns:
        One ``(F, T_i)`` tensor per waveform, in the same order, unpadded; ``F = 161`` at 16 kHz and
        ``T_i = 1 + (samples_i - 320) // 160``.
    """
    raise NotImplementedError("Exercise 5, part a: write featurize_split (featurize a split)")


# ---------------------------------------------------------------------------------------------------------
# Part b: one training step
# ---------------------------------------------------------------------------------------------------------


def training_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    spectrograms: Sequence[Tensor],
    texts: Sequence[str],
    clip_norm: float = 5.0,
) -> tuple[float, float]:
    """One optimizer step on one minibatch: the inner loop of DS2 training (§3.1).

    1. Put the model in training mode: its BatchNorm layers (§3.2) normalise with the minibatch's own
       statistics and update their running estimates (the evaluation in part d switches that off).
    2. Pad the utterances into a batch: ``implementation.collate(spectrograms, texts)`` gives
       ``spectrograms (B, F, T)``, ``lengths (B,)``, ``targets (B, S)`` and ``target_lengths (B,)``.
    3. Forward: ``model(spectrograms, lengths) -> (log_probs (B, T', 29), out_lengths (B,))``. The conv
       front-end strides in time, so the model emits fewer frames than it was given: CTC must be told
       ``out_lengths`` (``model.output_lengths(lengths)``), not the spectrogram's ``lengths``.
    4. The CTC loss (§3.1), ``-log p(y | x)`` averaged over the utterances: ``implementation.ctc_loss``
       (``F.ctc_loss`` underneath; exercise 2 wrote the same thing from scratch).
    5. Backward, after clearing the gradients the previous step left behind.
    6. Clip the gradient: if the norm of all gradients together exceeds ``clip_norm``, scale them all
       down to that norm. A single long or badly aligned utterance can produce a huge CTC gradient;
       clipping keeps one such minibatch from undoing the training so far.
    7. The optimizer step.

    Args:
        model: an ``implementation.DeepSpeech2`` (or anything with the same forward).
        optimizer: built over ``model.parameters()`` (Adam, SGD, ...); one optimizer for the whole run.
        spectrograms: ``B`` normalised spectrograms ``(F, T_i)`` (part a), unpadded.
        texts: their ``B`` transcripts.
        clip_norm: the largest allowed global norm of the gradient.

    Returns:
        ``(loss, grad_norm)`` as Python floats: the minibatch's CTC loss (nats per utterance) and the
        gradient's global norm *before* clipping (what ``torch.nn.utils.clip_grad_norm_`` returns).
        The check runs ``implementation.train_step`` (the library's step, used by every training script
        of the lesson) on a copy of the same model and minibatch: the updated weights must agree.
    """
    raise NotImplementedError("Exercise 5, part b: write training_step (one training step)")


# ---------------------------------------------------------------------------------------------------------
# Part c: the training loop, with SortaGrad
# ---------------------------------------------------------------------------------------------------------


def train(
    model: nn.Module,
    spectrograms: Sequence[Tensor],
    texts: Sequence[str],
    num_steps: int,
    batch_size: int = 32,
    learning_rate: float = 3e-3,
    clip_norm: float = 5.0,
    seed: int = 0,
) -> list[float]:
    """Train ``model`` for exactly ``num_steps`` optimizer steps, epoch after epoch of SortaGrad (§3.3).

    Make one Adam optimizer for the whole run (its moment estimates are part of its state). Then, for
    epoch 0, 1, 2, ...: ask for that epoch's minibatch plan (lists of utterance indices) from
    ``implementation.sortagrad_batches(lengths, batch_size, epoch, seed)`` (or your exercise 4), where
    ``lengths`` are the utterances' frame counts: epoch 0 goes from the shortest utterances to the
    longest, later epochs in a shuffled order. Run ``training_step`` (part b) on each minibatch, and stop
    as soon as ``num_steps`` steps are done, in the middle of an epoch if need be.

    The learning rate: large steps while the model is far from good, small ones for the finishing
    touches. Before step ``i`` (counted from 0) set it to ``implementation.learning_rate(i, num_steps,
    learning_rate)``, a half cosine from ``learning_rate`` at the first step down towards 5% of it,

        lr_i = learning_rate * (0.05 + 0.95 * (1 + cos(pi * i / num_steps)) / 2)

    (the schedule ``implementation.fit`` and ``train_minimal.py`` use), with ``for group in
    optimizer.param_groups: group["lr"] = lr_i``.

    Args:
        model: the model to train, in place.
        spectrograms: the training set's ``(F, T_i)`` spectrograms (part a).
        texts: their transcripts.
        num_steps: how many optimizer steps in all (a step budget, not a number of epochs).
        batch_size: utterances per minibatch.
        learning_rate: Adam's peak learning rate.
        clip_norm: passed on to ``training_step``.
        seed: for the shuffled epochs' order.

    Returns:
        The ``num_steps`` minibatch losses, in the order the steps were taken.
    """
    raise NotImplementedError("Exercise 5, part c: write train (training loop with SortaGrad)")


# ---------------------------------------------------------------------------------------------------------
# Part d: greedy decoding and the character error rate on held-out speech
# ---------------------------------------------------------------------------------------------------------


def evaluate_cer(
    model: nn.Module, spectrograms: Sequence[Tensor], texts: Sequence[str], batch_size: int = 32
) -> tuple[float, list[str]]:
    """Transcribe a held-out split with greedy (best-path) decoding and score it with the corpus CER.

    - Evaluation mode: BatchNorm (§3.2) must use its running estimates, so an utterance's transcript
      does not depend on what it is batched with; no gradients are needed either.
    - Batch the utterances (``implementation.pad_spectrograms`` pads a list into ``(B, F, T)`` and gives
      ``lengths (B,)``) and run the model: ``log_probs (B, T', 29)`` and ``out_lengths (B,)``.
    - Greedy decoding (exercise 2, part d; ``implementation.greedy_decode(log_probs, out_lengths)``):
      argmax per frame, merge repeats, drop blanks, using only each utterance's ``out_lengths[b]``
      frames: the frames past them are padding, not speech.
    - The corpus character error rate: total character edits (substitutions, insertions, deletions,
      spaces included) over the total number of reference characters, ``implementation.
      character_error_rate(references, hypotheses)``. Not the mean of per-utterance rates, which would
      let a short utterance count as much as a long one.

    Args:
        model: a trained (or untrained) model.
        spectrograms: the split's ``(F, T_i)`` spectrograms (part a).
        texts: their reference transcripts.
        batch_size: utterances per forward pass.

    Returns:
        ``(cer, hypotheses)``: the CER as a float (0.05 is 5%; it can exceed 1) and one transcript per
        utterance, in the order of ``spectrograms``.
    """
    raise NotImplementedError("Exercise 5, part d: write evaluate_cer (greedy decoding and corpus CER)")


# ---------------------------------------------------------------------------------------------------------
# Part e: all of it, for real
# ---------------------------------------------------------------------------------------------------------


def train_and_evaluate(
    train_split: ds2.SyntheticSplit, dev_split: ds2.SyntheticSplit, num_steps: int, seed: int = 0
) -> tuple[nn.Module, float]:
    """Train a Deep Speech 2 on one split for ``num_steps`` steps; its greedy CER on another.

    Featurize both splits (part a); seed PyTorch with ``seed`` and build the lesson's CPU-sized model,
    ``implementation.DeepSpeech2(implementation.DS2Config())`` (two conv layers, two bidirectional GRU
    layers of 128 units, sequence-wise BatchNorm: 573,589 trainable parameters, 0.57M); train it (part
    c) on the training split with the default hyperparameters; and measure the CER of greedy decoding
    (part d) on the dev split. The check hands you 800 training and 100 dev-clean utterances from
    ``implementation.make_splits`` and a budget of 120 steps (about a minute and a half of one CPU core).

    Args:
        train_split: utterances to train on (``.waveforms``, ``.texts``, ``.sample_rate``).
        dev_split: held-out utterances, said by speakers the training split never heard.
        num_steps: the optimizer steps to train for.
        seed: seeds the initial weights (``torch.manual_seed``) and the shuffled epochs.

    Returns:
        ``(model, cer)``: the trained model and its character error rate on ``dev_split``.
    """
    raise NotImplementedError(
        "Exercise 5, part e: write train_and_evaluate (train, then transcribe unheard speakers)"
    )


if __name__ == "__main__":
    # Running this file checks it: the same as `python exercises/check.py 5` for this very file.
    sys.path.insert(0, str(ROOT / "exercises"))
    from check import check_file

    sys.exit(check_file(__file__))
