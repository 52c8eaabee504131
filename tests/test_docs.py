"""Tests that keep the documentation true: CHEATSHEET.md, paper_notes.md, README.md and setup.py.

* every name in CHEATSHEET.md's API table exists in implementation.py;
* every ``python train_minimal.py ...`` / ``python visualization.py ...`` command in the code blocks of
  CHEATSHEET.md and README.md parses with that script's own argument parser;
* ``python setup.py`` (the environment check) passes here;
* every number the docs attribute to the paper is in ablations/paper_results.json (the repository's one
  copy of the paper's numbers), paper_notes.md's tables quote that file row by row, and the known errors
  of the seed text and the corrected misstatements are not repeated; as an extra cross-check, when the
  lesson's fact sheet (../shared/PAPER_FACTS.md) is beside the repository, the file agrees with it;
* the default training-set size the docs state is train_minimal.py's;
* numbers about this repository are read, not retyped: CHEATSHEET.md's defaults from DS2Config,
  TrainConfig and train_minimal.py's flags; README.md's findings heading (its verdict counts), sweep sizes
  and study cost, and ablations/README.md's speeds, from ablations/findings.py and the committed JSON;
* README's test command is the one .ci/run runs.
"""

import contextlib
import importlib
import importlib.util
import io
import json
import re
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import corpora  # noqa: E402
import implementation  # noqa: E402

CHEATSHEET = ROOT / "CHEATSHEET.md"
PAPER_NOTES = ROOT / "paper_notes.md"
README = ROOT / "README.md"
CI_RUN = ROOT / ".ci" / "run"
# The repository's one copy of the paper's numbers (the figures read it too).
PAPER_RESULTS_JSON = ROOT / "ablations" / "paper_results.json"
# The lesson's fact sheet lives beside the repository (../shared/) in the lesson's workspace, not in a
# clone: only the extra cross-check reads it.
PAPER_FACTS = Path(__file__).resolve().parents[2] / "shared" / "PAPER_FACTS.md"


def _numbers(value) -> list[int | float]:
    """Every number in a JSON value, depth first (``True``/``False`` are not numbers)."""
    if isinstance(value, dict):
        return [n for item in value.values() for n in _numbers(item)]
    if isinstance(value, list):
        return [n for item in value for n in _numbers(item)]
    return [value] if isinstance(value, int | float) and not isinstance(value, bool) else []


def _as_text(number: int | float) -> str:
    return f"{number:.2f}" if isinstance(number, float) else str(number)


PAPER_RESULTS = json.loads(PAPER_RESULTS_JSON.read_text(encoding="utf-8"))
# Every decimal the paper reports (all of them error rates, in %), from the tables and the other facts.
PAPER_DECIMALS = {
    _as_text(n) for part in ("tables", "other") for n in _numbers(PAPER_RESULTS[part]) if isinstance(n, float)
}
# Whole-number percentages the paper states ("about 40% relative improvement for each 10x more data").
PAPER_PERCENTS = {
    _as_text(fact["value"])
    for fact in PAPER_RESULTS["other"].values()
    if fact.get("unit", "").startswith("%")
}
# Numbers of the seed text's known errors; a "Known errors" section of ours may repeat them.
KNOWN_ERROR_NUMBERS = {
    _as_text(n) for entry in PAPER_RESULTS["known_errors"]["entries"] for n in entry["numbers"]
}

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


ENGINE_ROOM = ("fast_paths", "devices", "corpora", "production_decoder")  # named with their module


