"""Checks for exercise 2 (CTC from scratch, greedy decoding; DS2 §3.1).

Oracles: ``F.ctc_loss`` for every likelihood (the brute-force sum of part a, the loss of part d, the batch
loss of part e) and, through ``log_softmax``, for every gradient; a plain-Python float64 alpha recursion
written independently here (itself checked against ``F.ctc_loss`` in tests/test_exercises.py) for the
alphas; hand-designed frame paths plus ``implementation.greedy_decode`` for decoding. Cases include
repeated labels, one-label transcripts, exactly as many frames as the transcript needs, too few frames
(loss = inf), long transcripts, a confident network's peaked log-probabilities (down to -100) and padded
batches with garbage in the padding. Where a wrong answer matches a common mistake (a Viterbi max, no skip
transition, an underflowing log(sum(exp)), log-probabilities clamped "for stability", NaN gradients from
-inf, a detached recursion, a loss that does not come from the alphas), the message names it.
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
MINUTES = 60

NEG_INF = float("-inf")


def _ids(text: str) -> torch.Tensor:
    return ds2.encode_text(text)


def _logsumexp(*values: float) -> float:
    top = max(values)
    if top == NEG_INF:
        return NEG_INF
    return top + math.log(sum(math.exp(value - top) for value in values))


def reference_alphas(
    log_probs: torch.Tensor,
    label: torch.Tensor,
    skip_equal_labels: bool = False,
    combine: str = "sum",
    skip: bool = True,
) -> torch.Tensor:
    """The CTC alpha recursion as plain Python loops over float64 numbers: ``(T, 2S + 1)`` log alphas.

    The defaults give the right recursion. The other settings build *wrong* ones, used only to recognise
    a mistake in a learner's answer: ``skip_equal_labels=True`` may skip the blank between equal labels,
    ``combine="max"`` is the Viterbi recursion (the best path instead of the sum of all paths), and
    ``skip=False`` never skips a blank.
    """
    emissions = log_probs.double().tolist()
    extended = [ds2.BLANK]
    for symbol in label.tolist():
        extended += [symbol, ds2.BLANK]
    length = len(extended)
    add = _logsumexp if combine == "sum" else (lambda *values: max(values))
    alphas = [[NEG_INF] * length for _ in emissions]
    alphas[0][0] = emissions[0][extended[0]]
    if length > 1:
        alphas[0][1] = emissions[0][extended[1]]
    for t in range(1, len(emissions)):
        for s in range(length):
            terms = [alphas[t - 1][s]]
            if s >= 1:
                terms.append(alphas[t - 1][s - 1])
            if (
                skip
                and s >= 2
                and extended[s] != ds2.BLANK
                and (skip_equal_labels or extended[s] != extended[s - 2])
            ):
                terms.append(alphas[t - 1][s - 2])
            alphas[t][s] = add(*terms) + emissions[t][extended[s]]
    return torch.tensor(alphas, dtype=torch.float64)


def _random_log_probs(frames: int, generator: torch.Generator) -> torch.Tensor:
    return F.log_softmax(torch.randn(frames, ds2.NUM_CLASSES, generator=generator) * 2.0, dim=-1)  # (T, C)


def _oracle_nll(log_probs: torch.Tensor, label: torch.Tensor) -> float:
    """``-log p(y|x)`` from ``F.ctc_loss`` in float64 (inf when no path exists)."""
    return float(
        F.ctc_loss(
            log_probs.detach().double()[:, None, :],
            label[None],
            torch.tensor([log_probs.shape[0]]),
            torch.tensor([len(label)]),
            blank=ds2.BLANK,
            reduction="sum",
        )
    )


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


def _peaked_log_probs() -> torch.Tensor:
    """A confident network's output for the peaked case: ``(12, C)``, log-probabilities down to about -100.

    ``_random_log_probs`` never goes below about -14; a trained network's does, and a loss that clamps the
    log-probabilities "for stability" (at -30, say) is right on the first and wrong here (254.5 for 301.5).
    """
    generator = torch.Generator().manual_seed(0)
    return F.log_softmax(torch.randn(12, ds2.NUM_CLASSES, generator=generator) * 20.0, dim=-1)  # (T, C)


PEAKED = "hello"  # over the 12 frames of _peaked_log_probs
# Floors a learner might clamp the log-probabilities at, recognised in the peaked case's message.
_CLAMP_FLOORS = (-5.0, -10.0, -15.0, -20.0, -25.0, -30.0, -40.0, -50.0, -60.0, -70.0, -80.0, -90.0, -100.0)


def _clamp_message(matches) -> str | None:
    """The peaked case's message if ``matches(log_probs)`` holds for log-probabilities clamped at some floor."""
    log_probs = _peaked_log_probs()
    for floor in _CLAMP_FLOORS:
        if matches(log_probs.clamp(min=floor)):
            return (
                f"the log-probabilities were clamped at {floor:g}: a confident network's go down to "
                f"{float(log_probs.min()):.4g}, and they must enter the recursion unchanged (torch.logsumexp "
                "is stable on its own; LOG_ZERO is for the positions no path reaches, not for the emissions)"
            )
    return None


