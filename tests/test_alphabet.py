"""The output alphabet as data (implementation.py section 1, §3.9) and what uses it: encoding and decoding in
English and Mandarin, checkpoints that carry their alphabet, the character LM, and the prefix beam search
that applies it at every character.

Oracles: exact round trips; a brute-force enumeration of every CTC alignment and every labelling, scored
with the same Q(y); the LM's probabilities summed over its whole vocabulary.
"""

import math
import re
import runpy
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import corpora
import implementation as ds2

MANDARIN = corpora.MANDARIN


# --- encoding and decoding ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "alphabet, text",
    [(ds2.ENGLISH, "the dog isn't here"), (MANDARIN, "早上她去学校"), (MANDARIN, "他们在图书馆借书吗")],
)
def test_text_round_trips_through_its_alphabet(alphabet, text):
    ids = alphabet.encode(text)
    assert ids.dtype == torch.long and int(ids.min()) >= 1 and int(ids.max()) < alphabet.num_classes
    assert alphabet.decode(ids) == text
    assert len(ids) == len(text)  # one class per character, in both languages


def test_the_english_alphabet_keeps_its_29_classes_in_their_old_order():
    assert ds2.NUM_CLASSES == ds2.ENGLISH.num_classes == 29
    assert ds2.ALPHABET[0] == ds2.BLANK_SYMBOL and ds2.ALPHABET[1:3] == (" ", "'")
    assert "".join(ds2.ALPHABET[3:]) == "abcdefghijklmnopqrstuvwxyz"
    assert ds2.encode_text("Hi  there").tolist() == ds2.ENGLISH.encode("hi there").tolist()


def test_mandarin_has_every_character_of_the_grammar_and_no_space():
    assert MANDARIN.symbols == corpora.mandarin_characters()
    assert MANDARIN.num_classes == len(corpora.mandarin_characters()) + 1 >= 251
    assert " " not in MANDARIN.symbols and not MANDARIN.spaced
    # White space carries no sound in Chinese: it is dropped, never encoded.
    assert MANDARIN.normalize(" 他们 去 学校 ") == "他们去学校"
    assert MANDARIN.tokens("他们去") == ["他", "们", "去"]
    assert ds2.ENGLISH.tokens("The dog  ran") == ["the", "dog", "ran"]


@pytest.mark.parametrize(
    "alphabet, text, named",
    [
        (MANDARIN, "他们去school", "'c', 'h', 'l', 'o', 's'"),
        (MANDARIN, "他熊", "'熊'"),
        (ds2.ENGLISH, "早上", "'上', '早'"),
    ],
)
def test_a_character_outside_the_alphabet_is_refused_by_name(alphabet, text, named):
    with pytest.raises(ValueError, match="outside the alphabet") as error:
        alphabet.encode(text)
    assert named in str(error.value) and alphabet.name in str(error.value)


def test_an_alphabet_must_be_distinct_single_characters():
    with pytest.raises(ValueError, match="distinct single characters"):
        ds2.Alphabet("bad", ("a", "a"), spaced=False)
    with pytest.raises(ValueError, match="distinct single characters"):
        ds2.Alphabet("bad", ("ab",), spaced=False)
    with pytest.raises(ValueError, match="space"):
        ds2.Alphabet("bad", ("a", "b"), spaced=True)


def test_decoding_refuses_an_id_outside_the_alphabet():
    with pytest.raises(ValueError, match="outside the mandarin alphabet"):
        MANDARIN.decode([MANDARIN.num_classes])


# --- the model and its checkpoint ---------------------------------------------------------------------


def _tiny_config(alphabet=ds2.ENGLISH):
    return ds2.DS2Config(conv_channels=(2,), rnn_layers=1, rnn_hidden=8, alphabet=alphabet)