def test_cheatsheet_api_table_names_exist_in_implementation():
    names = api_names()
    assert len(names) >= 40, f"the API table should list the public API; found only {names}"
    missing = []
    engine_room = {name: importlib.import_module(name) for name in ENGINE_ROOM}
    for name in names:
        module, _, rest = name.partition(".")
        target, name_in_it = (engine_room[module], rest) if module in engine_room else (implementation, name)
        for part in name_in_it.split("."):
            if not hasattr(target, part):
                missing.append(name)
                break
            target = getattr(target, part)
    assert not missing, f"CHEATSHEET.md's API table names things its modules lack: {missing}"


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
        shapes.append(tuple(x.shape))  # (B, K, F', T')
    with torch.no_grad():
        features, out_lengths = model.conv(spec[None], lengths)
        shapes.append(tuple(features.shape))  # (B, T', K * F')
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
    assert "estimate for `python train_minimal.py` with" in result.stdout


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
OURS_NEAR_PAPER = {"14": "prototype", "9": "prototype", "2": "prototype", "5": "cosine", "95": "t-interval"}
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
    """Numbers the text attributes to the paper that paper_results.json lacks, as readable findings.

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
                findings.append(
                    f"line {number}: {value}% is not in ablations/paper_results.json: {shown[:160]}"
                )
        for value in DECIMAL.findall(PERCENT.sub(" ", checked)):
            if not _in(value, decimals_allowed):
                findings.append(
                    f"line {number}: {value} is not in ablations/paper_results.json: {shown[:160]}"
                )
    return findings


@pytest.mark.parametrize("path", [PAPER_NOTES, CHEATSHEET, README], ids=lambda p: p.name)
def test_no_paper_number_outside_paper_results_json(path):
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
        "The paper reports about 40% relative per 10x data (section 5.3).",
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
                    f"{path.name}:{number} attributes 8.46/13.59 to Table 4 (section 5.3 data scaling)"
                )
            if re.search(r"(?<![\d.])30\s*%", line):
                pytest.fail(f"{path.name}:{number} repeats the '30%' claim the paper does not make: {line}")


# The sections and table topics of PAPER_FACTS.md's section map, for each table of the JSON file.
TABLE_PLACES = {
    "depth_bn": ("3.2", "Table 1 topic"),
    "sortagrad": ("3.3", "Table 2 topic"),
    "rnn_gru": ("3.4", "Table 3 topic"),
    "conv": ("3.5", "Table 4 topic"),
    "data_scaling": ("5.3", "Table 10 topic"),
}


def test_paper_results_json_is_labelled_and_consistent():
    """Each entry names its section and table topic; rows have one value per column; the note hedges."""
    note = PAPER_RESULTS["note"].lower()
    for word in ("recalled", "cross-checked", "pdf", "authority"):
        assert word in note, f"the top-level note of {PAPER_RESULTS_JSON.name} should say '{word}'"
    tables = PAPER_RESULTS["tables"]
    assert set(tables) == set(TABLE_PLACES)
    for name, (section, topic) in TABLE_PLACES.items():
        assert tables[name]["section"] == section, f"{name}: section {tables[name]['section']}, not {section}"
        assert tables[name]["table_topic"].startswith(topic), f"{name}: {tables[name]['table_topic']!r}"
        assert "WER" in tables[name]["metric"]
    depth = tables["depth_bn"]  # BatchNorm at each depth: both rows, one value per depth
    assert len(depth["with_bn"]) == len(depth["without_bn"]) == len(depth["layers"]) == 4
    assert (
        len(tables["rnn_gru"]["simple RNN"])
        == len(tables["rnn_gru"]["GRU"])
        == len(tables["rnn_gru"]["layers"])
    )
    scaling = tables["data_scaling"]
    assert len(scaling["regular"]) == len(scaling["noisy"]) == len(scaling["hours"]) == 5
    assert scaling["hours"] == sorted(scaling["hours"])
    assert all(len(row) == len(tables["conv"]["columns"]) == 2 for row in tables["conv"]["rows"].values())
    for part in ("not sorted", "SortaGrad"):
        assert part in tables["sortagrad"]["baseline"] and part in tables["sortagrad"]["BatchNorm"]
    for name, fact in PAPER_RESULTS["other"].items():
        assert {"section", "table_topic"} <= set(fact), f"other fact {name} lacks its section or table topic"
    assert PAPER_DECIMALS and PAPER_PERCENTS == {"40"} and KNOWN_ERROR_NUMBERS == {"8.46", "13.59", "30"}


def test_paper_conv_layers_are_the_ones_implementation_builds():
    layers = PAPER_RESULTS["tables"]["conv"]["layers_2d"]
    assert tuple(layer["channels"] for layer in layers) == implementation.PAPER_CONV_CHANNELS
    assert tuple(tuple(layer["kernel_freq_x_time"]) for layer in layers) == implementation.PAPER_CONV_KERNELS
    assert tuple(tuple(layer["stride_freq_x_time"]) for layer in layers) == implementation.PAPER_CONV_STRIDES


def _rows(values) -> str:
    return " / ".join(_as_text(value) for value in values)


def test_paper_notes_quote_the_json_row_by_row():
    """paper_notes.md's tables of the paper's results hold exactly the JSON's rows, each in its place."""
    text = PAPER_NOTES.read_text(encoding="utf-8")
    rows = {tuple(table_cells(line)) for _, _, line in prose_lines(text) if line.lstrip().startswith("|")}
    tables = PAPER_RESULTS["tables"]
    depth = tables["depth_bn"]
    expected = [
        ("recurrent layers", *(str(n) for n in depth["layers"])),
        ("with BN", *(_as_text(v) for v in depth["with_bn"])),
        ("without BN", *(_as_text(v) for v in depth["without_bn"])),
    ]
    expected += [(name, *(_as_text(v) for v in pair)) for name, pair in tables["conv"]["rows"].items()]
    scaling = tables["data_scaling"]
    expected += [
        (f"{hours:,}", _as_text(regular), _as_text(noisy))
        for hours, regular, noisy in zip(scaling["hours"], scaling["regular"], scaling["noisy"], strict=True)
    ]
    missing = [row for row in expected if row not in rows]
    assert not missing, f"paper_notes.md lacks these table rows of {PAPER_RESULTS_JSON.name}: {missing}"
    flat = " ".join(text.split())
    sortagrad = tables["sortagrad"]
    phrases = [
        f"simple RNN {_rows(tables['rnn_gru']['simple RNN'])}",
        f"GRU {_rows(tables['rnn_gru']['GRU'])}",
        f"{_as_text(sortagrad['baseline']['not sorted'])} unsorted vs {_as_text(sortagrad['baseline']['SortaGrad'])}",
        f"{_as_text(sortagrad['BatchNorm']['not sorted'])} vs {_as_text(sortagrad['BatchNorm']['SortaGrad'])}",
    ]
    assert not [p for p in phrases if p not in flat], [p for p in phrases if p not in flat]


