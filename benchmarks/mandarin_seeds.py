"""Mandarin's start over seeds: which draws take off, and which part of the initialisation decides it.

    python benchmarks/mandarin_seeds.py --seeds 0 1 2 3 4                  # the default recipe, five seeds
    python benchmarks/mandarin_seeds.py --seeds 0 --init-seed 1            # seed 0's data and batch order, seed 1's weights
    python benchmarks/mandarin_seeds.py --seeds 0 --conv-seed 1            # seed 0 throughout but seed 1's conv front-end
    python benchmarks/mandarin_seeds.py --seeds 1 3 --stop-after 5         # the 8-epoch schedule's first 5 epochs
    python benchmarks/mandarin_seeds.py --no-sortagrad                     # epoch 1 shuffled too (§3.3 off)
    python benchmarks/mandarin_seeds.py --seeds 0 1 2 3 4 5 6 7 8 9 --stop-after 3 --lr 0.006   # any train_minimal flag

Trains each seed as ``python train_minimal.py --data mandarin --seed S --threads 1 --workers 1`` does (the
same data from the cache, model, ``TrainConfig`` and the one loop, ``implementation.fit``; seed 0's epochs
print the same CER as that command) and prints the greedy CER on dev-clean and dev-noisy after every epoch.
``--seed S`` sets three things at once, the data, the initial weights and the batch order; ``--init-seed``
draws the initial weights from another seed, and ``--conv-seed`` only the conv front-end's, so a slow
start can be traced to one of them (benchmarks/README.md, "Five seeds"). Every other flag is passed to
train_minimal.py's parser, so a recipe is judged over seeds as that command would train it. Runs one
seed after another; start two at once (``--threads 1`` each) on a 2-core host.
"""

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import corpora  # noqa: E402
import implementation as ds2  # noqa: E402
import train_minimal  # noqa: E402


def initial_model(config: ds2.DS2Config, seed: int, conv_seed: int | None) -> ds2.DeepSpeech2:
    """The model train_minimal.py builds after ``torch.manual_seed(seed)``, with the conv front-end's
    initial weights (and BatchNorm buffers) from a model built after ``torch.manual_seed(conv_seed)``."""
    torch.manual_seed(seed)
    model = ds2.DeepSpeech2(config)
    if conv_seed is not None:
        torch.manual_seed(conv_seed)
        model.conv.load_state_dict(ds2.DeepSpeech2(config).conv.state_dict())
    return model


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Any other flag is train_minimal.py's (--lr, --batch-size, --epochs, --train-size, --hidden, "
        "--no-sortagrad, --cache-dir, ...) and trains as it would there.",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="data, weights, order")
    p.add_argument("--init-seed", type=int, help="initial weights from this seed instead (all of them)")
    p.add_argument("--conv-seed", type=int, help="the conv front-end's initial weights from this seed")
    p.add_argument("--stop-after", type=int, help="epochs to run of the schedule (default: all of it)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    args, args.train_flags = p.parse_known_args(argv)
    if "--seed" in args.train_flags:
        p.error("--seed is set per run from --seeds")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s); greedy CER after each epoch")
    for seed in args.seeds:
        train_one(seed, args)


def train_one(seed: int, args) -> None:
    """Trains one seed as train_minimal.py would, printing each epoch's greedy dev CER, then the time."""
    run = train_minimal.parse_args(
        ["--data", "mandarin", "--seed", str(seed), "--workers", "1", *args.train_flags]
    )
    model_config, train = train_minimal.configs(run)  # the configs the flags give train_minimal.py
    data, _, _, config = corpora.training_data(run, model_config)
    init = seed if args.init_seed is None else args.init_seed
    model = initial_model(config, init, args.conv_seed)
    stop = args.stop_after or run.epochs
    conv = "" if args.conv_seed is None else f", conv {args.conv_seed}"
    label, began = f"seed {seed} (weights {init}{conv})", time.perf_counter()

    def report(state, record):
        errors = "  ".join(f"{name} {100 * record[name]['cer']:6.2f}%" for name in ("dev-clean", "dev-noisy"))
        print(f"{label}  epoch {record['epoch']:2d}  loss {record['train_loss']:7.3f}  {errors}", flush=True)

    dev = {name: split for name, split in data.items() if name != "train"}
    ds2.fit(
        model, data["train"], train, dev, log=None, on_epoch=report, should_stop=lambda s: s.epoch >= stop
    )
    print(f"{label}: {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
