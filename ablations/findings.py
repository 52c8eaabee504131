"""The paper's findings beside ours: one table, computed from the sweeps' JSON alone.

    python ablations/findings.py            # print the heading, lead and table (Markdown) from results/*.json
    python ablations/findings.py --write    # and put them into README.md, each part between its two markers

Each finding names comparisons between two arms of its sweep (two variants, or two decoders of one
model), the first of them its **primary** comparison, named before the results existed. Every arm runs
the same seeds, so a comparison is **paired**: for each seed, the log ratio ``ln(b / a)`` of one
statistic (the headline: dev-noisy greedy CER; rates floored at ``RATE_FLOOR``), then their mean and a
95% Student t-interval over the seeds. Lower is better for every statistic, so a ratio below 1 favours
``b``. The primary comparison decides the finding's verdict:

- **reproduced** when the interval lies wholly on the paper's side of 1;
- **contradicted** when it lies wholly on the other side;
- **inconclusive** otherwise: these seeds cannot tell;

and, where the paper gives numbers, "smaller (larger) than the paper's effect" when the interval
excludes the paper's own ratio, with the number of seeds that would resolve an effect of the paper's
size. The other comparisons are shown with Holm-adjusted p-values (within the finding). Beside each
comparison: takeoff, as k/n seeds per arm with Fisher's exact test (a run has taken off once its dev-clean
learning curve fell below ``run.TAKEOFF_CER``), and the first update it did (t50; a run that never took
off is censored, never averaged). A comparison whose arms mix taken-off and stuck seeds says so.

The reasons are written by hand, one per (sweep, verdict): if a rerun changes a verdict, ``--write``
refuses until someone writes the reason for the new one. ``--write`` also writes the README's heading and
lead sentence (``summary``), with the verdicts counted, so the heading can never claim more than the
table shows. tests/test_ablations.py checks that README.md's table is this script's output for the
committed results; tests/test_docs.py checks the same of the heading and lead sentence.
"""

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import implementation as ds2  # noqa: E402  (for its atomic_write_text: README is never half-written)

RESULTS = HERE / "results"
README = HERE.parent / "README.md"
BEGIN = "<!-- findings table: written by python ablations/findings.py --write; do not edit by hand -->"
END = "<!-- end of findings table -->"
SUMMARY_BEGIN = (
    "<!-- findings summary: written by python ablations/findings.py --write; do not edit by hand -->"
)
SUMMARY_END = "<!-- end of findings summary -->"
STUDY_FORMAT = "deep-speech-2-lesson/ablation/2"  # ablations/run.py's FORMAT
TAKEOFF_CER = 0.5  # ablations/run.py's TAKEOFF_CER: recomputed here from the curves, not read from a flag
RATE_FLOOR = 1e-3  # an error rate of 0 has no logarithm: rates below 0.1% count as 0.1%
CONFIDENCE = 0.95
POWER = 0.80  # for "seeds needed": a paired t-test at CONFIDENCE that finds the paper's effect this often
LEAST, MOST = "<least audio>", "<most audio>"  # the scaling sweep's smallest and largest training sets
PAPER_PER_10X = "per-10x"  # a paper ratio computed from the paper's "relative improvement per 10x data"


# ----------------------------------------------------------------------------------------------------------
# Statistics, exact and dependency-free (scipy is not in requirements.txt)
# ----------------------------------------------------------------------------------------------------------


def regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), by the continued fraction of Numerical Recipes §6.4 (modified Lentz), to ~1e-12."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):  # the fraction converges fast on this side only
        return 1.0 - regularized_beta(b, a, 1.0 - x)
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < 1e-14:
            break
    return front * fraction / a


