"""The cache of synthesised splits (corpora.py section 1): hit, miss, corruption, staleness, and the CLI.

Tiny splits (a few utterances) in a temporary cache folder; every test takes a second or two.
"""

import importlib.util
import signal
import sys
import warnings
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import corpora  # noqa: E402
import implementation as ds2  # noqa: E402
import train_minimal  # noqa: E402

RECIPE = dict(train_size=5, dev_size=3, seed=7, train_noise_fraction=0.5)


def assert_same_splits(got, expected):
    assert list(got) == list(expected) == ["train", "dev-clean", "dev-noisy"]
    for name in expected:
        a, b = got[name], expected[name]
        assert (a.name, a.sample_rate, a.texts, a.speakers, a.noise) == (
            b.name,
            b.sample_rate,
            b.texts,
            b.speakers,
            b.noise,
        )
        assert a.snr_db == b.snr_db  # inf for clean utterances survives the round trip
        assert len(a.waveforms) == len(b.waveforms)
        for x, y in zip(a.waveforms, b.waveforms, strict=True):
            assert x.dtype == y.dtype == torch.float32 and torch.equal(x, y)  # bit for bit


def no_synthesis(*args, **kwargs):
    raise AssertionError("synthesised although the cache holds the split")


@pytest.fixture
def cache(tmp_path):
    """A filled cache folder and what make_splits returns for RECIPE."""
    lines = []
    corpora.cached_splits(**RECIPE, cache_dir=tmp_path, log=lines.append)
    assert len(lines) == 3 and all("synthesised" in line for line in lines)  # a miss for each split
    return tmp_path, ds2.make_splits(**RECIPE)


def entry(folder, split):
    (path,) = folder.glob(f"{split}-*.pt")
    return path


def test_a_miss_writes_one_file_per_split_and_a_hit_skips_synthesis(cache, monkeypatch):
    folder, expected = cache
    assert sorted(p.name.split("-")[0] for p in folder.iterdir()) == ["dev", "dev", "train"]
    assert not list(folder.glob(".tmp-*"))  # atomic writes leave no temporary files
    monkeypatch.setattr(corpora, "make_splits", no_synthesis)
    lines = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = corpora.cached_splits(**RECIPE, cache_dir=folder, log=lines.append)
    assert all("from the cache" in line for line in lines) and len(lines) == 3
    assert_same_splits(got, expected)


def test_the_miss_path_returns_what_make_splits_returns(tmp_path):
    assert_same_splits(corpora.cached_splits(**RECIPE, cache_dir=tmp_path), ds2.make_splits(**RECIPE))


def test_dev_splits_are_shared_by_different_training_sets(cache):
    folder, _ = cache
    lines = []
    got = corpora.cached_splits(**{**RECIPE, "train_size": 4}, cache_dir=folder, log=lines.append)
    assert ["synthesised" in line for line in lines] == [False, False, True]  # dev from cache, train made
    assert_same_splits(got, ds2.make_splits(**{**RECIPE, "train_size": 4}))


def test_the_recipe_is_in_the_key(cache):
    folder, _ = cache
    lines = []
    corpora.cached_splits(**{**RECIPE, "train_noise_fraction": 0.2}, cache_dir=folder, log=lines.append)
    assert "synthesised" in lines[-1] and len(list(folder.glob("train-*.pt"))) == 2


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda path: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]), "corrupt"),
        (lambda path: path.write_bytes(b"not a torch file"), "corrupt"),
        (lambda path: torch.save({"format": "something else"}, path), "corrupt"),
        ("samples", "checksum mismatch"),
        ("recipe", "stale"),
    ],
    ids=["truncated", "garbage", "foreign", "flipped-sample", "other-recipe"],
)
def test_a_damaged_entry_gives_one_warning_and_is_regenerated(cache, damage, reason):
    folder, expected = cache
    path = entry(folder, "dev-noisy")
    if isinstance(damage, str):  # edit one field inside a well-formed file
        payload = torch.load(path, weights_only=True)
        if damage == "samples":
            payload["samples"][100] += 1e-3
        else:
            payload["recipe"] = payload["recipe"].replace('"seed": 7', '"seed": 8')
        torch.save(payload, path)
    else:
        damage(path)
    with pytest.warns(UserWarning) as caught:
        got = corpora.cached_splits(**RECIPE, cache_dir=folder)
    assert len(caught) == 1 and reason in str(caught[0].message) and str(path) in str(caught[0].message)
    assert "\n" not in str(caught[0].message)  # one line
    assert_same_splits(got, expected)
    with warnings.catch_warnings():  # rewritten: the next call is a clean hit
        warnings.simplefilter("error")
        assert_same_splits(corpora.cached_splits(**RECIPE, cache_dir=folder), expected)


def test_an_entry_of_another_synthesiser_is_stale(cache, monkeypatch):
    folder, expected = cache
    monkeypatch.setattr(corpora, "synthesis_fingerprint", lambda: "0" * 64)  # as if it made other audio
    with pytest.warns(UserWarning) as caught:
        got = corpora.cached_splits(**RECIPE, cache_dir=folder)
    assert len(caught) == 3 and all("stale" in str(w.message) for w in caught)  # one per split
    assert_same_splits(got, expected)


