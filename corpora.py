"""Corpora beyond the letter-phones, and the on-disk cache of synthesised speech.

``implementation.py`` holds the lesson's own synthetic speech (the letter-phones of its section 11). This
module holds the data that takes the same pipeline further:

    1. The cache               synthesised splits kept on disk, keyed by recipe and by a fingerprint of
                               what the synthesiser produces (``cached_splits``, ``synthesis_fingerprint``)
    2. English from espeak-ng  real English spelling spoken by a formant synthesiser (``--data espeak``)
    3. Real corpora            LibriSpeech folders and CSV/JSONL manifests (``--data librispeech|manifest``)
    4. Mandarin                a Mandarin grammar (characters, pinyin) spoken by espeak-ng's "cmn" voice:
                               the data of §3.9 in miniature (``make_mandarin_splits``)
    5. The data of a run       what ``train_minimal.py`` trains on (``training_data``)

It imports ``implementation`` (never the other way round), so the lesson module stays the paper.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import dataclasses
import functools
import hashlib
import json
import locale
import math
import os
import shutil
import tempfile
import threading
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile
import torch
from torch import Tensor

from implementation import (
    _EDGE_SILENCE_MS,
    _ROOM_TONE_DB,
    _TARGET_ACTIVE_RMS,
    SAMPLE_RATE,
    Alphabet,
    DeepSpeech2,
    DS2Config,
    NGramLM,
    Seed,
    Speaker,
    SyntheticSplit,
    TrainConfig,
    _active_rms,
    _pick,
    _seed_words,
    add_noise,
    atomic_write,
    check_speakable,
    check_split_arguments,
    ctc_min_frames,
    edit_alignment,
    encode_text,
    estimate_causal_prior,
    featurize_batch,
    grammar_lm,
    is_silent,
    load_audio,
    make_splits,
    map_in_processes,
    normalize_text,
    num_frames,
    outside_alphabet,
    random_sentence,
    three_splits,
    to_mono,
)

# ----------------------------------------------------------------------------------------------------------
# 1. The cache of synthesised splits
# ----------------------------------------------------------------------------------------------------------
# Every training run, figure and ablation sweep asks for the same few splits, and synthesis is not free
# (babble noise costs the most). So each split is kept on disk, one file per split, named by a hash of its
# *recipe* (the arguments of make_splits that determine it: a dev split does not depend on the training
# set's size) and checked against a *fingerprint of the synthesiser*: a hash of a few utterances it
# synthesises from fixed seeds, through every branch that makes audio (every letter, speakers across the
# voice range, the three-split recipe, every kind of noise, with and without a babble bank). Change what the
# synthesiser produces and every entry is stale; edit a comment or move code and nothing is. The waveforms
# are stored as float32 exactly as they were synthesised, so a run from the cache is bit-identical to one
# without it. Files are written atomically; a truncated, corrupt or stale entry is reported with one
# warning and synthesised again.

SPLIT_CACHE_FORMAT = "deep-speech-2-lesson/split-cache/1"
SPLIT_CACHE_ENV = "DS2_CACHE_DIR"  # moves the cache folder (so does cached_splits(cache_dir=...))


def split_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``cache_dir``, else ``$DS2_CACHE_DIR``, else ``~/.cache/deep-speech-2-lesson``."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get(SPLIT_CACHE_ENV):
        return Path(os.environ[SPLIT_CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "deep-speech-2-lesson"


FINGERPRINT_SEED = 0xF1  # the seed of the utterances that fingerprint a synthesiser
# Every letter, the apostrophe, and doubled letters ("ll", "ee", "oo"): every phone and the dip between twins.
FINGERPRINT_TEXT = "the quick brown fox jumps over the lazy dog isn't it all free and good"


def _digest_splits(digest, splits: Sequence[SyntheticSplit]) -> None:
    for split in splits:
        for waveform, text, noise, snr in zip(
            split.waveforms, split.texts, split.noise, split.snr_db, strict=True
        ):
            digest.update(np.ascontiguousarray(waveform.numpy(), dtype=np.float32).tobytes())
            digest.update(json.dumps([text, noise, snr]).encode())


@functools.cache
def synthesis_fingerprint(synthesiser=None) -> str:
    """sha256 of what the letter-phone synthesiser (implementation.py section 11) *produces*, with numpy's version.

    Hashed: the babble banks' recipe (how many voices, how long each talks: a bank's length only changes
    in whole sentences, which a few utterances may not show); 200 sentences of the grammar; the
    fingerprint text (every letter) spoken by three speakers;
    ``make_splits`` at a tiny size with every training utterance noisy (speaker pools, the three-split
    recipe, a babble bank, dev-noisy); one utterance with each kind of noise. About a third of a second.
    ``synthesiser``: a module with section 11's functions (default: ``implementation``); tests pass an
    edited copy of it.
    """
    if synthesiser is None:
        import implementation as synthesiser
    seed = FINGERPRINT_SEED
    bank = (synthesiser.BABBLE_TALKERS, synthesiser.BABBLE_SECONDS)  # the babble banks' recipe
    digest = hashlib.sha256(f"letter-phones; numpy {np.__version__}; babble banks {bank}".encode())
    rng = np.random.default_rng([seed, 0])
    digest.update("\n".join(synthesiser.random_sentence(rng) for _ in range(200)).encode())
    speakers = synthesiser.make_speaker_pool(3, (seed, 1))
    for index, speaker in enumerate(speakers):
        audio = synthesiser.synthesize_speech(
            FINGERPRINT_TEXT, speaker, np.random.default_rng([seed, 2, index])
        )
        digest.update(audio.numpy().astype(np.float32).tobytes())
    splits = synthesiser.make_splits(
        2, 2, seed, train_noise_fraction=1.0, num_train_speakers=4, num_dev_speakers=4
    )
    _digest_splits(digest, splits.values())
    for index, kind in enumerate(synthesiser.NOISE_KINDS):  # every kind at least once; babble from a bank
        bank = 2 if kind == "babble" else 0
        noisy = synthesiser.make_split(kind, 1, speakers, (seed, 3, index), (kind,), babble_talkers=bank)
        _digest_splits(digest, [noisy])
    return digest.hexdigest()


@functools.cache
def espeak_fingerprint(language: str = "english") -> str:
    """sha256 of what an espeak-ng corpus produces: ``make_espeak_splits(language=...)`` at a tiny size,
    every training utterance noisy, and 200 sentences of its grammar, on top of ``synthesis_fingerprint()``
    (the noise, and English's grammar, are shared), with numpy's, torch's and torchaudio's versions
    (torchaudio resamples). The espeak-ng library's own version is part of the recipe instead (see
    ``cached_splits``)."""
    from importlib.metadata import version

    versions = f"numpy {np.__version__} torch {torch.__version__} torchaudio {version('torchaudio')}"
    tag = "espeak-ng" if language == "english" else f"espeak-ng {language}"  # English's key as it was
    digest = hashlib.sha256(f"{tag}; {versions}; {synthesis_fingerprint()}".encode())
    if language != "english":  # English's grammar is in synthesis_fingerprint() already
        rng = np.random.default_rng([FINGERPRINT_SEED, 0])
        digest.update("\n".join(_espeak_language(language)[1](rng) for _ in range(200)).encode())
    splits = make_espeak_splits(
        2, 2, FINGERPRINT_SEED, 1.0, num_train_speakers=3, num_dev_speakers=3, language=language
    )
    _digest_splits(digest, splits.values())
    return digest.hexdigest()


def _split_recipes(
    train_size, dev_size, seed, train_noise_fraction, train_snr_db, num_train_speakers, num_dev_speakers, rate
) -> dict[str, dict]:
    """Each split's recipe: exactly the make_splits arguments its audio depends on (not ``workers``)."""
    train = {
        "num_utterances": train_size,
        "noise_fraction": float(train_noise_fraction),
        "snr_db": [float(x) for x in train_snr_db],
        "num_speakers": num_train_speakers,
    }
    dev = {"num_utterances": dev_size, "num_speakers": num_dev_speakers}
    recipes = {"train": train, "dev-clean": dict(dev), "dev-noisy": dict(dev)}
    return {
        name: {"split": name, "seed": seed, "sample_rate": rate, **recipe} for name, recipe in recipes.items()
    }


def _split_checksum(samples: Tensor, offsets: Tensor, metadata: list) -> str:

    digest = hashlib.sha256(samples.numpy().tobytes())
    digest.update(offsets.numpy().tobytes())
    digest.update(json.dumps(metadata).encode())
    return digest.hexdigest()


def _speaker_values(speaker: Speaker | EspeakSpeaker) -> list:
    """A speaker as plain data (str, int, float) for the cache; ``type(speaker)(*values)`` rebuilds it."""
    if isinstance(speaker, Speaker):
        return [float(getattr(speaker, f.name)) for f in dataclasses.fields(Speaker)]
    values = dataclasses.astuple(speaker)
    return [
        v if isinstance(v, str) else int(v) if isinstance(v, (int, np.integer)) else float(v) for v in values
    ]


def _save_split(path: Path, split: SyntheticSplit, recipe: str, code: str | None = None) -> None:
    """One file per split: the waveforms as one float32 tensor plus offsets, and plain-data metadata.

    ``code`` is the fingerprint of the synthesiser that made the audio (default: ``synthesis_fingerprint()``).
    """
    lengths = [len(waveform) for waveform in split.waveforms]
    offsets = torch.tensor([0, *np.cumsum(lengths, dtype=np.int64)], dtype=torch.int64)  # (N + 1,)
    samples = torch.cat(split.waveforms) if split.waveforms else torch.zeros(0)  # (total samples,)
    speakers = [_speaker_values(speaker) for speaker in split.speakers]
    metadata = [split.name, split.sample_rate, split.texts, split.noise, split.snr_db, speakers]
    payload = {
        "format": SPLIT_CACHE_FORMAT,
        "recipe": recipe,
        "code": code or synthesis_fingerprint(),
        "samples": samples.float().contiguous(),
        "offsets": offsets,
        "metadata": metadata,
        "checksum": _split_checksum(samples.float().contiguous(), offsets, metadata),
    }
    atomic_write(path, lambda temporary: torch.save(payload, temporary))


