"""Tests for the synthetic speech generator: text, determinism, speed, noise, splits, and the acoustics.

The acoustic tests measure the audio the way the model will see it: a log power spectrogram with 20 ms
Hann windows every 10 ms at 16 kHz (161 bins, 50 Hz apart).
"""

import itertools
import math

import numpy as np
import pytest
import soundfile
import torch

import implementation as synthetic
from implementation import (
    NOISE_KINDS,
    VOCABULARY,
    Speaker,
    add_noise,
    make_speaker_pool,
    make_split,
    make_splits,
    random_sentence,
    random_speaker,
    shared_sentences,
    synthesize_speech,
    synthesize_speech_with_alignment,
    write_wav,
)

SAMPLE_RATE = 16000
HOP = 160  # 10 ms
LETTERS = "abcdefghijklmnopqrstuvwxyz"
AVERAGE_SPEAKER = Speaker(pitch_hz=130.0, tract_scale=1.0, rate=1.0, gain_db=0.0)


def log_power_spectrogram(waveform: torch.Tensor) -> np.ndarray:
    """The model's view: 20 ms Hann windows, 10 ms stride, log power in dB, shape `(161, frames)`.

    Frame t is centred on sample t * HOP, as in `torch.stft(center=True)`. Clamped 80 dB below the
    utterance's maximum, so near-silence does not dominate a mean. numpy, not torch: a test that calls it
    thousands of times on short clips must not depend on torch's thread pool.
    """
    padded = np.pad(waveform.double().numpy(), 160)
    frames = np.lib.stride_tricks.sliding_window_view(padded, 320)[::HOP]  # (frames, 320)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(320) / 320)
    decibels = 10.0 * np.log10(np.abs(np.fft.rfft(frames * hann, axis=1)) ** 2 + 1e-12).T  # (161, frames)
    return np.maximum(decibels, decibels.max() - 80.0)


def frames_in(span: tuple[int, int], num_frames: int) -> np.ndarray:
    """Frames whose centre lies inside a `(start, end)` span of samples."""
    centres = np.arange(num_frames) * HOP
    return np.flatnonzero((centres >= span[0]) & (centres < span[1]))


# ----------------------------------------------------------------------------------------------------------
# Text
# ----------------------------------------------------------------------------------------------------------


def test_vocabulary_is_large_and_speakable():
    assert len(VOCABULARY) >= 200
    assert len(set(VOCABULARY)) == len(VOCABULARY), "duplicate words"
    for word in VOCABULARY:
        assert word and set(word) <= set(LETTERS + "'"), word
    assert {"don't", "it's", "all", "see", "will", "good", "little"} <= set(VOCABULARY)
    assert set("".join(VOCABULARY)) >= set(LETTERS), "every letter should occur in some word"


def test_sentences_have_2_to_8_words_and_use_the_whole_vocabulary():
    rng = np.random.default_rng(0)
    sentences = [random_sentence(rng) for _ in range(20000)]
    lengths = [len(sentence.split(" ")) for sentence in sentences]
    assert min(lengths) == 2 and max(lengths) == 8
    used = {word for sentence in sentences for word in sentence.split(" ")}
    assert used <= set(VOCABULARY)
    assert used == set(VOCABULARY), f"words the grammar never says: {set(VOCABULARY) - used}"


def test_word_order_is_predictable():
    """A bigram model must beat a unigram model clearly, or a language model could not help the decoder."""
    rng = np.random.default_rng(1)
    train = [["<s>", *random_sentence(rng).split(), "</s>"] for _ in range(20000)]
    test = [["<s>", *random_sentence(rng).split(), "</s>"] for _ in range(2000)]
    unigrams: dict[str, int] = {}
    bigrams: dict[tuple[str, str], int] = {}
    for words in train:
        for first, second in itertools.pairwise(words):
            unigrams[second] = unigrams.get(second, 0) + 1
            bigrams[first, second] = bigrams.get((first, second), 0) + 1
    context_counts: dict[str, int] = {}
    for (first, _), count in bigrams.items():
        context_counts[first] = context_counts.get(first, 0) + count
    total = sum(unigrams.values())
    vocabulary_size = len(unigrams) + 1
    unigram_bits = bigram_bits = 0.0
    for words in test:
        for first, second in itertools.pairwise(words):
            unigram = (unigrams.get(second, 0) + 1) / (total + vocabulary_size)
            bigram = (bigrams.get((first, second), 0) + unigram * 10) / (context_counts.get(first, 0) + 10)
            unigram_bits -= math.log2(unigram)
            bigram_bits -= math.log2(bigram)
    assert bigram_bits < 0.75 * unigram_bits  # the bigram model needs at most 3/4 of the bits


