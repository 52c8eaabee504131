"""Corpora beyond the letter-phones, and the on-disk cache of synthesised speech.

``implementation.py`` holds the lesson's own synthetic speech (the letter-phones of its section 11). This
module holds the data that takes the same pipeline further:

    1. The cache               synthesised splits kept on disk, keyed by recipe and by a fingerprint of
                               what the synthesiser produces (``cached_splits``, ``synthesis_fingerprint``)
    2. English from espeak-ng  real English spelling spoken by a formant synthesiser (``--data espeak``)
    3. Real corpora            LibriSpeech folders and CSV/JSONL manifests (``--data librispeech|manifest``)

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
from collections.abc import Callable, Iterator, Sequence
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
    DeepSpeech2,
    DS2Config,
    NGramLM,
    Seed,
    Speaker,
    SyntheticSplit,
    _active_rms,
    _seed_words,
    add_noise,
    atomic_write,
    check_speakable,
    check_split_arguments,
    ctc_min_frames,
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
def espeak_fingerprint() -> str:
    """sha256 of what the espeak-ng corpus produces: ``make_espeak_splits`` at a tiny size, every training
    utterance noisy, on top of ``synthesis_fingerprint()`` (the grammar and the noise are shared), with
    numpy's, torch's and torchaudio's versions (torchaudio resamples). The espeak-ng library's own version
    is part of the recipe instead (see ``cached_splits``)."""
    from importlib.metadata import version

    versions = f"numpy {np.__version__} torch {torch.__version__} torchaudio {version('torchaudio')}"
    digest = hashlib.sha256(f"espeak-ng; {versions}; {synthesis_fingerprint()}".encode())
    splits = make_espeak_splits(2, 2, FINGERPRINT_SEED, 1.0, num_train_speakers=3, num_dev_speakers=3)
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

    ``corpus="espeak"`` does the same for ``make_espeak_splits`` (section 2, its default voices): the key
    then also holds the voices and the espeak-ng library's version, and the fingerprint is
    ``espeak_fingerprint()``.

    Returns:
        {"train": ..., "dev-clean": ..., "dev-noisy": ...}, equal to ``make_splits``'s result (or
        ``make_espeak_splits``'s).
    """
    if corpus not in ("letters", "espeak"):
        raise ValueError(f"corpus must be 'letters' or 'espeak', got {corpus!r}")
    make = make_splits if corpus == "letters" else make_espeak_splits
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
    if corpus == "espeak":  # the recipe also names the voices and the library that speaks them
        code, speaker_type, prefix = espeak_fingerprint(), EspeakSpeaker, "espeak-"
        voices = {"train": ESPEAK_TRAIN_VOICES, "dev-clean": ESPEAK_DEV_VOICES}
        voices["dev-noisy"] = ESPEAK_DEV_VOICES
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
    rng: np.random.Generator, voices: Sequence[str], variants: Sequence[str] = ESPEAK_VARIANTS
) -> EspeakSpeaker:
    """Draws a speaker: an accent from `voices`, a variant, and rate, pitch, range and loudness."""
    return EspeakSpeaker(
        voice=str(voices[int(rng.integers(len(voices)))]),
        variant=str(variants[int(rng.integers(len(variants)))]),
        rate_wpm=int(rng.integers(ESPEAK_RATE_WPM[0], ESPEAK_RATE_WPM[1] + 1)),
        pitch=int(rng.integers(ESPEAK_PITCH[0], ESPEAK_PITCH[1] + 1)),
        pitch_range=int(rng.integers(ESPEAK_PITCH_RANGE[0], ESPEAK_PITCH_RANGE[1] + 1)),
        gain_db=float(rng.uniform(-10.0, 10.0)),
    )