def _load_split(
    path: Path, recipe: str, code: str | None = None, speaker_type: type = Speaker
) -> tuple[SyntheticSplit | None, str]:
    """``(split, "")`` from a valid entry, else ``(None, why it cannot be used)``.

    ``code``: the fingerprint the entry must have been written with (default: ``synthesis_fingerprint()``);
    ``speaker_type``: ``Speaker`` (letter-phones) or ``EspeakSpeaker``.
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, garbage, a pickled object: all mean "make it again"
        return None, f"corrupt (unreadable: {type(error).__name__})"
    if not isinstance(payload, dict) or payload.get("format") != SPLIT_CACHE_FORMAT:
        return None, "corrupt (not a split-cache entry of this lesson)"
    if payload.get("recipe") != recipe:
        return None, "stale (written for another recipe)"
    if payload.get("code") != (code or synthesis_fingerprint()):
        return None, "stale (its synthesiser produced other audio, or other library versions)"
    try:
        samples, offsets, metadata = payload["samples"], payload["offsets"], payload["metadata"]
        if _split_checksum(samples, offsets, metadata) != payload["checksum"]:
            return None, "corrupt (checksum mismatch)"
        name, sample_rate, texts, noise, snr_db, speakers = metadata
        split = SyntheticSplit(
            waveforms=[samples[offsets[i] : offsets[i + 1]] for i in range(len(texts))],
            texts=list(texts),
            speakers=[speaker_type(*values) for values in speakers],
            name=name,
            noise=list(noise),
            snr_db=[float(x) for x in snr_db],
            sample_rate=int(sample_rate),
        )
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as error:
        return None, f"corrupt ({type(error).__name__}: {error})"
    return split, ""


CORPORA = ("letters", "espeak", "mandarin")  # the synthetic corpora cached_splits makes


def cached_splits(
    train_size: int,
    dev_size: int,
    seed: int = 0,
    train_noise_fraction: float = 0.0,
    workers: int = 1,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    train_snr_db: tuple[float, float] = (5.0, 30.0),
    num_train_speakers: int = 200,
    num_dev_speakers: int = 40,
    sample_rate: int = SAMPLE_RATE,
    log: Callable[[str], None] | None = None,
    corpus: str = "letters",
) -> dict[str, SyntheticSplit]:
    """``make_splits`` through an on-disk cache: the same three splits, synthesised once per recipe.

    The arguments are ``make_splits``'s (``workers`` only changes the speed), plus: ``cache_dir`` (default
    ``split_cache_dir()``: ``$DS2_CACHE_DIR`` or ``~/.cache/deep-speech-2-lesson``), ``use_cache=False`` to
    synthesise without reading or writing the cache, and ``log`` to receive one line per split saying
    where it came from. Utterance ``i`` of a split depends only on the split's recipe and ``i``, so the
    training set and the dev sets are cached (and made) separately: a dev split is shared by runs with
    different training sets. A corrupt or stale entry gives one ``warnings.warn`` line and is remade.

    ``corpus="espeak"`` does the same for ``make_espeak_splits`` (section 2, its default voices), and
    ``corpus="mandarin"`` for ``make_mandarin_splits`` (section 4): the key then also holds the language,
    the voices and the espeak-ng library's version, and the fingerprint is ``espeak_fingerprint(language)``.

    Returns:
        {"train": ..., "dev-clean": ..., "dev-noisy": ...}, equal to ``make_splits``'s result (or
        ``make_espeak_splits``'s).
    """
    if corpus not in CORPORA:
        raise ValueError(f"corpus must be one of {CORPORA}, got {corpus!r}")
    language = {"espeak": "english", "mandarin": "mandarin"}.get(corpus)
    make = make_splits if language is None else functools.partial(make_espeak_splits, language=language)
    arguments = dict(
        seed=seed,
        train_noise_fraction=train_noise_fraction,
        train_snr_db=train_snr_db,
        num_train_speakers=num_train_speakers,
        num_dev_speakers=num_dev_speakers,
        sample_rate=sample_rate,
        workers=workers,
    )
    if not use_cache:
        return make(train_size, dev_size, **arguments)
    folder = split_cache_dir(cache_dir)
    recipes = _split_recipes(
        train_size,
        dev_size,
        seed,
        train_noise_fraction,
        train_snr_db,
        num_train_speakers,
        num_dev_speakers,
        sample_rate,
    )
    code, speaker_type, prefix = None, Speaker, ""  # None: synthesis_fingerprint()
    if language is not None:  # the recipe also names the voices and the library that speaks them
        fingerprint = espeak_fingerprint() if language == "english" else espeak_fingerprint(language)
        code, speaker_type, prefix = fingerprint, EspeakSpeaker, f"{corpus}-"
        _, _, train_voices, dev_voices = _espeak_language(language)
        voices = {"train": train_voices, "dev-clean": dev_voices, "dev-noisy": dev_voices}
        for name, recipe in recipes.items():
            recipe |= {"corpus": corpus, "voices": list(voices[name]), "espeak": espeak_version()}
    splits: dict[str, SyntheticSplit] = {}
    paths, keys = {}, {}
    for name, recipe in recipes.items():
        keys[name] = json.dumps(recipe, sort_keys=True)
        digest = hashlib.sha256(keys[name].encode()).hexdigest()[:16]
        paths[name] = folder / f"{prefix}{name}-{recipe['num_utterances']}utt-seed{seed}-{digest}.pt"
        if not paths[name].exists():
            continue
        split, problem = _load_split(paths[name], keys[name], code, speaker_type)
        if split is None:
            warnings.warn(f"split cache: {paths[name]} is {problem}; synthesising it again", stacklevel=2)
        else:
            splits[name] = split
            if log is not None:
                log(f"{name}: {len(split)} utterances from the cache ({paths[name]})")
    missing = [name for name in recipes if name not in splits]
    groups = [("train",), ("dev-clean", "dev-noisy")]  # make_splits(n, 0) and make_splits(0, n)
    for group in (group for group in groups if set(group) & set(missing)):
        began = time.perf_counter()
        sizes = (train_size, 0) if group == ("train",) else (0, dev_size)
        made = make(*sizes, **arguments)
        for name in group:
            if name in missing:
                splits[name] = made[name]
                _save_split(paths[name], made[name], keys[name], code)
                if log is not None:
                    log(
                        f"{name}: {len(made[name])} utterances synthesised in "
                        f"{time.perf_counter() - began:.1f} s, cached at {paths[name]}"
                    )
    return {name: splits[name] for name in recipes}


# ----------------------------------------------------------------------------------------------------------
# 2. English from espeak-ng: a second synthetic corpus (``--data espeak``)
# ----------------------------------------------------------------------------------------------------------
# The letter-phone corpus above spells phonetically: every letter has one sound, so the recogniser's job
# is phonetics. Real English is not spelt as it sounds ("one", "laugh", "friend"; "by" and "buy", "your"
# and "you're" sound the same), so a recogniser must learn English orthography from sound, and the word
# language model (§3.8) earns its keep. espeak-ng, a formant synthesiser, speaks real English in many
# accents, much faster than real time; the PyPI package ``espeakng-loader`` ships its shared library and
# data, so no system package is needed. We call the C library through ``ctypes``.
#
# The corpus: the lesson's grammar and vocabulary (`random_sentence`), spoken by English accents
# (espeak-ng "voices") x voice variants (male, female, Klatt-synthesiser voices) with speaking rate,
# pitch, intonation range and loudness drawn per speaker; resampled from espeak-ng's 22,050 Hz to 16 kHz
# with torchaudio; the same noise as the letter-phones. The dev splits use *accents that never occur in
# training* (Scottish and Lancastrian English), so they measure generalisation to new accents.
#
# Determinism. espeak-ng keeps state between utterances in C globals (pitch-flutter position, automatic
# gain, noise generator, ...) that neither espeak_Terminate nor a new espeak_Initialize resets; measured:
# the same sentence spoken twice in a row differs, even in length. So each utterance is spoken by a
# freshly loaded copy of the library (dlopen, initialise, speak, terminate, dlclose): about 9 ms of CPU
# for a 1.3 s sentence here, half of it loading the English dictionary, x140 faster than real time. Then an utterance depends only on its own seed,
# whatever was spoken before it and in whichever process, so a split is the same for any number of
# workers. Because the library's state lives in the process, use worker processes, never threads.
#
# Licence: espeak-ng is GPL-3.0-or-later. This module does not ship, copy into the repository or link
# against it: it loads the shared library that the user installed from PyPI, at run time, on request.

ESPEAK_REQUIREMENT = "espeakng-loader==0.2.4"
ESPEAK_INSTALL_HINT = f"python -m pip install {ESPEAK_REQUIREMENT} (it ships libespeak-ng and its data)"
ESPEAK_SAMPLE_RATE = 22_050  # espeak-ng's native output rate, in Hz (checked when the library starts)

# Accents, as espeak-ng voice names (the file names under espeak-ng-data/lang/gmw). Train and dev are
# disjoint: dev-clean and dev-noisy are spoken only in accents the model never hears in training.
ESPEAK_TRAIN_VOICES: tuple[str, ...] = (
    "en",  # Great Britain ("en-gb" is not a voice name in espeak-ng 1.52)
    "en-us",  # America
    "en-us-nyc",  # New York City
    "en-gb-x-rp",  # Received Pronunciation
    "en-gb-x-gbcwmd",  # West Midlands
    "en-029",  # Caribbean
)
ESPEAK_DEV_VOICES: tuple[str, ...] = (
    "en-gb-scotland",  # Scotland
    "en-gb-x-gbclan",  # Lancaster
)
# Voice variants (espeak-ng-data/voices/!v): "" keeps the accent's own voice; m1-m7 and f1-f5 change
# pitch range, formant frequencies and voice quality; klatt and klatt2 use espeak-ng's Klatt synthesiser,
# a different source and filter. The novelty voices (robots, whisper, croak) are left out.
ESPEAK_VARIANTS: tuple[str, ...] = (
    "", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
)  # fmt: skip
ESPEAK_RATE_WPM = (130, 230)  # speaking rate, words per minute (espeak-ng's default is 175)
ESPEAK_PITCH = (25, 75)  # espeak-ng's base pitch, 0-100; 50 keeps the voice's own
ESPEAK_PITCH_RANGE = (25, 85)  # how far the pitch moves in intonation, 0-100 (0 = monotone; default 50)

# The C API (espeak-ng's speak_lib.h): the constants we use.
_AUDIO_OUTPUT_SYNCHRONOUS = 2  # espeak_Synth returns when the audio is done, delivered to our callback
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_ESPEAK_RATE, _ESPEAK_PITCH, _ESPEAK_RANGE = 1, 3, 4  # espeak_PARAMETER
_EE_OK = 0
# int callback(short *samples, int num_samples, espeak_EVENT *events): return 0 to continue.
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)
_INT, _UINT, _POINTER = ctypes.c_int, ctypes.c_uint, ctypes.c_void_p
_SIGNATURES = {  # name: (argument types, result type)
    "espeak_Initialize": ((_INT, _INT, ctypes.c_char_p, _INT), _INT),  # (output, buffer ms, data, options)
    "espeak_SetSynthCallback": ((_SYNTH_CALLBACK,), None),
    "espeak_SetVoiceByName": ((ctypes.c_char_p,), _INT),
    "espeak_SetParameter": ((_INT, _INT, _INT), _INT),  # (parameter, value, relative)
    "espeak_ng_SetRandSeed": ((ctypes.c_long,), _INT),
    # (text, size, position, position type, end position, flags, unique identifier, user data)
    "espeak_Synth": ((_POINTER, ctypes.c_size_t, _UINT, _INT, _UINT, _UINT, _POINTER, _POINTER), _INT),
    "espeak_Synchronize": ((), _INT),
    "espeak_Terminate": ((), _INT),
    "espeak_Info": ((_POINTER,), ctypes.c_char_p),
}


@dataclass(frozen=True)
class EspeakSpeaker:
    """One espeak-ng speaker: an accent, a voice variant, and how they speak.

    Attributes:
        voice: the accent, an espeak-ng voice name such as "en-us" or "en-gb-scotland".
        variant: a voice variant such as "f3" or "klatt" (see `ESPEAK_VARIANTS`), "" for none.
        rate_wpm: speaking rate in words per minute (130-230; espeak-ng's default is 175).
        pitch: base pitch on espeak-ng's 0-100 scale (50 keeps the voice's own).
        pitch_range: intonation range, 0-100 (0 is a monotone; 50 is espeak-ng's default).
        gain_db: loudness relative to the normalised level, in dB (-10 to +10, as `Speaker.gain_db`).
    """

    voice: str
    variant: str
    rate_wpm: int
    pitch: int
    pitch_range: int
    gain_db: float

    @property
    def voice_name(self) -> str:
        """What espeak_SetVoiceByName takes: "en-us+f3", or "en-us" without a variant."""
        return f"{self.voice}+{self.variant}" if self.variant else self.voice


def random_espeak_speaker(
    rng: np.random.Generator,
    voices: Sequence[str],
    variants: Sequence[str] = ESPEAK_VARIANTS,
    rate_wpm: tuple[int, int] = ESPEAK_RATE_WPM,
    pitch_range: tuple[int, int] = ESPEAK_PITCH_RANGE,
) -> EspeakSpeaker:
    """Draws a speaker: an accent from `voices`, a variant, and rate, pitch, range and loudness.

    `rate_wpm` and `pitch_range` are the (low, high) ranges drawn from, both ends included; the defaults
    are English's (Mandarin's, in section 4, keep its tones audible).
    """
    return EspeakSpeaker(
        voice=str(voices[int(rng.integers(len(voices)))]),
        variant=str(variants[int(rng.integers(len(variants)))]),
        rate_wpm=int(rng.integers(rate_wpm[0], rate_wpm[1] + 1)),
        pitch=int(rng.integers(ESPEAK_PITCH[0], ESPEAK_PITCH[1] + 1)),
        pitch_range=int(rng.integers(pitch_range[0], pitch_range[1] + 1)),
        gain_db=float(rng.uniform(-10.0, 10.0)),
    )


def make_espeak_speaker_pool(
    num_speakers: int,
    voices: Sequence[str],
    seed: Seed,
    variants: Sequence[str] = ESPEAK_VARIANTS,
    rate_wpm: tuple[int, int] = ESPEAK_RATE_WPM,
    pitch_range: tuple[int, int] = ESPEAK_PITCH_RANGE,
) -> list[EspeakSpeaker]:
    """Draws `num_speakers` speakers of the accents `voices` (see `make_speaker_pool`); the ranges as in
    `random_espeak_speaker`."""
    if num_speakers < 1:
        raise ValueError(f"num_speakers must be at least 1, got {num_speakers}")
    if not voices or not variants:
        raise ValueError("voices and variants must each name at least one espeak-ng voice")
    rng = np.random.default_rng([*_seed_words(seed), 0xE5])  # 0xE5: a stream of its own for speakers
    return [random_espeak_speaker(rng, voices, variants, rate_wpm, pitch_range) for _ in range(num_speakers)]


# --- the ctypes binding ---


@functools.cache
def _espeak_files() -> tuple[str, str]:
    """(library, data folder) of the installed espeak-ng, the library copied to a path of our own.

    The private copy: if other code in this process (phonemizer, say) has loaded the package's
    libespeak-ng, dlclose would not unload it, and its state and ours would mix. A copy at another
    path is another library to the dynamic loader. Raises ImportError with the install command.
    """
    try:
        import espeakng_loader
    except ImportError:
        raise ImportError(f"espeak-ng is not available: {ESPEAK_INSTALL_HINT}") from None
    try:
        library, data = espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
        folder = tempfile.mkdtemp(prefix="ds2-espeak-")
        atexit.register(shutil.rmtree, folder, True)  # forked workers leave with os._exit: no removal
        private = os.path.join(folder, os.path.basename(library))
        shutil.copyfile(library, private)
    except (OSError, RuntimeError) as error:  # RuntimeError: espeakng_loader's "data path not exists"
        raise ImportError(f"espeak-ng is not available ({error}): {ESPEAK_INSTALL_HINT}") from None
    return private, data


_ESPEAK_LOCK = threading.Lock()  # the library's state is per process: threads take turns


def _load_espeak() -> tuple[ctypes.CDLL, int]:
    """A fresh instance of libespeak-ng, initialised for synchronous output: (library, sample rate)."""
    library_path, data_path = _espeak_files()
    try:
        library = ctypes.CDLL(library_path)
        for name, (argtypes, restype) in _SIGNATURES.items():
            function = getattr(library, name)
            function.argtypes, function.restype = argtypes, restype
    except (OSError, AttributeError) as error:
        raise ImportError(f"espeak-ng is not available ({error}): {ESPEAK_INSTALL_HINT}") from None
    sample_rate = library.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), 0)
    if sample_rate <= 0:
        _unload_espeak(library)
        raise ImportError(
            f"espeak-ng is not available (it found no data in {data_path}): {ESPEAK_INSTALL_HINT}"
        )
    return library, sample_rate


def _unload_espeak(library: ctypes.CDLL) -> None:
    import _ctypes

    library.espeak_Terminate()
    unload = getattr(_ctypes, "dlclose", None) or _ctypes.FreeLibrary  # POSIX, Windows
    unload(library._handle)  # the last reference: the loader unmaps the library, and its state with it


@contextlib.contextmanager
def _fresh_espeak() -> Iterator[ctypes.CDLL]:
    """A freshly loaded libespeak-ng for one use; unloaded afterwards, taking its C state with it.

    espeak_Initialize sets the process's LC_CTYPE locale; we put it back. Threads take turns.
    """
    with _ESPEAK_LOCK:
        previous_locale = locale.setlocale(locale.LC_CTYPE)
        library, sample_rate = _load_espeak()
        try:
            if sample_rate != ESPEAK_SAMPLE_RATE:
                raise RuntimeError(
                    f"espeak-ng speaks at {sample_rate} Hz; this code expects {ESPEAK_SAMPLE_RATE}"
                )
            yield library
        finally:
            _unload_espeak(library)
            locale.setlocale(locale.LC_CTYPE, previous_locale)


def espeak_speak(text: str, speaker: EspeakSpeaker, seed: int = 0) -> np.ndarray:
    """Speaks `text` with espeak-ng, as it comes out: float32 `(samples,)` at `ESPEAK_SAMPLE_RATE` Hz.

    Each call loads a fresh copy of the C library (see the section's notes), so the audio depends only on
    the arguments. numpy only, no torch kernels: safe in forked worker processes.

    Args:
        text: lower-case words, a-z, space and apostrophe (see `check_speakable`); for the Mandarin voice
            "cmn", characters of section 4's grammar (see `check_mandarin_speakable`).
        speaker: the accent, variant, rate and pitch (`gain_db` is applied later, by the caller).
        seed: seeds espeak-ng's own noise generator (breath and frication noise).

    Returns:
        float32 samples in [-1, 1), with about 10 ms of silence at each end.
    """
    if speaker.voice == MANDARIN_VOICE:
        check_mandarin_speakable(text)  # section 4: characters espeak-ng's Mandarin dictionary says right
    else:
        check_speakable(text)
    chunks: list[np.ndarray] = []

    def receive(samples, num_samples, events):  # espeak_Synth calls this every ~100 ms of audio
        if num_samples > 0:
            chunks.append(np.ctypeslib.as_array(samples, shape=(num_samples,)).copy())  # int16
        return 0  # 0 = go on

    callback = _SYNTH_CALLBACK(receive)  # referenced until espeak_Synth has returned
    with _fresh_espeak() as library:
        library.espeak_SetSynthCallback(callback)
        if library.espeak_SetVoiceByName(speaker.voice_name.encode()) != _EE_OK:
            raise ValueError(
                f"espeak-ng has no voice {speaker.voice_name!r}; accents such as {ESPEAK_TRAIN_VOICES}, "
                f"variants such as {ESPEAK_VARIANTS[1:4]} (see espeak-ng-data/lang and voices/!v)"
            )
        library.espeak_SetParameter(_ESPEAK_RATE, speaker.rate_wpm, 0)
        library.espeak_SetParameter(_ESPEAK_PITCH, speaker.pitch, 0)
        library.espeak_SetParameter(_ESPEAK_RANGE, speaker.pitch_range, 0)
        library.espeak_ng_SetRandSeed(seed)
        encoded = text.encode() + b"\0"
        status = library.espeak_Synth(
            encoded, len(encoded), 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None
        )
        library.espeak_Synchronize()
    if status != _EE_OK or not chunks:
        raise RuntimeError(f"espeak-ng failed to speak {text!r} (status {status})")
    return np.concatenate(chunks).astype(np.float32) / 32768.0


@functools.cache
def espeak_version() -> str:
    """E.g. "espeak-ng 1.52.0 (espeakng-loader 0.2.4)": part of the cache key of an espeak corpus."""
    from importlib.metadata import version

    with _fresh_espeak() as library:
        return (
            f"espeak-ng {library.espeak_Info(None).decode()} (espeakng-loader {version('espeakng-loader')})"
        )


def check_espeak_available() -> None:
    """Raises ImportError, in one line with the install command, unless espeak-ng can speak here.

    Also speaks a short sentence twice: if the two differ, the library kept its state between loads
    (a platform whose dlclose does not unload), and the corpus will not be reproducible; that is a
    warning, not an error.
    """
    speaker = EspeakSpeaker("en-us", "", 175, 50, 50, 0.0)
    first, second = espeak_speak("hello there", speaker), espeak_speak("hello there", speaker)
    if not np.array_equal(first, second):
        warnings.warn(
            "espeak-ng kept state between utterances on this platform: the espeak corpus will differ "
            "from run to run and with the number of workers",
            stacklevel=2,
        )


@functools.cache
def _resampler(orig_freq: int, new_freq: int):
    import torchaudio

    # transforms.Resample is functional.resample with its windowed-sinc kernel computed once (5x faster
    # here for 2 s utterances; the two agree to 4e-5).
    return torchaudio.transforms.Resample(orig_freq, new_freq)


def _resample(waveform: np.ndarray, orig_freq: int, new_freq: int) -> np.ndarray:
    """float `(samples,)` at `orig_freq` Hz -> float32 at `new_freq` Hz, with torchaudio (torch kernels:
    call it in the main process, not in a forked worker)."""
    if orig_freq == new_freq:
        return np.asarray(waveform, dtype=np.float32)
    with torch.no_grad():
        return _resampler(orig_freq, new_freq)(torch.from_numpy(np.asarray(waveform, np.float32))).numpy()


def _level_espeak_audio(
    waveform: np.ndarray, speaker: EspeakSpeaker, rng: np.random.Generator, sample_rate: int
) -> np.ndarray:
    """Resampled espeak audio -> the letter-phones' level and framing: edge silence, room tone, gain.

    Speech (pauses excluded) is scaled to the letter-phones' level; 50-150 ms of silence is added at each
    end (espeak-ng leaves about 10 ms); a faint noise floor 60 dB below the speech fills every silence;
    then the speaker's gain. numpy only: runs in worker processes. Returns float64 `(samples,)`.
    """
    samples_per_ms = sample_rate / 1000.0
    lead, trail = (int(rng.uniform(*_EDGE_SILENCE_MS) * samples_per_ms) for _ in range(2))
    waveform = np.asarray(waveform, dtype=np.float64)
    waveform = np.pad(waveform * (_TARGET_ACTIVE_RMS / _active_rms(waveform, sample_rate)), (lead, trail))
    waveform += rng.standard_normal(len(waveform)) * _TARGET_ACTIVE_RMS * 10.0 ** (_ROOM_TONE_DB / 20.0)
    return waveform * 10.0 ** (speaker.gain_db / 20.0)


def synthesize_espeak_speech(
    text: str, speaker: EspeakSpeaker, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE
) -> torch.Tensor:
    """English speech from espeak-ng at `sample_rate`, at the letter-phone corpus's level.

    The espeak counterpart of `synthesize_speech`: speak (`espeak_speak`), resample from 22,050 Hz with
    torchaudio, normalise the level, add edge silence and a faint noise floor, apply `speaker.gain_db`.

    Args:
        text: lower-case words, a-z, space and apostrophe.
        speaker: who speaks (see `EspeakSpeaker`).
        rng: the random generator; the same state gives the same audio.
        sample_rate: in Hz.

    Returns:
        float32 `(samples,)`.
    """
    raw = espeak_speak(text, speaker, seed=int(rng.integers(2**31)))
    waveform = _resample(raw, ESPEAK_SAMPLE_RATE, sample_rate)
    return torch.from_numpy(_level_espeak_audio(waveform, speaker, rng, sample_rate).astype(np.float32))


# --- the splits ---


def _speak_utterances(recipe, indices) -> list[tuple]:
    """Stage 1 (worker processes): draw each utterance's speaker, sentence and noise; speak it at 22.05 kHz."""
    seed_words, speakers, noise_kinds, low, high, noisy_fraction, sentence = recipe
    utterances = []
    for index in indices:
        rng = np.random.default_rng([*seed_words, index])
        speaker = speakers[int(rng.integers(len(speakers)))]
        text = sentence(rng)
        raw = espeak_speak(text, speaker, seed=int(rng.integers(2**31)))
        kind, snr = "clean", math.inf
        if noise_kinds and rng.random() < noisy_fraction:
            kind, snr = str(noise_kinds[int(rng.integers(len(noise_kinds)))]), float(rng.uniform(low, high))
        utterances.append((raw, text, speaker, kind, snr))
    return utterances


def _finish_utterances(recipe, indices) -> list[np.ndarray]:
    """Stage 3 (worker processes): level, edge silence and room tone, gain, then the drawn noise."""
    seed_words, waveforms, speakers, kinds, snrs, sample_rate = recipe
    finished = []
    for index in indices:
        rng = np.random.default_rng([*seed_words, index, 0x2])  # 0x2: the stream for levels and noise
        waveform = _level_espeak_audio(waveforms[index], speakers[index], rng, sample_rate)
        if kinds[index] != "clean":
            noisy = add_noise(torch.from_numpy(waveform), snrs[index], kinds[index], rng, sample_rate)
            waveform = noisy.numpy()
        finished.append(waveform.astype(np.float32))
    return finished


def make_espeak_split(
    name: str,
    num_utterances: int,
    speakers: Sequence[EspeakSpeaker],
    seed: Seed,
    noise_kinds: Sequence[str] = (),
    snr_db: float | tuple[float, float] = 10.0,
    noisy_fraction: float = 1.0,
    sample_rate: int = SAMPLE_RATE,
    workers: int = 1,
    sentence: Callable[[np.random.Generator], str] = random_sentence,
) -> SyntheticSplit:
    """Synthesises a split of English from espeak-ng: `make_split` with espeak-ng speakers.

    Utterance `i` draws its speaker, sentence, espeak-ng seed and noise from its own generator, seeded by
    `(seed, i)`, so it is the same whatever the split's size and the number of workers.

    Three stages, so that forked workers never run torch kernels: (1) workers speak each sentence at
    22,050 Hz; (2) this process resamples to `sample_rate` with torchaudio; (3) workers set the level and
    add noise (babble noise, made of letter-phone speech, is the slow part: ~0.1 s an utterance).

    Args: as `make_split`, with `speakers` from `make_espeak_speaker_pool`, and `sentence`: draws the text
    of an utterance from its generator (default: the English grammar's `random_sentence`; section 4 passes
    `random_mandarin_sentence`). A module-level function, so that worker processes can receive it.

    Returns:
        The split; `split.noise` and `split.snr_db` record what was added to each utterance.
    """
    pool = "make_espeak_speaker_pool"
    low, high = check_split_arguments(num_utterances, speakers, noise_kinds, snr_db, noisy_fraction, pool)
    _espeak_files()  # before forking: one private copy of the library, removed when this process exits
    seed_words = _seed_words(seed)
    recipe = (seed_words, tuple(speakers), tuple(noise_kinds), low, high, noisy_fraction, sentence)
    spoken = map_in_processes(_speak_utterances, recipe, num_utterances, workers)
    resampled = [_resample(raw, ESPEAK_SAMPLE_RATE, sample_rate) for raw, *_ in spoken]  # (samples,) each
    texts = [text for _, text, _, _, _ in spoken]
    chosen = [speaker for _, _, speaker, _, _ in spoken]
    kinds = [kind for _, _, _, kind, _ in spoken]
    snrs = [snr for _, _, _, _, snr in spoken]
    recipe = (seed_words, resampled, chosen, kinds, snrs, sample_rate)
    waveforms = map_in_processes(_finish_utterances, recipe, num_utterances, workers)
    return SyntheticSplit(
        [torch.from_numpy(w) for w in waveforms], texts, chosen, name, kinds, snrs, sample_rate=sample_rate
    )


def make_espeak_splits(
    train_size: int,
    dev_size: int,
    seed: int = 0,
    train_noise_fraction: float = 0.0,
    train_snr_db: tuple[float, float] = (5.0, 30.0),
    num_train_speakers: int = 200,
    num_dev_speakers: int = 40,
    sample_rate: int = SAMPLE_RATE,
    workers: int = 1,
    train_voices: Sequence[str] | None = None,
    dev_voices: Sequence[str] | None = None,
    language: str = "english",
) -> dict[str, SyntheticSplit]:
    """The three splits of `make_splits`, spoken by espeak-ng; dev in voices unheard in train.

    ``language="english"``: the lesson's grammar, and the voices are English accents (default
    `ESPEAK_TRAIN_VOICES`; dev `ESPEAK_DEV_VOICES`, Scottish and Lancastrian English). ``"mandarin"``:
    section 4's grammar spoken by "cmn", and the voices are its voice variants (default
    `MANDARIN_TRAIN_VARIANTS`; dev `MANDARIN_DEV_VARIANTS`). "train" is spoken in `train_voices`,
    "dev-clean" and "dev-noisy" in `dev_voices`, so no voice of a dev split occurs in training; the two dev
    splits share those voices but not their speakers (each has its own pool of rates and pitches). Noise as
    in `make_splits`: `train_noise_fraction` of "train" gets white, pink or babble noise at an SNR drawn
    from `train_snr_db`; "dev-noisy" gets one of them at 10 dB SNR.

    Raises ImportError (one line, with the install command) when espeak-ng is not installed.

    Returns:
        {"train": ..., "dev-clean": ..., "dev-noisy": ...}
    """
    pool, sentence, default_train, default_dev = _espeak_language(language)
    train_voices, dev_voices = train_voices or default_train, dev_voices or default_dev
    shared = sorted(set(train_voices) & set(dev_voices))
    if shared:
        raise ValueError(f"train and dev voices share {shared}; the dev voices must be unheard in training")
    check_espeak_available()
    pools = {
        "train": pool(num_train_speakers, (seed, 0), train_voices),
        "dev-clean": pool(num_dev_speakers, (seed, 1), dev_voices),
        "dev-noisy": pool(num_dev_speakers, (seed, 2), dev_voices),
    }
    if set(pools["dev-clean"]) & set(pools["dev-noisy"]):  # ints drawn from small ranges could collide
        raise RuntimeError("the speaker pools of dev-clean and dev-noisy overlap; choose another seed")
    make = functools.partial(make_espeak_split, sentence=sentence)
    rates = (seed, train_noise_fraction, train_snr_db, sample_rate, workers)
    return three_splits(make, pools, train_size, dev_size, *rates)


ESPEAK_LANGUAGES = ("english", "mandarin")


def _espeak_language(language: str) -> tuple[Callable, Callable, tuple[str, ...], tuple[str, ...]]:
    """A language's (speaker pool maker ``(num, seed, voices)``, sentence drawer, train voices, dev voices)."""
    if language == "english":
        pool = lambda num, seed, voices: make_espeak_speaker_pool(num, voices, seed)  # noqa: E731
        return pool, random_sentence, ESPEAK_TRAIN_VOICES, ESPEAK_DEV_VOICES
    if language == "mandarin":
        pool, sentence = make_mandarin_speaker_pool, random_mandarin_sentence
        return pool, sentence, MANDARIN_TRAIN_VARIANTS, MANDARIN_DEV_VARIANTS
    raise ValueError(f"language must be one of {ESPEAK_LANGUAGES}, got {language!r}")


# ----------------------------------------------------------------------------------------------------------
# 3. Real corpora: LibriSpeech folders and manifests (``--data librispeech`` / ``manifest``)
# ----------------------------------------------------------------------------------------------------------
# The same pipeline on recorded speech. LibriSpeech (Panayotov et al. 2015; openslr.org/12) is read as it
# unpacks: speaker/chapter/speaker-chapter-NNNN.flac beside speaker-chapter.trans.txt, whose lines are
# "speaker-chapter-NNNN TRANSCRIPT IN UPPER CASE". Any other corpus comes in as a manifest: a CSV (with a
# header) or JSONL file naming each utterance's audio file and transcript.
#
# Nothing is silently changed. Lower-casing and folding white space are normalisations (`normalize_text`);
# a transcript with anything else outside the alphabet (a digit, a hyphen, an accented letter) is reported
# with its file and line and skipped, not edited. Audio is down-mixed (`to_mono`) and resampled to the
# model's rate (torchaudio, as for espeak-ng). Utterances are filtered by duration (very long ones cost
# memory and padding), and every utterance's CTC feasibility is checked before training: the conv
# front-end's output frames (`DeepSpeech2.output_lengths`) must be at least the transcript's length plus
# one blank per repeated letter (`ctc_min_frames`), else no alignment exists (§3.1). Everything dropped
# is counted by reason. The dev set is a folder or manifest of its own (``--dev-dir``), or else 10% of
# the training *speakers*, held out whole, so the dev error measures unheard voices as in implementation.make_splits.
#
# Memory: the splits are held in memory as spectrograms (about 0.25 GB per hour of audio, plus the
# waveforms while featurizing), so use a subset (a manifest of some utterances) on a laptop.

CORPUS_AUDIO_KEYS = ("audio", "audio_filepath", "path", "file", "wav")  # manifest columns (or JSON keys)
CORPUS_TEXT_KEYS = ("text", "transcript", "sentence")  # ... for the transcript
CORPUS_SPEAKER_KEYS = ("speaker", "speaker_id", "client_id")  # ... for the speaker (optional)


@dataclass(frozen=True)
class CorpusUtterance:
    """One entry of a corpus index: where the audio is, what is said (normalised), who says it.

    Attributes:
        audio: the audio file.
        text: the transcript, normalised to the alphabet (lower case, single spaces).
        speaker: the speaker's id; "" when the corpus does not say.
        where: the transcript's "file:line", for messages.
    """

    audio: Path
    text: str
    speaker: str
    where: str


@dataclass
class CorpusSplit(SyntheticSplit):
    """A split of recorded speech: a ``SyntheticSplit`` (so training and evaluation run unchanged) whose
    ``speakers`` are speaker ids and whose ``noise``/``snr_db`` are empty (no noise was added), plus:

    Attributes:
        files: each utterance's audio file.
        source: where the split came from, in words (a folder, a manifest, held-out speakers of one).
        dropped: how many utterances were left out, by reason.
        problems: one line per skipped transcript or unreadable file, "file:line: what was wrong".
        sample_rates: how many of the kept files had each sample rate (the others were resampled).
    """

    files: list[str] = field(default_factory=list)
    source: str = ""
    dropped: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    sample_rates: dict[int, int] = field(default_factory=dict)  # the files' own rates, Hz -> utterances


def _check_transcript(text: str, where: str) -> tuple[str, str, str]:
    """``(normalised text, "", "")`` or ``("", reason, problem line)`` for a transcript that cannot be used."""
    normalized = normalize_text(text)
    if not normalized:
        return "", "empty transcript", f"{where}: the transcript is empty; skipped"
    unknown = outside_alphabet(normalized)
    if unknown:
        return (
            "",
            "characters outside the alphabet",
            f"{where}: transcript {text.strip()!r} has characters outside the alphabet {unknown} "
            "(spell digits out, drop punctuation); skipped",
        )
    return normalized, "", ""


def read_librispeech(folder: str | os.PathLike) -> tuple[list[CorpusUtterance], dict[str, int], list[str]]:
    """Index of a folder in LibriSpeech's layout (``speaker/chapter/*.flac`` + ``*.trans.txt``).

    Every ``*.trans.txt`` under ``folder`` is read (point it at one subset such as
    ``LibriSpeech/dev-clean``: a parent folder would mix the subsets). A line is ``ID TRANSCRIPT``; the
    audio is ``ID.flac`` beside it and the speaker is the first part of ``ID``. No audio is read here.

    Returns:
        ``(utterances, dropped, problems)``: the usable entries in file order; how many lines were
        skipped, by reason; one line per skipped transcript, "file:line: what was wrong".

    Raises:
        FileNotFoundError: no such folder, or no transcripts in it.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"no folder {str(folder)!r}: point --data-dir at a LibriSpeech subset such as "
            "LibriSpeech/train-clean-100 (from openslr.org/12)"
        )
    transcripts = sorted(folder.rglob("*.trans.txt"))
    if not transcripts:
        raise FileNotFoundError(
            f"no *.trans.txt files under {str(folder)!r}: expected LibriSpeech's layout, "
            "speaker/chapter/speaker-chapter.trans.txt with speaker-chapter-NNNN.flac beside it"
        )
    # Pointed at LibriSpeech/ itself? Then dev and test speech would be trained on: refuse.
    parts = [path.relative_to(folder).parts for path in transcripts]
    subsets = sorted({part[0] for part in parts if len(part) == 4})  # subset/speaker/chapter/file
    train = [subset for subset in subsets if subset.startswith("train")]
    if train and any(subset.startswith(("dev", "test")) for subset in subsets):
        raise ValueError(
            f"{folder} holds the LibriSpeech subsets {subsets}, training and held-out ones together: point "
            f"this at a training subset (e.g. {folder / train[0]}) and --dev-dir at a dev subset"
        )
    utterances, dropped, problems = [], defaultdict(int), []
    for path in transcripts:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            utterance_id, _, text = line.strip().partition(" ")
            audio = path.parent / f"{utterance_id}.flac"
            text, reason, problem = _check_transcript(text, where)
            if not reason and not audio.is_file():
                reason = "missing audio file"
                problem = f"{where}: no audio file {audio.name} beside it; skipped"
            if reason:
                dropped[reason] += 1
                problems.append(problem)
                continue
            utterances.append(CorpusUtterance(audio, text, utterance_id.split("-")[0], where))
    return utterances, dict(dropped), problems


def read_manifest(path: str | os.PathLike) -> tuple[list[CorpusUtterance], dict[str, int], list[str]]:
    """Index of a manifest: a CSV file with a header (``.csv``; ``.tsv`` for tabs) or JSON lines (``.jsonl``).

    Each row (or JSON object) names an audio file (column ``audio``, ``audio_filepath`` (NeMo), ``path``,
    ``file`` or ``wav``) and its transcript (``text``, ``transcript`` or ``sentence``), optionally its
    speaker (``speaker``, ``speaker_id`` or ``client_id``). Relative audio paths are relative to the
    manifest's folder. No audio is read here.

    Returns:
        ``(utterances, dropped, problems)`` as ``read_librispeech``.

    Raises:
        FileNotFoundError: no such file. ValueError: an unknown file type, or a CSV header without an
        audio or a transcript column.
    """
    import csv

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"no manifest file {str(path)!r}: --data manifest needs a .csv, .tsv or .jsonl file"
        )
    suffix = path.suffix.lower()
    rows: list[tuple[int, dict | None, str]] = []  # (line, record or None, what was wrong)
    if suffix in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8-sig") as file:  # -sig: a spreadsheet's BOM
            reader = csv.DictReader(file, delimiter="\t" if suffix == ".tsv" else ",")
            header = reader.fieldnames or []
            for keys, what in ((CORPUS_AUDIO_KEYS, "audio path"), (CORPUS_TEXT_KEYS, "transcript")):
                if not set(keys) & set(header):
                    raise ValueError(
                        f"{path}: the header {header} has no {what} column; name it one of {list(keys)}"
                    )
            for record in reader:
                rows.append((reader.line_num, record, ""))
    elif suffix in (".jsonl", ".json"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                rows.append((number, None, f"not a JSON object ({error.msg})"))
                continue
            rows.append((number, record, "" if isinstance(record, dict) else "not a JSON object"))
    else:
        raise ValueError(
            f"{path}: a manifest must be a .csv, .tsv or .jsonl file, got {suffix or 'no suffix'!r}"
        )
    utterances, dropped, problems = [], defaultdict(int), []
    for number, record, wrong in rows:
        where = f"{path}:{number}"
        if not wrong:
            audio = next((record[k] for k in CORPUS_AUDIO_KEYS if record.get(k)), None)
            text = next((record[k] for k in CORPUS_TEXT_KEYS if record.get(k) is not None), None)
            if not isinstance(audio, str) or not isinstance(text, str):
                wrong = f"needs an audio path ({'/'.join(CORPUS_AUDIO_KEYS)}) and a transcript ({'/'.join(CORPUS_TEXT_KEYS)})"
        if wrong:
            dropped["malformed entry"] += 1
            problems.append(f"{where}: {wrong}; skipped")
            continue
        text, reason, problem = _check_transcript(text, where)
        audio = Path(audio).expanduser()
        audio = audio if audio.is_absolute() else path.parent / audio
        if not reason and not audio.is_file():
            reason, problem = "missing audio file", f"{where}: no audio file {str(audio)!r}; skipped"
        if reason:
            dropped[reason] += 1
            problems.append(problem)
            continue
        speaker = next((str(record[k]) for k in CORPUS_SPEAKER_KEYS if record.get(k) not in (None, "")), "")
        utterances.append(CorpusUtterance(audio, text, speaker, where))
    return utterances, dict(dropped), problems


def hold_out_speakers(
    utterances: Sequence[CorpusUtterance], fraction: float = 0.1, seed: int = 0
) -> tuple[list[CorpusUtterance], list[CorpusUtterance], str]:
    """Splits an index into (train, dev) with ``fraction`` of the *speakers* in dev, all their utterances.

    The speakers are drawn with ``seed``, so the split is the same on every run. When some utterance has
    no speaker (a manifest without a speaker column), ``fraction`` of the *utterances* are held out
    instead, and the description says that dev speakers may also be heard in training.

    Returns:
        ``(train, dev, description)``, e.g. "held-out speakers: 4 of 40 (10%, seed 0)".
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the dev fraction must be between 0 and 1, got {fraction}")
    rng = np.random.default_rng([seed, 0xDE7])  # 0xDE7: a stream of its own for the dev split
    speakers = sorted({u.speaker for u in utterances})
    if "" in speakers:
        count = min(len(utterances) - 1, max(1, round(fraction * len(utterances))))
        if count < 1:
            raise ValueError("too few utterances to hold some out for dev; give --dev-dir")
        held = set(rng.permutation(len(utterances))[:count].tolist())
        dev = [u for i, u in enumerate(utterances) if i in held]
        train = [u for i, u in enumerate(utterances) if i not in held]
        how = (
            f"held-out utterances: {count} of {len(utterances)} ({fraction:.0%}, seed {seed}); no "
            "speakers are named, so dev speakers may also be heard in training"
        )
        return train, dev, how
    if len(speakers) < 2:
        raise ValueError(
            f"all utterances are by one speaker ({speakers[0] if speakers else 'none'}): no speakers to "
            "hold out for dev; give --dev-dir"
        )
    count = min(len(speakers) - 1, max(1, round(fraction * len(speakers))))
    held = {speakers[i] for i in rng.permutation(len(speakers))[:count].tolist()}
    train = [u for u in utterances if u.speaker not in held]
    dev = [u for u in utterances if u.speaker in held]
    return train, dev, f"held-out speakers: {count} of {len(speakers)} ({fraction:.0%}, seed {seed})"


def load_corpus_split(
    utterances: Sequence[CorpusUtterance],
    name: str,
    config: DS2Config | None = None,
    min_seconds: float = 0.5,
    max_seconds: float = 20.0,
    source: str = "",
) -> CorpusSplit:
    """Reads the audio of an index into a split, dropping (and counting) what cannot be trained on.

    Per utterance: the duration from the file's header (``soundfile.info``, nothing decoded) against
    ``[min_seconds, max_seconds]`` (``max_seconds=0``: no limit); then the audio, down-mixed and
    resampled to ``config.sample_rate``; then silence (``is_silent``) and CTC feasibility: the model's
    output frames for this audio (``DeepSpeech2(config).output_lengths``) against ``ctc_min_frames`` of
    the transcript.

    Returns:
        The split, ``dropped`` counting each reason, ``problems`` naming each unreadable file, and
        ``sample_rates`` counting the files' own rates (all but ``config.sample_rate`` were resampled).
    """
    config = config or DS2Config()
    if min_seconds < 0 or max_seconds < 0 or (max_seconds and max_seconds < min_seconds):
        raise ValueError(
            f"the duration limits must satisfy 0 <= min <= max (max 0: no limit), got {min_seconds} and {max_seconds}"
        )
    front_end = DeepSpeech2(config)  # only for output_lengths: how the conv strides shorten time
    split = CorpusSplit([], [], [], name, sample_rate=config.sample_rate, source=source)
    dropped: dict[str, int] = defaultdict(int)
    rates: dict[int, int] = defaultdict(int)
    for utterance in utterances:
        try:
            info = soundfile.info(str(utterance.audio))  # the header only
            seconds = info.frames / info.samplerate
            if min_seconds <= seconds and not (max_seconds and seconds > max_seconds):
                waveform, rate = load_audio(utterance.audio)  # (channels, samples)
        except Exception as error:  # soundfile's own errors, or load_audio's ValueError
            dropped["unreadable audio"] += 1
            split.problems.append(f"{utterance.where}: cannot read {utterance.audio} ({error}); skipped")
            continue
        if seconds < min_seconds:
            dropped[f"shorter than {min_seconds:g} s"] += 1
            continue
        if max_seconds and seconds > max_seconds:
            dropped[f"longer than {max_seconds:g} s"] += 1
            continue
        mono = _resample(to_mono(waveform).numpy(), rate, config.sample_rate)  # (samples,)
        if not np.isfinite(mono).all():
            dropped["NaN or inf samples"] += 1
            continue
        if len(mono) == 0 or is_silent(torch.from_numpy(mono)):
            dropped["silent"] += 1
            continue
        labels = encode_text(utterance.text)  # (S,)
        needed = int(ctc_min_frames(labels[None], torch.tensor([len(labels)]))[0])
        frames = num_frames(len(mono), config.sample_rate, config.window_ms, config.stride_ms)
        if int(front_end.output_lengths(torch.tensor([frames]))[0]) < needed:
            dropped["too short for the transcript under CTC"] += 1
            continue
        split.waveforms.append(torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32)))
        split.texts.append(utterance.text)
        split.speakers.append(utterance.speaker)
        split.files.append(str(utterance.audio))
        rates[rate] += 1
    split.dropped, split.sample_rates = dict(dropped), dict(rates)
    return split


