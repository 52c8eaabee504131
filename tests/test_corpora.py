"""Real corpora (corpora.py section 3, issue 14): LibriSpeech folders and CSV/JSONL manifests.

The tests write a tiny LibriSpeech-shaped folder and manifests themselves: FLAC files (via soundfile) of
the lesson's own synthetic speech, so the audio is speech-like. They check reading, normalisation,
reported-and-skipped transcripts, the duration filter, the CTC feasibility check (at its exact
boundary), the held-out-speaker dev split, clear errors, and one tiny training run from the CLI.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import corpora  # noqa: E402
import implementation as ds2  # noqa: E402

SAMPLE_RATE = ds2.SAMPLE_RATE
NUM_SPEAKERS, CHAPTER, PER_SPEAKER = 20, 7, 3


def speak(text: str, seed: int) -> np.ndarray:
    """The lesson's synthetic speech for ``text``, float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    waveform = ds2.synthesize_speech(text, ds2.random_speaker(rng), rng).numpy()
    return np.clip(waveform, -1.0, 1.0).astype(np.float32)


def write_librispeech(folder: Path, speakers=range(100, 100 + NUM_SPEAKERS)) -> dict[str, str]:
    """A LibriSpeech-shaped folder: speaker/chapter/speaker-chapter-NNNN.flac + speaker-chapter.trans.txt.

    Returns {utterance id: the normalised transcript} of every utterance written.
    """
    written = {}
    for speaker in speakers:
        chapter = folder / str(speaker) / str(CHAPTER)
        chapter.mkdir(parents=True)
        lines = []
        for number in range(PER_SPEAKER):
            utterance_id = f"{speaker}-{CHAPTER}-{number:04d}"
            text = ds2.random_sentence(np.random.default_rng([speaker, number]))
            audio = speak(text, seed=speaker * 10 + number)
            soundfile.write(chapter / f"{utterance_id}.flac", audio, SAMPLE_RATE, format="FLAC")
            lines.append(f"{utterance_id} {text.upper()}")
            written[utterance_id] = text
        (chapter / f"{speaker}-{CHAPTER}.trans.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return written


@pytest.fixture(scope="module")
def libri(tmp_path_factory):
    folder = tmp_path_factory.mktemp("LibriSpeech") / "train-tiny"
    return folder, write_librispeech(folder)


def test_librispeech_is_read_and_normalised(libri):
    folder, written = libri
    utterances, dropped, problems = corpora.read_librispeech(folder)
    assert (dropped, problems) == ({}, [])
    assert {u.audio.stem: u.text for u in utterances} == written  # upper case in the file, lower case here
    assert all(u.speaker == u.audio.stem.split("-")[0] for u in utterances)
    assert all(u.text == u.text.lower() and not ds2.outside_alphabet(u.text) for u in utterances)
    split = corpora.load_corpus_split(utterances, "train", min_seconds=0.0, max_seconds=0.0)
    assert len(split) == len(written) and split.dropped == {}
    assert isinstance(split, ds2.SyntheticSplit) and split.sample_rate == SAMPLE_RATE
    first = written[Path(split.files[0]).stem]
    assert split.texts[0] == first
    expected = speak(first, seed=int(Path(split.files[0]).stem.split("-")[0]) * 10 + 0)
    assert split.waveforms[0].dtype == torch.float32
    np.testing.assert_allclose(split.waveforms[0].numpy(), expected, atol=1 / 32768 + 1e-7)  # 16-bit FLAC


def test_a_transcript_that_cannot_be_represented_is_reported_with_its_line_and_skipped(tmp_path):
    folder = tmp_path / "corpus"
    write_librispeech(folder, speakers=[1, 2])
    transcript = folder / "2" / str(CHAPTER) / f"2-{CHAPTER}.trans.txt"
    lines = transcript.read_text().splitlines()
    lines[1] = f"2-{CHAPTER}-0001 CHAPTER 7 THE CAT"  # a digit: cannot be said in the alphabet
    lines.append(f"2-{CHAPTER}-0009 NO SUCH FILE")  # its audio is missing
    transcript.write_text("\n".join(lines) + "\n")
    utterances, dropped, problems = corpora.read_librispeech(folder)
    assert len(utterances) == 2 * PER_SPEAKER - 1
    assert dropped == {"characters outside the alphabet": 1, "missing audio file": 1}
    assert (
        problems[0].startswith(f"{transcript}:2: transcript 'CHAPTER 7 THE CAT'") and "['7']" in problems[0]
    )
    assert problems[0].endswith("skipped") and problems[1].startswith(f"{transcript}:4: no audio file")
    assert all("chapter" not in u.text for u in utterances)  # skipped, not edited into "chapter the cat"


def write_manifests(folder: Path, libri_folder: Path, written: dict[str, str]) -> tuple[Path, Path]:
    """A CSV (relative paths, with speakers) and a JSONL (absolute paths, NeMo's keys) of the same audio."""
    folder.mkdir()
    rows = sorted(written.items())
    paths = {i: next(libri_folder.rglob(f"{i}.flac")) for i, _ in rows}
    with open(folder / "train.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["path", "transcript", "speaker"])
        for utterance_id, text in rows:
            relative = Path(os.path.relpath(paths[utterance_id], folder))  # "../../LibriSpeech0/..."
            writer.writerow([relative.as_posix(), text.upper(), utterance_id.split("-")[0]])
        writer.writerow([relative.as_posix(), "it costs 5 pounds", "999"])  # line len(rows) + 2
    with open(folder / "train.jsonl", "w") as file:
        for utterance_id, text in rows:
            record = {"audio_filepath": str(paths[utterance_id]), "text": text, "duration": 1.0}
            file.write(json.dumps(record) + "\n")
        file.write("{not json\n")
    return folder / "train.csv", folder / "train.jsonl"


def test_csv_and_jsonl_manifests_read_the_same_utterances(libri, tmp_path):
    folder, written = libri
    csv_path, jsonl_path = write_manifests(tmp_path / "manifests", folder, written)
    from_csv, dropped_csv, problems_csv = corpora.read_manifest(csv_path)
    from_jsonl, dropped_jsonl, problems_jsonl = corpora.read_manifest(jsonl_path)
    assert [(u.audio.resolve(), u.text) for u in from_csv] == [(u.audio, u.text) for u in from_jsonl]
    assert {u.audio.stem: u.text for u in from_csv} == written
    assert all(u.audio.is_file() for u in from_csv)  # "../..." relative to the manifest's folder
    assert [u.speaker for u in from_csv] == [u.audio.stem.split("-")[0] for u in from_csv]
    assert {u.speaker for u in from_jsonl} == {""}  # no speaker key: unknown
    assert dropped_csv == {"characters outside the alphabet": 1}
    assert problems_csv == [
        f"{csv_path}:{len(written) + 2}: transcript 'it costs 5 pounds' has characters outside the alphabet "
        "['5'] (spell digits out, drop punctuation); skipped"
    ]
    assert dropped_jsonl == {"malformed entry": 1}
    assert problems_jsonl[0].startswith(f"{jsonl_path}:{len(written) + 1}: not a JSON object")


def test_without_speakers_utterances_are_held_out_and_the_description_says_so(libri, tmp_path):
    folder, written = libri
    _, jsonl_path = write_manifests(tmp_path / "manifests", folder, written)
    lines = []
    splits = corpora.read_corpus_splits("manifest", jsonl_path, min_seconds=0.0, log=lines.append)
    assert len(splits["dev"]) == round(0.1 * len(written)) and len(splits["train"]) + len(splits["dev"]) == 60
    assert "held-out utterances: 6 of 60" in splits["dev"].source
    assert "dev speakers may also be heard in training" in splits["dev"].source
    assert any(line.startswith("dev: 6 utterances") for line in lines)


def test_held_out_speakers_are_disjoint_about_ten_percent_and_fixed_by_the_seed(libri):
    folder, _ = libri
    utterances, _, _ = corpora.read_librispeech(folder)
    train, dev, how = corpora.hold_out_speakers(utterances, 0.1, seed=0)
    train_speakers, dev_speakers = {u.speaker for u in train}, {u.speaker for u in dev}
    assert not train_speakers & dev_speakers and len(train_speakers | dev_speakers) == NUM_SPEAKERS
    assert len(dev_speakers) == 2 and len(dev) == 2 * PER_SPEAKER and len(train) + len(dev) == len(utterances)
    assert how == f"held-out speakers: 2 of {NUM_SPEAKERS} (10%, seed 0)"
    assert corpora.hold_out_speakers(utterances, 0.1, seed=0)[1] == dev  # the same on every run
    others = [{u.speaker for u in corpora.hold_out_speakers(utterances, 0.1, seed=s)[1]} for s in range(1, 6)]
    assert any(held != dev_speakers for held in others)  # the seed chooses them
    with pytest.raises(ValueError, match="one speaker.*give --dev-dir"):
        corpora.hold_out_speakers([u for u in utterances if u.speaker == "100"], 0.1)


def test_read_corpus_splits_reports_the_held_out_dev_split(libri):
    folder, _ = libri
    lines = []
    splits = corpora.read_corpus_splits("librispeech", folder, seed=0, min_seconds=0.0, log=lines.append)
    assert list(splits) == ["train", "dev"]
    assert not set(splits["train"].speakers) & set(splits["dev"].speakers)
    assert lines[0].startswith(f"train: {len(splits['train'])} utterances (") and "dropped 0" in lines[0]
    assert lines[1].startswith("dev: 6 utterances") and "held-out speakers: 2 of 20 (10%, seed 0)" in lines[1]


def test_the_duration_filter_drops_and_counts(libri):
    folder, _ = libri
    utterances, _, _ = corpora.read_librispeech(folder)
    seconds = np.array([soundfile.info(str(u.audio)).duration for u in utterances])
    low, high = np.quantile(seconds, [0.25, 0.75])
    split = corpora.load_corpus_split(utterances, "train", min_seconds=low, max_seconds=high)
    short, long = int((seconds < low).sum()), int((seconds > high).sum())
    assert short > 0 and long > 0
    assert split.dropped == {f"shorter than {low:g} s": short, f"longer than {high:g} s": long}
    assert len(split) == len(utterances) - short - long
    assert all(low <= d <= high + 1e-9 for d in split.durations_s())
    with pytest.raises(ValueError, match="0 <= min <= max"):
        corpora.load_corpus_split(utterances, "train", min_seconds=3.0, max_seconds=2.0)


def test_ctc_feasibility_is_checked_at_its_exact_boundary(tmp_path):
    """The default model halves time (§3.6). "hello" needs 6 output frames, 5 letters + a blank between
    the two l's: 1,920 samples give 11 spectrogram frames -> 6 output frames; 1,919 give 10 -> 5."""
    config = ds2.DS2Config()
    model = ds2.DeepSpeech2(config)
    for samples, frames, out in ((1920, 11, 6), (1919, 10, 5)):
        assert ds2.num_frames(samples) == frames and int(model.output_lengths(torch.tensor([frames]))) == out
    noise = np.random.default_rng(0).uniform(-0.3, 0.3, 1920).astype(np.float32)
    utterances = []
    for name, samples, text in (("fits", 1920, "hello"), ("short", 1919, "hello"), ("helo", 1919, "helo")):
        soundfile.write(tmp_path / f"{name}.flac", noise[:samples], SAMPLE_RATE, format="FLAC")
        utterances.append(corpora.CorpusUtterance(tmp_path / f"{name}.flac", text, "1", f"test:{name}"))
    split = corpora.load_corpus_split(utterances, "train", config, min_seconds=0.0)
    assert [Path(f).stem for f in split.files] == ["fits", "helo"]  # "helo" needs only 4 frames
    assert split.dropped == {"too short for the transcript under CTC": 1}


def test_stereo_audio_at_another_rate_is_down_mixed_and_resampled(tmp_path):
    audio = speak("the cat sat", seed=1)
    import torchaudio.functional as AF

    at_22k = AF.resample(torch.from_numpy(audio), SAMPLE_RATE, 22050).numpy()
    stereo = np.stack([at_22k, 0.5 * at_22k], axis=1)  # (samples, channels), soundfile's layout
    soundfile.write(tmp_path / "a.flac", stereo, 22050, format="FLAC")
    (tmp_path / "m.csv").write_text("audio,text\na.flac,the cat sat\n", encoding="utf-8-sig")  # a BOM
    utterances, _, _ = corpora.read_manifest(tmp_path / "m.csv")
    split = corpora.load_corpus_split(utterances, "train", min_seconds=0.0)
    assert split.waveforms[0].dim() == 1 and abs(len(split.waveforms[0]) - len(audio)) <= 1
    # The oracle: soundfile's samples, averaged over the channels, resampled by torchaudio.functional.
    written, _ = soundfile.read(tmp_path / "a.flac", dtype="float32")  # (samples, 2)
    expected = AF.resample(torch.from_numpy(written.mean(axis=1)), 22050, SAMPLE_RATE)
    torch.testing.assert_close(split.waveforms[0], expected, atol=1e-4, rtol=0)
    assert split.sample_rates == {22050: 1}  # the file's own rate, and the report says it was resampled
    lines = []
    corpora._report_split(split, lines.append)
    assert lines[1] == "  resampled to 16000 Hz: 1 at 22050 Hz"


def test_unreadable_and_silent_audio_are_dropped_and_counted(tmp_path):
    (tmp_path / "broken.flac").write_bytes(b"not audio at all")
    soundfile.write(tmp_path / "silent.flac", np.zeros(16000, np.float32), SAMPLE_RATE, format="FLAC")
    soundfile.write(tmp_path / "ok.flac", speak("a dog", seed=2), SAMPLE_RATE, format="FLAC")
    nan = speak("a dog", seed=2)
    nan[100] = np.nan
    soundfile.write(tmp_path / "nan.wav", nan, SAMPLE_RATE, subtype="FLOAT")
    names = ("broken.flac", "silent.flac", "nan.wav", "ok.flac")
    (tmp_path / "m.jsonl").write_text(
        "".join(json.dumps({"audio": n, "text": "a dog"}) + "\n" for n in names)
    )
    utterances, _, _ = corpora.read_manifest(tmp_path / "m.jsonl")
    split = corpora.load_corpus_split(utterances, "train", min_seconds=0.0)
    assert [Path(f).stem for f in split.files] == ["ok"]
    assert split.dropped == {"unreadable audio": 1, "silent": 1, "NaN or inf samples": 1}
    assert split.problems[0].startswith(f"{tmp_path / 'm.jsonl'}:1: cannot read ")


def test_missing_or_malformed_inputs_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no folder .*nowhere.*openslr.org/12"):
        corpora.read_corpus_splits("librispeech", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no \*\.trans\.txt files under .*empty"):
        corpora.read_librispeech(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no manifest file .*missing.csv"):
        corpora.read_manifest(tmp_path / "missing.csv")
    (tmp_path / "bad.csv").write_text("filename,words\na.flac,hello\n")
    with pytest.raises(ValueError, match=r"has no audio path column; name it one of \['audio'"):
        corpora.read_manifest(tmp_path / "bad.csv")
    (tmp_path / "m.txt").write_text("a.flac hello\n")
    with pytest.raises(ValueError, match="must be a .csv, .tsv or .jsonl file, got '.txt'"):
        corpora.read_manifest(tmp_path / "m.txt")
    with pytest.raises(ValueError, match="kind must be one of"):
        corpora.read_corpus_splits("timit", tmp_path)


def test_dev_dir_is_used_and_must_not_share_files_with_training(libri, tmp_path):
    folder, _ = libri
    dev_folder = tmp_path / "dev-tiny"
    write_librispeech(dev_folder, speakers=[900, 901])
    splits = corpora.read_corpus_splits("librispeech", folder, dev_folder, min_seconds=0.0, log=None)
    assert splits["dev"].source == str(dev_folder) and len(splits["dev"]) == 2 * PER_SPEAKER
    assert len(splits["train"]) == NUM_SPEAKERS * PER_SPEAKER  # no speakers held out of train
    overlapping = tmp_path / "dev-overlapping"
    write_librispeech(overlapping, speakers=[100, 902])  # speaker 100 also speaks in training
    splits = corpora.read_corpus_splits("librispeech", folder, overlapping, min_seconds=0.0, log=None)
    assert splits["dev"].source == f"{overlapping} (1 of its speakers also speak in training)"
    root = tmp_path / "LibriSpeech"  # the whole corpus, training and dev subsets together: refused
    write_librispeech(root / "train-clean-5", speakers=[1, 2])
    write_librispeech(root / "dev-clean", speakers=[3])
    with pytest.raises(ValueError, match=r"subsets \['dev-clean', 'train-clean-5'\], training and held-out"):
        corpora.read_librispeech(root)
    assert len(corpora.read_librispeech(root / "train-clean-5")[0]) == 2 * PER_SPEAKER
    with pytest.raises(ValueError, match="in both the training data and --dev-dir"):
        corpora.read_corpus_splits("librispeech", folder, folder / "100", log=None)


def test_filters_that_leave_nothing_say_what_was_dropped(libri):
    folder, _ = libri
    with pytest.raises(ValueError, match=r"no usable train utterances .*longer than 0.1 s.*--max-seconds"):
        corpora.read_corpus_splits("librispeech", folder, min_seconds=0.0, max_seconds=0.1, log=None)


TINY = [
    "--epochs", "1", "--batch-size", "8", "--hidden", "16", "--rnn-layers", "1", "--conv-layers", "1",
    "--conv-channels", "2", "--beam-width", "2", "--threads", "1", "--seed", "3", "--min-seconds", "0",
]  # fmt: skip


def run_cli(*args):
    return subprocess.run(
        [sys.executable, str(ROOT / "train_minimal.py"), *args], capture_output=True, text=True, cwd=ROOT
    )


def test_train_minimal_trains_on_a_librispeech_folder(libri, tmp_path):
    folder, _ = libri
    result = run_cli("--data", "librispeech", "--data-dir", str(folder), "--out", str(tmp_path), *TINY)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = result.stdout
    assert "dev: 6 utterances" in out and "held-out speakers: 2 of 20 (10%, seed 3)" in out
    data_line = next(line for line in out.splitlines() if line.startswith("data: "))
    assert (
        data_line.startswith("data: 54 train utterances (")
        and "LM on the 54 training transcripts" in data_line
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["final"]) == {"dev"} and "beam_wer" in metrics["final"]["dev"]
    assert set(metrics["history"][0]) == {"epoch", "train_loss", "skipped_batches", "dev", "seconds"}
    assert metrics["args"]["data"] == "librispeech" and (tmp_path / "curves.png").stat().st_size > 0
    assert any(line.startswith("epoch  1") and "dev CER" in line for line in out.splitlines())


def test_train_minimal_trains_on_a_manifest_with_a_dev_manifest(libri, tmp_path):
    folder, written = libri
    csv_path, _ = write_manifests(tmp_path / "manifests", folder, written)
    rows = csv_path.read_text().splitlines()
    dev_path, train_path = csv_path.parent / "dev.csv", csv_path.parent / "train-part.csv"
    dev_path.write_text("\n".join([rows[0], *rows[1:7]]) + "\n")  # two speakers
    train_path.write_text("\n".join([rows[0], *rows[7:]]) + "\n")
    args = ["--data", "manifest", "--data-dir", str(train_path), "--dev-dir", str(dev_path)]
    result = run_cli(*args, "--out", str(tmp_path / "run"), *TINY)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "dev: 6 utterances (" in result.stdout and f"from {dev_path}" in result.stdout
    assert "characters outside the alphabet ['5']" in result.stdout  # the skipped row, with its line
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["final"]["dev"]["cer"] >= 0


def test_train_minimal_bad_corpus_flags_give_one_line(tmp_path, capsys):
    import train_minimal

    for argv, message in (
        (
            ["--data", "librispeech"],
            "--data librispeech needs --data-dir (a LibriSpeech folder or a manifest file)",
        ),
        (["--data-dir", str(tmp_path)], "--data-dir and --dev-dir are for --data librispeech or manifest"),
    ):
        with pytest.raises(SystemExit) as exit_status:
            train_minimal.parse_args(argv)
        assert exit_status.value.code == 2 and capsys.readouterr().err.startswith(f"error: {message}")
    result = run_cli("--data", "librispeech", "--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("error: no folder") and "openslr.org/12" in result.stderr


def test_the_report_shows_ten_problems_and_counts_the_rest():
    split = corpora.CorpusSplit([], [], [], "train", source="somewhere", dropped={"missing audio file": 12})
    split.problems = [f"m.csv:{line}: no audio file; skipped" for line in range(2, 14)]
    lines = []
    corpora._report_split(split, lines.append)
    assert lines[0] == "train: 0 utterances (0.0 min) from somewhere; dropped 12: 12 missing audio file"
    assert lines[1:11] == [f"  {problem}" for problem in split.problems[:10]]
    assert lines[11:] == ["  ... and 2 more (all in the split's .problems)"]
