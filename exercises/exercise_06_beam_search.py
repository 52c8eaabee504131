"""Exercise 6: CTC prefix beam search with a word language model (DS2 §3.8).

Greedy decoding (exercise 2) takes the best symbol at every frame. But CTC's probability of a transcript
is a *sum* over all its alignments, and the transcript with the best single alignment is not always the
transcript with the most probability. Two frames that each say blank 0.6 / "a" 0.4 decode greedily to
"" (the path "--", 0.36), yet "a" owns three paths, "a-", "-a" and "aa", worth 0.64 together.

The prefix beam search follows transcripts (prefixes), not paths. After each frame it keeps, for every
prefix y it still tracks, two numbers: the probability of all alignments of the frames so far that
collapse to y and end in a blank, ``p_b(y)``, and of those that end in y's last label, ``p_nb(y)``. The
split is what lets it spell double letters: "l" then "l" with no blank between is still "l", while
"l", blank, "l" is "ll".

DS2 §3.8 decodes with a beam search that combines the network's output with a language model, ranking
each candidate transcript y by

    Q(y) = log p_ctc(y | x) + alpha * log p_lm(y) + beta * word_count(y)

alpha weighs the language model against the network; beta is a bonus per word (every word costs LM
probability, so without it the fused score would favour transcripts with fewer words). The LM here is
``implementation.NGramLM``, a word n-gram whose log-probabilities are natural logs;
``implementation.prefix_beam_search`` is the library's version of this exercise.

Parts:
    a. one frame of the search: the blank / non-blank bookkeeping of every prefix
    b. the language model's score of a prefix, one word at a time
    c. the fused score Q(y) of §3.8
    d. the beam search: extend every prefix, rank by Q, keep the best; the best transcript at the end

Shapes: T frames, C classes (29; blank = 0). A prefix is a tuple of label ids (no blanks);
``implementation.decode_labels`` turns it into text. Probabilities are natural logs throughout.

Check your work: ``python exercises/check.py 6`` (or run this file).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

# implementation.py lives in the repository root; find it so this file runs from any directory.
ROOT = next(path for path in Path(__file__).resolve().parents if (path / "implementation.py").is_file())
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
import implementation as ds2  # noqa: E402

BLANK = ds2.BLANK  # 0

Beams = dict[tuple[int, ...], tuple[float, float]]  # prefix -> (log p_b, log p_nb)


log_add = ds2.log_add  # log(exp(a) + exp(b)) for Python floats, exact for -inf. Given, not graded.


# ---------------------------------------------------------------------------------------------------------
# Part a: one frame of the prefix search
# ---------------------------------------------------------------------------------------------------------


def extend_prefixes(
    beams: Beams, frame: Sequence[float] | Tensor, symbols: Sequence[int] | None = None
) -> Beams:
    """Advance every prefix by one frame: the per-prefix blank / non-blank bookkeeping.

    ``beams`` maps each prefix y to ``(log p_b(y), log p_nb(y))`` over frames ``0..t-1`` (the start is
    ``{(): (0.0, -inf)}``: the empty prefix, reached by the empty alignment, which counts as ending in a
    blank). With ``p(y) = p_b(y) + p_nb(y)`` and ``q(k)`` the probability of symbol k at frame t, each
    (prefix, symbol) pair adds to the new table:

        k = blank:           p_b'(y)      += p(y) * q(blank)       y ends in a blank now
        k = y's last label:  p_nb'(y)     += p_nb(y) * q(k)        "l" + "l": the repeat collapses
                             p_nb'(y + k) += p_b(y) * q(k)         "l" + blank + "l": a second "l"
        any other label:     p_nb'(y + k) += p(y) * q(k)

    (in log space: products are sums, and ``+=`` is ``log_add``). A prefix that no pair reaches is not
    in the result. Nothing is pruned here: the search (part d) does that.

    Args:
        beams: prefix -> ``(log p_b, log p_nb)`` after frames ``0..t-1``.
        frame: ``(C,)`` log-probabilities of frame t.
        symbols: the symbols to consider at this frame (the search skips improbable ones); ``None``
            means all C.

    Returns:
        prefix -> ``(log p_b, log p_nb)`` after frames ``0..t``, Python floats.
    """
    raise NotImplementedError(
        "Exercise 6, part a: write extend_prefixes (one frame: blank / non-blank bookkeeping)"
    )


# ---------------------------------------------------------------------------------------------------------
# Part b: the language model, one word at a time
# ---------------------------------------------------------------------------------------------------------


def lm_log_prob(text: str, lm: ds2.NGramLM, final: bool) -> tuple[float, int]:
    """The word LM's log-probability of a prefix's words, and how many words it scored.

    A word LM scores words, not characters. While a prefix is being decoded its last word may still be
    growing ("the ca" may become "the cat" or "the car"), so only *completed* words count: those followed
    by a space. At the end (``final``) every word counts, and so does the end of the sentence:

        "the ca",  final=False  ->  ln p(the)                                   1 word
        "the cat ", final=False ->  ln p(the) + ln p(cat | the)                 2 words
        "the cat", final=True   ->  ln p(the) + ln p(cat | the) + ln p(</s> | the cat)   2 words

    ``lm.sentence_log_prob(words, eos)`` does the sum (natural log, from the start of a sentence) for a
    list of words. Words are the text split on spaces, so leading or doubled spaces add no empty words.

    Args:
        text: the prefix as text (``implementation.decode_labels(prefix)``).
        lm: an ``implementation.NGramLM``.
        final: True once the utterance is over (score every word, then the end of the sentence).

    Returns:
        ``(log p_lm, word_count)``: a float in nats and the number of words it covers.
    """
    raise NotImplementedError("Exercise 6, part b: write lm_log_prob (the LM, one word at a time)")


# ---------------------------------------------------------------------------------------------------------
# Part c: the fused score Q(y)
# ---------------------------------------------------------------------------------------------------------


def fused_score(
    ctc_log_prob: float, text: str, lm: ds2.NGramLM | None, alpha: float, beta: float, final: bool
) -> float:
    """Shallow fusion, DS2 §3.8: ``Q(y) = log p_ctc(y|x) + alpha * log p_lm(y) + beta * word_count(y)``.

    ``log p_lm`` and ``word_count`` come from part b (completed words only, unless ``final``). Without a
    language model (``lm is None``) the score is the CTC log-probability alone, as in
    ``implementation.prefix_beam_search``.

    Args:
        ctc_log_prob: ``log p_ctc(y|x)`` of the prefix, ``log_add(p_b, p_nb)`` (nats).
        text: the prefix as text.
        lm: an ``implementation.NGramLM``, or None.
        alpha: the LM weight; beta: the bonus per word.
        final: passed on to part b.

    Returns:
        Q(y), a float.
    """
    raise NotImplementedError("Exercise 6, part c: write fused_score (shallow fusion Q(y))")


# ---------------------------------------------------------------------------------------------------------
# Part d: the beam search
# ---------------------------------------------------------------------------------------------------------


def prefix_beam_search(
    log_probs: Tensor,
    beam_width: int = 16,
    lm: ds2.NGramLM | None = None,
    alpha: float = 0.0,
    beta: float = 0.0,
    prune_log_prob: float = -10.0,
) -> str:
    """The best transcript of one utterance under CTC prefix beam search with shallow fusion (§3.8).

    Start from ``{(): (0.0, -inf)}``. For every frame: consider only the symbols whose log-probability
    is at least ``prune_log_prob`` (or the single most probable one if none is); extend every prefix
    (part a); rank the results by ``Q`` (part c) with ``final=False``, using ``log_add(p_b, p_nb)`` as
    the CTC term; keep the ``beam_width`` best. After the last frame, rank the survivors by ``Q`` with
    ``final=True`` and return the best one as text.

    With a beam wide enough to keep every prefix, this finds the transcript of greatest Q exactly; a
    narrow beam trades some of that for speed.

    Args:
        log_probs: ``(T, C)`` log-probabilities of one utterance.
        beam_width: prefixes kept after every frame.
        lm: an ``implementation.NGramLM``, or None for the CTC probability alone.
        alpha, beta: the weights of §3.8 (see ``fused_score``).
        prune_log_prob: symbols less probable than this at a frame are skipped (speed).

    Returns:
        The best transcript, ``implementation.decode_labels`` of its prefix.
    """
    raise NotImplementedError("Exercise 6, part d: write prefix_beam_search (the beam search)")


if __name__ == "__main__":
    # Running this file checks it: the same as `python exercises/check.py 6` for this very file.
    sys.path.insert(0, str(ROOT / "exercises"))
    from check import check_file

    sys.exit(check_file(__file__))
