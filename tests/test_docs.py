"""Tests that keep the documentation true: CHEATSHEET.md, paper_notes.md, README.md and setup.py.

* every name in CHEATSHEET.md's API table exists in implementation.py;
* every ``python train_minimal.py ...`` / ``python visualization.py ...`` command in the code blocks of
  CHEATSHEET.md and README.md parses with that script's own argument parser;
* ``python setup.py`` (the environment check) passes here;
* no number attributed to the paper is missing from the lesson's fact sheet (PAPER_FACTS.md), and the
  known errors of the seed text are not repeated;
* README's test command is the one .ci/run runs.
"""

import contextlib
import importlib
import io
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import implementation  # noqa: E402

CHEATSHEET = ROOT / "CHEATSHEET.md"
PAPER_NOTES = ROOT / "paper_notes.md"
README = ROOT / "README.md"
CI_RUN = ROOT / ".ci" / "run"
# The fact sheet lives beside the repository (../shared/) in the lesson's workspace and in CI.
PAPER_FACTS = Path(__file__).resolve().parents[2] / "shared" / "PAPER_FACTS.md"

# Every number the fact sheet attributes to the paper (its "Tables" section), copied here so the check
# runs without the fact sheet; test_paper_numbers_match_the_fact_sheet keeps the copy in sync with it.
PAPER_DECIMALS = {
    # Table 1 topic (BatchNorm x depth) and Table 3 topic (simple RNN vs GRU)
    "14.40", "10.56", "9.78", "9.52", "10.83", "10.53", "8.00", "7.79", "8.19",
    # Table 2 topic (SortaGrad)
    "11.96",
    # Table 4 topic (convolutions), regular / noisy
    "9.67", "19.36", "19.21", "9.20", "20.22", "8.94", "16.22", "9.06", "15.71", "8.61", "14.74",
    # Section 5.2 (data scaling), regular / noisy
    "29.23", "50.97", "13.80", "22.99", "11.65", "20.41", "9.51", "15.90", "8.46", "13.59",
    # LibriSpeech test-clean / test-other, model and humans
    "5.33", "13.25", "5.83", "12.69",
}  # fmt: skip
PAPER_PERCENTS = {"40"}  # "about 40% relative improvement for each 10x more data" (section 5.2)
# Numbers the fact sheet's "Known errors" section quotes; a "Known errors" section of ours may repeat them.
KNOWN_ERROR_NUMBERS = {"8.46", "13.59", "30"}

DECIMAL = re.compile(r"(?<![\w.])\d+\.\d+(?!\w|\.\d)")  # "8.19." at a sentence end counts
PERCENT = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s*%")
# A line speaks about the paper if it names it, a table, a section sign, or a result it reports.
PAPER_CUE = re.compile(r"\bpaper\b|\bpaper's\b|\bTable\b|§|Amodei|\breports?\b|\breported\b", re.IGNORECASE)
# Not numbers at all: section references (§3.5, section 5.2), arXiv ids and links, inline code.
NOT_NUMBERS = re.compile(
    r"`[^`]*`|https?://\S+|arXiv:\S+|§\s*\d+(?:\.\d+)*(?:-\d+(?:\.\d+)*)?|\bsections?\s+\d+(?:\.\d+)*",
    re.IGNORECASE,
)


def _same_number(a: str, b: str) -> bool:
    return float(a.replace(",", "")) == float(b.replace(",", ""))


def _in(number: str, allowed: set[str]) -> bool:
    return any(_same_number(number, other) for other in allowed)


# ---------------------------------------------------------------------------------------------------------
# Markdown helpers
# ---------------------------------------------------------------------------------------------------------


def code_blocks(path: Path) -> list[str]:
    """The bodies of the fenced code blocks of a Markdown file."""
    return re.findall(r"^```[^\n]*\n(.*?)^```", path.read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL)


def prose_lines(text: str) -> list[tuple[int, str, str]]:
    """``(line number, heading, line)`` for every line outside fenced code blocks."""
    lines, heading, fenced = [], "", False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        lines.append((number, heading, line))
    return lines


def table_cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]  # (no escaped pipes in our tables)


def section(path: Path, title: str) -> str:
    """The text of the ``##`` section whose heading starts with ``title``."""
    match = re.search(
        rf"^## {re.escape(title)}.*?$(.*?)(?=^## |\Z)", path.read_text(encoding="utf-8"), re.M | re.S
    )
    assert match, f"{path.name} has no section '## {title}'"
    return match.group(1)


# ---------------------------------------------------------------------------------------------------------
# CHEATSHEET's API table
# ---------------------------------------------------------------------------------------------------------


def api_names() -> list[str]:
    names = []
    for line in section(CHEATSHEET, "Public API").splitlines():
        if not line.startswith("|") or set(line) <= set("|- "):
            continue
        first = table_cells(line)[0]
        names += re.findall(r"`([A-Za-z_][\w.]*)`", first)
    return names