def _report_split(split: CorpusSplit, log: Callable[[str], None], shown: int = 10) -> None:
    """One line for the split, then its problems (the first ``shown``, then a count of the rest)."""
    dropped = ", ".join(f"{count} {reason}" for reason, count in sorted(split.dropped.items()))
    minutes = split.durations_s().sum() / 60 if len(split) else 0.0
    amount = f"{minutes / 60:.1f} h" if minutes >= 60 else f"{minutes:.1f} min"
    log(
        f"{split.name}: {len(split)} utterances ({amount}) from {split.source}; "
        f"dropped {sum(split.dropped.values())}{': ' + dropped if dropped else ''}"
    )
    resampled = {rate: n for rate, n in sorted(split.sample_rates.items()) if rate != split.sample_rate}
    if resampled:
        rates = ", ".join(f"{n} at {rate} Hz" for rate, n in resampled.items())
        log(f"  resampled to {split.sample_rate} Hz: {rates}")
    if any(rate < split.sample_rate for rate in resampled):
        log("  upsampled audio has nothing above half its own rate (8 kHz audio: 4 kHz): expect more errors")
    for line in split.problems[:shown]:
        log(f"  {line}")
    if len(split.problems) > shown:
        log(f"  ... and {len(split.problems) - shown} more (all in the split's .problems)")


