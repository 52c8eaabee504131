"""Checks for exercise 2 (CTC from scratch, greedy decoding; DS2 §3.1).

Oracles: a plain-Python float64 alpha recursion written independently here (itself checked against
``F.ctc_loss`` in tests/test_exercises.py), ``F.ctc_loss`` for the loss, and hand-designed frame paths plus
``implementation.greedy_decode`` for decoding. Cases include repeated labels, one-label transcripts,
exactly as many frames as the transcript needs, and too few frames (loss = inf).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

import implementation as ds2
from checks.common import (
    CheckFailed,
    Part,
    call,
    expect_close,
    expect_equal,
    expect_scalar,
    expect_shape,
    expect_tensor,
    is_close,
)

EXERCISE = 2
FILENAME = "exercise_02_ctc_loss.py"
TITLE = "the CTC loss from scratch and greedy decoding (DS2 §3.1)"
MINUTES = 45

NEG_INF = float("-inf")


def _ids(text: str) -> torch.Tensor:
    return ds2.encode_text(text)


def _logsumexp(*values: float) -> float:
    top = max(values)
    if top == NEG_INF:
        return NEG_INF
    return top + math.log(sum(math.exp(value - top) for value in values))


def reference_alphas(
    log_probs: torch.Tensor, label: torch.Tensor, skip_equal_labels: bool = False
) -> torch.Tensor:
    """The CTC alpha recursion as plain Python loops over float64 numbers: ``(T, 2S + 1)`` log alphas.

    ``skip_equal_labels=True`` builds a *wrong* recursion (it may skip the blank between equal labels),
    used only to recognise that mistake in a learner's answer.
    """
    emissions = log_probs.double().tolist()
    extended = [ds2.BLANK]
    for symbol in label.tolist():
        extended += [symbol, ds2.BLANK]
    length = len(extended)
    alphas = [[NEG_INF] * length for _ in emissions]
    alphas[0][0] = emissions[0][extended[0]]
    if length > 1:
        alphas[0][1] = emissions[0][extended[1]]
    for t in range(1, len(emissions)):
        for s in range(length):
            terms = [alphas[t - 1][s]]
            if s >= 1:
                terms.append(alphas[t - 1][s - 1])
            if s >= 2 and extended[s] != ds2.BLANK and (skip_equal_labels or extended[s] != extended[s - 2]):
                terms.append(alphas[t - 1][s - 2])
            alphas[t][s] = _logsumexp(*terms) + emissions[t][extended[s]]
    return torch.tensor(alphas, dtype=torch.float64)


def _random_log_probs(frames: int, generator: torch.Generator) -> torch.Tensor:
    return F.log_softmax(torch.randn(frames, ds2.NUM_CLASSES, generator=generator) * 2.0, dim=-1)  # (T, C)


# (transcript, frames): repeated labels, one label, exactly the minimum number of frames, and long ones.
CASES = [
    ("hello", 30),
    ("ab", 2),  # exactly S frames: the only path is "ab"
    ("aa", 3),  # a double letter needs a blank between: exactly 3 frames
    ("aaa", 5),
    ("a", 1),
    ("z", 7),
    ("see you", 20),
    ("mississippi", 40),
    ("don't stop", 60),
]


def _minimum_frames(label: torch.Tensor) -> int:
    return label.shape[0] + int((label[1:] == label[:-1]).sum())


# ---------------------------------------------------------------------------------------------------------
# Part a
# ---------------------------------------------------------------------------------------------------------


def check_extended_label(module) -> None:
    generator = torch.Generator().manual_seed(10)
    labels = [_ids(text) for text in ("a", "cat", "hello", "aa", "don't")]
    labels += [torch.randint(1, ds2.NUM_CLASSES, (length,), generator=generator) for length in (1, 2, 13)]
    for label in labels:
        expected = [ds2.BLANK]
        for symbol in label.tolist():
            expected += [symbol, ds2.BLANK]
        what = f"extend_with_blanks({label.tolist()})"
        got = expect_tensor(what, call(module, "extend_with_blanks", label))
        if got.dtype != torch.long:
            raise CheckFailed(
                f"{what}: dtype should be torch.long (label ids are used as indices), got {got.dtype}"
            )
        extra = (
            "blanks go before every label and once at the end" if len(got.tolist()) != len(expected) else ""
        )
        expect_equal(what, got.tolist(), expected, extra)


# ---------------------------------------------------------------------------------------------------------
# Part b
# ---------------------------------------------------------------------------------------------------------


def check_alphas(module) -> None:
    generator = torch.Generator().manual_seed(11)
    for text, frames in CASES:
        label = _ids(text)
        log_probs = _random_log_probs(frames, generator)
        expected = reference_alphas(log_probs, label)  # (T, L)
        what = f"ctc_alphas for {text!r} over {frames} frames"
        got = expect_shape(what, call(module, "ctc_alphas", log_probs, label), expected.shape)
        got = got.detach().double()
        got = torch.where(got < -1e20, NEG_INF, got)  # a finite "minus infinity" such as -1e30 is fine
        if not is_close(got, expected, 1e-4, 1e-5):
            if is_close(got, reference_alphas(log_probs, label, skip_equal_labels=True), 1e-4, 1e-5):
                raise CheckFailed(
                    f"{what}: your recursion skips the blank between two equal labels; the s - 2 term is "
                    "allowed only when l'_s is a label different from l'_(s-2)"
                )
            if torch.isfinite(got[0, 2:]).any():
                raise CheckFailed(
                    f"{what}: at t = 0 only positions 0 (blank) and 1 (the first label) can be reached; got a finite alpha_0(s) for some s >= 2"
                )
            if torch.isnan(got).any():
                raise CheckFailed(
                    f"{what}: NaN in the alphas; do you subtract -inf from -inf somewhere? torch.logsumexp handles -inf terms"
                )
        expect_close(what, got, expected, atol=1e-4, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# Part c
# ---------------------------------------------------------------------------------------------------------


def check_loss(module) -> None:
    generator = torch.Generator().manual_seed(12)
    cases = [*CASES, ("aaa", 4), ("abc", 2)]  # the last two are too short: p(y|x) = 0, the loss is inf
    for _ in range(4):  # and random labels, with repeats likely in a 3-letter alphabet
        length = int(torch.randint(1, 9, (1,), generator=generator))
        letters = "".join("abc"[int(i)] for i in torch.randint(0, 3, (length,), generator=generator))
        cases.append((letters, length * 2 + 3))
    for text, frames in cases:
        label = _ids(text)
        log_probs = _random_log_probs(frames, generator)
        expected = float(
            F.ctc_loss(
                log_probs.double()[:, None, :],
                label[None],
                torch.tensor([frames]),
                torch.tensor([len(label)]),
                blank=ds2.BLANK,
                reduction="sum",
            )
        )
        what = f"ctc_negative_log_likelihood for {text!r} over {frames} frames"
        got = expect_scalar(what, call(module, "ctc_negative_log_likelihood", log_probs, label))
        if math.isinf(expected):
            if not got >= 1e20:
                need = _minimum_frames(label)
                fail_text = f"{what}: {frames} frames are too few ({need} needed), so no path exists, p(y|x) = 0 and the loss is inf; got {got:.6g}"
                raise CheckFailed(fail_text)
            continue
        if not abs(got - expected) <= 1e-3 + 1e-4 * abs(expected):
            alphas = reference_alphas(log_probs, label)[-1]
            hints = [
                (
                    -float(alphas[-1]),
                    "that is only the paths ending on the final blank; add those ending on the last label",
                ),
                (
                    -float(alphas[-2]),
                    "that is only the paths ending on the last label; add those ending on the final blank",
                ),
                (float(torch.logsumexp(alphas[-2:], 0)), "that is log p(y|x); the loss is its negative"),
            ]
            for value, message in hints:
                if abs(got - value) <= 1e-3 + 1e-4 * abs(value):
                    raise CheckFailed(f"{what}: {message}")
            raise CheckFailed(f"{what}: expected {expected:.6g} (F.ctc_loss), got {got:.6g}")


# ---------------------------------------------------------------------------------------------------------
# Part d
# ---------------------------------------------------------------------------------------------------------


def _path_log_probs(path: str, generator: torch.Generator) -> torch.Tensor:
    """Log-probs whose argmax at frame t is ``path[t]`` ("-" is the blank), plus some noise."""
    ids = torch.tensor([ds2.BLANK if char == "-" else ds2.ALPHABET.index(char) for char in path])
    logits = torch.randn(len(path), ds2.NUM_CLASSES, generator=generator)
    logits[torch.arange(len(path)), ids] = 8.0  # (T, C): the path's symbol wins every frame
    return F.log_softmax(logits, dim=-1)


def check_greedy(module) -> None:
    generator = torch.Generator().manual_seed(13)
    for path, expected in [
        ("-hh-e-ll-ll-oo-", "hello"),
        ("lll", "l"),  # repeats merge ...
        ("l-l", "ll"),  # ... unless a blank separates them
        ("ll--ll", "ll"),
        ("-----", ""),  # nothing but blanks: the empty transcript
        ("cat", "cat"),  # no blanks at all
        ("--a- -b--", "a b"),
        ("dd-oo-nn''tt", "don't"),
    ]:
        got = call(module, "greedy_decode", _path_log_probs(path, generator))
        what = f"greedy_decode of frames whose best symbols are {path!r} ('-' = blank)"
        blanks_first = "".join(
            c for i, c in enumerate(path.replace("-", "")) if i == 0 or c != path.replace("-", "")[i - 1]
        )
        if got == blanks_first != expected:
            raise CheckFailed(
                f"{what}: expected {expected!r}, got {got!r}: the blanks were dropped before merging repeats; merge first, then drop blanks"
            )
        expect_equal(what, got, expected)
    for trial in range(5):
        log_probs = F.log_softmax(torch.randn(50, ds2.NUM_CLASSES, generator=generator) * 1.5, dim=-1)
        log_probs[::3, ds2.BLANK] += 3.0  # plenty of blanks, as in a trained model's output
        expected = ds2.greedy_decode(log_probs)[0]
        expect_equal(
            f"greedy_decode of random log-probs #{trial}", call(module, "greedy_decode", log_probs), expected
        )


HINTS = {
    "a": (
        "The result has 2S + 1 entries: blank, y1, blank, y2, ..., yS, blank. Where do the labels sit?",
        "Start from a tensor full of BLANK (dtype torch.long) of length 2S + 1 and write the labels into "
        "every other position.",
        "extended = torch.full((2 * len(label) + 1,), BLANK, dtype=torch.long); extended[1::2] = label",
    ),
    "b": (
        "Fill the table row by row: row 0 from the two start positions, row t from row t - 1 only. In log "
        "space, a product is a sum and a sum of probabilities is a logsumexp.",
        "For each s, log alpha_t(s) = logsumexp of the allowed terms (alpha_{t-1}(s), alpha_{t-1}(s-1) if "
        "s >= 1, alpha_{t-1}(s-2) if s >= 2 and l'[s] != BLANK and l'[s] != l'[s-2]) + log_probs[t, l'[s]]. "
        "Use -inf for impossible entries.",
        "emit = log_probs[:, l']  # (T, L). Row 0: -inf everywhere except emit[0, :2]. Then for t >= 1, "
        "build three shifted copies of the previous row (shift by 0, 1, 2, padding with -inf; mask the "
        "shift-2 copy where the skip is not allowed) and take torch.logsumexp(torch.stack([...]), 0) + emit[t]. "
        "Collect rows in a list and torch.stack them.",
    ),
    "c": (
        "Which positions of l' may a complete path end on at the last frame?",
        "p(y|x) = alpha_{T-1}(L-1) + alpha_{T-1}(L-2): the final blank or the last label. You have log alphas.",
        "return -torch.logsumexp(ctc_alphas(log_probs, label)[-1, -2:], dim=0)",
    ),
    "d": (
        "Two steps after the argmax, in a specific order: what must happen before blanks are removed?",
        "Take the argmax per frame; keep a symbol only if it differs from the symbol at the previous frame; "
        "then drop the blanks; then implementation.decode_labels turns ids into text.",
        "best = log_probs.argmax(-1).tolist(); collapsed = [k for t, k in enumerate(best) if t == 0 or "
        "k != best[t - 1]]; return ds2.decode_labels([k for k in collapsed if k != BLANK])",
    ),
}

PARTS = [
    Part("a", "blank-extended label", ("extend_with_blanks",), check_extended_label, HINTS["a"]),
    Part("b", "alpha recursion in log space", ("ctc_alphas",), check_alphas, HINTS["b"]),
    Part(
        "c", "the loss, checked against F.ctc_loss", ("ctc_negative_log_likelihood",), check_loss, HINTS["c"]
    ),
    Part("d", "greedy decoding", ("greedy_decode",), check_greedy, HINTS["d"]),
]
