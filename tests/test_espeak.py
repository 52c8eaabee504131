"""Tests for the espeak-ng corpus (corpora.py section 2, issue 14): determinism, splits, audio, errors.

Names used: EspeakSpeaker, ESPEAK_DEV_VOICES, ESPEAK_TRAIN_VOICES, ESPEAK_VARIANTS, ESPEAK_SAMPLE_RATE,
ESPEAK_INSTALL_HINT, espeak_speak, synthesize_espeak_speech, make_espeak_speaker_pool, make_espeak_split,
make_espeak_splits, check_espeak_available, espeak_version, _espeak_files; from implementation:
featurize, encode_text, decode_labels, NOISE_KINDS, _active_rms, _TARGET_ACTIVE_RMS.

Every test that speaks is skipped when espeakng-loader is not installed; the error-message tests run
either way. Each test takes well under a few seconds (espeak-ng speaks a sentence in about 8 ms).
"""

import ast
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import corpora
import implementation as ds2

ec = corpora  # the espeak-ng corpus lives in corpora.py


def _espeak_installed() -> bool:
    try:
        ec.check_espeak_available()
    except ImportError:
        return False
    return True


needs_espeak = pytest.mark.skipif(
    not _espeak_installed(), reason=f"espeak-ng is not installed: {ec.ESPEAK_INSTALL_HINT}"
)
AMERICAN = ec.EspeakSpeaker("en-us", "", rate_wpm=175, pitch=50, pitch_range=50, gain_db=0.0)
SCOTTISH = ec.EspeakSpeaker("en-gb-scotland", "f2", rate_wpm=150, pitch=60, pitch_range=70, gain_db=0.0)


@pytest.fixture
def forget_espeak():
    """Clears the cached library location before and after, so a simulated failure does not stick."""
    ec._espeak_files.cache_clear()
    yield
    ec._espeak_files.cache_clear()


# --- errors: one line that says what to install ------------------------------------------------------


def test_missing_package_says_what_to_install(monkeypatch, forget_espeak):
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # `import espeakng_loader` now fails
    with pytest.raises(ImportError) as error:
        ec.check_espeak_available()
    message = str(error.value)
    assert message == f"espeak-ng is not available: {ec.ESPEAK_INSTALL_HINT}"
    assert "python -m pip install espeakng-loader==0.2.4" in message and "\n" not in message
    with pytest.raises(ImportError, match="pip install espeakng-loader"):
        ec.make_espeak_splits(4, 2)


@needs_espeak
def test_library_that_cannot_load_says_why_and_what_to_install(monkeypatch, tmp_path, forget_espeak):
    import espeakng_loader

    broken = tmp_path / "libespeak-ng.so"
    broken.write_bytes(b"not a shared library")
    monkeypatch.setattr(espeakng_loader, "get_library_path", lambda: str(broken))
    with pytest.raises(ImportError) as error:
        ec.espeak_speak("hello", AMERICAN)
    message = str(error.value)
    assert message.startswith("espeak-ng is not available (") and "\n" not in message
    assert message.endswith(ec.ESPEAK_INSTALL_HINT)


def test_importing_the_module_does_not_need_espeak():
    # Only functions import espeakng_loader, when asked to speak: no module-level import of it.
    tree = ast.parse(Path(ec.__file__).read_text())
    top_level = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
    names = {alias.name for node in top_level for alias in node.names} | {
        node.module for node in top_level if isinstance(node, ast.ImportFrom)
    }
    assert "espeakng_loader" not in names


@needs_espeak
def test_unknown_voice_is_named():
    with pytest.raises(ValueError, match="no voice 'en-xx'"):
        ec.espeak_speak("hello", ec.EspeakSpeaker("en-xx", "", 175, 50, 50, 0.0))


@needs_espeak
@pytest.mark.parametrize("voice", ec.ESPEAK_TRAIN_VOICES + ec.ESPEAK_DEV_VOICES)
def test_every_voice_and_variant_speaks(voice):
    for variant in ec.ESPEAK_VARIANTS:
        audio = ec.espeak_speak("hello there", ec.EspeakSpeaker(voice, variant, 175, 50, 50, 0.0))
        assert audio.dtype == np.float32 and audio.ndim == 1
        assert 0.3 < len(audio) / ec.ESPEAK_SAMPLE_RATE < 2.0 and 0.05 < np.abs(audio).max() < 1.0


# --- determinism ---------------------------------------------------------------------------------------


@needs_espeak
def test_an_utterance_does_not_depend_on_what_was_spoken_before():
    # espeak-ng keeps C state between utterances; a fresh library per utterance must make that invisible.
    first = ec.espeak_speak("she sees the old man", SCOTTISH, seed=5)
    ec.espeak_speak("a quite different sentence and faster", AMERICAN, seed=9)
    again = ec.espeak_speak("she sees the old man", SCOTTISH, seed=5)
    np.testing.assert_array_equal(first, again)


@needs_espeak
def test_rate_and_pitch_change_the_audio():
    slow = ec.espeak_speak("she sees the old man", AMERICAN)
    fast = ec.espeak_speak("she sees the old man", ec.EspeakSpeaker("en-us", "", 230, 50, 50, 0.0))
    high = ec.espeak_speak("she sees the old man", ec.EspeakSpeaker("en-us", "", 175, 75, 50, 0.0))
    assert len(fast) < 0.85 * len(slow)
    assert not np.array_equal(high[: len(slow)], slow[: len(high)])


