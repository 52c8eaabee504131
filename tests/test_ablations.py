"""The ablation runner (ablations/run.py) and its verdicts (ablations/findings.py).

One session-scoped fixture runs all nine sweeps once, in this process, at the tiny --quick size (about
half a minute on one core); the tests read what it wrote. The committed sizes are checked without
training: their parameter counts are computed on the meta device. The statistics of findings.py are
checked against exact values and on synthetic results whose answer is known (sign and pairing).
"""

import importlib.util
import json
import math
import random
import re
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import corpora  # noqa: E402
import implementation as ds2  # noqa: E402

_spec = importlib.util.spec_from_file_location("ablations_run", ROOT / "ablations" / "run.py")
run = importlib.util.module_from_spec(_spec)
sys.modules["ablations_run"] = run  # dataclasses look their module up while it is being executed
_spec.loader.exec_module(run)

TOP_KEYS = {
    "format", "sweep", "splits", "heldout_noise", "title", "paper_reference", "question", "quick", "size",
    "plot", "complete", "total_wall_seconds", "updated_at", "runs", "summary", "analysis",
}  # fmt: skip
RUN_KEYS = {
    "sweep", "variant", "seed", "series", "x", "key", "spec", "parameters", "train_utterances",
    "dropped_for_ctc", "train_hours", "extra", "error", "final", "epochs", "train_seconds",
    "first_epoch_step_losses", "wall_seconds", "finished_at", "synthesis_code", "updates", "steps",
    "first_epoch_batch_frames", "curves", "curve_seconds", "takeoff",
}  # fmt: skip
SPLITS = ("dev-clean", "dev-noisy", "dev-noisy-unseen")
EPOCH_KEYS = {"epoch", "train_loss", "skipped_batches", "steps", "seconds"}


def quick_args(out, cache, *names, jobs="1"):
    return run.parse_args([*names, "--quick", "--jobs", jobs, "--out", str(out), "--cache-dir", str(cache)])


@pytest.fixture(scope="session")
def quick_study(tmp_path_factory):
    """All nine sweeps at --quick size: ``(results folder, cache folder, printed lines)``."""
    out, cache = tmp_path_factory.mktemp("ablations"), tmp_path_factory.mktemp("cache")
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = run.main(quick_args(out, cache, "all"))
    assert status == 0, printed.getvalue()[-3000:]
    return out, cache, printed.getvalue().splitlines()


def load(out, name):
    return json.loads((out / f"{name}.json").read_text(encoding="utf-8"))


def is_rate(value):
    return isinstance(value, float) and math.isfinite(value) and value >= 0


