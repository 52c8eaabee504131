"""Exercise 2: the CTC loss from scratch, and greedy decoding (DS2 §3.1; Graves et al. 2006).

DS2 §3.1: the network emits, at every output frame t, a distribution over 29 symbols (a-z, space,
apostrophe and a "blank"), and is trained with the CTC loss, ``-log p(y | x)``. CTC sums over every
frame-level path that *collapses* to the transcript y (merge repeated symbols, then delete blanks):

    "-hh-e-ll-ll-oo-"  ->  "-h-e-l-l-o-"  ->  "hello"         ("-" is the blank)

There are exponentially many such paths, but the forward (alpha) recursion sums them in O(T * S) time,
walking along the *blank-extended* label ``l' = (blank, y1, blank, y2, ..., yS, blank)``.

Parts:
    a. the blank-extended label l'
    b. the forward recursion: every alpha_t(s), in log space
    c. the loss -log p(y|x) from the last alphas (checked against F.ctc_loss)
    d. greedy (best-path) decoding: argmax per frame, collapse repeats, drop blanks

Shapes: T frames, C classes (29), S transcript length, L = 2S + 1 extended-label length.
Symbols: ``implementation.ALPHABET`` lists the 29 symbols in index order; ``BLANK`` = 0.

Check your work: ``python exercises/check.py 2`` (or run this file).
"""

from __future__ import annotations

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

# ---------------------------------------------------------------------------------------------------------
# Part a: the blank-extended label
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
# Part b: the forward (alpha) recursion in log space
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
    A product becomes a sum of logs; a sum of probabilities becomes ``torch.logsumexp``; probability 0
    is ``-inf`` (``torch.logsumexp`` of only ``-inf`` terms is ``-inf``, as it should be).

    Args:
        log_probs: ``(T, C)`` log-probabilities (each row a log_softmax).
        label: ``(S,)`` long, ``S >= 1``, no blanks.

    Returns:
        ``(T, 2S + 1)``: ``log alpha_t(s)``, ``-inf`` where no path can be.
    """
    extended = extend_with_blanks(label)  # (L,)
    frames, length = log_probs.shape[0], extended.shape[0]
    emit = log_probs[:, extended]  # (T, L): log y_t(l'_s) for every frame and position
    impossible = torch.tensor(float("-inf"), dtype=log_probs.dtype)
    # Which positions may be entered from s - 2: a label that differs from the label two back.
    can_skip = torch.zeros(length, dtype=torch.bool)  # (L,)
    can_skip[2:] = (extended[2:] != BLANK) & (extended[2:] != extended[:-2])

    # t = 0: a path starts with the first blank or the first label.
    first = torch.full((length,), float("-inf"), dtype=log_probs.dtype)
    first[:2] = emit[0, :2]
    rows = [first]
    for t in range(1, frames):
        previous = rows[-1]  # (L,) log alpha_{t-1}
        stay = previous
        advance = torch.cat([impossible[None], previous[:-1]])  # alpha_{t-1}(s - 1)
        skip = torch.cat([impossible.expand(2), previous[:-2]])  # alpha_{t-1}(s - 2) ...
        skip = skip.masked_fill(~can_skip, float("-inf"))  # ... only where the skip is allowed
        rows.append(torch.logsumexp(torch.stack([stay, advance, skip]), dim=0) + emit[t])
    # A list of rows, stacked at the end, rather than writing into one tensor: in-place writes would break
    # autograd (each row is computed from the one before).
    return torch.stack(rows)  # (T, L)


# ---------------------------------------------------------------------------------------------------------
# Part c: the loss
# ---------------------------------------------------------------------------------------------------------


def ctc_negative_log_likelihood(log_probs: Tensor, label: Tensor) -> Tensor:
    """The CTC loss of one utterance, ``-log p(y | x)``, from the alphas of its last frame.

    A complete path must have emitted every label by the last frame ``T - 1``, so it ends either on the
    last label or on the trailing blank of l'; p(y | x) is the sum of those two alphas.

    Args:
        log_probs: ``(T, C)`` log-probabilities.
        label: ``(S,)`` long, no blanks.

    Returns:
        A 0-dimensional tensor: ``-log p(y|x)`` in nats; ``inf`` when T frames are too few for the label
        (each label needs a frame, plus a blank between equal neighbours). Equals
        ``F.ctc_loss(log_probs[:, None], label[None], [T], [S], reduction="sum")``.
    """
    last = ctc_alphas(log_probs, label)[-1]  # (L,) log alpha_{T-1}
    return -torch.logsumexp(last[-2:], dim=0)  # ends on the last label or the final blank


# ---------------------------------------------------------------------------------------------------------
# Part d: greedy decoding
# ---------------------------------------------------------------------------------------------------------


def greedy_decode(log_probs: Tensor) -> str:
    """Best-path decoding: the most likely symbol at every frame, then CTC's collapse.

    Collapse is: merge runs of the same symbol into one, *then* delete the blanks. The order matters:
    "l l - l" is "ll" (the blank separates two l's), while "l l l" is "l".

    Args:
        log_probs: ``(T, C)`` log-probabilities of one utterance.

    Returns:
        The transcript as text (``implementation.decode_labels`` turns label ids into characters).
    """
    best = log_probs.argmax(dim=-1).tolist()  # (T,) most likely symbol per frame
    collapsed = [k for t, k in enumerate(best) if t == 0 or k != best[t - 1]]  # merge repeats first ...
    return ds2.decode_labels([k for k in collapsed if k != BLANK])  # ... then drop the blanks


if __name__ == "__main__":
    # Running this file checks it: the same as `python exercises/check.py 2` for this very file.
    sys.path.insert(0, str(ROOT / "exercises"))
    from check import check_file

    sys.exit(check_file(__file__))