def t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * regularized_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t (bisection on ``t_cdf``; 0.975 at df 4 is 2.776)."""
    low, high = -1e3, 1e3
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if t_cdf(middle, df) < p else (low, middle)
    return (low + high) / 2


def normal_quantile(p: float) -> float:
    """The ``p`` quantile of the standard normal (bisection on erf)."""
    low, high = -40.0, 40.0
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if 0.5 * math.erfc(-middle / math.sqrt(2)) < p else (low, middle)
    return (low + high) / 2


def fisher_exact(k_a: int, n_a: int, k_b: int, n_b: int) -> float:
    """Two-sided p of Fisher's exact test on the 2x2 table (k_a of n_a vs k_b of n_b took off).

    Every table with the same margins, weighted by its hypergeometric probability; p sums those no more
    probable than the one observed (the usual two-sided definition, as scipy.stats.fisher_exact).
    """
    total, taken = n_a + n_b, k_a + k_b
    weight = lambda k: math.comb(n_a, k) * math.comb(n_b, taken - k)  # noqa: E731
    tables = range(max(0, taken - n_b), min(taken, n_a) + 1)
    observed = weight(k_a)
    return min(
        1.0, sum(weight(k) for k in tables if weight(k) <= observed * (1 + 1e-9)) / math.comb(total, taken)
    )


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment: the family-wise error rate stays at the level the p's are read at."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * len(pvalues), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def paired_interval(logs: list[float], confidence: float = CONFIDENCE) -> dict:
    """Mean of per-seed log ratios, its t-interval, and the two-sided p of "no difference"."""
    n = len(logs)
    mean = sum(logs) / n if n else math.nan
    if n < 2:
        return {"n": n, "mean": mean, "low": -math.inf, "high": math.inf, "sd": math.nan, "p": 1.0}
    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / (n - 1))
    half = t_quantile(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    if sd == 0:
        p = 1.0 if mean == 0 else 0.0
    else:
        p = 2 * (1 - t_cdf(abs(mean) / (sd / math.sqrt(n)), n - 1))
    return {"n": n, "mean": mean, "low": mean - half, "high": mean + half, "sd": sd, "p": p}


# ----------------------------------------------------------------------------------------------------------
# The nine findings: primary comparison first
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """Arm ``a`` against arm ``b``, paired by seed; ``paper_better`` says which the paper favours.

    An arm is a variant of the sweep (or LEAST / MOST) read with ``decoder``; ``decoder_b`` when the two
    arms are two decoders of one model (the lm sweep). ``paper_ratio``: the paper's own b / a, or
    ``PAPER_PER_10X`` for the scaling sweep, or None where our fact sheet has no numbers.
    """

    label: str
    a: str
    b: str
    paper_better: str  # "a" or "b"
    stat: str = "cer"  # "cer", "wer", "seconds_per_epoch", "loss_per_char_max"
    split: str = "dev-noisy"
    decoder: str = "greedy"
    decoder_b: str | None = None
    paper_ratio: float | str | None = None


@dataclass(frozen=True)
class Finding:
    sweep: str
    claim: str  # what the paper finds, in our words, with its section
    paper: str  # the paper's numbers (from ablations/paper_results.json) or what our fact sheet says
    comparisons: tuple[Comparison, ...]  # the first is the primary comparison
    measure: str  # what "ours" shows


def load_paper() -> dict:
    return json.loads((HERE / "paper_results.json").read_text(encoding="utf-8"))


def findings(paper: dict) -> list[Finding]:
    """The nine findings, each with the paper's numbers read from paper_results.json."""
    t = paper["tables"]
    bn, sg, gru, conv, scale = t["depth_bn"], t["sortagrad"], t["rnn_gru"], t["conv"], t["data_scaling"]
    at = {n: i for i, n in enumerate(bn["layers"])}
    per_10x = paper["other"]["relative_improvement_per_10x_data"]["value"]
    noise_share = paper["other"]["noise_augmentation_fraction"]["value"]
    rows = conv["rows"]
    layers = lambda n: f"{n} layer{'s' if n > 1 else ''}"  # noqa: E731
    return [
        Finding(
            "batchnorm",
            "recurrent BatchNorm's benefit grows with depth; at 1 layer it even hurts a little (§3.2, Table 1 topic)",
            "without vs with BN, 1 / 3 / 5 layers: "
            + " / ".join(f"{bn['without_bn'][at[n]]:.2f} vs {bn['with_bn'][at[n]]:.2f}" for n in (1, 3, 5)),
            tuple(
                Comparison(
                    layers(n),
                    f"no-batchnorm-{n}",
                    f"batchnorm-{n}",
                    "a" if n == 1 else "b",
                    paper_ratio=bn["with_bn"][at[n]] / bn["without_bn"][at[n]],
                )
                for n in (5, 3, 1)
            ),
            "with / without recurrent BN",
        ),
        Finding(
            "sortagrad",
            "SortaGrad (shortest utterances first in epoch 1) helps, without and with BN, and steadies early "
            "training (§3.3, Table 2 topic)",
            f"not sorted vs sorted: without BN {sg['baseline']['not sorted']:.2f} vs "
            f"{sg['baseline']['SortaGrad']:.2f}; with BN {sg['BatchNorm']['not sorted']:.2f} vs "
            f"{sg['BatchNorm']['SortaGrad']:.2f}",
            (
                Comparison(
                    "without BN",
                    "no-bn-shuffled",
                    "no-bn-sortagrad",
                    "b",
                    paper_ratio=sg["baseline"]["SortaGrad"] / sg["baseline"]["not sorted"],
                ),
                Comparison(
                    "with BN",
                    "bn-shuffled",
                    "bn-sortagrad",
                    "b",
                    paper_ratio=sg["BatchNorm"]["SortaGrad"] / sg["BatchNorm"]["not sorted"],
                ),
                Comparison(
                    "worst epoch-1 loss per character, without BN",
                    "no-bn-shuffled",
                    "no-bn-sortagrad",
                    "b",
                    "loss_per_char_max",
                ),
                Comparison(
                    "worst epoch-1 loss per character, with BN",
                    "bn-shuffled",
                    "bn-sortagrad",
                    "b",
                    "loss_per_char_max",
                ),
            ),
            "sorted / shuffled",
        ),
        Finding(
            "gru",
            "GRUs beat simple RNNs at every depth (§3.4, Table 3 topic)",
            "simple RNN vs GRU, 1 / 3 / 5 layers: "
            + " / ".join(f"{gru['simple RNN'][at[n]]:.2f} vs {gru['GRU'][at[n]]:.2f}" for n in (1, 3, 5)),
            tuple(
                Comparison(
                    layers(n),
                    f"simple-rnn-{n}",
                    f"gru-{n}",
                    "b",
                    paper_ratio=gru["GRU"][at[n]] / gru["simple RNN"][at[n]],
                )
                for n in (3, 5)
            ),
            "GRU / simple RNN",
        ),
        Finding(
            "conv",
            "2D (frequency x time) convolutions beat 1D (time only), most on noisy speech (§3.5, Table 4 topic)",
            "1D vs 2D, noisy dev, 1 / 2 / 3 layers: "
            + " / ".join(
                f"{rows[f'{n}-layer 1D'][1]:.2f} vs {rows[f'{n}-layer 2D'][1]:.2f}" for n in (1, 2, 3)
            ),
            tuple(
                Comparison(
                    layers(n),
                    f"1d-{n}",
                    f"2d-{n}",
                    "b",
                    paper_ratio=rows[f"{n}-layer 2D"][1] / rows[f"{n}-layer 1D"][1],
                )
                for n in (3, 2)
            ),
            "2D / 1D",
        ),
        Finding(
            "stride",
            "a larger time stride makes the recurrent layers cheaper; with character outputs it costs "
            "accuracy, which is why §3.6 turns to bigram outputs for English when striding more",
            "no numbers on our fact sheet",
            (
                Comparison("CER", "stride-2", "stride-4", "a"),
                Comparison("seconds per epoch", "stride-2", "stride-4", "b", "seconds_per_epoch"),
            ),
            "stride 4 / stride 2",
        ),
        Finding(
            "lookahead",
            "a forward-only model is worse than a bidirectional one; a lookahead (row) convolution over a few "
            "future frames recovers much of the gap at a bounded latency (§3.7)",
            "no numbers on our fact sheet",
            (
                Comparison("+ 200 ms lookahead / forward-only", "forward-only", "lookahead-10", "b"),
                Comparison("bidirectional / forward-only", "forward-only", "bidirectional", "b"),
            ),
            "ratios as labelled",
        ),
        Finding(
            "lm",
            "beam search with a word n-gram LM, Q(y) = log p_ctc + alpha log p_lm + beta wc(y), cuts the "
            "error of greedy decoding (§3.8)",
            "no numbers on our fact sheet",
            tuple(
                Comparison(split, "default-model", "default-model", "b", "wer", split, "greedy", "beam_lm")
                for split in ("dev-noisy", "dev-clean", "dev-noisy-unseen")
            ),
            "WER, beam + LM (never trained on a dev sentence) / greedy",
        ),
        Finding(
            "noise",
            f"adding noise to part of the training audio (about {noise_share}% in the paper) makes the model "
            "robust to noisy speech (§5.2)",
            f"noise added to about {noise_share}% of the training utterances; no ablation numbers on our fact sheet",
            (
                Comparison("50% noisy, unseen noise", "noise-0", "noise-0.5", "b", split="dev-noisy-unseen"),
                Comparison("50% noisy, dev-noisy", "noise-0", "noise-0.5", "b"),
            ),
            "trained with noise / clean only; 'unseen': babble of voices never heard in training",
        ),
        Finding(
            "scaling",
            f"more training audio keeps helping: about {per_10x}% relative per 10x data (§5.3, Table 10 topic)",
            f"regular dev, {scale['hours'][0]:,} h vs {scale['hours'][-1]:,} h: "
            f"{scale['regular'][0]:.2f} vs {scale['regular'][-1]:.2f}; about {per_10x}% relative per 10x",
            (Comparison("most / least audio", LEAST, MOST, "b", paper_ratio=PAPER_PER_10X),),
            "the largest training set / the smallest (16x the audio), each trained until its dev-noisy curve "
            "stopped improving",
        ),
    ]


