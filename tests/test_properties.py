"""Property tests (hypothesis): invariants that must hold for every input, not just the ones we thought of."""

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import implementation as ds2

SPEAKABLE = "abcdefghijklmnopqrstuvwxyz '"
texts = st.text(alphabet=SPEAKABLE, min_size=1, max_size=40).filter(lambda t: t.strip())
FAST = settings(max_examples=60, deadline=None)


@FAST
@given(texts)
def test_encode_decode_round_trip(text):
    ids = ds2.encode_text(text)
    assert ds2.decode_labels(ids) == ds2.normalize_text(text)
    assert ids.min() > ds2.BLANK and ids.max() < ds2.NUM_CLASSES


@FAST
@given(st.text(min_size=1, max_size=20))
def test_encode_text_either_succeeds_or_names_what_it_refused(text):
    try:
        ids = ds2.encode_text(text)
    except ValueError as error:
        message = str(error)
        bad = {c for c in ds2.normalize_text(text) if c not in SPEAKABLE}
        assert "empty" in message or all(repr(c) in message for c in bad)
    else:
        assert len(ids) == len(ds2.normalize_text(text))


@FAST
@given(st.integers(320, 16000), st.sampled_from([8000, 16000, 22050]))
def test_spectrogram_shape_for_any_length(samples, sample_rate):
    window = round(sample_rate * 0.02)
    if samples < window:
        return
    spec = ds2.log_spectrogram(torch.randn(samples), sample_rate)
    assert spec.shape == (window // 2 + 1, ds2.num_frames(samples, sample_rate))
    assert torch.isfinite(spec).all()


@FAST
@given(st.lists(st.integers(1, 300), min_size=1, max_size=6), st.integers(1, 3))
def test_output_lengths_bookkeeping(lengths, layers):
    front = ds2.ConvFrontEnd(161, [1] * layers).eval()
    lengths = torch.tensor(lengths)
    with torch.no_grad():
        features, out_lengths = front(torch.randn(len(lengths), 161, int(lengths.max())), lengths)
    assert out_lengths.tolist() == front.output_lengths(lengths).tolist()
    assert features.shape[1] == int(out_lengths.max())
    assert (out_lengths >= 1).all() and (out_lengths <= lengths).all()


words = st.lists(st.sampled_from(["a", "b", "c", "ab"]), max_size=7)


@FAST
@given(words, words, words)
def test_edit_distance_is_a_metric(x, y, z):
    d = ds2.edit_distance
    assert d(x, y) == d(y, x)
    assert (d(x, y) == 0) == (x == y)
    assert d(x, z) <= d(x, y) + d(y, z)
    assert abs(len(x) - len(y)) <= d(x, y) <= max(len(x), len(y))


log_prob_tables = st.integers(1, 7).flatmap(
    lambda frames: st.lists(
        st.lists(st.floats(-4, 4, allow_nan=False), min_size=4, max_size=4), min_size=frames, max_size=frames
    )
)
SYMBOLS = [ds2.BLANK, ds2.ALPHABET.index("a"), ds2.ALPHABET.index("b"), ds2.ALPHABET.index("l")]


def _four_symbol_log_probs(table):
    """(T, 29) log-probs where only blank, a, b, l have probability."""
    logits = torch.full((len(table), ds2.NUM_CLASSES), -1e4, dtype=torch.float64)
    logits[:, SYMBOLS] = torch.tensor(table, dtype=torch.float64)
    return logits.log_softmax(-1)


def _exact_ctc_log_prob(log_probs, text):
    """log p(text | x) by the forward algorithm (ctc_loss_from_scratch), or -inf if impossible."""
    target = ds2.encode_text(text)[None]
    frames = torch.tensor([log_probs.shape[0]])
    if ds2.ctc_min_frames(target, torch.tensor([target.shape[1]])) > frames:
        return -math.inf
    return -ds2.ctc_loss_from_scratch(log_probs[None], target, frames, torch.tensor([target.shape[1]])).item()


@FAST
@given(log_prob_tables)
def test_greedy_output_is_the_collapse_of_the_argmax_path(table):
    log_probs = _four_symbol_log_probs(table)
    path = log_probs.argmax(-1).tolist()
    collapsed = [k for i, k in enumerate(path) if (i == 0 or k != path[i - 1]) and k != ds2.BLANK]
    assert ds2.greedy_decode(log_probs) == [ds2.decode_labels(collapsed)]


@settings(max_examples=40, deadline=None)
@given(log_prob_tables, st.integers(1, 4))
def test_beam_probability_never_exceeds_the_exact_one_and_equals_it_when_nothing_is_pruned(table, beam):
    log_probs = _four_symbol_log_probs(table)
    for hypothesis in ds2.prefix_beam_search_nbest(log_probs, beam_width=beam, prune_log_prob=-100):
        if hypothesis.text:
            assert hypothesis.ctc_log_prob <= _exact_ctc_log_prob(log_probs, hypothesis.text) + 1e-9
    for hypothesis in ds2.prefix_beam_search_nbest(log_probs, beam_width=4**7, prune_log_prob=-100):
        if hypothesis.text:
            exact = _exact_ctc_log_prob(log_probs, hypothesis.text)
            assert math.isclose(hypothesis.ctc_log_prob, exact, rel_tol=1e-9, abs_tol=1e-9)