def test_cheatsheet_api_table_names_exist_in_implementation():
    names = api_names()
    assert len(names) >= 40, f"the API table should list the public API; found only {names}"
    missing = []
    for name in names:
        target = implementation
        for part in name.split("."):
            if not hasattr(target, part):
                missing.append(name)
                break
            target = getattr(target, part)
    assert not missing, f"CHEATSHEET.md's API table names things implementation.py lacks: {missing}"


def test_cheatsheet_api_table_covers_the_designs_public_api():
    required = {
        "ALPHABET", "BLANK", "encode_text", "decode_labels", "log_spectrogram", "normalize_spectrogram",
        "clipped_relu", "SequenceWiseBatchNorm", "DS2Config", "DeepSpeech2", "ctc_loss",
        "ctc_loss_from_scratch", "greedy_decode", "prefix_beam_search", "NGramLM", "edit_distance",
        "word_error_rate", "character_error_rate", "sortagrad_batches", "save_checkpoint",
        "load_checkpoint", "transcribe",
    }  # fmt: skip
    assert required <= set(api_names()), f"missing from the API table: {sorted(required - set(api_names()))}"


def test_cheatsheet_shapes_are_the_default_models():
    """The pipeline table's shapes (2.5 s at 16 kHz, default DS2Config) are what the model produces."""
    import torch

    text = section(CHEATSHEET, "The pipeline")
    model = implementation.DeepSpeech2().eval()
    waveform = torch.randn(40_000, generator=torch.Generator().manual_seed(0)) * 0.1  # 2.5 s at 16 kHz
    spec = implementation.featurize(waveform)  # (F, T)
    lengths = torch.tensor([spec.shape[-1]])
    shapes = [tuple(waveform.shape), tuple(spec.shape), (1, *spec.shape)]
    x = spec[None, None]  # (1, 1, F, T)
    for conv in model.conv.layers:
        x = conv(x)
        shapes.append(tuple(x.shape))  # (B, C, F', T')
    with torch.no_grad():
        features, out_lengths = model.conv(spec[None], lengths)
        shapes.append(tuple(features.shape))  # (B, T', C * F')
        first = model.rnns[0]
        shapes.append((1, features.shape[1], first.gru.weight_ih_l0.shape[0] * first.directions))  # W x
        for rnn in model.rnns:
            features = rnn(features, out_lengths)
            shapes.append(tuple(features.shape))
        log_probs, _ = model(spec[None], lengths)
    shapes += [tuple(log_probs.shape), tuple(log_probs.transpose(0, 1).shape)]
    missing = [shape for shape in shapes if f"`{shape}`" not in text]
    assert not missing, f"CHEATSHEET.md's pipeline table lacks these measured shapes: {missing}"
    assert f"{model.num_parameters():,} trainable parameters" in text


# ---------------------------------------------------------------------------------------------------------
# Commands in code blocks parse with the scripts' own parsers
# ---------------------------------------------------------------------------------------------------------

SCRIPTS = ("train_minimal.py", "visualization.py")


def documented_commands() -> list[tuple[str, str, list[str]]]:
    """``(file name, script, argv)`` for each ``python <script> ...`` line in the docs' code blocks."""
    commands = []
    for path in (CHEATSHEET, README):
        if not path.exists():
            continue
        for block in code_blocks(path):
            for line in block.splitlines():
                words = shlex.split(line, comments=True)
                if len(words) >= 2 and words[0] in ("python", "python3") and words[1] in SCRIPTS:
                    commands.append((path.name, words[1], words[2:]))
    return commands


def help_text(module) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        module.parse_args(["--help"])
    return out.getvalue()


def test_docs_show_the_main_commands():
    scripts = [script for _, script, _ in documented_commands()]
    assert scripts.count("train_minimal.py") >= 5, "CHEATSHEET.md should show train_minimal.py's main uses"


@pytest.mark.parametrize(
    "source, script, argv",
    documented_commands(),
    ids=lambda value: " ".join(value) if isinstance(value, list) else value,
)
def test_documented_command_parses(source, script, argv):
    if not (ROOT / script).exists():
        pytest.skip(f"{script} is not in the repository yet")
    module = importlib.import_module(script.removesuffix(".py"))
    flags = [word.split("=", 1)[0] for word in argv if word.startswith("--")]
    documented = set(re.findall(r"--[a-z][a-z0-9-]*", help_text(module)))
    unknown = [flag for flag in flags if flag not in documented]
    assert not unknown, f"{source}: `python {script} {' '.join(argv)}` uses flags --help lacks: {unknown}"
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            module.parse_args(argv)
    except SystemExit as exit:
        pytest.fail(
            f"{source}: `python {script} {' '.join(argv)}` is refused ({exit.code}): {errors.getvalue()}"
        )