@pytest.mark.parametrize("name", run.ORDER)
def test_each_sweep_writes_the_documented_json_and_png(quick_study, name):
    out, _, _ = quick_study
    results = load(out, name)
    assert set(results) == TOP_KEYS
    assert results["format"] == run.FORMAT and results["sweep"] == name and results["quick"] is True
    assert results["complete"] is True and len(results["runs"]) == results["size"]["runs"]
    assert len(results["runs"]) == len(run.BUILDERS[name](run.size_of(name, quick=True)))
    assert results["size"]["seeds_per_variant"] == len(results["size"]["seeds"]) >= 1
    keys = [record["key"] for record in results["runs"]]
    assert len(set(keys)) == len(keys)  # every (variant, seed) once
    for record in results["runs"]:
        assert RUN_KEYS <= set(record), RUN_KEYS - set(record)
        assert record["key"] == f"{record['variant']}/seed{record['seed']}" and record["sweep"] == name
        assert record["spec"]["train"]["seed"] == record["seed"]
        assert (
            record["synthesis_code"]
            == record["spec"]["data"]["synthesis_code"]
            == corpora.synthesis_fingerprint()[:16]
        )
        assert (
            record["parameters"] == run.count_parameters(record["spec"]["model"], record["spec"]["build"]) > 0
        )
        assert record["wall_seconds"] > 0 and record["train_hours"] > 0
        assert record["error"] is None, record["error"]
        assert [e["epoch"] for e in record["epochs"]] == list(range(1, record["spec"]["train"]["epochs"] + 1))
        assert all(EPOCH_KEYS <= set(e) and math.isfinite(e["train_loss"]) for e in record["epochs"])
        assert len(record["first_epoch_step_losses"]) == record["epochs"][0]["steps"]
        decoders = {"greedy", "beam", "beam_lm"} if name == "lm" else {"greedy", "beam_lm"}
        for split in SPLITS:
            assert set(record["final"][split]) == decoders
            for rates in record["final"][split].values():
                assert set(rates) == {"cer", "wer"} and all(is_rate(v) for v in rates.values())
    variants = list(dict.fromkeys(record["variant"] for record in results["runs"]))
    if name == "lm":  # the summary's rows are the decoders of the one model
        assert [row["variant"] for row in results["summary"]] == ["greedy", "beam", "beam_lm"]
    else:
        assert [row["variant"] for row in results["summary"]] == variants
    for row in results["summary"]:
        for split in SPLITS:
            for stats in row[split].values():
                for s in stats.values():
                    assert s["n"] == len(s["values"]) and s["min"] <= s["mean"] <= s["max"]
                    assert s["mean"] == pytest.approx(sum(s["values"]) / s["n"])
    assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_sweeps_vary_what_they_say(quick_study):
    out, _, _ = quick_study
    runs = lambda name: {r["variant"]: r["spec"] for r in load(out, name)["runs"]}  # noqa: E731
    models = lambda name: {v: spec["model"] for v, spec in runs(name).items()}  # noqa: E731
    bn = runs("batchnorm")  # §3.2's recurrent BatchNorm toggled alone: the conv layers keep theirs
    assert {
        (s["model"]["rnn_type"], s["model"]["rnn_layers"], s["build"]["recurrent_batch_norm"])
        for s in bn.values()
    } == {("rnn", layers, norm) for layers in (1, 3, 5) for norm in (True, False)}
    assert all(s["model"]["batch_norm"] for s in bn.values())
    assert {(m["rnn_type"], m["rnn_layers"]) for m in models("gru").values()} == {
        (kind, layers) for kind in ("gru", "rnn") for layers in (3, 5)
    }
    assert {(m["conv_type"], len(m["conv_channels"])) for m in models("conv").values()} == {
        (kind, layers) for kind in ("1d", "2d") for layers in (2, 3)
    }
    assert sorted(m["conv_time_stride"] for m in models("stride").values()) == [2, 4]
    lookahead = runs("lookahead")
    assert lookahead["bidirectional"]["model"]["bidirectional"]
    assert not lookahead["forward-only"]["model"]["bidirectional"]
    assert sorted(s["model"]["lookahead_context"] for s in lookahead.values()) == [0, 0, 10]
    assert lookahead["lookahead-10"]["build"]["lookahead_init"] == "identity"
    sortagrad = {
        v: (s["train"]["sortagrad"], s["build"]["recurrent_batch_norm"]) for v, s in runs("sortagrad").items()
    }
    assert sorted(sortagrad.values()) == [(False, False), (False, True), (True, False), (True, True)]
    noise = sorted(r["spec"]["data"]["train_noise_fraction"] for r in load(out, "noise")["runs"])
    assert noise == [0.0, 0.5]
    scaling = load(out, "scaling")
    sizes = [r["spec"]["data"]["train_size"] for r in scaling["runs"]]
    assert sizes == sorted(sizes) and len(set(sizes)) == 5 and max(sizes) >= 16 * min(sizes)
    assert all(r["spec"]["curves"]["early_stopping"] for r in scaling["runs"])
    assert all(r["early_stopping"]["best_update"] in r["curves"]["updates"] for r in scaling["runs"])
    hours = [row["x"] for row in scaling["summary"]]
    assert hours == sorted(hours) and hours == [row["train_hours"] for row in scaling["summary"]]
    fit = scaling["analysis"]["power_law"]["greedy_cer"]
    assert fit["relative_improvement_per_10x"] == pytest.approx(100 * (1 - 10 ** fit["b"]))
    grid = next(r["extra"]["grid"] for r in load(out, "lm")["runs"] if "grid" in r["extra"])
    for split in ("dev-clean", "dev-noisy"):
        assert [len(row) for row in grid[split]["wer"]] == [len(grid["beta"])] * len(grid["alpha"])