def test_paper_results_json_agrees_with_the_fact_sheet():
    """Extra cross-check against the lesson's fact sheet, which sits beside the repository, not in it."""
    if not PAPER_FACTS.exists():
        pytest.skip(
            f"extra cross-check only: the fact sheet {PAPER_FACTS} is not beside this clone; "
            f"{PAPER_RESULTS_JSON.relative_to(ROOT)} is checked by the other tests"
        )
    text = PAPER_FACTS.read_text(encoding="utf-8")
    tables_text = text.split("## Tables", 1)[1].split("## Known errors", 1)[0]
    corrections = text.split("## Corrections", 1)[1] if "## Corrections" in text else ""
    in_tables = {float(n) for n in DECIMAL.findall(NOT_NUMBERS.sub(" ", tables_text))}
    in_corrections = {float(n) for n in DECIMAL.findall(NOT_NUMBERS.sub(" ", corrections))}
    ours = {float(n) for n in PAPER_DECIMALS}
    assert in_tables <= ours, f"in PAPER_FACTS.md's tables but not in the JSON: {sorted(in_tables - ours)}"
    assert ours <= in_tables | in_corrections, (
        f"in the JSON but not in PAPER_FACTS.md: {sorted(ours - in_tables)}"
    )
    assert set(PERCENT.findall(tables_text)) == PAPER_PERCENTS
    # Each number in its place: the rows as the fact sheet writes them.
    flat = " ".join(text.split())
    tables, other = PAPER_RESULTS["tables"], PAPER_RESULTS["other"]
    baseline, with_bn = tables["sortagrad"]["baseline"], tables["sortagrad"]["BatchNorm"]
    scaling = tables["data_scaling"]
    phrases = [
        f"with BN {_rows(tables['depth_bn']['with_bn'])}",
        f"without BN {_rows(tables['depth_bn']['without_bn'])}",
        f"baseline {_as_text(baseline['not sorted'])} unsorted vs {_as_text(baseline['SortaGrad'])} sorted",
        f"with BN {_as_text(with_bn['not sorted'])} vs {_as_text(with_bn['SortaGrad'])}",
        f"simple RNN {_rows(tables['rnn_gru']['simple RNN'])}",
        f"GRU {_rows(tables['rnn_gru']['GRU'])}",
        *(f"{name} {_rows(pair)}" for name, pair in tables["conv"]["rows"].items()),
        *(
            f"{hours:,} h {_as_text(regular)} / {_as_text(noisy)}"
            for hours, regular, noisy in zip(
                scaling["hours"], scaling["regular"], scaling["noisy"], strict=True
            )
        ),
        f"(§{scaling['section']}, {scaling['table_topic'].split(':')[0]})",
        f"about {other['relative_improvement_per_10x_data']['value']}% relative improvement for each 10x",
        f"noise added to about {other['noise_augmentation_fraction']['value']}% of utterances",
        f"~{other['english_training_hours']['value']:,} h English",
        f"~{other['mandarin_training_hours']['value']:,} h Mandarin",
        f"~{other['speedup_over_deep_speech_1']['value']}x faster",
        "test-clean {test-clean} / test-other {test-other}".format(**other["librispeech"]["model"]),
        "humans {test-clean} / {test-other}".format(**other["librispeech"]["human"]),
        f"min(max(x,0),{other['clipped_relu_ceiling']['value']})",
    ]
    missing = [phrase for phrase in phrases if phrase not in flat]
    assert not missing, f"PAPER_FACTS.md does not say these, as the JSON does: {missing}"
    known = text.split("## Known errors", 1)[1].split("## ", 1)[0]
    for value in KNOWN_ERROR_NUMBERS:
        assert value in known, f"{value} is not among the fact sheet's known errors"


