"""The ablation runner (ablations/run.py): every sweep end to end at --quick size, its JSON, resuming.

One session-scoped fixture runs all nine sweeps once, in this process, at the tiny --quick size (about a
minute on one core); the tests read what it wrote. The committed sizes are checked without training:
their parameter counts are computed on the meta device.
"""

import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import pytest

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
    "format", "sweep", "title", "paper_reference", "question", "quick", "size", "plot", "complete",
    "total_wall_seconds", "updated_at", "runs", "summary", "analysis",
}  # fmt: skip
RUN_KEYS = {
    "sweep", "variant", "seed", "series", "x", "key", "spec", "parameters", "train_utterances",
    "dropped_for_ctc", "train_hours", "extra", "error", "final", "epochs", "train_seconds",
    "first_epoch_step_losses", "wall_seconds", "finished_at", "synthesis_code",
}  # fmt: skip
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
        assert record["parameters"] == run.count_parameters(record["spec"]["model"]) > 0
        assert record["wall_seconds"] > 0 and record["train_hours"] > 0
        assert record["error"] is None, record["error"]
        assert [e["epoch"] for e in record["epochs"]] == list(range(1, record["spec"]["train"]["epochs"] + 1))
        assert all(EPOCH_KEYS <= set(e) and math.isfinite(e["train_loss"]) for e in record["epochs"])
        assert len(record["first_epoch_step_losses"]) == record["epochs"][0]["steps"]
        decoders = {"greedy", "beam", "beam_lm"} if name == "lm" else {"greedy", "beam_lm"}
        for split in ("dev-clean", "dev-noisy"):
            assert set(record["final"][split]) == decoders
            for rates in record["final"][split].values():
                assert set(rates) == {"cer", "wer"} and all(is_rate(v) for v in rates.values())
    variants = list(dict.fromkeys(record["variant"] for record in results["runs"]))
    if name == "lm":  # the summary's rows are the decoders of the one model
        assert [row["variant"] for row in results["summary"]] == ["greedy", "beam", "beam_lm"]
    else:
        assert [row["variant"] for row in results["summary"]] == variants
    for row in results["summary"]:
        for split in ("dev-clean", "dev-noisy"):
            for stats in row[split].values():
                for s in stats.values():
                    assert s["n"] == len(s["values"]) and s["min"] <= s["mean"] <= s["max"]
                    assert s["mean"] == pytest.approx(sum(s["values"]) / s["n"])
    assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_sweeps_vary_what_they_say(quick_study):
    out, _, _ = quick_study
    models = lambda name: {r["variant"]: r["spec"]["model"] for r in load(out, name)["runs"]}  # noqa: E731
    bn = models("batchnorm")
    assert {(m["rnn_type"], m["rnn_layers"], m["batch_norm"]) for m in bn.values()} == {
        ("rnn", layers, norm) for layers in (1, 3, 5) for norm in (True, False)
    }
    assert {(m["rnn_type"], m["rnn_layers"]) for m in models("gru").values()} == {
        (kind, layers) for kind in ("gru", "rnn") for layers in (1, 3, 5)
    }
    assert {(m["conv_type"], len(m["conv_channels"])) for m in models("conv").values()} == {
        (kind, layers) for kind in ("1d", "2d") for layers in (1, 2, 3)
    }
    assert sorted(m["conv_time_stride"] for m in models("stride").values()) == [2, 3, 4]
    lookahead = models("lookahead")
    assert lookahead["bidirectional"]["bidirectional"] and not lookahead["forward-only"]["bidirectional"]
    assert sorted(m["lookahead_context"] for m in lookahead.values()) == [0, 0, 3, 10]
    sortagrad = {r["variant"]: r["spec"]["train"]["sortagrad"] for r in load(out, "sortagrad")["runs"]}
    assert sorted(sortagrad.values()) == [False, False, True, True]
    noise = sorted(r["spec"]["data"]["train_noise_fraction"] for r in load(out, "noise")["runs"])
    assert noise == [0.0, 0.5, 0.8]
    scaling = load(out, "scaling")
    sizes = [r["spec"]["data"]["train_size"] for r in scaling["runs"]]
    assert sizes == sorted(sizes) and len(set(sizes)) == 5
    hours = [row["x"] for row in scaling["summary"]]
    assert hours == sorted(hours) and hours == [row["train_hours"] for row in scaling["summary"]]
    fit = scaling["analysis"]["power_law"]["greedy_cer"]
    assert fit["relative_improvement_per_10x"] == pytest.approx(100 * (1 - 10 ** fit["b"]))
    grid = next(r["extra"]["grid"] for r in load(out, "lm")["runs"] if "grid" in r["extra"])
    for split in ("dev-clean", "dev-noisy"):
        assert [len(row) for row in grid[split]["wer"]] == [len(grid["beta"])] * len(grid["alpha"])


