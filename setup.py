"""Check that this machine can run the Deep Speech 2 lesson: run ``python setup.py`` first.

This is NOT a packaging script: there is no setuptools here, and ``pip install .`` is not how the lesson
is installed (it is a folder of scripts, not a package). Install what it needs with

    python -m pip install -r requirements.txt

and then run ``python setup.py``. It checks, in about half a minute on a laptop CPU:

* the Python version (3.10 or newer);
* every package in requirements.txt against its version specifier, and that the lesson's imports work
  (torch, torchaudio, numpy, matplotlib, soundfile, tqdm; flashlight-text is optional);
* that implementation.py imports, and one forward/backward pass of the default model on 2 s of
  synthetic speech gives a finite CTC loss and finite gradients;
* how long one training step takes at the default batch size, and from that an estimate of how long
  ``python train_minimal.py --epochs 5`` will take here;
* whether a CUDA GPU is available (for information: everything runs on the CPU).

It prints one line per check (✓ passed, ✗ failed, with the fix) and exits with status 1 if a required
check failed, 0 otherwise.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import math
import queue
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent
MIN_PYTHON = (3, 10)
INSTALL = "python -m pip install -r requirements.txt"

# Import name and whether the lesson needs it, for the packages whose import we try. flashlight-text only
# backs the production decoder the benchmarks compare against, so the lesson runs without it.
IMPORTS = {
    "torch": ("torch", True),
    "torchaudio": ("torchaudio", True),
    "numpy": ("numpy", True),
    "matplotlib": ("matplotlib", True),
    "soundfile": ("soundfile", True),
    "tqdm": ("tqdm", True),
    "flashlight-text": ("flashlight.lib.text", False),
}
OPTIONAL_PACKAGES = {name for name, (_, required) in IMPORTS.items() if not required}
IMPORT_FIXES = {
    "torchaudio": "torchaudio must match torch (torch 2.14.1 with torchaudio 2.11.0): " + INSTALL,
    "soundfile": "soundfile ships libsndfile in its wheel; reinstall it: " + INSTALL,
    "flashlight-text": "optional (benchmarks only): python -m pip install flashlight-text==0.0.7",
}


# ---------------------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------------------


def _marks() -> dict[str, str]:
    """✓/✗ when the terminal can print them, ASCII otherwise (e.g. a Windows console in cp1252)."""
    try:
        "✓✗·".encode(sys.stdout.encoding or "ascii")
        return {"ok": "✓", "fail": "✗", "info": "·", "warn": "!"}
    except (UnicodeEncodeError, LookupError):
        return {"ok": "OK  ", "fail": "FAIL", "info": "--  ", "warn": "!   "}


MARKS = _marks()


@dataclass
class Result:
    name: str
    status: str  # "ok", "fail" (a required check failed), "warn" (optional failed) or "info"
    detail: str = ""
    fix: str = ""


RESULTS: list[Result] = []
NEXT_COMMAND = ["python train_minimal.py --epochs 5"]  # becomes "... --threads 1" when that is faster here


def report(name: str, status: str, detail: str = "", fix: str = "") -> Result:
    result = Result(name, status, detail, fix)
    RESULTS.append(result)
    line = f"  {MARKS[status]} {name}"
    if detail:
        line += f": {detail}"
    print(line, flush=True)
    if fix and status in ("fail", "warn"):
        print(f"      fix: {fix}", flush=True)
    return result


# ---------------------------------------------------------------------------------------------------------
# Versions and imports
# ---------------------------------------------------------------------------------------------------------


def read_requirements(path: Path = ROOT / "requirements.txt") -> list[tuple[str, str]]:
    """``(name, specifier)`` for each requirement line, e.g. ``("torch", "==2.14.1")``."""
    requirements = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$", line)
        if match:
            requirements.append((match.group(1), match.group(3).split(";", 1)[0].strip()))
    return requirements


def _version_tuple(version: str) -> tuple[int, ...]:
    """``"2.14.1+cpu"`` -> ``(2, 14, 1)``: the leading release numbers, for the fallback comparison."""
    numbers = []
    for part in re.split(r"[.+-]", version):
        digits = re.match(r"\d+", part)
        if not digits:
            break
        numbers.append(int(digits.group()))
    return tuple(numbers)


def satisfies(version: str, specifier: str) -> bool:
    """Does ``version`` meet ``specifier`` (e.g. ``">=1.26"``, ``"==2.14.1"``, ``">=1,<3"``)?

    Uses ``packaging`` (installed with pip and jupyter) when present; otherwise compares release
    numbers for the operators requirements.txt uses (==, !=, >=, <=, >, <, ~=).
    """
    if not specifier:
        return True
    try:
        from packaging.specifiers import SpecifierSet

        return SpecifierSet(specifier).contains(version, prereleases=True)
    except ImportError:
        pass
    have = _version_tuple(version)
    for clause in specifier.split(","):
        match = re.match(r"^\s*(==|!=|>=|<=|~=|>|<)\s*([^\s]+)\s*$", clause)
        if not match:
            continue
        operator, wanted_text = match.groups()
        wanted = _version_tuple(wanted_text)
        width = max(len(have), len(wanted))
        a, b = have + (0,) * (width - len(have)), wanted + (0,) * (width - len(wanted))
        ok = {
            "==": a == b,
            "!=": a != b,
            ">=": a >= b,
            "<=": a <= b,
            ">": a > b,
            "<": a < b,
            "~=": a >= b and have[: len(wanted) - 1] == wanted[: len(wanted) - 1],
        }[operator]
        if not ok:
            return False
    return True


def check_python() -> bool:
    version = ".".join(map(str, sys.version_info[:3]))
    ok = sys.version_info[:2] >= MIN_PYTHON
    wanted = f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]}"
    report(
        f"Python {version}",
        "ok" if ok else "fail",
        f">= {wanted}" if ok else f"too old: the lesson needs Python {wanted} or newer",
        "install Python 3.10+ (e.g. from python.org or with uv/conda) and create a fresh virtual environment",
    )
    return ok


def check_versions() -> None:
    for name, specifier in read_requirements():
        required = name not in OPTIONAL_PACKAGES
        label = f"{name} {specifier}".strip()
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            report(label, "fail" if required else "warn", "not installed", INSTALL)
            continue
        if satisfies(version, specifier):
            report(label, "ok", f"{version} installed")
        else:
            report(label, "fail" if required else "warn", f"{version} installed", INSTALL)


def check_imports() -> bool:
    """Import each package the lesson uses; returns whether every required one imported."""
    all_ok = True
    for name, (module, required) in IMPORTS.items():
        try:
            importlib.import_module(module)
        except Exception as error:  # an ImportError, or an OSError from a missing shared library
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            report(
                f"import {module}",
                "fail" if required else "warn",
                f"{type(error).__name__}: {message[:160]}",
                IMPORT_FIXES.get(name, INSTALL),
            )
            all_ok = all_ok and not required
        else:
            report(f"import {module}", "ok")
    return all_ok


# ---------------------------------------------------------------------------------------------------------
# The model: imports, a forward/backward pass, a timing
# ---------------------------------------------------------------------------------------------------------


def check_implementation():
    sys.path.insert(0, str(ROOT))
    try:
        import implementation
    except Exception as error:
        report(
            "import implementation",
            "fail",
            f"{type(error).__name__}: {error}",
            "run setup.py from the lesson's folder, and " + INSTALL,
        )
        return None
    report("import implementation", "ok", f"{len(implementation.ALPHABET)}-symbol alphabet, blank = 0")
    return implementation


def check_forward_backward(ds2) -> bool:
    """The default model on 2.0 s of synthetic speech: finite CTC loss, finite gradients everywhere."""
    import numpy as np
    import torch

    default_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a correctness check: one thread is never pathologically slow (see below)
    try:
        torch.manual_seed(0)
        rng = np.random.default_rng(0)
        text = "the little dog sleeps"
        waveform = ds2.synthesize_speech(text, ds2.random_speaker(rng), rng)
        samples = 2 * ds2.SAMPLE_RATE
        waveform = torch.nn.functional.pad(waveform, (0, max(0, samples - len(waveform))))[:samples]
        spec = ds2.featurize(waveform)  # (F, T)
        model = ds2.DeepSpeech2()
        started = time.perf_counter()
        log_probs, out_lengths = model(spec[None], torch.tensor([spec.shape[-1]]))  # (1, T', 29)
        targets = ds2.encode_text(text)[None]
        loss = ds2.ctc_loss(log_probs, targets, out_lengths, torch.tensor([targets.shape[1]]))
        loss.backward()
        seconds = time.perf_counter() - started
        trained = [p for p in model.parameters() if p.requires_grad]
        gradients_ok = all(p.grad is not None and torch.isfinite(p.grad).all() for p in trained)
        ok = bool(torch.isfinite(loss)) and gradients_ok
        report(
            "forward/backward, default model",
            "ok" if ok else "fail",
            f"2.0 s of speech -> spectrogram {tuple(spec.shape)} -> log-probs {tuple(log_probs.shape)}; "
            f"CTC loss {loss.item():.1f}; {model.num_parameters():,} parameters; {seconds:.2f} s",
            "a NaN/inf loss or gradient (or a missing gradient) here means a broken install: " + INSTALL,
        )
        return ok
    except Exception as error:
        report("forward/backward, default model", "fail", f"{type(error).__name__}: {error}", INSTALL)
        return False
    finally:
        torch.set_num_threads(default_threads)


def probe_pass_seconds(ds2, threads: int, repeats: int = 3, on_pass=None) -> float:
    """Fastest of ``repeats`` small forward/backward passes (batch 4 x 1 s) with ``threads`` threads."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = ds2.DeepSpeech2()
    spectrograms, lengths = torch.randn(4, model.config.num_freq, 100), torch.full((4,), 100)
    targets, target_lengths = torch.randint(1, ds2.NUM_CLASSES, (4, 10)), torch.full((4,), 10)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        log_probs, out_lengths = model(spectrograms, lengths)
        ds2.ctc_loss(log_probs, targets, out_lengths, target_lengths).backward()
        times.append(time.perf_counter() - started)
        if on_pass is not None:
            on_pass(times[-1])
    return min(times)