# ---------------------------------------------------------------------------------------------------------
# Corrected misstatements, hedges, the default data size
# ---------------------------------------------------------------------------------------------------------

# Sentences a review found false; (pattern, why). Checked per paragraph, list item or table row.
MISSTATEMENTS = [
    (
        re.compile(
            r"(?:§\s*|section\s+)5\.2\b[^.;]{0,80}\bscal|\bscal\w*[^.;]{0,80}(?:§\s*|section\s+)5\.2\b", re.I
        ),
        "data scaling is §5.3 (§5.2 is data augmentation)",
    ),
    (re.compile(r"final choice", re.I), "say the GRU is 'the stronger of the two in Table 3'"),
    (
        re.compile(r"\b(?:eq|eqn|equation)\.?\s*\(?\d", re.I),
        "no equation numbers: none is on the fact sheet, and Graves et al. 2006 must not be misnumbered",
    ),
    (
        re.compile(r"\b(?:hundred|\d+)\s*(?:times|x)\s+narrower", re.I),
        "the paper's widths are not known here",
    ),
    (
        re.compile(r"\bmax\w*\b[^.]*\binstead of sum[^.]*\b(?:cannot|can't|never)\b", re.I),
        "a max-instead-of-sum beam search still spells doubled letters; it loses the other alignments",
    ),
    # Issue 21's review.
    (  # a model streams only when it normalises causally: a claim of streaming must say so
        re.compile(
            r"^(?!(?s:.*)\bcausal)(?s:.*?)"
            r"(?:\bstreamable\b|\bstreaming (?:model|\(unidirectional)|(?m:^)#+\s*(?:\d+\.\s*)?Streaming\b)",
            re.I,
        ),
        "per-utterance normalisation needs the whole recording: only a unidirectional model trained with "
        "--normalize causal streams; without it, lookahead bounds only the network's latency",
    ),
    (
        re.compile(r"forward-only (?:models? )?(?:equals|(?:is |are )?as good as)", re.I),
        "forward-only trails bidirectional within the seed spread (lookahead.json): not equal",
    ),
    (
        re.compile(r"\bno coarticulation\b", re.I),
        "the synthetic speech's formants glide from letter to letter (coarticulation); say 'little'",
    ),
    (
        re.compile(r"\btested reproduction\b|\bfindings, reproduced\b", re.I),
        "most of the paper's findings are not reproduced here: README's findings table counts them",
    ),
    (
        re.compile(r"same shape of curve", re.I),
        "no committed measurement shows the data-scaling curve's shape in miniature",
    ),
]
# "1 vs 7 layers, 14.40 vs 9.52" shows depth, not BatchNorm (the Table 1 topic is BN at each depth).
DEPTH_AS_BATCHNORM = re.compile(r"14\.40\s*(?:/|vs\.?|against|->|to)\s*9\.52")


