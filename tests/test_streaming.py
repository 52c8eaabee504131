"""Streaming (implementation.py section 13.1): causal normalisation, and chunk by chunk equals the whole.

The oracle: for a unidirectional model that normalises causally, the log-probabilities a
``StreamingRecognizer`` produces from audio fed in chunks of any size (even shorter than one STFT window)
equal those the model computes on the whole recording at once.
"""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

import implementation as ds2

ROOT = Path(__file__).resolve().parents[1]
PRIOR = (-6.0, 12.0, 2.0)


def causal(**overrides):
    return ds2.DS2Config(
        **{"bidirectional": False, "normalize": "causal", "normalize_prior": PRIOR, **overrides}
    )


def utterance(seed=0, text="the cat sat on the mat"):
    rng = np.random.default_rng(seed)
    return ds2.synthesize_speech(text, ds2.random_speaker(rng), rng)  # (samples,) at 16 kHz


def whole_log_probs(model, waveform):
    spec = ds2.featurize(waveform, prior=model.config.causal_prior)  # (F, T)
    with torch.no_grad():
        log_probs, lengths = model.eval()(spec[None], torch.tensor([spec.shape[1]]))
    return log_probs[0, : lengths[0]]


def streamed(model, waveform, sizes, batch=1):
    recognizer = ds2.StreamingRecognizer(model, batch)
    text, start = "" if batch == 1 else [""] * batch, 0
    for size in sizes:
        if start >= waveform.shape[-1]:
            break
        new = recognizer.feed(waveform[..., start : start + size])
        text = text + new if batch == 1 else [a + b for a, b in zip(text, new, strict=True)]
        start += size
    assert start >= waveform.shape[-1]
    new = recognizer.finish()
    text = text + new if batch == 1 else [a + b for a, b in zip(text, new, strict=True)]
    return recognizer, text


def chunk_sizes(kind, seed=0):
    rng = np.random.default_rng(seed)
    if kind == "random":  # from a few samples (less than one 320-sample window) to ~0.3 s
        return [int(n) for n in rng.integers(1, 5000, size=10_000)]
    return [kind] * 10_000


MODELS = {
    "gru-lookahead": causal(lookahead_context=5),
    "gru": causal(conv_channels=(4, 4, 4)),
    "rnn-lookahead": causal(rnn_type="rnn", lookahead_context=2, rnn_layers=3, rnn_hidden=32),
    "gru-1d-conv": causal(conv_type="1d", conv_channels=(8,), lookahead_context=3, batch_norm=False),
    "gru-stride-3": causal(conv_time_stride=3, conv_channels=(4,), lookahead_context=1),
}


CASES = [(name, sizes) for name in MODELS for sizes in (50, 320, "random")]
CASES += [("gru-lookahead", 1280), ("gru-lookahead", 4000)]


@pytest.mark.parametrize(("name", "sizes"), CASES)
def test_chunk_by_chunk_equals_the_whole_recording(name, sizes):
    torch.manual_seed(0)
    model = ds2.DeepSpeech2(MODELS[name]).eval()
    with torch.no_grad():  # non-trivial BatchNorm running estimates
        for module in model.modules():
            if isinstance(module, ds2.MaskedBatchNorm) and module.weight is not None:
                module.running_mean.normal_(0, 0.3)
                module.running_var.uniform_(0.5, 2.0)
    waveform = utterance(text="where is my cat")  # about 1.5 s
    expected = whole_log_probs(model, waveform)
    recognizer, text = streamed(model, waveform, chunk_sizes(sizes))
    (got,) = recognizer.log_probs
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0.0, atol=1e-5)
    assert text == ds2.greedy_decode(expected)[0]  # the greedy characters emitted along the way


def test_streams_batched_together_equal_each_alone():
    torch.manual_seed(0)
    model = ds2.DeepSpeech2(causal(lookahead_context=5)).eval()
    a, b = utterance(0, "the cat"), utterance(1, "my hat")
    length = min(len(a), len(b))
    both, _ = streamed(model, torch.stack([a[:length], b[:length]]), chunk_sizes(1280), batch=2)
    for row, waveform in enumerate((a[:length], b[:length])):
        alone, _ = streamed(model, waveform, chunk_sizes(1280))
        torch.testing.assert_close(both.log_probs[row], alone.log_probs[0], rtol=0.0, atol=1e-5)


def test_causal_normalisation_never_looks_ahead_and_can_be_fed_in_pieces():
    torch.manual_seed(0)
    spec = torch.randn(2, 161, 90) * 3 - 6
    whole = ds2.causal_normalize_spectrogram(spec, PRIOR)
    changed = spec.clone()
    changed[..., 60:] += 10.0  # a loud future
    torch.testing.assert_close(ds2.causal_normalize_spectrogram(changed, PRIOR)[..., :60], whole[..., :60])
    normalizer = ds2.CausalNormalizer(PRIOR, batch=2)
    pieces = [normalizer(spec[..., a:b]) for a, b in ((0, 1), (1, 2), (2, 33), (33, 90))]
    torch.testing.assert_close(torch.cat(pieces, dim=-1), whole, rtol=0.0, atol=1e-6)
    assert not torch.allclose(ds2.normalize_spectrogram(spec), whole, atol=1e-2)  # it is not per utterance


