"""Check your work on the exercises: one line per part, a hint for each failure, never a raw traceback.

Usage (from anywhere; paths below are relative to the repository root):

    python exercises/check.py 1              check exercises/exercise_01_spectrogram.py
    python exercises/check.py all            check every exercise (or several: check.py 1 2)
    python exercises/check.py 3 --solutions  check exercises/solutions/ instead (they all pass)
    python exercises/check.py 2 --all-hints  show all three hints for every failed part at once
    python exercises/exercise_02_ctc_loss.py running an exercise file checks that file

Each part reports PASSED, FAILED (what was expected, what came out, and a hint), or "not attempted yet"
(its stub still raises ``NotImplementedError``). Hints are graded: each time a part fails again you get
the next, more explicit one (remembered in ``exercises/.hint_levels.json``; delete it to start over).
The exit status is 0 only when every checked part passes.

The checks themselves live in ``exercises/checks/`` (one module per exercise); ``tests/test_exercises.py``
runs the very same checks under pytest.
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import importlib
import importlib.util
import json
import re
import signal
import sys
import textwrap
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

EXERCISES_DIR = Path(__file__).resolve().parent
SOLUTIONS_DIR = EXERCISES_DIR / "solutions"
ROOT = EXERCISES_DIR.parent
HINT_LEVELS_FILE = EXERCISES_DIR / ".hint_levels.json"
for _path in (ROOT, EXERCISES_DIR):  # implementation.py, and the checks package
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from checks.common import CheckFailed, Part  # noqa: E402


class Status(enum.Enum):
    PASSED = "PASSED"
    FAILED = "FAILED"
    NOT_ATTEMPTED = "not attempted yet"


@dataclass
class PartResult:
    """What one part's check found. ``message`` is one line (empty when the part passed)."""

    exercise: int
    part: Part
    status: Status
    message: str = ""


class LoadError(Exception):
    """An exercise file could not be imported (a syntax error, say); the message is one line."""


# ---------------------------------------------------------------------------------------------------------
# Finding exercises and their checks
# ---------------------------------------------------------------------------------------------------------


def discover() -> dict[int, ModuleType]:
    """Exercise number -> its checks module, for every ``checks/exNN_*.py`` (so a new exercise is a new module)."""
    modules = {}
    for path in sorted((EXERCISES_DIR / "checks").glob("ex[0-9][0-9]_*.py")):
        module = importlib.import_module(f"checks.{path.stem}")
        modules[module.EXERCISE] = module
    return modules


def exercise_path(number: int, which: str = "learner") -> Path:
    """The file a learner edits (``which="learner"``) or its solution (``which="solutions"``)."""
    checks = discover()
    if number not in checks:
        raise LoadError(
            f"there is no exercise {number} yet (exercises: {', '.join(map(str, sorted(checks)))})"
        )
    directory = {"learner": EXERCISES_DIR, "solutions": SOLUTIONS_DIR}[which]
    return directory / checks[number].FILENAME


