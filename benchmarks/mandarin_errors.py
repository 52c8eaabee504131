"""What a Mandarin model gets wrong: homophones, the characters it confuses, its error per dev voice.

    python benchmarks/mandarin_errors.py --run runs/mandarin        # after python train_minimal.py --data mandarin

Reads the run's checkpoint and its metrics.json (the flags it ran with), rebuilds its dev sets (from the
cache) and its character LM exactly as the run did, decodes greedily and with beam + LM at the run's
alpha and beta, and prints for each dev set: CER, how many of the character edits are a character
replaced by its homophone (`corpora.MANDARIN_HOMOPHONES`: the audio cannot tell them apart), the most
frequent substitutions, and the CER per dev voice variant.
"""

import argparse
import collections
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import corpora  # noqa: E402
import implementation as ds2  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/mandarin", help="a run folder of train_minimal.py --data mandarin")
    p.add_argument("--show", type=int, default=8, help="substitutions to list")
    args = p.parse_args(argv)
    run = Path(args.run)
    model, _ = ds2.load_checkpoint(run / "checkpoint.pt")
    flags = json.loads((run / "metrics.json").read_text())["args"]
    if flags["data"] != "mandarin":
        p.error(f"{run} was trained with --data {flags['data']}, not mandarin")
    cache = dict(cache_dir=flags["cache_dir"], workers=flags["workers"], corpus="mandarin")
    dev = corpora.cached_splits(0, flags["dev_size"], flags["seed"], flags["noise"], **cache)
    dev_texts = {text for name in ("dev-clean", "dev-noisy") for text in dev[name].texts}
    lm = corpora.mandarin_lm(flags["seed"], flags["lm_sentences"], exclude=dev_texts)
    for name in ("dev-clean", "dev-noisy"):
        split = dev[name]
        spectrograms = ds2.featurize_batch(split.waveforms, prior=model.config.causal_prior)
        search = (lm, flags["beam_width"], flags["alpha"], flags["beta"])
        result = ds2.evaluate(model, spectrograms, split.texts, *search, workers=flags["workers"])
        print(f"{name}: {len(split)} utterances, {sum(map(len, split.texts))} characters")
        for decoder, key in (("greedy", "hypotheses"), ("beam + character LM", "beam_hypotheses")):
            hypotheses = result[key]
            homophones, edits = corpora.homophone_errors(split.texts, hypotheses)
            cer = ds2.character_error_rate(split.texts, hypotheses)
            share = homophones / max(edits, 1)
            print(
                f"  {decoder:20s} CER {100 * cer:5.2f}%: {edits} edits, {homophones} homophones ({100 * share:.0f}%)"
            )
            swaps = collections.Counter(
                (r, h)
                for ref, hyp in zip(split.texts, hypotheses, strict=True)
                for r, h in ds2.edit_alignment(ref, hyp)
                if r is not None and h is not None and r != h
            )
            listed = ", ".join(f"{r}->{h} {n}" for (r, h), n in swaps.most_common(args.show))
            print(f"  {'':20s} most frequent substitutions: {listed}")
        by_voice = collections.defaultdict(lambda: [0, 0])
        for speaker, ref, hyp in zip(split.speakers, split.texts, result["hypotheses"], strict=True):
            by_voice[speaker.variant][0] += ds2.edit_distance(ref, hyp)
            by_voice[speaker.variant][1] += len(ref)
        voices = ", ".join(f"{v} {100 * e / n:.1f}%" for v, (e, n) in sorted(by_voice.items()))
        print(f"  greedy CER by voice variant: {voices}\n")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
