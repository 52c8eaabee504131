"""Tests for the Mandarin corpus (corpora.py section 4, issue 22): the grammar, pinyin, speakers, splits.

Names used: random_mandarin_sentence, MANDARIN_VOCABULARY, mandarin_characters, MANDARIN_HOMOPHONES,
MANDARIN_MAX_CHARACTERS, mandarin_pinyin, check_mandarin_speakable, MANDARIN_VOICE, MANDARIN_TRAIN_VARIANTS,
MANDARIN_DEV_VARIANTS, MANDARIN_RATE_WPM, MANDARIN_PITCH_RANGE, make_mandarin_speaker_pool, make_mandarin_splits,
EspeakSpeaker, espeak_speak, ESPEAK_SAMPLE_RATE; from implementation: NOISE_KINDS, SAMPLE_RATE.

The grammar tests need nothing but numpy; the pinyin tests are skipped without pypinyin, and every test
that speaks without espeakng-loader. The whole file takes a few seconds.
"""

import ast
import collections
from pathlib import Path

import numpy as np
import pytest
import torch

import corpora
import implementation as ds2


def _espeak_installed() -> bool:
    try:
        corpora.check_espeak_available()
    except ImportError:
        return False
    return True


needs_espeak = pytest.mark.skipif(
    not _espeak_installed(), reason=f"espeak-ng is not installed: {corpora.ESPEAK_INSTALL_HINT}"
)


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    """30,000 segmented sentences (half a second): enough to draw every word of the grammar."""
    rng = np.random.default_rng(2024)
    return [corpora.random_mandarin_sentence(rng, segmented=True) for _ in range(30_000)]


# --- the grammar -------------------------------------------------------------------------------------------


def _draw(seed: int, segmented: bool = False) -> list[str]:
    rng = np.random.default_rng(seed)
    return [corpora.random_mandarin_sentence(rng, segmented=segmented) for _ in range(50)]


def test_the_same_seed_gives_the_same_sentences_and_segmenting_changes_only_the_spaces():
    assert _draw(7) == _draw(7)
    assert _draw(7) != _draw(8)
    assert [sentence.replace(" ", "") for sentence in _draw(7, segmented=True)] == _draw(7)


def test_sentences_are_characters_of_the_grammar_only(sentences):
    characters = set(corpora.mandarin_characters())
    for sentence in sentences[:2000]:
        text = sentence.replace(" ", "")
        assert set(text) <= characters, f"{text!r} has characters outside mandarin_characters()"
        assert 2 <= len(text) <= corpora.MANDARIN_MAX_CHARACTERS
    unsegmented = corpora.random_mandarin_sentence(np.random.default_rng(0))
    assert " " not in unsegmented and unsegmented.isalpha()  # no spaces, no punctuation


def test_at_least_300_distinct_characters_and_every_word_is_reachable(sentences):
    assert len(corpora.mandarin_characters()) >= 300
    assert list(corpora.mandarin_characters()) == sorted(set(corpora.mandarin_characters()))
    drawn = collections.Counter(word for sentence in sentences for word in sentence.split())
    vocabulary = set(corpora.MANDARIN_VOCABULARY)
    assert set(drawn) - vocabulary == set(), "the grammar drew words missing from MANDARIN_VOCABULARY"
    assert vocabulary - set(drawn) == set(), "MANDARIN_VOCABULARY has words the grammar never draws"
    assert {c for word in vocabulary for c in word} == set(corpora.mandarin_characters())


def test_the_homophones_are_in_the_grammar(sentences):
    drawn = {character for sentence in sentences for character in sentence}
    groups = {group[0]: set(group) for group in corpora.MANDARIN_HOMOPHONES}
    assert (
        {"他", "她", "它"} == groups["他"]
        and {"在", "再"} == groups["在"]
        and {"的", "得", "地"} == groups["的"]
    )
    for group in corpora.MANDARIN_HOMOPHONES:
        assert set(group) <= drawn, f"the grammar never draws some of {group}"


# --- pinyin ------------------------------------------------------------------------------------------------


