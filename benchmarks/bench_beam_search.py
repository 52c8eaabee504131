"""CTC beam search: ``implementation.prefix_beam_search`` vs torchaudio's ``ctc_decoder`` (flashlight-text).

What is decoded. ``--checkpoint runs/ds2/checkpoint.pt`` decodes a trained model's outputs on new noisy
(10 dB SNR) synthetic speech of unheard speakers. Without it, the script builds CTC posteriorgrams from
held-out sentences of the lesson's grammar (``synthetic_posteriorgrams``): each character lasts 1-4 frames of a peaked distribution with 0-2 blank frames between
characters; then corruption: whole characters or single frames confused with a similar letter (with
the true letter as a strong runner-up) and Gaussian noise on the logits, tuned so greedy CER is about
10%. ``--posteriors FILE`` replaces them with a trained model's outputs: a ``torch.save``d dict
``{"log_probs": [(T, 29) tensors], "texts": [str]}``.

The language model. ``NGramLM.train(order=3)`` on sentences from the same grammar with another seed,
written with ``to_arpa``; flashlight's KenLM loads that file (the script checks its scores against ours).

Decoders, each at beam widths ``--beams`` (default 16 and 32), over the same test set:
    ours                prefix_beam_search, no LM, then with the LM (alpha, beta)
    fl free             flashlight lexicon-free decoder, no LM, log_add False (max-merge) and True
    fl free + word LM   flashlight lexicon-free decoder with *our* word LM plugged in as a
                        ``CTCDecoderLM`` that scores a word when "|" (space) ends it, plus beta per word:
                        the same objective Q(y) as ours, so differences come from the search alone.
                        (torchaudio's lexicon-free decoder with an ARPA path would load it as a
                        *character*-level LM: it looks the token strings up as words; unusable here.)
    fl lexicon + KenLM  flashlight lexicon decoder, the production setup of torchaudio's tutorial: the
                        ARPA file through KenLM, words restricted to the LM's vocabulary (a lexicon).
alpha and beta are tuned for each LM decoder on a separate tuning set over the same grid (at the
smallest beam width, max-merge for flashlight); KenLM scores are log10, so flashlight's ``lm_weight``
is ``alpha * ln 10`` for the KenLM decoder. Printed per decoder: CER, WER, total decode time, and the
share of utterances where our best transcript equals flashlight's exactly.

    python benchmarks/bench_beam_search.py [--utterances 60] [--tune-utterances 30] [--beams 16 32]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import tempfile
import time

import numpy as np
import torch
import torchaudio
from torchaudio.models.decoder import CTCDecoderLM, CTCDecoderLMState, ctc_decoder

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import implementation as ds2  # noqa: E402
import production_decoder  # noqa: E402

# ----------------------------------------------------------------------------------------------------------
# Held-out sentences and posteriorgrams
# ----------------------------------------------------------------------------------------------------------
# Letters an acoustic model plausibly confuses (vowels, voiced/voiceless pairs, nasals, liquids, ...).
SIMILAR_GROUPS = ["aeo", "eiy", "ou", "bp", "dt", "gkc", "mn", "sz", "fv", "lr", "wu", "hf", "jg", "qk", "xs"]
CONFUSABLE: dict[str, list[str]] = {}
for _group in SIMILAR_GROUPS:
    for _char in _group:
        CONFUSABLE.setdefault(_char, [])
        CONFUSABLE[_char] += [c for c in _group if c != _char and c not in CONFUSABLE[_char]]


def generate_sentence(rng: random.Random) -> str:
    """A sentence from the lesson's own grammar (implementation.random_sentence), driven by ``rng``."""
    return ds2.random_sentence(np.random.default_rng(rng.randrange(2**63)))