def misstatements(text: str) -> list[str]:
    findings = []
    for number, _, _, shown in claim_units(text):
        for pattern, why in MISSTATEMENTS:
            if pattern.search(shown):
                findings.append(f"line {number}: {why}: {shown[:160]}")
        if DEPTH_AS_BATCHNORM.search(shown) and re.search(r"\bBN\b|BatchNorm", shown):
            findings.append(f"line {number}: compare with and without BN at the same depth: {shown[:160]}")
    return findings


CORRECTED_FILES = [PAPER_NOTES, CHEATSHEET, README, ROOT / "visualization.py"]
NOTEBOOK = ROOT / "notebook.ipynb"


def notebook_markdown() -> str:
    """The notebook's markdown cells, one after another (its code and outputs are not prose)."""
    cells = json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]
    return "\n\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "markdown")


@pytest.mark.parametrize("path", [*CORRECTED_FILES, NOTEBOOK], ids=lambda p: p.name)
def test_corrected_misstatements_are_not_repeated(path):
    text = notebook_markdown() if path == NOTEBOOK else path.read_text(encoding="utf-8")
    findings = misstatements(text)
    assert not findings, "\n".join(findings)


def test_the_misstatement_check_can_fail():
    wrong = [
        "**Data scaling (§5.2, dev WER regular / noisy):**",
        'title=f"{PAPER}\\n§5.2: data scaling (~40% relative per 10x data)",',
        "the GRU, the paper's final choice",
        "with the alpha-beta gradient (Graves et al. 2006, eq. 16).",
        "a model about a hundred times narrower;",
        'That is why a beam search that keeps maxima instead of summing prefixes,\n   cannot write "hello".',
        "| BatchNorm with depth: 1 / 7 recurrent layers (simple RNNs) | §3.2, Table 1 topic | 14.40 / 9.52 |",
        "python train_minimal.py --unidirectional --lookahead 10   # streamable model (§3.7)",
        "## 10. Streaming: a unidirectional model with lookahead (§3.7)",
        "the ablation study finds forward-only models as good as bidirectional ones",
        "A letter-phone carries no coarticulation: each letter's sound is complete in itself",
        "A from-scratch, tested reproduction of **Deep Speech 2**",
        "try `--train-size 300` and `10000`: the same shape of curve, in miniature",
    ]
    for text in wrong:
        assert misstatements(text), f"not caught: {text!r}"
    right = [
        "**Data scaling (§5.3, Table 10 topic):** noise augmentation is §5.2.",
        "The GRU is the stronger of the two in Table 3.",
        "the gradient with respect to the unnormalised outputs, the form Graves et al. 2006 give.",
        "Keeping the max instead of the sum still spells `ll`; it loses the other alignments.",
        "GRU vs simple RNN at depth 1: simple RNN 14.40 / 10.56 / 9.78 / 9.52.",
        "- **Streaming** uses a unidirectional model trained with `--normalize causal`.",
        "python train_minimal.py --unidirectional --lookahead 5 --normalize causal   # a streamable model",
        "## 10. A unidirectional model with lookahead, and the network's latency (§3.7)",
        "Letter-phones carry little coarticulation; forward-only trails bidirectional within the spread.",
    ]
    for text in right:
        assert not misstatements(text), f"wrongly flagged: {text!r}"


# Facts about the paper that are not on the fact sheet: wherever a doc attributes one to the paper, it
# must say "recalled" in the same paragraph, list item or table cell.
RECALLED_FACTS = {
    "the 10 ms stride": re.compile(r"\b10 ms\b"),
    "the summed directions": re.compile(r"\bsummed\b|\bsumming the (?:two )?directions\b", re.I),
    "the KenLM 5-gram": re.compile(r"\b5-gram\b"),
    "SGD with Nesterov momentum": re.compile(r"\bNesterov\b"),
}


def unhedged_recalled_facts(text: str) -> list[str]:
    findings = []
    for number, _, checked, shown in claim_units(text):
        for fact, pattern in RECALLED_FACTS.items():
            if pattern.search(checked) and "recalled" not in checked.lower():
                findings.append(
                    f"line {number}: {fact} is not on the fact sheet; say 'recalled': {shown[:160]}"
                )
    return findings


@pytest.mark.parametrize("path", [PAPER_NOTES, CHEATSHEET, README], ids=lambda p: p.name)
def test_recalled_facts_are_marked_recalled(path):
    findings = unhedged_recalled_facts(path.read_text(encoding="utf-8"))
    assert not findings, "\n".join(findings)