def test_the_causal_prior_is_the_training_sets_mean_and_variance_of_floored_values():
    spectrograms = [torch.randn(161, n, dtype=torch.float64) * 2 - 5 for n in (40, 70)]
    mean, var, peak = ds2.estimate_causal_prior(spectrograms, floor_db=None)
    values = torch.cat([s.flatten() for s in spectrograms])
    assert mean == pytest.approx(values.mean().item())
    assert var == pytest.approx(values.var(unbiased=False).item())
    assert peak == pytest.approx(np.percentile([s.max().item() for s in spectrograms], 5))  # a quiet one's
    floored_mean, _, _ = ds2.estimate_causal_prior(spectrograms, floor_db=10.0)
    assert floored_mean > mean  # the floor lifts the quietest bins


def test_the_start_of_a_recording_is_floored_below_the_priors_peak_not_below_its_own_silence():
    spec = torch.full((161, 40), -20.0)  # 10 frames of near-silence, 50 dB is 11.5 in ln-power units
    spec[:, 10:] = torch.randn(161, 30)  # then speech, its loudest bins near 3
    ours = ds2.CausalNormalizer((-5.0, 4.0, 0.0))(spec[None])[0]  # a prior peak of 0: floor at -11.5
    theirs = ds2.CausalNormalizer((-5.0, 4.0, -100.0))(spec[None])[0]  # the silence floors itself
    lifted = torch.maximum(spec, torch.tensor(-50 * math.log(10) / 10))
    assert torch.equal(ours[:, :10], ours[:1, :10].expand(161, 10))  # constant: all of it at the floor
    assert (lifted[:, :10] > spec[:, :10]).all()  # ... which is above the silence
    assert not torch.allclose(ours[:, 20:], theirs[:, 20:], atol=1e-3)  # and the rest follows from it


def test_what_cannot_stream_is_refused_with_what_to_do():
    with pytest.raises(ValueError, match="bidirectional.*--unidirectional"):
        ds2.StreamingRecognizer(ds2.DeepSpeech2(ds2.DS2Config(normalize="causal", normalize_prior=PRIOR)))
    with pytest.raises(ValueError, match="whole recording.*--normalize causal"):
        ds2.StreamingRecognizer(ds2.DeepSpeech2(ds2.DS2Config(bidirectional=False)))
    with pytest.raises(ValueError, match="no normalisation prior"):
        ds2.StreamingRecognizer(ds2.DeepSpeech2(ds2.DS2Config(bidirectional=False, normalize="causal")))
    recognizer = ds2.StreamingRecognizer(ds2.DeepSpeech2(causal()))
    assert recognizer.feed(torch.zeros(100)) == ""  # less than one window: nothing yet
    with pytest.raises(ValueError, match="too short"):
        recognizer.finish()
    with pytest.raises(ValueError, match="NaN"):
        ds2.StreamingRecognizer(ds2.DeepSpeech2(causal())).feed(torch.full((400,), float("nan")))
    with pytest.raises(ValueError, match="normalize must be one of"):
        ds2.DS2Config(normalize="global")


def test_algorithmic_latency_is_the_conv_context_plus_the_lookahead():
    # 2 conv layers (time kernel 11, strides 2 then 1): 5 + 5 * 2 = 15 input frames; lookahead 5 output
    # frames of 20 ms: 100 ms more.
    assert ds2.algorithmic_latency_ms(causal()) == 150.0
    assert ds2.algorithmic_latency_ms(causal(lookahead_context=5)) == 250.0
    assert ds2.algorithmic_latency_ms(causal(conv_channels=(8,), lookahead_context=2)) == 90.0


def test_a_causal_checkpoint_keeps_its_normalisation_and_an_old_one_loads_per_utterance(tmp_path):
    model = ds2.DeepSpeech2(causal(lookahead_context=3))
    ds2.save_checkpoint(tmp_path / "causal.pt", model)
    loaded, _ = ds2.load_checkpoint(tmp_path / "causal.pt")
    assert loaded.config.normalize == "causal" and loaded.config.normalize_prior == PRIOR
    old = ds2.DeepSpeech2(ds2.DS2Config())
    payload = {"format": ds2.CHECKPOINT_FORMAT, "config": old.config.to_dict(), "model": old.state_dict()}
    del payload["config"]["normalize"], payload["config"]["normalize_prior"]  # as written before streaming
    torch.save(payload, tmp_path / "old.pt")
    loaded, _ = ds2.load_checkpoint(tmp_path / "old.pt")
    assert loaded.config.normalize == "utterance" and loaded.config.causal_prior is None


def test_stream_from_the_command_line(tmp_path):
    torch.manual_seed(0)
    model = ds2.DeepSpeech2(causal(lookahead_context=5))
    ds2.save_checkpoint(tmp_path / "checkpoint.pt", model)
    soundfile.write(tmp_path / "clip.wav", utterance().numpy(), 16000)
    command = [sys.executable, str(ROOT / "train_minimal.py"), "--transcribe", str(tmp_path / "clip.wav")]
    command += ["--checkpoint", str(tmp_path / "checkpoint.pt"), "--stream", "--chunk-ms", "40"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("streaming in 40 ms chunks") and "250 ms" in lines[0]
    assert any(line.startswith("compute per chunk: median") and "real-time factor" in line for line in lines)
    assert lines[-1].startswith("final")
    # an untrained model says little, but every growth line is "<seconds> s  <text>", in time order
    times = [float(line.split()[0]) for line in lines[1:-2]]
    assert times == sorted(times)
    bidirectional = ds2.DeepSpeech2(ds2.DS2Config())
    ds2.save_checkpoint(tmp_path / "bi.pt", bidirectional)
    command[command.index(str(tmp_path / "checkpoint.pt"))] = str(tmp_path / "bi.pt")
    refused = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert refused.returncode == 2 and "cannot stream" in refused.stderr and "Traceback" not in refused.stderr
