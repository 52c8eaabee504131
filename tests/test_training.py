"""Training helpers: SortaGrad batches, checkpoints, transcription (implementation.py section 12)."""

import os

import numpy as np
import pytest
import soundfile
import torch
import torchaudio.functional as AF

import implementation as ds2

# ---------------------------------------------------------------------------------------------------------
# SortaGrad (§3.3)
# ---------------------------------------------------------------------------------------------------------


def test_sortagrad_first_epoch_is_in_increasing_length():
    lengths = np.random.default_rng(0).integers(50, 400, size=203)
    batches = ds2.sortagrad_batches(lengths, batch_size=16, epoch=0, seed=0)
    order = [i for batch in batches for i in batch]
    assert sorted(order) == list(range(203))  # every utterance exactly once
    assert all(lengths[a] <= lengths[b] for a, b in zip(order, order[1:], strict=False))
    assert [len(b) for b in batches] == [16] * 12 + [11]


def test_later_epochs_are_shuffled_deterministically_and_cover_everything():
    lengths = np.random.default_rng(0).integers(50, 400, size=2000)
    epoch1 = ds2.sortagrad_batches(lengths, 16, epoch=1, seed=3)
    epoch2 = ds2.sortagrad_batches(lengths, 16, epoch=2, seed=3)
    for batches in (epoch1, epoch2):
        assert sorted(i for b in batches for i in b) == list(range(2000))
    assert epoch1 == ds2.sortagrad_batches(lengths, 16, epoch=1, seed=3)  # reproducible
    assert epoch1 != epoch2
    maxima = [max(lengths[b]) for b in epoch1]
    assert maxima != sorted(maxima)  # not in length order any more
    # ... but batches group similar lengths, so padding stays small.
    waste = np.mean([1 - lengths[b].mean() / lengths[b].max() for b in epoch1])
    assert waste < 0.1


def test_no_sortagrad_shuffles_the_first_epoch_too():
    lengths = list(range(100))
    batches = ds2.sortagrad_batches(lengths, 10, epoch=0, seed=0, sortagrad=False)
    assert batches != ds2.sortagrad_batches(lengths, 10, epoch=0, seed=0)


def test_sortagrad_refuses_empty_data_and_bad_batch_size():
    with pytest.raises(ValueError, match="empty"):
        ds2.sortagrad_batches([], 4, 0)
    with pytest.raises(ValueError, match="batch_size"):
        ds2.sortagrad_batches([1, 2], 0, 0)


# ---------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------

SMALL = ds2.DS2Config(conv_channels=(4,), rnn_layers=1, rnn_hidden=16)


def test_checkpoint_round_trip_restores_weights_and_state(tmp_path):
    model = ds2.DeepSpeech2(SMALL)
    optimizer = torch.optim.Adam(model.parameters())
    path = tmp_path / "ckpt.pt"
    ds2.save_checkpoint(path, model, optimizer=optimizer.state_dict(), epoch=3, history=[{"cer": 0.5}])
    loaded, state = ds2.load_checkpoint(path)
    assert loaded.config == SMALL and state["epoch"] == 3 and state["history"] == [{"cer": 0.5}]
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]  # no temporary left behind


def test_checkpoint_with_a_different_architecture_is_refused_by_name(tmp_path):
    path = tmp_path / "ckpt.pt"
    ds2.save_checkpoint(path, ds2.DeepSpeech2(SMALL))
    other = ds2.DeepSpeech2(ds2.DS2Config(conv_channels=(4,), rnn_layers=1, rnn_hidden=32))
    with pytest.raises(ValueError, match="rnn_hidden: checkpoint 16 vs model 32"):
        ds2.load_checkpoint(path, other)


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda p: None, FileNotFoundError, "no checkpoint"),
        (lambda p: p.write_bytes(b"not a checkpoint at all"), ValueError, "not a readable checkpoint"),
        (lambda p: torch.save({"weights": torch.zeros(2)}, p), ValueError, "not a checkpoint of this lesson"),
        (lambda p: torch.save({"x": os.getcwd}, p), ValueError, "could run code"),
    ],
    ids=["missing", "garbage", "foreign", "pickle-with-code"],
)
def test_bad_checkpoints_give_clear_errors(tmp_path, make, error, message):
    path = tmp_path / "ckpt.pt"
    make(path)
    with pytest.raises(error, match=message):
        ds2.load_checkpoint(path)


def test_truncated_checkpoint_is_refused_and_atomic_save_keeps_the_good_one(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    ds2.save_checkpoint(path, ds2.DeepSpeech2(SMALL), epoch=1)
    good = path.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        ds2.load_checkpoint(truncated)

    def crash(*args, **kwargs):  # the disk fills up, or the process dies, half-way through a save
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        ds2.save_checkpoint(path, ds2.DeepSpeech2(SMALL), epoch=2)
    assert path.read_bytes() == good
    assert ds2.load_checkpoint(path)[1]["epoch"] == 1
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]


# ---------------------------------------------------------------------------------------------------------
# Transcription: any sample rate, mono or multi-channel
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def memorised():
    """A tiny model that has memorised one synthetic utterance (a few seconds of CPU)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    text = "the good cat will see"
    waveform = ds2.synthesize_speech(text, ds2.random_speaker(rng), rng)
    spec = ds2.featurize(waveform)
    batch = ds2.collate([spec], [text])
    model = ds2.DeepSpeech2(ds2.DS2Config(conv_channels=(4,), rnn_layers=1, rnn_hidden=64))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        model.train()
        log_probs, out_lengths = model(batch.spectrograms, batch.lengths)
        loss = ds2.ctc_loss(log_probs, batch.targets, out_lengths, batch.target_lengths)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 0.05:
            break
    assert ds2.transcribe(model, waveform, 16000) == text
    return model, waveform, text


@pytest.mark.parametrize("sample_rate, channels", [(16000, 2), (44100, 1), (48000, 2), (8000, 1)])
def test_transcribe_resamples_and_down_mixes_a_wav_file(tmp_path, memorised, sample_rate, channels):
    model, waveform, text = memorised
    audio = AF.resample(waveform, 16000, sample_rate) if sample_rate != 16000 else waveform
    audio = audio.unsqueeze(0).repeat(channels, 1)  # (channels, samples)
    if channels == 2:
        audio[1] *= 0.5  # the channels need not be equal
    path = tmp_path / "clip.wav"
    soundfile.write(path, audio.T.numpy(), sample_rate, subtype="PCM_16")
    loaded, rate = ds2.load_audio(path)
    assert rate == sample_rate and loaded.shape[0] == channels
    if sample_rate >= 16000:
        assert ds2.transcribe(model, loaded, rate) == text
    else:  # 8 kHz audio has lost everything above 4 kHz (fricatives): it still runs, and says so
        with pytest.warns(UserWarning, match="below the model's 16000 Hz"):
            assert isinstance(ds2.transcribe(model, loaded, rate), str)


def test_load_audio_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no audio file"):
        ds2.load_audio(tmp_path / "missing.wav")
    fake = tmp_path / "fake.wav"
    fake.write_text("this is not audio")
    with pytest.raises(ValueError, match="not a readable audio file"):
        ds2.load_audio(fake)