# Why a verdict came out as it did: written after reading the results, one per (sweep, verdict).
REASONS: dict[tuple[str, str], str] = {}
REASONS["batchnorm", "inconclusive"] = (
    "at 5 layers recurrent BN is 2.2-5x better on 4 of 5 paired seeds, but with it seed 1 took off late "
    "(update 575) and ended at 21% dev-noisy CER, so five seeds leave the interval wide; the models "
    "without it are also unfinished at this budget (final training loss 0.6-3.2 nats against 0.06-0.3 "
    "with it, late seed aside)"
)
REASONS["sortagrad", "inconclusive"] = (
    "without BN sorted is better on 4 of 5 paired seeds, by about the paper's ratio, and the interval "
    "only just reaches 1 (about 8 seeds would resolve it); with BN one shuffled seed (2) took off at "
    "update 575 and ended at 37% where sorted took off at 350 (6.8%): the stability the paper claims, "
    "once"
)
REASONS["gru", "inconclusive"] = (
    "both cells converge at this budget on 3 layers (dev-noisy CER 2.5-3.9% against 2.8-6.8%); at 5 "
    "layers the GRU is better on 3 of 5 seeds, and the simple RNN's one late start (seed 1: update 575, "
    "21%) is what widens the interval"
)
REASONS["stride", "inconclusive"] = (
    "stride 4 halves the time per epoch (both arms timed side by side) and is worse on dev-noisy on all 5"
    " paired seeds, by 3-54%, but the spread of those ratios leaves the interval just touching 1; every dev"
    " utterance still fits CTC at stride 4 (letter-phones last many frames), so the cost the paper names for"
    " English characters shows here only as a small, uneven loss"
)
REASONS["lookahead", "inconclusive"] = (
    "every model nearly solves the task at this budget (dev-clean greedy CER at most 0.1%), leaving"
    " dev-noisy's 2-4% to compare: the lookahead beats forward-only on 4 of 5 seeds and the bidirectional"
    " model does on 4 of 5, each by 10-20%, which five seeds cannot tell from the seed-to-seed spread; the"
    " letter-phones likely need little future context"
)
REASONS["conv", "reproduced"] = (
    "2D beats 1D on every paired seed at both depths (dev-noisy CER 2.2-3.0% against 2.8-3.4% at 3"
    " layers), by about the paper's ratio (its 0.73 lies inside our interval); likely because a kernel that"
    " slides along frequency shares what it learns across the speakers' shifted formants and pitch, where a"
    " 1D layer must learn each shift separately"
)
REASONS["noise", "reproduced"] = (
    "a model trained on clean audio only is lost on noisy speech (49-62% CER on babble of voices it never"
    " heard) and one with half its training utterances noisy is at 2.7-4.4%, on every paired seed; both"
    " are equally good on clean speech, so at this scale the augmentation costs nothing"
)
REASONS["scaling", "reproduced"] = (
    "every size improves on every paired seed: dev-noisy greedy CER 16-32% with 125 utterances (4.6 minutes "
    "of audio), 2.4-3.4% with 2,000 (73 minutes); a power law fitted to the means falls 84% per 10x, about "
    "twice the paper's 40%, likely because an hour of synthetic speech is still the steep start of the curve "
    "(each added utterance brings speakers and sentences the model has not heard), where the paper's "
    "120-12,000 hours are far along it"
)
REASONS["lm", "reproduced"] = (
    "the LM never saw a dev sentence and its grammar is the one the speech follows, so it cuts dev-noisy "
    "WER by about 3x on every seed; on dev-clean greedy is already near 0"
)