def test_pinyin_of_known_sentences():
    pytest.importorskip("pypinyin")
    assert corpora.mandarin_pinyin("他们去学校") == "tā men qù xué xiào"
    assert corpora.mandarin_pinyin("他们 去 学校") == "tā men qù xué xiào"  # segmented: the same
    # The grammar's particles and measure words, which pypinyin alone reads otherwise (dé, dì, zhǐ, mā mā):
    assert corpora.mandarin_pinyin("她跑得很快") == "tā pǎo de hěn kuài"
    assert corpora.mandarin_pinyin("孩子们高兴地唱歌") == "hái zi men gāo xìng de chàng gē"
    assert corpora.mandarin_pinyin("我妈妈养了一只猫") == "wǒ mā ma yǎng le yī zhī māo"


def test_homophones_have_one_pinyin():
    pytest.importorskip("pypinyin")
    for group in corpora.MANDARIN_HOMOPHONES:
        assert len({corpora.mandarin_pinyin(character) for character in group}) == 1, group


def test_pinyin_has_a_syllable_per_character_segmented_or_not(sentences):
    pytest.importorskip("pypinyin")
    for sentence in sentences[:500]:
        text = sentence.replace(" ", "")
        pinyin = corpora.mandarin_pinyin(sentence)
        assert len(pinyin.split()) == len(text), (sentence, pinyin)
        assert corpora.mandarin_pinyin(text) == pinyin, "the longest-match segmentation changed a reading"


def test_pinyin_corrections_name_words_of_the_grammar():
    assert set(corpora._PINYIN_CORRECTIONS) <= set(corpora.MANDARIN_VOCABULARY)
    assert all(len(reading.split()) == len(word) for word, reading in corpora._PINYIN_CORRECTIONS.items())


def test_importing_corpora_does_not_need_pypinyin():
    tree = ast.parse(Path(corpora.__file__).read_text())
    top_level = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
    names = {alias.name for node in top_level for alias in node.names} | {
        node.module for node in top_level if isinstance(node, ast.ImportFrom)
    }
    assert "pypinyin" not in names


# --- speakers and speech -------------------------------------------------------------------------------------


def test_speaker_pools_are_mandarin_with_tones_kept_audible():
    assert not set(corpora.MANDARIN_TRAIN_VARIANTS) & set(corpora.MANDARIN_DEV_VARIANTS)
    for variants in (corpora.MANDARIN_TRAIN_VARIANTS, corpora.MANDARIN_DEV_VARIANTS):
        pool = corpora.make_mandarin_speaker_pool(50, seed=(0, 1), variants=variants)
        assert {speaker.voice for speaker in pool} == {corpora.MANDARIN_VOICE}
        assert {speaker.variant for speaker in pool} <= set(variants)
        low, high = corpora.MANDARIN_PITCH_RANGE
        assert all(low <= speaker.pitch_range <= high for speaker in pool)
        low, high = corpora.MANDARIN_RATE_WPM
        assert all(low <= speaker.rate_wpm <= high for speaker in pool)


def test_overlapping_variants_are_refused():
    with pytest.raises(ValueError, match="share \\['f3'\\]"):
        corpora.make_mandarin_splits(2, 2, train_variants=("m1", "f3"), dev_variants=("f3",))


def test_the_mandarin_voice_refuses_characters_outside_the_grammar():
    speaker = corpora.EspeakSpeaker(corpora.MANDARIN_VOICE, "", 200, 50, 80, 0.0)
    with pytest.raises(ValueError, match="熊"):  # espeak-ng's dictionary lacks it: it would speak English
        corpora.espeak_speak("熊猫", speaker)
    with pytest.raises(ValueError, match="without spaces"):
        corpora.espeak_speak("他们 去", speaker)
    with pytest.raises(ValueError, match="characters"):  # and the English voices still refuse Chinese
        corpora.espeak_speak("他们", corpora.EspeakSpeaker("en-us", "", 175, 50, 50, 0.0))


@needs_espeak
def test_every_variant_speaks_mandarin():
    for variant in corpora.MANDARIN_TRAIN_VARIANTS + corpora.MANDARIN_DEV_VARIANTS:
        audio = corpora.espeak_speak(
            "你好", corpora.EspeakSpeaker(corpora.MANDARIN_VOICE, variant, 200, 50, 80, 0.0)
        )
        assert audio.dtype == np.float32 and 0.3 < len(audio) / corpora.ESPEAK_SAMPLE_RATE < 1.5


