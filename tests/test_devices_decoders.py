"""Scaling up: flashlight's decoder with a KenLM word LM, device choice, mixed precision, GPU checkpoints.

No GPU is needed: device choice is tested with patched availability, mixed precision with bfloat16 (and
float16 with a GradScaler) autocast on the CPU, and a checkpoint "from a GPU" by tagging its tensors as
CUDA tensors when it is saved.
"""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.serialization

import implementation as ds2
import production_decoder

ROOT = Path(__file__).resolve().parents[1]


# --- synthetic posteriors ------------------------------------------------------------------------------


def peaked(text: str, p: float = 0.9, hold: int = 1) -> torch.Tensor:
    """(T, C) log-probabilities: each label of ``text`` with probability p, for one frame then a blank, or
    (``hold`` > 1) held for ``hold`` frames as a trained model does, a blank only between equal letters."""
    frames = []
    for label in ds2.encode_text(text).tolist():
        if hold == 1 or (frames and frames[-1] == label):
            frames.append(ds2.BLANK)
        frames += [label] * hold
    log_probs = torch.full((len(frames), ds2.NUM_CLASSES), math.log((1 - p) / (ds2.NUM_CLASSES - 1)))
    log_probs[torch.arange(len(frames)), frames] = math.log(p)
    return log_probs


def noisy(text: str, rng: np.random.Generator, confusion: float = 0.25) -> torch.Tensor:
    """(T, C) log-probabilities of a random alignment of ``text``, a quarter of its letters misheard.

    Each label lasts 1-2 frames and is followed by 1-2 blanks; a misheard frame puts its peak on a random
    letter (the true one a close second), so greedy decoding makes spelling errors an LM can repair.
    """
    path = []
    for label in ds2.encode_text(text).tolist():
        path += [label] * int(rng.integers(1, 3)) + [ds2.BLANK] * int(rng.integers(1, 3))
    logits = rng.normal(0.0, 1.0, (len(path), ds2.NUM_CLASSES))
    for t, label in enumerate(path):
        if label != ds2.BLANK and rng.random() < confusion:
            logits[t, int(rng.integers(3, ds2.NUM_CLASSES))] += 4.0
            logits[t, label] += 3.5
        else:
            logits[t, label] += 5.0
    return torch.log_softmax(torch.tensor(logits, dtype=torch.float32), dim=-1)


@pytest.fixture(scope="module")
def lm_and_arpa(tmp_path_factory):
    rng = np.random.default_rng(5)
    lm = ds2.NGramLM.train([ds2.random_sentence(rng) for _ in range(3000)], order=3)
    path = tmp_path_factory.mktemp("lm") / "lm.arpa"
    lm.to_arpa(path)
    return lm, path


@pytest.fixture(scope="module")
def sentences():
    rng = np.random.default_rng(11)
    return [ds2.random_sentence(rng) for _ in range(8)]


# --- flashlight's decoder --------------------------------------------------------------------------------


def test_flashlight_tokens_are_our_alphabet_with_the_space_renamed():
    assert len(production_decoder.FLASHLIGHT_TOKENS) == ds2.NUM_CLASSES
    for index, (ours, theirs) in enumerate(
        zip(ds2.ALPHABET, production_decoder.FLASHLIGHT_TOKENS, strict=True)
    ):
        assert theirs == ("|" if ours == " " else ours), index


def test_arpa_vocabulary_reads_the_unigrams_of_our_arpa_file(lm_and_arpa):
    lm, path = lm_and_arpa
    words = production_decoder.arpa_vocabulary(path)
    assert sorted(words) == sorted(w for w in lm.vocabulary if w not in (ds2.BOS, ds2.EOS, ds2.UNK))
    assert production_decoder.language_model_format(path) == "arpa"


@pytest.mark.parametrize("use_lm", [False, True])
def test_both_decoders_read_peaked_posteriors_of_a_known_text(lm_and_arpa, sentences, use_lm):
    lm, path = lm_and_arpa
    alpha, beta = (0.5, 1.0) if use_lm else (0.0, 0.0)
    flashlight = production_decoder.flashlight_decoder(
        path if use_lm else None, beam_width=16, alpha=alpha, beta=beta
    )
    for text in sentences:
        for p, hold in ((0.9, 1), (0.6, 1), (0.9, 4)):
            log_probs = peaked(text, p, hold)
            assert flashlight(log_probs) == text
            assert ds2.prefix_beam_search(log_probs, 16, lm if use_lm else None, alpha, beta) == text