def test_every_run_logs_its_curves_and_every_update(quick_study):
    """Curves every curve_every updates from update 0 to the last; every update's loss with its batch's size."""
    out, _, _ = quick_study
    for name in run.ORDER:
        for record in load(out, name)["runs"]:
            curves, steps, every = record["curves"], record["steps"], record["spec"]["curves"]["curve_every"]
            updates = record["updates"]
            assert curves["updates"][0] == 0 and curves["updates"][-1] == updates
            assert all(u % every == 0 for u in curves["updates"][:-1])
            for split in run.CURVE_SPLITS:
                assert len(curves[split]["cer"]) == len(curves["updates"]) and curves[split]["cer"][0] > 0.5
            assert len(steps["loss"]) == len(steps["frames"]) == len(steps["characters"]) == updates
            first = record["first_epoch_batch_frames"]
            assert len(first) == len(record["first_epoch_step_losses"]) == record["epochs"][0]["steps"]
            assert [sum(batch) for batch in first] == steps["frames"][: len(first)]
            assert record["takeoff"]["took_off"] == findings.took_off(record)
            if record["spec"]["train"]["sortagrad"]:  # epoch 1 in order of length (§3.3)
                longest = [max(batch) for batch in first]
                assert longest == sorted(longest)


def test_recurrent_batch_norm_alone_and_an_identity_lookahead():
    base = ds2.DS2Config(rnn_type="rnn", rnn_layers=3).to_dict()
    net = run.build_model(base, {**run.default_build(base), **run.WITHOUT_RECURRENT_BN})
    assert all(isinstance(norm, ds2.MaskedBatchNorm) for norm in net.conv.norms)  # conv BN kept
    assert all(layer.norm is None and layer.input_projection.bias is not None for layer in net.rnns)
    model = ds2.DS2Config(bidirectional=False, lookahead_context=3).to_dict()
    net = run.build_model(model, run.default_build(model))
    x, lengths = torch.randn(2, 7, net.config.rnn_hidden), torch.tensor([7, 5])
    expected = x * ds2.lengths_to_mask(lengths, 7)[..., None]
    assert torch.equal(net.lookahead(x, lengths), expected)  # the forward-only model's output, at first


def test_the_lm_never_reads_a_dev_sentence():
    text = run.lm_text(0, 300)
    dev = text[:4] + ["a sentence the grammar never says"]
    lm, removed = run.load_lm(0, 300, dev)
    assert removed == sum(sentence in set(text[:4]) for sentence in text) >= 4


def test_the_heldout_noise_split_is_babble_of_new_voices(quick_study):
    _, cache, _ = quick_study
    data = {"seed": 0, "dev_size": 6}
    split = run.heldout_split(data, str(cache))
    assert len(split) == 6 and set(split.noise) == {"babble"} and set(split.snr_db) == {10.0}
    assert not set(split.speakers) & set(ds2.make_speaker_pool(200, (0, 0)))  # not a training speaker


def test_an_older_results_file_is_replaced_not_resumed(quick_study, tmp_path, capsys):
    _, cache, _ = quick_study
    (tmp_path / "stride.json").write_text(
        json.dumps({"format": "deep-speech-2-lesson/ablation/1", "runs": []})
    )
    assert run.main(quick_args(tmp_path, cache, "stride")) == 0
    assert load(tmp_path, "stride")["format"] == run.FORMAT and "replacing" in capsys.readouterr().out


def test_an_identical_run_of_another_sweep_is_reused_not_retrained(quick_study):
    out, _, _ = quick_study
    gru = {r["variant"]: r for r in load(out, "gru")["runs"]}
    reused = gru["simple-rnn-5"]
    assert reused["reused_from"].startswith("batchnorm/batchnorm-5/")
    original = {r["variant"]: r for r in load(out, "batchnorm")["runs"]}["batchnorm-5"]
    assert reused["spec"] == original["spec"] and reused["final"] == original["final"]
    assert "reused_from" not in gru["gru-3"]  # a GRU was trained here


def test_a_timed_sweep_trains_its_own_runs(quick_study, tmp_path, capsys):
    """stride's finding includes seconds per epoch: its base-model arm is trained in the sweep, beside the
    other arm, never reused from a run another sweep timed under other load (and a reused one is redone)."""
    out, cache, _ = quick_study
    assert run.SWEEPS["stride"].timed and not run.SWEEPS["gru"].timed
    stride = load(out, "stride")
    lookahead = {r["variant"]: r for r in load(out, "lookahead")["runs"]}
    base = next(r for r in stride["runs"] if r["variant"] == "stride-2")
    assert base["spec"] == lookahead["bidirectional"]["spec"]  # identical: a reuse was possible
    assert not any("reused_from" in r for r in stride["runs"])
    stride["runs"][0]["reused_from"] = "lookahead/bidirectional/seed0"  # as a sweep of before wrote it
    (tmp_path / "stride.json").write_text(json.dumps(stride))
    assert run.main(quick_args(tmp_path, cache, "stride")) == 0
    assert f"{stride['runs'][0]['key']} was reused from" in capsys.readouterr().out
    assert not any("reused_from" in r for r in load(tmp_path, "stride")["runs"])


