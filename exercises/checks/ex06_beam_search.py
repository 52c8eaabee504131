"""Checks for exercise 6 (CTC prefix beam search with a word language model; DS2 §3.8).

Oracles: brute-force enumeration of every alignment over a few symbols and frames, which gives each
prefix's exact blank- and non-blank-ending probabilities (part a) and the exact transcript of greatest
CTC probability or greatest Q(y) (part d, with a beam wide enough to keep every prefix);
``NGramLM.sentence_log_prob`` on the completed words (part b); the formula of §3.8 (part c); hand-made
frames ("l", blank, "l" must give "ll"; the two-frame case where the best transcript is not the best
path; an LM that corrects a greedy error; "the cat sat" in a beam of 2) and
``implementation.prefix_beam_search`` (part d); for narrow beams, where the ranking after every frame
decides what survives, ``reference_search``, a beam search written here (itself checked against the
brute force in tests/test_exercises.py). Where a wrong answer matches a common mistake (no separate
blank / non-blank probabilities, repeats not collapsed, the LM scored per character, beta never applied,
p_ctc alone or final=True in the per-frame ranking, the beam cut before ranking, no fallback when no
symbol passes the pruning threshold), the message names it.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import torch

import implementation as ds2
from checks.common import CheckFailed, Part, call, expect_equal

EXERCISE = 6
FILENAME = "exercise_06_beam_search.py"
TITLE = "CTC prefix beam search with a word language model (DS2 §3.8)"
MINUTES = 50

NEG_INF = -math.inf
_OTHER = -40.0  # log-probability (before normalising) of the symbols a tiny case does not use


def _id(char: str) -> int:
    return ds2.BLANK if char == "-" else ds2.ALPHABET.index(char)


_logadd = ds2.log_add


def enumerate_alignments(
    log_probs: torch.Tensor, symbols: list[int]
) -> dict[tuple[int, ...], tuple[float, float]]:
    """Every path over ``symbols``, collapsed: prefix -> (log p_b, log p_nb), exactly, in float64.

    ``p_b(y)`` sums the paths that collapse to y and end in a blank, ``p_nb(y)`` those that end in a label.
    Paths that use other symbols are left out: the tiny cases give those symbols about e^-40.
    """
    frames = log_probs.detach().double().numpy()
    table: dict[tuple[int, ...], list[float]] = {}
    for path in itertools.product(symbols, repeat=frames.shape[0]):
        log_prob = float(frames[np.arange(len(path)), list(path)].sum())
        merged = [s for t, s in enumerate(path) if t == 0 or s != path[t - 1]]
        prefix = tuple(s for s in merged if s != ds2.BLANK)
        entry = table.setdefault(prefix, [NEG_INF, NEG_INF])
        which = 0 if path[-1] == ds2.BLANK else 1
        entry[which] = _logadd(entry[which], log_prob)
    return {prefix: (p_b, p_nb) for prefix, (p_b, p_nb) in table.items()}


def _tiny_log_probs(frames: int, symbols: list[int], seed: int, scale: float = 1.5) -> torch.Tensor:
    """``(T, 29)`` log-probs with their mass on ``symbols`` (the rest about e^-40)."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.full((frames, ds2.NUM_CLASSES), _OTHER, dtype=torch.float64)
    logits[:, symbols] = torch.randn(frames, len(symbols), generator=generator, dtype=torch.float64) * scale
    return torch.log_softmax(logits, dim=-1)


def _frames(spec: list[dict[str, float]]) -> torch.Tensor:
    """``(T, 29)`` log-probs from one {symbol: probability} per frame ("-" is the blank); the rest tiny."""
    probs = torch.full((len(spec), ds2.NUM_CLASSES), 1e-7, dtype=torch.float64)
    for t, frame in enumerate(spec):
        for char, prob in frame.items():
            probs[t, _id(char)] = prob
    return (probs / probs.sum(dim=-1, keepdim=True)).log()


def _path(path: str, sure: float = 0.9) -> torch.Tensor:
    """Frames whose symbol at t is ``path[t]`` with probability ``sure``, the rest spread thinly."""
    return _frames([{char: sure} for char in path])


@functools.cache
def small_lm() -> ds2.NGramLM:
    """A bigram LM over a tiny language of two-letter words (for brute-force checks)."""
    return ds2.NGramLM.train(["ab ba", "ab ab", "ba ab", "ab", "ab ba ab", "ba"], order=2)