def test_the_recalled_fact_check_can_fail():
    wrong = [
        "The paper trains with SGD with Nesterov momentum.",
        "| | paper | ours |\n| --- | --- | --- |\n| input | 20 ms / 10 ms (§3.1) | same |",
        "In the paper (§3.1) the two directions are summed.",
    ]
    for text in wrong:
        assert unhedged_recalled_facts(text), f"not caught: {text!r}"
    right = [
        "The paper trains with SGD with Nesterov momentum **(recalled, unverified)**.",
        "| | paper | ours |\n| --- | --- | --- |\n| input | not in our notes | 20 ms / 10 ms |",
        "Our window is 20 ms and our stride 10 ms.",  # ours, not attributed to the paper
    ]
    for text in right:
        assert not unhedged_recalled_facts(text), f"wrongly flagged: {text!r}"


def test_docs_state_the_default_training_set_size():
    """Where a doc gives the default number of training utterances, it is train_minimal.py's default."""
    default = importlib.import_module("train_minimal").parse_args([]).train_size
    stated = []
    for path in (PAPER_NOTES, CHEATSHEET, README):
        if not path.exists():
            continue
        for number, _, _, shown in claim_units(path.read_text(encoding="utf-8")):
            if "--train-size" not in shown and "default" not in shown:
                continue
            values = re.findall(r"\b(\d[\d,]*) synthetic utterances\b", shown)
            if "--train-size" in shown:
                values += re.findall(r"\b(\d[\d,]*) by default\b", shown)
            stated += [(path.name, number, int(value.replace(",", ""))) for value in values]
    wrong = [entry for entry in stated if entry[2] != default]
    assert not wrong, f"train_minimal.py trains on {default:,} utterances by default; the docs say {wrong}"
    assert {name for name, _, _ in stated} >= {PAPER_NOTES.name, CHEATSHEET.name}, stated


# ---------------------------------------------------------------------------------------------------------
# Numbers about this repository, read from the code and the committed results rather than retyped
# ---------------------------------------------------------------------------------------------------------

ABLATIONS = ROOT / "ablations"
_findings_spec = importlib.util.spec_from_file_location("docs_findings", ABLATIONS / "findings.py")
findings_module = importlib.util.module_from_spec(_findings_spec)
sys.modules["docs_findings"] = findings_module  # its dataclasses look the module up while it runs
_findings_spec.loader.exec_module(findings_module)
SWEEPS = findings_module.load_results(ABLATIONS / "results")  # the committed, complete-or-not sweeps


def flat(text: str) -> str:
    return " ".join(text.split())


def test_readme_findings_heading_and_lead_follow_the_verdicts():
    """The heading above the findings table counts the table's verdicts (findings.py --write writes it)."""
    readme = README.read_text(encoding="utf-8")
    assert findings_module.readme_summary(readme) == findings_module.summary(SWEEPS), (
        "README.md's findings heading differs from the committed results: run python ablations/findings.py --write"
    )
    verdicts = [
        findings_module.verdict_of(finding, SWEEPS.get(finding.sweep))
        for finding in findings_module.findings(findings_module.load_paper())
    ]
    heading = re.search(r"^### The paper's findings.*$", readme, re.M)
    assert heading, "README.md lacks the heading of its findings table"
    for verdict in findings_module.VERDICTS:
        assert f" {verdicts.count(verdict)} {verdict}" in heading.group(0), (heading.group(0), verdict)