# ---------------------------------------------------------------------------------------------------------
# Part a
# ---------------------------------------------------------------------------------------------------------


def _as_int_list(what: str, got) -> list[int]:
    if isinstance(got, torch.Tensor) and got.dim() == 1 and not got.is_floating_point():
        got = got.tolist()
    if not isinstance(got, list | tuple) or not all(
        isinstance(symbol, int) and not isinstance(symbol, bool) for symbol in got
    ):
        raise CheckFailed(f"{what}: expected a list of ints, got {type(got).__name__} {got!r}")
    return list(got)


def check_brute_force(module) -> None:
    a, b, c, ell = (ds2.ALPHABET.index(char) for char in "abcl")
    for path, expected in [
        ([ell, ell, 0, ell], [ell, ell]),  # a blank separates two l's ...
        ([ell, ell, ell], [ell]),  # ... repeats without one merge
        ([0, a, 0, 0, b, b], [a, b]),
        ([a, b, a], [a, b, a]),
        ([0, 0, 0], []),  # only blanks: the empty labelling
        ([c], [c]),
    ]:
        what = f"collapse({path})"
        got = _as_int_list(what, call(module, "collapse", list(path)))
        dropped_first = [symbol for symbol in path if symbol != ds2.BLANK]
        dropped_first = [s for i, s in enumerate(dropped_first) if i == 0 or s != dropped_first[i - 1]]
        if got == dropped_first != expected:
            raise CheckFailed(
                f"{what}: expected {expected}, got {got}: the blanks were dropped before merging repeats; "
                "merge first, then drop blanks"
            )
        expect_equal(what, got, expected)
    generator = torch.Generator().manual_seed(14)
    # Tiny cases: at most 4 symbols (blank + 3 labels) over at most 6 frames, 4096 paths.
    for text, frames in [
        ("ab", 4),
        ("aa", 3),
        ("aa", 5),
        ("a", 1),
        ("a", 4),
        ("aba", 5),
        ("abc", 5),
        ("abb", 6),
        ("ab", 1),
    ]:
        label = _ids(text)
        log_probs = F.log_softmax(torch.randn(frames, ds2.NUM_CLASSES, generator=generator), dim=-1)
        log_probs[:, label] += 2.0  # most of the mass on the transcript's symbols ...
        log_probs = F.log_softmax(log_probs, dim=-1)  # ... still a distribution per frame
        expected = -_oracle_nll(log_probs, label)  # log p(y|x)
        what = f"brute_force_log_likelihood for {text!r} over {frames} frames"
        got = expect_scalar(what, call(module, "brute_force_log_likelihood", log_probs, label))
        if math.isinf(expected):
            if not got <= -1e20:
                raise CheckFailed(
                    f"{what}: {frames} frames are too few ({_minimum_frames(label)} needed): no path collapses "
                    f"to the label, p(y|x) = 0 and its log is -inf; got {got:.6g}"
                )
            continue
        if abs(got - expected) <= 1e-4 + 1e-4 * abs(expected):
            continue
        for value, message in [
            (math.exp(expected), "that is p(y|x); return its log"),
            (-expected, "that is -log p(y|x), the loss; this function returns log p(y|x)"),
            (
                float(reference_alphas(log_probs, label, combine="max")[-1, -2:].max()),
                "that is the single most probable path (a max); p(y|x) is the sum over every path that "
                "collapses to y",
            ),
        ]:
            if abs(got - value) <= 1e-4 + 1e-4 * abs(value):
                raise CheckFailed(f"{what}: {message}")
        raise CheckFailed(
            f"{what}: expected {expected:.6g} (log p(y|x) from F.ctc_loss), got {got:.6g}; sum exp(path "
            "log-probability) over the paths whose collapse is exactly the label"
        )