@functools.cache
def sentence_lm() -> ds2.NGramLM:
    """A bigram LM that knows "cat" and has never seen "kat"."""
    sentences = ["the cat sat", "the cat ran", "a cat sat", "the dog sat", "a dog ran", "the cat sat down"]
    return ds2.NGramLM.train(sentences, order=2)


def _close(a: float, b: float, tolerance: float = 1e-6) -> bool:
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= tolerance * max(1.0, abs(b))


def _show_prefix(prefix: tuple[int, ...]) -> str:
    return repr(ds2.decode_labels(prefix))


# ---------------------------------------------------------------------------------------------------------
# Part a
# ---------------------------------------------------------------------------------------------------------


def _expect_beams(what: str, got) -> dict[tuple[int, ...], tuple[float, float]]:
    if not isinstance(got, dict):
        raise CheckFailed(f"{what}: expected a dict prefix -> (log p_b, log p_nb), got {type(got).__name__}")
    beams = {}
    for prefix, value in got.items():
        if not isinstance(prefix, tuple):
            raise CheckFailed(f"{what}: the keys must be prefixes as tuples of label ids, got {prefix!r}")
        if not isinstance(value, tuple | list) or len(value) != 2:
            raise CheckFailed(
                f"{what}: each prefix must map to a pair (log p_b, log p_nb), got {value!r} for "
                f"{_show_prefix(prefix)}: keep the blank- and non-blank-ending probabilities separately"
            )
        beams[tuple(int(k) for k in prefix)] = (float(value[0]), float(value[1]))
    return beams


def _compare_beams(what: str, got, expected, symbols: list[int]) -> None:
    """Every prefix over ``symbols`` must carry the brute-force (p_b, p_nb); nothing else may be probable."""
    for prefix, (p_b, p_nb) in expected.items():
        mine = got.get(prefix, (NEG_INF, NEG_INF))
        for which, name, value, theirs in (("blank", "p_b", mine[0], p_b), ("label", "p_nb", mine[1], p_nb)):
            if not _close(value, theirs):
                raise CheckFailed(
                    f"{what}: prefix {_show_prefix(prefix)}: log {name} (alignments ending in a {which}) should be "
                    f"{theirs:.6g} (the sum over every alignment, by brute force), got {value:.6g}"
                    + ("; the prefix is missing" if prefix not in got else "")
                )
    allowed = set(symbols)
    for prefix, (p_b, p_nb) in got.items():
        if prefix not in expected and set(prefix) <= allowed and max(p_b, p_nb) > -1e20:
            raise CheckFailed(
                f"{what}: prefix {_show_prefix(prefix)} got probability {math.exp(_logadd(p_b, p_nb)):.3g}, but no "
                "alignment of these frames collapses to it"
            )


def check_extend(module) -> None:
    ell, blank = _id("l"), ds2.BLANK
    # The two rules that make CTC prefixes: l + l is l, l + blank + l is ll.
    frame = _frames([{"l": 0.6, "-": 0.4}])[0]
    q_l, q_blank = float(frame[ell]), float(frame[blank])
    p_b, p_nb = math.log(0.3), math.log(0.5)
    what = "extend_prefixes({'l': (log 0.3, log 0.5)}) with a frame of 'l' 0.6, blank 0.4"
    got = _expect_beams(what, call(module, "extend_prefixes", {(ell,): (p_b, p_nb)}, frame, [blank, ell]))
    double = got.get((ell, ell), (NEG_INF, NEG_INF))
    single = got.get((ell,), (NEG_INF, NEG_INF))
    total = _logadd(p_b, p_nb)
    if double[1] == NEG_INF or double[1] < -1e20:
        raise CheckFailed(
            f"{what}: no 'll': an 'l' after the alignments that end in a blank starts a second 'l' (probability "
            "0.3 x 0.6). Without separate blank and non-blank probabilities a prefix search can never spell "
            "a double letter: keep (p_b, p_nb) per prefix and extend y by its own last label from p_b only"
        )
    if _close(double[1], total + q_l) or _close(single[1], NEG_INF):
        raise CheckFailed(
            f"{what}: repeats not collapsed: an 'l' right after alignments that end in 'l' (no blank between) "
            "is the same 'l', so p_nb(l) += p_nb(l) x q(l); only p_b(l) x q(l) goes to 'll'"
        )
    expected = {(ell,): (total + q_blank, p_nb + q_l), (ell, ell): (NEG_INF, p_b + q_l)}
    _compare_beams(what, got, expected, [blank, ell])
    # Random tiny cases, one frame at a time from the exact table of the frames before.
    for seed, letters in ((61, "ab"), (62, "a b"), (63, "ll")):
        symbols = [blank, *sorted({_id(char) for char in letters})]
        log_probs = _tiny_log_probs(6, symbols, seed)
        beams = {(): (0.0, NEG_INF)}
        for t in range(log_probs.shape[0]):
            what = f"extend_prefixes at frame {t} of a random case over {letters!r} and the blank"
            got = _expect_beams(what, call(module, "extend_prefixes", dict(beams), log_probs[t], symbols))
            beams = enumerate_alignments(log_probs[: t + 1], symbols)
            _compare_beams(what, got, beams, symbols)
    # symbols=None: every symbol of the frame (the tiny ones too, which must not disturb the rest).
    log_probs = _tiny_log_probs(3, [blank, _id("a")], 64)
    beams = enumerate_alignments(log_probs[:2], [blank, _id("a")])
    what = "extend_prefixes(..., symbols=None) (every symbol of the frame)"
    got = _expect_beams(what, call(module, "extend_prefixes", dict(beams), log_probs[2]))
    _compare_beams(what, got, enumerate_alignments(log_probs, [blank, _id("a")]), [blank, _id("a")])


