"""Bad input, interrupted runs, untrusted checkpoints (issue 7): one catalogue, and nothing lost.

``CATALOGUE`` is one table of everything a learner might feed the lesson: each row is an input, the
API or CLI call that receives it, and what must happen - an exception of a given type whose message
says what was wrong (checked by a fragment), or ``WORKS`` where succeeding is the right answer. Some
rows repeat narrower tests elsewhere (tests/test_implementation.py, test_training.py, test_cli.py):
here they are side by side, so a gap in the table is easy to see.

After it: long recordings are transcribed in chunks cut at quiet moments, Ctrl-C (a real SIGINT) saves
a checkpoint from which ``--resume`` reaches exactly the uninterrupted run's metrics, and NaN/inf
losses are skipped and counted, or stop the run with a diagnosis when nothing else is left.
"""

import functools
import io
import itertools
import json
import math
import pickle
import signal
import subprocess
import sys
import threading
from contextlib import redirect_stderr
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import torchaudio.functional as AF

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import implementation as ds2  # noqa: E402
import train_minimal  # noqa: E402

WORKS = "works"
TINY = ds2.DS2Config(conv_channels=(2,), rnn_layers=1, rnn_hidden=8)  # untrained: its words don't matter


@functools.cache
def tiny_model() -> ds2.DeepSpeech2:
    torch.manual_seed(0)
    return ds2.DeepSpeech2(TINY).eval()


@functools.cache
def _speech() -> torch.Tensor:
    rng = np.random.default_rng(0)
    return ds2.synthesize_speech("the cat sat", ds2.random_speaker(rng), rng)  # (samples,) at 16 kHz


def speech(sample_rate: int = 16000, channels: int = 0) -> torch.Tensor:
    """About a second of synthetic speech: ``(samples,)``, or ``(channels, samples)`` if channels > 0."""
    waveform = _speech() if sample_rate == 16000 else AF.resample(_speech(), 16000, sample_rate)
    if channels:
        waveform = torch.stack([waveform * (0.5 + 0.5 * c / channels) for c in range(channels)])
    return waveform


# ---- the calls each row's input is given to


def transcribe(waveform, sample_rate=16000):
    text = ds2.transcribe(tiny_model(), waveform, sample_rate)
    assert isinstance(text, str)
    return text


def transcribe_at(sample_rate):
    def call(waveform):
        if sample_rate < 16000:  # allowed, and the caller is told what is lost (see transcribe's docstring)
            with pytest.warns(UserWarning, match="below the model's 16000 Hz"):
                return transcribe(waveform, sample_rate)
        return transcribe(waveform, sample_rate)

    return call


def load_and_transcribe(path):
    waveform, sample_rate = ds2.load_audio(path)
    assert waveform.dtype == torch.float32 and ((waveform >= -1) & (waveform <= 1)).all()
    return transcribe(waveform, sample_rate)


def encodes_as(normalized):
    def call(text):
        assert ds2.decode_labels(ds2.encode_text(text)) == normalized

    return call


def ctc_loss_of(texts):
    """CTC loss of two 12-frame utterances (random log-probs) with these transcripts."""
    batch = ds2.collate([torch.randn(161, 12), torch.randn(161, 12)], texts)
    log_probs = torch.randn(2, 12, ds2.NUM_CLASSES).log_softmax(-1)
    return ds2.ctc_loss(log_probs, batch.targets, torch.tensor([12, 12]), batch.target_lengths)


class ExitStatus2(Exception):
    """The CLI printed exactly one line on stderr (this exception's message) and exited with status 2."""


def cli(argv):
    """``train_minimal.py``'s argument checks, in-process (the same code as the command line)."""
    stderr = io.StringIO()
    try:
        with redirect_stderr(stderr):
            train_minimal.parse_args(argv)
    except SystemExit as exit_:
        lines = stderr.getvalue().strip().splitlines()
        assert exit_.code == 2 and len(lines) == 1, (exit_.code, lines)
        raise ExitStatus2(lines[0]) from None


def config(kwargs):
    return ds2.DS2Config(**kwargs)


def load_checkpoint_into(config):
    def call(path):
        return ds2.load_checkpoint(path, ds2.DeepSpeech2(config))

    return call


# ---- inputs that are files