# ----------------------------------------------------------------------------------------------------------
# Synthesis: contract, determinism, speed, durations
# ----------------------------------------------------------------------------------------------------------


def test_waveform_contract_and_alignment():
    text = "don't see all"
    waveform, spans = synthesize_speech_with_alignment(
        text, random_speaker(np.random.default_rng(2)), np.random.default_rng(3)
    )
    assert waveform.dtype == torch.float32 and waveform.dim() == 1
    assert float(waveform.abs().max()) <= 1.0
    assert len(spans) == len(text)
    ends = [0] + [end for _, end in spans]
    for (start, end), previous_end in zip(spans, ends, strict=False):
        assert previous_end <= start < end <= len(waveform)


def test_same_seed_gives_identical_audio_and_another_seed_different_audio():
    speaker = random_speaker(np.random.default_rng(4))
    first = synthesize_speech("the little dog sees all", speaker, np.random.default_rng(5))
    again = synthesize_speech("the little dog sees all", speaker, np.random.default_rng(5))
    other = synthesize_speech("the little dog sees all", speaker, np.random.default_rng(6))
    assert torch.equal(first, again)
    assert not (len(first) == len(other) and torch.equal(first, other))

    pool = make_speaker_pool(5, seed=7)
    split, split_again = (make_split("x", 4, pool, seed=8, noise_kinds=NOISE_KINDS) for _ in range(2))
    assert split.texts == split_again.texts and split.noise == split_again.noise
    assert all(torch.equal(a, b) for a, b in zip(split.waveforms, split_again.waveforms, strict=True))


def test_utterance_does_not_depend_on_split_size():
    pool = make_speaker_pool(5, seed=9)
    small, large = make_split("x", 2, pool, seed=10), make_split("x", 4, pool, seed=10)
    assert small.texts == large.texts[:2]
    assert torch.equal(small.waveforms[1], large.waveforms[1])


def test_utterances_mostly_last_1_to_4_seconds():
    split = make_split("durations", 200, make_speaker_pool(50, seed=12), seed=13)
    durations = split.durations_s()
    assert np.mean((durations >= 1.0) & (durations <= 4.0)) >= 0.85
    assert 1.5 <= np.median(durations) <= 3.0
    assert durations.max() < 6.5


def test_invalid_characters_raise_and_are_named():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"'!'.*'H'|'H'.*'!'"):
        synthesize_speech("Hello!", AVERAGE_SPEAKER, rng)
    with pytest.raises(ValueError, match="no letters"):
        synthesize_speech("  ", AVERAGE_SPEAKER, rng)
    with pytest.raises(ValueError, match="sample_rate"):
        synthesize_speech("hello", AVERAGE_SPEAKER, rng, sample_rate=8000)


def test_gain_scales_loudness_in_decibels():
    quiet = synthesize_speech("good morning", dataclass_with(gain_db=-10.0), np.random.default_rng(14))
    normal = synthesize_speech("good morning", dataclass_with(gain_db=0.0), np.random.default_rng(14))
    ratio_db = 20.0 * math.log10(float(normal.pow(2).mean().sqrt() / quiet.pow(2).mean().sqrt()))
    assert ratio_db == pytest.approx(10.0, abs=1e-3)


def dataclass_with(**changes) -> Speaker:
    return Speaker(**{**AVERAGE_SPEAKER.__dict__, **changes})