# ----------------------------------------------------------------------------------------------------------
# From the runs to the verdicts
# ----------------------------------------------------------------------------------------------------------


def load_results(folder: Path = RESULTS) -> dict[str, dict]:
    results = {}
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "sweep" in data and "summary" in data and not data.get("quick"):
            results[data["sweep"]] = data
    return results


def is_study(data: dict | None) -> bool:
    return data is not None and data.get("format") == STUDY_FORMAT


def took_off(run: dict) -> bool:
    return any(cer < TAKEOFF_CER for cer in run["curves"]["dev-clean"]["cer"])


def t50(run: dict) -> int | None:
    curves = run["curves"]
    below = [
        u for u, cer in zip(curves["updates"], curves["dev-clean"]["cer"], strict=True) if cer < TAKEOFF_CER
    ]
    return below[0] if below else None


def value(run: dict, comparison: Comparison, arm: str) -> float | None:
    """One run's statistic for one arm; None when the run diverged (it is then reported, not paired)."""
    stat = comparison.stat
    if stat == "seconds_per_epoch":
        return sum(e["seconds"] for e in run["epochs"]) / len(run["epochs"]) if run["epochs"] else None
    if stat == "loss_per_char_max":
        steps, first = run["steps"], len(run["first_epoch_step_losses"])
        per_char = [
            loss * n / chars
            for loss, n, chars in zip(steps["loss"], steps["utterances"], steps["characters"], strict=True)
        ][1:first]  # from the first update on: step 0's loss measures the initialisation, not the order
        return max(per_char) if per_char else None
    if run["final"] is None:
        return None
    decoder = comparison.decoder_b if (arm == "b" and comparison.decoder_b) else comparison.decoder
    return max(run["final"][comparison.split][decoder][stat], RATE_FLOOR)


