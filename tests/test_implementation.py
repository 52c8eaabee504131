"""Unit tests for implementation.py sections 1-10, each against a trusted oracle where one exists.

Oracles: torchaudio's Spectrogram, nn.BatchNorm1d, F.ctc_loss, brute-force enumeration of CTC alignments,
jiwer, and explicit step-by-step versions of the fused computations.
"""

import math
import os
import random
import time

import jiwer
import numpy as np
import pytest
import torch
import torchaudio
from torch import nn

import implementation as ds2

# ---------------------------------------------------------------------------------------------------------
# 1. Text
# ---------------------------------------------------------------------------------------------------------


def test_alphabet_has_29_symbols_with_blank_first():
    assert len(ds2.ALPHABET) == 29 and ds2.BLANK == 0
    assert ds2.ALPHABET[1] == " " and ds2.ALPHABET[2] == "'"
    assert "".join(ds2.ALPHABET[3:]) == "abcdefghijklmnopqrstuvwxyz"


def test_encode_decode_round_trip_and_normalisation():
    ids = ds2.encode_text("Don't  STOP")
    assert ds2.BLANK not in ids.tolist()
    assert ds2.decode_labels(ids) == "don't stop"


@pytest.mark.parametrize("text, bad", [("room 101", "'0', '1'"), ("café", "'é'"), ("hi!", "'!'")])
def test_encode_text_names_characters_outside_the_alphabet(text, bad):
    with pytest.raises(ValueError, match="outside the alphabet") as error:
        ds2.encode_text(text)
    assert bad in str(error.value)


def test_encode_text_refuses_empty_transcripts():
    with pytest.raises(ValueError, match="empty"):
        ds2.encode_text("   ")


# ---------------------------------------------------------------------------------------------------------
# 2. Spectrogram
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sample_rate", [16000, 8000])
def test_log_spectrogram_equals_torchaudio(sample_rate):
    torch.manual_seed(0)
    waveform = torch.randn(3, sample_rate // 2 + 37)
    ours = ds2.log_spectrogram(waveform, sample_rate)
    window = sample_rate // 50  # 20 ms
    oracle = torchaudio.transforms.Spectrogram(n_fft=window, hop_length=window // 2, center=False, power=2.0)(
        waveform
    )
    torch.testing.assert_close(ours, torch.log(oracle + 1e-10), rtol=1e-4, atol=1e-4)
    assert ours.shape[-2] == window // 2 + 1
    assert ours.shape[-1] == ds2.num_frames(waveform.shape[-1], sample_rate)


def test_normalize_spectrogram_uses_valid_frames_only():
    torch.manual_seed(0)
    spec = torch.randn(2, 161, 50) * 3 + 1
    lengths = torch.tensor([50, 20])
    garbage = spec.clone()
    garbage[1, :, 20:] = 1e6
    out = ds2.normalize_spectrogram(spec, lengths, floor_db=None)
    out_garbage = ds2.normalize_spectrogram(garbage, lengths, floor_db=None)
    torch.testing.assert_close(out, out_garbage)
    valid = out[1, :, :20]
    assert abs(valid.mean().item()) < 1e-5 and abs(valid.std(unbiased=False).item() - 1) < 1e-3
    assert (out[1, :, 20:] == 0).all()
    # Alone, the short utterance normalises the same way.
    torch.testing.assert_close(ds2.normalize_spectrogram(spec[1, :, :20], floor_db=None), valid)


def test_spectrogram_floor_clamps_relative_to_peak():
    spec = torch.log(torch.tensor([[1e-12, 1.0, 100.0]]))  # 140 dB range
    floor = ds2.normalize_spectrogram(spec, floor_db=50.0)
    # With a 50 dB floor the quietest bin is clamped to 50 dB below the peak (100 -> 1e-3).
    raw = torch.maximum(spec, torch.log(torch.tensor(100.0 * 1e-5)))
    expected = (raw - raw.mean()) / (raw.std(unbiased=False) + 1e-5)
    torch.testing.assert_close(floor, expected)


# ---------------------------------------------------------------------------------------------------------
# 3. Convolutional front-end
# ---------------------------------------------------------------------------------------------------------


def test_paper_conv_geometry():
    assert ds2.PAPER_CONV_KERNELS == ((41, 11), (21, 11), (21, 11))
    assert ds2.PAPER_CONV_STRIDES == ((2, 2), (2, 1), (2, 1))


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_conv_output_lengths_match_real_frames_for_1_to_500(layers):
    front = ds2.ConvFrontEnd(num_freq=161, channels=[2] * layers).eval()
    with torch.no_grad():
        for frames in range(1, 501):
            _, out_lengths = front(torch.randn(1, 161, frames), torch.tensor([frames]))
            real = front.layers[0](torch.zeros(1, 1, 161, frames))
            for conv in front.layers[1:]:
                real = conv(real)
            assert real.shape[-1] == out_lengths.item() == front.output_lengths(torch.tensor([frames])).item()


# ---------------------------------------------------------------------------------------------------------
# 4. Sequence-wise BatchNorm
# ---------------------------------------------------------------------------------------------------------


def test_sequence_wise_batchnorm_equals_batchnorm1d_on_valid_frames():
    torch.manual_seed(0)
    ours, oracle = ds2.SequenceWiseBatchNorm(6), nn.BatchNorm1d(6)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 2)
        ours.bias.normal_()
    oracle.load_state_dict(ours.state_dict())
    lengths = torch.tensor([7, 3, 5])
    for _ in range(3):  # several steps: running estimates must track too
        x = torch.randn(3, 7, 6) * 4 + 2
        x[1, 3:] = 1e4  # padding full of garbage
        mask = ds2.lengths_to_mask(lengths, 7)
        out = ours(x, lengths)
        torch.testing.assert_close(out[mask], oracle(x[mask]))
        assert (out[~mask] == 0).all()
    torch.testing.assert_close(ours.running_mean, oracle.running_mean)
    torch.testing.assert_close(ours.running_var, oracle.running_var)
    ours.eval(), oracle.eval()
    x = torch.randn(3, 7, 6)
    torch.testing.assert_close(ours(x, lengths)[mask], oracle(x[mask]))