# ---------------------------------------------------------------------------------------------------------
# Part b
# ---------------------------------------------------------------------------------------------------------


def _expect_lm_pair(what: str, got) -> tuple[float, int]:
    if not isinstance(got, tuple | list) or len(got) != 2:
        raise CheckFailed(f"{what}: expected a pair (log p_lm, word_count), got {type(got).__name__} {got!r}")
    if not isinstance(got[1], int) or isinstance(got[1], bool):
        raise CheckFailed(f"{what}: the word count must be an int, got {type(got[1]).__name__} {got[1]!r}")
    if isinstance(got[0], torch.Tensor) and got[0].numel() == 1:
        return float(got[0]), got[1]
    if not isinstance(got[0], int | float):
        raise CheckFailed(f"{what}: log p_lm must be a number, got {type(got[0]).__name__}")
    return float(got[0]), got[1]


def check_lm_score(module) -> None:
    lm = sentence_lm()

    def score(text: str, final: bool) -> tuple[float, int]:
        what = f"lm_log_prob({text!r}, final={final})"
        return _expect_lm_pair(what, call(module, "lm_log_prob", text, lm, final))

    # A word is scored once, when it is complete: the LM term must not move while a word is spelt.
    the = lm.sentence_log_prob(["the"], eos=False)
    for text, expected in [
        ("t", 0.0),
        ("th", 0.0),
        ("the", 0.0),
        ("the ", the),
        ("the c", the),
        ("the ca", the),
    ]:
        got, words = score(text, False)
        completed = text.split() if text.endswith(" ") else text.split()[:-1]
        if not _close(got, expected, 1e-6):
            raise CheckFailed(
                f"lm_log_prob({text!r}, final=False): expected {expected:.6g} (the completed words, {completed}), "
                f"got {got:.6g}: the LM was scored per character, or on the word still being spelt. While a "
                "word grows ('t', 'th', 'the'), the LM term must stay that of the completed words; score each "
                "word once, when the space after it arrives (or at the end)"
            )
        expect_equal(f"lm_log_prob({text!r}, final=False): word count", words, len(completed))
    for text, final, words in [
        ("the cat ", False, ["the", "cat"]),
        ("the cat sat", False, ["the", "cat"]),
        ("the cat sat", True, ["the", "cat", "sat"]),
        ("the kat sat", True, ["the", "kat", "sat"]),  # an unknown word: <unk>
        ("a dog", True, ["a", "dog"]),
        (" the  cat", True, ["the", "cat"]),  # leading and doubled spaces add no words
        ("", True, []),  # the empty transcript: just the end of the sentence
        ("", False, []),
    ]:
        what = f"lm_log_prob({text!r}, final={final})"
        got, count = score(text, final)
        expected = lm.sentence_log_prob(words, eos=final)
        if not _close(got, expected, 1e-6):
            if final and _close(got, lm.sentence_log_prob(words, eos=False), 1e-6):
                raise CheckFailed(
                    f"{what}: at the end, score the end of the sentence too: sentence_log_prob(words, eos=True)"
                )
            if not final and _close(got, lm.sentence_log_prob(words, eos=True), 1e-6):
                raise CheckFailed(
                    f"{what}: the end of the sentence is scored only when final is True (the utterance is over)"
                )
            if _close(got, expected / math.log(10.0), 1e-6):
                raise CheckFailed(
                    f"{what}: that is log10; the search works in natural logs, as NGramLM returns"
                )
            raise CheckFailed(
                f"{what}: expected {expected:.6g} (lm.sentence_log_prob({words}, eos={final})), got {got:.6g}"
            )
        expect_equal(f"{what}: word count", count, len(words))