# The child process of _probe_in_child: says "ready" once torch is imported, then prints each pass's time.
_CHILD = (
    "import sys; sys.path.insert(0, sys.argv[2]); import implementation, setup; print('ready', flush=True); "
    "setup.probe_pass_seconds(implementation, int(sys.argv[1]), on_pass=lambda s: print(s, flush=True))"
)


def _probe_in_child(threads: int, timeout_s: float = 8.0, import_timeout_s: float = 60.0) -> float:
    """Fastest small pass with ``threads`` torch threads, or ``inf`` if none finished in ``timeout_s``.

    Runs in a child process, so a pathologically slow thread setting (one pass can take minutes when
    more threads than free cores spin-wait on each other) is cut off instead of stalling this check.
    The clock starts once the child has imported torch.
    """
    command = [sys.executable, "-c", _CHILD, str(threads), str(ROOT)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line.strip()) for line in child.stdout], daemon=True).start()
    times: list[float] = []
    try:
        if lines.get(timeout=import_timeout_s) != "ready":
            return math.inf
        deadline = time.perf_counter() + timeout_s
        while len(times) < 3:
            times.append(float(lines.get(timeout=max(0.0, deadline - time.perf_counter()))))
    except (queue.Empty, ValueError):
        pass
    finally:
        child.kill()
        child.wait()
    return min(times, default=math.inf)


