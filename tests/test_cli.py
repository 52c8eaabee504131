"""train_minimal.py from the command line: a smoke run, exact resume, determinism, transcription, errors."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torchaudio.functional as AF

import implementation as ds2

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--train-size", "48", "--dev-size", "6", "--batch-size", "16", "--hidden", "32", "--rnn-layers", "1",
    "--conv-channels", "4", "--lm-sentences", "300", "--beam-width", "4", "--seed", "3",
]  # fmt: skip


def run(*args, check=True):
    result = subprocess.run(
        [sys.executable, str(ROOT / "train_minimal.py"), *args], capture_output=True, text=True, cwd=ROOT
    )
    if check:
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


def metrics(folder):
    """What a run measured, without wall-clock times (which differ between any two runs)."""
    data = json.loads((Path(folder) / "metrics.json").read_text())
    history = [{k: v for k, v in record.items() if k != "seconds"} for record in data["history"]]
    return history, data.get("final")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = run("--epochs", "2", "--out", str(out), *TINY)
    return out, result


def test_smoke_run_writes_checkpoint_metrics_curves_and_lm(uninterrupted):
    out, result = uninterrupted
    for name in ("checkpoint.pt", "metrics.json", "curves.png", "lm.arpa"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    history, final = metrics(out)
    assert [h["epoch"] for h in history] == [1, 2]
    for record in history:
        assert np.isfinite(record["train_loss"]) and 0 <= record["dev-clean"]["cer"]
    assert set(final) == {"dev-clean", "dev-noisy"} and "beam_wer" in final["dev-clean"]
    epoch_lines = [line for line in result.stdout.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 2 and "dev-noisy CER" in epoch_lines[0]
    model, state = ds2.load_checkpoint(out / "checkpoint.pt")
    assert state["epoch"] == 2 and model.config.rnn_hidden == 32


def test_same_seed_gives_the_same_metrics(uninterrupted, tmp_path):
    out, _ = uninterrupted
    run("--epochs", "2", "--out", str(tmp_path), *TINY)
    assert metrics(tmp_path) == metrics(out)


def test_resume_after_a_mid_epoch_stop_reaches_the_same_metrics(uninterrupted, tmp_path):
    out, _ = uninterrupted
    stopped = run("--epochs", "2", "--out", str(tmp_path), "--stop-after", "5", *TINY)
    assert "stopped at step 5" in stopped.stdout
    assert len(metrics(tmp_path)[0]) == 1  # 3 steps per epoch: step 5 is in epoch 2, after epoch 1's record
    run("--epochs", "2", "--out", str(tmp_path), "--resume", str(tmp_path / "checkpoint.pt"), *TINY)
    assert metrics(tmp_path) == metrics(out)


def test_transcribe_a_stereo_wav_at_another_sample_rate(uninterrupted, tmp_path):
    out, _ = uninterrupted
    rng = np.random.default_rng(0)
    waveform = ds2.synthesize_speech("the cat sat", ds2.random_speaker(rng), rng)
    stereo = AF.resample(waveform, 16000, 44100).unsqueeze(0).repeat(2, 1)
    path = tmp_path / "clip.wav"
    soundfile.write(path, stereo.T.numpy(), 44100)
    result = run("--transcribe", str(path), "--checkpoint", str(out / "checkpoint.pt"))
    assert len(result.stdout.splitlines()) == 1  # the transcript (a tiny model: its content is not checked)
    model, _ = ds2.load_checkpoint(out / "checkpoint.pt")
    lm = ds2.NGramLM.from_arpa(out / "lm.arpa")
    loaded, rate = ds2.load_audio(path)
    expected = ds2.transcribe(model, loaded, rate, lm, beam_width=32, alpha=0.5, beta=1.0)
    assert result.stdout.strip() == expected


@pytest.mark.parametrize(
    "args, message",
    [
        (["--lookahead", "5"], "--lookahead needs --unidirectional"),
        (["--batch-size", "64", "--train-size", "10"], "larger than --train-size"),
        (["--hidden", "0"], "--hidden must be at least 1"),
        (["--noise", "1.5"], "--noise is a fraction"),
        (["--transcribe", "missing.wav", "--checkpoint", "missing.pt"], "no checkpoint"),
    ],
)
def test_bad_flags_give_one_line_and_exit_status_2(args, message):
    result = run(*args, check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_corrupt_checkpoint_is_refused_and_left_untouched(tmp_path):
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"\x80\x02 truncated")
    result = run("--epochs", "1", "--out", str(tmp_path), "--resume", str(bad), *TINY, check=False)
    assert result.returncode == 2 and "not a readable checkpoint" in result.stderr
    assert bad.read_bytes() == b"\x80\x02 truncated"


def test_resume_with_a_different_architecture_is_refused_without_overwriting(uninterrupted, tmp_path):
    out, _ = uninterrupted
    before = (out / "checkpoint.pt").read_bytes()
    flags = [f if f != "32" else "48" for f in TINY]  # --hidden 48 instead of 32
    result = run(
        "--epochs", "3", "--out", str(out), "--resume", str(out / "checkpoint.pt"), *flags, check=False
    )
    assert result.returncode == 2 and "rnn_hidden: checkpoint 32 vs model 48" in result.stderr
    assert (out / "checkpoint.pt").read_bytes() == before


def test_ablation_flags_train_end_to_end(tmp_path):
    """The paper's variants behind the flags all train: SGD + Nesterov, simple RNN, no BN, no SortaGrad,
    unidirectional with lookahead, 1 and 3 conv layers."""
    for flags in (
        ["--optimizer", "sgd", "--lr", "0.05", "--rnn-type", "rnn", "--no-batchnorm", "--no-sortagrad"],
        ["--unidirectional", "--lookahead", "3", "--conv-layers", "3"],
        ["--conv-layers", "1"],
    ):
        out = tmp_path / "_".join(f.strip("-") for f in flags[:2])
        run("--epochs", "1", "--out", str(out), *TINY, *flags)
        history, final = metrics(out)
        assert np.isfinite(history[0]["train_loss"]) and "beam_cer" in final["dev-noisy"]
        model, _ = ds2.load_checkpoint(out / "checkpoint.pt")
        assert model.config.rnn_type == ("rnn" if "rnn" in flags else "gru")


def test_the_cli_trains_with_the_library_recipe_and_the_readme_names_it():
    """train_minimal's flags default to TrainConfig/DS2Config, and the README's run says which recipe it is."""
    import train_minimal

    args, train, model = train_minimal.parse_args([]), ds2.TrainConfig(), ds2.DS2Config()
    cli = (args.epochs, args.batch_size, args.lr, args.optimizer, args.momentum, args.clip, args.seed)
    assert cli == (
        train.epochs,
        train.batch_size,
        train.lr,
        train.optimizer,
        train.momentum,
        train.clip,
        train.seed,
    )
    assert not args.no_sortagrad and train.sortagrad
    assert (args.hidden, args.rnn_layers, args.rnn_type, args.conv_type) == (
        model.rnn_hidden, model.rnn_layers, model.rnn_type, model.conv_type
    )  # fmt: skip
    assert (args.conv_channels,) * args.conv_layers == model.conv_channels
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"(the defaults: {train.epochs} epochs of batch {train.batch_size})" in readme
    assert f"batch {train.batch_size}, {train.epochs} epochs over 2,000 synthetic" in readme


def test_mandarin_trains_with_its_own_recipe_and_a_rate_follows_its_optimiser():
    """--data mandarin's defaults are corpora.RECIPES' (more epochs, SGD); a flag overrides one of them, and a
    learning rate chosen for SGD is never handed to Adam (nor English's Adam rate changed by it)."""
    import corpora
    import train_minimal

    def parsed(argv):
        args = train_minimal.parse_args(argv.split())
        return args.train_size, args.epochs, args.optimizer, args.lr

    recipe, train, size = corpora.RECIPES["mandarin"], ds2.TrainConfig(), corpora.TRAIN_SIZE
    assert recipe["optimizer"] != train.optimizer and recipe["lr"] != train.lr  # else nothing is tested
    assert recipe["train_size"] != size and recipe["epochs"] != train.epochs
    zh = recipe["train_size"], recipe["epochs"]
    assert parsed("--data mandarin") == (*zh, recipe["optimizer"], recipe["lr"])
    assert parsed("--data mandarin --optimizer adam") == (*zh, "adam", train.lr)
    assert parsed("--data mandarin --lr 0.02 --epochs 2 --train-size 64") == (
        64,
        2,
        recipe["optimizer"],
        0.02,
    )
    assert parsed("--data espeak") == parsed("") == (size, train.epochs, train.optimizer, train.lr)
    assert parsed("--optimizer sgd") == (size, train.epochs, "sgd", train.lr)  # English: as before
    for flag in ("--epochs", "--train-size"):  # 0 is refused, not taken for "the recipe's"
        with pytest.raises(SystemExit):
            train_minimal.parse_args(["--data", "mandarin", flag, "0"])