def make_espeak_speaker_pool(
    num_speakers: int, voices: Sequence[str], seed: Seed, variants: Sequence[str] = ESPEAK_VARIANTS
) -> list[EspeakSpeaker]:
    """Draws `num_speakers` speakers of the accents `voices` (see `make_speaker_pool`)."""
    if num_speakers < 1:
        raise ValueError(f"num_speakers must be at least 1, got {num_speakers}")
    if not voices or not variants:
        raise ValueError("voices and variants must each name at least one espeak-ng voice")
    rng = np.random.default_rng([*_seed_words(seed), 0xE5])  # 0xE5: a stream of its own for speakers
    return [random_espeak_speaker(rng, voices, variants) for _ in range(num_speakers)]


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
        text: lower-case words, a-z, space and apostrophe (see `check_speakable`).
        speaker: the accent, variant, rate and pitch (`gain_db` is applied later, by the caller).
        seed: seeds espeak-ng's own noise generator (breath and frication noise).

    Returns:
        float32 samples in [-1, 1), with about 10 ms of silence at each end.
    """
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
    seed_words, speakers, noise_kinds, low, high, noisy_fraction = recipe
    utterances = []
    for index in indices:
        rng = np.random.default_rng([*seed_words, index])
        speaker = speakers[int(rng.integers(len(speakers)))]
        text = random_sentence(rng)
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
) -> SyntheticSplit:
    """Synthesises a split of English from espeak-ng: `make_split` with espeak-ng speakers.

    Utterance `i` draws its speaker, sentence, espeak-ng seed and noise from its own generator, seeded by
    `(seed, i)`, so it is the same whatever the split's size and the number of workers.

    Three stages, so that forked workers never run torch kernels: (1) workers speak each sentence at
    22,050 Hz; (2) this process resamples to `sample_rate` with torchaudio; (3) workers set the level and
    add noise (babble noise, made of letter-phone speech, is the slow part: ~0.1 s an utterance).

    Args: as `make_split`, with `speakers` from `make_espeak_speaker_pool`.

    Returns:
        The split; `split.noise` and `split.snr_db` record what was added to each utterance.
    """
    pool = "make_espeak_speaker_pool"
    low, high = check_split_arguments(num_utterances, speakers, noise_kinds, snr_db, noisy_fraction, pool)
    _espeak_files()  # before forking: one private copy of the library, removed when this process exits
    seed_words = _seed_words(seed)
    recipe = (seed_words, tuple(speakers), tuple(noise_kinds), low, high, noisy_fraction)
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
    train_voices: Sequence[str] = ESPEAK_TRAIN_VOICES,
    dev_voices: Sequence[str] = ESPEAK_DEV_VOICES,
) -> dict[str, SyntheticSplit]:
    """The three splits of `make_splits`, spoken in English by espeak-ng; dev in accents unheard in train.

    "train" is spoken in `train_voices`, "dev-clean" and "dev-noisy" in `dev_voices` (by default
    Scottish and Lancastrian English), so no accent of a dev split occurs in training; the two dev splits
    share those accents but not their speakers (each has its own pool of rates and pitches). Noise as in
    `make_splits`: `train_noise_fraction` of "train" gets white, pink or babble noise at an SNR drawn
    from `train_snr_db`; "dev-noisy" gets one of them at 10 dB SNR.

    Raises ImportError (one line, with the install command) when espeak-ng is not installed.

    Returns:
        {"train": ..., "dev-clean": ..., "dev-noisy": ...}
    """
    shared = sorted(set(train_voices) & set(dev_voices))
    if shared:
        raise ValueError(
            f"train_voices and dev_voices share {shared}; the dev accents must be unheard in training"
        )
    check_espeak_available()
    pools = {
        "train": make_espeak_speaker_pool(num_train_speakers, train_voices, (seed, 0)),
        "dev-clean": make_espeak_speaker_pool(num_dev_speakers, dev_voices, (seed, 1)),
        "dev-noisy": make_espeak_speaker_pool(num_dev_speakers, dev_voices, (seed, 2)),
    }
    if set(pools["dev-clean"]) & set(pools["dev-noisy"]):  # ints drawn from small ranges could collide
        raise RuntimeError("the speaker pools of dev-clean and dev-noisy overlap; choose another seed")
    return three_splits(
        make_espeak_split,
        pools,
        train_size,
        dev_size,
        seed,
        train_noise_fraction,
        train_snr_db,
        sample_rate,
        workers,
    )


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
# 4. The data of a training run
# ----------------------------------------------------------------------------------------------------------


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
    else:  # letter-phones (implementation.py) or English spoken by espeak-ng (py), both cached
        cache = dict(cache_dir=args.cache_dir, use_cache=not args.no_cache, log=sources.append)
        corpus = "espeak" if args.data == "espeak" else "letters"
        splits = cached_splits(
            args.train_size, args.dev_size, args.seed, args.noise, args.workers, **cache, corpus=corpus
        )
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
        lm = grammar_lm(args.seed, args.lm_sentences)
        cached = bool(sources) and all("from the cache" in line for line in sources)  # --no-cache: []
        summary = (
            f"data: {trained_on} train utterances ({hours * 60:.1f} min of audio), {args.dev_size} dev-clean, "
            f"{args.dev_size} dev-noisy; LM on {args.lm_sentences} sentences ({time.time() - t_start:.1f} s; "
            f"audio {'from the cache' if cached else 'synthesised'})"
        )
    return data, lm, summary, config