def arms(data: dict) -> dict[str, dict[int, dict]]:
    """The runs by variant and seed, plus LEAST and MOST (the variants with the fewest and most hours)."""
    by_variant: dict[str, dict[int, dict]] = {}
    for run in data["runs"]:
        by_variant.setdefault(run["variant"], {})[run["seed"]] = run
    hours = sorted(by_variant, key=lambda v: next(iter(by_variant[v].values()))["train_hours"])
    return {**by_variant, LEAST: by_variant[hours[0]], MOST: by_variant[hours[-1]]}


def paper_log_ratio(comparison: Comparison, a_runs: dict, b_runs: dict, paper: dict) -> float | None:
    if comparison.paper_ratio is None:
        return None
    if comparison.paper_ratio == PAPER_PER_10X:  # the paper's slope over our range of hours
        per_10x = paper["other"]["relative_improvement_per_10x_data"]["value"] / 100
        hours = [next(iter(runs.values()))["train_hours"] for runs in (a_runs, b_runs)]
        return math.log(1 - per_10x) * math.log10(hours[1] / hours[0])
    return math.log(comparison.paper_ratio)


def compare(comparison: Comparison, data: dict, paper: dict) -> dict:
    """The paired comparison: per-seed log ratios b / a, their interval, verdict and takeoff."""
    by_arm = arms(data)
    a_runs, b_runs = by_arm[comparison.a], by_arm[comparison.b]
    seeds = sorted(set(a_runs) & set(b_runs))  # paired by seed number, never by position in the file
    pairs = {s: (value(a_runs[s], comparison, "a"), value(b_runs[s], comparison, "b")) for s in seeds}
    logs = [math.log(b / a) for a, b in pairs.values() if a is not None and b is not None and a > 0 and b > 0]
    interval = paired_interval(logs)
    paper_side = -1 if comparison.paper_better == "b" else 1  # the sign of ln(b / a) the paper expects
    lo, hi = sorted((paper_side * interval["low"], paper_side * interval["high"]))  # > 0: the paper's side
    verdict = "reproduced" if lo > 0 else "contradicted" if hi < 0 else "inconclusive"
    paper_log = paper_log_ratio(comparison, a_runs, b_runs, paper)
    size = None
    if paper_log is not None and verdict != "contradicted" and interval["n"] >= 2:
        if paper_log < 0 and interval["low"] > paper_log or paper_log > 0 and interval["high"] < paper_log:
            size = "smaller than the paper's effect"
        elif paper_log < 0 and interval["high"] < paper_log or paper_log > 0 and interval["low"] > paper_log:
            size = "larger than the paper's effect"
    needed = None
    if paper_log and interval["n"] >= 2 and interval["sd"] > 0:
        z = normal_quantile(0.5 + CONFIDENCE / 2) + normal_quantile(POWER)
        needed = math.ceil((z * interval["sd"] / abs(paper_log)) ** 2)
    takeoff = {
        arm: {
            "k": sum(took_off(runs[s]) for s in seeds),
            "n": len(seeds),
            "t50": [t50(runs[s]) for s in seeds],
        }
        for arm, runs in (("a", a_runs), ("b", b_runs))
    }
    ka, na, kb, nb = (takeoff[arm][key] for arm in ("a", "b") for key in ("k", "n"))
    return {
        "comparison": comparison,
        "seeds": seeds,
        "pairs": pairs,
        "unpaired": len(seeds) - len(logs),
        "interval": interval,
        "verdict": verdict,
        "size": size,
        "paper_log_ratio": paper_log,
        "seeds_needed": needed,
        "takeoff": takeoff,
        "fisher_p": fisher_exact(ka, na, kb, nb),
        "mixed": any(0 < t["k"] < t["n"] for t in takeoff.values()) or (ka == 0) != (kb == 0),
    }