def test_readme_sweep_sizes_are_the_committed_ones():
    """README's sizes of the ablation sweeps (utterances, epochs, seeds) and the study's cost are the JSON's."""
    text = flat(README.read_text(encoding="utf-8"))
    sizes = {name: data["size"] for name, data in SWEEPS.items()}
    base = {name: size for name, size in sizes.items() if name not in ("lm", "scaling")}
    assert base, "no committed sweeps"
    shapes = {(size["train_size"], size["epochs"], size["seeds_per_variant"]) for size in base.values()}
    assert len(shapes) == 1, f"the sweeps README calls 'most' differ in size: {base}"
    train, epochs, seeds = shapes.pop()
    expected = [f"most sweeps: {train} training utterances, {epochs} epochs, {seeds} seeds per variant"]
    if "lm" in sizes:
        lm = sizes["lm"]
        expected.append(
            f"the `lm` sweep: {lm['train_size']} utterances, {lm['epochs']} epochs, {lm['seeds_per_variant']} seeds"
        )
    if "scaling" in SWEEPS:
        utterances = [run["train_utterances"] for run in SWEEPS["scaling"]["runs"]]
        expected.append(
            f"the `scaling` sweep: {min(utterances):,} to {max(utterances):,} utterances, each trained until "
            f"its dev-noisy curve stopped improving, {sizes['scaling']['seeds_per_variant']} seeds"
        )
    trained = [run for data in SWEEPS.values() for run in data["runs"] if not run.get("reused_from")]
    minutes = sum(run["wall_seconds"] for run in trained) / 60
    expected.append(f"{minutes:.0f} minutes of compute over {len(trained)} runs")
    missing = [phrase for phrase in expected if phrase not in text]
    assert not missing, f"README.md should say, as ablations/results/*.json do: {missing}"


def test_ablations_readme_speeds_are_the_committed_ones():
    """ablations/README.md's training speed, curve and evaluation times and example progress line are the JSON's."""
    text = flat((ABLATIONS / "README.md").read_text(encoding="utf-8"))
    per_utterance = []  # each variant's mean seconds per epoch over its training utterances, in ms
    for data in SWEEPS.values():
        utterances = {run["variant"]: run["train_utterances"] for run in data["runs"]}
        per_utterance += [
            1000 * row["seconds_per_epoch"]["mean"] / utterances[row["variant"]]
            for row in data["summary"]
            if row["variant"] in utterances  # the lm sweep's rows are decoders of one variant
        ]
    low, middle, high = min(per_utterance), statistics.median(per_utterance), max(per_utterance)
    assert (
        f"{low:.0f} to {high:.0f} ms per utterance per epoch (median over variants {middle:.0f} ms)" in text
    )
    trained = [
        (name, run) for name, data in SWEEPS.items() for run in data["runs"] if not run.get("reused_from")
    ]
    curves = [run["curve_seconds"] for _, run in trained]
    final = {  # the final decoding: what is left of a run's time after training and its curves
        (name, run["key"]): run["wall_seconds"] - run["train_seconds"] - run["curve_seconds"]
        for name, run in trained
    }
    grid = [seconds for (name, key), seconds in final.items() if name == "lm" and key.endswith("seed0")]
    others = [seconds for (name, key), seconds in final.items() if name != "lm" or not key.endswith("seed0")]
    assert (
        f"a median of {statistics.median(curves):.0f} s of learning curves per run ({min(curves):.0f} to "
        f"{max(curves):.0f} s)" in text
    )
    assert f"{min(others):.0f} to {max(others):.0f} s of final evaluation" in text
    minutes = sum(run["wall_seconds"] for _, run in trained) / 60
    updates = sum(run["updates"] for _, run in trained)
    assert (
        f"{minutes:.0f} minutes of compute over {len(trained)} runs, {minutes / 60:.1f} core-hours, {updates:,} updates"
        in text
    )
    if grid:
        assert f"{grid[0]:.0f} s for the `lm` sweep's seed 0 with its alpha x beta grid" in text
    example = re.search(r"\[gru \d+/\d+\] gru-3 seed 0: ([\d,]+) params, (\d+) s", text)
    assert example, "ablations/README.md lacks its example progress line"
    run = next(run for run in SWEEPS["gru"]["runs"] if run["key"] == "gru-3/seed0")
    assert example.groups() == (f"{run['parameters']:,}", f"{run['wall_seconds']:.0f}"), example.group(0)


def test_ablations_readme_sweep_table_is_the_committed_one():
    """ablations/README.md's table of sweeps counts each sweep's runs, new runs and compute as its JSON does."""
    rows = {}
    for line in section(ABLATIONS / "README.md", "The sweeps").splitlines():
        cells = table_cells(line) if line.startswith("|") else []
        if len(cells) == 6 and cells[1].startswith("`"):
            rows[cells[1].strip("`")] = cells
    assert set(SWEEPS) <= set(rows), f"ablations/README.md's table of sweeps lacks {set(SWEEPS) - set(rows)}"
    for name, data in SWEEPS.items():
        new = [run for run in data["runs"] if not run.get("reused_from")]
        minutes = sum(run["wall_seconds"] for run in new) / 60
        assert rows[name][4] == f"{len(data['runs'])} ({len(new)})", (name, rows[name][4])
        assert rows[name][5] == f"{minutes:.0f} min", (name, rows[name][5])