def model_posteriorgrams(checkpoint: str, count: int, seed: int) -> tuple[list[torch.Tensor], list[str]]:
    """A trained model's log-probs on ``count`` dev-noisy-like utterances (10 dB SNR) of unheard speakers."""
    model, _ = ds2.load_checkpoint(checkpoint)
    speakers = ds2.make_speaker_pool(40, (seed, 7))  # not the training pool of any train_minimal.py run
    split = ds2.make_split("bench", count, speakers, seed=(seed, 8), noise_kinds=ds2.NOISE_KINDS, snr_db=10.0)
    return ds2.predict(model, [ds2.featurize(w) for w in split.waveforms]), split.texts


def synthetic_posteriorgram(
    text: str, rng: random.Random, confusion: float, noise: float, peak: float = 14.0
) -> torch.Tensor:
    """A CTC posteriorgram ``(T, 29)`` (log-probs) that a decent acoustic model might emit for ``text``."""
    ids = ds2.encode_text(text).tolist()
    intended: list[tuple[int, int | None]] = []  # per frame: (top class, runner-up or None)
    for position, label in enumerate(ids):
        blanks = rng.randint(0, 2)
        if position > 0 and ids[position - 1] == label:
            blanks = max(blanks, 1)  # CTC needs a blank between repeated letters
        intended += [(ds2.BLANK, None)] * blanks
        char = ds2.ALPHABET[label]
        options = CONFUSABLE.get(char)
        wrong = ds2._CHAR_TO_ID[rng.choice(options)] if options else None
        whole = options is not None and rng.random() < confusion  # the whole character is misheard
        for _ in range(rng.randint(1, 4)):
            if options and (whole or rng.random() < confusion / 2):  # or just one frame of it
                intended.append((wrong, label))
            else:
                intended.append((label, None))
    intended += [(ds2.BLANK, None)] * rng.randint(0, 2)
    generator = torch.Generator().manual_seed(rng.randrange(2**31))
    logits = noise * torch.randn(len(intended), ds2.NUM_CLASSES, generator=generator)  # (T, C)
    for t, (top, runner_up) in enumerate(intended):
        logits[t, top] += peak
        if runner_up is not None:
            logits[t, runner_up] += peak - rng.uniform(0.3, 3.0)
    return logits.log_softmax(dim=-1)  # (T, C)


def synthetic_posteriorgrams(texts, seed: int, confusion: float, noise: float) -> list[torch.Tensor]:
    rng = random.Random(seed)
    return [synthetic_posteriorgram(text, rng, confusion, noise) for text in texts]


def load_test_set(args) -> tuple[list[torch.Tensor], list[str], list[torch.Tensor], list[str]]:
    """(tuning log-probs, tuning texts, test log-probs, test texts), from ``--posteriors`` or synthetic."""
    if args.checkpoint:
        log_probs, texts = model_posteriorgrams(
            args.checkpoint, args.tune_utterances + args.utterances, args.seed
        )
        k = args.tune_utterances
        return log_probs[:k], texts[:k], log_probs[k:], texts[k:]
    if args.posteriors:
        data = torch.load(args.posteriors, weights_only=True)
        log_probs, texts = [lp.float().contiguous() for lp in data["log_probs"]], list(data["texts"])
        k = args.tune_utterances
        return log_probs[:k], texts[:k], log_probs[k : k + args.utterances], texts[k : k + args.utterances]
    rng = random.Random(args.seed)
    tune_texts = [generate_sentence(rng) for _ in range(args.tune_utterances)]
    test_texts = [generate_sentence(rng) for _ in range(args.utterances)]
    tune = synthetic_posteriorgrams(tune_texts, args.seed + 1, args.confusion, args.noise)
    test = synthetic_posteriorgrams(test_texts, args.seed + 2, args.confusion, args.noise)
    return tune, tune_texts, test, test_texts


# ----------------------------------------------------------------------------------------------------------
# Flashlight (torchaudio ctc_decoder) set-up
# ----------------------------------------------------------------------------------------------------------
# Same token indices as our ALPHABET, so emissions go in unchanged: blank "-", space "|" (flashlight's
# word separator, "silence"), apostrophe, a-z.
FLASHLIGHT_TOKENS = ["-", "|", *ds2.ALPHABET[2:]]
SPACE = 1