def judge_finding(finding: Finding, data: dict, paper: dict) -> list[dict]:
    """Every comparison of the finding, the primary first, with Holm-adjusted p-values over all of them."""
    judged = [compare(c, data, paper) for c in finding.comparisons]
    for result, adjusted in zip(judged, holm([r["interval"]["p"] for r in judged]), strict=True):
        result["holm_p"] = adjusted
    return judged


def verdict_of(finding: Finding, data: dict | None) -> str | None:
    """The finding's verdict (its primary comparison's), or None when the sweep is unfinished."""
    if data is None or not is_study(data) or not data.get("complete"):
        return None
    return compare(finding.comparisons[0], data, load_paper())["verdict"]


# ----------------------------------------------------------------------------------------------------------
# The table, its heading and lead sentence
# ----------------------------------------------------------------------------------------------------------


def ratio(log: float) -> str:
    return f"{math.exp(log):.2f}" if math.isfinite(log) else ("inf" if log > 0 else "0")


def shown(result: dict, primary: bool) -> str:
    c, interval = result["comparison"], result["interval"]
    what = {"cer": "CER", "wer": "WER"}.get(c.stat, c.stat.replace("_", " "))
    where = f"{c.split} {what}" if c.stat in ("cer", "wer") else what
    text = (
        f"{c.label} ({'primary' if primary else 'secondary'}, {where}): {ratio(interval['mean'])} "
        f"[{ratio(interval['low'])}, {ratio(interval['high'])}]"
    )
    if result["paper_log_ratio"] is not None:
        text += f", paper {ratio(result['paper_log_ratio'])}"
    text += f", n={interval['n']}"
    if result["unpaired"]:
        text += f" ({result['unpaired']} seeds diverged, left out)"
    if primary:
        text += f": **{result['verdict']}**" + (f", {result['size']}" if result["size"] else "")
    else:
        text += f", Holm p {result['holm_p']:.2g}"
    if result["seeds_needed"] is not None and result["seeds_needed"] > interval["n"]:
        text += f" (an effect of the paper's size needs ~{result['seeds_needed']} seeds)"
    return text