@needs_espeak
def test_characters_are_spoken_as_syllables_not_spelt_out():
    # One syllable per character: the audio grows with the characters, 0.15-0.4 s each (an unknown
    # character would be spelt out as a code point or a name, seconds long).
    speaker = corpora.EspeakSpeaker(corpora.MANDARIN_VOICE, "", 200, 50, 80, 0.0)
    seconds = {
        text: len(corpora.espeak_speak(text, speaker)) / corpora.ESPEAK_SAMPLE_RATE
        for text in ("你好", "他们去学校", "我们今天在公园散步", "她明天要去商店买衣服我们一起去吧")
    }
    for text, duration in seconds.items():
        assert 0.15 <= duration / len(text) <= 0.4, (text, duration)
    assert seconds["她明天要去商店买衣服我们一起去吧"] > 2.5 * seconds["他们去学校"]


# --- the splits ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def splits():
    if not _espeak_installed():
        pytest.skip(f"espeak-ng is not installed: {corpora.ESPEAK_INSTALL_HINT}")
    return corpora.make_mandarin_splits(4, 2, seed=0, train_noise_fraction=1.0)


def test_tiny_splits_are_deterministic(splits):
    again = corpora.make_mandarin_splits(4, 2, seed=0, train_noise_fraction=1.0)
    for name, split in splits.items():
        assert split.texts == again[name].texts and split.speakers == again[name].speakers
        assert split.noise == again[name].noise and split.snr_db == again[name].snr_db
        assert all(torch.equal(a, b) for a, b in zip(split.waveforms, again[name].waveforms, strict=True))
    other = corpora.make_mandarin_splits(4, 2, seed=1)
    assert other["train"].texts != splits["train"].texts


def test_dev_variants_are_never_heard_in_training(splits):
    assert {speaker.variant for speaker in splits["train"].speakers} <= set(corpora.MANDARIN_TRAIN_VARIANTS)
    for name in ("dev-clean", "dev-noisy"):
        assert {speaker.variant for speaker in splits[name].speakers} <= set(corpora.MANDARIN_DEV_VARIANTS)
    assert all(
        speaker.voice == corpora.MANDARIN_VOICE for split in splits.values() for speaker in split.speakers
    )


def test_texts_are_sentences_of_the_grammar(splits):
    characters = set(corpora.mandarin_characters())
    for split in splits.values():
        assert all(text and set(text) <= characters for text in split.texts)


def test_waveforms_are_finite_float32_at_16_khz(splits):
    for split in splits.values():
        assert split.sample_rate == ds2.SAMPLE_RATE == 16000
        for waveform, text in zip(split.waveforms, split.texts, strict=True):
            assert waveform.dtype == torch.float32 and waveform.dim() == 1 and torch.isfinite(waveform).all()
            assert 0.15 <= len(waveform) / split.sample_rate / len(text) <= 0.8  # with edge silence


def test_noise_is_recorded_like_the_english_corpus(splits):
    assert set(splits["dev-clean"].noise) == {"clean"} and set(splits["dev-clean"].snr_db) == {float("inf")}
    assert set(splits["dev-noisy"].noise) <= set(ds2.NOISE_KINDS) and set(splits["dev-noisy"].snr_db) == {
        10.0
    }
    assert set(splits["train"].noise) <= set(ds2.NOISE_KINDS)  # train_noise_fraction=1.0: all noisy
    assert all(5.0 <= snr <= 30.0 for snr in splits["train"].snr_db)


@needs_espeak
def test_workers_do_not_change_the_splits():
    one = corpora.make_mandarin_splits(4, 4, seed=3, train_noise_fraction=0.5, workers=1)
    two = corpora.make_mandarin_splits(4, 4, seed=3, train_noise_fraction=0.5, workers=2)
    for name in one:
        assert one[name].texts == two[name].texts and one[name].noise == two[name].noise
        assert all(torch.equal(a, b) for a, b in zip(one[name].waveforms, two[name].waveforms, strict=True))