# ---------------------------------------------------------------------------------------------------------
# Part c
# ---------------------------------------------------------------------------------------------------------


def _oracle_lm_log_prob(text: str, lm, final: bool) -> tuple[float, int]:
    words = text.split()
    if not final and words and not text.endswith(" "):
        words = words[:-1]
    return lm.sentence_log_prob(words, eos=final), len(words)


def check_fused_score(module) -> None:
    lm = sentence_lm()
    original = module.lm_log_prob
    module.lm_log_prob = _oracle_lm_log_prob  # so that this part checks the fusion alone
    try:
        for ctc, text, alpha, beta, final in [
            (-3.5, "the cat sat", 0.8, 1.5, True),
            (-3.5, "the cat sa", 0.8, 1.5, False),
            (-7.25, "a dog", 2.0, 0.0, True),
            (-1.0, "the kat ", 0.5, 3.0, False),
            (-2.0, "", 1.0, 2.0, True),
        ]:
            what = f"fused_score({ctc}, {text!r}, lm, alpha={alpha}, beta={beta}, final={final})"
            got = call(module, "fused_score", ctc, text, lm, alpha, beta, final)
            if isinstance(got, torch.Tensor) and got.numel() == 1:
                got = float(got)
            if not isinstance(got, int | float):
                raise CheckFailed(f"{what}: expected a number, got {type(got).__name__}")
            lm_part, words = _oracle_lm_log_prob(text, lm, final)
            expected = ctc + alpha * lm_part + beta * words
            if _close(got, expected, 1e-9):
                continue
            for value, message in [
                (ctc + alpha * lm_part, "beta never applied: add beta * word_count, the bonus per word"),
                (ctc + lm_part + beta * words, "alpha never applied: the LM term is alpha * log p_lm(y)"),
                (ctc + beta * words, "the LM term is missing: add alpha * log p_lm(y)"),
                (ctc, "that is log p_ctc alone: add alpha * log p_lm(y) + beta * word_count(y)"),
                (alpha * (ctc + lm_part) + beta * words, "alpha weighs the LM term only, not log p_ctc"),
                (ctc + alpha * lm_part - beta * words, "beta is a bonus: + beta * word_count(y)"),
            ]:
                if _close(got, value, 1e-9):
                    raise CheckFailed(f"{what}: {message}")
            raise CheckFailed(
                f"{what}: expected Q = {ctc} + {alpha} x {lm_part:.6g} + {beta} x {words} = {expected:.6g}, got {got:.6g}"
            )
        what = "fused_score(-4.0, 'the cat', lm=None, alpha=1.0, beta=2.0, final=True)"
        got = call(module, "fused_score", -4.0, "the cat", None, 1.0, 2.0, True)
        if not isinstance(got, int | float | torch.Tensor) or not _close(float(got), -4.0, 1e-9):
            raise CheckFailed(f"{what}: without a language model Q is log p_ctc alone, -4.0; got {got!r}")
    finally:
        module.lm_log_prob = original


# ---------------------------------------------------------------------------------------------------------
# Part d
# ---------------------------------------------------------------------------------------------------------


def _search(module, what: str, log_probs: torch.Tensor, *args) -> str:
    got = call(module, "prefix_beam_search", log_probs.float(), *args)
    if not isinstance(got, str):
        raise CheckFailed(f"{what}: expected the transcript as a str, got {type(got).__name__} {got!r}")
    return got


def exact_best(log_probs: torch.Tensor, symbols: list[int], lm=None, alpha=0.0, beta=0.0) -> str:
    """The transcript of greatest Q(y) (greatest p_ctc without an LM), over every alignment: exact."""
    table = enumerate_alignments(log_probs, symbols)

    def q(prefix: tuple[int, ...]) -> float:
        ctc = _logadd(*table[prefix])
        if lm is None:
            return ctc
        lm_part, words = _oracle_lm_log_prob(ds2.decode_labels(prefix), lm, True)
        return ctc + alpha * lm_part + beta * words

    return ds2.decode_labels(max(table, key=q))


# (alpha, beta) of the brute-force LM cases: four different answers, "b b", "ab", "b b a", "ba" (tested).
LM_CASES = [(0.0, 0.0), (1.5, 0.0), (0.0, 3.0), (1.0, 1.5)]
LM_SEED = 68


def lm_case_log_probs() -> tuple[torch.Tensor, list[int]]:
    symbols = [ds2.BLANK, _id("a"), _id("b"), _id(" ")]
    return _tiny_log_probs(6, symbols, LM_SEED, scale=1.0), symbols