def test_one_progress_line_per_run(quick_study):
    _, _, lines = quick_study
    progress = [line for line in lines if line.startswith("[")]
    total = sum(len(run.BUILDERS[name](run.size_of(name, quick=True))) for name in run.ORDER)
    assert len(progress) == total
    pattern = re.compile(r"^\[(\w+) (\d+)/(\d+)\] \S+ seed \d+: [\d,]+ params, \d+ s, dev-clean CER [\d.]+%")
    assert all(pattern.match(line) for line in progress), progress[:3]


def test_committed_sizes_match_parameter_counts_where_the_paper_does():
    """Tables 1, 3 and 4 topics compare at a fixed parameter count: every variant within 10%."""
    for name, target in (
        ("batchnorm", run.simple_rnn_target),
        ("sortagrad", run.simple_rnn_target),
        ("gru", run.simple_rnn_target),
        ("conv", lambda size: run.count_parameters(size.base_model())),
        ("lookahead", lambda size: run.count_parameters(size.base_model())),
    ):
        size = run.size_of(name, quick=False)
        counts = {r.variant: run.count_parameters(r.model, r.build) for r in run.BUILDERS[name](size)}
        wanted = target(size)
        far = {v: c for v, c in counts.items() if abs(c - wanted) > 0.10 * wanted}
        assert not far, f"{name}: {far} not within 10% of {wanted:,}"
        assert len(set(counts.values())) > 1 or name == "sortagrad"  # the widths really were adjusted


def test_committed_sizes_use_paired_seeds_and_fit_ctc():
    """At least 5 seeds, the same list in every sweep, so every comparison is paired (issue 24)."""
    seeds = {run.size_of(name, quick=False).seeds for name in run.ORDER}
    assert len(seeds) == 1 and len(seeds.pop()) >= 5
    with pytest.raises(ValueError, match="within 10%"):  # the check can fail
        run.matched({**ds2.DS2Config().to_dict(), "conv_type": "1d", "conv_channels": (4096,)}, 10_000)