def takeoff_text(result: dict) -> str:
    t = result["takeoff"]

    def arm(side):
        times = sorted(x for x in t[side]["t50"] if x is not None)
        median = f", median t50 {times[len(times) // 2]}" if times else ""
        return f"{t[side]['k']}/{t[side]['n']}{median}"

    text = f"{result['comparison'].label}: {arm('a')} vs {arm('b')} (Fisher p {result['fisher_p']:.2g})"
    return text + ("; stuck and taken-off seeds in one comparison" if result["mixed"] else "")


def criterion_check(data: dict) -> str:
    """Does "took off" (the curve ever below TAKEOFF_CER) agree with the final dev-clean CER?"""
    done = [run for run in data["runs"] if run["final"] is not None]
    agree = sum(took_off(run) == (run["final"]["dev-clean"]["greedy"]["cer"] < TAKEOFF_CER) for run in done)
    return f"takeoff agrees with the final dev-clean CER in {agree} of {len(done)} runs"


def row_for(finding: Finding, data: dict | None, paper: dict) -> tuple[list[str], str | None]:
    rerun = f"`python ablations/run.py {finding.sweep}`"
    if not is_study(data) or not data.get("complete"):
        if data is None or not is_study(data):
            done = "not run yet" if data is None else "not rerun yet in this design"
        else:
            done = f"{len(data['runs'])} of {data['size']['runs']} runs done"
        return [finding.claim, finding.paper, done, "-", "-", "-", rerun], None
    judged = judge_finding(finding, data, paper)
    result = judged[0]["verdict"]
    seeds = data["size"]["seeds_per_variant"]
    ours = f"{finding.measure}; per-seed ratio, mean [95% interval] over {seeds} paired seeds: " + "; ".join(
        shown(r, i == 0) for i, r in enumerate(judged)
    )
    takeoff = "; ".join(takeoff_text(r) for r in judged if r["comparison"].stat in ("cer", "wer"))
    reason = REASONS.get((finding.sweep, result), "")
    trained = [run for run in data["runs"] if not run.get("reused_from")]
    minutes = sum(run["wall_seconds"] for run in trained) / 60
    cost = f"{rerun} ({len(data['runs'])} runs, {minutes:.0f} min of compute, one core per run)"
    return [
        finding.claim,
        finding.paper,
        ours,
        f"**{result}**",
        f"{takeoff}; {criterion_check(data)}",
        reason,
        cost,
    ], (None if reason else f"{finding.sweep}: no reason written for the verdict '{result}'")