def read_corpus_splits(
    kind: str,
    data_dir: str | os.PathLike,
    dev_dir: str | os.PathLike | None = None,
    seed: int = 0,
    min_seconds: float = 0.5,
    max_seconds: float = 20.0,
    config: DS2Config | None = None,
    dev_fraction: float = 0.1,
    log: Callable[[str], None] | None = print,
) -> dict[str, CorpusSplit]:
    """A recorded corpus as the pipeline's splits: ``{"train": ..., "dev": ...}``.

    Args:
        kind: "librispeech" (a folder, see ``read_librispeech``) or "manifest" (see ``read_manifest``).
        data_dir: the training folder or manifest.
        dev_dir: the dev folder or manifest, in the same format; ``None``: hold out ``dev_fraction`` of
            the training speakers (``hold_out_speakers``, drawn with ``seed``).
        min_seconds, max_seconds: keep utterances of this duration (``max_seconds=0``: no limit).
        config: the model's configuration, for the sample rate and the CTC feasibility check.
        log: receives one line per split (kept, dropped by reason) and one per problem.

    Raises:
        FileNotFoundError, ValueError: a missing folder or file, a bad manifest, dev files that are also
        training files, or a split left empty by the filters (the message says what was dropped).
    """
    readers = {"librispeech": read_librispeech, "manifest": read_manifest}
    if kind not in readers:
        raise ValueError(f"kind must be one of {list(readers)}, got {kind!r}")
    config = config or DS2Config()
    train_index, train_dropped, train_problems = readers[kind](data_dir)
    if dev_dir is not None:
        dev_index, dev_dropped, dev_problems = readers[kind](dev_dir)
        shared = {u.audio.resolve() for u in train_index} & {u.audio.resolve() for u in dev_index}
        if shared:
            raise ValueError(
                f"{len(shared)} audio files are in both the training data and --dev-dir "
                f"(e.g. {sorted(shared)[0]}): the dev set must be held out"
            )
        overlap = ({u.speaker for u in train_index} & {u.speaker for u in dev_index}) - {""}
        dev_source = str(dev_dir)
        if overlap:  # allowed (a corpus may have no disjoint dev set), but the dev error is then easier
            dev_source += f" ({len(overlap)} of its speakers also speak in training)"
    else:
        train_index, dev_index, how = hold_out_speakers(train_index, dev_fraction, seed)
        dev_dropped, dev_problems, dev_source = {}, [], f"{data_dir} ({how})"
    splits = {}
    for name, index, dropped, problems, source in (
        ("train", train_index, train_dropped, train_problems, str(data_dir)),
        ("dev", dev_index, dev_dropped, dev_problems, dev_source),
    ):
        split = load_corpus_split(index, name, config, min_seconds, max_seconds, source)
        split.dropped = {**dropped, **split.dropped}
        split.problems = [*problems, *split.problems]
        if log is not None:
            _report_split(split, log)
        if not len(split):
            raise ValueError(
                f"no usable {name} utterances in {source} (dropped: {split.dropped or 'none; it is empty'}); "
                "check the path, --min-seconds and --max-seconds"
            )
        splits[name] = split
    return splits