# ---------------------------------------------------------------------------------------------------------
# Part b
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
# Part c
# ---------------------------------------------------------------------------------------------------------

# Below this, exp() of a float32 is 0 or a denormal: where a log(sum(exp(...))) starts to break.
_UNDERFLOW = -80.0


def _diagnose_alphas(what: str, got: torch.Tensor, expected: torch.Tensor, log_probs, label) -> None:
    """Raise CheckFailed naming the mistake, if ``got`` matches a known wrong recursion."""
    if torch.isnan(got).any():
        raise CheckFailed(
            f"{what}: NaN in the alphas; do you subtract -inf from -inf somewhere? torch.logsumexp handles "
            "-inf terms (and a large negative number such as -1e30 avoids them altogether)"
        )
    if torch.isfinite(got[0, 2:]).any():
        raise CheckFailed(
            f"{what}: at t = 0 only positions 0 (blank) and 1 (the first label) can be reached; got a "
            "finite alpha_0(s) for some s >= 2"
        )
    mistakes = [
        (
            dict(skip_equal_labels=True),
            "your recursion skips the blank between two equal labels; the s - 2 term is allowed only when "
            "l'_s is a label different from l'_(s-2)",
        ),
        (
            dict(combine="max"),
            "that is the Viterbi recursion: a max keeps only the best path into each position, but "
            "alpha_t(s) is the *sum* over all of them: combine the terms with torch.logsumexp, not max",
        ),
        (
            dict(skip=False),
            "your recursion never skips a blank: add alpha_(t-1)(s-2) when l'_s is a label different "
            "from l'_(s-2) (a path may go from one label straight to the next, with no blank between)",
        ),
    ]
    for settings, message in mistakes:
        if is_close(got, reference_alphas(log_probs, label, **settings), 1e-4, 1e-5):
            raise CheckFailed(f"{what}: {message}")
    deep = torch.isfinite(expected) & (expected < _UNDERFLOW)  # where float32 exp() underflows
    agree = (got - expected).abs() <= 1e-4 + 1e-5 * expected.abs()
    agree |= torch.isinf(expected) & torch.isinf(got)
    if deep.any() and (agree | deep).all() and not agree[deep].all():
        index = tuple(int(i) for i in (deep & ~agree).nonzero()[0])
        raise CheckFailed(
            f"{what}: right while the alphas are large, wrong once they fall below about {_UNDERFLOW:g} "
            f"(at {list(index)} expected {float(expected[index]):.6g}, got {float(got[index]):.6g}): that is "
            "log(sum(exp(...))) underflowing, as exp() of a float32 below about -104 is 0 and its log "
            "-inf. torch.logsumexp subtracts the largest term before exp(), so nothing underflows"
        )


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
            _diagnose_alphas(what, got, expected, log_probs, label)
        expect_close(what, got, expected, atol=1e-4, rtol=1e-5)
    # A confident network: log-probabilities far below the random cases' (a clamp at -30 shows here).
    label, log_probs = _ids(PEAKED), _peaked_log_probs()
    expected = reference_alphas(log_probs, label)  # (T, L)
    what = f"ctc_alphas for {PEAKED!r} over 12 peaked frames (log-probabilities down to {float(log_probs.min()):.4g})"
    got = expect_shape(what, call(module, "ctc_alphas", log_probs, label), expected.shape).detach().double()
    got = torch.where(got < -1e20, NEG_INF, got)
    if not is_close(got, expected, 1e-4, 1e-5):
        message = _clamp_message(lambda clamped: is_close(got, reference_alphas(clamped, label), 1e-4, 1e-5))
        if message:
            raise CheckFailed(f"{what}: {message}")
        _diagnose_alphas(what, got, expected, log_probs, label)
    expect_close(what, got, expected, atol=1e-4, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# Part d
# ---------------------------------------------------------------------------------------------------------


def _check_loss_uses_alphas(module) -> None:
    """The loss must come from ``ctc_alphas``: shift every alpha by 1.5 and the loss must fall by 1.5.

    This is what tells a loss computed from the learner's alphas from one computed any other way
    (``F.ctc_loss``, ``implementation.ctc_loss_from_scratch``), which agree with it in value.
    """
    generator = torch.Generator().manual_seed(15)
    label = _ids("hello")
    log_probs = _random_log_probs(25, generator)
    honest = expect_scalar(
        "ctc_negative_log_likelihood", call(module, "ctc_negative_log_likelihood", log_probs, label)
    )
    original = module.ctc_alphas
    module.ctc_alphas = lambda log_probs_, label_: original(log_probs_, label_) + 1.5
    try:
        shifted = call(module, "ctc_negative_log_likelihood", log_probs, label)
    finally:
        module.ctc_alphas = original
    shifted = expect_scalar("ctc_negative_log_likelihood", shifted)
    if abs(shifted - (honest - 1.5)) > 1e-3:
        raise CheckFailed(
            "ctc_negative_log_likelihood must compute the loss from ctc_alphas (part c): with ctc_alphas "
            f"replaced by one whose every entry is 1.5 larger, the loss should go from {honest:.6g} to "
            f"{honest - 1.5:.6g}, but it gave {shifted:.6g}"
            + (
                " (it did not change: is the loss computed some other way, F.ctc_loss say? That is the "
                "check's oracle, not the exercise)"
                if abs(shifted - honest) <= 1e-3
                else ""
            )
        )


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
        expected = _oracle_nll(log_probs, label)
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
    label, log_probs = _ids(PEAKED), _peaked_log_probs()
    expected = _oracle_nll(log_probs, label)
    what = f"ctc_negative_log_likelihood for {PEAKED!r} over 12 peaked frames (log-probabilities down to {float(log_probs.min()):.4g})"
    got = expect_scalar(what, call(module, "ctc_negative_log_likelihood", log_probs, label))
    if not abs(got - expected) <= 1e-3 + 1e-4 * abs(expected):
        message = _clamp_message(
            lambda clamped: abs(got - _oracle_nll(clamped, label)) <= 1e-3 + 1e-4 * abs(expected)
        )
        raise CheckFailed(
            f"{what}: expected {expected:.6g} (F.ctc_loss), got {got:.6g}"
            + (f": {message}" if message else "")
        )
    _check_loss_uses_alphas(module)


# ---------------------------------------------------------------------------------------------------------
# Part e
# ---------------------------------------------------------------------------------------------------------

# Long transcripts and repeated letters: where a NaN gradient or an underflow shows.
GRADIENT_CASES = [
    ("hello", 30),
    ("aa", 3),
    ("aaa", 6),
    ("mississippi", 40),
    ("don't stop", 60),
    ("the quick brown fox jumps over the lazy dog", 100),
]

_NAN_ADVICE = (
    "torch.logsumexp over terms that are *all* -inf (a position no path has reached yet) has a NaN "
    "gradient, and one NaN spreads to everything. In ctc_alphas (part c) use a large negative finite "
    "number for log 0, such as LOG_ZERO = -1e30, instead of -inf"
)


def _backward(what: str, loss: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """d loss / d logits, with the usual ways of breaking autograd named."""
    if not loss.requires_grad:
        raise CheckFailed(
            f"{what}: the loss is not differentiable (it does not require grad): the recursion was detached "
            "somewhere: .detach(), .item(), torch.no_grad(), or a tensor rebuilt from Python numbers"
        )
    try:
        (gradient,) = torch.autograd.grad(loss, logits, allow_unused=True)
    except RuntimeError as error:
        raise CheckFailed(
            f"{what}: backward failed: {str(error).splitlines()[0][:200]} (changing in place a tensor that "
            "autograd saved for the backward pass does this; collecting the rows in a list and torch.stack-ing "
            "them never overwrites anything)"
        ) from None
    if gradient is None:
        raise CheckFailed(f"{what}: no gradient reached the log-probabilities; was something detached?")
    return gradient


def _check_gradient(what: str, gradient: torch.Tensor, expected: torch.Tensor, loss: float) -> None:
    nans = int(torch.isnan(gradient).sum())
    if nans:
        detail = f"{nans} of {gradient.numel()} gradient entries are NaN"
        raise CheckFailed(
            f"{what}: {detail}"
            + (" though the loss is finite" if math.isfinite(loss) else "")
            + f": {_NAN_ADVICE}"
        )
    if not torch.isfinite(gradient).all():
        raise CheckFailed(f"{what}: infinite entries in the gradient; {_NAN_ADVICE}")
    if not gradient.abs().max() > 0:
        raise CheckFailed(f"{what}: the gradient is all zeros; was the recursion detached somewhere?")
    expect_close(
        f"{what}: gradient with respect to the logits (vs F.ctc_loss through log_softmax)",
        gradient,
        expected,
        atol=2e-4,
        rtol=1e-3,
    )


def _oracle_gradient(
    logits: torch.Tensor, targets, input_lengths, target_lengths
) -> tuple[float, torch.Tensor]:
    """The mean CTC loss of a batch ``(B, T, C)`` of logits and its gradient, in float64, by F.ctc_loss."""
    logits = logits.detach().double().requires_grad_(True)
    losses = F.ctc_loss(
        F.log_softmax(logits, dim=-1).transpose(0, 1),
        targets,
        input_lengths,
        target_lengths,
        blank=ds2.BLANK,
        reduction="none",
    )  # (B,)
    loss = losses.mean()
    loss.backward()
    return float(loss.detach()), logits.grad


def _batch(generator: torch.Generator):
    """Three utterances padded to 60 frames, garbage in the padding of the logits and of the targets."""
    texts, frames = ["hello", "aa", "don't stop"], [30, 3, 60]
    logits = torch.randn(3, 60, ds2.NUM_CLASSES, generator=generator) * 2.0
    for b, length in enumerate(frames):
        logits[b, length:] = 50.0 * torch.randn(60 - length, ds2.NUM_CLASSES, generator=generator)
    labels = [_ids(text) for text in texts]
    targets = torch.randint(1, ds2.NUM_CLASSES, (3, max(len(label) for label in labels)), generator=generator)
    for b, label in enumerate(labels):
        targets[b, : len(label)] = label  # garbage label ids after each transcript
    return logits, targets, torch.tensor(frames), torch.tensor([len(label) for label in labels])


def _check_batch_value(what: str, got: float, logits, targets, input_lengths, target_lengths) -> None:
    expected, _ = _oracle_gradient(logits, targets, input_lengths, target_lengths)
    if abs(got - expected) <= 1e-3 + 1e-4 * abs(expected):
        return
    log_probs = F.log_softmax(logits.detach().double(), dim=-1).transpose(0, 1)
    per_utterance = F.ctc_loss(log_probs, targets, input_lengths, target_lengths, reduction="none")
    frames = torch.full_like(input_lengths, logits.shape[1])
    variants = [
        (
            float(per_utterance.sum()),
            "that is the sum over the batch; the loss is the mean over its utterances",
        ),
        (
            float((per_utterance / target_lengths).mean()),
            "each loss was divided by its transcript length (F.ctc_loss's reduction='mean'); take the plain "
            "mean of -log p(y|x) over the utterances",
        ),
        (
            float(F.ctc_loss(log_probs, targets, frames, target_lengths, reduction="none").mean()),
            "the padded frames entered the loss: use only log_probs[b, :input_lengths[b]]",
        ),
    ]
    for value, message in variants:
        if abs(got - value) <= 1e-3 + 1e-4 * abs(value):
            raise CheckFailed(f"{what}: {message}")
    raise CheckFailed(
        f"{what}: expected {expected:.6g} (the mean of F.ctc_loss over the utterances), got {got:.6g}; each "
        "utterance must use only its own frames (input_lengths) and labels (target_lengths)"
    )


def check_gradients(module) -> None:
    generator = torch.Generator().manual_seed(16)
    logits, targets, input_lengths, target_lengths = _batch(generator)
    logits.requires_grad_(True)
    what = "batch_ctc_loss of 3 utterances (30, 3 and 60 frames; garbage in the padding)"
    loss = call(
        module, "batch_ctc_loss", F.log_softmax(logits, dim=-1), targets, input_lengths, target_lengths
    )
    loss = expect_tensor(what, loss)
    if loss.numel() != 1:
        raise CheckFailed(
            f"{what}: expected one number (the mean over the batch), got shape {tuple(loss.shape)}"
        )
    # One utterance at a time first: the gradient of part d's loss, where a NaN is easiest to trace.
    for text, frames in GRADIENT_CASES:
        label = _ids(text)
        single = (torch.randn(frames, ds2.NUM_CLASSES, generator=generator) * 2.0).requires_grad_(True)
        case = f"ctc_negative_log_likelihood for {text!r} over {frames} frames"
        value = expect_tensor(
            case, call(module, "ctc_negative_log_likelihood", F.log_softmax(single, dim=-1), label)
        )
        expected_loss, expected_gradient = _oracle_gradient(
            single[None], label[None], torch.tensor([frames]), torch.tensor([len(label)])
        )
        if not abs(float(value.detach()) - expected_loss) <= 1e-3 + 1e-4 * abs(expected_loss):
            raise CheckFailed(
                f"{case}: expected {expected_loss:.6g} (F.ctc_loss), got {float(value.detach()):.6g}"
            )
        gradient = _backward(case, value.reshape(()), single)
        _check_gradient(case, gradient, expected_gradient[0], expected_loss)
    # The batch: its value, and a gradient that is exactly 0 on every padded frame.
    _check_batch_value(what, float(loss.detach()), logits, targets, input_lengths, target_lengths)
    gradient = _backward(what, loss.reshape(()), logits)
    padding = ~ds2.lengths_to_mask(input_lengths, logits.shape[1])  # (B, T)
    if torch.isnan(gradient).any():
        _check_gradient(what, gradient, gradient, float(loss.detach()))
    if not torch.equal(gradient[padding], torch.zeros_like(gradient[padding])):
        raise CheckFailed(
            f"{what}: the padded frames got a gradient (largest {float(gradient[padding].abs().max()):.3g}); "
            "they are not speech and must not enter the loss: use log_probs[b, :input_lengths[b]]"
        )
    _, expected_gradient = _oracle_gradient(logits, targets, input_lengths, target_lengths)
    _check_gradient(what, gradient, expected_gradient, float(loss.detach()))
    # The batch loss must be built from part d's loss: raise that by 1 and the mean must rise by 1.
    original = module.ctc_negative_log_likelihood
    module.ctc_negative_log_likelihood = lambda log_probs_, label_: original(log_probs_, label_) + 1.0
    try:
        raised = call(
            module,
            "batch_ctc_loss",
            F.log_softmax(logits.detach(), dim=-1),
            targets,
            input_lengths,
            target_lengths,
        )
    finally:
        module.ctc_negative_log_likelihood = original
    raised = expect_scalar(what, raised)
    if abs(raised - (float(loss.detach()) + 1.0)) > 1e-3:
        raise CheckFailed(
            f"{what}: batch_ctc_loss must average ctc_negative_log_likelihood (part d) over the utterances: with "
            f"that loss raised by 1, the batch loss should go from {float(loss.detach()):.6g} to "
            f"{float(loss.detach()) + 1:.6g}, but it gave {raised:.6g}"
        )


# ---------------------------------------------------------------------------------------------------------
# Part f
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
        "collapse: two passes, in a fixed order. The brute force: which symbols can a path that collapses to "
        "y possibly use? Only those; list every path over them and keep the ones that collapse to y.",
        "collapse: keep path[t] when t == 0 or path[t] != path[t - 1], then drop the blanks. Brute force: "
        "symbols = sorted({BLANK, *label.tolist()}); for path in itertools.product(symbols, repeat=T): the "
        "path's log-probability is log_probs[arange(T), path].sum().",
        "Collect the log-probabilities of the paths with collapse(list(path)) == label.tolist() and return "
        "torch.logsumexp(torch.stack(them), 0) (or a tensor holding -inf when there are none).",
    ),
    "b": (
        "The result has 2S + 1 entries: blank, y1, blank, y2, ..., yS, blank. Where do the labels sit?",
        "Start from a tensor full of BLANK (dtype torch.long) of length 2S + 1 and write the labels into "
        "every other position.",
        "extended = torch.full((2 * len(label) + 1,), BLANK, dtype=torch.long); extended[1::2] = label",
    ),
    "c": (
        "Fill the table row by row: row 0 from the two start positions, row t from row t - 1 only. In log "
        "space, a product is a sum and a sum of probabilities is a logsumexp (a sum, not a max).",
        "For each s, log alpha_t(s) = logsumexp of the allowed terms (alpha_{t-1}(s), alpha_{t-1}(s-1) if "
        "s >= 1, alpha_{t-1}(s-2) if s >= 2 and l'[s] != BLANK and l'[s] != l'[s-2]) + log_probs[t, l'[s]]. "
        "Use LOG_ZERO (-1e30) for impossible entries.",
        "emit = log_probs[:, l']  # (T, L). Row 0: LOG_ZERO everywhere except emit[0, :2]. Then for t >= 1, "
        "build three shifted copies of the previous row (shift by 0, 1, 2, padding with LOG_ZERO; mask the "
        "shift-2 copy where the skip is not allowed) and take torch.logsumexp(torch.stack([...]), 0) + emit[t]. "
        "Collect rows in a list and torch.stack them.",
    ),
    "d": (
        "Which positions of l' may a complete path end on at the last frame?",
        "p(y|x) = alpha_{T-1}(L-1) + alpha_{T-1}(L-2): the final blank or the last label. You have log "
        "alphas from ctc_alphas (part c): use them.",
        "return -torch.logsumexp(ctc_alphas(log_probs, label)[-1, -2:], dim=0)",
    ),
    "e": (
        "Each utterance of the batch on its own frames and labels, then the mean. If the gradient has NaNs, "
        "the cause is in ctc_alphas: what is the gradient of logsumexp when every term is -inf?",
        "losses = [ctc_negative_log_likelihood(log_probs[b, :input_lengths[b]], targets[b, :target_lengths[b]]) "
        "for b in range(B)]; return torch.stack(losses).mean(). In ctc_alphas, use LOG_ZERO = -1e30 for "
        "log 0, never -inf.",
        "NaN gradient: replace every float('-inf') in ctc_alphas by LOG_ZERO (the padding of the shifted rows, "
        "the unreachable start positions, the masked skips). No gradient at all: no .item(), .detach(), "
        "torch.no_grad() or torch.tensor(list of numbers) inside the recursion.",
    ),
    "f": (
        "Two steps after the argmax; part a's collapse already does the second one.",
        "Take the argmax per frame as a list of ints; collapse it (merge repeats, then drop blanks); "
        "implementation.decode_labels turns ids into text.",
        "return ds2.decode_labels(collapse(log_probs.argmax(-1).tolist()))",
    ),
}

PARTS = [
    Part(
        "a",
        "warm-up: every alignment, by brute force",
        ("collapse", "brute_force_log_likelihood"),
        check_brute_force,
        HINTS["a"],
    ),
    Part("b", "blank-extended label", ("extend_with_blanks",), check_extended_label, HINTS["b"]),
    Part("c", "alpha recursion in log space", ("ctc_alphas",), check_alphas, HINTS["c"]),
    Part(
        "d", "the loss, checked against F.ctc_loss", ("ctc_negative_log_likelihood",), check_loss, HINTS["d"]
    ),
    Part("e", "a padded batch, and the gradient", ("batch_ctc_loss",), check_gradients, HINTS["e"]),
    Part("f", "greedy decoding", ("greedy_decode",), check_greedy, HINTS["f"]),
]
