"""A sweep's learning curves: every run's greedy dev CER against updates, and the takeoff line.

    python ablations/curves.py ablations/results/batchnorm.json    # -> ablations/results/batchnorm_curves.png

ablations/run.py draws this figure beside each finished sweep's own. One panel per curve split
(dev-clean, dev-noisy), one colour per variant, one thin line per seed, so a variant whose seeds split
into stuck and taken-off runs shows both, never their average. The dotted line is the takeoff criterion
(run.TAKEOFF_CER): a run has taken off once its dev-clean curve falls below it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TAKEOFF_CER = 0.5  # run.TAKEOFF_CER


def figure_curves(results_path, out_path) -> None:
    """Draw the sweep of ``results_path`` (a sweep's JSON) into ``out_path`` (a PNG)."""
    fig = draw_curves(json.loads(Path(results_path).read_text(encoding="utf-8")))
    fig.savefig(out_path, dpi=110)
    plt.close(fig)


def draw_curves(results: dict) -> plt.Figure:
    """The figure of one sweep's results (its JSON, loaded): one panel per curve split."""
    runs = [run for run in results["runs"] if run.get("curves")]
    if not runs:
        raise ValueError(f"the {results.get('sweep')} sweep's results hold no learning curves (format 1?)")
    splits = [s for s in ("dev-clean", "dev-noisy") if s in runs[0]["curves"]]
    variants = list(dict.fromkeys(run["variant"] for run in runs))
    colours = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, len(splits), figsize=(6 * len(splits), 4.2), squeeze=False)
    for ax, split in zip(axes[0], splits, strict=True):
        for index, variant in enumerate(variants):
            group = [run for run in runs if run["variant"] == variant]
            took = sum(run["takeoff"]["took_off"] for run in group)
            for number, run in enumerate(group):
                label = f"{variant} ({took}/{len(group)} took off)" if number == 0 else None
                cer = [100 * c for c in run["curves"][split]["cer"]]
                ax.plot(
                    run["curves"]["updates"], cer, color=colours(index % 10), lw=0.9, alpha=0.8, label=label
                )
        if split == "dev-clean":
            ax.axhline(100 * TAKEOFF_CER, ls=":", color="k", lw=1, label="takeoff")
        ax.set(xlabel="update", ylabel=f"greedy CER on {split} subset, %", ylim=(0, 105))
        ax.set_title(f"{split}: the last {runs[0]['curves']['utterances']} utterances", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"ablations/run.py {results['sweep']}: {results['title']} - every seed's curve", fontsize=9)
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    path = Path(sys.argv[1])
    figure_curves(path, path.with_name(f"{path.stem}_curves.png"))