# ----------------------------------------------------------------------------------------------------------
# 4. Mandarin from espeak-ng: the same network, another language (§3.9)
# ----------------------------------------------------------------------------------------------------------
# The paper trains the same architecture on Mandarin by changing the training data and the output
# alphabet: the network emits Chinese characters instead of letters (§3.9). This section is the data half of
# that in miniature: a Mandarin grammar written for this lesson, spoken by espeak-ng's Mandarin voice "cmn"
# (its dictionary, cmn_dict, ships in the same espeakng-loader wheel as the English voices).
#
# The grammar: simplified characters, sentences a learner can read (who does what, where and when; counting
# with measure words; questions with 吗 and 呢 and question words; negation with 不 and 没; how well, with 得;
# how, with 地), about 450 distinct characters. A sentence is written without spaces or punctuation, as
# Chinese is; the grammar knows its words, so `random_mandarin_sentence(rng, segmented=True)` gives them.
# Homophones are there on purpose (`MANDARIN_HOMOPHONES`): 他, 她 and 它 (he, she, it) are all "tā", 在 (at)
# and 再 (again) are both "zài", 的, 得 and 地 are all "de". The audio cannot tell them apart; the words
# around them can, which is the character language model's job.
#
# The speech: espeak-ng says every character of the grammar as one syllable with its tone. That was checked
# word by word and on 10,000 sentences (espeak_TextToPhonemes, its tones compared with the pinyin's),
# because a character missing from its dictionary is spoken as something else (熊 "bear" comes out in
# English, so the grammar has no pandas), and espeak-ng splits a sentence into words of its own dictionary,
# which can straddle the grammar's words. What it reads wrongly is left out rather than taught: the
# measure word 只 (zhǐ, except in 一只: animals are counted with 一只 only), 教 "teach" (jiào, except in
# 教书), 种 "plant" (zhǒng, except in 种花 and 种树), 便宜 (biànyí); and sequences it reads as another
# word: 得非常 (dé), 做得 (zuòdé), 非常好 (chánghào), 不干净 (bùgàn), 不教书 (bújiào), 说中文
# (shuōzhòng), 花呢 (huāní, tweed), 人为什么 (rénwéi), 天儿 (erhua, spoken in English). What remains
# different from the pinyin is neutral tones (guò for guo) and tone sandhi (bú for bù), as people say them.
#
# A speaker is "cmn" with a voice variant, a speaking rate and an intonation range. The range matters more
# than in English: espeak-ng scales the tones' pitch contours by it, so at 25 (English's lowest) the four
# tones of 妈 麻 马 骂 differ by less than a semitone, and at 0 not at all; from 60 up they are clear (at
# 100 a rising tone climbs about 7 semitones, a falling one drops 8). The dev splits are spoken by voice
# variants never heard in training.
#
# The splits reuse section 2's machinery unchanged (a fresh library per utterance, the three stages, the
# letter-phones' level and noise): only the sentence drawn for each utterance differs.

MANDARIN_VOICE = "cmn"  # espeak-ng's Mandarin (espeak-ng-data/lang/sit/cmn)

# --- 4.1 The grammar ---

# Who does things. 他, 她 and 它 (he, she, it) are all "tā": one sound, three characters.
_MANDARIN_PRONOUNS = ("我", "你", "他", "她", "我们", "你们", "他们", "她们", "大家")
_MANDARIN_PEOPLE = (
    "老师", "学生", "医生", "护士", "司机", "警察", "工人", "农民", "老板", "经理", "厨师", "记者",
    "妈妈", "爸爸", "哥哥", "姐姐", "弟弟", "妹妹", "爷爷", "奶奶", "叔叔", "阿姨", "儿子", "女儿",
    "孩子", "朋友", "同学", "同事", "邻居", "客人", "小王", "小李", "老张", "小明", "小红",
)  # fmt: skip
_MANDARIN_JOBS = _MANDARIN_PEOPLE[:12]  # 他是医生
_MANDARIN_GROUPS = ("孩子们", "学生们", "同学们", "朋友们")  # 们 makes a plural of people
# Family and friends: 我的朋友, and 我妈妈 (close family goes without 的, as people say it).
_MANDARIN_KIN = (
    "妈妈", "爸爸", "哥哥", "姐姐", "弟弟", "妹妹", "爷爷", "奶奶", "朋友", "同学", "老师", "邻居",
)  # fmt: skip
_MANDARIN_ANIMALS = ("小猫", "小狗", "小鸟", "它", "它们")

# When. Any time word goes with any clause (Mandarin marks no tense), but 没 "did not" takes past ones.
_MANDARIN_DAYS = (
    "今天", "明天", "昨天", "后天", "前天", "每天", "周末", "星期一", "星期二", "星期三", "星期四",
    "星期五", "星期六", "星期天",
)  # fmt: skip
_MANDARIN_PARTS_OF_DAY = ("早上", "上午", "中午", "下午", "晚上")
_MANDARIN_PAST_TIMES = ("昨天", "前天", "去年", "上个月", "上个星期", "刚才", "昨天晚上")
_MANDARIN_FUTURE_TIMES = ("明天", "后天", "明年", "下个月", "下个星期", "周末", "明天早上")

# Places, each with what people do there, so that 在图书馆借书 can be drawn and 在机场学数学 cannot.
_MANDARIN_PLACES = (
    ("学校", (("上课",), ("学习",), ("教书",), ("学", "中文"), ("打", "篮球"), ("踢", "足球"))),
    ("公园", (("散步",), ("跑步",), ("唱歌",), ("跳舞",), ("看", "花"), ("拍", "照片"))),
    ("医院", (("看病",), ("工作",), ("上班",))),
    ("商店", (("买", "东西"), ("买", "衣服"), ("买", "鞋"), ("买", "帽子"), ("买", "礼物"))),
    ("超市", (("买", "东西"), ("买", "水果"), ("买", "牛奶"), ("买", "面包"), ("买", "鸡蛋"))),
    ("市场", (("买菜",), ("买", "水果"), ("买", "鱼"), ("买", "肉"))),
    ("饭馆", (("吃饭",), ("吃", "饺子"), ("吃", "面条"), ("喝", "啤酒"), ("吃", "晚饭"))),
    ("食堂", (("吃", "午饭"), ("吃", "早饭"), ("吃", "包子"), ("喝", "汤"))),
    ("银行", (("工作",), ("上班",), ("换", "钱"), ("取", "钱"))),
    ("图书馆", (("看", "书"), ("借", "书"), ("学习",), ("复习", "课文"), ("看", "杂志"))),
    ("书店", (("买", "书"), ("买", "词典"), ("看", "小说"))),
    ("公司", (("上班",), ("工作",), ("开会",), ("打", "电话"))),
    ("办公室", (("工作",), ("开会",), ("写", "报告"), ("打", "电话"), ("用", "电脑"))),
    ("教室", (("上课",), ("考试",), ("写", "作业"), ("回答", "问题"), ("复习", "生词"))),
    ("车站", (("等", "公共汽车"), ("买", "车票"), ("等", "朋友"))),
    ("机场", (("坐", "飞机"), ("等", "朋友"), ("接", "客人"))),
    ("家", (("休息",), ("睡觉",), ("做饭",), ("看", "电视"), ("洗", "衣服"), ("打扫", "房间"))),
    ("厨房", (("做饭",), ("洗", "碗"), ("做", "蛋糕"), ("做", "菜"))),
    ("花园", (("种", "花"), ("种", "树"), ("散步",), ("看", "书"))),
    ("电影院", (("看", "电影"),)),
    ("动物园", (("看", "老虎"), ("看", "大象"), ("看", "猴子"), ("拍", "照片"))),
    ("博物馆", (("参观",), ("拍", "照片"), ("工作",))),
    ("体育馆", (("打", "篮球"), ("打", "排球"), ("打", "乒乓球"), ("锻炼",), ("游泳",))),
    ("操场", (("跑步",), ("踢", "足球"), ("锻炼",), ("打", "篮球"))),
    ("宿舍", (("休息",), ("睡觉",), ("聊天",), ("洗", "衣服"))),
    ("邮局", (("寄", "信"), ("买", "邮票"), ("工作",))),
    ("工厂", (("工作",), ("上班",))),
    ("北京", (("工作",), ("学", "汉语"), ("旅行",), ("上", "大学"))),
    ("上海", (("工作",), ("旅行",), ("上班",), ("开会",))),
    ("河边", (("散步",), ("钓", "鱼"), ("跑步",))),
    ("海边", (("游泳",), ("散步",), ("拍", "照片"), ("玩",))),
)
# Verbs and the objects that fit them. 做 "do, make" and 坐 "sit, ride" are both "zuò".
_MANDARIN_VERB_OBJECTS = (
    ("吃", ("饭", "米饭", "面条", "饺子", "包子", "面包", "鸡蛋", "苹果", "香蕉", "西瓜", "水果", "蛋糕",
           "早饭", "午饭", "晚饭", "蔬菜", "鱼", "肉")),
    ("喝", ("水", "茶", "咖啡", "牛奶", "果汁", "汤", "啤酒")),
    ("看", ("书", "报纸", "电视", "电影", "比赛", "地图", "照片", "小说", "杂志")),
    ("买", ("衣服", "鞋", "帽子", "水果", "蔬菜", "东西", "礼物", "车票", "手机", "电脑", "自行车", "雨伞")),
    ("写", ("字", "信", "作业", "日记", "文章", "汉字", "名字", "报告")),
    ("学", ("中文", "英语", "汉语", "数学", "历史", "音乐", "地理", "物理", "化学", "画画", "游泳", "开车")),
    ("做", ("作业", "饭", "菜", "练习", "实验", "蛋糕", "运动")),
    ("打", ("电话", "篮球", "网球", "排球", "乒乓球")),
    ("踢", ("足球",)),
    ("听", ("音乐", "广播", "故事", "新闻", "录音")),
    ("唱", ("歌",)),
    ("开", ("车", "门", "窗户", "灯")),
    ("关", ("门", "窗户", "灯", "电视", "电脑")),
    ("洗", ("衣服", "手", "碗", "脸", "澡", "水果", "杯子")),
    ("骑", ("自行车", "马")),
    ("坐", ("公共汽车", "火车", "飞机", "地铁", "出租车", "船")),
    ("找", ("工作", "钥匙", "朋友", "手机")),
    ("送", ("礼物", "花")),
    ("养", ("猫", "狗", "鱼", "鸟", "花")),
    ("带", ("雨伞", "钥匙", "护照", "书包", "照相机")),
    ("借", ("书", "雨伞", "自行车", "钱", "词典")),
    ("穿", ("衣服", "裙子", "裤子", "鞋", "大衣", "毛衣")),
    ("准备", ("晚饭", "考试", "礼物", "行李")),
    ("打扫", ("房间", "教室", "厨房", "院子")),
    ("复习", ("课文", "生词", "数学", "历史")),
    ("练习", ("写字", "发音", "口语")),
)  # fmt: skip
# Things done without an object (some are a verb and its object that read as one word: 睡觉, 吃饭).
_MANDARIN_ACTIVITIES = (
    "睡觉", "休息", "跑步", "游泳", "散步", "跳舞", "唱歌", "上课", "下课", "上班", "下班", "回家",
    "起床", "工作", "说话", "走路", "旅行", "锻炼", "上网", "吃饭", "聊天", "学习", "做饭", "洗澡",
    "开会", "考试",
)  # fmt: skip
_MANDARIN_OWNABLE = ("自行车", "电脑", "手机", "雨伞", "钥匙", "护照", "词典", "时间", "钱", "汽车")