def wav(subtype, sample_rate=16000, channels=1):
    def make(tmp):
        audio = speech(sample_rate)
        audio = audio / audio.abs().max()  # full scale: the extremes of every format's range are used
        path = tmp / f"{subtype}.wav"
        soundfile.write(path, np.stack([audio.numpy()] * channels, axis=1), sample_rate, subtype=subtype)
        return path

    return make


def empty_wav(tmp):
    soundfile.write(tmp / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    return tmp / "empty.wav"


def file_with(data: bytes, name="clip.wav"):
    def make(tmp):
        (tmp / name).write_bytes(data)
        return tmp / name

    return make


def checkpoint(tmp, transform=lambda data: data):
    path = tmp / "ckpt.pt"
    ds2.save_checkpoint(path, ds2.DeepSpeech2(TINY), epoch=1)
    path.write_bytes(transform(path.read_bytes()))
    return path


def foreign_checkpoint(tmp):
    torch.save({"weights": torch.ones(2)}, tmp / "x.pt")  # a torch file, but not one of ours
    return tmp / "x.pt"


class RunsCode:
    """Unpickling this runs code: it would create ``marker``. load_checkpoint must refuse it first."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def code_checkpoint(tmp):
    path = tmp / "ckpt.pt"
    torch.save({"format": ds2.CHECKPOINT_FORMAT, "config": TINY.to_dict(), "x": RunsCode(tmp / "ran")}, path)
    return path


def code_pickle(tmp):
    path = tmp / "ckpt.pt"
    path.write_bytes(pickle.dumps({"x": RunsCode(tmp / "ran")}, protocol=2))
    return path


def clipped(tmp):
    loud = (_speech() / _speech().abs().max() * 10).clamp(-1, 1)  # an overdriven microphone: +-1 stretches
    assert (loud.abs() == 1).float().mean() > 0.1
    return loud


def ten_minutes(tmp):
    return _speech().repeat(math.ceil(600 * 16000 / len(_speech())))[: 600 * 16000]


def row(name, make, call, error=None, fragment=""):
    """One catalogue row; ``error=None`` means the call must work."""
    outcome = WORKS if error is None else (error, fragment)
    return pytest.param(make, call, outcome, id=name)


def value(x):
    return lambda tmp: x


N = 16000  # one second at 16 kHz
CATALOGUE = [
    # ---- audio: the waveform itself
    row("audio empty -> featurize", value(torch.zeros(0)), ds2.featurize, ValueError, "empty (0 samples)"),
    row("audio empty -> transcribe", value(torch.zeros(0)), transcribe, ValueError, "empty (0 samples)"),
    row("audio 100 samples -> transcribe", value(torch.randn(100)), transcribe, ValueError, "too short"),
    row("audio NaN -> transcribe", value(torch.tensor([0.1] * N + [math.nan])), transcribe, ValueError, "NaN or inf"),
    row("audio inf -> featurize", value(torch.tensor([0.1] * N + [math.inf])), ds2.featurize, ValueError, "NaN or inf"),
    row("audio all zeros -> featurize", value(torch.zeros(N)), ds2.featurize, ValueError, "the audio is silent"),
    row("audio all zeros -> transcribe", value(torch.zeros(2, N)), transcribe, ValueError, "Check the recording level"),
    row("audio clipped at +-1 -> transcribe", clipped, transcribe),
    row("audio stereo -> transcribe", value(speech(channels=2)), transcribe),
    row("audio 6 channels -> transcribe", value(speech(channels=6)), transcribe),
    row("audio stereo -> featurize", value(speech(channels=2)), ds2.featurize, ValueError, "down-mix first"),
    row("audio 6 channels -> featurize", value(speech(channels=6)), ds2.featurize, ValueError, "to_mono"),
    row("audio 8 kHz -> transcribe", value(speech(8000)), transcribe_at(8000)),
    row("audio 44.1 kHz -> transcribe", value(speech(44100)), transcribe_at(44100)),
    row("audio 48 kHz -> transcribe", value(speech(48000)), transcribe_at(48000)),
    row("audio 8 kHz -> featurize", value(speech(8000)), lambda w: ds2.featurize(w, 8000), ValueError, "resample"),
    row("audio 10 minutes -> transcribe", ten_minutes, transcribe),
    # ---- audio files: every PCM and float WAV flavour soundfile writes, and files that are not audio
    row("wav PCM_U8", wav("PCM_U8"), load_and_transcribe),
    row("wav PCM_16", wav("PCM_16"), load_and_transcribe),
    row("wav PCM_24", wav("PCM_24"), load_and_transcribe),
    row("wav PCM_32", wav("PCM_32"), load_and_transcribe),
    row("wav FLOAT", wav("FLOAT"), load_and_transcribe),
    row("wav DOUBLE", wav("DOUBLE"), load_and_transcribe),
    row("wav PCM_16 stereo 44.1 kHz", wav("PCM_16", 44100, channels=2), load_and_transcribe),
    row("wav with no samples", empty_wav, load_and_transcribe, ValueError, "empty (0 samples)"),
    row("empty file named .wav", file_with(b""), ds2.load_audio, ValueError, "not a readable audio"),
    row("text file named .wav", file_with(b"this is not audio"), ds2.load_audio, ValueError, "not a readable audio"),
    row("missing audio file", lambda tmp: tmp / "missing.wav", ds2.load_audio, FileNotFoundError, "no audio file"),
    # ---- transcripts
    row("text digits", value("room 101"), ds2.encode_text, ValueError, "['0', '1']"),
    row("text punctuation", value("hello, world!"), ds2.encode_text, ValueError, "['!', ',']"),
    row("text accents", value("café noël"), ds2.encode_text, ValueError, "['é', 'ë']"),
    row("text upper case", value("Hello  WORLD"), encodes_as("hello world")),
    row("text empty", value(""), ds2.encode_text, ValueError, "the transcript is empty"),
    row("text only spaces", value("   "), ds2.encode_text, ValueError, "the transcript is empty"),
    row("text too long for its audio (CTC)", value(["a cat", "far too long a transcript"]), ctc_loss_of, ValueError, "#1: 12 frames < 26 needed"),
    # ---- configurations and flags
    row("config lookahead + bidirectional", value(dict(lookahead_context=4)), config, ValueError, "for unidirectional models"),
    row("config zero hidden units", value(dict(rnn_hidden=0)), config, ValueError, "rnn_hidden must be >= 1"),
    row("config negative layers", value(dict(rnn_layers=-2)), config, ValueError, "rnn_layers must be >= 1"),
    row("config zero conv channels", value(dict(conv_channels=(0, 8))), config, ValueError, "at least 1 channel"),
    row("flags --lookahead without --unidirectional", value(["--lookahead", "5"]), cli, ExitStatus2, "--lookahead needs --unidirectional"),
    row("flags --lookahead --unidirectional", value(["--lookahead", "5", "--unidirectional"]), cli),
    row("flags --hidden 0", value(["--hidden", "0"]), cli, ExitStatus2, "--hidden must be at least 1, got 0"),
    row("flags --epochs -3", value(["--epochs", "-3"]), cli, ExitStatus2, "--epochs must be at least 1, got -3"),
    row("flags --batch-size larger than the data", value(["--batch-size", "64", "--train-size", "10"]), cli, ExitStatus2, "larger than --train-size 10"),
    # ---- checkpoints
    row("checkpoint truncated", lambda tmp: checkpoint(tmp, lambda b: b[: len(b) // 2]), ds2.load_checkpoint, ValueError, "truncated or corrupt"),
    row("checkpoint of another architecture", checkpoint, load_checkpoint_into(ds2.DS2Config(conv_channels=(2,), rnn_layers=1, rnn_hidden=16)), ValueError, "rnn_hidden: checkpoint 8 vs model 16"),
    row("checkpoint that is a WAV file", lambda tmp: wav("PCM_16")(tmp).rename(tmp / "x.pt"), ds2.load_checkpoint, ValueError, "not a readable checkpoint"),
    row("checkpoint of someone else's", foreign_checkpoint, ds2.load_checkpoint, ValueError, "not a checkpoint of this lesson"),
    row("checkpoint that would run code (torch.save)", code_checkpoint, ds2.load_checkpoint, ValueError, "could run code"),
    row("checkpoint that would run code (raw pickle)", code_pickle, ds2.load_checkpoint, ValueError, "could run code"),
    row("checkpoint missing", lambda tmp: tmp / "missing.pt", ds2.load_checkpoint, FileNotFoundError, "train one with"),
]  # fmt: skip


@pytest.mark.parametrize("make, call, outcome", CATALOGUE)
def test_catalogue(tmp_path, make, call, outcome):
    given = make(tmp_path)
    if outcome == WORKS:
        call(given)
    else:
        error, fragment = outcome
        with pytest.raises(error) as raised:
            call(given)
        message = str(raised.value)
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert not (tmp_path / "ran").exists(), "unpickling ran code"


# ---------------------------------------------------------------------------------------------------------
# Long recordings: transcribed in chunks cut at quiet moments
# ---------------------------------------------------------------------------------------------------------


def test_chunk_boundaries_cut_in_quiet_frames_and_cover_every_sample_once():
    rate, second = 1000, 1000  # 10 ms frames of 10 samples keep this fast
    rng = np.random.default_rng(0)
    loud = torch.from_numpy(rng.uniform(-0.5, 0.5, 95 * second).astype(np.float32))
    quiet = torch.zeros(len(loud), dtype=torch.bool)
    for start in range(1500, len(loud), 2 * second):  # a 100 ms pause every 2 s: one in every 3 s search
        quiet[start + rng.integers(0, 500) :][:100] = True
    audio = torch.where(quiet, loud * 1e-3, loud)
    for total in (95 * second, 20 * second, 20 * second + 1, 41 * second + 7):  # the edges: max, max+1
        chunks = ds2.chunk_boundaries(audio[:total], rate, max_chunk_s=20.0, search_s=3.0, min_chunk_s=1.0)
        assert chunks[0][0] == 0 and chunks[-1][1] == total
        assert all(end == next_start for (_, end), (next_start, _) in itertools.pairwise(chunks))  # no gaps
        assert all(0 < end - start <= 20 * second for start, end in chunks)
        assert chunks[-1][1] - chunks[-1][0] >= 1 * second or len(chunks) == 1
        assert all(quiet[end] for _, end in chunks[:-1]), "a cut fell outside the pauses"
    assert len(ds2.chunk_boundaries(audio, rate)) == 6  # 95 s in chunks of 17-20 s
    with pytest.raises(ValueError, match="max_chunk_s"):
        ds2.chunk_boundaries(audio, rate, max_chunk_s=2.0)  # shorter than the 3 s search window


def test_ten_minutes_of_speech_are_transcribed_in_bounded_chunks_cut_in_pauses():
    rng = np.random.default_rng(3)
    texts = ["the cat sat", "we see the dog", "a good day", "she will go home", "the big red fox", "they run"]
    utterances = [ds2.synthesize_speech(text, ds2.random_speaker(rng), rng) for text in texts]  # 1-2 s each
    pause = torch.from_numpy(rng.normal(0, 1e-3, 8000).astype(np.float32))  # half a second of room noise
    group = torch.cat([piece for utterance in utterances for piece in (utterance, pause)])
    recording = group.repeat(math.ceil(600 * 16000 / len(group)))[: 600 * 16000]  # 10 minutes
    model, frames = ds2.DeepSpeech2(TINY).eval(), []  # untrained: what it says does not matter here
    model.register_forward_pre_hook(lambda _, inputs: frames.append(inputs[0].shape[-1]))
    hypothesis = ds2.transcribe(model, recording, 16000)
    assert isinstance(hypothesis, str) and "  " not in hypothesis
    # Memory is bounded: the model never sees more than one 20 s chunk (2000 frames) at once.
    assert len(frames) >= 30 and max(frames) <= 2000, (len(frames), max(frames))
    # Each search window holds a whole pause, so every cut is at least as quiet as the pauses.
    cuts = [end for _, end in ds2.chunk_boundaries(recording, 16000)[:-1]]
    assert len(cuts) == len(frames) - 1
    assert all(recording[cut - 80 : cut + 80].square().mean().sqrt() < 1.5e-3 for cut in cuts)


# ---------------------------------------------------------------------------------------------------------
# Nothing lost: Ctrl-C, and NaN/inf losses
# ---------------------------------------------------------------------------------------------------------

# 3 batches per epoch; a run takes a few seconds
FAST = [
    "--train-size", "24", "--dev-size", "2", "--batch-size", "8", "--hidden", "16", "--rnn-layers", "1",
    "--conv-layers", "1", "--conv-channels", "2", "--lm-sentences", "50", "--beam-width", "2", "--seed", "5",
    "--workers", "1", "--threads", "1",
]  # fmt: skip


def metrics(folder):
    """What a run measured, without wall-clock times (as in tests/test_cli.py)."""
    data = json.loads((Path(folder) / "metrics.json").read_text())
    history = [{k: v for k, v in record.items() if k != "seconds"} for record in data["history"]]
    return history, data.get("final")


def train(log, *args):
    """Start train_minimal.py; stderr (progress bars, errors) goes to the file ``log``, never a full pipe."""
    with open(log, "w") as stderr:
        return subprocess.Popen(
            [sys.executable, "-u", str(ROOT / "train_minimal.py"), *FAST, *args],  # -u: lines come as printed
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            cwd=ROOT,
        )


def test_ctrl_c_saves_a_checkpoint_and_resume_reaches_the_uninterrupted_metrics(tmp_path):
    whole, stopped, log = tmp_path / "whole", tmp_path / "stopped", tmp_path / "stderr.txt"
    uninterrupted = train(tmp_path / "whole.txt", "--epochs", "4", "--out", str(whole))  # on the other core
    run = train(log, "--epochs", "4", "--out", str(stopped))
    watchdog = threading.Timer(120, run.kill)  # a hung run fails the test instead of hanging it
    watchdog.start()
    lines = []
    for line in run.stdout:  # no sleeps: after the first epoch's line, press Ctrl-C (3 epochs to go)
        lines.append(line.rstrip("\n"))
        if line.startswith("epoch  1 "):
            run.send_signal(signal.SIGINT)
    watchdog.cancel()
    assert run.wait() == 130, "\n".join(lines) + log.read_text()[-2000:]
    said = [line for line in lines if line.startswith("interrupted")]
    assert len(said) == 1 and f"continue with --resume {stopped / 'checkpoint.pt'}" in said[0], lines
    assert "Traceback" not in log.read_text()
    _, state = ds2.load_checkpoint(stopped / "checkpoint.pt")
    assert said[0].startswith(f"interrupted at step {state['step']}:") and state["step"] >= 3  # after epoch 1

    checkpoint_path = str(stopped / "checkpoint.pt")
    resumed = train(log, "--epochs", "4", "--out", str(stopped), "--resume", checkpoint_path)
    for process in (resumed, uninterrupted):
        out, _ = process.communicate(timeout=120)
        assert process.returncode == 0, out[-2000:]
    assert metrics(stopped) == metrics(whole)


@pytest.fixture
def in_process():
    """Run train_minimal.main here, so ds2.ctc_loss can be replaced; put back the Ctrl-C handler it sets."""
    handler = signal.getsignal(signal.SIGINT)
    yield lambda *args: train_minimal.main(train_minimal.parse_args([*FAST, *args]))
    signal.signal(signal.SIGINT, handler)


def test_nan_and_inf_losses_are_skipped_and_counted(tmp_path, monkeypatch, in_process):
    real, calls = ds2.ctc_loss, []

    def ctc_loss(*args):
        calls.append(len(calls) + 1)
        loss = real(*args)
        return {2: loss * math.nan, 5: loss * math.inf}.get(calls[-1], loss)  # batch 2 of epoch 1, 2 of 2

    monkeypatch.setattr(ds2, "ctc_loss", ctc_loss)
    assert in_process("--epochs", "2", "--out", str(tmp_path)) == 0
    history, final = metrics(tmp_path)
    assert [record["skipped_batches"] for record in history] == [1, 1]
    assert all(math.isfinite(record["train_loss"]) for record in history) and final is not None
    model, _ = ds2.load_checkpoint(tmp_path / "checkpoint.pt")
    assert all(torch.isfinite(p).all() for p in model.parameters())  # never stepped on a NaN


def test_an_epoch_of_only_nan_losses_stops_with_a_diagnosis(tmp_path, monkeypatch, capsys, in_process):
    real = ds2.ctc_loss
    monkeypatch.setattr(ds2, "ctc_loss", lambda *args: real(*args) * math.nan)
    assert in_process("--epochs", "2", "--out", str(tmp_path)) == 1  # train_minimal exits with this status
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert errors == ["error: every batch of epoch 1 gave a NaN/inf loss; lower --lr"]
    assert not (tmp_path / "checkpoint.pt").exists()  # nothing NaN-poisoned was saved


def test_the_catalogue_is_complete_enough():
    errors = sum(param.values[2] != WORKS for param in CATALOGUE)
    works = len(CATALOGUE) - errors
    print(f"\ncatalogue: {len(CATALOGUE)} rows, {errors} give a clear error, {works} work")
    assert len({param.id for param in CATALOGUE}) == len(CATALOGUE)
    assert len(CATALOGUE) >= 30 and errors >= 20 and works >= 10