def table(results: dict[str, dict] | None = None) -> tuple[str, list[str]]:
    """The Markdown table and the list of verdicts still missing a written reason."""
    results = load_results() if results is None else results
    paper = load_paper()
    lines = [
        "| the paper finds | paper | ours | verdict | takeoff (k/n seeds, Fisher) | likely reason | rerun |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    missing = []
    for finding in findings(paper):
        cells, problem = row_for(finding, results.get(finding.sweep), paper)
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
        if problem:
            missing.append(problem)
    return "\n".join(lines), missing


# The verdicts the heading counts (tests/test_docs.py counts them in README.md's heading).
VERDICTS = ("reproduced", "contradicted", "inconclusive")


def summary(results: dict[str, dict] | None = None) -> str:
    """The README's heading and lead sentence for the table: the verdicts counted, never more than they say."""
    results = load_results() if results is None else results
    every = findings(load_paper())
    named: dict[str, list[str]] = {v: [] for v in VERDICTS}
    not_run = []
    for finding in every:
        data = results.get(finding.sweep)
        result = verdict_of(finding, data) if is_study(data) else None
        (named[result] if result else not_run).append(f"`{finding.sweep}`")
    heading = "### The paper's findings in miniature: " + ", ".join(f"{len(named[v])} {v}" for v in VERDICTS)
    words = {"reproduced": "reproduces", "contradicted": "contradicts", "inconclusive": "cannot resolve"}
    parts = [f"**{words[v]} {len(names)}** ({', '.join(names)})" for v, names in named.items() if names]
    if not_run:
        parts.append(f"has not yet run {len(not_run)} in this design ({', '.join(not_run)})")
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    lead = (
        f"Of the {len(every)} findings of the paper that `ablations/run.py` re-runs, this miniature {listed}: "
        "each judged by its pre-named primary comparison, the 95% t-interval of the per-seed ratio of "
        "paired seeds (dev-noisy greedy CER unless the table says otherwise), beside takeoff counts and "
        "the paper's own ratio."
    )
    return f"{heading}\n\n{lead}"


def readme_summary(text: str) -> str:
    """The heading and lead sentence between the README's summary markers (ValueError when missing)."""
    start, stop = text.index(SUMMARY_BEGIN) + len(SUMMARY_BEGIN), text.index(SUMMARY_END)
    return text[start:stop].strip()


def readme_block(text: str) -> str:
    """The table between the README's markers (raises ValueError when the markers are missing)."""
    start, stop = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[start:stop].strip()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--write", action="store_true", help="write the table into README.md between its markers")
    p.add_argument("--results", default=str(RESULTS), help="the sweeps' JSON folder")
    args = p.parse_args(argv)
    results = load_results(Path(args.results))
    text, missing = table(results)
    lead = summary(results)
    print(f"{lead}\n\n{text}")
    if not args.write:
        return 0
    if missing:
        print("error: write the likely reason for: " + "; ".join(missing), file=sys.stderr)
        return 1
    readme = README.read_text(encoding="utf-8")
    for begin, end in ((SUMMARY_BEGIN, SUMMARY_END), (BEGIN, END)):
        if begin not in readme or end not in readme:
            print(f"error: README.md lacks the markers {begin!r} ... {end!r}", file=sys.stderr)
            return 1
    for begin, end, block in ((SUMMARY_BEGIN, SUMMARY_END, lead), (BEGIN, END, text)):
        head, rest = readme.split(begin, 1)
        readme = f"{head}{begin}\n\n{block}\n\n{end}{rest.split(end, 1)[1]}"
    ds2.atomic_write_text(README, readme)
    print(f"wrote the heading, lead sentence and table into {README}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