# Counting: a number before a noun needs a measure word chosen by the noun (三本书, 两杯茶).
_MANDARIN_NUMBERS = ("一", "两", "三", "四", "五", "六", "七", "八", "九", "十")  # 两, not 二, counts things
_MANDARIN_COUNTED = (  # (verb, measure word, nouns)
    ("吃", "碗", ("米饭", "面条", "汤")),
    ("吃", "个", ("苹果", "包子", "鸡蛋", "西瓜")),
    ("喝", "杯", ("茶", "水", "咖啡", "牛奶", "果汁")),
    ("喝", "瓶", ("啤酒", "水", "果汁")),
    ("买", "本", ("书", "词典", "小说", "杂志")),
    ("买", "件", ("衣服", "毛衣", "大衣", "礼物")),
    ("买", "双", ("鞋", "筷子")),
    ("买", "张", ("车票", "地图")),
    ("买", "辆", ("自行车", "汽车")),
    ("写", "封", ("信",)),
    ("唱", "首", ("歌",)),
    ("看", "部", ("电影",)),
    ("养", "条", ("鱼",)),
    ("拍", "张", ("照片",)),
    ("借", "把", ("雨伞", "椅子")),
)
# Things to describe: (measure word, noun, adjectives that fit it). 件 and 见 (in 再见) are both "jiàn".
_MANDARIN_DESCRIBED = (
    ("本", "书", ("有意思", "新", "旧", "贵", "难")),
    ("件", "衣服", ("漂亮", "贵", "新", "大", "小", "干净")),
    ("个", "苹果", ("好吃", "大", "小", "红", "甜")),
    ("个", "房间", ("干净", "大", "小", "安静", "舒服", "暖和")),
    ("个", "饭馆", ("好", "贵", "热闹", "有名", "远", "近")),
    ("个", "公园", ("大", "漂亮", "安静", "热闹", "远", "近")),
    ("个", "问题", ("难", "容易", "简单", "重要")),
    ("个", "城市", ("大", "漂亮", "热闹", "干净", "有名")),
    ("个", "孩子", ("可爱", "聪明")),
    ("条", "裙子", ("漂亮", "长", "短", "贵")),
    ("条", "河", ("长", "宽", "干净")),
    ("双", "鞋", ("舒服", "贵", "新", "旧")),
    ("辆", "汽车", ("新", "旧", "快", "贵")),
    ("杯", "咖啡", ("热", "好喝", "甜", "苦")),
    ("首", "歌", ("好听", "有名", "长")),
    ("部", "电影", ("有意思", "长", "有名")),
    ("张", "照片", ("漂亮", "好看")),
    ("碗", "面条", ("好吃", "热", "咸")),
    ("台", "电脑", ("新", "旧", "快", "慢", "贵")),
    ("位", "老师", ("年轻", "认真", "热情")),
    ("座", "山", ("高", "漂亮")),
)
_MANDARIN_DEGREES = ("很", "非常", "真", "特别", "有点", "比较", "太")  # 太 ... 了: "too ..."
_MANDARIN_WEATHER = ("好", "热", "冷", "暖和", "凉快", "不错")
_MANDARIN_WEATHER_EVENTS = ("下雨", "下雪", "刮风")

# 得 links a verb to how well it is done (跑得很快); 地 makes an adverb (高兴地唱歌); both sound as 的 (de).
_MANDARIN_HOW_DONE = (  # (verb, adjectives)
    ("跑", ("快", "慢")), ("走", ("快", "慢")), ("说", ("好", "快", "慢", "流利")),
    ("写", ("好", "漂亮", "快")), ("唱", ("好", "好听")), ("睡", ("好", "早", "晚")), ("起", ("早", "晚")),
    ("来", ("早", "晚")), ("吃", ("多", "少", "快")), ("学", ("好", "快", "认真")), ("跳", ("高", "好")),
)  # fmt: skip
_MANDARIN_LANGUAGES = ("汉语", "英语")  # 他说汉语说得很流利 (说中文 is read shuōzhòng)
_MANDARIN_MANNERS = (  # (adverb before 地, what is done that way)
    ("认真", (("学习",), ("写", "作业"), ("复习", "课文"), ("工作",))),
    ("高兴", (("唱歌",), ("跳舞",), ("说",), ("笑", "了"))),
    ("安静", (("看", "书"), ("休息",), ("听", "音乐"))),
    ("慢慢", (("走路",), ("吃饭",), ("说话",))),
    ("大声", (("说话",), ("唱歌",), ("读", "课文"), ("笑", "了"))),
    ("努力", (("学习",), ("工作",), ("锻炼",))),
)
_MANDARIN_COMPARED = (  # (one, other, adjectives): 哥哥比弟弟高
    ("哥哥", "弟弟", ("高", "大")), ("姐姐", "妹妹", ("高", "大")), ("今天", "昨天", ("冷", "热")),
    ("火车", "汽车", ("快",)), ("飞机", "火车", ("快", "贵")), ("北京", "上海", ("冷", "大")),
    ("苹果", "香蕉", ("贵", "好吃")), ("这个", "那个", ("好", "大", "贵")),
)  # fmt: skip
# What people say on its own (5% of sentences), as the English grammar's "thank you".
_MANDARIN_PHRASES = (
    ("你好",), ("谢谢",), ("再见",), ("没", "关系"), ("不", "客气"), ("对不起",), ("早上", "好"),
    ("晚上", "好"), ("好久", "不", "见"), ("请", "进"), ("请", "坐"), ("没", "问题"), ("太", "好", "了"),
    ("明天", "见"), ("我", "有", "事"), ("没", "事"),
)  # fmt: skip
# The words the sentence templates below write themselves (particles, question words, ...).
_MANDARIN_TEMPLATE_WORDS = (
    "的", "在", "正在", "去", "了", "过", "吗", "呢", "吧", "不", "没", "没有", "不是", "是", "也是", "都是",
    "都", "也", "还", "一起", "常常", "经常", "已经", "再", "喜欢", "不喜欢", "想", "不想", "要", "会",
    "不会", "有", "几", "谁", "什么", "哪里", "什么时候", "怎么", "为什么", "怎么样", "这", "那", "比",
    "天气", "外面", "现在", "请", "说", "一", "只", "遍", "别", "不要", "快", "得", "地", "流利", "吃",
    "东西", "玩", "房间里", "花园里", "树上", "桌子上", "门口", "我家", "他家", "她家", "我们家", "钥匙",
    "手机", "书包", "雨伞", "护照", "猫", "狗", "鸟", "鱼", "肉", "面包", "米饭", "睡觉", "休息", "跑",
    "跳", "多", "好", "高",
)  # fmt: skip
# Homophones the grammar uses: each group is one syllable with one tone in pinyin and in espeak-ng's audio.
MANDARIN_HOMOPHONES: tuple[tuple[str, ...], ...] = (
    ("他", "她", "它"),  # tā: he, she, it
    ("在", "再"),  # zài: at / again
    ("的", "得", "地"),  # de: of / (how well) / (adverb)
    ("做", "坐", "座"),  # zuò: do / sit / (measure word of mountains)
    ("是", "事", "市", "试", "室", "视"),  # shì: be / matter / city / test / room / sight
    ("见", "件"),  # jiàn: see / (measure word of clothes)
    ("进", "近"),  # jìn: enter / near
    ("公", "工"),  # gōng: public (公园) / work (工作)
    ("书", "叔", "舒", "蔬"),  # shū: book / uncle / comfortable (舒服) / vegetable (蔬菜)
    ("衣", "医"),  # yī: clothes (衣服) / medicine (医生)
    ("机", "鸡"),  # jī: machine (飞机) / chicken (鸡蛋)
)
MANDARIN_MAX_CHARACTERS = 16  # longer draws are drawn again: at most about 5 s of speech


def homophone_errors(references: Sequence[str], hypotheses: Sequence[str]) -> tuple[int, int]:
    """(substitutions of a character by a homophone of it (`MANDARIN_HOMOPHONES`), all character edits),
    summed over the pairs, on one minimal alignment of each (`implementation.edit_alignment`): the share
    of a recogniser's errors that the audio alone could not have avoided."""
    group_of = {char: group for group in MANDARIN_HOMOPHONES for char in group}
    homophones = edits = 0
    for reference, hypothesis in zip(references, hypotheses, strict=True):
        pairs = edit_alignment(reference, hypothesis)
        edits += sum(r != h for r, h in pairs)
        homophones += sum(r is not None and r != h and h in group_of.get(r, ()) for r, h in pairs)
    return homophones, edits


def _words_of(table) -> set[str]:
    """Every word in a nested table of tuples of words."""
    return {table} if isinstance(table, str) else set().union(*(_words_of(item) for item in table))


_MANDARIN_TABLES = (
    _MANDARIN_PRONOUNS, _MANDARIN_PEOPLE, _MANDARIN_GROUPS, _MANDARIN_KIN, _MANDARIN_ANIMALS, _MANDARIN_DAYS,
    _MANDARIN_PARTS_OF_DAY, _MANDARIN_PAST_TIMES, _MANDARIN_FUTURE_TIMES, _MANDARIN_PLACES,
    _MANDARIN_VERB_OBJECTS, _MANDARIN_ACTIVITIES, _MANDARIN_OWNABLE, _MANDARIN_NUMBERS, _MANDARIN_COUNTED,
    _MANDARIN_DESCRIBED, _MANDARIN_DEGREES, _MANDARIN_WEATHER, _MANDARIN_WEATHER_EVENTS, _MANDARIN_HOW_DONE,
    _MANDARIN_LANGUAGES, _MANDARIN_MANNERS, _MANDARIN_COMPARED, _MANDARIN_PHRASES, _MANDARIN_TEMPLATE_WORDS,
)  # fmt: skip
# The grammar's words, in Unicode order: a segmented sentence uses these and only these.
MANDARIN_VOCABULARY: tuple[str, ...] = tuple(sorted(_words_of(_MANDARIN_TABLES)))


@functools.cache
def mandarin_characters() -> tuple[str, ...]:
    """Every character the Mandarin grammar can write, sorted (Unicode order): the corpus's alphabet."""
    return tuple(sorted({character for word in MANDARIN_VOCABULARY for character in word}))


# The output alphabet of a Mandarin model (implementation.py section 1): every character the grammar can
# write, and no space: Chinese is written without them, so white space in a transcript is dropped, and the
# language model's tokens are characters.
MANDARIN = Alphabet(
    "mandarin",
    mandarin_characters(),
    spaced=False,
    lowercase=False,
    hint="A Mandarin model writes the characters of the lesson's grammar (corpora.mandarin_characters()), "
    "without punctuation.",
)


def _is_plural(subject: list[str]) -> bool:
    """我们, 孩子们, 大家: a subject that can do things 一起 (together) or 都 (all)."""
    return subject[-1].endswith("们") or subject[-1] == "大家"


def _mandarin_subject(rng: np.random.Generator) -> list[str]:
    """我 / 老师 / 孩子们 / 我的朋友 / 我妈妈: who does something."""
    kind = rng.integers(10)
    if kind < 4:
        return [_pick(rng, _MANDARIN_PRONOUNS)]
    if kind < 7:
        return [_pick(rng, _MANDARIN_PEOPLE)]
    if kind == 7:
        return [_pick(rng, _MANDARIN_GROUPS)]
    owner = _pick(rng, ("我", "你", "他", "她"))
    return [owner, "的", _pick(rng, _MANDARIN_KIN)] if kind == 8 else [owner, _pick(rng, _MANDARIN_KIN[:8])]


def _mandarin_adverb(rng: np.random.Generator, subject: list[str], probability: float) -> list[str]:
    """也, 常常 ... with `probability`; 都 (all) and 一起 (together) only after a plural subject."""
    if rng.random() >= probability:
        return []
    return [_pick(rng, ("都", "也", "一起", "常常") if _is_plural(subject) else ("也", "常常", "经常"))]


def _mandarin_time(rng: np.random.Generator) -> list[str]:
    """今天 / 星期六 下午."""
    day = [_pick(rng, _MANDARIN_DAYS)]
    return [*day, _pick(rng, _MANDARIN_PARTS_OF_DAY)] if rng.random() < 0.3 else day