MODEL_VARIANTS = {
    "bigru": ds2.DS2Config(conv_channels=(4, 4), rnn_hidden=16),
    "birnn": ds2.DS2Config(conv_channels=(4,), rnn_type="rnn", rnn_hidden=16),
    "uni-lookahead": ds2.DS2Config(
        conv_channels=(4, 4, 4), rnn_hidden=16, bidirectional=False, lookahead_context=3
    ),
    "no-bn": ds2.DS2Config(conv_channels=(4, 4), rnn_hidden=16, batch_norm=False),
}


def _warm_up(model):
    """One training-mode pass so running statistics are not their initial values."""
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 161, 80) * 2 + 1, torch.tensor([80, 60, 50, 30]))


@pytest.mark.parametrize("variant", MODEL_VARIANTS)
def test_eval_output_is_the_same_alone_and_batched_with_a_5x_longer_utterance(variant):
    torch.manual_seed(0)
    model = ds2.DeepSpeech2(MODEL_VARIANTS[variant])
    _warm_up(model)
    model.eval()
    short, long = torch.randn(161, 40), torch.randn(161, 200)
    batch, lengths = ds2.pad_spectrograms([short, long])
    with torch.no_grad():
        alone, alone_len = model(short[None], torch.tensor([40]))
        batched, batched_len = model(batch, lengths)
    assert alone_len.item() == batched_len[0].item()
    torch.testing.assert_close(batched[0, : alone_len.item()], alone[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", MODEL_VARIANTS)
def test_train_mode_output_ignores_what_fills_the_padding(variant):
    torch.manual_seed(0)
    model = ds2.DeepSpeech2(MODEL_VARIANTS[variant]).train()
    batch, lengths = ds2.pad_spectrograms([torch.randn(161, 37), torch.randn(161, 120), torch.randn(161, 90)])
    garbage = batch.clone()
    garbage[0, :, 37:] = torch.randn(161, 83) * 1e3
    garbage[2, :, 90:] = 7.0
    torch.manual_seed(1)
    clean_out, out_lengths = model(batch, lengths)
    torch.manual_seed(1)
    garbage_out, _ = model(garbage, lengths)
    for index, length in enumerate(out_lengths.tolist()):
        torch.testing.assert_close(
            garbage_out[index, :length], clean_out[index, :length], rtol=1e-5, atol=1e-5
        )


def test_model_shapes_and_output_lengths():
    model = ds2.DeepSpeech2()
    spec, lengths = ds2.pad_spectrograms([torch.randn(161, 101), torch.randn(161, 64)])
    log_probs, out_lengths = model(spec, lengths)
    assert log_probs.shape == (2, 51, 29)
    assert out_lengths.tolist() == model.output_lengths(lengths).tolist() == [51, 32]
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(2, 51))


def test_clipped_relu():
    x = torch.tensor([-5.0, 0.0, 3.0, 20.0, 25.0])
    assert ds2.clipped_relu(x).tolist() == [0.0, 0.0, 3.0, 20.0, 20.0]


def test_lookahead_sees_the_future_and_never_the_past():
    conv = ds2.LookaheadConvolution(features=2, context=2)
    x = torch.zeros(1, 10, 2, requires_grad=True)
    out = conv(x, torch.tensor([10]))
    out[0, 4].sum().backward()
    touched = (x.grad[0].abs().sum(-1) > 0).nonzero().flatten().tolist()
    assert touched == [4, 5, 6]


# ---------------------------------------------------------------------------------------------------------
# 7. CTC loss
# ---------------------------------------------------------------------------------------------------------

CTC_CASES = {
    "random": dict(lengths=[30, 25, 18, 9], labels=[10, 7, 5, 2], repeat=False),
    "repeated labels": dict(lengths=[20, 20, 12], labels=[8, 6, 5], repeat=True),
    "tight (T = minimum)": dict(lengths=[5, 3, 7], labels=[5, 3, 4], repeat=False),
    "empty target": dict(lengths=[6, 4], labels=[0, 3], repeat=False),
    "single frame": dict(lengths=[1, 1], labels=[1, 0], repeat=False),
}


def _ctc_case(lengths, labels, repeat, seed=0):
    gen = torch.Generator().manual_seed(seed)
    batch, frames, max_label = len(lengths), max(lengths), max(max(labels), 1)
    logits = torch.randn(batch, frames, 29, generator=gen, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(1, 29, (batch, max_label), generator=gen)
    if repeat:
        targets[:, 1::2] = targets[:, 0::2][:, : targets[:, 1::2].shape[1]]  # "aabbcc..."
    return logits, targets, torch.tensor(lengths), torch.tensor(labels)


@pytest.mark.parametrize("case", CTC_CASES)
def test_ctc_from_scratch_equals_f_ctc_loss_value_and_gradient(case):
    logits, targets, input_lengths, target_lengths = _ctc_case(**CTC_CASES[case])
    ours = ds2.ctc_loss_from_scratch(logits.log_softmax(-1), targets, input_lengths, target_lengths)
    (grad_ours,) = torch.autograd.grad(ours, logits)
    oracle = ds2.ctc_loss(logits.log_softmax(-1), targets, input_lengths, target_lengths)
    (grad_oracle,) = torch.autograd.grad(oracle, logits)
    # Gradients are compared with respect to the logits: F.ctc_loss's gradient for log_probs assumes
    # they come from a log_softmax (it returns exp(lp) - gamma), which is only right after that step.
    torch.testing.assert_close(ours, oracle, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(grad_ours, grad_oracle, rtol=1e-7, atol=1e-9)


def test_ctc_from_scratch_gradient_is_exact_for_log_probs():
    logits, targets, input_lengths, target_lengths = _ctc_case([6, 5], [3, 2], repeat=True)
    log_probs = logits.detach().log_softmax(-1).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda lp: ds2.ctc_loss_from_scratch(lp, targets, input_lengths, target_lengths), (log_probs,)
    )


def test_ctc_accepts_concatenated_targets():
    logits, targets, input_lengths, target_lengths = _ctc_case([12, 10], [4, 3], repeat=False)
    flat = torch.cat([targets[0, :4], targets[1, :3]])
    padded = ds2.ctc_loss_from_scratch(logits.log_softmax(-1), targets, input_lengths, target_lengths)
    concatenated = ds2.ctc_loss_from_scratch(logits.log_softmax(-1), flat, input_lengths, target_lengths)
    torch.testing.assert_close(padded, concatenated)


@pytest.mark.parametrize("loss", [ds2.ctc_loss, ds2.ctc_loss_from_scratch])
def test_ctc_reports_utterances_too_short_for_their_transcript(loss):
    log_probs = torch.randn(2, 4, 29).log_softmax(-1)
    targets = torch.tensor([[3, 3, 3], [4, 5, 6]])  # "aaa" needs 5 frames, 4 given
    with pytest.raises(ValueError, match="#0: 4 frames < 5 needed"):
        loss(log_probs, targets, torch.tensor([4, 4]), torch.tensor([3, 3]))


# ---------------------------------------------------------------------------------------------------------
# 8. Decoders
# ---------------------------------------------------------------------------------------------------------


def _sparse_log_probs(probs: list[dict[str, float]]) -> torch.Tensor:
    """(T, 29) log-probs from per-frame {symbol: probability}; "_" is the blank; others get ~0."""
    out = torch.full((len(probs), 29), -1e4)
    for t, frame in enumerate(probs):
        for symbol, p in frame.items():
            index = ds2.BLANK if symbol == "_" else ds2.ALPHABET.index(symbol)
            out[t, index] = math.log(p)
    return out


def test_greedy_decode_collapses_then_drops_blanks():
    log_probs = _sparse_log_probs(
        [
            {"h": 0.9, "_": 0.1},
            {"h": 0.9, "_": 0.1},
            {"_": 0.9, "i": 0.1},
            {"i": 0.9, "_": 0.1},
            {"i": 0.8, "_": 0.2},
        ]
    )
    assert ds2.greedy_decode(log_probs) == ["hi"]
    batch = torch.stack([log_probs, log_probs])
    assert ds2.greedy_decode(batch, torch.tensor([5, 1])) == ["hi", "h"]


@pytest.mark.parametrize("seed", range(6))
def test_wide_prefix_beam_search_finds_the_exact_most_probable_labeling(seed, exact_labeling_probs):
    rng = random.Random(seed)
    symbols = ["_", "a", "b"]
    frames = [dict(zip(symbols, _random_simplex(rng, 3), strict=True)) for _ in range(6)]
    log_probs = _sparse_log_probs(frames)
    ids = [ds2.BLANK, ds2.ALPHABET.index("a"), ds2.ALPHABET.index("b")]
    exact = exact_labeling_probs(log_probs, ids)
    best_text = max(exact, key=exact.get)
    hypotheses = ds2.prefix_beam_search_nbest(log_probs, beam_width=1000, prune_log_prob=-100)
    assert hypotheses[0].text == best_text
    # Nothing was pruned, so the reported CTC probability is the exact one, for every labeling found.
    for hypothesis in hypotheses:
        assert math.isclose(math.exp(hypothesis.ctc_log_prob), exact[hypothesis.text], rel_tol=1e-6)
    assert ds2.prefix_beam_search(log_probs, beam_width=1000, prune_log_prob=-100) == best_text


def _random_simplex(rng, n):
    values = [rng.random() + 0.05 for _ in range(n)]
    return [v / sum(values) for v in values]


def test_beam_search_can_output_doubled_letters():
    # Frames: l, blank, l -> "ll" (a blank separates the two l's). p("ll") = 0.648 > p("l") = 0.352.
    # A "beam search" that merges prefixes by max over characters alone could never emit "ll".
    log_probs = _sparse_log_probs([{"l": 0.9, "_": 0.1}, {"_": 0.8, "l": 0.2}, {"l": 0.9, "_": 0.1}])
    assert ds2.prefix_beam_search(log_probs, beam_width=8) == "ll"
    # And where repeating without a blank dominates, it collapses to one "l".
    log_probs = _sparse_log_probs([{"l": 0.9, "_": 0.1}, {"l": 0.9, "_": 0.1}, {"l": 0.9, "_": 0.1}])
    assert ds2.prefix_beam_search(log_probs, beam_width=8) == "l"


def test_beam_search_handles_spaces_that_last_several_frames():
    # "a", two frames of space, "b": the repeated space collapses to one (regression: it used to be dropped).
    frames = [{"a": 1.0}, {" ": 1.0}, {" ": 1.0}, {"b": 1.0}]
    best = ds2.prefix_beam_search_nbest(_sparse_log_probs(frames), beam_width=8)[0]
    assert best.text == "a b" and best.ctc_log_prob == pytest.approx(0.0, abs=1e-6)
    # Leading and trailing spaces read as nothing; " " + blank + " " is still one space.
    frames = [{" ": 1.0}, {"a": 1.0}, {" ": 1.0}, {"_": 1.0}, {" ": 1.0}, {"b": 1.0}, {" ": 1.0}]
    best = ds2.prefix_beam_search_nbest(_sparse_log_probs(frames), beam_width=8)[0]
    assert best.text == "a b" and best.ctc_log_prob == pytest.approx(0.0, abs=1e-6)


def test_nbest_texts_are_distinct_and_probabilities_sum_to_at_most_one():
    torch.manual_seed(0)
    log_probs = torch.randn(12, 29).mul(3).log_softmax(-1)
    hypotheses = ds2.prefix_beam_search_nbest(log_probs, beam_width=64)
    texts = [h.text for h in hypotheses]
    assert len(texts) == len(set(texts))
    assert sum(math.exp(h.ctc_log_prob) for h in hypotheses) <= 1.0 + 1e-9


def _cat_or_cot():
    """Acoustics slightly prefer "a cot"; an LM trained on cats prefers "a cat"."""
    frames = [{"a": 0.95, "_": 0.05}, {" ": 0.95, "_": 0.05}, {"c": 0.95, "_": 0.05}]
    frames += [{"o": 0.55, "a": 0.45}, {"t": 0.95, "_": 0.05}]
    lm = ds2.NGramLM.train(["a cat", "a cat sat", "the cat", "a dog", "a cap"] * 3, order=2)
    return _sparse_log_probs(frames), lm


def test_language_model_flips_the_answer_when_weighted():
    log_probs, lm = _cat_or_cot()
    assert ds2.prefix_beam_search(log_probs, beam_width=16) == "a cot"
    assert ds2.prefix_beam_search(log_probs, beam_width=16, lm=lm, alpha=1.0) == "a cat"


def test_language_model_with_alpha_zero_changes_nothing():
    log_probs, lm = _cat_or_cot()
    for seed in range(3):
        torch.manual_seed(seed)
        noisy = (log_probs + torch.randn_like(log_probs)).log_softmax(-1)
        without = ds2.prefix_beam_search_nbest(noisy, beam_width=8)
        with_lm = ds2.prefix_beam_search_nbest(noisy, beam_width=8, lm=lm, alpha=0.0)
        assert [h.text for h in without] == [h.text for h in with_lm]


# ---------------------------------------------------------------------------------------------------------
# 9. Language model
# ---------------------------------------------------------------------------------------------------------

CORPUS = [
    "the cat sat on the mat",
    "the dog sat on the log",
    "a cat saw a dog",
    "the dog saw the cat",
    "a big dog sat",
    "the small cat ran",
    "don't stop the cat",
]


@pytest.fixture(scope="module", params=[1, 2, 3])
def language_model(request):
    return ds2.NGramLM.train(CORPUS, order=request.param)


def _contexts(lm):
    contexts = [()] + [c for c in lm.backoffs if len(c) < lm.order]
    contexts += [("<s>",), ("zebra",), ("the", "zebra"), ("<s>", "the"), ("cat", "ran"), ("mat", "the")]
    return contexts


def test_conditional_probabilities_sum_to_one_for_every_context(language_model):
    lm = language_model
    words = [w for w in lm.vocabulary if w != ds2.BOS]
    assert ds2.EOS in words and ds2.UNK in words
    for context in _contexts(lm):
        total = sum(math.exp(lm.log_prob(w, context)) for w in words)
        assert total == pytest.approx(1.0, abs=1e-9), context


def test_seen_continuations_beat_unseen_ones():
    lm = ds2.NGramLM.train(CORPUS, order=3)
    assert lm.log_prob("sat", ["the", "cat"]) > lm.log_prob("log", ["the", "cat"])
    assert lm.score("the cat sat on the mat") > lm.score("mat the on sat cat the")
    assert lm.log_prob("zebra", ["the"]) == lm.log_prob(ds2.UNK, ["the"])


def test_arpa_round_trip(tmp_path, language_model):
    lm = language_model
    path = tmp_path / "lm.arpa"
    lm.to_arpa(path)
    text = path.read_text()
    assert text.startswith("\n\\data\\\nngram 1=") and text.rstrip().endswith("\\end\\")
    loaded = ds2.NGramLM.from_arpa(path)
    assert loaded.order == lm.order
    for context in _contexts(lm):
        for word in lm.vocabulary:
            if word != ds2.BOS:
                assert loaded.log_prob(word, context) == pytest.approx(lm.log_prob(word, context), abs=1e-6)


def test_from_arpa_refuses_a_file_that_is_not_arpa(tmp_path):
    path = tmp_path / "bad.arpa"
    path.write_bytes(b"\x00\xff not an lm")
    with pytest.raises(ValueError, match="not a readable ARPA"):
        ds2.NGramLM.from_arpa(path)


# ---------------------------------------------------------------------------------------------------------
# 10. Metrics
# ---------------------------------------------------------------------------------------------------------


def test_edit_distance_small_cases():
    assert ds2.edit_distance("kitten", "sitting") == 3
    assert ds2.edit_distance("", "abc") == 3
    assert ds2.edit_distance(["a", "b"], ["a", "b"]) == 0


def test_wer_and_cer_equal_jiwer_on_random_strings():
    rng = random.Random(0)
    words = ["the", "cat", "sat", "dog", "on", "a", "mat", "don't"]
    refs = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 8))) for _ in range(50)]
    hyps = []
    for ref in refs:
        hyp = ref.split()
        for _ in range(rng.randint(0, 3)):
            op = rng.choice(["sub", "ins", "del"])
            if op == "sub" and hyp:
                hyp[rng.randrange(len(hyp))] = rng.choice(words)
            elif op == "ins":
                hyp.insert(rng.randint(0, len(hyp)), rng.choice(words))
            elif hyp:
                del hyp[rng.randrange(len(hyp))]
        hyps.append(" ".join(hyp) or "x")
    assert ds2.word_error_rate(refs, hyps) == pytest.approx(jiwer.wer(refs, hyps), abs=1e-12)
    assert ds2.character_error_rate(refs, hyps) == pytest.approx(jiwer.cer(refs, hyps), abs=1e-12)