def load_copy(tmp_path, name, edit, of="implementation.py"):
    """``of`` with one edit, imported as another module."""
    source = (ROOT / of).read_text(encoding="utf-8")
    edited = edit(source)
    assert edited != source or name.endswith("same"), f"{name}: the edit changed nothing"
    path = tmp_path / f"{name}.py"
    path.write_text(edited, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while it is being executed
    spec.loader.exec_module(module)
    return module


def move_to_end(source, name):
    """The source with top-level function ``name`` moved to the end of the file."""
    start = source.index(f"\ndef {name}(") + 1
    end = source.index("\n\n\n", start) + 3
    return source[:start] + source[end:] + "\n\n" + source[start:end]


def test_the_fingerprint_follows_what_the_synthesiser_makes_not_its_source(tmp_path):
    fingerprint = corpora.synthesis_fingerprint.__wrapped__
    unchanged = fingerprint(load_copy(tmp_path, "copy_same", lambda s: s))
    assert unchanged == corpora.synthesis_fingerprint()
    refactors = {  # comments, docstrings, moved code, the training code: the same audio, the same key
        "copy_comment": lambda s: s.replace(
            "# --- 11.4 Synthesis ---", "# --- 11.4 Synthesis, edited ---\n# a new comment", 1
        ),
        "copy_docstring": lambda s: s.replace(
            '"""Synthesises a split:', '"""Synthesises a split (edited):', 1
        ),
        "copy_moved": lambda s: move_to_end(s, "_smooth"),
        "copy_training": lambda s: s.replace("def learning_rate(", "def learning_rate(  ", 1),
    }
    for name, edit in refactors.items():
        assert fingerprint(load_copy(tmp_path, name, edit)) == unchanged, name
    constants = {  # anything that changes the audio, the noise, the grammar or the three-split recipe
        "copy_glide": lambda s: s.replace("_GLIDE_MS = 30.0", "_GLIDE_MS = 31.0", 1),
        "copy_pitch": lambda s: s.replace("pitch_hz = 80.0 *", "pitch_hz = 81.0 *", 1),
        "copy_babble": lambda s: s.replace("BABBLE_SECONDS = 12.0", "BABBLE_SECONDS = 11.0", 1),
        "copy_dev_snr": lambda s: s.replace("NOISE_KINDS, 10.0, **common", "NOISE_KINDS, 11.0, **common", 1),
        "copy_grammar": lambda s: s.replace(
            "(_statement, 0.4), (_command, 0.15)", "(_statement, 0.45), (_command, 0.1)", 1
        ),
    }
    for name, edit in constants.items():
        assert fingerprint(load_copy(tmp_path, name, edit)) != unchanged, name


def test_the_cache_folder_moves_with_the_environment_variable_or_the_argument(tmp_path, monkeypatch):
    monkeypatch.setenv(corpora.SPLIT_CACHE_ENV, str(tmp_path / "env"))
    assert corpora.split_cache_dir() == tmp_path / "env"
    assert corpora.split_cache_dir(tmp_path / "arg") == tmp_path / "arg"
    corpora.cached_splits(**RECIPE)
    assert len(list((tmp_path / "env").glob("*.pt"))) == 3
    monkeypatch.delenv(corpora.SPLIT_CACHE_ENV)
    assert corpora.split_cache_dir().name == "deep-speech-2-lesson"


def test_use_cache_false_neither_reads_nor_writes(tmp_path):
    assert_same_splits(
        corpora.cached_splits(**RECIPE, cache_dir=tmp_path, use_cache=False), ds2.make_splits(**RECIPE)
    )
    assert not list(tmp_path.iterdir())


FAST = [
    "--train-size", "8", "--dev-size", "2", "--batch-size", "8", "--epochs", "1", "--hidden", "8",
    "--rnn-layers", "1", "--conv-layers", "1", "--conv-channels", "2", "--lm-sentences", "20",
    "--beam-width", "2", "--workers", "1", "--threads", "1", "--seed", "3",
]  # fmt: skip


def test_a_second_train_minimal_run_skips_synthesis(tmp_path, monkeypatch, capsys):
    handler = signal.getsignal(signal.SIGINT)  # train_minimal.main installs its own Ctrl-C handler
    try:
        argv = [*FAST, "--cache-dir", str(tmp_path / "cache"), "--conv-type", "1d"]
        assert train_minimal.main(train_minimal.parse_args([*argv, "--out", str(tmp_path / "a")])) == 0
        first = capsys.readouterr().out
        monkeypatch.setattr(corpora, "make_splits", no_synthesis)
        assert train_minimal.main(train_minimal.parse_args([*argv, "--out", str(tmp_path / "b")])) == 0
        second = capsys.readouterr().out
        monkeypatch.undo()
        assert (
            train_minimal.main(train_minimal.parse_args([*argv, "--no-cache", "--out", str(tmp_path / "c")]))
            == 0
        )
        third = capsys.readouterr().out
    finally:
        signal.signal(signal.SIGINT, handler)
    data_line = lambda out: next(line for line in out.splitlines() if line.startswith("data: "))  # noqa: E731
    assert "audio synthesised" in data_line(first) and "audio from the cache" in data_line(second)
    assert "audio synthesised" in data_line(third)
    assert "conv_type='1d'" in second
    final = lambda out: [line for line in out.splitlines() if "greedy CER" in line]  # noqa: E731
    assert len(final(first)) == 2 and final(first) == final(second) == final(third)  # the same audio


def _espeak_installed() -> bool:
    try:
        corpora.check_espeak_available()
    except ImportError:
        return False
    return True


@pytest.mark.skipif(
    not _espeak_installed(), reason=f"espeak-ng is not installed: {corpora.ESPEAK_INSTALL_HINT}"
)
def test_espeak_splits_are_cached_too(tmp_path, monkeypatch):
    recipe = dict(train_size=3, dev_size=2, seed=5, train_noise_fraction=0.5, cache_dir=tmp_path)
    lines = []
    first = corpora.cached_splits(**recipe, corpus="espeak", log=lines.append)
    assert len(lines) == 3 and all("synthesised" in line for line in lines)
    assert sorted(p.name for p in tmp_path.iterdir())[0].startswith("espeak-dev-clean-2utt-seed5-")
    assert_same_splits(first, corpora.make_espeak_splits(3, 2, seed=5, train_noise_fraction=0.5))
    assert isinstance(first["train"].speakers[0], corpora.EspeakSpeaker)
    monkeypatch.setattr(corpora, "make_espeak_splits", no_synthesis)
    lines = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = corpora.cached_splits(**recipe, corpus="espeak", log=lines.append)
    assert len(lines) == 3 and all("from the cache" in line for line in lines)
    assert_same_splits(second, first)
    assert type(second["train"].speakers[0].rate_wpm) is int  # plain types survive the round trip
    monkeypatch.undo()
    # The letter-phone corpus with the same recipe is another entry, never this one.
    lines = []
    corpora.cached_splits(**recipe, log=lines.append)
    assert all("synthesised" in line for line in lines)
    # A truncated entry: one warning naming it, remade.
    (path,) = tmp_path.glob("espeak-dev-noisy-*.pt")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.warns(UserWarning) as caught:
        third = corpora.cached_splits(**recipe, corpus="espeak")
    assert len(caught) == 1 and "corrupt" in str(caught[0].message) and str(path) in str(caught[0].message)
    assert_same_splits(third, first)
    # Another synthesiser's audio (or another numpy/torch/torchaudio): stale, one warning per split, remade.
    monkeypatch.setattr(corpora, "espeak_fingerprint", lambda: "0" * 64)
    with pytest.warns(UserWarning) as caught:
        fourth = corpora.cached_splits(**recipe, corpus="espeak")
    assert len(caught) == 3 and all("stale" in str(w.message) for w in caught)
    assert_same_splits(fourth, first)


@pytest.mark.skipif(
    not _espeak_installed(), reason=f"espeak-ng is not installed: {corpora.ESPEAK_INSTALL_HINT}"
)
def test_the_espeak_fingerprint_follows_what_espeak_ng_makes_not_the_source(tmp_path):
    unchanged = corpora.espeak_fingerprint()
    same = load_copy(tmp_path, "espeak_moved", lambda s: move_to_end(s, "_resample"), of="corpora.py")
    assert same.espeak_fingerprint() == unchanged
    rate = load_copy(
        tmp_path,
        "espeak_rate",
        lambda s: s.replace("ESPEAK_RATE_WPM = (130, 230)", "ESPEAK_RATE_WPM = (131, 230)", 1),
        of="corpora.py",
    )
    assert rate.espeak_fingerprint() != unchanged


@pytest.mark.skipif(
    not _espeak_installed(), reason=f"espeak-ng is not installed: {corpora.ESPEAK_INSTALL_HINT}"
)
def test_a_second_train_minimal_espeak_run_skips_synthesis(tmp_path, monkeypatch, capsys):
    handler = signal.getsignal(signal.SIGINT)  # train_minimal.main installs its own Ctrl-C handler
    try:
        argv = [*FAST, "--data", "espeak", "--cache-dir", str(tmp_path / "cache")]
        assert train_minimal.main(train_minimal.parse_args([*argv, "--out", str(tmp_path / "a")])) == 0
        first = capsys.readouterr().out
        monkeypatch.setattr(corpora, "make_espeak_splits", no_synthesis)
        assert train_minimal.main(train_minimal.parse_args([*argv, "--out", str(tmp_path / "b")])) == 0
        second = capsys.readouterr().out
    finally:
        signal.signal(signal.SIGINT, handler)
    data_line = lambda out: next(line for line in out.splitlines() if line.startswith("data: "))  # noqa: E731
    assert "audio synthesised" in data_line(first) and "audio from the cache" in data_line(second)
    assert len(list((tmp_path / "cache").glob("espeak-*.pt"))) == 3
    final = lambda out: [line for line in out.splitlines() if "greedy CER" in line]  # noqa: E731
    assert len(final(first)) == 2 and final(first) == final(second)  # the same audio