def _with_time(
    rng: np.random.Generator, subject: list[str], rest: list[str], probability: float
) -> list[str]:
    """With `probability`, a time word before or after the subject (both are natural)."""
    if rng.random() >= probability:
        return [*subject, *rest]
    time = _mandarin_time(rng)
    erhua = time[-1][-1] == "天" and subject[0][0] == "儿"  # espeak-ng reads 明天儿子 as 明天儿 (in English)
    return [*time, *subject, *rest] if rng.random() < 0.4 and not erhua else [*subject, *time, *rest]


def _mandarin_verb_phrase(rng: np.random.Generator) -> list[str]:
    """看 书 / 睡觉 / 坐 火车: a verb with an object that fits it, or an activity."""
    if rng.random() < 0.3:
        return [_pick(rng, _MANDARIN_ACTIVITIES)]
    verb, objects = _pick(rng, _MANDARIN_VERB_OBJECTS)
    return [verb, _pick(rng, objects)]


def _degree_and_adjective(
    rng: np.random.Generator, degrees: Sequence[str], adjectives: Sequence[str]
) -> list[str]:
    """很 好 / 太 贵 了 / 不 难: a degree word and an adjective, never a pair espeak-ng reads as another word
    (非常好 as "fēi chánghào", 不干净 as "bùgàn jìng")."""
    degree = _pick(rng, degrees)
    fitting = [
        a for a in adjectives if not (degree == "非常" and a[0] == "好" or degree == "不" and a == "干净")
    ]
    return [degree, _pick(rng, fitting), *(["了"] if degree == "太" else [])]


def _mandarin_statement(rng: np.random.Generator) -> list[str]:
    kind = rng.integers(8)
    subject = _mandarin_subject(rng)
    place, doings = _pick(rng, _MANDARIN_PLACES)
    if kind == 0:  # 我们今天在公园散步 / 他们都在图书馆看书
        adverb = _mandarin_adverb(rng, subject, 0.3)
        return _with_time(rng, subject, [*adverb, "在", place, *_pick(rng, doings)], 0.6)
    if kind == 1:  # 她明天要去商店买衣服
        modal = [_pick(rng, ("要", "想", "会"))] if rng.random() < 0.5 else []
        doing = list(_pick(rng, doings)) if rng.random() < 0.7 else []
        return _with_time(rng, subject, [*modal, "去", place, *doing], 0.6)
    if kind == 2:  # 我喜欢喝咖啡 / 弟弟会骑自行车
        return [*subject, _pick(rng, ("喜欢", "想", "要", "会", "常常", "经常")), *_mandarin_verb_phrase(rng)]
    if kind == 3:  # 我买了三本书 / 他喝了两杯茶
        verb, measure, nouns = _pick(rng, _MANDARIN_COUNTED)
        counted = [verb, "了", _pick(rng, _MANDARIN_NUMBERS), measure, _pick(rng, nouns)]
        return _with_time(rng, subject, counted, 0.3)
    if kind == 4:  # 妈妈在做饭 / 他们正在上课 (no 呢 at the end: espeak-ng reads 花呢 as one word)
        return [*subject, "正在" if rng.random() < 0.3 else "在", *_mandarin_verb_phrase(rng)]
    if kind == 5:  # 他已经回家了
        return [*subject, "已经", *_mandarin_verb_phrase(rng), "了"]
    if kind == 6:  # 我们明天再去公园 / 他下午再打电话
        time = _pick(rng, _MANDARIN_FUTURE_TIMES + _MANDARIN_PARTS_OF_DAY[1:])
        rest = ["去", place] if rng.random() < 0.5 else _mandarin_verb_phrase(rng)
        return [*subject, time, "再", *rest]
    doing = list(_pick(rng, doings)) if rng.random() < 0.5 else []  # 我们一起去公园吧
    return [_pick(rng, ("我们", "大家", "你们")), "一起", "去", place, *doing, "吧"]


def _mandarin_negation(rng: np.random.Generator) -> list[str]:
    kind = rng.integers(5)
    subject = _mandarin_subject(rng)
    if kind == 0:  # 我不喜欢喝咖啡 / 他们都不想去公园
        adverb = (
            [_pick(rng, ("都", "也") if _is_plural(subject) else ("也", "还"))] if rng.random() < 0.3 else []
        )
        if rng.random() < 0.5:
            return [
                *subject,
                *adverb,
                "不",
                _pick(rng, ("喜欢", "想", "会", "要")),
                *_mandarin_verb_phrase(rng),
            ]
        return [*subject, *adverb, "不", "想", "去", _pick(rng, _MANDARIN_PLACES)[0]]
    if kind == 1:  # 他昨天没去学校 / 我还没吃午饭
        when = _pick(rng, _MANDARIN_PAST_TIMES) if rng.random() < 0.5 else "还"
        rest = ["去", _pick(rng, _MANDARIN_PLACES)[0]] if rng.random() < 0.4 else _mandarin_verb_phrase(rng)
        return [*subject, when, _pick(rng, ("没", "没有")), *rest]
    if kind == 2:  # 我没有自行车
        return [*subject, "没有", _pick(rng, _MANDARIN_OWNABLE)]
    if kind == 3:  # 我没吃过饺子
        verb, objects = _pick(rng, _MANDARIN_VERB_OBJECTS[:4])
        return [*subject, "没", verb, "过", _pick(rng, objects)]
    return [_pick(rng, _MANDARIN_PRONOUNS[:4]), "不是", _pick(rng, _MANDARIN_JOBS)]  # 他不是医生


def _mandarin_question(rng: np.random.Generator) -> list[str]:
    kind = rng.integers(11)
    subject = _mandarin_subject(rng)
    place, doings = _pick(rng, _MANDARIN_PLACES)
    if kind == 0:  # 你喜欢吃饺子吗
        return [*subject, _pick(rng, ("喜欢", "会", "想", "要")), *_mandarin_verb_phrase(rng), "吗"]
    if kind == 1:  # 你明天去学校吗
        return _with_time(rng, subject, ["去", place, "吗"], 0.7)
    if kind == 2:  # 你去过北京吗
        return [*subject, "去", "过", place, "吗"]
    if kind == 3:  # 我喝茶你呢 (I drink tea; and you?)
        return [
            _pick(rng, ("我", "我们")),
            *_mandarin_verb_phrase(rng),
            _pick(rng, ("你", "你们", "他", "她")),
            "呢",
        ]
    if kind == 4:  # 我的钥匙呢 (where are my keys?)
        return [
            _pick(rng, ("我", "你", "他", "她")),
            "的",
            _pick(rng, ("钥匙", "手机", "书包", "雨伞", "护照")),
            "呢",
        ]
    if kind == 5:  # 谁在图书馆看书
        return ["谁", "在", place, *_pick(rng, doings)]
    if kind == 6:  # 你想吃什么 / 他在看什么
        verb, _ = _pick(rng, _MANDARIN_VERB_OBJECTS)
        return [*subject, _pick(rng, ("想", "在", "要")), verb, "什么"]
    if kind == 7:  # 你在哪里工作 / 他们什么时候去北京 / 你怎么去机场
        if rng.random() < 0.4:
            return [*subject, "在", "哪里", *_mandarin_verb_phrase(rng)]
        return [*subject, _pick(rng, ("什么时候", "怎么")), "去", place]
    if kind == 8:  # 你为什么不去学校 (a pronoun: espeak-ng reads 工人为什么 as "gōng rénwéi shénme")
        rest = ["去", place] if rng.random() < 0.5 else _mandarin_verb_phrase(rng)
        return [_pick(rng, _MANDARIN_PRONOUNS), "为什么", "不", *rest]
    if kind == 9:  # 他是医生吗 / 你有几本书
        if rng.random() < 0.5:
            return [*subject, "是", _pick(rng, _MANDARIN_JOBS), "吗"]
        _, measure, nouns = _pick(rng, _MANDARIN_COUNTED)
        return [*subject, _pick(rng, ("有", "买", "要")), "几", measure, _pick(rng, nouns)]
    measure, noun, _ = _pick(rng, _MANDARIN_DESCRIBED)  # 这个饭馆怎么样
    return [_pick(rng, ("这", "那")), measure, noun, "怎么样"]


def _mandarin_description(rng: np.random.Generator) -> list[str]:
    kind = rng.integers(7)
    if kind <= 1:  # 这本书很有意思 / 那件衣服太贵了 / 这个问题不难
        measure, noun, adjectives = _pick(rng, _MANDARIN_DESCRIBED)
        how = _degree_and_adjective(rng, (*_MANDARIN_DEGREES, "不"), adjectives)
        return [_pick(rng, ("这", "那")), measure, noun, *how]
    if kind == 2:  # 今天天气很好 / 明天会下雨 / 外面在下雪
        if rng.random() < 0.5:
            weather = _degree_and_adjective(rng, _MANDARIN_DEGREES[:5], _MANDARIN_WEATHER)
            return [*_mandarin_time(rng), "天气", *weather]
        opener = [_pick(rng, ("外面", "现在"))] if rng.random() < 0.3 else _mandarin_time(rng)
        return [*opener, _pick(rng, ("会", "在", "不会")), _pick(rng, _MANDARIN_WEATHER_EVENTS)]
    if kind == 3:  # 她跑得很快 / 他说汉语说得很流利
        subject = _mandarin_subject(rng)
        verb, adjectives = _pick(rng, _MANDARIN_HOW_DONE)
        degree = _pick(rng, ("很", "特别", "真", "不"))  # not 非常: espeak-ng reads 得非常 as "dé fēicháng"
        if verb == "说" and rng.random() < 0.6:
            return [
                *subject,
                "说",
                _pick(rng, _MANDARIN_LANGUAGES),
                "说",
                "得",
                degree,
                _pick(rng, adjectives),
            ]
        return [*subject, verb, "得", degree, _pick(rng, adjectives)]
    if kind == 4:  # 孩子们高兴地唱歌
        manner, doings = _pick(rng, _MANDARIN_MANNERS)
        return [*_mandarin_subject(rng), manner, "地", *_pick(rng, doings)]
    if kind == 5:  # 哥哥比弟弟高
        one, other, adjectives = _pick(rng, _MANDARIN_COMPARED)
        return [one, "比", other, _pick(rng, adjectives)]
    if rng.random() < 0.5:  # 我哥哥是警察 / 他们都是学生
        who = [_pick(rng, _MANDARIN_PRONOUNS)]
        if rng.random() < 0.5:
            who = [_pick(rng, ("我", "你", "他", "她")), _pick(rng, _MANDARIN_KIN[:8])]
        copula = _pick(rng, ("是", "也是", "都是") if _is_plural(who) else ("是", "也是"))
        return [*who, copula, _pick(rng, _MANDARIN_JOBS)]
    return [
        *_mandarin_subject(rng),
        "是",
        _pick(rng, ("我", "你", "他", "她")),
        "的",
        _pick(rng, _MANDARIN_KIN),
    ]


def _mandarin_animals(rng: np.random.Generator) -> list[str]:
    kind = rng.integers(4)
    animal = _pick(rng, _MANDARIN_ANIMALS)
    if kind == 0:  # 小猫在房间里睡觉
        where = _pick(rng, ("房间里", "花园里", "树上", "桌子上", "门口"))
        return [animal, "在", where, *_pick(rng, (("睡觉",), ("玩",), ("休息",), ("吃", "东西")))]
    if kind == 1:  # 它喜欢吃鱼
        liking = _pick(rng, ("喜欢", "不", "想", "不想", "不喜欢"))
        return [animal, liking, "吃", _pick(rng, ("鱼", "肉", "面包", "米饭"))]
    if kind == 2:  # 小狗跑得很快
        verb, adjective = _pick(rng, (("跑", "快"), ("跳", "高"), ("吃", "多"), ("睡", "好")))
        return [animal, verb, "得", _pick(rng, ("很", "特别", "真")), adjective]
    owner = _pick(rng, ("我家", "他家", "她家", "我们家", "邻居"))  # 我家养了一只猫
    if rng.random() < 0.7:  # 只 after 一 only: espeak-ng reads 两只 as zhǐ (see the section's notes)
        return [owner, "养", "了", "一", "只", _pick(rng, ("猫", "狗", "鸟"))]
    return [owner, "养", "了", _pick(rng, _MANDARIN_NUMBERS[:5]), "条", "鱼"]


def _mandarin_command(rng: np.random.Generator) -> list[str]:
    kind = rng.integers(3)
    if kind == 0:  # 请喝茶 / 请再说一遍
        return ["请", "再", "说", "一", "遍"] if rng.random() < 0.2 else ["请", *_mandarin_verb_phrase(rng)]
    if kind == 1:  # 别看电视了
        return [_pick(rng, ("别", "不要")), *_mandarin_verb_phrase(rng), "了"]
    return [_pick(rng, ("你", "你们")), "快", *_mandarin_verb_phrase(rng), "吧"]  # 你快回家吧


# How often each kind of sentence is drawn.
_MANDARIN_SENTENCE_KINDS = (
    (_mandarin_statement, 0.32), (_mandarin_negation, 0.16), (_mandarin_question, 0.2),
    (_mandarin_description, 0.18), (_mandarin_animals, 0.07), (_mandarin_command, 0.07),
)  # fmt: skip


def random_mandarin_sentence(rng: np.random.Generator, segmented: bool = False) -> str:
    """Draws a sentence of 2 to `MANDARIN_MAX_CHARACTERS` characters from the Mandarin grammar.

    Args:
        rng: the random generator; the same state gives the same sentence.
        segmented: False (default): characters only, no spaces or punctuation, as Chinese is written
            (e.g. "他们去学校"). True: the same sentence with its words (from `MANDARIN_VOCABULARY`)
            separated by single spaces (e.g. "他们 去 学校"); the draws are the same either way.

    Returns:
        The sentence.
    """
    if rng.random() < 0.05:
        words = list(_pick(rng, _MANDARIN_PHRASES))  # 谢谢: short fixed phrases, like real speech has
    else:
        kinds, weights = zip(*_MANDARIN_SENTENCE_KINDS, strict=True)
        while True:  # a few templates can run long; drawing again keeps every sentence within the limit
            words = kinds[int(rng.choice(len(kinds), p=np.array(weights) / sum(weights)))](rng)
            if len("".join(words)) <= MANDARIN_MAX_CHARACTERS:
                break
    return " ".join(words) if segmented else "".join(words)