def _format_minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def check_training_speed(ds2) -> bool:
    """Time a training step at the default batch size; estimate `python train_minimal.py --epochs 5`."""
    import numpy as np
    import torch

    try:
        import train_minimal

        args = train_minimal.parse_args([])  # the CLI's own defaults
    except Exception as error:
        report("train_minimal.py defaults", "fail", f"{type(error).__name__}: {error}", INSTALL)
        return False
    default_threads = torch.get_num_threads()
    try:
        # torch's default thread count is what `train_minimal.py` uses unless given --threads. On a shared
        # or busy CPU, more threads than free cores can make torch many times slower than one thread.
        probe_one = probe_pass_seconds(ds2, 1)  # in this process: one thread is never pathological
        probe_default = _probe_in_child(default_threads) if default_threads > 1 else probe_one
        threads = 1 if probe_one <= probe_default else default_threads
        torch.set_num_threads(threads)

        # Data: synthesise a sample of training-like utterances and time it (one process).
        began = time.perf_counter()
        sample = ds2.make_split("probe", 128, ds2.make_speaker_pool(64, 7), seed=(7, 10))
        synthesis_s = time.perf_counter() - began
        durations = sample.durations_s()
        began = time.perf_counter()
        features = [ds2.featurize(w) for w in sample.waveforms]
        featurize_s = time.perf_counter() - began
        rng = np.random.default_rng(0)
        began = time.perf_counter()
        ds2.NGramLM.train([ds2.random_sentence(rng) for _ in range(2000)], order=3)
        lm_s = (time.perf_counter() - began) * args.lm_sentences / 2000

        # One default-sized batch of utterances near the median length: train_minimal sorts utterances by
        # length within pools of 50 batches (sortagrad_batches), so its batches hold similar lengths too.
        order = np.argsort(durations)
        start = max(0, min(len(order) - args.batch_size, len(order) // 2 - args.batch_size // 2))
        chosen = order[start : start + args.batch_size].tolist()
        batch = ds2.collate([features[i] for i in chosen], [sample.texts[i] for i in chosen])
        torch.manual_seed(0)
        model = ds2.DeepSpeech2()
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
        step_times = []
        for _ in range(2):  # the first step also warms up the allocator; keep the faster
            started = time.perf_counter()
            log_probs, out_lengths = model(batch.spectrograms, batch.lengths)
            loss = ds2.ctc_loss(log_probs, batch.targets, out_lengths, batch.target_lengths)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            optimizer.step()
            step_times.append(time.perf_counter() - started)
        step_s = min(step_times)
        model.eval()
        with torch.no_grad():
            started = time.perf_counter()
            model(batch.spectrograms, batch.lengths)
            eval_batch_s = time.perf_counter() - started
    except Exception as error:
        report("training step timing", "fail", f"{type(error).__name__}: {error}", INSTALL)
        return False
    finally:
        torch.set_num_threads(default_threads)

    seconds_per_utt = float(durations.mean())
    padded_s = batch.spectrograms.shape[-1] / 100
    report(
        "training step",
        "ok",
        f"batch {args.batch_size} x {float(np.mean(durations[chosen])):.1f} s utterances "
        f"(padded to {padded_s:.1f} s): {step_s:.2f} s/step with {threads} thread{'s' if threads > 1 else ''}",
    )

    # The estimate for `python train_minimal.py --epochs 5` with the CLI's defaults.
    steps = math.ceil(args.train_size / args.batch_size) * args.epochs
    utterances = args.train_size + 2 * args.dev_size
    data_s = utterances * (synthesis_s + featurize_s) / len(durations) + lm_s
    eval_s = args.epochs * 2 * math.ceil(args.dev_size / args.batch_size) * eval_batch_s
    train_s = steps * step_s
    total_s = data_s + train_s + eval_s
    detail = (
        f"about {_format_minutes(total_s)} = {steps} steps "
        f"(ceil({args.train_size}/{args.batch_size}) x {args.epochs} epochs) x {step_s:.2f} s "
        f"+ data {_format_minutes(data_s)} ({utterances} utterances of ~{seconds_per_utt:.1f} s, LM) "
        f"+ dev evaluation {_format_minutes(eval_s)}; the final beam-search evaluation comes on top"
    )
    command = f"python train_minimal.py --epochs {args.epochs}"
    NEXT_COMMAND[0] = command
    if threads == 1 and default_threads > 1:
        slowdown = probe_default / probe_one
        if slowdown > 1.3:
            report(f"estimate for `{command} --threads 1`", "info", detail)
            NEXT_COMMAND[0] = f"{command} --threads 1"
            if slowdown > 10:  # includes a probe that never finished: no estimate would mean anything
                how_slow = (
                    f"more than 10x slower than 1 thread here (a small pass: {probe_one:.2f} s on 1 thread, "
                    + ("none finished in 8 s" if probe_default == math.inf else f"{probe_default:.1f} s")
                    + f" on {default_threads})"
                )
            else:
                default_total = data_s + (train_s + eval_s) * slowdown
                how_slow = (
                    f"{slowdown:.1f}x slower than 1 thread here, so about {_format_minutes(default_total)}"
                )
            report(
                f"estimate for `{command}`",
                "info",
                f"torch's default of {default_threads} threads was {how_slow}: the CPU is busy or shared, "
                "so add --threads 1",
            )
            return True
    report(f"estimate for `{command}`", "info", detail)
    return True


def check_cuda() -> None:
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        report("CUDA", "info", f"available ({name}); train_minimal.py uses it automatically (--device auto)")
    else:
        report("CUDA", "info", "not available; everything in the lesson runs on the CPU")


# ---------------------------------------------------------------------------------------------------------


def main() -> int:
    began = time.perf_counter()
    print("Deep Speech 2 lesson: environment check\n", flush=True)
    print("Python and packages (requirements.txt)")
    check_python()
    check_versions()
    print("\nImports")
    imports_ok = check_imports()
    print("\nThe lesson's code")
    ds2 = check_implementation() if imports_ok else None
    if ds2 is not None and check_forward_backward(ds2):
        check_training_speed(ds2)
    elif imports_ok:
        report("training step timing", "fail", "skipped: the model does not run", INSTALL)
    if imports_ok:
        check_cuda()

    failed = [r for r in RESULTS if r.status == "fail"]
    optional = [r for r in RESULTS if r.status == "warn"]
    passed = [r for r in RESULTS if r.status == "ok"]
    print(
        f"\nSummary ({time.perf_counter() - began:.0f} s): {len(passed)} checks passed, {len(failed)} failed",
        end="",
    )
    print(f", {len(optional)} optional missing" if optional else "")
    if failed:
        print(f"  {MARKS['fail']} not ready. Fix these, then run python setup.py again:")
        for result in failed:
            print(f"      {result.name}: {result.fix or result.detail}")
        return 1
    print(f"  {MARKS['ok']} ready. Next: python -m pytest, then {NEXT_COMMAND[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
