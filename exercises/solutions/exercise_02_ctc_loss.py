"""Exercise 2: the CTC loss from scratch, and greedy decoding (DS2 §3.1; Graves et al. 2006).

DS2 §3.1: the network emits, at every output frame t, a distribution over 29 symbols (a-z, space,
apostrophe and a "blank"), and is trained with the CTC loss, ``-log p(y | x)``. CTC sums over every
frame-level path that *collapses* to the transcript y (merge repeated symbols, then delete blanks):

    "-hh-e-ll-ll-oo-"  ->  "-h-e-l-l-o-"  ->  "hello"         ("-" is the blank)

Part a sums those paths the slow way, by listing every one of them: exact, and hopeless beyond a handful
of frames. The forward (alpha) recursion sums the same paths in O(T * S) time, walking along the
*blank-extended* label ``l' = (blank, y1, blank, y2, ..., yS, blank)``; training needs its gradient too.

Parts:
    a. warm-up: collapse a path; sum every alignment by brute force on a tiny case
    b. the blank-extended label l'
    c. the forward recursion: every alpha_t(s), in log space
    d. the loss -log p(y|x) from the last alphas (checked against F.ctc_loss)
    e. the loss of a padded batch, and its gradient (checked against F.ctc_loss through log_softmax)
    f. greedy (best-path) decoding: argmax per frame, collapse repeats, drop blanks

Shapes: T frames, C classes (29), S transcript length, L = 2S + 1 extended-label length, B batch.
Symbols: ``implementation.ALPHABET`` lists the 29 symbols in index order; ``BLANK`` = 0.

Check your work: ``python exercises/check.py 2`` (or run this file).
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import torch
from torch import Tensor

# implementation.py lives in the repository root; find it so this file runs from any directory.
ROOT = next(path for path in Path(__file__).resolve().parents if (path / "implementation.py").is_file())
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
import implementation as ds2  # noqa: E402

BLANK = ds2.BLANK  # 0
# log 0, as a number. -inf is the exact value, but torch.logsumexp over terms that are *all* -inf has a
# NaN gradient, and one NaN poisons every weight it reaches. -1e30 behaves like -inf in every sum that
# matters (exp(-1e30 - x) is 0) and keeps every gradient finite.
LOG_ZERO = -1e30

# ---------------------------------------------------------------------------------------------------------
# Part a: warm-up, by brute force
# ---------------------------------------------------------------------------------------------------------


def collapse(path: list[int]) -> list[int]:
    """CTC's many-to-one map from a frame-level path to a label sequence: merge repeats, then drop blanks.

    The order matters: ``[l, l, blank, l]`` is ``[l, l]`` (the blank separates two l's), while
    ``[l, l, l]`` is ``[l]``.

    Args:
        path: one symbol id per frame (``BLANK`` = 0 included).

    Returns:
        The label ids the path spells, as a list of ints (no blanks).
    """
    merged = [symbol for t, symbol in enumerate(path) if t == 0 or symbol != path[t - 1]]  # merge first ...
    return [symbol for symbol in merged if symbol != BLANK]  # ... then drop the blanks


def brute_force_log_likelihood(log_probs: Tensor, label: Tensor) -> Tensor:
    """``log p(y | x)`` by listing every path: the definition of CTC, with no cleverness at all.

        p(y | x) = sum over paths pi with collapse(pi) = y of  prod_t y_t(pi_t),    y_t(k) = exp(log_probs[t, k])

    A path that uses a symbol which is neither the blank nor one of y's labels can never collapse to y
    (collapsing removes only repeats and blanks), so list the paths over just those symbols:
    ``itertools.product(symbols, repeat=T)``. That is ``(distinct labels + 1) ** T`` paths: fine for the
    tiny cases the check uses (T <= 6), and the reason the alpha recursion exists.

    Args:
        log_probs: ``(T, C)`` log-probabilities, T small.
        label: ``(S,)`` long, ``S >= 1``, no blanks.

    Returns:
        A 0-dimensional tensor, ``log p(y|x)`` (natural log; ``-inf`` when no path collapses to y).
    """
    target = label.tolist()
    symbols = sorted({BLANK, *target})
    path_log_probs = [
        log_probs[torch.arange(log_probs.shape[0]), torch.tensor(path)].sum()  # log prod_t y_t(pi_t)
        for path in itertools.product(symbols, repeat=log_probs.shape[0])
        if collapse(list(path)) == target
    ]
    if not path_log_probs:
        return log_probs.new_tensor(float("-inf"))
    return torch.logsumexp(torch.stack(path_log_probs), dim=0)  # log of the sum of the paths' probabilities


# ---------------------------------------------------------------------------------------------------------
# Part b: the blank-extended label
# ---------------------------------------------------------------------------------------------------------


def extend_with_blanks(label: Tensor) -> Tensor:
    """The blank-extended label ``l' = (blank, y1, blank, y2, ..., blank, yS, blank)``.

    A blank before every label, and one at the end. Paths through l' may start at the first blank or the
    first label and end at the last label or the last blank, so blanks before, between and after the
    labels are all optional; and the blank between two *equal* labels is how CTC spells a double letter.

    Args:
        label: ``(S,)`` long, the transcript's label ids (``implementation.encode_text``); no blanks.

    Returns:
        ``(2S + 1,)`` long. E.g. label ids of "cat" -> ``[0, c, 0, a, 0, t, 0]``.
    """
    extended = torch.full((2 * label.shape[0] + 1,), BLANK, dtype=torch.long)  # (L,) all blanks ...
    extended[1::2] = label  # ... with the labels at the odd positions 1, 3, ..., 2S - 1
    return extended


# ---------------------------------------------------------------------------------------------------------
# Part c: the forward (alpha) recursion in log space
# ---------------------------------------------------------------------------------------------------------


def ctc_alphas(log_probs: Tensor, label: Tensor) -> Tensor:
    """All forward variables of CTC, ``log alpha_t(s)``, for one utterance.

    ``alpha_t(s)`` is the total probability of all paths over frames ``0..t`` that end at position ``s``
    of the extended label l' having emitted ``l'_0..l'_s`` in order (Graves et al. 2006, §4.1). Writing
    ``y_t(k) = exp(log_probs[t, k])``:

        alpha_0(0) = y_0(blank),   alpha_0(1) = y_0(l'_1),   alpha_0(s) = 0 for s >= 2
        alpha_t(s) = y_t(l'_s) * ( alpha_{t-1}(s) + alpha_{t-1}(s-1) + [skip allowed] alpha_{t-1}(s-2) )

    A path at s either stays (repeats l'_s), advances by one, or skips the blank in between, jumping from
    s - 2. The skip is allowed only when ``l'_s`` is a label (not a blank) and differs from
    ``l'_{s-2}``: skipping the blank between two equal labels would merge them into one.
    Terms with ``s - 1 < 0`` or ``s - 2 < 0`` do not exist (probability 0).

    Work in log space: products of many probabilities underflow float32 within a few hundred frames.
    A product becomes a sum of logs; a sum of probabilities becomes ``torch.logsumexp`` (never
    ``log(sum(exp(...)))``, which underflows just the same). Probability 0 is ``log 0``: use a large
    negative *finite* number such as ``LOG_ZERO = -1e30`` rather than ``-inf``. The values come out the
    same, but ``torch.logsumexp`` over terms that are all ``-inf`` has a NaN gradient, and part e
    differentiates through this recursion.

    Args:
        log_probs: ``(T, C)`` log-probabilities (each row a log_softmax).
        label: ``(S,)`` long, ``S >= 1``, no blanks.

    Returns:
        ``(T, 2S + 1)``: ``log alpha_t(s)``; ``LOG_ZERO`` (or anything below -1e20, or ``-inf``) where no
        path can be. Differentiable with respect to ``log_probs``.
    """
    extended = extend_with_blanks(label)  # (L,)
    frames, length = log_probs.shape[0], extended.shape[0]
    emit = log_probs[:, extended]  # (T, L): log y_t(l'_s) for every frame and position
    impossible = log_probs.new_full((2,), LOG_ZERO)  # log 0 for the positions left of s = 0
    # Which positions may be entered from s - 2: a label that differs from the label two back.
    can_skip = torch.zeros(length, dtype=torch.bool)  # (L,)
    can_skip[2:] = (extended[2:] != BLANK) & (extended[2:] != extended[:-2])

    # t = 0: a path starts with the first blank or the first label.
    first = torch.cat([emit[0, :2], log_probs.new_full((length - 2,), LOG_ZERO)])  # (L,)
    rows = [first]
    for t in range(1, frames):
        previous = rows[-1]  # (L,) log alpha_{t-1}
        stay = previous
        advance = torch.cat([impossible[:1], previous[:-1]])  # alpha_{t-1}(s - 1)
        skip = torch.cat([impossible, previous[:-2]])  # alpha_{t-1}(s - 2) ...
        skip = skip.masked_fill(~can_skip, LOG_ZERO)  # ... only where the skip is allowed
        rows.append(torch.logsumexp(torch.stack([stay, advance, skip]), dim=0) + emit[t])  # (L,)
    # A list of rows, stacked at the end: each row is a new tensor, so nothing autograd saved for the
    # backward pass is ever overwritten (each row is computed from the one before).
    return torch.stack(rows)  # (T, L)


# ---------------------------------------------------------------------------------------------------------
# Part d: the loss
# ---------------------------------------------------------------------------------------------------------


def ctc_negative_log_likelihood(log_probs: Tensor, label: Tensor) -> Tensor:
    """The CTC loss of one utterance, ``-log p(y | x)``, from the alphas of its last frame (part c).

    A complete path must have emitted every label by the last frame ``T - 1``, so it ends either on the
    last label or on the trailing blank of l'; p(y | x) is the sum of those two alphas.

    Args:
        log_probs: ``(T, C)`` log-probabilities.
        label: ``(S,)`` long, no blanks.

    Returns:
        A 0-dimensional tensor: ``-log p(y|x)`` in nats, differentiable; a huge number (about 1e30, or
        ``inf``) when T frames are too few for the label (each label needs a frame, plus a blank between
        equal neighbours). Equals ``F.ctc_loss(log_probs[:, None], label[None], [T], [S], reduction="sum")``.
    """
    last = ctc_alphas(log_probs, label)[-1]  # (L,) log alpha_{T-1}
    return -torch.logsumexp(last[-2:], dim=0)  # ends on the last label or the final blank


# ---------------------------------------------------------------------------------------------------------
# Part e: a padded batch, and the gradient
# ---------------------------------------------------------------------------------------------------------


def batch_ctc_loss(
    log_probs: Tensor, targets: Tensor, input_lengths: Tensor, target_lengths: Tensor
) -> Tensor:
    """The training loss of a padded minibatch: the mean over utterances of ``-log p(y_b | x_b)``.

    Utterance b owns frames ``0 .. input_lengths[b] - 1`` of ``log_probs[b]`` and labels
    ``0 .. target_lengths[b] - 1`` of ``targets[b]``; everything after them is padding and may hold
    anything. Take each utterance's own slices, its loss from part d, and the mean over the batch (not
    divided by the transcript lengths: that is ``implementation.ctc_loss``'s reduction, nats per
    utterance). The check differentiates this loss: through ``log_softmax`` its gradient must equal
    ``F.ctc_loss``'s, with no NaN anywhere and exactly 0 on the padded frames.

    Args:
        log_probs: ``(B, T, C)`` log-probabilities, batch-first, padded along time.
        targets: ``(B, S_max)`` long label ids, padded.
        input_lengths: ``(B,)`` long, valid frames per utterance.
        target_lengths: ``(B,)`` long, labels per utterance (each >= 1).

    Returns:
        A 0-dimensional tensor, differentiable with respect to ``log_probs``.
    """
    losses = [
        ctc_negative_log_likelihood(log_probs[b, : input_lengths[b]], targets[b, : target_lengths[b]])
        for b in range(log_probs.shape[0])  # each utterance on its own frames and labels, no padding
    ]
    return torch.stack(losses).mean()  # (B,) -> the mean over the batch


# ---------------------------------------------------------------------------------------------------------
# Part f: greedy decoding
# ---------------------------------------------------------------------------------------------------------


def greedy_decode(log_probs: Tensor) -> str:
    """Best-path decoding: the most likely symbol at every frame, then CTC's collapse (part a).

    Collapse is: merge runs of the same symbol into one, *then* delete the blanks. The order matters:
    "l l - l" is "ll" (the blank separates two l's), while "l l l" is "l".

    Args:
        log_probs: ``(T, C)`` log-probabilities of one utterance.

    Returns:
        The transcript as text (``implementation.decode_labels`` turns label ids into characters).
    """
    best = log_probs.argmax(dim=-1).tolist()  # (T,) most likely symbol per frame
    return ds2.decode_labels(collapse(best))  # merge repeats, then drop blanks


if __name__ == "__main__":
    # Running this file checks it: the same as `python exercises/check.py 2` for this very file.
    sys.path.insert(0, str(ROOT / "exercises"))
    from check import check_file

    sys.exit(check_file(__file__))
