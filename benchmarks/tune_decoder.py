"""Tune the beam search's LM weight alpha and bonus beta (§3.8) for a trained model, on a split of its own.

    python benchmarks/tune_decoder.py --checkpoint runs/mandarin/checkpoint.pt --data mandarin
    python benchmarks/tune_decoder.py --data mandarin --orders-only     # just the character LM's order

Two things, printed:

  1. The LM's order (Mandarin: the character LM's; English: the word LM's): per-token perplexity on 2,000
     held-out sentences of the grammar, none of them in the LM's text, for orders 2-5.
  2. A grid of (alpha, beta) for Q(y) = log p_ctc + alpha log p_lm + beta |y|, where |y| counts the LM's
     tokens (words, or Mandarin characters), scored by beam + LM CER on a *tuning split*: utterances
     spoken by the dev voices (never heard in training) with a seed of their own (``--tune-seed``), so
     they are neither the run's dev utterances nor, for Mandarin, sentences the LM was trained on (the LM
     is rebuilt here as the run builds it, leaving out the tuning and the dev sentences). The dev split is
     not looked at.

The chosen values are the defaults of ``train_minimal.py`` (``corpora.DECODING``); benchmarks/README.md
keeps the printed tables.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import corpora  # noqa: E402
import implementation as ds2  # noqa: E402


def lm_sentences(data: str, seed: int, count: int) -> list[str]:
    """``count`` sentences of the corpus's grammar drawn from ``seed``'s LM stream (as the run's LM)."""
    rng = np.random.default_rng([seed, 99])
    draw = corpora.random_mandarin_sentence if data == "mandarin" else ds2.random_sentence
    return [draw(rng) for _ in range(count)]


def perplexities(data: str, seed: int, count: int, orders) -> None:
    alphabet = corpora.MANDARIN if data == "mandarin" else ds2.ENGLISH
    train = lm_sentences(data, seed, count)
    rng = np.random.default_rng([seed, 98])  # held out: sentences that are not in the LM's text
    draw = corpora.random_mandarin_sentence if data == "mandarin" else ds2.random_sentence
    seen = set(train)
    held_out = [s for s in (draw(rng) for _ in range(4 * 2000)) if s not in seen][:2000]
    tokens = sum(len(alphabet.tokens(s)) + 1 for s in held_out)  # + </s>
    print(f"LM order: per-token perplexity on {len(held_out)} held-out sentences ({tokens} tokens with </s>)")
    for order in orders:
        lm = ds2.NGramLM.train(train, order=order, alphabet=alphabet)
        total = sum(lm.score(s, alphabet=alphabet) for s in held_out)
        print(f"  order {order}: perplexity {np.exp(-total / tokens):7.3f}   ({len(lm.probs)} n-grams)")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="a trained model (its alphabet must be the corpus's)")
    p.add_argument("--data", choices=["mandarin", "letters", "espeak"], default="mandarin")
    p.add_argument("--seed", type=int, default=0, help="the run's --seed (its LM and dev split)")
    p.add_argument("--dev-size", type=int, default=200, help="the run's --dev-size (its dev sentences)")
    p.add_argument("--lm-sentences", type=int, default=20_000, help="the run's --lm-sentences")
    p.add_argument("--tune-seed", type=int, default=1000, help="seed of the tuning split")
    p.add_argument("--utterances", type=int, default=100, help="tuning utterances, clean and noisy each")
    p.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0, 1.5])
    p.add_argument("--betas", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0])
    p.add_argument("--beam-width", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--orders", type=int, nargs="+", default=[2, 3, 4, 5])
    p.add_argument("--orders-only", action="store_true", help="print the LM order table and stop")
    args = p.parse_args(argv)
    began = time.perf_counter()
    perplexities(args.data, args.seed, args.lm_sentences, args.orders)
    if args.orders_only:
        return
    if not args.checkpoint:
        p.error("--checkpoint is needed for the (alpha, beta) grid")
    model, _ = ds2.load_checkpoint(args.checkpoint)
    corpus = args.data if args.data in corpora.CORPORA else "letters"
    tuning = corpora.cached_splits(0, args.utterances, args.tune_seed, corpus=corpus, workers=args.workers)
    dev = corpora.cached_splits(0, args.dev_size, args.seed, corpus=corpus, workers=args.workers)
    texts = [t for name in ("dev-clean", "dev-noisy") for t in tuning[name].texts]
    waveforms = [w for name in ("dev-clean", "dev-noisy") for w in tuning[name].waveforms]
    if args.data == "mandarin":  # as the run builds it, less the tuning sentences too
        leave_out = set(texts) | {t for name in ("dev-clean", "dev-noisy") for t in dev[name].texts}
        lm = corpora.mandarin_lm(args.seed, args.lm_sentences, exclude=leave_out)
    else:
        lm = ds2.grammar_lm(args.seed, args.lm_sentences)
    spectrograms = ds2.featurize_batch(waveforms, prior=model.config.causal_prior)
    greedy = ds2.evaluate(model, spectrograms, texts)
    print(
        f"tuning split: {len(texts)} utterances (seed {args.tune_seed}, dev voices); greedy CER {100 * greedy['cer']:.2f}%"
    )
    print(f"beam {args.beam_width} + LM CER (%) on the tuning split; rows alpha, columns beta")
    print("alpha \\ beta " + "".join(f"{b:>8g}" for b in args.betas))
    results = {}
    for alpha in args.alphas:
        row = []
        for beta in args.betas:
            r = ds2.evaluate(
                model, spectrograms, texts, lm, args.beam_width, alpha, beta, workers=args.workers
            )
            results[alpha, beta] = r["beam_cer"]
            row.append(f"{100 * r['beam_cer']:8.2f}")
        print(f"{alpha:>12g} " + "".join(row), flush=True)
    (alpha, beta), cer = min(results.items(), key=lambda item: item[1])
    print(f"best: alpha {alpha:g}, beta {beta:g}: CER {100 * cer:.2f}% ({time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