def check_mandarin_speakable(text: str) -> None:
    """Raises ValueError unless ``text`` is characters of the Mandarin grammar (`mandarin_characters()`).

    espeak-ng's Mandarin dictionary says each of them as its syllable; a character it lacks comes out as
    something else (熊 in English), so other text is refused rather than spoken wrongly.
    """
    unknown = sorted(set(text) - set(mandarin_characters()))
    if unknown:
        raise ValueError(
            f"cannot speak {unknown} in {text!r} with the Mandarin voice: it speaks the characters of the "
            "lesson's grammar (mandarin_characters()), without spaces or punctuation"
        )
    if not text:
        raise ValueError("text is empty; pass at least one character of mandarin_characters()")


# The character language model (implementation.py section 9 with MANDARIN's tokens): the beam search scores
# it at every emitted character (§3.9, as recalled: character-level decoding, no word segmentation). It learns
# from sentences of the grammar that are never a dev sentence, so what it adds on dev is what it knows of
# the grammar, not a memorised transcript. The order was chosen on held-out sentences of the grammar
# (benchmarks/README.md, "Mandarin: the recipe").
MANDARIN_LM_ORDER = 4


def mandarin_lm(
    seed: int, sentences: int = 20_000, order: int = MANDARIN_LM_ORDER, exclude: Iterable[str] = ()
) -> NGramLM:
    """A character n-gram LM on ``sentences`` of the Mandarin grammar drawn with ``seed`` (from its own
    stream, ``[seed, 99]``, as ``grammar_lm``), leaving out every sentence in ``exclude`` (the dev texts)."""
    rng, leave_out = np.random.default_rng([seed, 99]), set(exclude)
    drawn = (random_mandarin_sentence(rng) for _ in range(sentences))
    return NGramLM.train([s for s in drawn if s not in leave_out], order=order, alphabet=MANDARIN)


# --- 4.2 Pinyin, for reading the characters ---

# Where pypinyin's reading of a word of the grammar, looked up on its own, is not the reading the grammar
# means: the particles 得 and 地 (de, not dé and dì) and 过 (guo), the measure word 只 (zhī), 种 "plant"
# (zhòng), 长 "long" (cháng), 照片 (zhào piàn), and the neutral tone of everyday words (妈妈 is mā ma).
_PINYIN_CORRECTIONS = {
    "得": "de", "地": "de", "过": "guo", "只": "zhī", "种": "zhòng", "长": "cháng",
    "妈妈": "mā ma", "爸爸": "bà ba", "哥哥": "gē ge", "姐姐": "jiě jie", "妹妹": "mèi mei",
    "爷爷": "yé ye", "奶奶": "nǎi nai", "叔叔": "shū shu", "谢谢": "xiè xie", "朋友": "péng you",
    "朋友们": "péng you men", "衣服": "yī fu", "舒服": "shū fu", "东西": "dōng xi", "窗户": "chuāng hu",
    "早上": "zǎo shang", "晚上": "wǎn shang", "明天早上": "míng tiān zǎo shang",
    "昨天晚上": "zuó tiān wǎn shang", "行李": "xíng li", "照片": "zhào piàn",
    # pypinyin's words that change a tone the grammar's policy keeps (不 bù, 个 gè, as on their own), so
    # that a sentence reads the same whichever way it is split into words:
    "不要": "bù yào", "不会": "bù huì", "不是": "bù shì", "这个": "zhè gè", "那个": "nà gè",
}  # fmt: skip


def _segment_mandarin(text: str) -> list[str]:
    """Greedy longest match against `MANDARIN_VOCABULARY`; a character it does not know is a word."""
    vocabulary, longest = set(MANDARIN_VOCABULARY), max(len(word) for word in MANDARIN_VOCABULARY)
    words, start = [], 0
    while start < len(text):
        length = next(
            (
                n
                for n in range(min(longest, len(text) - start), 1, -1)
                if text[start : start + n] in vocabulary
            ),
            1,
        )
        words.append(text[start : start + length])
        start += length
    return words


def mandarin_pinyin(text: str) -> str:
    """Pinyin with tone marks, one syllable per character, separated by spaces: "他们去学校" -> "tā men qù
    xué xiào".

    From ``pypinyin`` (``python -m pip install pypinyin``; imported here, so importing this module does
    not need it), word by word: ``text``'s own spaces if it has them (`random_mandarin_sentence(...,
    segmented=True)`), else the grammar's words found by longest match; with the corrections above for
    the grammar's words. Tones are each syllable's own (dictionary) tone: 不 is always "bù", 一 "yī" and
    个 "gè", although 不 and 一 change before some syllables when spoken (espeak-ng says them changed); a
    neutral tone has no mark ("men", "mā ma"). The same sentence gives the same pinyin segmented or not.
    """
    try:
        from pypinyin import Style, lazy_pinyin
    except ImportError:
        raise ImportError("mandarin_pinyin needs pypinyin: python -m pip install 'pypinyin>=0.50'") from None
    words = text.split() if " " in text else _segment_mandarin(text)
    syllables = []
    for word in words:
        reading = _PINYIN_CORRECTIONS.get(word)
        syllables += reading.split() if reading else lazy_pinyin(word, style=Style.TONE)
    return " ".join(syllables)


# --- 4.3 Speakers and splits ---

# Voice variants heard in training and in dev, disjoint. Every variant of `ESPEAK_VARIANTS` (and klatt3-6)
# speaks cmn. Measured as the distance between two variants' average log-mel spectra over three sentences
# (RMS, in natural-log units; 2.0 between two variants on average), three pairs are near-twins: "" and m6
# (0.29), klatt and klatt2 (0.29), klatt4 and klatt5 (0.30); one of each is left out, so that no dev
# variant has a twin in training. m8 is left out too (m7 with a filter, 0.83 from it). Dev holds out a
# male (m3; its nearest in training is "" at 0.39), a female (f3: f2 at 0.79) and a Klatt voice (klatt3:
# klatt4 at 0.62), about as far as the training variants are from each other (median 0.77, least 0.37).
MANDARIN_TRAIN_VARIANTS: tuple[str, ...] = (
    "", "m1", "m2", "m4", "m5", "m7", "f1", "f2", "f4", "f5", "klatt", "klatt4", "klatt6",
)  # fmt: skip
MANDARIN_DEV_VARIANTS: tuple[str, ...] = ("m3", "f3", "klatt3")
# Speaking rate, "words" per minute to espeak-ng: for cmn about 0.28 s a character at 150 and 0.17 s at
# 250 (measured), around the 4-5 syllables a second of read Mandarin.
MANDARIN_RATE_WPM = (150, 250)
# Intonation range, 0-100: espeak-ng scales the tones' pitch contours by it (see the section's notes), so
# Mandarin speakers keep it from 60 up; English draws from 25.
MANDARIN_PITCH_RANGE = (60, 100)


def make_mandarin_speaker_pool(
    num_speakers: int, seed: Seed, variants: Sequence[str] = MANDARIN_TRAIN_VARIANTS
) -> list[EspeakSpeaker]:
    """Draws `num_speakers` Mandarin speakers: voice "cmn", a variant from `variants`, and rate, pitch,
    intonation range (`MANDARIN_RATE_WPM`, `ESPEAK_PITCH`, `MANDARIN_PITCH_RANGE`) and loudness."""
    return make_espeak_speaker_pool(
        num_speakers, (MANDARIN_VOICE,), seed, variants, MANDARIN_RATE_WPM, MANDARIN_PITCH_RANGE
    )


def make_mandarin_splits(
    train_size: int,
    dev_size: int,
    seed: int = 0,
    train_variants: Sequence[str] = MANDARIN_TRAIN_VARIANTS,
    dev_variants: Sequence[str] = MANDARIN_DEV_VARIANTS,
    **options,
) -> dict[str, SyntheticSplit]:
    """The three splits of `make_espeak_splits` in Mandarin: the grammar's unsegmented sentences
    (`random_mandarin_sentence`), "train" spoken by `train_variants`, both dev splits by `dev_variants`,
    never heard in training. ``options``: `make_espeak_splits`'s (noise, speakers, rate, workers); the
    same determinism (utterance i depends only on the split's seed and i)."""
    voices = dict(train_voices=train_variants, dev_voices=dev_variants)
    return make_espeak_splits(train_size, dev_size, seed, **options, **voices, language="mandarin")


# ----------------------------------------------------------------------------------------------------------
# 5. The data of a training run
# ----------------------------------------------------------------------------------------------------------


# The decoder's weights (alpha, beta) of Q(y) = log p_ctc + alpha log p_lm + beta |y| (§3.8), by the
# alphabet's language: the word LM's, and the character LM's, where |y| counts characters. Mandarin's were
# tuned on a tuning split of its own (benchmarks/tune_decoder.py; benchmarks/README.md).
DECODING = {"english": (0.5, 1.0), "mandarin": (0.5, 3.0)}
# How train_minimal.py trains a corpus where it needs other than its defaults (TRAIN_SIZE utterances and
# TrainConfig's recipe; flags override). Mandarin's 452 characters need more updates and more examples of
# each character than English's 28 symbols (benchmarks/README.md, "Mandarin: the recipe"), and with Adam
# about half of the seeds started slowly and never caught up, where SGD with Nesterov momentum (the paper's
# optimiser, as we recall it) took off on most of them ("Mandarin: the optimiser decides the start").
TRAIN_SIZE = 2000
RECIPES = {"mandarin": {"train_size": 3000, "epochs": 8, "optimizer": "sgd", "lr": 0.05}}


def training_recipe(
    corpus: str,
    train_size: int | None = None,
    epochs: int | None = None,
    optimizer: str | None = None,
    lr: float | None = None,
) -> tuple[int, int, str, float]:
    """(training utterances, epochs, optimizer, peak learning rate) for training on `corpus`: each as given,
    else the corpus's `RECIPES` entry, else the default (`TRAIN_SIZE`, `TrainConfig`'s). A learning rate
    belongs to the optimiser it was chosen for: ``optimizer="adam"`` on Mandarin, without `lr`, gets
    TrainConfig's Adam rate, not the SGD one."""
    recipe = dict(train_size=TRAIN_SIZE, epochs=TrainConfig.epochs, optimizer=TrainConfig.optimizer)
    recipe |= dict(lr=TrainConfig.lr) | RECIPES.get(corpus, {})
    optimizer = optimizer or recipe["optimizer"]
    if lr is None:
        lr = recipe["lr"] if optimizer == recipe["optimizer"] else TrainConfig.lr
    given = dict(train_size=train_size, epochs=epochs)  # 0 stays 0, for the caller to refuse
    train_size, epochs = (recipe[name] if value is None else value for name, value in given.items())
    return train_size, epochs, optimizer, lr


def training_data(args, config: DS2Config) -> tuple[dict, NGramLM, str, DS2Config]:
    """What ``train_minimal.py`` trains on: ``({split: (spectrograms, texts)}, word LM, a summary line,
    config)``; a causal model's config comes back with the training set's normalisation prior.

    ``args``: its flags (``data``, ``train_size``, ``dev_size``, ``seed``, ``noise``, ``workers``,
    ``lm_sentences``, ``cache_dir``, ``no_cache``; for a real corpus ``data_dir``, ``dev_dir``,
    ``min_seconds``, ``max_seconds``). Synthetic speech (letter-phones or espeak-ng) comes through the
    cache with an LM on the grammar's sentences; a real corpus is checked for CTC feasibility against
    ``config``'s strides and its LM learns from the training transcripts.
    """
    t_start, sources = (
        time.time(),
        [],
    )  # one line per split: "... from the cache ..." or "... synthesised ..."
    real = args.data in ("librispeech", "manifest")
    if real:  # recorded speech: read, normalised, filtered, checked for CTC; says what it dropped
        splits = read_corpus_splits(
            args.data, args.data_dir, args.dev_dir, args.seed, args.min_seconds, args.max_seconds, config
        )
    else:  # letter-phones (implementation.py), English or Mandarin spoken by espeak-ng, all cached
        cache = dict(cache_dir=args.cache_dir, use_cache=not args.no_cache, log=sources.append)
        corpus = args.data if args.data in CORPORA else "letters"
        splits = cached_splits(
            args.train_size, args.dev_size, args.seed, args.noise, args.workers, **cache, corpus=corpus
        )
    if args.data == "mandarin":  # §3.9: the same network; only the data and the output alphabet change
        config = dataclasses.replace(config, alphabet=MANDARIN, num_classes=None)
    if config.normalize == "causal" and config.normalize_prior is None:  # the training set's, once
        raw = featurize_batch(splits["train"].waveforms, raw=True)
        prior = estimate_causal_prior(raw, config.spectrogram_floor_db)
        config = dataclasses.replace(config, normalize_prior=prior)
    prior = config.causal_prior
    data = {
        name: (featurize_batch(split.waveforms, prior=prior), split.texts) for name, split in splits.items()
    }
    hours, trained_on = splits["train"].durations_s().sum() / 3600, len(data["train"][1])
    if real:  # the word LM learns from the training transcripts (no grammar to sample from)
        lm = NGramLM.train(data["train"][1], order=3)
        summary = (
            f"data: {trained_on} train utterances ({hours:.2f} h of audio), {len(data['dev'][1])} dev from "
            f"{splits['dev'].source}; LM on the {trained_on} training transcripts ({time.time() - t_start:.1f} s)"
        )
    else:
        if (
            args.data == "mandarin"
        ):  # a character LM, on sentences of the grammar that are never dev sentences
            dev = {text for name, split in splits.items() if name != "train" for text in split.texts}
            lm = mandarin_lm(args.seed, args.lm_sentences, exclude=dev)
            kind = f"character {lm.order}-gram LM on {args.lm_sentences} sentences less the dev ones"
        else:
            lm, kind = grammar_lm(args.seed, args.lm_sentences), f"LM on {args.lm_sentences} sentences"
        cached = bool(sources) and all("from the cache" in line for line in sources)  # --no-cache: []
        summary = (
            f"data: {trained_on} train utterances ({hours * 60:.1f} min of audio), {args.dev_size} dev-clean, "
            f"{args.dev_size} dev-noisy; {kind} ({time.time() - t_start:.1f} s; "
            f"audio {'from the cache' if cached else 'synthesised'})"
        )
    return data, lm, summary, config