class WordLMForFlashlight(CTCDecoderLM):
    """Our word n-gram LM seen by flashlight's lexicon-free decoder, one character at a time.

    A state holds (previous words, the word being spelt). A word's ``ln p`` (plus ``beta / alpha``, so
    that flashlight's ``lm_weight * score`` adds ``alpha ln p + beta``) is scored when "|" ends it, and
    the last word and ``</s>`` at the end: exactly the Q(y) of ``implementation.prefix_beam_search``.
    States are a trie over the token sequence (``state.child``), so flashlight merges only hypotheses
    with identical text, as ours does.
    """

    def __init__(self, lm: ds2.NGramLM, alpha: float, beta: float):
        CTCDecoderLM.__init__(self)
        self.lm, self.bonus = lm, beta / alpha
        self.info: dict[CTCDecoderLMState, tuple[tuple[str, ...], str]] = {}

    def start(self, start_with_nothing: bool = False):
        state = CTCDecoderLMState()
        self.info[state] = ((ds2.BOS,), "")
        return state

    def score(self, state, token_index: int):
        child = state.child(token_index)
        history, partial = self.info[state]
        if token_index == SPACE:
            if not partial:  # a leading or doubled space ends no word
                self.info.setdefault(child, (history, ""))
                return child, 0.0
            self.info.setdefault(child, ((*history[-(self.lm.order - 2) or len(history) :], partial), ""))
            return child, self.lm.log_prob(partial, history) + self.bonus
        self.info.setdefault(child, (history, partial + FLASHLIGHT_TOKENS[token_index]))
        return child, 0.0

    def finish(self, state):
        history, partial = self.info[state]
        total = 0.0
        if partial:
            total += self.lm.log_prob(partial, history) + self.bonus
            history = (*history, partial)
        return state, total + self.lm.log_prob(ds2.EOS, history)


def flashlight_text(hypothesis, use_words: bool) -> str:
    if use_words:
        return " ".join(hypothesis.words)
    chars = [" " if i == SPACE else FLASHLIGHT_TOKENS[i] for i in hypothesis.tokens.tolist()]
    return " ".join("".join(chars).split())


def check_arpa_with_kenlm(arpa_path: str, lm: ds2.NGramLM, sentences: list[str]) -> float:
    """Load our ARPA file with flashlight's KenLM; return max |KenLM - ours| over sentences (log10)."""
    from flashlight.lib.text.decoder.kenlm import KenLM
    from flashlight.lib.text.dictionary import create_word_dict

    vocabulary = [w for w in lm.vocabulary if w not in (ds2.BOS, ds2.EOS)]
    word_dict = create_word_dict({w: [[w]] for w in vocabulary})
    kenlm = KenLM(arpa_path, word_dict)
    worst = 0.0
    for sentence in sentences:
        state, total = kenlm.start(False), 0.0
        for word in sentence.split():
            state, score = kenlm.score(state, word_dict.get_index(word))
            total += score
        total += kenlm.finish(state)[1]
        worst = max(worst, abs(total - lm.score(sentence) / math.log(10.0)))
    return worst


# ----------------------------------------------------------------------------------------------------------
# Running and scoring the decoders
# ----------------------------------------------------------------------------------------------------------


def run_ours(log_probs, beam, lm=None, alpha=0.0, beta=0.0):
    """Our decoder over a list of utterances: (texts, seconds, number that raised an exception)."""
    texts, failures = [], 0
    start = time.perf_counter()
    for lp in log_probs:
        try:
            texts.append(ds2.prefix_beam_search(lp, beam_width=beam, lm=lm, alpha=alpha, beta=beta))
        except Exception:  # counted and reported, so the benchmark still runs on a broken decoder
            texts.append("")
            failures += 1
    return texts, time.perf_counter() - start, failures