def test_an_identical_run_of_another_sweep_is_reused_not_retrained(quick_study):
    out, _, _ = quick_study
    gru = {r["variant"]: r for r in load(out, "gru")["runs"]}
    reused = gru["simple-rnn-1"]
    assert reused["reused_from"].startswith("batchnorm/batchnorm-1/")
    original = {r["variant"]: r for r in load(out, "batchnorm")["runs"]}["batchnorm-1"]
    assert reused["spec"] == original["spec"] and reused["final"] == original["final"]
    assert "reused_from" not in gru["gru-3"]  # a GRU was trained here


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
        counts = {r.variant: run.count_parameters(r.model) for r in run.BUILDERS[name](size)}
        wanted = target(size)
        far = {v: c for v, c in counts.items() if abs(c - wanted) > 0.10 * wanted}
        assert not far, f"{name}: {far} not within 10% of {wanted:,}"
        assert len(set(counts.values())) > 1 or name == "sortagrad"  # the widths really were adjusted


def test_committed_sizes_use_several_seeds_and_fit_ctc():
    for name in run.ORDER:
        size = run.size_of(name, quick=False)
        assert len(size.seeds) >= (2 if name == "scaling" else 3), name
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
    assert calls == ["stride-3", "stride-4"]  # the finished run is not repeated
    saved = load(tmp_path, "stride")
    assert saved["complete"] and [r["variant"] for r in saved["runs"]] == ["stride-2", "stride-3", "stride-4"]

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


def test_every_finding_compares_variants_its_sweep_runs(quick_study):
    out, _, _ = quick_study
    for finding in findings.findings(findings.load_paper()):
        variants = {row["variant"] for row in load(out, finding.sweep)["summary"]} | {
            findings.LEAST,
            findings.MOST,
        }
        for comparison in finding.comparisons:
            assert {comparison.a, comparison.b} <= variants, (finding.sweep, comparison, variants)
    text, _ = findings.table({name: load(out, name) for name in run.ORDER})
    assert text.count("\n") == 1 + len(run.ORDER)  # header, rule, one row per sweep
    assert "not run yet" not in text and "runs done" not in text


def _row(mean, std):
    return {"dev-clean": {"greedy": {"cer": {"mean": mean, "std": std}}}, "train_hours": mean}


@pytest.mark.parametrize(
    "a, b, paper_better, outcome",
    [
        ((0.30, 0.02), (0.10, 0.05), "b", "holds"),  # b better by 0.20 > spread 0.05
        ((0.30, 0.02), (0.10, 0.05), "a", "contradicts"),
        ((0.30, 0.25), (0.10, 0.05), "b", "within the spread"),  # 0.20 < spread 0.25
        ((0.10, 0.00), (0.10, 0.00), "b", "within the spread"),
    ],
)
def test_a_comparison_holds_only_beyond_the_seed_spread(a, b, paper_better, outcome):
    comparison = findings.Comparison("x", "A", "B", paper_better)
    got, shown = findings.judge(comparison, {"A": _row(*a), "B": _row(*b)})
    assert got == outcome and outcome in shown


def test_verdicts_from_outcomes():
    assert findings.verdict(["holds", "holds"]) == "reproduced"
    assert findings.verdict(["holds", "contradicts"]) == "mixed"
    assert findings.verdict(["holds", "within the spread"]) == "mixed"
    assert findings.verdict(["within the spread", "contradicts"]) == "not reproduced"