def test_an_interrupted_sweep_continues_where_it_stopped(quick_study, tmp_path, monkeypatch):
    _, cache, _ = quick_study
    real, calls = run.execute, []

    def interrupt_second(item, *args):
        calls.append(item["variant"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(item, *args)

    monkeypatch.setattr(run, "execute", interrupt_second)
    with pytest.raises(KeyboardInterrupt):
        run.main(quick_args(tmp_path, cache, "stride"))
    saved = load(tmp_path, "stride")
    assert [r["variant"] for r in saved["runs"]] == ["stride-2"] and saved["complete"] is False
    assert not (tmp_path / "stride.png").exists()

    calls.clear()
    monkeypatch.setattr(
        run, "execute", lambda item, *args: calls.append(item["variant"]) or real(item, *args)
    )
    assert run.main(quick_args(tmp_path, cache, "stride")) == 0
    assert calls == ["stride-4"]  # the finished run is not repeated
    saved = load(tmp_path, "stride")
    assert saved["complete"] and [r["variant"] for r in saved["runs"]] == ["stride-2", "stride-4"]

    calls.clear()
    assert run.main(quick_args(tmp_path, cache, "stride")) == 0  # a finished sweep: nothing runs
    assert calls == []


def test_results_of_other_settings_are_not_mixed_in(quick_study, tmp_path, capsys):
    _, cache, _ = quick_study
    results = {"format": run.FORMAT, "size": {"train_size": 12345}, "runs": []}
    (tmp_path / "stride.json").write_text(json.dumps(results))
    assert run.main(quick_args(tmp_path, cache, "stride")) == 1
    assert "--fresh" in capsys.readouterr().err
    assert json.loads((tmp_path / "stride.json").read_text()) == results  # left as it was


def test_bad_sweep_names_are_refused(capsys):
    with pytest.raises(SystemExit) as error:
        run.parse_args(["batchnorm", "nonsense"])
    assert error.value.code == 2 and "nonsense" in capsys.readouterr().err


def test_the_runner_never_reimplements_the_training_step():
    for path in (ROOT / "ablations").glob("*.py"):
        source = path.read_text(encoding="utf-8")
        assert ".backward(" not in source and "clip_grad_norm_" not in source, path
    assert "ds2.fit(" in (ROOT / "ablations" / "run.py").read_text(encoding="utf-8")


# ----------------------------------------------------------------------------------------------------------
# The README's findings table (ablations/findings.py)
# ----------------------------------------------------------------------------------------------------------

_fspec = importlib.util.spec_from_file_location("ablations_findings", ROOT / "ablations" / "findings.py")
findings = importlib.util.module_from_spec(_fspec)
sys.modules["ablations_findings"] = findings
_fspec.loader.exec_module(findings)


def test_readme_findings_table_is_the_one_the_committed_results_give():
    expected, missing = findings.table(findings.load_results(ROOT / "ablations" / "results"))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert findings.readme_block(readme) == expected, (
        "README.md's findings table differs from the committed results: run python ablations/findings.py --write"
    )
    assert not missing, missing


def test_every_finding_compares_variants_its_sweep_runs(quick_study, monkeypatch):
    out, _, _ = quick_study
    results = {name: load(out, name) for name in run.ORDER}
    for finding in findings.findings(findings.load_paper()):
        variants = {r["variant"] for r in results[finding.sweep]["runs"]} | {findings.LEAST, findings.MOST}
        for comparison in finding.comparisons:
            assert {comparison.a, comparison.b} <= variants, (finding.sweep, comparison, variants)
    text, missing = findings.table(results)
    assert text.count("\n") == 1 + len(run.ORDER)  # header, rule, one row per sweep
    assert "not run yet" not in text and "runs done" not in text and "not rerun yet" not in text
    # A verdict without a written reason is reported: the quick results are all inconclusive, so the
    # sweeps listed are those whose reason for 'inconclusive' is not written, and with none written, all.
    unwritten = {sweep for sweep in run.ORDER if (sweep, "inconclusive") not in findings.REASONS}
    assert {problem.split(":")[0] for problem in missing} == unwritten
    monkeypatch.setattr(findings, "REASONS", {})
    assert len(findings.table(results)[1]) == len(run.ORDER)
    lead = findings.summary(results)
    assert lead.startswith(
        "### The paper's findings in miniature: 0 reproduced, 0 contradicted, 9 inconclusive"
    )


# --- the statistics, exact -------------------------------------------------------------------------------


@pytest.mark.parametrize("df, quantile", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (30, 2.0423)])
def test_t_quantiles_are_the_tables(df, quantile):
    assert findings.t_quantile(0.975, df) == pytest.approx(quantile, abs=1e-4)


def test_fisher_exact_test_is_exact():
    assert findings.fisher_exact(0, 5, 5, 5) == pytest.approx(2 / 252)  # only the two extreme tables
    assert findings.fisher_exact(3, 5, 5, 5) == pytest.approx(0.4444444, abs=1e-6)
    assert findings.fisher_exact(2, 5, 2, 5) == pytest.approx(1.0)
    scipy = pytest.importorskip("scipy.stats")
    for table in ([1, 6, 4, 5], [0, 7, 6, 7], [5, 5, 1, 5]):
        k_a, n_a, k_b, n_b = table
        expected = scipy.fisher_exact([[k_a, n_a - k_a], [k_b, n_b - k_b]])[1]
        assert findings.fisher_exact(*table) == pytest.approx(expected)


def test_holm_adjusts_step_down():
    assert findings.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


# --- sign and pairing, on synthetic results whose answer is known ---------------------------------------


def synthetic(values: dict[str, dict[int, float]], took: dict[str, set[int]] | None = None) -> dict:
    """A complete format-2 sweep whose runs have these dev-noisy greedy CERs, by variant and seed."""
    runs = []
    for variant, by_seed in values.items():
        for seed, cer in by_seed.items():
            off = took is None or seed in took.get(variant, set())
            rates = {"greedy": {"cer": cer, "wer": min(1.0, 3 * cer)}}
            runs.append({
                "variant": variant, "seed": seed, "train_hours": 1.0, "wall_seconds": 1.0,
                "final": {split: rates for split in SPLITS},
                "curves": {"updates": [0, 25], "dev-clean": {"cer": [1.0, 0.2 if off else 0.9]}},
                "epochs": [{"seconds": 1.0}], "steps": {"loss": [1.0], "utterances": [1], "characters": [1]},
                "first_epoch_step_losses": [1.0],
            })  # fmt: skip
    return {"format": findings.STUDY_FORMAT, "complete": True, "size": {"seeds_per_variant": 5}, "runs": runs}


# The seeds differ a lot (0.1 to 0.5) but B is always about 20% below A: only a paired test can see it.
A = {0: 0.10, 1: 0.50, 2: 0.25, 3: 0.40, 4: 0.15}
B = {
    seed: cer * factor for (seed, cer), factor in zip(A.items(), (0.80, 0.82, 0.78, 0.81, 0.79), strict=True)
}
PAPER = findings.load_paper()


def test_a_paired_effect_on_the_papers_side_is_reproduced():
    comparison = findings.Comparison("x", "A", "B", "b", paper_ratio=0.95)
    result = findings.compare(comparison, synthetic({"A": A, "B": B}), PAPER)
    assert result["verdict"] == "reproduced" and result["size"] == "larger than the paper's effect"
    assert math.exp(result["interval"]["mean"]) == pytest.approx(0.80, abs=0.01)
    assert math.exp(result["interval"]["high"]) < 0.85


def test_the_sign_convention_breaks_the_verdict_when_reversed():
    data = synthetic({"A": A, "B": B})
    swapped = findings.Comparison("x", "B", "A", "b")  # the arms the other way round
    assert findings.compare(swapped, data, PAPER)["verdict"] == "contradicted"
    other_side = findings.Comparison("x", "A", "B", "a")  # the paper favouring the other arm
    assert findings.compare(other_side, data, PAPER)["verdict"] == "contradicted"
    relabelled = synthetic({"A": B, "B": A})  # the arms' results swapped in the file
    assert (
        findings.compare(findings.Comparison("x", "A", "B", "b"), relabelled, PAPER)["verdict"]
        == "contradicted"
    )


def test_seeds_are_paired_by_number_not_by_position():
    comparison = findings.Comparison("x", "A", "B", "b")
    data = synthetic({"A": A, "B": B})
    shuffled = dict(data, runs=random.Random(1).sample(data["runs"], len(data["runs"])))
    assert (
        findings.compare(comparison, shuffled, PAPER)["interval"]
        == findings.compare(comparison, data, PAPER)["interval"]
    )
    # Pairing each seed of B with another seed of A destroys the effect: the test is paired, not pooled.
    rotated = {seed: B[(seed + 1) % 5] for seed in B}
    assert findings.compare(comparison, synthetic({"A": A, "B": rotated}), PAPER)["verdict"] == "inconclusive"


def test_a_missing_seed_is_not_paired():
    comparison = findings.Comparison("x", "A", "B", "b")
    result = findings.compare(comparison, synthetic({"A": A, "B": {s: B[s] for s in (0, 1, 2, 3)}}), PAPER)
    assert result["seeds"] == [0, 1, 2, 3] and result["interval"]["n"] == 4


def test_an_effect_within_the_seed_noise_is_inconclusive_and_smaller_than_the_papers():
    noise = {0: 1.02, 1: 0.98, 2: 1.01, 3: 0.99, 4: 1.0}
    comparison = findings.Comparison("x", "A", "B", "b", paper_ratio=0.5)
    result = findings.compare(comparison, synthetic({"A": A, "B": {s: A[s] * noise[s] for s in A}}), PAPER)
    assert result["verdict"] == "inconclusive" and result["size"] == "smaller than the paper's effect"


def test_takeoff_is_counted_and_tested_not_averaged():
    data = synthetic({"A": A, "B": B}, took={"A": {0, 1}, "B": {0, 1, 2, 3, 4}})
    result = findings.compare(findings.Comparison("x", "A", "B", "b"), data, PAPER)
    assert (result["takeoff"]["a"]["k"], result["takeoff"]["b"]["k"]) == (2, 5) and result["mixed"]
    assert result["fisher_p"] == pytest.approx(findings.fisher_exact(2, 5, 5, 5))
    assert result["takeoff"]["a"]["t50"] == [25, 25, None, None, None]  # never took off: censored
    assert "stuck and taken-off" in findings.takeoff_text(result)