def reference_search(
    log_probs: torch.Tensor,
    beam_width: int,
    lm=None,
    alpha: float = 0.0,
    beta: float = 0.0,
    prune_log_prob: float = -10.0,
    mistake: str | None = None,
) -> tuple[str, float]:
    """Part d's search, written here independently of the solution: ``(best transcript, margin)``.

    ``margin`` is the smallest gap in the ranking score at any cut of the beam and between the two best
    prefixes at the end; a case is used only where it is clear, so rounding cannot decide it. ``mistake``
    builds a *wrong* search, used only to name a learner's mistake: ``"ctc during"`` ranks by p_ctc alone
    after every frame (Q only at the end), ``"final during"`` ranks with ``final=True`` after every frame,
    ``"cut first"`` keeps the first ``beam_width`` candidates (in the order the frame's extension made
    them) and ranks only those.
    """

    def q(prefix: tuple[int, ...], p_b: float, p_nb: float, final: bool) -> float:
        ctc = _logadd(p_b, p_nb)
        if lm is None:
            return ctc
        lm_part, words = _oracle_lm_log_prob(ds2.decode_labels(prefix), lm, final)
        return ctc + alpha * lm_part + beta * words

    def rank(candidate: tuple[tuple[int, ...], float, float]) -> float:
        if mistake == "ctc during":
            return _logadd(candidate[1], candidate[2])
        return q(*candidate, final=mistake == "final during")

    beams = [((), 0.0, NEG_INF)]  # (prefix, log p_b, log p_nb)
    margin = math.inf
    for frame in log_probs.detach().double().tolist():
        kept = [k for k, value in enumerate(frame) if value >= prune_log_prob]
        kept = kept or [max(range(len(frame)), key=frame.__getitem__)]  # nothing passes: the argmax alone
        table: dict[tuple[int, ...], list[float]] = {}
        for prefix, p_b, p_nb in beams:
            for k in kept:
                if k == ds2.BLANK:
                    moves = [(prefix, 0, _logadd(p_b, p_nb))]
                elif prefix and prefix[-1] == k:
                    moves = [(prefix, 1, p_nb), ((*prefix, k), 1, p_b)]
                else:
                    moves = [((*prefix, k), 1, _logadd(p_b, p_nb))]
                for target, half, before in moves:
                    pair = table.setdefault(target, [NEG_INF, NEG_INF])
                    pair[half] = _logadd(pair[half], before + frame[k])
        candidates = [(prefix, p_b, p_nb) for prefix, (p_b, p_nb) in table.items()]
        if mistake == "cut first":
            candidates = candidates[:beam_width]
        ranked = sorted(candidates, key=rank, reverse=True)
        if len(ranked) > beam_width:
            margin = min(margin, rank(ranked[beam_width - 1]) - rank(ranked[beam_width]))
        beams = ranked[:beam_width]
    finals = sorted((q(*beam, final=True) for beam in beams), reverse=True)
    if len(finals) > 1:
        margin = min(margin, finals[0] - finals[1])
    return ds2.decode_labels(max(beams, key=lambda beam: q(*beam, final=True))[0]), margin


# (seed, beam_width, alpha, beta): narrow beams over blank, "a", "b" and space (all above the pruning
# threshold) with the two-letter-word LM; a search that ranks by p_ctc alone during the search, ranks with
# final=True, or cuts the beam before ranking gets most of them wrong.
NARROW_CASES = [(81, 2, 1.0, 1.5), (82, 3, 1.5, 0.5), (83, 2, 0.5, 2.0), (84, 3, 1.0, 1.5), (85, 2, 1.5, 0.5)]


def narrow_case_log_probs(seed: int) -> torch.Tensor:
    """``(8, 29)`` float32 log-probs of a narrow-beam case: blank, "a", "b" and space all above -10."""
    return _tiny_log_probs(8, [ds2.BLANK, _id("a"), _id("b"), _id(" ")], seed).float()


NARROW_MISTAKES = {
    "ctc during": "the beams were ranked by p_ctc alone during the search, and by Q only at the end: in a narrow "
    "beam the LM must help decide which prefixes survive each frame. Rank the candidates by fused_score(..., "
    "final=False) after every frame",
    "final during": "the ranking after every frame used final=True, so the word still being spelt was scored as "
    "a complete word, followed by the end of the sentence: rank with final=False during the search and with "
    "final=True only once, after the last frame",
    "cut first": "the beam was cut before ranking: it kept the first beam_width candidates in the order "
    "extend_prefixes made them, not the best ones. Sort every candidate by Q, then keep the beam_width best",
}