@needs_espeak
def test_same_seed_same_split_and_another_seed_another():
    speakers = ec.make_espeak_speaker_pool(5, ec.ESPEAK_DEV_VOICES, seed=3)
    one = ec.make_espeak_split("x", 6, speakers, seed=7, noise_kinds=("white", "pink"), noisy_fraction=0.5)
    two = ec.make_espeak_split("x", 6, speakers, seed=7, noise_kinds=("white", "pink"), noisy_fraction=0.5)
    other = ec.make_espeak_split("x", 6, speakers, seed=8)
    assert one.texts == two.texts and one.speakers == two.speakers and one.noise == two.noise
    assert all(torch.equal(a, b) for a, b in zip(one.waveforms, two.waveforms, strict=True))
    assert one.texts != other.texts


@needs_espeak
def test_a_prefix_of_a_split_is_the_smaller_split():
    speakers = ec.make_espeak_speaker_pool(5, ec.ESPEAK_TRAIN_VOICES, seed=0)
    small, large = (ec.make_espeak_split("x", n, speakers, seed=1) for n in (3, 6))
    assert small.texts == large.texts[:3]
    assert all(torch.equal(a, b) for a, b in zip(small.waveforms, large.waveforms[:3], strict=True))


@needs_espeak
def test_workers_do_not_change_the_splits():
    one = ec.make_espeak_splits(8, 4, seed=1, train_noise_fraction=0.5, workers=1)
    two = ec.make_espeak_splits(8, 4, seed=1, train_noise_fraction=0.5, workers=2)
    for name in one:
        assert one[name].texts == two[name].texts and one[name].noise == two[name].noise
        assert all(torch.equal(a, b) for a, b in zip(one[name].waveforms, two[name].waveforms, strict=True))


# --- the splits ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def splits():
    if not _espeak_installed():
        pytest.skip(f"espeak-ng is not installed: {ec.ESPEAK_INSTALL_HINT}")
    return ec.make_espeak_splits(16, 6, seed=0, train_noise_fraction=0.5)


def test_dev_accents_are_never_heard_in_training(splits):
    train_voices = {speaker.voice for speaker in splits["train"].speakers}
    assert train_voices <= set(ec.ESPEAK_TRAIN_VOICES)
    for name in ("dev-clean", "dev-noisy"):
        assert {speaker.voice for speaker in splits[name].speakers} <= set(ec.ESPEAK_DEV_VOICES)
    assert not set(ec.ESPEAK_TRAIN_VOICES) & set(ec.ESPEAK_DEV_VOICES)
    assert not set(splits["dev-clean"].speakers) & set(splits["dev-noisy"].speakers)


def test_overlapping_voices_are_refused():
    with pytest.raises(ValueError, match="share \\['en-us'\\]"):
        ec.make_espeak_splits(4, 2, train_voices=("en", "en-us"), dev_voices=("en-us",))


def test_noise_is_recorded_like_the_letter_phone_splits(splits):
    assert set(splits["dev-clean"].noise) == {"clean"}
    assert set(splits["dev-noisy"].noise) <= set(ds2.NOISE_KINDS) and set(splits["dev-noisy"].snr_db) == {
        10.0
    }
    assert "clean" in splits["train"].noise and len(set(splits["train"].noise)) > 1


def test_sample_rate_shapes_and_level(splits):
    for split in splits.values():
        assert split.sample_rate == ds2.SAMPLE_RATE == 16000
        for waveform, speaker, kind in zip(split.waveforms, split.speakers, split.noise, strict=True):
            assert waveform.dtype == torch.float32 and waveform.dim() == 1
            assert 0.5 < len(waveform) / split.sample_rate < 6.0
            if kind == "clean":  # speech at the letter-phones' level, times the speaker's gain
                level = ds2._active_rms(waveform.double().numpy(), split.sample_rate)
                expected = ds2._TARGET_ACTIVE_RMS * 10 ** (speaker.gain_db / 20)
                assert level == pytest.approx(expected, rel=0.1)


@needs_espeak
def test_resampling_keeps_the_duration():
    rng = np.random.default_rng(0)
    raw = ec.espeak_speak("the little dog sleeps outside", AMERICAN, seed=0)
    waveform = ec.synthesize_espeak_speech("the little dog sleeps outside", AMERICAN, rng)
    edges_s = (len(waveform) / 16000) - len(raw) / ec.ESPEAK_SAMPLE_RATE  # the added edge silence
    assert 0.1 - 1e-3 <= edges_s <= 0.3 + 1e-3


def test_transcripts_are_encodable(splits):
    for split in splits.values():
        for text in split.texts:
            assert ds2.decode_labels(ds2.encode_text(text)) == text


def test_featurize_accepts_the_audio(splits):
    for waveform in splits["dev-noisy"].waveforms + splits["dev-clean"].waveforms:
        spectrogram = ds2.featurize(waveform)
        assert spectrogram.shape[0] == 161 and spectrogram.shape[1] > 40
        assert torch.isfinite(spectrogram).all()


@needs_espeak
def test_version_names_espeak_and_the_package():
    assert ec.espeak_version().startswith("espeak-ng 1.52") and "espeakng-loader 0.2.4" in ec.espeak_version()


@needs_espeak
def test_train_minimal_trains_on_espeak_english(tmp_path):
    """``python train_minimal.py --data espeak`` end to end at a tiny size: metrics with beam + LM."""
    import json
    import subprocess

    root = Path(__file__).resolve().parents[1]
    tiny = [
        "--train-size",
        "32",
        "--dev-size",
        "4",
        "--batch-size",
        "16",
        "--hidden",
        "32",
        "--rnn-layers",
        "1",
    ]
    tiny += ["--conv-channels", "4", "--lm-sentences", "200", "--beam-width", "4", "--epochs", "1"]
    result = subprocess.run(
        [sys.executable, str(root / "train_minimal.py"), "--data", "espeak", "--out", str(tmp_path), *tiny],
        capture_output=True,
        text=True,
        cwd=root,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["args"]["data"] == "espeak" and "beam_wer" in metrics["final"]["dev-clean"]