def cheatsheet_ours(row: str) -> str:
    """The 'ours' cell of a row of CHEATSHEET.md's table of hyperparameters, found by its first cell."""
    for line in section(CHEATSHEET, "The paper's hyperparameters").splitlines():
        if line.startswith("|") and table_cells(line)[0] == row:
            return table_cells(line)[2]
    raise AssertionError(f"CHEATSHEET.md's hyperparameter table has no row '{row}'")


def test_cheatsheet_defaults_are_the_codes():
    """Every default CHEATSHEET.md states is read from DS2Config, TrainConfig or train_minimal.py's flags."""
    model, train = implementation.DS2Config(), implementation.TrainConfig()
    cli = importlib.import_module("train_minimal").parse_args([])
    english, mandarin = corpora.DECODING["english"], corpora.DECODING["mandarin"]  # --alpha, --beta defaults
    zh = corpora.RECIPES["mandarin"]  # --data mandarin's training size, epochs, optimiser and learning rate
    bins = implementation.frame_parameters(model.sample_rate, model.window_ms, model.stride_ms)[0] // 2 + 1
    expected = {
        "input": [f"{model.window_ms:g} ms / {model.stride_ms:g} ms", f"{bins} bins"]
        + [f"{model.spectrogram_floor_db:g} dB floor"],
        "conv layers": [f"{len(model.conv_channels)} (`--conv-layers`)"],
        "conv channels": [f"{model.conv_channels[0]} each (`--conv-channels`)"],
        "recurrent layers": [f"{model.rnn_layers} (`--rnn-layers`)"],
        "hidden units": [f"{model.rnn_hidden} (`--hidden`)"],
        "cell": [f"{model.rnn_type.upper()} (`--rnn-type {model.rnn_type}`"],
        "optimiser": [
            f"{'Adam' if train.optimizer == 'adam' else 'SGD'}, lr {train.lr:g}",
            f"cosine to {100 * train.lr_floor:g}%",
            f"Mandarin: {'Adam' if zh['optimizer'] == 'adam' else 'SGD with Nesterov momentum'}"
            + (f" {train.momentum:g}" if zh["optimizer"] == "sgd" else "")
            + f", lr {zh['lr']:g}",
        ],
        "Mandarin training data": [
            f"{zh['train_size']:,} sentences",
            f"{zh['epochs']} epochs (`--data mandarin`)",
        ],
        "batch size": [f"{train.batch_size} (`--batch-size`)"],
        "gradient clipping": [f"global norm {train.clip:g} (`--clip`)"],
        "LM": [f"alpha {english[0]}, beta {english[1]}, beam {cli.beam_width}"]
        + [f"character {corpora.MANDARIN_LM_ORDER}-gram", f"alpha {mandarin[0]}, beta {mandarin[1]}"],
    }
    assert len(set(model.conv_channels)) == 1, "the table says 'N each': say each layer's channels instead"
    wrong = {
        row: (cheatsheet_ours(row), phrase)
        for row, phrases in expected.items()
        for phrase in phrases
        if phrase not in cheatsheet_ours(row)
    }
    assert not wrong, f"CHEATSHEET.md's defaults differ from the code's (cell, expected): {wrong}"
    commands = "\n".join(code_blocks(CHEATSHEET))
    assert f"({train.epochs} epochs, batch {train.batch_size})" in commands
    # The blank-only stage passes within the first epoch: the steps of one epoch at the defaults.
    steps = -(-cli.train_size // train.batch_size)
    assert f"within the first epoch ({steps} steps)" in flat(CHEATSHEET.read_text(encoding="utf-8"))


def test_readme_says_what_a_checkpoint_can_transcribe():
    """A learner who tries their own voice is told it needs a model trained on a real corpus (issue 21)."""
    text = flat(section(README, "Three ways"))
    assert "--transcribe" in text
    for phrase in ("letter-phones only", "espeak-ng's voices only", "--data librispeech"):
        assert phrase in text, (
            f"README.md's 'Three ways' should say '{phrase}' beside its --transcribe example"
        )


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