def _check_narrow_beams(module) -> None:
    """Narrow beams with an LM against ``reference_search``; a mistake is named when every failure fits it."""
    lm = small_lm()
    failures, fitting = [], set(NARROW_MISTAKES)
    for seed, beam_width, alpha, beta in NARROW_CASES:
        log_probs = narrow_case_log_probs(seed)
        expected, margin = reference_search(log_probs, beam_width, lm, alpha, beta)
        if margin < 1e-6:
            continue  # too close to call
        what = (
            f"prefix_beam_search with the LM, beam {beam_width}, alpha={alpha}, beta={beta} (a random 8-frame "
            f"case over 'a', 'b', space and the blank)"
        )
        got = _search(module, what, log_probs, beam_width, lm, alpha, beta)
        if got != expected:
            failures.append((what, expected, got))
            fitting &= {
                name
                for name in NARROW_MISTAKES
                if reference_search(log_probs, beam_width, lm, alpha, beta, mistake=name)[0] == got
            }
    if not failures:
        return
    what, expected, got = failures[0]
    explanation = (
        NARROW_MISTAKES[next(name for name in NARROW_MISTAKES if name in fitting)]
        if fitting
        else "after every frame, extend the prefixes, rank them all by Q (final=False) and keep the "
        "beam_width best; after the last frame, rank the survivors by Q with final=True"
    )
    raise CheckFailed(
        f"{what}: expected {expected!r} (the checker's own beam search), got {got!r}; wrong on "
        f"{len(failures)} of {len(NARROW_CASES)} such cases: {explanation}"
    )


def _check_the_cat_sat_in_a_narrow_beam(module) -> None:
    """Beam 2: the LM must pull "the cat" into the beam at the space, before "s"/"z" could push it out."""
    frames = _frames(
        [{char: 0.9} for char in "tt-hh-ee-  "]
        + [{"k": 0.52, "c": 0.48}, {"-": 0.9}]
        + [{char: 0.9} for char in "aa-tt-  "]
        + [{"s": 0.5, "z": 0.5}, {"-": 0.9}]
        + [{char: 0.9} for char in "aa-tt-"]
    )
    what = "prefix_beam_search of 'the [k|c]at [s|z]at' (k 0.52, c 0.48; s 0.5, z 0.5), beam 2, alpha 1.0, beta 0.5"
    got = _search(module, what, frames, 2, sentence_lm(), 1.0, 0.5)
    if got != "the cat sat":
        raise CheckFailed(
            f"{what}: expected 'the cat sat', got {got!r}: once the space after 'cat' arrives, the LM must rank "
            "'the cat ' above 'the kat ' so that it survives the next frame, where 's' and 'z' double the "
            "candidates. Rank every candidate by Q (fused_score, final=False) after every frame, then keep the "
            "beam_width best"
        )


def _check_argmax_fallback(module) -> None:
    """When no symbol of a frame reaches prune_log_prob, the search goes on with the most probable one."""
    probs = torch.full((3, ds2.NUM_CLASSES), 0.7 / (ds2.NUM_CLASSES - 1), dtype=torch.float64)
    for t, char in enumerate("hhi"):
        probs[t, _id(char)] = 0.3  # the most probable symbol, but log 0.3 = -1.2 < -1
    log_probs = probs.log()  # (3, 29)
    what = (
        "prefix_beam_search(..., prune_log_prob=-1.0) of 3 frames where no symbol reaches -1 (the most probable, "
        "'h', 'h', 'i', have log-probability -1.2)"
    )
    advice = (
        "when no symbol of a frame reaches prune_log_prob, go on with the single most probable one (the "
        "docstring's 'or the single most probable one if none is'), or the beam empties"
    )
    try:
        got = _search(module, what, log_probs, 16, None, 0.0, 0.0, -1.0)
    except (ValueError, IndexError, KeyError) as error:  # max() of an empty beam, say
        raise CheckFailed(f"{what}: raised {type(error).__name__}: {error}; {advice}") from None
    if got != "hi":
        raise CheckFailed(f"{what}: expected 'hi', got {got!r}; {advice}")