def test_flashlight_scores_like_our_beam_search_on_our_arpa_file(lm_and_arpa, sentences):
    """The same Q(y) = log p_ctc + alpha ln p_lm + beta words, so KenLM really read our ARPA file."""
    lm, path = lm_and_arpa
    plain = production_decoder.flashlight_decoder(path, beam_width=16, alpha=0.0, beta=0.0)
    with_lm = production_decoder.flashlight_decoder(path, beam_width=16, alpha=0.5, beta=1.0)
    for text in sentences:
        log_probs = peaked(text, 0.9)
        exact = dict(prune_log_prob=-math.inf, max_labels_per_frame=None)  # no pruning: the exact sum
        ours = ds2.prefix_beam_search_nbest(log_probs, 16, lm, 0.5, 1.0, **exact)[0]
        (text_plain, score_plain), (text_lm, score_lm) = plain.best(log_probs), with_lm.best(log_probs)
        assert text_plain == text_lm == ours.text == text
        # alpha and beta map to lm_weight = alpha ln 10 (KenLM scores in log10) and word_score = beta.
        # The CTC parts of the two scores differ a little (measured <= 0.024 nats): the LM reweights the
        # hypotheses that log_add merges. A wrong scale would be off by several nats.
        expected_lm_part = 0.5 * lm.score(text) + len(text.split())
        assert score_lm - score_plain == pytest.approx(expected_lm_part, abs=0.05)
        # The same Q(y) as ours, flashlight's a little higher (measured 0.04-0.1 nats): see implementation.py
        assert 0.0 <= score_lm - ours.score < 0.15


def test_on_noisy_posteriors_flashlight_with_the_lm_repairs_what_greedy_gets_wrong(lm_and_arpa):
    lm, path = lm_and_arpa
    rng = np.random.default_rng(1)
    texts = [ds2.random_sentence(rng) for _ in range(30)]
    posteriors = [noisy(text, rng) for text in texts]
    greedy = [ds2.greedy_decode(lp)[0] for lp in posteriors]
    lexicon_free = production_decoder.flashlight_decoder(None, beam_width=16)
    with_lm = production_decoder.flashlight_decoder(path, beam_width=16, alpha=0.5, beta=1.0)
    ours = [ds2.prefix_beam_search(lp, 16) for lp in posteriors]
    # Without an LM both beam searches find (nearly) the best path: the same as each other and as greedy.
    theirs = [lexicon_free(lp) for lp in posteriors]
    assert abs(ds2.character_error_rate(texts, theirs) - ds2.character_error_rate(texts, ours)) < 0.02
    assert ds2.word_error_rate(texts, greedy) > 0.3  # the test is not trivial
    # With the word LM and its lexicon the misspellings are repaired (measured on 100: WER 0.68 -> 0.002).
    repaired = [with_lm(lp) for lp in posteriors]
    assert ds2.word_error_rate(texts, repaired) < 0.1


def test_flashlight_with_a_binary_lm_needs_words_and_a_lexicon_is_spellable(tmp_path):
    binary = tmp_path / "lm.bin"
    binary.write_bytes(b"mmap lm http://kheafield.com/code format version 5\n\0\0\0")
    assert production_decoder.language_model_format(binary) == "binary"
    with pytest.raises(ValueError, match="binary file, whose words cannot be read"):
        production_decoder.flashlight_decoder(binary)
    # Upper-case LM words (LibriSpeech's) are spelt in lower case; unspellable ones are left out.
    arpa = tmp_path / "upper.arpa"
    ds2.NGramLM.train(["THE CAT SAT", "THE DOG RAN"], order=2).to_arpa(arpa)
    decode = production_decoder.flashlight_decoder(arpa, words=["x-ray", "7up"], beam_width=8, alpha=0.5)
    assert sorted(decode.lexicon.values()) == ["cat", "dog", "ran", "sat", "the"]
    assert decode(peaked("the dog sat")) == "the dog sat"


@pytest.mark.parametrize(
    "content, error, message",
    [
        (None, FileNotFoundError, "no language model at"),
        (b"hello world\n", ValueError, "neither an ARPA language model"),
        (b"\x1f\x8b\x08\x00", ValueError, "gzip: unpack it first"),
        (
            b"\\data\\\nngram 1=2\n\n\\1-grams:\n-1.0\thello\n-1.0\tworld\n",
            ValueError,
            "KenLM could not read",
        ),
    ],
)
def test_a_bad_lm_path_is_one_clear_error(tmp_path, content, error, message):
    path = tmp_path / "lm.arpa"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(error, match=message):
        production_decoder.flashlight_decoder(path)


def test_missing_flashlight_text_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "flashlight.lib.text.decoder", None)  # import now fails
    with pytest.raises(ImportError, match=r"pip install flashlight-text"):
        production_decoder.flashlight_decoder()