def test_the_output_layer_is_as_wide_as_the_alphabet():
    model = ds2.DeepSpeech2(_tiny_config(MANDARIN))
    assert model.fc.out_features == MANDARIN.num_classes == model.config.num_classes
    spec = torch.randn(1, model.config.num_freq, 40)
    log_probs, _ = model(spec, torch.tensor([40]))
    assert log_probs.shape[-1] == MANDARIN.num_classes
    with pytest.raises(ValueError, match="num_classes must be"):
        ds2.DS2Config(alphabet=MANDARIN, num_classes=29)


def test_a_checkpoint_carries_its_alphabet_and_a_model_of_another_is_refused(tmp_path):
    path = tmp_path / "mandarin.pt"
    ds2.save_checkpoint(path, ds2.DeepSpeech2(_tiny_config(MANDARIN)))
    model, _ = ds2.load_checkpoint(path)
    assert model.config.alphabet == MANDARIN and model.config.alphabet.symbols == MANDARIN.symbols
    with pytest.raises(ValueError, match="alphabet: checkpoint Alphabet\\('mandarin'") as error:
        ds2.load_checkpoint(path, ds2.DeepSpeech2(_tiny_config()))
    assert "Alphabet('english', 29 classes)" in str(error.value)


def test_an_old_checkpoint_without_an_alphabet_loads_as_english_with_a_warning(tmp_path):
    model = ds2.DeepSpeech2(_tiny_config())
    config = model.config.to_dict()
    del config["alphabet"]  # what save_checkpoint wrote before the alphabet was part of the config
    payload = {"format": ds2.CHECKPOINT_FORMAT, "config": config, "model": model.state_dict()}
    torch.save(payload, tmp_path / "old.pt")
    with pytest.warns(UserWarning, match="stores no alphabet"):
        loaded, _ = ds2.load_checkpoint(tmp_path / "old.pt")
    assert loaded.config == model.config
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name])
    # ... and one whose 29 classes disagree with what it says it holds is refused, not guessed at.
    torch.save({**payload, "config": {**config, "num_classes": 30}}, tmp_path / "odd.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="num_classes must be 29"):
            ds2.load_checkpoint(tmp_path / "odd.pt")


# --- the character LM ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def character_lm():
    return corpora.mandarin_lm(seed=3, sentences=600, order=3)


@pytest.mark.parametrize("context", [(), ("我",), ("他", "们"), ("书", "馆", "借"), ("熊",)])
def test_character_lm_probabilities_sum_to_one_over_its_vocabulary(character_lm, context):
    lm = character_lm
    assert all(len(token) == 1 for token in lm.vocabulary if token not in (ds2.BOS, ds2.EOS, ds2.UNK))
    history = (ds2.BOS, *context)
    total = sum(math.exp(lm.log_prob(token, history)) for token in lm.vocabulary if token != ds2.BOS)
    assert total == pytest.approx(1.0, abs=1e-6)


def test_the_character_lm_scores_characters_and_prefers_the_grammar(character_lm):
    lm = character_lm
    assert lm.score("他们去学校", alphabet=MANDARIN) == pytest.approx(
        lm.sentence_log_prob(list("他们去学校"))
    )
    assert lm.score("他们去学校", alphabet=MANDARIN) > lm.score("校学去们他", alphabet=MANDARIN) + 5


def test_the_character_lm_leaves_out_the_sentences_it_is_told_to():
    rng = np.random.default_rng([3, 99])  # mandarin_lm's own stream
    drawn = [corpora.random_mandarin_sentence(rng) for _ in range(300)]
    kept = drawn[:4]
    lm = corpora.mandarin_lm(seed=3, sentences=300, order=1, exclude=set(drawn) - set(kept))
    assert set(lm.vocabulary) == {*"".join(kept), ds2.UNK, ds2.EOS, ds2.BOS}


def test_an_lm_of_another_alphabet_is_refused(character_lm):
    word_lm = ds2.NGramLM.train(["the dog sees a cat", "we run"], order=2)
    with pytest.raises(ValueError, match="does not fit the model's mandarin alphabet"):
        word_lm.check_alphabet(MANDARIN)
    with pytest.raises(ValueError, match="does not fit the model's english alphabet"):
        character_lm.check_alphabet(ds2.ENGLISH)
    character_lm.check_alphabet(MANDARIN)
    word_lm.check_alphabet(ds2.ENGLISH)
    frames = torch.randn(6, MANDARIN.num_classes).log_softmax(-1)
    model = ds2.DeepSpeech2(_tiny_config(MANDARIN))
    with pytest.raises(ValueError, match="does not fit"):
        ds2.evaluate(model, [torch.randn(model.config.num_freq, 50)], ["他们"], word_lm, beam_width=4)
    with pytest.raises(ValueError, match="classes, but the english alphabet has 29"):
        ds2.prefix_beam_search(frames, 4)


# --- prefix beam search with the character LM, against brute force ----------------------------------


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("alpha, beta", [(0.0, 0.0), (0.8, 0.0), (1.0, 1.5), (2.0, -0.5)])
def test_wide_beam_search_with_the_character_lm_finds_the_brute_force_best(
    seed, alpha, beta, exact_labeling_probs
):
    # 他/她 sound the same: the acoustic frames split between them, and the LM (trained where 她 follows
    # 早上 and 他 starts 他们) has the last word.
    characters = ["他", "她", "们", "去"]
    lm = ds2.NGramLM.train(["他们去", "早上她去", "她去", "他们"], order=2, alphabet=MANDARIN)
    ids = [ds2.BLANK, *(MANDARIN.ids[c] for c in characters)]
    rng = np.random.default_rng(seed)
    frames = 5
    log_probs = torch.full((frames, MANDARIN.num_classes), -1e4)
    for t in range(frames):
        log_probs[t, ids] = torch.from_numpy(np.log(rng.dirichlet(np.ones(len(ids)))).astype(np.float32))
    totals = exact_labeling_probs(log_probs, ids, MANDARIN)  # every labelling's exact CTC probability

    def q(text):  # Q(y) = log p_ctc + alpha log p_lm + beta |y|, |y| in characters
        return math.log(totals[text]) + alpha * lm.sentence_log_prob(list(text)) + beta * len(text)

    best = max(totals, key=q)
    found = ds2.prefix_beam_search_nbest(
        log_probs, 10_000, lm, alpha, beta, prune_log_prob=-100, max_labels_per_frame=None, alphabet=MANDARIN
    )
    assert found[0].text == best
    assert found[0].score == pytest.approx(q(best), abs=1e-4)
    for hypothesis in found:  # nothing pruned: exact CTC probabilities, characters counted as tokens
        assert math.exp(hypothesis.ctc_log_prob) == pytest.approx(totals[hypothesis.text], rel=1e-5)
        assert hypothesis.word_count == len(hypothesis.text)


def test_greedy_decoding_reads_the_model_alphabet():
    log_probs = torch.full((4, MANDARIN.num_classes), -10.0)
    for t, char in enumerate(["他", "他", "们", "_"]):
        log_probs[t, ds2.BLANK if char == "_" else MANDARIN.ids[char]] = 0.0
    assert ds2.greedy_decode(log_probs, alphabet=MANDARIN) == ["他们"]


# --- the cache and the command line -------------------------------------------------------------------


@pytest.mark.slow
def test_mandarin_splits_come_from_the_cache_the_second_time(tmp_path, monkeypatch):
    recipe = dict(train_size=3, dev_size=2, seed=4, train_noise_fraction=0.5, corpus="mandarin")
    lines: list[str] = []
    first = corpora.cached_splits(**recipe, cache_dir=tmp_path, log=lines.append)
    assert all("synthesised" in line for line in lines) and all(t for s in first.values() for t in s.texts)
    assert all(not MANDARIN.outside(text) for split in first.values() for text in split.texts)
    assert sorted(p.name.split("-")[0] for p in tmp_path.iterdir()) == ["mandarin"] * 3

    def no_synthesis(*args, **kwargs):
        raise AssertionError("synthesised although cached")

    monkeypatch.setattr(corpora, "make_espeak_splits", no_synthesis)
    lines.clear()
    second = corpora.cached_splits(**recipe, cache_dir=tmp_path, log=lines.append)
    assert all("from the cache" in line for line in lines)
    for name in first:
        assert first[name].texts == second[name].texts
        for a, b in zip(first[name].waveforms, second[name].waveforms, strict=True):
            assert torch.equal(a, b)
    # English espeak-ng splits of the same recipe are other files: a miss, not the Mandarin ones.
    with pytest.raises(AssertionError, match="synthesised although cached"):
        corpora.cached_splits(**{**recipe, "corpus": "espeak"}, cache_dir=tmp_path)


# --- which characters were confused: the alignment behind the edit distance, and homophones ----------


@pytest.mark.parametrize("seed", range(20))
def test_edit_alignment_is_a_minimal_alignment(seed):
    rng = np.random.default_rng(seed)
    ref = "".join(rng.choice(list("他她们去学校"), rng.integers(0, 8)))
    hyp = "".join(rng.choice(list("他她们去学校"), rng.integers(0, 8)))
    pairs = ds2.edit_alignment(ref, hyp)
    assert "".join(r for r, _ in pairs if r is not None) == ref  # every character once, in order
    assert "".join(h for _, h in pairs if h is not None) == hyp
    assert sum(r != h for r, h in pairs) == ds2.edit_distance(ref, hyp)  # and no more edits than needed
    assert all(r is not None or h is not None for r, h in pairs)


def test_homophone_errors_counts_only_substitutions_within_a_group():
    # 他 -> 她 (tā, a homophone), 去 -> 学 and 校 -> 了 (not): 1 homophone of 3 edits ...
    assert corpora.homophone_errors(["他去学校"], ["她学学了"]) == (1, 3)
    assert corpora.homophone_errors(["他去学校"], ["她去学"]) == (1, 2)  # 校 deleted
    # ... and a homophone that is only inserted or deleted is not a substitution.
    assert corpora.homophone_errors(["他们", "在家"], ["她们", "在再家"]) == (1, 2)
    assert corpora.homophone_errors(["在家"], ["再家"]) == (1, 1)


@pytest.mark.slow
def test_train_minimal_trains_and_transcribes_mandarin_end_to_end(tmp_path):
    root = Path(__file__).resolve().parents[1]
    tiny = ["--train-size", "24", "--dev-size", "4", "--batch-size", "8", "--hidden", "16", "--rnn-layers", "1",
            "--conv-channels", "2", "--lm-sentences", "200", "--beam-width", "2", "--epochs", "1"]  # fmt: skip
    out, cache = tmp_path / "run", tmp_path / "cache"
    command = [sys.executable, str(root / "train_minimal.py"), "--data", "mandarin", "--out", str(out)]
    result = subprocess.run(
        [*command, *tiny, "--cache-dir", str(cache)], capture_output=True, text=True, cwd=root
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "character 4-gram LM" in result.stdout and "WER" not in result.stdout  # no WER without spaces
    final = [line for line in result.stdout.splitlines() if line.startswith("dev-clean ")]
    assert len(final) == 1 and "beam+LM CER" in final[0]
    model, state = ds2.load_checkpoint(out / "checkpoint.pt")
    assert model.config.alphabet == MANDARIN and model.fc.out_features == MANDARIN.num_classes
    assert (state["args"]["alpha"], state["args"]["beta"]) == corpora.DECODING["mandarin"]
    assert state["args"]["epochs"] == 1  # the flag wins over the corpus's default
    lm = ds2.NGramLM.from_arpa(out / "lm.arpa")
    lm.check_alphabet(MANDARIN)  # the run's LM is a character LM
    # Transcribing a Mandarin recording reads the alphabet from the checkpoint: Mandarin text comes out.
    split = corpora.cached_splits(0, 4, 0, 0.5, corpus="mandarin", cache_dir=cache)["dev-clean"]
    ds2.write_wav(tmp_path / "clip.wav", split.waveforms[0])
    heard = subprocess.run([*command[:2], "--transcribe", str(tmp_path / "clip.wav"), "--checkpoint",
                            str(out / "checkpoint.pt")], capture_output=True, text=True, cwd=root)  # fmt: skip
    assert heard.returncode == 0, heard.stderr[-2000:]
    assert not MANDARIN.outside(heard.stdout.strip())
    # Resuming the Mandarin checkpoint with English data is refused, naming the alphabets.
    english = [*command[:2], "--resume", str(out / "checkpoint.pt"), "--out", str(tmp_path / "again"), *tiny]
    refused = subprocess.run(english, capture_output=True, text=True, cwd=root)
    assert refused.returncode == 2 and "alphabet: checkpoint Alphabet('mandarin'" in refused.stderr


@pytest.mark.slow
@pytest.mark.parametrize("curriculum", [[], ["--no-sortagrad"], ["--lr", "0.006", "--batch-size", "8"]])
def test_mandarin_seeds_trains_as_train_minimal_does(tmp_path, capsys, curriculum):
    # benchmarks/mandarin_seeds.py's epochs must be train_minimal.py's, or its seed swaps say nothing.
    root = Path(__file__).resolve().parents[1]
    tiny = ["--train-size", "24", "--dev-size", "4", "--epochs", "1", "--cache-dir", str(tmp_path / "cache")]
    tiny += curriculum
    command = [sys.executable, str(root / "train_minimal.py"), "--data", "mandarin", "--out", str(tmp_path / "run")]  # fmt: skip
    result = subprocess.run([*command, *tiny, "--threads", "1", "--workers", "1", "--lm-sentences", "200"],
                            capture_output=True, text=True, cwd=root)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("epoch  1"))
    expected = re.search(r"loss +([0-9.]+) +dev-clean CER +([0-9.]+)%", line).groups()
    seeds, threads = runpy.run_path(str(root / "benchmarks" / "mandarin_seeds.py")), torch.get_num_threads()
    seeds["main"](["--seeds", "0", *tiny])
    printed = next(line for line in capsys.readouterr().out.splitlines() if "epoch  1" in line)
    assert re.search(r"loss +([0-9.]+) +dev-clean +([0-9.]+)%", printed).groups() == expected
    seeds["main"](["--seeds", "0", "--conv-seed", "1", *tiny])  # another front-end: another start
    other = next(line for line in capsys.readouterr().out.splitlines() if "epoch  1" in line)
    torch.set_num_threads(threads)  # the script sets one thread; the tests after this one keep theirs
    assert "(weights 0, conv 1)" in other and re.search(r"loss +([0-9.]+)", other).group(1) != expected[0]


def test_the_character_lm_steers_the_beam_at_every_character_not_only_at_the_end():
    # The first frame's sound leans to 她 (0.55 against 0.45: the same syllable), and a beam of 1 keeps only
    # one of them. Scored as each character is emitted, the LM (which has seen 他们, never 她们) keeps 他;
    # an LM that waited for the end of a "word" would let the sound choose 她 and could not undo it.
    lm = ds2.NGramLM.train(["他们"] * 5 + ["他们去"], order=2, alphabet=MANDARIN)
    log_probs = torch.full((2, MANDARIN.num_classes), -30.0)
    log_probs[0, MANDARIN.ids["她"]], log_probs[0, MANDARIN.ids["他"]] = math.log(0.55), math.log(0.45)
    log_probs[1, MANDARIN.ids["们"]], log_probs[1, ds2.BLANK] = math.log(0.9), math.log(0.1)
    assert ds2.prefix_beam_search(log_probs, 1, alphabet=MANDARIN) == "她们"  # the sound alone
    assert ds2.prefix_beam_search(log_probs, 1, lm, alpha=1.0, alphabet=MANDARIN) == "他们"