def load_file(path: Path, module_name: str) -> ModuleType:
    """Import an exercise file afresh from its path (it may have been edited since the last import)."""
    try:
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise LoadError(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # dataclasses and pickling look a module up by name
        spec.loader.exec_module(module)
    except FileNotFoundError as error:
        raise LoadError(f"{relative(path)} does not exist") from error
    except Exception as error:
        sys.modules.pop(module_name, None)
        raise LoadError(f"{relative(path)} could not be imported: {summarise(error, path)}") from error
    return module


def load_exercise(number: int, which: str = "learner") -> ModuleType:
    """Import exercise ``number``'s file: the learner's or the solution."""
    return load_file(exercise_path(number, which), f"ds2_exercise_{number:02d}_{which}")


def relative(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------------------------------------
# Running checks
# ---------------------------------------------------------------------------------------------------------


def summarise(error: BaseException, learner_file: Path | str | None) -> str:
    """One line: the exception, and the line of the learner's file it came from (no traceback)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if isinstance(error, SyntaxError) and error.lineno:
        return f"SyntaxError: {error.msg} (line {error.lineno})"
    summary = f"{type(error).__name__}: {text}" if text else type(error).__name__
    if len(summary) > 300:
        summary = summary[:297] + "..."
    frames = traceback.extract_tb(error.__traceback__)
    learner = str(Path(learner_file).resolve()) if learner_file else None
    mine = [frame for frame in frames if learner and str(Path(frame.filename).resolve()) == learner]
    if mine:
        frame = mine[-1]
        return f"{summary} (in {frame.name}, line {frame.lineno}: {(frame.line or '').strip()})"
    return f"{summary} (raised while checking your result)"


_STUB_MESSAGE = re.compile(r"Exercise (\d+), part ([a-z])")


class _TimeLimit(Exception):
    """Raised inside a check that ran past its time limit (learner code stuck in a loop, say)."""


@contextlib.contextmanager
def _time_limit(seconds: float):
    """Interrupt the body after ``seconds`` with ``_TimeLimit`` (Unix main thread only; else no limit)."""
    usable = hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def interrupt(signum, frame):
        raise _TimeLimit

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_part(exercise: int, part: Part, module: ModuleType) -> PartResult:
    """Run one part's check against ``module``; never raises for anything the learner's code does."""
    torch.manual_seed(0)  # learner code that draws random numbers behaves the same on every run
    grad_enabled = torch.is_grad_enabled()
    limit = part.time_limit_s
    try:
        with _time_limit(limit):
            part.check(module)
    except _TimeLimit:
        return PartResult(
            exercise,
            part,
            Status.FAILED,
            f"the check did not finish in {limit:g} s: is there a loop that never ends?",
        )
    except CheckFailed as failure:
        return PartResult(exercise, part, Status.FAILED, str(failure))
    except NotImplementedError as error:
        match = _STUB_MESSAGE.search(str(error))
        if match and (int(match.group(1)), match.group(2)) != (exercise, part.letter):
            return PartResult(
                exercise,
                part,
                Status.NOT_ATTEMPTED,
                f"(it needs exercise {match.group(1)}, part {match.group(2)} first)",
            )
        return PartResult(exercise, part, Status.NOT_ATTEMPTED)
    except Exception as error:  # the learner's code raised: summarise it, no traceback
        return PartResult(exercise, part, Status.FAILED, summarise(error, getattr(module, "__file__", None)))
    finally:
        torch.set_grad_enabled(grad_enabled)  # in case the learner's code switched autograd off globally
    return PartResult(exercise, part, Status.PASSED)


def check_module(exercise: int, module: ModuleType) -> list[PartResult]:
    """Every part of one exercise, checked against ``module``."""
    return [run_part(exercise, part, module) for part in discover()[exercise].PARTS]


# ---------------------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------------------


def _read_hint_levels() -> dict[str, int]:
    try:
        return json.loads(HINT_LEVELS_FILE.read_text())
    except (OSError, ValueError):
        return {}


def _write_hint_levels(levels: dict[str, int]) -> None:
    try:
        HINT_LEVELS_FILE.write_text(json.dumps(levels, indent=1, sort_keys=True))
    except OSError:
        pass  # a read-only checkout just means the hints do not advance


def _indented(text: str) -> str:
    """Wrap a message under its part's line, so long messages stay readable in a narrow terminal."""
    return textwrap.fill(
        text, width=110, initial_indent=" " * 10, subsequent_indent=" " * 12, break_long_words=False
    )


def report(
    number: int, path: Path, module: ModuleType, hint_levels: dict[str, int] | None
) -> list[PartResult]:
    """Check every part of one exercise, printing each result as it comes; returns the results.

    ``hint_levels`` (part -> hints shown so far) is updated in place; None shows every hint of a failed part.
    """
    checks = discover()[number]
    print(f"Exercise {number}: {checks.TITLE}")
    print(f"  checking {relative(path)}", flush=True)
    results = []
    for part in checks.PARTS:
        label = f"part {part.letter}  {part.title} "
        if part.slow:  # say so before a long check (training a model, say) starts
            print(f"  {label:.<50} running (up to {part.time_limit_s:g} s)...", flush=True)
        result = run_part(number, part, module)
        results.append(result)
        print(f"  {label:.<50} {result.status.value}", flush=True)
        if result.status is Status.NOT_ATTEMPTED and result.message:
            print(_indented(result.message))
        if result.status is Status.FAILED:
            print(_indented(result.message))
            key = f"{number}{result.part.letter}"
            if hint_levels is None:
                level = 3
            else:
                level = min(hint_levels.get(key, 0) + 1, 3)
                hint_levels[key] = level
            for index, hint in enumerate(result.part.hints[:level], start=1):
                print(_indented(f"hint {index}/3: {hint}"))
            if level < 3:
                print("          (check again for a more explicit hint, or add --all-hints)")
    passed = sum(result.status is Status.PASSED for result in results)
    failed = sum(result.status is Status.FAILED for result in results)
    todo = len(results) - passed - failed
    print(f"  {passed} of {len(results)} parts passed, {failed} failed, {todo} not attempted yet.")
    pending = [result for result in results if result.status is not Status.PASSED]
    if pending:
        first = pending[0].part
        print(
            f"  Next: part {first.letter}, {', '.join(f'`{name}`' for name in first.functions)} in {relative(path)}"
        )
    print()
    return results


def check_and_report(number: int, path: Path, which: str, all_hints: bool) -> bool:
    """Check one exercise file and print the report; True when every part passed."""
    try:
        module = load_file(path, f"ds2_exercise_{number:02d}_{which}")
    except LoadError as error:
        print(f"Exercise {number}: {error}")
        print("  Fix that first; no part can be checked until the file imports.\n")
        return False
    # Hints advance only for the learner's own work; for solutions (a bug if they fail) show them all.
    hint_levels = None if all_hints or which == "solutions" else _read_hint_levels()
    before = dict(hint_levels or {})
    results = report(number, path, module, hint_levels)
    if hint_levels is not None and hint_levels != before:  # write only when a failure advanced a hint
        _write_hint_levels(hint_levels)
    return all(result.status is Status.PASSED for result in results)


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (0 when every checked part passes)."""
    parser = argparse.ArgumentParser(
        prog="python exercises/check.py",
        description="Check the Deep Speech 2 exercises: one line per part, a hint for each failure.",
    )
    parser.add_argument("exercise", nargs="+", help="exercise numbers (1, 2, ...), or 'all'")
    parser.add_argument(
        "--solutions", action="store_true", help="check exercises/solutions/ instead of your files"
    )
    parser.add_argument(
        "--all-hints", action="store_true", help="show all three hints of a failed part at once"
    )
    args = parser.parse_args(argv)
    which = "solutions" if args.solutions else "learner"
    checks = discover()
    if args.exercise == ["all"]:
        numbers = sorted(checks)
    else:
        unknown = [name for name in args.exercise if not (name.isdigit() and int(name) in checks)]
        if unknown:
            parser.error(
                f"no exercise {', '.join(unknown)} (yet); choose from {', '.join(map(str, sorted(checks)))} or 'all'"
            )
        numbers = [int(name) for name in args.exercise]
    passed = [check_and_report(n, exercise_path(n, which), which, args.all_hints) for n in numbers]
    if len(numbers) > 1:
        print(f"{sum(passed)} of {len(numbers)} exercises pass completely.")
    return 0 if all(passed) else 1


def check_file(path: str | Path) -> int:
    """Check one exercise file by path (what ``python exercises/exercise_0N_*.py`` runs); the exit status."""
    path = Path(path).resolve()
    match = re.match(r"exercise_(\d+)_", path.name)
    if match is None or int(match.group(1)) not in discover():
        print(f"{path.name} is not one of the exercises this checker knows")
        return 1
    which = "solutions" if path.parent == SOLUTIONS_DIR else "learner"
    return 0 if check_and_report(int(match.group(1)), path, which, all_hints=False) else 1


if __name__ == "__main__":
    sys.exit(main())
