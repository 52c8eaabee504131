"""The production CTC decoder: flashlight-text's C++ beam search with a KenLM word LM, through torchaudio.

``implementation.prefix_beam_search`` is the lesson's decoder (§3.8), written to be read. This module wraps
the one a production system would use, ``torchaudio.models.decoder.ctc_decoder``, so that it decodes our
models' outputs with our LMs (ARPA files) and scores as ours does: ``flashlight_decoder(...)`` returns a
``decoder(log_probs (T, C)) -> str`` for ``implementation.evaluate`` and ``transcribe``
(``train_minimal.py --decoder flashlight``), and ``benchmarks/bench_beam_search.py`` measures the two side
by side. It imports ``implementation`` (never the other way round).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterable

import torch
from torch import Tensor

from implementation import (
    _CHAR_TO_ID,
    _KENLM_BINARY_MAGIC,
    ALPHABET,
    BLANK,
    BOS,
    EOS,
    NUM_CLASSES,
    UNK,
    decode_labels,
    normalize_text,
    outside_alphabet,
)

# ``implementation.prefix_beam_search`` scores the LM in Python, far too slow for a LibriSpeech-sized LM
# (hundreds of thousands of words, millions of n-grams). torchaudio's ``ctc_decoder`` wraps the
# C++ beam search of flashlight-text (wav2letter's decoder) and KenLM, which reads ARPA and binary LMs.
# How we drive it, and why:
# * Lexicon decoding. flashlight's lexicon-free decoder asks its LM about every *token*, so it wants a
#   character LM. A word LM (the paper's, §3.8) needs the lexicon decoder: it walks a trie of spellings
#   and scores the LM when a word's spelling completes. It can only output words of its lexicon, so we
#   build the lexicon from the LM's own vocabulary (the unigrams of an ARPA file), plus any words passed in
#   (e.g. the training transcripts'; needed for a binary LM, whose vocabulary we cannot read). Our own
#   beam search can spell any word (an unseen one scores as ``<unk>``): a trade-off to know about.
# * Every word ends in a space. Our space (label 1) is flashlight's "silence" token, renamed "|" because
#   lexicon files separate tokens by spaces, and each word is spelt with a trailing "|" ("cat c a t |"),
#   as in torchaudio's tutorial. Measured why: spelt without it, a word is complete on its last letter
#   and the decoder is back at the trie's root, where a repeat of that letter cannot continue (at the
#   root only a silence repeats), so a trained model's held "sssss" before a space was read as "sing sky",
#   far worse than greedy decoding. Our model emits no space after the last word, so we append
#   one frame in which the space is certain (log-probability 0): the last word completes on it for free.
# * The same score. KenLM scores in log10 and we in nats, so ``lm_weight = alpha ln 10`` and ``word_score =
#   beta``; with ``log_add=True`` alignments of the same text are summed, as ours are. Where the two find
#   the same text their scores agree: within 0.01 nats on most utterances of the trained default model,
#   within 0.1 on flat synthetic posteriors, where flashlight's is the higher (it merges hypotheses by LM
#   state and trie position, which may sum in a little of another text); tests/test_devices_decoders.py.
# * Without an LM it decodes lexicon-free: a plain CTC beam search over characters.

FLASHLIGHT_REQUIREMENT = "flashlight-text==0.0.7"
FLASHLIGHT_TOKENS = tuple("|" if symbol == " " else symbol for symbol in ALPHABET)  # index = our label id


def language_model_format(path: str | os.PathLike) -> str:
    """``"arpa"`` or ``"binary"`` (KenLM's ``build_binary``) from the file's first bytes; else ValueError."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no language model at {path!r}: give a KenLM ARPA or binary file")
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if head.startswith(_KENLM_BINARY_MAGIC):
        return "binary"
    if head.lstrip().startswith(b"\\data\\"):
        return "arpa"
    hint = " (gzip: unpack it first)" if head.startswith(b"\x1f\x8b") else ""
    raise ValueError(
        f"{path!r} is neither an ARPA language model (its first line is \\data\\) nor a KenLM binary file{hint}"
    )


def arpa_vocabulary(path: str | os.PathLike) -> list[str]:
    """The words of an ARPA file's unigram section, in file order, without ``<s>``, ``</s>``, ``<unk>``.

    Reads only the unigrams (a LibriSpeech 4-gram's 200,000 words take a second), not the n-grams.
    """
    words, in_unigrams = [], False
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            line = line.strip()
            if line == "\\1-grams:":
                in_unigrams = True
            elif in_unigrams and line.startswith("\\"):
                break
            elif in_unigrams and line:
                fields = line.split()
                if len(fields) >= 2 and fields[1] not in (BOS, EOS, UNK):
                    words.append(fields[1])
    if not words:
        raise ValueError(f"{os.fspath(path)!r} has no \\1-grams: section with words; is it an ARPA file?")
    return words


def _spellable(word: str) -> bool:
    """A single word made of the alphabet's letters and apostrophes only."""
    return bool(word) and " " not in word and not outside_alphabet(word)


def _import_ctc_decoder():
    """torchaudio's ``ctc_decoder``, or one clear ImportError naming the package to install."""
    try:
        import flashlight.lib.text.decoder  # noqa: F401  (the C++ decoder torchaudio wraps)
        from torchaudio.models.decoder import ctc_decoder
    except (ImportError, RuntimeError) as error:
        raise ImportError(
            f"--decoder flashlight needs flashlight-text: pip install {FLASHLIGHT_REQUIREMENT} ({error})"
        ) from None
    return ctc_decoder