def test_error_rates_are_corpus_level_not_averages():
    # 1 error in a 1-word ref, 0 in a 9-word ref: corpus WER 1/10, not the mean of 1.0 and 0.0.
    refs = ["cat", "a b c d e f g h i"]
    assert ds2.word_error_rate(refs, ["dog", "a b c d e f g h i"]) == pytest.approx(0.1)


# ---------------------------------------------------------------------------------------------------------
# The model learns: overfit one small batch
# ---------------------------------------------------------------------------------------------------------


def test_model_overfits_one_batch_to_cer_zero_in_seconds():
    torch.manual_seed(0)
    texts = ["hello world", "deep speech", "all good", "see you"]
    specs = [torch.randn(161, 14 * len(t)) for t in texts]  # random "audio": pure memorisation
    spectrograms, lengths = ds2.pad_spectrograms(specs)
    targets = [ds2.encode_text(t) for t in texts]
    target_lengths = torch.tensor([len(t) for t in targets])
    targets = nn.utils.rnn.pad_sequence(targets, batch_first=True)
    model = ds2.DeepSpeech2(ds2.DS2Config(conv_channels=(4,), rnn_layers=1, rnn_hidden=64))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    start = time.perf_counter()
    for step in range(400):
        model.train()
        log_probs, out_lengths = model(spectrograms, lengths)
        loss = ds2.ctc_loss(log_probs, targets, out_lengths, target_lengths)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 25 == 24:
            model.eval()
            with torch.no_grad():
                hyps = ds2.greedy_decode(*model(spectrograms, lengths))
            if ds2.character_error_rate(texts, hyps) == 0.0:
                break
    assert hyps == texts, f"after {step + 1} steps ({time.perf_counter() - start:.1f} s): {hyps}"


