"""For maintainers: regenerate exercise stubs from their solutions.

    python exercises/checks/make_stubs.py 1 3      # rewrite exercises/exercise_01_*.py and exercise_03_*.py

The stub is the solution file with the body of every function a part names (after its docstring)
replaced by ``raise NotImplementedError("Exercise N, part x: write <name> (<part title>)")``. Comments in
those bodies go too (they explain the answer); everything else - the module docstring, the docstrings,
classes' ``__init__`` - is kept. Imports only the removed code used get a ``# noqa: F401`` so the learner
still has them. The result is formatted with ``ruff format``. Edit the solution, then rerun this; never
edit a stub by hand (tests/test_exercises.py checks that stubs and solutions keep the same docstrings).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import check  # noqa: E402


def make_stub(number: int) -> Path:
    """Write exercise ``number``'s stub from its solution; returns the stub's path."""
    checks = check.discover()[number]
    source = check.exercise_path(number, "solutions").read_text()
    lines = source.splitlines()
    owner = {name: part for part in checks.PARTS for name in part.functions}
    targets = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and node.name in owner:
            targets.append((node, node.name))
        if isinstance(node, ast.ClassDef):
            targets += [
                (item, f"{node.name}.{item.name}")
                for item in node.body
                if isinstance(item, ast.FunctionDef) and f"{node.name}.{item.name}" in owner
            ]
    missing = set(owner) - {name for _, name in targets}
    if missing:
        raise SystemExit(f"exercise {number}: the solution has no {sorted(missing)}")
    for node, name in sorted(targets, key=lambda target: -target[0].lineno):  # bottom up: line numbers hold
        docstring = node.body[0]
        if not (isinstance(docstring, ast.Expr) and isinstance(docstring.value, ast.Constant)):
            raise SystemExit(f"exercise {number}: {name} needs a docstring (the stub keeps only that)")
        part = owner[name]
        indent = " " * (node.col_offset + 4)
        message = f"Exercise {number}, part {part.letter}: write {name} ({part.title})"
        lines[docstring.end_lineno : node.end_lineno] = [f'{indent}raise NotImplementedError("{message}")']
    # Keep imports that only the removed code used: the learner will need them.
    used = {node.id for node in ast.walk(ast.parse("\n".join(lines))) if isinstance(node, ast.Name)}
    for index, line in enumerate(lines):
        match = re.fullmatch(r"import (\S+)(?: as (\S+))?(  # noqa: E402)?", line)
        if match and (match.group(2) or match.group(1)) not in used:
            codes = "E402, F401" if match.group(3) else "F401"
            lines[index] = line.split("  #")[0] + f"  # noqa: {codes} (you will need it)"
    path = check.exercise_path(number, "learner")
    path.write_text("\n".join(lines) + "\n")
    subprocess.run([sys.executable, "-m", "ruff", "format", "--quiet", str(path)], check=True)
    return path


if __name__ == "__main__":
    for argument in sys.argv[1:] or sorted(map(str, check.discover())):
        print(f"wrote {check.relative(make_stub(int(argument)))}")