def test_pitch_follows_the_speaker():
    """The autocorrelation peak of a long vowel sits at the speaker's pitch period (within the contour)."""
    for pitch_hz in (90.0, 180.0):
        speaker = dataclass_with(pitch_hz=pitch_hz, rate=0.75)
        waveform, spans = synthesize_speech_with_alignment("a", speaker, np.random.default_rng(15))
        start, end = spans[0]
        middle = waveform[start + (end - start) // 4 : end - (end - start) // 4].double().numpy()
        correlation = np.correlate(middle, middle, mode="full")[len(middle) - 1 :]
        shortest, longest = SAMPLE_RATE // 400, SAMPLE_RATE // 60  # search 60-400 Hz
        period = shortest + int(np.argmax(correlation[shortest:longest]))
        assert SAMPLE_RATE / period == pytest.approx(pitch_hz, rel=0.15)


# ----------------------------------------------------------------------------------------------------------
# Acoustics: letters are separable, repeats are audible, neighbours matter
# ----------------------------------------------------------------------------------------------------------


def letter_features(waveform: torch.Tensor, span: tuple[int, int]) -> np.ndarray:
    """Mean log spectrum over each third of a letter's frames, concatenated; level removed."""
    spectrogram = log_power_spectrogram(waveform)
    frames = frames_in(span, spectrogram.shape[1])
    features = np.concatenate([spectrogram[:, part].mean(axis=1) for part in np.array_split(frames, 3)])
    return features - features.mean()  # the speaker's loudness is not a letter's identity


def test_letters_are_separable_across_unseen_speakers():
    """A nearest-centroid classifier trained on 10 speakers names the letters of 10 others >= 90% right."""
    rng = np.random.default_rng(16)
    speakers = [random_speaker(rng) for _ in range(20)]
    features = np.zeros((len(speakers), len(LETTERS), 3 * 161))
    for row, speaker in enumerate(speakers):
        for column, letter in enumerate(LETTERS):
            waveform, spans = synthesize_speech_with_alignment(letter, speaker, rng)
            features[row, column] = letter_features(waveform, spans[0])
    correct = np.zeros(len(LETTERS))  # per letter, over the unseen speakers of both folds
    for known, unseen in ((slice(0, 10), slice(10, 20)), (slice(10, 20), slice(0, 10))):
        centroids = features[known].mean(axis=0)  # (letters, features)
        distances = ((features[unseen][:, :, None, :] - centroids[None, None]) ** 2).sum(axis=-1)
        correct += (distances.argmin(axis=-1) == np.arange(len(LETTERS))).sum(axis=0)
    recall = correct / len(speakers)
    assert recall.mean() >= 0.9, f"letter accuracy {recall.mean():.1%}"
    worst = recall.argmin()  # two letters that sound alike would each be right only about half the time
    assert recall[worst] >= 0.7, f"{LETTERS[worst]!r} is recognised only {recall[worst]:.0%} of the time"


def test_repeated_letters_are_separated_by_a_dip():
    waveform, spans = synthesize_speech_with_alignment("all", AVERAGE_SPEAKER, np.random.default_rng(17))
    (_, first_end), (second_start, _) = spans[1], spans[2]
    assert second_start > first_end, "a gap should separate the two l's"
    frame = SAMPLE_RATE // 200  # 5 ms
    power = waveform[: len(waveform) // frame * frame].reshape(-1, frame).pow(2).mean(dim=1)
    dip = float(power[first_end // frame : second_start // frame].min())
    letters = float(
        torch.cat(
            [
                power[spans[1][0] // frame : first_end // frame],
                power[second_start // frame : spans[2][1] // frame],
            ]
        ).median()
    )
    assert 10.0 * math.log10(letters / dip) >= 10.0

    _, single_spans = synthesize_speech_with_alignment("al", AVERAGE_SPEAKER, np.random.default_rng(17))
    assert single_spans[1][0] == single_spans[0][1], "different letters follow without a gap"


def test_a_vowel_sounds_different_at_its_edges_in_different_contexts():
    """Coarticulation: the 'a' of "bab" and "dad" differs near its edges much more than at its centre."""
    spectra = {}
    for word in ("bab", "dad"):
        waveform, spans = synthesize_speech_with_alignment(word, AVERAGE_SPEAKER, np.random.default_rng(18))
        spectrogram = log_power_spectrogram(waveform)
        spectra[word] = (spectrogram, frames_in(spans[1], spectrogram.shape[1]))
    (bab, frames), (dad, frames_dad) = spectra["bab"], spectra["dad"]
    assert np.array_equal(frames, frames_dad)  # same seed, same durations: only the context differs
    speech_bins = slice(4, 80)  # 200-4000 Hz, where the formants are

    def difference_db(frame_indices):
        return np.abs(bab[speech_bins, frame_indices] - dad[speech_bins, frame_indices]).mean()

    edges = np.concatenate([frames[:2], frames[-2:]])
    centre = frames[len(frames) // 2 - 1 : len(frames) // 2 + 1]
    assert difference_db(edges) > 2.0  # formants still gliding from or to the consonant's locus
    assert difference_db(centre) < 0.5  # at the target: the same vowel


def test_constant_filter_passes_the_signal_unchanged():
    """The frame-wise vocal tract filter, given a flat response, must be the identity (overlap-add oracle)."""
    signal = np.random.default_rng(19).standard_normal((2, 5000))
    window = 256
    for hop in (window // 2, window // 4):
        frames = len(synthetic._filter_frame_centres(signal.shape[1], hop, window))
        output = synthetic._filter_by_frames(signal, np.ones((frames, window + 1)), hop, window)
        np.testing.assert_allclose(output, signal, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# Noise and splits
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", NOISE_KINDS)
@pytest.mark.parametrize("snr_db", [0.0, 10.0, 25.0])
def test_add_noise_achieves_the_requested_snr(kind, snr_db):
    rng = np.random.default_rng(20)
    clean = synthesize_speech("where is my little cat", random_speaker(rng), rng)
    noisy = add_noise(clean, snr_db, kind, rng)
    assert noisy.dtype == torch.float32 and noisy.shape == clean.shape
    noise = noisy.double() - clean.double()
    achieved = 10.0 * math.log10(float(clean.double().pow(2).mean() / noise.pow(2).mean()))
    assert achieved == pytest.approx(snr_db, abs=0.1)


def test_add_noise_rejects_unknown_kinds():
    with pytest.raises(ValueError, match="babble"):
        add_noise(torch.ones(100), 10.0, "brown", np.random.default_rng(0))


def test_pink_noise_falls_3_db_per_octave():
    rng = np.random.default_rng(21)
    noise = synthetic.make_noise(2**16, "pink", rng)
    power = np.abs(np.fft.rfft(noise)) ** 2
    frequencies = np.fft.rfftfreq(2**16, 1.0 / SAMPLE_RATE)

    def band_density(low):
        return power[(frequencies >= low) & (frequencies < 2 * low)].mean()

    assert 10.0 * math.log10(band_density(500) / band_density(1000)) == pytest.approx(3.0, abs=0.5)


def test_splits_have_disjoint_speakers_and_the_right_noise():
    splits = make_splits(train_size=12, dev_size=9, seed=22, train_noise_fraction=0.5)
    assert list(splits) == ["train", "dev-clean", "dev-noisy"]
    speakers = {name: set(split.speakers) for name, split in splits.items()}
    pools = {
        name: set(make_speaker_pool(size, (22, index)))
        for index, (name, size) in enumerate((("train", 200), ("dev-clean", 40), ("dev-noisy", 40)))
    }
    for name in splits:
        assert speakers[name] <= pools[name]
    assert not pools["train"] & pools["dev-clean"]
    assert not pools["train"] & pools["dev-noisy"]
    assert not pools["dev-clean"] & pools["dev-noisy"]

    assert set(splits["dev-clean"].noise) == {"clean"}
    assert set(splits["dev-noisy"].noise) <= set(NOISE_KINDS)
    assert all(snr == 10.0 for snr in splits["dev-noisy"].snr_db)
    train = splits["train"]
    noisy = [snr for kind, snr in zip(train.noise, train.snr_db, strict=True) if kind != "clean"]
    assert 0 < len(noisy) < len(train)
    assert all(5.0 <= snr <= 30.0 for snr in noisy)
    for split in splits.values():
        assert len(split) == len(split.waveforms) == len(split.speakers)


def test_dev_noisy_draws_every_noise_kind():
    pool = make_speaker_pool(5, seed=23)
    split = make_split("dev-noisy", 24, pool, seed=24, noise_kinds=NOISE_KINDS, snr_db=10.0)
    assert set(split.noise) == set(NOISE_KINDS)


def test_shared_sentences_reports_overlap():
    pool = make_speaker_pool(3, seed=25)
    train, dev = make_split("train", 3, pool, seed=26), make_split("dev", 2, pool, seed=27)
    dev.texts[1] = train.texts[2]
    assert shared_sentences(train, dev) >= {train.texts[2]}
    assert shared_sentences(train, dev) <= set(train.texts)


def test_write_wav_round_trips_within_16_bit_precision(tmp_path):
    waveform = synthesize_speech("thank you", AVERAGE_SPEAKER, np.random.default_rng(28))
    path = tmp_path / "thank_you.wav"
    write_wav(path, waveform)
    samples, sample_rate = soundfile.read(path, dtype="float32")
    assert sample_rate == SAMPLE_RATE and soundfile.info(path).subtype == "PCM_16"
    np.testing.assert_allclose(samples, waveform.numpy(), atol=1.0 / 32768)


def test_babble_bank_is_the_same_for_any_number_of_workers_and_talks_long_enough():
    one = synthetic.make_babble_bank((30, 1), talkers=4, seconds=1.5, workers=1)
    two = synthetic.make_babble_bank((30, 1), talkers=4, seconds=1.5, workers=2)
    assert len(one) == 4 and all(np.array_equal(a, b) for a, b in zip(one, two, strict=True))
    assert all(len(talker) >= 1.5 * SAMPLE_RATE for talker in one)
    other = synthetic.make_babble_bank((30, 2), talkers=4, seconds=1.5)
    assert not any(np.array_equal(a[:1000], b[:1000]) for a, b in zip(one, other, strict=True))


def test_split_with_a_babble_bank_is_the_same_for_any_number_of_workers():
    pool = make_speaker_pool(5, seed=31)
    splits = [
        make_split("b", 8, pool, seed=32, noise_kinds=("babble",), babble_talkers=6, workers=workers)
        for workers in (1, 2)
    ]
    assert set(splits[0].noise) == {"babble"}
    for a, b in zip(splits[0].waveforms, splits[1].waveforms, strict=True):
        assert torch.equal(a, b)
    fresh = make_split("b", 8, pool, seed=32, noise_kinds=("babble",))  # new voices: other babble
    assert not torch.equal(fresh.waveforms[0], splits[0].waveforms[0])


@pytest.mark.parametrize("snr_db", [0.0, 10.0])
def test_babble_from_a_bank_achieves_the_snr_and_mixes_different_talkers(snr_db):
    rng = np.random.default_rng(33)
    clean = synthesize_speech("where is my little cat", random_speaker(rng), rng)
    bank = synthetic.make_babble_bank((33, 0), talkers=6, seconds=1.0)  # shorter than the utterance: looped
    noisy = add_noise(clean, snr_db, "babble", rng, babble_bank=bank)
    noise = noisy.double() - clean.double()
    achieved = 10.0 * math.log10(float(clean.double().pow(2).mean() / noise.pow(2).mean()))
    assert achieved == pytest.approx(snr_db, abs=0.1)
    # One talker in the bank: the babble is that talker (looped), joined at a random point, at unit level.
    one = synthetic.make_noise(len(clean), "babble", np.random.default_rng(1), babble_bank=bank[:1])
    assert np.sqrt(np.mean(one**2)) == pytest.approx(1.0)
    n = len(clean)
    looped = np.tile(bank[0], -(-n // len(bank[0])) + 1).astype(np.float64)
    energy = np.concatenate([[0.0], np.cumsum(looped**2)])
    rms = np.sqrt((energy[n:] - energy[:-n]) / n)  # of every length-n window of the looped talker
    starts = np.flatnonzero(np.isclose(looped[: len(rms)] / rms, one[0]))
    assert any(np.allclose(one, looped[s : s + n] / rms[s]) for s in starts)


def test_babble_bank_size_grows_with_the_split_between_6_and_64_voices():
    assert synthetic.babble_bank_size(2000 * 0.5 / 3) == synthetic.BABBLE_TALKERS == 64
    assert synthetic.babble_bank_size(100) == 20
    assert synthetic.babble_bank_size(0.8) == 6


def test_a_bank_holds_different_voices_and_a_mixture_never_repeats_one():
    bank = synthetic.make_babble_bank((34, 0), talkers=3, seconds=0.5)
    assert not np.array_equal(bank[0][:4000], bank[1][:4000]) and not np.array_equal(
        bank[1][:4000], bank[2][:4000]
    )
    # A bank of pure tones (talker k: 100 (k + 1) Hz, a whole number of cycles in any 1 s window): each talker
    # of a mixture shows as one spectral line of the same height; a talker drawn twice would add two lines
    # with different phases, a different height.
    n = SAMPLE_RATE
    tones = [
        np.sqrt(2) * np.sin(2 * np.pi * 100 * (k + 1) * np.arange(2 * n) / SAMPLE_RATE) for k in range(6)
    ]
    for seed in range(20):
        babble = synthetic.make_noise(n, "babble", np.random.default_rng(seed), babble_bank=tones)
        lines = np.abs(np.fft.rfft(babble))[[100 * (k + 1) for k in range(6)]] / (n / np.sqrt(2))
        heard = lines[lines > 0.5]
        assert 3 <= len(heard) <= 6 and np.allclose(heard, 1.0, atol=1e-6), (seed, lines)