def flashlight_decoder(
    lm_path: str | os.PathLike | None = None,
    words: Iterable[str] = (),
    beam_width: int = 32,
    alpha: float = 0.0,
    beta: float = 0.0,
    beam_threshold: float = 50.0,
) -> FlashlightDecoder:
    """A CTC beam-search decoder from flashlight-text (torchaudio's ``ctc_decoder``), with a KenLM word LM.

    The score is §3.8's ``Q(y) = log p_ctc(y|x) + alpha log p_lm(y) + beta word_count(y)``, as in
    ``prefix_beam_search``. See the comment above for the lexicon and the scales.

    Args:
        lm_path: a KenLM ARPA or binary file (``NGramLM.to_arpa`` writes one), or None for no LM.
        words: more words for the lexicon, beside an ARPA LM's own (needed with a binary LM). Words with
            characters outside the alphabet (after lower-casing) cannot be spelt and are left out.
        beam_width: hypotheses kept per frame.
        alpha: LM weight (on the natural-log LM score); beta: word insertion bonus.
        beam_threshold: drop hypotheses this far (nats) below the best one (speed).

    Returns:
        ``decode``: ``decode(log_probs) -> str`` for the ``(T, C)`` log-probabilities of one utterance;
        ``decode.best(log_probs) -> (text, score)``.

    Raises:
        ImportError: flashlight-text is not installed. FileNotFoundError / ValueError: a missing or
        unreadable LM, or no word to build a lexicon from.
    """
    if beam_width < 1:
        raise ValueError(f"beam_width must be >= 1, got {beam_width}")
    ctc_decoder = _import_ctc_decoder()
    vocabulary = list(words)
    if lm_path is not None:
        lm_path = os.fspath(lm_path)
        if language_model_format(lm_path) == "arpa":
            vocabulary = arpa_vocabulary(lm_path) + vocabulary
        elif not vocabulary:
            raise ValueError(
                f"{lm_path!r} is a KenLM binary file, whose words cannot be read here: pass the words to "
                "decode (words=...), or give the ARPA file"
            )
    # word as the LM spells it -> our letters (a LibriSpeech LM is upper case)
    lexicon = {word: normalize_text(word) for word in dict.fromkeys(vocabulary)}
    lexicon = {word: text for word, text in lexicon.items() if _spellable(text)}
    if lm_path is not None and not lexicon:
        raise ValueError("none of the language model's words can be spelt in the alphabet (a-z and ')")
    options = dict(tokens=list(FLASHLIGHT_TOKENS), beam_size=beam_width, beam_threshold=beam_threshold)
    options |= dict(blank_token=FLASHLIGHT_TOKENS[BLANK], sil_token="|", log_add=True)
    with tempfile.TemporaryDirectory() as folder:
        lexicon_path = None
        if lexicon:
            lexicon_path = os.path.join(folder, "lexicon.txt")  # one line per word: "word w o r d |"
            with open(lexicon_path, "w", encoding="utf-8") as handle:
                handle.writelines(f"{word} {' '.join(text)} |\n" for word, text in lexicon.items())
        try:
            decoder = ctc_decoder(
                lexicon_path, lm=lm_path, lm_weight=alpha * math.log(10.0), word_score=beta, **options
            )
        except RuntimeError as error:  # KenLM's parse errors: the last line says what was wrong
            lines = [line for line in str(error).splitlines() if line.strip()]
            reason = lines[-1] if lines else error
            raise ValueError(f"{lm_path!r}: KenLM could not read it: {reason}") from None

    return FlashlightDecoder(decoder, lexicon)


class FlashlightDecoder:
    """``decode(log_probs (T, C)) -> str`` with flashlight-text's beam search; made by ``flashlight_decoder``."""

    def __init__(self, decoder, lexicon: dict[str, str]):
        self.decoder = decoder  # torchaudio's CTCDecoder
        self.lexicon = lexicon  # word as the LM spells it -> our letters; empty when lexicon-free

    def best(self, log_probs: Tensor) -> tuple[str, float]:
        """``(text, score)`` of the best hypothesis; the score is §3.8's Q(y) in nats."""
        if log_probs.dim() != 2 or log_probs.shape[1] != NUM_CLASSES:
            raise ValueError(f"expected (T, {NUM_CLASSES}) log-probabilities, got {tuple(log_probs.shape)}")
        emissions = log_probs.detach().float().cpu()  # (T, C)
        if self.lexicon:  # one more frame, a certain space, on which the last word completes (see above)
            space = torch.full((1, NUM_CLASSES), -1e30)  # (1, C): log-probability "never" ...
            space[0, _CHAR_TO_ID[" "]] = 0.0  # ... but for the space: certain
            emissions = torch.cat([emissions, space])  # (T + 1, C)
        hypotheses = self.decoder(emissions.contiguous()[None])[0]  # emissions (1, T, C)
        if not hypotheses:  # every hypothesis was pruned, e.g. no lexicon word fits: nothing to say
            return "", -math.inf
        best = hypotheses[0]
        if self.lexicon:  # the words (adjacent words need not be separated by a space label)
            text = " ".join(self.lexicon.get(word, normalize_text(word)) for word in best.words)
        else:  # lexicon-free: the letters, runs of spaces folded
            text = " ".join(decode_labels(best.tokens).split())
        return text, float(best.score)

    def __call__(self, log_probs: Tensor) -> str:
        return self.best(log_probs)[0]