def run_flashlight(log_probs, beam, log_add, lm=None, lexicon=None, lm_weight=0.0, word_score=0.0):
    decoder = ctc_decoder(
        lexicon=lexicon,
        tokens=FLASHLIGHT_TOKENS,
        lm=lm,
        beam_size=beam,
        lm_weight=lm_weight,
        word_score=word_score,
        log_add=log_add,
        blank_token="-",
        sil_token="|",
    )
    texts = []
    start = time.perf_counter()
    for lp in log_probs:  # one at a time, as ours; the decoder is built once, outside the clock
        texts.append(flashlight_text(decoder(lp[None].contiguous())[0][0], use_words=lexicon is not None))
    return texts, time.perf_counter() - start, 0


def tune(name, run, grid, log_probs, refs):
    """Best (alpha, beta) on the tuning set by WER, then CER."""
    results = []
    for alpha, beta in grid:
        hyps = run(log_probs, alpha, beta)[0]
        results.append((ds2.word_error_rate(refs, hyps), ds2.character_error_rate(refs, hyps), alpha, beta))
    wer, cer, alpha, beta = min(results)
    print(f"  tuned {name:<28} alpha={alpha:<5g} beta={beta:<5g} (tuning WER {wer:.3f}, CER {cer:.3f})")
    return alpha, beta


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--utterances", type=int, default=60, help="test utterances (default 60)")
    parser.add_argument("--tune-utterances", type=int, default=30, help="alpha/beta tuning set (default 30)")
    parser.add_argument("--beams", type=int, nargs="+", default=[16, 32], help="beam widths (default 16 32)")
    parser.add_argument("--lm-sentences", type=int, default=5000, help="LM training sentences (default 5000)")
    parser.add_argument(
        "--alphas", type=float, nargs="+", default=[0.5, 1.0, 1.5], help="alpha grid (LM weight, natural log)"
    )
    parser.add_argument("--betas", type=float, nargs="+", default=[0.0, 2.0], help="beta grid (word bonus)")
    parser.add_argument("--confusion", type=float, default=0.06, help="letter confusion rate (default 0.06)")
    parser.add_argument("--noise", type=float, default=1.5, help="logit noise std (default 1.5)")
    parser.add_argument("--posteriors", default=None, help="a trained model's outputs instead of synthetic")
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="decode a trained model's outputs (e.g. runs/ds2/checkpoint.pt) on new 10 dB-SNR synthetic speech",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the test set (default 0)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # both decoders are single-threaded per utterance

    tune_lp, tune_refs, test_lp, test_refs = load_test_set(args)
    lm_rng = random.Random(args.seed + 1000)  # same grammar, different sentences
    lm = ds2.NGramLM.train([generate_sentence(lm_rng) for _ in range(args.lm_sentences)], order=3)
    workdir = tempfile.mkdtemp(prefix="bench_beam_")
    arpa = os.path.join(workdir, "lm.arpa")
    lm.to_arpa(arpa)
    lexicon = os.path.join(workdir, "lexicon.txt")
    with open(lexicon, "w", encoding="utf-8") as handle:
        for word in lm.vocabulary:
            if word not in (ds2.BOS, ds2.EOS, ds2.UNK):
                handle.write(f"{word} {' '.join(word)} |\n")

    frames = sum(lp.shape[0] for lp in test_lp)
    greedy = [ds2.greedy_decode(lp)[0] for lp in test_lp]
    print(f"torch {torch.__version__}, torchaudio {torchaudio.__version__}, 1 thread")
    print(f"test set: {len(test_lp)} utterances, {frames} frames; tuning set: {len(tune_lp)} utterances")
    print(f"LM: order {lm.order}, {len(lm.vocabulary)} words, {len(lm.probs)} n-grams, {arpa}")
    kenlm_difference = check_arpa_with_kenlm(arpa, lm, test_refs[:20])  # KenLM prints its loading bar
    print("KenLM (flashlight) loads our ARPA file; max |log10 p(sentence)| difference vs ours over")
    print(f"  20 test sentences: {kenlm_difference:.1e}")

    grid = [(a, b) for a in args.alphas for b in args.betas]
    b0 = min(args.beams)
    print(f"tuning alpha x beta over {grid} at beam {b0}:")
    ours_ab = tune("ours + LM", lambda lp, a, b: run_ours(lp, b0, lm, a, b), grid, tune_lp, tune_refs)
    free_ab = tune(
        "fl free + word LM",
        lambda lp, a, b: run_flashlight(lp, b0, False, WordLMForFlashlight(lm, a, b), lm_weight=a),
        grid,
        tune_lp,
        tune_refs,
    )
    ken_ab = tune(
        "fl lexicon + KenLM",
        lambda lp, a, b: run_flashlight(lp, b0, False, arpa, lexicon, a * math.log(10.0), b),
        grid,
        tune_lp,
        tune_refs,
    )

    print()
    print(f"{'decoder':<34}{'beam':>5}{'CER':>8}{'WER':>8}{'time s':>9}{'= ours':>9}  notes")
    print(
        f"{'greedy':<34}{'-':>5}{ds2.character_error_rate(test_refs, greedy):8.4f}"
        f"{ds2.word_error_rate(test_refs, greedy):8.4f}"
    )
    for beam in args.beams:
        ours, seconds, failures = run_ours(test_lp, beam)
        ours_lm, seconds_lm, failures_lm = run_ours(test_lp, beam, lm, *ours_ab)
        rows = [
            ("ours, no LM", (ours, seconds, failures), ours),
            ("ours + LM", (ours_lm, seconds_lm, failures_lm), ours_lm),
        ]
        for log_add in (False, True):
            merge = "log_add" if log_add else "max"
            rows.append((f"fl free, no LM, {merge}", run_flashlight(test_lp, beam, log_add), ours))
        for log_add in (False, True):
            merge = "log_add" if log_add else "max"
            rows.append(
                (
                    f"fl free + word LM, {merge}",
                    run_flashlight(
                        test_lp, beam, log_add, WordLMForFlashlight(lm, *free_ab), lm_weight=free_ab[0]
                    ),
                    ours_lm,
                )
            )
        for log_add in (False, True):
            merge = "log_add" if log_add else "max"
            result = run_flashlight(
                test_lp, beam, log_add, arpa, lexicon, ken_ab[0] * math.log(10.0), ken_ab[1]
            )
            rows.append((f"fl lexicon + KenLM, {merge}", result, ours_lm))
        # The CLI's --decoder flashlight: the same LM, ours' alpha and beta (they mean the same there).
        decode = production_decoder.flashlight_decoder(
            arpa, beam_width=beam, alpha=ours_ab[0], beta=ours_ab[1]
        )
        began = time.perf_counter()
        texts = [decode(lp) for lp in test_lp]
        rows.append(
            (
                "production_decoder.flashlight_decoder (CLI's)",
                (texts, time.perf_counter() - began, 0),
                ours_lm,
            )
        )
        for name, (hyps, secs, fails), reference_ours in rows:
            same = sum(h == o for h, o in zip(hyps, reference_ours, strict=True)) / len(hyps)
            agree = "" if name.startswith("ours") else f"{100 * same:8.1f}%"
            note = f"{fails} utterances raised" if fails else ""
            print(
                f"{name:<34}{beam:>5}{ds2.character_error_rate(test_refs, hyps):8.4f}"
                f"{ds2.word_error_rate(test_refs, hyps):8.4f}{secs:9.2f}{agree:>9}  {note}"
            )
    print(
        "'= ours': share of utterances whose best transcript equals ours exactly (no-LM rows vs ours no LM,"
    )
    print("LM rows vs ours + LM); the Python LM callback dominates 'fl free + word LM' times.")


if __name__ == "__main__":
    main()