def test_evaluate_and_transcribe_take_the_flashlight_decoder(lm_and_arpa):
    _, path = lm_and_arpa
    torch.manual_seed(0)
    model = ds2.DeepSpeech2(ds2.DS2Config(conv_channels=(4,), rnn_layers=1, rnn_hidden=16)).eval()
    rng = np.random.default_rng(0)
    waveform = ds2.synthesize_speech("the cat sat", ds2.random_speaker(rng), rng)
    decode = production_decoder.flashlight_decoder(path, beam_width=4, alpha=0.5, beta=1.0)
    (log_probs,) = ds2.predict(model, [ds2.featurize(waveform)])
    expected = decode(log_probs)
    result = ds2.evaluate(model, [ds2.featurize(waveform)], ["the cat sat"], decoder=decode)
    assert result["beam_hypotheses"] == [expected]
    assert ds2.transcribe(model, waveform, ds2.SAMPLE_RATE, decoder=decode) == expected


# --- devices --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cuda, mps, expected", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")]
)
def test_auto_device_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert ds2.pick_device("auto").type == expected


@pytest.mark.parametrize(
    "name, message",
    [
        ("cuda", "no CUDA GPU is available"),
        ("cuda:0", "no CUDA GPU is available"),
        ("mps", "MPS backend is not available"),
        ("gpu", "unknown device 'gpu'"),
        ("xla", "not supported here"),
    ],
)
def test_an_absent_or_unknown_device_is_a_clear_error(monkeypatch, name, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match=message):
        ds2.pick_device(name)


def test_a_cuda_index_beyond_the_gpus_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert ds2.pick_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="2 CUDA GPU"):
        ds2.pick_device("cuda:2")


def test_amp_dtype_bf16_where_supported_else_fp16_and_mps_refused(monkeypatch):
    assert ds2.amp_dtype("cpu") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert ds2.amp_dtype("cuda") == torch.bfloat16
    assert ds2.grad_scaler("cuda", amp=True) is None  # bf16 needs no loss scaling
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert ds2.amp_dtype("cuda") == torch.float16
    assert ds2.grad_scaler("cpu", amp=False) is None
    with pytest.raises(ValueError, match="not on mps"):
        ds2.amp_dtype("mps")


def tiny_batch(count=6, seed=0):
    rng = np.random.default_rng(seed)
    texts = [ds2.random_sentence(rng) for _ in range(count)]
    waveforms = [ds2.synthesize_speech(text, ds2.random_speaker(rng), rng) for text in texts]
    return [ds2.featurize(w) for w in waveforms], texts


def tiny_model():
    torch.manual_seed(0)
    return ds2.DeepSpeech2(ds2.DS2Config(conv_channels=(4,), rnn_layers=2, rnn_hidden=24))


def test_amp_step_runs_the_model_in_bf16_and_the_ctc_loss_in_float32(monkeypatch):
    spectrograms, texts = tiny_batch()
    batch = ds2.collate(spectrograms, texts)
    reference_model = tiny_model()
    reference = ds2.train_step(reference_model, ds2.make_optimizer(reference_model, ds2.TrainConfig()), batch)
    model = tiny_model()
    seen = {}

    def record_fc(module, args, output):  # a hook that returns nothing leaves the output as it is
        seen["fc"] = output.dtype

    model.fc.register_forward_hook(record_fc)
    real_ctc_loss = ds2.ctc_loss

    def spy(log_probs, *args):
        seen["ctc"] = log_probs.dtype
        return real_ctc_loss(log_probs, *args)

    monkeypatch.setattr(ds2, "ctc_loss", spy)
    before = [p.detach().clone() for p in model.parameters()]
    loss = ds2.train_step(model, ds2.make_optimizer(model, ds2.TrainConfig()), batch, amp=True)
    assert seen == {"fc": torch.bfloat16, "ctc": torch.float32}
    assert math.isfinite(loss) and loss == pytest.approx(reference, rel=0.02)  # bf16: ~3 significant digits
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay float32
    assert all(b.dtype != torch.bfloat16 for b in model.buffers())  # so do BatchNorm's running estimates


def test_float16_amp_scales_the_loss_and_skips_steps_that_overflow(monkeypatch):
    """The float16 path (CUDA GPUs without bf16), run on the CPU: GradScaler skips, then steps."""
    import devices

    for module in (ds2, devices):  # train_step's autocast (implementation) and grad_scaler (devices)
        monkeypatch.setattr(module, "amp_dtype", lambda device: torch.float16)
    spectrograms, texts = tiny_batch()
    batch = ds2.collate(spectrograms, texts)
    model = tiny_model()
    optimizer = ds2.make_optimizer(model, ds2.TrainConfig())
    scaler = ds2.grad_scaler("cpu", amp=True)
    assert isinstance(scaler, torch.amp.GradScaler)
    start = scaler.get_scale()
    losses = [ds2.train_step(model, optimizer, batch, amp=True, scaler=scaler) for _ in range(12)]
    assert all(math.isfinite(loss) for loss in losses)
    assert scaler.get_scale() < start  # the initial 2**16 overflowed float16: lowered, those steps skipped
    assert losses[-1] < losses[0]  # and then the model learned