def _check_search_uses_parts(module) -> None:
    """The search is built from parts a and c: one extend_prefixes per frame, fused_score for the ranking."""
    calls = {"extend_prefixes": 0, "fused_score": 0}
    originals = {name: getattr(module, name) for name in calls}

    def counting(name):
        def run(*args, **kwargs):
            calls[name] += 1
            return originals[name](*args, **kwargs)

        return run

    for name in calls:
        setattr(module, name, counting(name))
    try:
        frames = _path("ab-a")
        _search(module, "prefix_beam_search", frames, 4, sentence_lm(), 0.5, 1.0)
    finally:
        for name, original in originals.items():
            setattr(module, name, original)
    if calls["extend_prefixes"] != frames.shape[0] or not calls["fused_score"]:
        raise CheckFailed(
            f"prefix_beam_search over {frames.shape[0]} frames called extend_prefixes {calls['extend_prefixes']} "
            f"times and fused_score {calls['fused_score']} times: build the search from your parts, one "
            "extend_prefixes (part a) per frame and fused_score (part c) to rank the prefixes"
        )


def check_search(module) -> None:
    wide = 4096  # wider than the number of prefixes in any tiny case: the search is then exact
    # Double letters, and repeats.
    for path, expected in [("l-l", "ll"), ("ll", "l"), ("-ll--l-", "ll"), ("--l", "l")]:
        what = f"prefix_beam_search of frames whose best symbols are {path!r} ('-' = blank)"
        got = _search(module, what, _path(path), 8)
        if got != expected and path == "l-l" and got == "l":
            raise CheckFailed(
                f"{what}: expected 'll', got 'l': the search cannot spell a double letter. Keep separate "
                "blank- and non-blank-ending probabilities per prefix (part a), and rank by their sum"
            )
        if got != expected and path == "ll" and got == "ll":
            raise CheckFailed(f"{what}: expected 'l', got 'll': repeats not collapsed (part a)")
        expect_equal(what, got, expected)
    # The best transcript is not the best path: blank 0.6 / a 0.4 twice is "a" (0.64), not "" (0.36).
    two = _frames([{"-": 0.6, "a": 0.4}, {"-": 0.6, "a": 0.4}])
    what = "prefix_beam_search of two frames of blank 0.6 / 'a' 0.4 (beam 4)"
    got = _search(module, what, two, 4)
    if got == "":
        raise CheckFailed(
            f"{what}: expected 'a' (its three alignments a-, -a, aa sum to 0.64), got '' (the single best "
            "path, 0.36): rank prefixes by p_b + p_nb, the sum over all their alignments"
        )
    expect_equal(what, got, "a")
    what = "prefix_beam_search of the same two frames with beam_width=1"
    got = _search(module, what, two, 1)
    if got != "":
        raise CheckFailed(
            f"{what}: expected '' (after the first frame the beam keeps only the blank, 0.6 against 0.4), got "
            f"{got!r}: keep only the beam_width best prefixes after every frame"
        )
    # Random tiny cases: with a beam that keeps every prefix, the search is exact.
    for seed, letters in ((71, "ab"), (72, "ab "), (73, "lo")):
        symbols = [ds2.BLANK, *sorted({_id(char) for char in letters})]
        log_probs = _tiny_log_probs(6, symbols, seed)
        expected = exact_best(log_probs, symbols)
        what = f"prefix_beam_search of a random 6-frame case over {letters!r} (beam {wide}, no LM)"
        got = _search(module, what, log_probs, wide)
        if got != expected:
            raise CheckFailed(
                f"{what}: expected {expected!r} (the transcript of greatest probability, summed over every "
                f"alignment by brute force), got {got!r}"
            )
    _check_search_uses_parts(module)
    # With an LM: the exact argmax of Q over every transcript, for several alpha and beta.
    log_probs, symbols = lm_case_log_probs()
    lm = small_lm()
    answers = {}
    for alpha, beta in LM_CASES:
        expected = exact_best(log_probs, symbols, lm, alpha, beta)
        what = (
            f"prefix_beam_search with the LM, alpha={alpha}, beta={beta} (a random 6-frame case, beam {wide})"
        )
        got = _search(module, what, log_probs, wide, lm, alpha, beta)
        answers[(alpha, beta)] = got
        if got == expected:
            continue
        if beta and got == exact_best(log_probs, symbols, lm, alpha, 0.0):
            raise CheckFailed(
                f"{what}: expected {expected!r}, got {got!r}, the best transcript with beta = 0: beta never "
                "applied. Rank by Q(y) = log p_ctc + alpha log p_lm + beta word_count (parts c and d)"
            )
        if alpha and got == exact_best(log_probs, symbols, lm, 0.0, beta):
            raise CheckFailed(
                f"{what}: expected {expected!r}, got {got!r}, the best transcript with alpha = 0: the LM never "
                "entered the ranking. Rank the beams by fused_score (part c)"
            )
        raise CheckFailed(
            f"{what}: expected {expected!r} (the transcript of greatest Q(y), by brute force over every "
            f"alignment), got {got!r}"
        )
    _check_argmax_fallback(module)
    # An LM that corrects a greedy error: "kat" is a touch more probable acoustically; the LM knows "cat".
    frames = _frames(
        [{char: 0.9} for char in "tt-hh-ee-  "]
        + [{"k": 0.55, "c": 0.45}, {"-": 0.9}]
        + [{char: 0.9} for char in "aa-tt-  ss-aa-tt-"]
    )
    what = "prefix_beam_search of 'the [k|c]at sat' (k 0.55, c 0.45)"
    greedy = ds2.greedy_decode(frames)[0]
    without = _search(module, what + " without an LM", frames, 16)
    if without != greedy:
        raise CheckFailed(
            f"{what} without an LM: expected {greedy!r} (clear frames: the greedy answer), got {without!r}"
        )
    library = ds2.prefix_beam_search(frames, 16, sentence_lm(), 1.0, 0.5)
    got = _search(module, what + " with the LM (alpha 1.0, beta 0.5)", frames, 16, sentence_lm(), 1.0, 0.5)
    if got == greedy:
        raise CheckFailed(
            f"{what} with the LM (alpha 1.0, beta 0.5): expected {library!r} (implementation.prefix_beam_search), "
            f"got {got!r}: the LM did not change the result. Rank the beams by Q(y) (part c), not by p_ctc alone"
        )
    expect_equal(
        f"{what} with the LM (alpha 1.0, beta 0.5), vs implementation.prefix_beam_search", got, library
    )
    # Narrow beams: the ranking after every frame decides what survives.
    _check_narrow_beams(module)
    _check_the_cat_sat_in_a_narrow_beam(module)


