"""Check that this machine can run the Deep Speech 2 lesson: run ``python setup.py`` first.

This is NOT a packaging script (there is no setuptools here): the lesson is a folder of scripts. Install
what it needs with ``python -m pip install -r requirements.txt``, then run ``python setup.py``. In under
a minute on a laptop CPU it checks the Python version, every package in requirements.txt, the lesson's
imports, one training step of the default model (finite loss and gradients), and times a short
measurement (benchmarks/bench_training.py's) to predict how long ``python train_minimal.py`` takes here,
with one thread and with torch's default. One line per check (✓ passed, ✗ failed, with the fix); exit
status 1 if a required check failed.
"""

import importlib
import importlib.metadata
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
INSTALL = "python -m pip install -r requirements.txt"
# Import name, and whether the lesson needs it (flashlight-text backs only --decoder flashlight and the
# benchmarks' peer decoder).
IMPORTS = {"torch": "torch", "torchaudio": "torchaudio", "numpy": "numpy", "matplotlib": "matplotlib"}
IMPORTS |= {"soundfile": "soundfile", "tqdm": "tqdm", "flashlight-text": "flashlight.lib.text"}
OPTIONAL = {"flashlight-text"}
FAILED: list[str] = []


def report(name: str, ok: bool | None, detail: str = "", fix: str = "", required: bool = True) -> None:
    """``ok``: True passed, False failed (with the fix), None information."""
    mark = {True: "✓", False: "✗" if required else "!", None: "·"}[ok]
    try:
        mark.encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):  # e.g. a Windows console in cp1252
        mark = {True: "OK  ", False: "FAIL" if required else "!   ", None: "--  "}[ok]
    print(f"  {mark} {name}" + (f": {detail}" if detail else ""), flush=True)
    if ok is False:
        print(f"      fix: {fix or INSTALL}", flush=True)
        if required:
            FAILED.append(f"{name}: {fix or INSTALL}")


def read_requirements(path: Path = ROOT / "requirements.txt") -> list[tuple[str, str]]:
    """``(name, specifier)`` for each requirement line, e.g. ``("torch", "==2.14.1")``."""
    found = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        match = re.match(
            r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$", raw.split("#", 1)[0].strip()
        )
        if match:
            found.append((match.group(1), match.group(3).split(";", 1)[0].strip()))
    return found


def _version_tuple(version: str) -> tuple[int, ...]:
    """``"2.14.1+cpu"`` -> ``(2, 14, 1)``: the leading release numbers."""
    numbers = []
    for part in re.split(r"[.+-]", version):
        digits = re.match(r"\d+", part)
        if not digits:
            break
        numbers.append(int(digits.group()))
    return tuple(numbers)


def satisfies(version: str, specifier: str) -> bool:
    """Does ``version`` meet ``specifier`` (``">=1.26"``, ``"==2.14.1"``, ``">=1,<3"``)? Release numbers only."""
    have = _version_tuple(version)
    for clause in filter(None, specifier.split(",")):
        match = re.match(r"^\s*(==|!=|>=|<=|~=|>|<)\s*(\S+)\s*$", clause)
        if not match:
            continue
        operator, wanted = match.group(1), _version_tuple(match.group(2))
        width = max(len(have), len(wanted))
        a, b = have + (0,) * (width - len(have)), wanted + (0,) * (width - len(wanted))
        compatible = a >= b and have[: len(wanted) - 1] == wanted[: len(wanted) - 1]
        ok = {
            "==": a == b,
            "!=": a != b,
            ">=": a >= b,
            "<=": a <= b,
            ">": a > b,
            "<": a < b,
            "~=": compatible,
        }
        if not ok[operator]:
            return False
    return True


def check_packages() -> bool:
    """Python, every requirement's version, and the imports; returns whether the required ones work."""
    report(
        f"Python {sys.version.split()[0]}", sys.version_info >= (3, 10), ">= 3.10", "use Python 3.10 or newer"
    )
    for name, specifier in read_requirements():
        try:
            version = importlib.metadata.version(name)
            report(f"{name} {specifier}".strip(), satisfies(version, specifier), f"{version} installed")
        except importlib.metadata.PackageNotFoundError:
            report(f"{name} {specifier}".strip(), False, "not installed", required=name not in OPTIONAL)
    for name, module in IMPORTS.items():
        try:
            importlib.import_module(module)
            report(f"import {module}", True)
        except Exception as error:  # an ImportError, or an OSError from a missing shared library
            fix = (
                "torchaudio must match torch (the pair in requirements.txt): " + INSTALL
                if name == "torchaudio"
                else ""
            )
            detail = f"{type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else ''}"
            report(f"import {module}", False, detail, fix, required=name not in OPTIONAL)
    return not FAILED


def check_training_step(ds2) -> bool:
    """One training step of the default model on synthetic speech: finite loss, finite gradients."""
    import numpy as np
    import torch

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    texts = ["the little dog sleeps", "we see a red house"]
    waveforms = [ds2.synthesize_speech(text, ds2.random_speaker(rng), rng) for text in texts]
    batch = ds2.collate(ds2.featurize_batch(waveforms), texts)
    model = ds2.DeepSpeech2()
    loss = ds2.train_step(model, ds2.make_optimizer(model, ds2.TrainConfig()), batch)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    ok = np.isfinite(loss) and all(g is not None and torch.isfinite(g).all() for g in grads)
    report(
        "a training step of the default model",
        bool(ok),
        f"spectrograms {tuple(batch.spectrograms.shape)}, CTC loss {loss:.1f}, {model.num_parameters():,} parameters",
        "a NaN/inf loss or gradient here means a broken install: " + INSTALL,
    )
    return bool(ok)


def check_speed() -> None:
    """Predict ``python train_minimal.py`` here, with torch's default threads and with one thread."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_training import estimate_default_run

    default = torch.get_num_threads()
    runs = {1: estimate_default_run(threads=1)}
    if default > 1:
        runs[default] = estimate_default_run(threads=default)
    best = min(runs, key=lambda threads: runs[threads]["total_s"])
    for threads, run in runs.items():
        report(
            f"estimate for `python train_minimal.py` with {threads} thread{'s' * (threads > 1)}",
            None,
            f"about {run['total_s'] / 60:.1f} min = {run['steps']} steps x {run['step_s']:.2f} s "
            f"+ data {run['data_s']:.0f} s + dev evaluation {run['eval_s']:.0f} s "
            "(plus the final beam search)",
        )
    if best == 1 and default > 1:
        slowdown = runs[default]["total_s"] / runs[1]["total_s"]
        report(
            "threads",
            None,
            f"one thread is {slowdown:.1f}x faster than torch's default of {default} here: the CPU is busy "
            "or shared, so add --threads 1",
        )
    report(
        "CUDA", None, "available: used automatically" if torch.cuda.is_available() else "not available (fine)"
    )


def main() -> int:
    began = time.perf_counter()
    print("Deep Speech 2 lesson: environment check\n", flush=True)
    if check_packages():
        sys.path.insert(0, str(ROOT))
        import implementation

        if check_training_step(implementation):
            check_speed()
    print(f"\nSummary ({time.perf_counter() - began:.0f} s): ", end="")
    if FAILED:
        print("not ready. Fix these, then run python setup.py again:\n      " + "\n      ".join(FAILED))
        return 1
    print("ready. Next: python -m pytest, then python train_minimal.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