def test_fit_trains_with_amp_through_the_one_loop():
    spectrograms, texts = tiny_batch(8)
    model = tiny_model()
    config = ds2.TrainConfig(epochs=2, batch_size=4)
    state = ds2.fit(model, (spectrograms, texts), config, log=None, amp=True)
    assert state.step == 4 and all(math.isfinite(r["train_loss"]) for r in state.history)


def save_as_if_on_cuda(path, model):
    """save_checkpoint, with every tensor's storage tagged "cuda:0", as a GPU run writes it."""
    real_location_tag = torch.serialization.location_tag
    torch.serialization.location_tag = lambda storage: "cuda:0"
    try:
        ds2.save_checkpoint(path, model, epoch=3)
    finally:
        torch.serialization.location_tag = real_location_tag


def test_a_checkpoint_saved_on_a_gpu_loads_on_the_cpu(tmp_path):
    model = tiny_model().eval()
    path = tmp_path / "gpu.pt"
    save_as_if_on_cuda(path, model)
    if not torch.cuda.is_available():  # the file really claims CUDA: a plain load fails on this machine
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)
    loaded, state = ds2.load_checkpoint(path)
    assert state["epoch"] == 3
    assert all(t.device.type == "cpu" for t in loaded.state_dict().values())
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


# --- the command line -----------------------------------------------------------------------------------


def run(*args):
    return subprocess.run(
        [sys.executable, str(ROOT / "train_minimal.py"), *args], capture_output=True, text=True, cwd=ROOT
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--device", "cpu", "--amp"], "--amp speeds up CUDA GPUs"),
        (["--lm-path", "no/such/lm.arpa"], "--lm-path no/such/lm.arpa: no such file"),
        (["--decoder", "kenlm"], "invalid choice: 'kenlm'"),
    ],
)
def test_cli_refuses_bad_device_amp_and_decoder_flags_in_one_line(args, message):
    result = run(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


@pytest.mark.skipif(ds2.mps_is_available(), reason="this machine has MPS")
def test_cli_device_mps_without_mps_is_one_line():
    result = run("--device", "mps")
    assert result.returncode == 2 and "MPS backend is not available" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


TINY = [
    "--train-size", "32", "--dev-size", "4", "--batch-size", "16", "--hidden", "16", "--rnn-layers", "1",
    "--conv-channels", "4", "--lm-sentences", "300", "--beam-width", "4", "--seed", "3", "--epochs", "1",
    "--device", "cpu",
]  # fmt: skip


def test_cli_trains_and_decodes_with_flashlight_and_the_runs_own_lm(tmp_path):
    result = run("--out", str(tmp_path), "--decoder", "flashlight", *TINY)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "beam+LM" in result.stdout
    audio = tmp_path / "clip.wav"
    rng = np.random.default_rng(0)
    ds2.write_wav(audio, ds2.synthesize_speech("the cat sat", ds2.random_speaker(rng), rng))
    flags = ["--transcribe", str(audio), "--checkpoint", str(tmp_path / "checkpoint.pt"), "--beam-width", "4"]
    transcribed = run(*flags, "--decoder", "flashlight")
    assert transcribed.returncode == 0, transcribed.stderr[-2000:]
    model, _ = ds2.load_checkpoint(tmp_path / "checkpoint.pt")
    decode = production_decoder.flashlight_decoder(tmp_path / "lm.arpa", beam_width=4, alpha=0.5, beta=1.0)
    expected = ds2.transcribe(model, *ds2.load_audio(audio), decoder=decode)
    assert transcribed.stdout.strip() == expected


def test_cli_bad_lm_file_for_flashlight_is_one_line(tmp_path):
    bad = tmp_path / "lm.txt"
    bad.write_text("not a language model\n")
    result = run("--out", str(tmp_path), "--decoder", "flashlight", "--lm-path", str(bad), *TINY)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "neither an ARPA language model" in lines[0], result.stderr


def test_our_beam_search_refuses_a_binary_lm_naming_the_decoder_that_reads_it(tmp_path):
    binary = tmp_path / "lm.bin"
    binary.write_bytes(b"mmap lm http://kheafield.com/code format version 5\n\0\0\0")
    with pytest.raises(ValueError, match="--decoder flashlight"):
        ds2.NGramLM.from_arpa(binary)
    result = run("--out", str(tmp_path), "--lm-path", str(binary), *TINY)  # --decoder beam (default)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "KenLM binary file" in lines[0], result.stderr