# ---------------------------------------------------------------------------------------------------------
# setup.py
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_setup_py_passes_here():
    """``python setup.py`` exits 0 on a working install (takes about 20-30 s: it times a training step)."""
    result = subprocess.run(
        [sys.executable, "setup.py"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "ready" in result.stdout
    assert "estimate for `python train_minimal.py --epochs 5" in result.stdout


def test_setup_py_is_not_a_packaging_script():
    text = (ROOT / "setup.py").read_text(encoding="utf-8")
    assert "setuptools" not in text.replace("no setuptools", "")
    assert "python -m pip install -r requirements.txt" in text


def test_setup_py_version_comparison():
    sys.modules.pop("setup", None)
    setup = importlib.import_module("setup")  # importing runs nothing: main() is behind __main__
    assert setup.satisfies("2.14.1", "==2.14.1")
    assert not setup.satisfies("2.13.0", "==2.14.1")
    assert setup.satisfies("2.4.6", ">=1.26")
    assert not setup.satisfies("1.25.2", ">=1.26")
    assert setup._version_tuple("2.14.1+cpu") == (2, 14, 1)
    names = [name for name, _ in setup.read_requirements()]
    assert {"torch", "torchaudio", "numpy", "matplotlib", "soundfile", "tqdm"} <= set(names)


# ---------------------------------------------------------------------------------------------------------
# Paper numbers
# ---------------------------------------------------------------------------------------------------------


# Our own percentages that sit in paragraphs which also mention the paper, each allowed only where the
# paragraph names it as ours: the prototype's spectrogram-floor measurement (DESIGN.md) and the cosine
# schedule's floor (train_minimal.py --lr).
OURS_NEAR_PAPER = {"14": "prototype", "9": "prototype", "2": "prototype", "5": "cosine"}
LIST_ITEM = re.compile(r"^\s*(?:[-*]|\d+\.)\s")


def claim_units(text: str) -> list[tuple[int, str, str, str]]:
    """``(first line number, heading, text to check, text to show)`` for each place a claim can sit.

    A prose paragraph or list item is one unit, checked when it speaks about the paper (``PAPER_CUE``).
    A table row is one unit: if the table has a "paper" column, only that cell is checked; otherwise the
    row is checked when it or its section heading speaks about the paper (a table of the paper's results).
    """
    units: list[tuple[int, str, str, str]] = []
    paragraph: list[str] = []
    first, paragraph_heading, paper_column, in_table = 0, "", None, False

    def flush():
        if paragraph:
            joined = " ".join(line.strip() for line in paragraph)
            units.append((first, paragraph_heading, joined if PAPER_CUE.search(joined) else "", joined))
            paragraph.clear()

    for number, heading, line in prose_lines(text):
        if line.lstrip().startswith("|"):  # a table row, possibly indented under a list item
            flush()
            cells = table_cells(line)
            if not in_table:  # the header row
                in_table = True
                lowered = [cell.lower() for cell in cells]
                paper_column = lowered.index("paper") if "paper" in lowered else None
            if paper_column is not None:
                checked = cells[paper_column] if paper_column < len(cells) else ""
                checked = "" if checked.lower() == "paper" else checked
            else:
                checked = line if PAPER_CUE.search(line) or PAPER_CUE.search(heading) else ""
            units.append((number, heading, checked, line.strip()))
            continue
        in_table = False
        if not line.strip() or line.startswith("#") or LIST_ITEM.match(line):
            flush()
            if line.startswith("#"):
                units.append((number, heading, line if PAPER_CUE.search(line) else "", line))
                continue
            if not line.strip():
                continue
        if not paragraph:
            first, paragraph_heading = number, heading
        paragraph.append(line)
    flush()
    return units


def unsupported_paper_numbers(text: str) -> list[str]:
    """Numbers the text attributes to the paper that the fact sheet does not hold, as readable findings.

    Checked: decimals (``8.46``) and percentages (``40%``) in every unit of ``claim_units`` that speaks
    about the paper. Inline code, section references and links are not numbers. Under a "Known errors"
    heading the known errors' own numbers are allowed too (that section exists to name them), and
    ``OURS_NEAR_PAPER`` lists our own percentages that may share a paragraph with the paper.
    """
    findings = []
    for number, heading, checked, shown in claim_units(text):
        checked = NOT_NUMBERS.sub(" ", checked)
        known_errors = "known error" in heading.lower()
        decimals_allowed = PAPER_DECIMALS | (KNOWN_ERROR_NUMBERS if known_errors else set())
        percents_allowed = PAPER_DECIMALS | PAPER_PERCENTS | (KNOWN_ERROR_NUMBERS if known_errors else set())
        for value in PERCENT.findall(checked):
            ours = value in OURS_NEAR_PAPER and OURS_NEAR_PAPER[value] in checked.lower()
            if not ours and not _in(value, percents_allowed):
                findings.append(f"line {number}: {value}% is not in PAPER_FACTS.md: {shown[:160]}")
        for value in DECIMAL.findall(PERCENT.sub(" ", checked)):
            if not _in(value, decimals_allowed):
                findings.append(f"line {number}: {value} is not in PAPER_FACTS.md: {shown[:160]}")
    return findings


@pytest.mark.parametrize("path", [PAPER_NOTES, CHEATSHEET, README], ids=lambda p: p.name)
def test_no_paper_number_outside_the_fact_sheet(path):
    if not path.exists():
        pytest.skip(f"{path.name} does not exist yet")
    findings = unsupported_paper_numbers(path.read_text(encoding="utf-8"))
    assert not findings, "\n".join(findings)


def test_the_paper_number_check_can_fail():
    made_up = [
        "Table 4 reports 7.77 WER for the best model.",
        "The paper: about 30% better from 3,000 to 12,000 hours.",
        "| | paper | ours |\n| --- | --- | --- |\n| dev WER | 9.99 | 12.5 |",
        "In §3.3 the paper reports 11.9 dev WER.",
        "- The paper's best model reaches\n  7.5 dev WER on the noisy set.",  # continuation line
        "## 6. Convolutions (§3.5)\n\n| layers | regular |\n| --- | --- |\n| 3-layer 2D | 8.6 |",
        "A prototype and the paper: 3% better.",  # 3% is nobody's
    ]
    for text in made_up:
        assert unsupported_paper_numbers(text), f"not caught: {text!r}"
    fine = [
        "Table 4 topic: 3-layer 2D 8.61 / 14.74 (§3.5).",
        "The paper reports about 40% relative per 10x data (section 5.2).",
        "| | paper | ours |\n| --- | --- | --- |\n| lr | not in our notes | 0.003 |",
        "Our run: dev-clean CER 2.5% after 5 epochs.",  # no paper cue: ours
        "## Known errors\nThe paper never says 30% from 3,000 to 12,000 hours.",
        "Unlike the paper, a prototype measured CER 14% -> 2% with the floor.",
    ]
    for text in fine:
        assert not unsupported_paper_numbers(text), f"wrongly flagged: {text!r}"


def test_known_errors_are_not_repeated():
    for path in (PAPER_NOTES, CHEATSHEET, README):
        if not path.exists():
            continue
        for number, heading, line in prose_lines(path.read_text(encoding="utf-8")):
            if "known error" in heading.lower():
                continue
            if re.search(r"\bTable 4\b", line) and re.search(r"8\.46|13\.59", line):
                pytest.fail(
                    f"{path.name}:{number} attributes 8.46/13.59 to Table 4 (section 5.2 data scaling)"
                )
            if re.search(r"(?<![\d.])30\s*%", line):
                pytest.fail(f"{path.name}:{number} repeats the '30%' claim the paper does not make: {line}")


def test_paper_numbers_match_the_fact_sheet():
    if not PAPER_FACTS.exists():
        pytest.skip(f"the fact sheet is not beside the repository ({PAPER_FACTS}); the copy above is used")
    text = PAPER_FACTS.read_text(encoding="utf-8")
    tables = text.split("## Tables", 1)[1].split("## Known errors", 1)[0]
    in_sheet = set(DECIMAL.findall(NOT_NUMBERS.sub(" ", tables)))
    assert {float(n) for n in in_sheet} == {float(n) for n in PAPER_DECIMALS}, (
        "PAPER_DECIMALS no longer matches PAPER_FACTS.md's tables: "
        f"only in the sheet {sorted(in_sheet - PAPER_DECIMALS)}, only here {sorted(PAPER_DECIMALS - in_sheet)}"
    )
    assert set(PERCENT.findall(tables)) == PAPER_PERCENTS
    known = text.split("## Known errors", 1)[1]
    for value in KNOWN_ERROR_NUMBERS:
        assert value in known, f"{value} is not among the fact sheet's known errors"


# ---------------------------------------------------------------------------------------------------------
# README and CI run the same tests
# ---------------------------------------------------------------------------------------------------------


def test_readme_test_command_is_the_one_ci_runs():
    readme = {
        line.strip()
        for block in code_blocks(README)
        for line in block.splitlines()
        if line.strip().startswith("python -m pytest")
    }
    ci = {
        line.strip()
        for line in CI_RUN.read_text(encoding="utf-8").splitlines()
        if line.strip().startswith("python -m pytest")
    }
    assert len(readme) == 1, f"README.md should show one test command in a code block, found {readme}"
    assert readme == ci, f"README.md says {readme}, .ci/run runs {ci}"