# ---------------------------------------------------------------------------------------------------------
# Bad input gets a clear ValueError
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "waveform, sample_rate, message",
    [
        (torch.zeros(0), 16000, "empty"),
        (torch.randn(100), 16000, "too short"),
        (torch.tensor([0.1] * 400 + [float("nan")]), 16000, "NaN or inf"),
        (torch.tensor([0.1] * 400 + [float("inf")]), 16000, "NaN or inf"),
        (torch.randn(2, 16000), 16000, "mono"),
        (torch.randn(8000), 8000, "expects 16000 Hz"),
        (torch.randn(16000), 0, "positive int"),
    ],
    ids=["empty", "too-short", "nan", "inf", "stereo", "wrong-rate", "zero-rate"],
)
def test_bad_audio_raises_a_clear_value_error(waveform, sample_rate, message):
    with pytest.raises(ValueError, match=message):
        ds2.featurize(waveform, sample_rate)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(bidirectional=True, lookahead_context=4), "unidirectional"),
        (dict(conv_channels=()), "1 to 3"),
        (dict(conv_channels=(8, 8, 8, 8)), "1 to 3"),
        (dict(rnn_hidden=0), "rnn_hidden"),
        (dict(rnn_layers=-1), "rnn_layers"),
        (dict(rnn_type="lstm"), "rnn_type"),
    ],
)
def test_impossible_configs_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ds2.DS2Config(**kwargs)