HINTS = {
    "a": (
        "Loop over the prefixes and, for each, over the symbols; every (prefix, symbol) pair adds "
        "probability to one or two entries of a new table. The three cases: blank, y's own last label, "
        "any other label.",
        "p_total = log_add(p_b, p_nb). Blank: new[y].p_b += p_total + q. k == y[-1]: new[y].p_nb += p_nb + q "
        "and new[y + (k,)].p_nb += p_b + q. Otherwise: new[y + (k,)].p_nb += p_total + q. 'Adding' is log_add, "
        "starting from -inf.",
        "Keep a dict of two-element lists, created at [-inf, -inf] on first use (dict.setdefault), update with "
        "entry[i] = log_add(entry[i], value), and return {prefix: (p_b, p_nb)} with tuples.",
    ),
    "b": (
        "Split the text into words. Which of them are finished while decoding is still going on, and which are "
        "finished at the end?",
        "words = text.split(); unless final, drop the last word when the text does not end with a space (it "
        "is still being spelt). Then lm.sentence_log_prob(words, eos=final) scores them from the sentence start.",
        "return lm.sentence_log_prob(words, eos=final), len(words)",
    ),
    "c": (
        "One line: the formula of §3.8, with part b giving the LM term and the word count.",
        "lm_part, words = lm_log_prob(text, lm, final); Q = ctc_log_prob + alpha * lm_part + beta * words. "
        "Without an LM (lm is None), Q is ctc_log_prob.",
        "if lm is None: return ctc_log_prob; lm_part, words = lm_log_prob(text, lm, final); "
        "return ctc_log_prob + alpha * lm_part + beta * words",
    ),
    "d": (
        "Per frame: which symbols, extend (part a), rank, keep the best beam_width. At the end: rank once "
        "more, with final=True, and return the winner's text.",
        "beams = {(): (0.0, -math.inf)}; for frame in log_probs.tolist(): symbols = [k for k, q in "
        "enumerate(frame) if q >= prune_log_prob] (or the argmax); candidates = extend_prefixes(beams, frame, "
        "symbols).",
        "score = lambda item: fused_score(log_add(*item[1]), ds2.decode_labels(item[0]), lm, alpha, beta, final); "
        "beams = dict(sorted(candidates.items(), key=score, reverse=True)[:beam_width]); at the end return "
        "ds2.decode_labels(max(beams.items(), key=final score)[0]).",
    ),
}

PARTS = [
    Part("a", "one frame: blank / non-blank bookkeeping", ("extend_prefixes",), check_extend, HINTS["a"]),
    Part("b", "the LM, one word at a time", ("lm_log_prob",), check_lm_score, HINTS["b"]),
    Part("c", "shallow fusion Q(y)", ("fused_score",), check_fused_score, HINTS["c"]),
    Part("d", "the beam search", ("prefix_beam_search",), check_search, HINTS["d"]),
]
