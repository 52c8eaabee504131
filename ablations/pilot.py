"""The pilot that sets the study's budget: the slowest variants at two budgets, before the full study.

    python ablations/pilot.py                      # 3 variants x 2 seeds x 2 budgets -> ablations/pilot.json
    python ablations/pilot.py --budgets 5 8 --jobs 2
    python ablations/pilot.py --report             # the pilot's numbers and the study's estimated cost, as Markdown

A budget is a number of epochs of the 2,000-utterance training set (125 updates each: 5 -> 625 updates,
8 -> 1,000). The variants are the three that need the most updates in the first study's results, so a
budget at which most of their seeds converge is enough for the others: the 5-layer simple RNN without
recurrent BatchNorm (no seed of it left the all-blank stage), the 5-layer GRU (one stuck seed) and the
3-layer 2D front-end (the slowest per update, still improving at the end). Runs go through
ablations/run.py's ``execute`` (curves, every update's loss), so the pilot measures exactly what the
study will run. Resumable like the study: finished runs are kept in the JSON and not repeated.

A run has **converged** when it took off (run.TAKEOFF_CER) and the best dev-noisy curve CER of its last
``CONVERGED_WINDOW`` updates improves on the best before them by less than ``CONVERGED_GAIN`` (relative).
The recommended budget is the smallest at which at least two thirds of the runs converged. The study's
cost at each budget is estimated from the pilot's own seconds per update (the slowest variants, so an
upper bound) times every distinct run of the study at that budget.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import implementation as ds2  # noqa: E402
from ablations import run as study  # noqa: E402

FORMAT = "deep-speech-2-lesson/ablation-pilot/1"
VARIANTS = (("batchnorm", "no-batchnorm-5"), ("gru", "gru-5"), ("conv", "2d-3"))
BUDGETS = (5, 8)  # epochs of 2,000 utterances: 625 and 1,000 updates
SEEDS = (0, 1)
CONVERGED_WINDOW = 200  # updates
CONVERGED_GAIN = 0.05  # relative improvement of the best dev-noisy curve CER over the window
MOST = 2 / 3


def pilot_runs(budgets, seeds, variants=VARIANTS, quick: bool = False) -> list[tuple[int, study.Run]]:
    chosen = []
    for budget in budgets:
        for sweep, variant in variants:
            size = study.size_of(sweep, quick)
            size = dataclasses.replace(size, epochs=budget, seeds=tuple(seeds))
            chosen += [(budget, r) for r in study.BUILDERS[sweep](size) if r.variant == variant]
    return chosen


def key(budget: int, run: study.Run) -> str:
    return f"epochs-{budget}:{run.sweep}/{run.key}"


def converged(record: dict) -> bool:
    curves = record["curves"]
    if not record["takeoff"]["took_off"]:
        return False
    pairs = list(zip(curves["updates"], curves["dev-noisy"]["cer"], strict=True))
    last = record["updates"] - CONVERGED_WINDOW
    before = [cer for update, cer in pairs if update <= last]
    after = [cer for update, cer in pairs if update > last]
    if not before or not after:
        return False
    return (min(before) - min(after)) / min(before) < CONVERGED_GAIN


def summarise(records: dict[str, dict]) -> dict:
    rows, budgets = [], {}
    for name, record in records.items():
        budget = int(name.split(":")[0].removeprefix("epochs-"))
        final = record["final"]
        row = {
            "key": name,
            "budget_epochs": budget,
            "updates": record["updates"],
            "variant": f"{record['sweep']}/{record['variant']}",
            "seed": record["seed"],
            "took_off": record["takeoff"]["took_off"],
            "t50": record["takeoff"]["t50"],
            "converged": converged(record),
            "dev_noisy_greedy_cer": final["dev-noisy"]["greedy"]["cer"] if final else None,
            "dev_clean_greedy_cer": final["dev-clean"]["greedy"]["cer"] if final else None,
            "wall_seconds": record["wall_seconds"],
            "seconds_per_update": record["wall_seconds"] / max(record["updates"], 1),
        }
        rows.append(row)
        group = budgets.setdefault(budget, {"runs": 0, "took_off": 0, "converged": 0, "wall_seconds": 0.0})
        group["runs"] += 1
        group["took_off"] += row["took_off"]
        group["converged"] += row["converged"]
        group["wall_seconds"] += row["wall_seconds"]
    for budget, group in budgets.items():
        per_update = [r["seconds_per_update"] for r in rows if r["budget_epochs"] == budget]
        group["seconds_per_update"] = sum(per_update) / len(per_update)
        group["study"] = estimate(budget, group["seconds_per_update"])
    enough = [b for b, g in sorted(budgets.items()) if g["converged"] >= MOST * g["runs"]]
    return {"rows": rows, "budgets": budgets, "recommended_epochs": enough[0] if enough else None}


def estimate(budget: int, seconds_per_update: float) -> dict:
    """The study's compute at this budget: every distinct run (reused ones once) x the pilot's speed."""
    specs, updates = {}, 0
    for name in study.ORDER:
        size = dataclasses.replace(study.size_of(name, False), epochs=budget)
        for r in study.BUILDERS[name](size):
            spec = json.dumps(r.spec(), sort_keys=True)
            if spec not in specs:  # early stopping can only shorten a scaling run: counted at its cap
                specs[spec] = ds2.steps_per_epoch(r.data["train_size"], size.batch_size) * r.train["epochs"]
    updates = sum(specs.values())
    core_hours = updates * seconds_per_update / 3600
    return {
        "distinct_runs": len(specs),
        "updates": updates,
        "core_hours": core_hours,
        "wall_hours_2_cores": core_hours / 2,
    }


def report(data: dict) -> str:
    lines = [
        "| budget | run | took off (t50) | converged | dev-noisy greedy CER | dev-clean greedy CER | minutes |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in data["summary"]["rows"]:
        cer = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
        lines.append(
            f"| {row['updates']} updates | {row['variant']} seed {row['seed']} | "
            f"{'yes (' + str(row['t50']) + ')' if row['took_off'] else 'no'} | {'yes' if row['converged'] else 'no'} | "
            f"{cer(row['dev_noisy_greedy_cer'])} | {cer(row['dev_clean_greedy_cer'])} | {row['wall_seconds'] / 60:.1f} |"
        )
    lines.append("")
    for budget, group in sorted(data["summary"]["budgets"].items(), key=lambda item: int(item[0])):
        s = group["study"]
        lines.append(
            f"- {budget} epochs: {group['converged']}/{group['runs']} runs converged, {group['took_off']}/"
            f"{group['runs']} took off; {group['seconds_per_update']:.2f} s per update with its curves and "
            f"evaluation; the study at this budget: {s['distinct_runs']} distinct runs, {s['updates']:,} updates, "
            f"at most {s['core_hours']:.1f} core-hours ({s['wall_hours_2_cores']:.1f} h on 2 cores)"
        )
    recommended = data["summary"]["recommended_epochs"]
    lines.append(f"- recommended: {recommended} epochs" if recommended else "- no budget converged most runs")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS), help="epochs of the training set")
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (processes)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per run")
    p.add_argument("--cache-dir", help="synthesised-data cache")
    p.add_argument("--out", default=str(study.RESULTS.parent / "pilot.json"))  # not a sweep of results/
    p.add_argument(
        "--quick", action="store_true", help="the tiny --quick sizes (a smoke test of the code path)"
    )
    p.add_argument("--report", action="store_true", help="print the recorded pilot as Markdown, run nothing")
    args = p.parse_args(argv)
    out = Path(args.out)
    saved = json.loads(out.read_text(encoding="utf-8")) if out.exists() else {"runs": {}}
    if args.report:
        print(report(saved))
        return 0
    chosen = pilot_runs(args.budgets, args.seeds, quick=args.quick)
    records = {
        name: record
        for name, record in saved.get("runs", {}).items()
        if any(key(b, r) == name and json.loads(json.dumps(r.spec())) == record["spec"] for b, r in chosen)
    }
    pending = [(b, r) for b, r in chosen if key(b, r) not in records]
    print(f"pilot: {len(chosen)} runs, {len(chosen) - len(pending)} already finished", flush=True)

    def save():
        data = {
            "format": FORMAT,
            "variants": [list(v) for v in VARIANTS],
            "budgets_epochs": args.budgets,
            "seeds": args.seeds,
            "quick": args.quick,
            "converged": f"took off, and the best dev-noisy curve CER of the last {CONVERGED_WINDOW} updates "
            f"improves on the best before them by less than {CONVERGED_GAIN:.0%}",
            "updated_at": datetime.datetime.now().isoformat(timespec="seconds"),
            "runs": records,
            "summary": summarise(records) if records else {},
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        ds2.atomic_write_text(out, json.dumps(data, indent=1))
        return data

    jobs = argparse.Namespace(jobs=args.jobs, threads=args.threads, cache_dir=args.cache_dir)
    by_spec = {json.dumps(r.spec(), sort_keys=True): key(b, r) for b, r in pending}
    for record in study.execute_all([r for _, r in pending], jobs):
        name = by_spec[json.dumps(record["spec"], sort_keys=True)]
        records[name] = record
        save()
        print(
            f"[pilot {len(records)}/{len(chosen)}] {name}: {record['wall_seconds']:.0f} s, "
            f"took off: {record['takeoff']['t50']}, converged: {converged(record)}",
            flush=True,
        )
    data = save()
    print(report(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