def test_model_refuses_spectrograms_of_the_wrong_size():
    with pytest.raises(ValueError, match=r"\(B, 161, T\)"):
        ds2.DeepSpeech2()(torch.randn(2, 80, 50), torch.tensor([50, 50]))


def test_ctc_loss_refuses_where_f_ctc_loss_would_silently_give_inf():
    """ "ccc" needs 5 frames (a blank between repeats); with 4, F.ctc_loss returns inf, ours says why."""
    log_probs = torch.randn(1, 4, 29).log_softmax(-1)  # (B, T, C)
    with pytest.raises(ValueError, match="too short"):
        ds2.ctc_loss(log_probs, torch.tensor([[3, 3, 3]]), torch.tensor([4]), torch.tensor([3]))
    assert ds2.ctc_loss(log_probs, torch.tensor([[3, 4, 3]]), torch.tensor([4]), torch.tensor([3])).isfinite()


def test_atomic_write_leaves_a_whole_file_with_the_usual_permissions(tmp_path):
    path = tmp_path / "metrics.json"
    ds2.atomic_write_text(path, "old")
    with pytest.raises(RuntimeError):
        ds2.atomic_write(path, lambda temporary: (open(temporary, "w").write("half"), _raise()))
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600


def test_beam_search_in_worker_processes_gives_the_same_results():
    torch.manual_seed(0)
    model = ds2.DeepSpeech2(ds2.DS2Config(conv_channels=(4,), rnn_hidden=16))
    rng = np.random.default_rng(0)
    specs = [torch.randn(161, int(rng.integers(40, 90))) for _ in range(6)]
    texts = ["the cat", "a dog", "hello", "where is it", "yes", "no"]
    lm = ds2.NGramLM.train(texts, order=2)
    one, two = (ds2.evaluate(model, specs, texts, lm, 4, 0.5, 1.0, workers=w) for w in (1, 2))
    assert one["beam_hypotheses"] == two["beam_hypotheses"] and one["beam_cer"] == two["beam_cer"]


def _raise():
    raise RuntimeError("a crash mid-write")
