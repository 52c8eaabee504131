"""The exercises' checks under pytest: every solution passes, every stub is still a stub, the checks can fail.

The tests run the very checks ``python exercises/check.py`` runs (``exercises/checks/``). By default
they check ``exercises/solutions/``; ``pytest tests/test_exercises.py --exercises=learner`` (or
``DS2_EXERCISES=learner``) checks your own files in ``exercises/`` instead.
"""

from __future__ import annotations

import ast
import contextlib
import itertools
import math
import os
import random
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "exercises")]
import check  # noqa: E402  (exercises/check.py)
from checks.ex02_ctc_loss import reference_alphas  # noqa: E402

import implementation as ds2  # noqa: E402

CHECKS = check.discover()
PARTS = [(number, part) for number, module in CHECKS.items() for part in module.PARTS]
_fresh = itertools.count()


def fresh(number: int, which: str = "solutions"):
    """A newly imported copy of an exercise file, so a test may patch it without affecting others."""
    return check.load_file(
        check.exercise_path(number, which), f"test_exercise_{number}_{which}_{next(_fresh)}"
    )


@pytest.fixture(scope="session")
def target(request) -> str:
    """Which files the checks run against: 'solutions' (default) or 'learner'."""
    value = request.config.getoption("--exercises", default=None) or os.environ.get(
        "DS2_EXERCISES", "solutions"
    )
    if value not in ("solutions", "learner"):
        raise pytest.UsageError(f"DS2_EXERCISES must be 'solutions' or 'learner', got {value!r}")
    return value


@pytest.fixture
def only_for_solutions(target):
    if target == "learner":
        pytest.skip("checks the repository's stubs; not meaningful while you are solving them")


# ---------------------------------------------------------------------------------------------------------
# Every part passes (on the solutions; or on your files with --exercises=learner)
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "number, part",
    [pytest.param(n, p, id=f"{n}{p.letter}", marks=[pytest.mark.slow] if p.slow else []) for n, p in PARTS],
)
def test_part_passes(number, part, target):
    result = check.run_part(number, part, fresh(number, target))
    assert result.status is check.Status.PASSED, (
        f"exercise {number} part {part.letter}: {result.status.value}: {result.message}"
    )


# ---------------------------------------------------------------------------------------------------------
# Every stub is still a stub, and stubs and solutions describe the same functions
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("number", sorted(CHECKS))
def test_every_stub_part_reports_not_attempted(number, only_for_solutions):
    results = check.check_module(number, fresh(number, "learner"))
    assert [r.status for r in results] == [check.Status.NOT_ATTEMPTED] * len(results), [
        (r.part.letter, r.status.value, r.message) for r in results
    ]


def _definitions(path: Path) -> dict[str, ast.AST]:
    """Top-level functions and classes, and methods as 'Class.method'."""
    found = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            found[node.name] = node
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    found[f"{node.name}.{item.name}"] = item
    return found


@pytest.mark.parametrize("number", sorted(CHECKS))
def test_stub_and_solution_define_the_same_functions_with_the_same_docstrings(number, only_for_solutions):
    stub = _definitions(check.exercise_path(number, "learner"))
    solution = _definitions(check.exercise_path(number, "solutions"))
    assert stub.keys() == solution.keys()
    for name, node in solution.items():
        assert ast.get_docstring(stub[name]) == ast.get_docstring(node), f"{name}: docstrings differ"
        if isinstance(node, ast.FunctionDef):
            assert ast.dump(stub[name].args) == ast.dump(node.args), f"{name}: signatures differ"
    # Each part's functions: in the stub, the body after the docstring is one `raise NotImplementedError`
    # naming the exercise and part; in the solution, real code.
    for part in CHECKS[number].PARTS:
        for name in part.functions:
            body = stub[name].body[1:]
            assert len(body) == 1 and isinstance(body[0], ast.Raise), f"{name}: the stub should only raise"
            message = ast.literal_eval(body[0].exc.args[0])
            assert body[0].exc.func.id == "NotImplementedError"
            assert message.startswith(f"Exercise {number}, part {part.letter}: "), message
            assert not any(isinstance(n, ast.Raise) for n in solution[name].body[1:2]), (
                f"{name}: unsolved solution"
            )
    # Module docstrings (the exercise's introduction) are identical too.
    assert ast.get_docstring(
        ast.parse(check.exercise_path(number, "learner").read_text())
    ) == ast.get_docstring(ast.parse(check.exercise_path(number, "solutions").read_text()))


def test_parts_are_lettered_in_order_with_three_hints_each():
    for number, module in CHECKS.items():
        assert module.FILENAME.startswith(f"exercise_{number:02d}_")
        assert [part.letter for part in module.PARTS] == list("abcdefgh"[: len(module.PARTS)])
        for part in module.PARTS:
            assert len(part.hints) == 3 and all(isinstance(h, str) and len(h) > 20 for h in part.hints), part
            assert part.hints == module.HINTS[part.letter]


def test_readme_lists_every_exercise_and_the_check_command():
    readme = (ROOT / "exercises" / "README.md").read_text()
    for module in CHECKS.values():
        assert module.FILENAME in readme
    assert "python exercises/check.py" in readme and "--solutions" in readme


# ---------------------------------------------------------------------------------------------------------
# The checks can fail: common mistakes, patched into a copy of the solution, are caught and named
# ---------------------------------------------------------------------------------------------------------


def _frames_power_no_window(frames):
    return torch.fft.rfft(frames, dim=-1).abs().square().T


def _greedy_drop_blanks_first(module):
    def greedy_decode(log_probs):
        best = [k for k in log_probs.argmax(-1).tolist() if k != module.BLANK]
        return module.ds2.decode_labels([k for t, k in enumerate(best) if t == 0 or k != best[t - 1]])

    return greedy_decode


def _alphas_skipping_equal_labels(module):
    return lambda log_probs, label: reference_alphas(log_probs, label, skip_equal_labels=True).float()


def _normalise_each_bin(module):
    def normalize_over_valid_frames(spec, lengths):
        out = torch.zeros_like(spec)
        for b, length in enumerate(lengths.tolist()):
            valid = spec[b, :, :length]  # (F, T_b)
            mean, std = valid.mean(1, keepdim=True), valid.std(1, unbiased=False, keepdim=True)
            out[b, :, :length] = (valid - mean) / (std + 1e-5)
        return out

    return normalize_over_valid_frames


def _ignore_epoch(module):
    original = module.shuffled_batches
    return lambda num_samples, batch_size, epoch, seed: original(num_samples, batch_size, 1, seed)


def _batch_norm_forward(
    running_var_biased=False,
    eval_uses_batch=False,
    padding_in_stats=False,
    update_outside_no_grad=False,
    eps_outside_root=False,
):
    def forward(self, x, lengths):
        mask = ds2.lengths_to_mask(lengths, x.shape[1])
        if self.training or eval_uses_batch:
            valid = x.reshape(-1, x.shape[-1]) if padding_in_stats else x[mask]
            mean, var = valid.mean(0), valid.var(0, unbiased=False)
            if self.training:
                with contextlib.nullcontext() if update_outside_no_grad else torch.no_grad():
                    n = valid.shape[0]
                    update = var if running_var_biased else var * n / (n - 1)
                    self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
                    self.running_var.mul_(1 - self.momentum).add_(self.momentum * update)
        else:
            mean, var = self.running_mean, self.running_var
        scale = torch.sqrt(var) + self.eps if eps_outside_root else torch.sqrt(var + self.eps)
        out = (x - mean) / scale * self.weight + self.bias
        return out.masked_fill(~mask[..., None], 0.0)

    return forward


def _rnn_forward(batch_norm_on_outputs=False, relu_only=False, keep_padding=False):
    def forward(self, x, lengths):
        mask = ds2.lengths_to_mask(lengths, x.shape[1])
        projected = self.input_projection(x)
        if not batch_norm_on_outputs:
            projected = self.norm(projected, lengths)
        hidden, outputs = x.new_zeros(x.shape[0], self.hidden_size), []
        for t in range(x.shape[1]):
            pre = projected[:, t] + self.recurrent(hidden)
            hidden = torch.relu(pre) if relu_only else torch.clamp(pre, 0, 20)
            outputs.append(hidden)
        output = torch.stack(outputs, 1)
        if batch_norm_on_outputs:  # the mistake of the lesson this one was designed from
            output = self.norm(output, lengths)
        return output if keep_padding else output.masked_fill(~mask[..., None], 0.0)

    return forward


def _unseeded_shuffle(num_samples, batch_size, epoch, seed):
    order = list(range(num_samples))
    random.shuffle(order)  # global state: not reproducible
    return [order[i : i + batch_size] for i in range(0, num_samples, batch_size)]


def _numpy_ints(num_samples, batch_size, epoch, seed):
    order = np.random.default_rng([seed, epoch]).permutation(num_samples)
    return [list(order[i : i + batch_size]) for i in range(0, num_samples, batch_size)]


def _global_numpy_reseeded(num_samples, batch_size, epoch, seed):
    np.random.seed(1000 * seed + epoch)  # noqa: NPY002  (reproducible, but resets everyone's numbers)
    order = np.random.permutation(num_samples).tolist()  # noqa: NPY002
    return [order[i : i + batch_size] for i in range(0, num_samples, batch_size)]


def _same_minibatches_reordered(num_samples, batch_size, epoch, seed):
    blocks = [list(range(i, min(i + batch_size, num_samples))) for i in range(0, num_samples, batch_size)]
    return [blocks[i] for i in np.random.default_rng([seed, epoch]).permutation(len(blocks)).tolist()]


def _stft_log10(waveform, sample_rate=16000):
    window, hop = round(sample_rate / 50), round(sample_rate / 100)
    stft = torch.stft(
        waveform, window, hop, window=torch.hann_window(window), center=False, return_complex=True
    )
    return torch.log10(stft.abs().square() + 1e-10)


def _normalise_with_padding(module):
    def normalize_over_valid_frames(spec, lengths):
        mean, std = spec.mean((1, 2), keepdim=True), spec.std((1, 2), unbiased=False, keepdim=True)
        return ((spec - mean) / (std + 1e-5)).masked_fill(
            ~ds2.lengths_to_mask(lengths, spec.shape[-1])[:, None], 0
        )

    return normalize_over_valid_frames


def _statistics(unbiased=False, padding=False):
    def masked_mean_and_variance(x, lengths):
        valid = x.reshape(-1, x.shape[-1]) if padding else x[ds2.lengths_to_mask(lengths, x.shape[1])]
        return valid.mean(0), valid.var(0, unbiased=unbiased)

    return masked_mean_and_variance


def _power(layout_tf=False, magnitude=False):
    def power_spectrum(frames):
        spectrum = torch.fft.rfft(frames * torch.hann_window(frames.shape[-1]), dim=-1).abs()
        spectrum = spectrum if magnitude else spectrum.square()
        return spectrum if layout_tf else spectrum.T

    return power_spectrum


def _unsorted(lengths, batch_size):
    return [list(range(len(lengths)))[i : i + batch_size] for i in range(0, len(lengths), batch_size)]


def _drop_last(lengths, batch_size):
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [order[i : i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]


def _featurize_with(transform):
    return lambda module: lambda waveforms, sample_rate=16000: [transform(w) for w in waveforms]


def _featurize_as_one_batch(module):
    def featurize_split(waveforms, sample_rate=16000):
        padded = nn.utils.rnn.pad_sequence(list(waveforms), batch_first=True)  # (B, samples_max)
        return list(ds2.normalize_spectrogram(ds2.log_spectrogram(padded)))  # padded (F, T_max) each

    return featurize_split


def _training_step(
    eval_mode=False, no_zero_grad=False, no_clip=False, per_character=False, clipped_norm=False
):
    """The exercise 5 training step with one common mistake switched on."""

    def training_step(model, optimizer, spectrograms, texts, clip_norm=5.0):
        model.train(not eval_mode)
        batch = ds2.collate(spectrograms, texts)
        log_probs, out_lengths = model(batch.spectrograms, batch.lengths)
        if per_character:
            loss = F.ctc_loss(log_probs.transpose(0, 1), batch.targets, out_lengths, batch.target_lengths)
        else:
            loss = ds2.ctc_loss(log_probs, batch.targets, out_lengths, batch.target_lengths)
        if not no_zero_grad:
            optimizer.zero_grad()
        loss.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1e9 if no_clip else clip_norm))
        optimizer.step()
        return loss.item(), min(norm, clip_norm) if clipped_norm else norm

    return lambda module: training_step


def _train(
    new_optimizer_each_step=False,
    shuffle_first_epoch=False,
    whole_epochs=False,
    learning_rate_ignored=False,
    no_decay=False,
    epoch_never_advanced=False,
):
    """The exercise 5 training loop with one common mistake switched on."""

    def make(module):
        def train(
            model, spectrograms, texts, num_steps, batch_size=32, learning_rate=3e-3, clip_norm=5.0, seed=0
        ):
            if learning_rate_ignored:
                learning_rate = 3e-3  # the default, whatever the caller asked for
            optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
            lengths = [s.shape[-1] for s in spectrograms]
            losses, epoch = [], 0
            while len(losses) < num_steps:
                for indices in ds2.sortagrad_batches(
                    lengths, batch_size, epoch, seed, not shuffle_first_epoch
                ):
                    if len(losses) == num_steps and not whole_epochs:
                        break
                    if new_optimizer_each_step:
                        optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
                    if not no_decay:
                        for group in optimizer.param_groups:
                            group["lr"] = ds2.learning_rate(len(losses), num_steps, learning_rate)
                    step = module.training_step(
                        model,
                        optimizer,
                        [spectrograms[i] for i in indices],
                        [texts[i] for i in indices],
                        clip_norm,
                    )
                    losses.append(step[0])
                if not epoch_never_advanced:
                    epoch += 1
            return losses

        return train

    return make


def _evaluate_cer(train_mode=False, decode_padding=False, mean_per_utterance=False):
    """The exercise 5 evaluation with one common mistake switched on."""

    def evaluate_cer(model, spectrograms, texts, batch_size=32):
        model.train(train_mode)
        hypotheses = []
        with torch.no_grad():
            for start in range(0, len(spectrograms), batch_size):
                padded, lengths = ds2.pad_spectrograms(spectrograms[start : start + batch_size])
                log_probs, out_lengths = model(padded, lengths)
                hypotheses += ds2.greedy_decode(log_probs, None if decode_padding else out_lengths)
        if mean_per_utterance:
            cer = sum(ds2.character_error_rate(t, h) for t, h in zip(texts, hypotheses, strict=True)) / len(
                texts
            )
        else:
            cer = ds2.character_error_rate(list(texts), hypotheses)
        return cer, hypotheses

    return lambda module: evaluate_cer


def _fixed_step_budget(module):
    original = module.train_and_evaluate
    return lambda train_split, dev_split, num_steps, seed=0: original(train_split, dev_split, 10, seed)


# --- exercise 1 ---


def _stft_with(transform, window_fn=torch.hann_window):
    """A log_power_spectrogram that applies ``transform`` to the power (instead of the natural log)."""

    def log_power_spectrogram(waveform, sample_rate=16000):
        window, hop = ds2.frame_parameters(sample_rate)
        stft = torch.stft(waveform, window, hop, window=window_fn(window), center=False, return_complex=True)
        return transform(stft.abs().square())

    return lambda module: log_power_spectrogram


def _normalise_by_multiplying(module):
    def normalize_over_valid_frames(spec, lengths):
        mask = ds2.lengths_to_mask(lengths, spec.shape[-1])[:, None, :].float()  # (B, 1, T) of 0s and 1s
        count = lengths * spec.shape[1]
        mean = (spec * mask).sum((1, 2)) / count
        centred = (spec - mean[:, None, None]) * mask
        variance = centred.square().sum((1, 2)) / count
        return centred / (variance.sqrt()[:, None, None] + 1e-5)

    return normalize_over_valid_frames


# --- exercise 2 ---


def _alphas(combine="logsumexp", skip=True, log_zero=-1e30, detach=False, clamp=None):
    """A vectorised alpha recursion with one common mistake switched on."""

    def ctc_alphas(log_probs, label):
        extended = torch.zeros(2 * len(label) + 1, dtype=torch.long)
        extended[1::2] = label
        emit = log_probs[:, extended].detach() if detach else log_probs[:, extended]  # (T, L)
        if clamp is not None:  # "for stability"
            emit = emit.clamp(min=clamp)
        length = len(extended)
        can_skip = torch.zeros(length, dtype=torch.bool)
        if skip:
            can_skip[2:] = (extended[2:] != 0) & (extended[2:] != extended[:-2])
        zero = log_probs.new_full((2,), log_zero)
        rows = [torch.cat([emit[0, :2], log_probs.new_full((length - 2,), log_zero)])]
        for t in range(1, len(emit)):
            previous = rows[-1]
            terms = torch.stack(
                [
                    previous,
                    torch.cat([zero[:1], previous[:-1]]),
                    torch.cat([zero, previous[:-2]]).masked_fill(~can_skip, log_zero),
                ]
            )
            if combine == "max":  # Viterbi
                summed = terms.max(0).values
            elif combine == "naive":  # log(sum(exp)): underflows
                summed = torch.log(torch.exp(terms).sum(0))
            else:
                summed = torch.logsumexp(terms, 0)
            rows.append(summed + emit[t])
        return torch.stack(rows)

    return lambda module: ctc_alphas


def _loss_from_f_ctc_loss(module):
    return lambda log_probs, label: F.ctc_loss(
        log_probs[:, None], label[None], [log_probs.shape[0]], [len(label)], reduction="sum"
    )


def _batch_loss(reduce="mean", padded_frames=False):
    def make(module):
        def batch_ctc_loss(log_probs, targets, input_lengths, target_lengths):
            losses = torch.stack(
                [
                    module.ctc_negative_log_likelihood(
                        log_probs[b] if padded_frames else log_probs[b, : input_lengths[b]],
                        targets[b, : target_lengths[b]],
                    )
                    for b in range(len(log_probs))
                ]
            )
            if reduce == "sum":
                return losses.sum()
            if reduce == "per character":
                return (losses / target_lengths).mean()
            return losses.mean()

        return batch_ctc_loss

    return make


def _brute_force_best_path_only(module):
    def brute_force_log_likelihood(log_probs, label):
        symbols = sorted({0, *label.tolist()})
        paths = [
            log_probs[torch.arange(len(log_probs)), torch.tensor(path)].sum()
            for path in itertools.product(symbols, repeat=len(log_probs))
            if module.collapse(list(path)) == label.tolist()
        ]
        return torch.stack(paths).max() if paths else torch.tensor(float("-inf"))

    return brute_force_log_likelihood


def _collapse_blanks_first(module):
    def collapse(path):
        kept = [symbol for symbol in path if symbol != 0]
        return [symbol for t, symbol in enumerate(kept) if t == 0 or symbol != kept[t - 1]]

    return collapse


# --- exercise 4 ---


def _sorted_lengths(lengths, batch_size):
    ordered = sorted(lengths)  # the lengths themselves, not the indices
    return [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]


def _sorted_minibatches_reordered(module):
    """Later epochs: epoch 0's sorted minibatches in a random order, so each keeps the same utterances."""

    def sortagrad_batches(lengths, batch_size, epoch, seed=0):
        batches = module.batches_by_length(lengths, batch_size)
        if epoch == 0:
            return batches
        return [batches[i] for i in np.random.default_rng([seed, epoch]).permutation(len(batches)).tolist()]

    return sortagrad_batches


def _sortagrad_without_validation(module):
    return lambda lengths, batch_size, epoch, seed=0: (
        module.batches_by_length(lengths, batch_size)
        if epoch == 0
        else module.shuffled_batches(len(lengths), batch_size, epoch, seed)
    )


def _random_batches_by_longest(module):
    """The literal reading of §3.3: random minibatches, ordered by their longest utterance in epoch 0."""

    def sortagrad_batches(lengths, batch_size, epoch, seed=0):
        batches = module.shuffled_batches(len(lengths), batch_size, epoch + 1000, seed)
        if epoch == 0:
            return sorted(batches, key=lambda batch: max(lengths[i] for i in batch))
        return batches

    return sortagrad_batches


# --- exercise 6 ---


def _extend(separate=True, collapse_repeats=True):
    """Exercise 6's one-frame update with one common mistake switched on."""

    def make(module):
        def extend_prefixes(beams, frame, symbols=None):
            frame = [float(value) for value in frame]
            symbols = range(len(frame)) if symbols is None else symbols
            table = {}

            def add(prefix, which, value):
                entry = table.setdefault(prefix, [-math.inf, -math.inf])
                entry[which] = module.log_add(entry[which], value)

            for prefix, (p_b, p_nb) in beams.items():
                total = module.log_add(p_b, p_nb)
                last = prefix[-1] if prefix else None
                for k in symbols:
                    if k == 0:
                        add(prefix, 0, total + frame[k])
                    elif k == last and not separate:  # one probability per prefix: a repeat always merges
                        add(prefix, 1, total + frame[k])
                    elif k == last and collapse_repeats:
                        add(prefix, 1, p_nb + frame[k])
                        add((*prefix, k), 1, p_b + frame[k])
                    else:  # (with collapse_repeats=False, a repeat is treated as a new letter)
                        add((*prefix, k), 1, total + frame[k])
            if not separate:  # the single probability, reported as both halves' sum in p_nb
                return {prefix: (-math.inf, module.log_add(*entry)) for prefix, entry in table.items()}
            return {prefix: tuple(entry) for prefix, entry in table.items()}

        return extend_prefixes

    return make


def _lm_per_character(module):
    return lambda text, lm, final: (
        lm.sentence_log_prob(list(text.replace(" ", "")), eos=final),
        len(text.split()),
    )


def _lm_partial_word(module):
    return lambda text, lm, final: (lm.sentence_log_prob(text.split(), eos=final), len(text.split()))


def _fused_without_beta(module):
    def fused_score(ctc_log_prob, text, lm, alpha, beta, final):
        return ctc_log_prob if lm is None else ctc_log_prob + alpha * module.lm_log_prob(text, lm, final)[0]

    return fused_score


def _search_with(alpha_zero=False, beta_zero=False):
    def make(module):
        original = module.prefix_beam_search

        def prefix_beam_search(log_probs, beam_width=16, lm=None, alpha=0.0, beta=0.0, prune_log_prob=-10.0):
            return original(
                log_probs,
                beam_width,
                lm,
                0.0 if alpha_zero else alpha,
                0.0 if beta_zero else beta,
                prune_log_prob,
            )

        return prefix_beam_search

    return make


def _beam_search(rank_during="Q", cut_first=False, argmax_fallback=True):
    """Exercise 6's search, built from the module's parts, with one common mistake switched on.

    ``rank_during``: what ranks the candidates after every frame: "Q" (right), "p_ctc" (the LM only at the
    end) or "final" (Q with final=True).
    """

    def make(module):
        def prefix_beam_search(log_probs, beam_width=16, lm=None, alpha=0.0, beta=0.0, prune_log_prob=-10.0):
            def score(item, final):
                prefix, (p_b, p_nb) = item
                ctc = module.log_add(p_b, p_nb)
                if rank_during == "p_ctc" and not final:
                    return ctc
                final = final or rank_during == "final"
                return module.fused_score(ctc, ds2.decode_labels(prefix), lm, alpha, beta, final)

            beams = {(): (0.0, -math.inf)}
            for frame in log_probs.double().tolist():
                symbols = [k for k, q in enumerate(frame) if q >= prune_log_prob]
                if argmax_fallback:
                    symbols = symbols or [max(range(len(frame)), key=frame.__getitem__)]
                candidates = list(module.extend_prefixes(beams, frame, symbols).items())
                if cut_first:
                    candidates = candidates[:beam_width]
                ranked = sorted(candidates, key=lambda item: score(item, False), reverse=True)
                beams = dict(ranked[:beam_width])
            return ds2.decode_labels(max(beams.items(), key=lambda item: score(item, True))[0])

        return prefix_beam_search

    return make


# --- exercise 7 ---


def _front_end_lengths(floor_half=False, no_padding=False, time_strides=(2, 1, 1), true_division=False):
    def front_end_output_lengths(lengths, num_layers):
        for index in range(num_layers):
            kernel = ds2.PAPER_CONV_KERNELS[index][1]
            padding = 0 if no_padding else kernel // 2
            if floor_half:
                lengths = lengths // 2 if index == 0 else lengths
            elif true_division:
                lengths = (lengths + 2 * padding - kernel) / time_strides[index] + 1
            else:
                lengths = (lengths + 2 * padding - kernel) // time_strides[index] + 1
        return lengths

    return lambda module: front_end_output_lengths


def _front_end(
    flatten_frequency_first=False, statistics_over_padding=False, input_not_zeroed=False, relu=False
):
    def make(module):
        def forward(self, spec, lengths):
            mask = ds2.lengths_to_mask(lengths, spec.shape[-1])
            x = (spec if input_not_zeroed else spec.masked_fill(~mask[:, None, :], 0.0)).unsqueeze(1)
            for conv, norm in zip(self.layers, self.norms, strict=True):
                x = conv(x)
                lengths = module.conv_output_length(
                    lengths, conv.kernel_size[1], conv.stride[1], conv.padding[1]
                )
                batch, channels, freq, frames = x.shape
                rows = x.permute(0, 3, 2, 1).reshape(batch, frames * freq, channels)
                counted = torch.full_like(lengths, frames) if statistics_over_padding else lengths
                x = norm(rows, counted * freq).reshape(batch, frames, freq, channels).permute(0, 3, 2, 1)
                mask = ds2.lengths_to_mask(lengths, frames)
                x = (torch.relu(x) if relu else ds2.clipped_relu(x)).masked_fill(~mask[:, None, None, :], 0.0)
            batch, channels, freq, frames = x.shape
            order = (0, 3, 2, 1) if flatten_frequency_first else (0, 3, 1, 2)
            return x.permute(*order).reshape(batch, frames, channels * freq), lengths

        return forward

    return make


def _bidirectional(concatenate=False, torch_flip=False, not_reversed_back=False):
    def make(module):
        def forward(self, x, lengths):
            forward_out = self.forward_layer(x, lengths)
            if torch_flip:
                backward_out = self.backward_layer(x.flip(1), lengths).flip(1)
            else:
                backward_out = self.backward_layer(module.reverse_within_lengths(x, lengths), lengths)
                if not not_reversed_back:
                    backward_out = module.reverse_within_lengths(backward_out, lengths)
            out = torch.cat([forward_out, backward_out], -1) if concatenate else forward_out + backward_out
            return out.masked_fill(~ds2.lengths_to_mask(lengths, x.shape[1])[..., None], 0.0)

        return forward

    return make


def _lookahead(**mistake):
    def make(module):
        from checks.ex07_model import _lookahead_variant

        return lambda self, x, lengths: _lookahead_variant(self.weight, x, lengths, **mistake)

    return make


def _model_forward(
    input_lengths=False, return_input_lengths=False, softmax=False, logits=False, skip_lookahead=False
):
    def make(module):
        def forward(self, spectrograms, lengths):
            x, out_lengths = self.conv(spectrograms, lengths)
            for rnn in self.rnns:
                x = rnn(x, lengths if input_lengths else out_lengths)
            if self.lookahead is not None and not skip_lookahead:
                x = self.lookahead(x, out_lengths)
            scores = self.fc(x)
            if softmax:
                scores = scores.softmax(-1)
            elif not logits:
                scores = scores.log_softmax(-1)
            return scores, lengths if return_input_lengths else out_lengths

        return forward

    return make


# name: (exercise, part, what to patch, replacement built from the loaded module, words the message must contain)
# fmt: off
MISTAKES = {
    "1a count_frames goes negative": (1, "a", "count_frames", lambda m: lambda n, w, h: 1 + (n - w) // h, "no frames"),
    "1a frame_sizes swapped": (1, "a", "frame_sizes", lambda m: lambda sr, w=20.0, s=10.0: (round(sr * s / 1000), round(sr * w / 1000)), "expected (320, 160)"),
    "1b frames do not overlap": (1, "b", "frame_signal", lambda m: lambda x, w, h: x.unfold(0, w, w), "shape"),
    "1c no window": (1, "c", "power_spectrum", lambda m: _frames_power_no_window, "Hann window"),
    "1c magnitude": (1, "c", "power_spectrum", lambda m: _power(magnitude=True), "magnitude"),
    "1c (T, F) layout": (1, "c", "power_spectrum", lambda m: _power(layout_tf=True), "(F, T)"),
    "1d log10": (1, "d", "log_power_spectrogram", lambda m: _stft_log10, "log10"),
    "1e padding in statistics": (1, "e", "normalize_over_valid_frames", _normalise_with_padding, "include the padded frames"),
    "1e one mean per bin": (1, "e", "normalize_over_valid_frames", _normalise_each_bin, "each frequency bin"),
    "1e padding not zeroed": (1, "e", "normalize_over_valid_frames", lambda m: lambda s, n: s - 1.0, "exactly 0"),
    "1a int() instead of round()": (1, "a", "frame_sizes", lambda m: lambda sr, w=20.0, s=10.0: (int(sr * w / 1000), int(sr * s / 1000)), "round()"),
    "1c Hamming window": (1, "c", "power_spectrum", lambda m: lambda fr: torch.fft.rfft(fr * torch.hamming_window(fr.shape[-1]), dim=-1).abs().square().T, "Hamming window"),
    "1d no log": (1, "d", "log_power_spectrogram", _stft_with(lambda power: power), "the power itself"),
    "1d decibels": (1, "d", "log_power_spectrogram", _stft_with(lambda power: 10 * torch.log10(power + 1e-10)), "decibels"),
    "1d log1p": (1, "d", "log_power_spectrogram", _stft_with(torch.log1p), "log1p"),
    "1e multiplied by the mask": (1, "e", "normalize_over_valid_frames", _normalise_by_multiplying, "Multiplying by a 0/1 mask"),
    "2a blanks dropped before merging": (2, "a", "collapse", _collapse_blanks_first, "merge first, then drop blanks"),
    "2a probability instead of its log": (2, "a", "brute_force_log_likelihood", lambda m: (lambda f: lambda lp, y: f(lp, y).exp())(m.brute_force_log_likelihood), "return its log"),
    "2a only the best path": (2, "a", "brute_force_log_likelihood", _brute_force_best_path_only, "single most probable path"),
    "2b no final blank": (2, "b", "extend_with_blanks", lambda m: lambda y: torch.stack([torch.zeros_like(y), y], 1).flatten(), "once at the end"),
    "2c skips between equal labels": (2, "c", "ctc_alphas", _alphas_skipping_equal_labels, "equal labels"),
    "2c Viterbi max instead of logsumexp": (2, "c", "ctc_alphas", _alphas(combine="max"), "Viterbi"),
    "2c no skip transition": (2, "c", "ctc_alphas", _alphas(skip=False), "never skips a blank"),
    "2c naive log(sum(exp))": (2, "c", "ctc_alphas", _alphas(combine="naive", log_zero=float("-inf")), "log(sum(exp(...))) underflowing"),
    "2d final blank only": (2, "d", "ctc_negative_log_likelihood", lambda m: lambda lp, y: -m.ctc_alphas(lp, y)[-1, -1], "final blank"),
    "2d not negated": (2, "d", "ctc_negative_log_likelihood", lambda m: lambda lp, y: torch.logsumexp(m.ctc_alphas(lp, y)[-1, -2:], 0), "negative"),
    "2d loss bypasses the alphas": (2, "d", "ctc_negative_log_likelihood", _loss_from_f_ctc_loss, "must compute the loss from ctc_alphas"),
    "2e -inf in the recursion: NaN gradients": (2, "e", "ctc_alphas", _alphas(log_zero=float("-inf")), "NaN"),
    "2e detached recursion": (2, "e", "ctc_alphas", _alphas(detach=True), "detached"),
    "2e sum over the batch": (2, "e", "batch_ctc_loss", _batch_loss(reduce="sum"), "sum over the batch"),
    "2e loss per character": (2, "e", "batch_ctc_loss", _batch_loss(reduce="per character"), "transcript length"),
    "2e padded frames in the loss": (2, "e", "batch_ctc_loss", _batch_loss(padded_frames=True), "padded frames entered the loss"),
    "2e batch loss bypasses part d": (2, "e", "batch_ctc_loss", lambda m: ds2.ctc_loss, "must average ctc_negative_log_likelihood"),
    "2f blanks dropped before collapsing": (2, "f", "greedy_decode", _greedy_drop_blanks_first, "merge first, then drop blanks"),
    "3a no ceiling": (3, "a", "clipped_relu", lambda m: lambda x, ceiling=20.0: torch.relu(x), "ceiling"),
    "3b padding in statistics": (3, "b", "masked_mean_and_variance", lambda m: _statistics(padding=True), "padded frames"),
    "3b unbiased variance": (3, "b", "masked_mean_and_variance", lambda m: _statistics(unbiased=True), "unbiased"),
    "3c biased running variance": (3, "c", "SequenceWiseBatchNorm.forward", lambda m: _batch_norm_forward(running_var_biased=True), "unbiased"),
    "3c batch statistics in eval": (3, "c", "SequenceWiseBatchNorm.forward", lambda m: _batch_norm_forward(eval_uses_batch=True), "eval mode"),
    "3c padding in statistics": (3, "c", "SequenceWiseBatchNorm.forward", lambda m: _batch_norm_forward(padding_in_stats=True), "include the padded frames"),
    "3d BatchNorm on the outputs": (3, "d", "SimpleRNNLayer.forward", lambda m: _rnn_forward(batch_norm_on_outputs=True), "implementation.SimpleRNNLayer"),
    "3d ReLU without ceiling": (3, "d", "SimpleRNNLayer.forward", lambda m: _rnn_forward(relu_only=True), "exactly 20"),
    "3d padding not zeroed": (3, "d", "SimpleRNNLayer.forward", lambda m: _rnn_forward(keep_padding=True), "padded frames must come out as exactly 0"),
    "4a not sorted": (4, "a", "batches_by_length", lambda m: _unsorted, "[[1, 2], [0]]"),
    "4a last batch dropped": (4, "a", "batches_by_length", lambda m: _drop_last, "partial"),
    "4b same order every epoch": (4, "b", "shuffled_batches", _ignore_epoch, "different order"),
    "4b global random state": (4, "b", "shuffled_batches", lambda m: _unseeded_shuffle, "same seed and epoch"),
    "4b numpy ints": (4, "b", "shuffled_batches", lambda m: _numpy_ints, "plain Python ints"),
    "4c always sorted": (4, "c", "sortagrad_batches", lambda m: lambda ls, b, e, s=0: m.batches_by_length(ls, b), "later epochs are shuffled"),
    "4c never sorted": (4, "c", "sortagrad_batches", lambda m: lambda ls, b, e, s=0: m.shuffled_batches(len(ls), b, e + 1, s), "increasing length"),
    "4a sorted lengths, not indices": (4, "a", "batches_by_length", lambda m: _sorted_lengths, "the lengths themselves"),
    "4c random batches ordered by their longest": (4, "c", "sortagrad_batches", _random_batches_by_longest, "curriculum of short utterances first is lost"),
    "5a raw log spectrogram": (5, "a", "featurize_split", _featurize_with(ds2.log_spectrogram), "raw log spectrogram"),
    "5a no floor": (5, "a", "featurize_split", _featurize_with(lambda w: ds2.normalize_spectrogram(ds2.log_spectrogram(w), floor_db=None)), "50 dB floor"),
    "5a featurized as one padded batch": (5, "a", "featurize_split", _featurize_as_one_batch, "unpadded"),
    "5b eval mode": (5, "b", "training_step", _training_step(eval_mode=True), "model.train()"),
    "5b no zero_grad": (5, "b", "training_step", _training_step(no_zero_grad=True), "zero_grad"),
    "5b no clipping": (5, "b", "training_step", _training_step(no_clip=True), "clip_grad_norm_"),
    "5b loss per character": (5, "b", "training_step", _training_step(per_character=True), "reduction='mean'"),
    "5b norm after clipping": (5, "b", "training_step", _training_step(clipped_norm=True), "before"),
    "5c new optimizer every step": (5, "c", "train", _train(new_optimizer_each_step=True), "one torch.optim.Adam"),
    "5c no SortaGrad": (5, "c", "train", _train(shuffle_first_epoch=True), "shortest utterances to the longest"),
    "5c whole epochs only": (5, "c", "train", _train(whole_epochs=True), "exactly num_steps"),
    "5c learning rate ignored": (5, "c", "train", _train(learning_rate_ignored=True), "learning rate ignored"),
    "5c no cosine decay": (5, "c", "train", _train(no_decay=True), "no cosine decay"),
    "5d train mode": (5, "d", "evaluate_cer", _evaluate_cer(train_mode=True), "model.eval()"),
    "5d padded frames decoded": (5, "d", "evaluate_cer", _evaluate_cer(decode_padding=True), "padded frames"),
    "5d mean of per-utterance CERs": (5, "d", "evaluate_cer", _evaluate_cer(mean_per_utterance=True), "per-utterance"),
    "5e own step budget": (5, "e", "train_and_evaluate", _fixed_step_budget, "exactly the 2 steps"),
    "6a no separate blank / non-blank probabilities": (6, "a", "extend_prefixes", _extend(separate=False), "double letter"),
    "6a repeats not collapsed": (6, "a", "extend_prefixes", _extend(collapse_repeats=False), "repeats not collapsed"),
    "6b LM scored per character": (6, "b", "lm_log_prob", _lm_per_character, "scored per character"),
    "6b the word being spelt scored": (6, "b", "lm_log_prob", _lm_partial_word, "still being spelt"),
    "6c beta never applied": (6, "c", "fused_score", _fused_without_beta, "beta never applied"),
    "6d no separate blank / non-blank probabilities": (6, "d", "extend_prefixes", _extend(separate=False), "double letter"),
    "6d repeats not collapsed": (6, "d", "extend_prefixes", _extend(collapse_repeats=False), "repeats not collapsed"),
    "6d beta never applied": (6, "d", "prefix_beam_search", _search_with(beta_zero=True), "beta never applied"),
    "6d search bypasses its parts": (6, "d", "prefix_beam_search", lambda m: lambda lp, bw=16, lm=None, a=0.0, b=0.0, p=-10.0: ds2.prefix_beam_search(lp, bw, lm, a, b), "build the search from your parts"),
    "6d LM never used": (6, "d", "prefix_beam_search", _search_with(alpha_zero=True), "the LM never entered the ranking"),
    "1a hop truncated with int()": (1, "a", "frame_sizes", lambda m: lambda sr, w=20.0, s=10.0: (round(sr * w / 1000), int(sr * s / 1000)), "int() cuts the hop, 330.75"),
    "2c log-probabilities clamped at -30": (2, "c", "ctc_alphas", _alphas(clamp=-30.0), "clamped at -30"),
    "2d log-probabilities clamped at -30": (2, "d", "ctc_alphas", _alphas(clamp=-30.0), "clamped at -30"),
    "3c running estimates updated outside no_grad": (3, "c", "SequenceWiseBatchNorm.forward", lambda m: _batch_norm_forward(update_outside_no_grad=True), "outside torch.no_grad()"),
    "3c eps outside the square root": (3, "c", "SequenceWiseBatchNorm.forward", lambda m: _batch_norm_forward(eps_outside_root=True), "eps goes inside it"),
    "4b global numpy generator reseeded": (4, "b", "shuffled_batches", lambda m: _global_numpy_reseeded, "numpy's global random state"),
    "4b the same minibatches reordered": (4, "b", "shuffled_batches", lambda m: _same_minibatches_reordered, "the very same minibatches"),
    "4c the sorted minibatches reordered": (4, "c", "sortagrad_batches", _sorted_minibatches_reordered, "the very same minibatches"),
    "4c no input validation": (4, "c", "sortagrad_batches", _sortagrad_without_validation, "must raise ValueError"),
    "5c epoch counter never advanced": (5, "c", "train", _train(epoch_never_advanced=True), "epoch += 1"),
    "6d ranked by p_ctc during the search": (6, "d", "prefix_beam_search", _beam_search(rank_during="p_ctc"), "ranked by p_ctc alone during the search"),
    "6d final=True during the search": (6, "d", "prefix_beam_search", _beam_search(rank_during="final"), "used final=True"),
    "6d beam cut before ranking": (6, "d", "prefix_beam_search", _beam_search(cut_first=True), "the beam was cut before ranking"),
    "6d no argmax fallback": (6, "d", "prefix_beam_search", _beam_search(argmax_fallback=False), "single most probable one"),
    "7a T // 2": (7, "a", "front_end_output_lengths", _front_end_lengths(floor_half=True), "T // 2 drops the last frame"),
    "7a no padding": (7, "a", "front_end_output_lengths", _front_end_lengths(no_padding=True), "padding is missing"),
    "7a every layer strides in time": (7, "a", "front_end_output_lengths", _front_end_lengths(time_strides=(2, 2, 2)), "only the first layer strides in time"),
    "7a true division": (7, "a", "front_end_output_lengths", _front_end_lengths(true_division=True), "use // (floor division)"),
    "7b (frequency, channel) flattening": (7, "b", "ConvFrontEnd.forward", _front_end(flatten_frequency_first=True), "channel outermost"),
    "7b statistics over the padding": (7, "b", "ConvFrontEnd.forward", _front_end(statistics_over_padding=True), "statistics include the padded positions"),
    "7b input padding not zeroed": (7, "b", "ConvFrontEnd.forward", _front_end(input_not_zeroed=True), "padded frames of the input were not zeroed"),
    "7b ReLU without the ceiling": (7, "b", "ConvFrontEnd.forward", _front_end(relu=True), "without the ceiling"),
    "7c directions concatenated": (7, "c", "BidirectionalSum.forward", _bidirectional(concatenate=True), "concatenated"),
    "7c torch.flip of the padded batch": (7, "c", "BidirectionalSum.forward", _bidirectional(torch_flip=True), "backward layer starts in the padding"),
    "7c backward output not reversed back": (7, "c", "BidirectionalSum.forward", _bidirectional(not_reversed_back=True), "still reversed"),
    "7c reverse_within_lengths is torch.flip": (7, "c", "reverse_within_lengths", lambda m: lambda x, lengths: x.flip(1), "torch.flip reverses the padding too"),
    "7d looks back in time": (7, "d", "LookaheadConvolution.forward", _lookahead(looks_back=True), "looks back in time"),
    "7d reads the padding": (7, "d", "LookaheadConvolution.forward", _lookahead(reads_padding=True), "read the padding"),
    "7d taps reversed": (7, "d", "LookaheadConvolution.forward", _lookahead(flipped=True), "taps are reversed"),
    "7e spectrogram lengths to the recurrent layers": (7, "e", "DeepSpeech2.forward", _model_forward(input_lengths=True), "got the spectrogram's lengths"),
    "7e spectrogram lengths returned": (7, "e", "DeepSpeech2.forward", _model_forward(return_input_lengths=True), "are the spectrogram's lengths"),
    "7e softmax instead of log_softmax": (7, "e", "DeepSpeech2.forward", _model_forward(softmax=True), "probabilities (softmax)"),
    "7e no log_softmax": (7, "e", "DeepSpeech2.forward", _model_forward(logits=True), "raw scores"),
    "7e lookahead skipped": (7, "e", "DeepSpeech2.forward", _model_forward(skip_lookahead=True), "lookahead never ran"),
}
# fmt: on


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_a_common_mistake_fails_its_part_with_a_message_that_names_it(mistake):
    number, letter, name, make, words = MISTAKES[mistake]
    module = fresh(number)
    owner, _, method = name.rpartition(".")
    setattr(getattr(module, owner) if owner else module, method, make(module))
    part = next(p for p in CHECKS[number].PARTS if p.letter == letter)
    result = check.run_part(number, part, module)
    assert result.status is check.Status.FAILED, f"{mistake}: the check did not notice"
    assert words in result.message, f"{mistake}: message does not name the mistake: {result.message}"


def test_implementation_sortagrad_batches_passes_the_sortagrad_check():
    # The lesson's own implementation is a different, equally valid design (it shuffles length-sorted
    # minibatches); the check must accept it, not just the exercise's solution.
    if not hasattr(ds2, "sortagrad_batches"):
        pytest.skip("implementation.sortagrad_batches is not there yet")
    shim = types.SimpleNamespace(sortagrad_batches=ds2.sortagrad_batches)
    result = check.run_part(4, CHECKS[4].PARTS[2], shim)
    assert result.status is check.Status.PASSED, result.message


def test_the_end_to_end_bar_is_far_below_an_untrained_model():
    # Exercise 5, part e asks for a dev-clean CER below CER_BAR; an untrained model must be far above it,
    # or passing would prove nothing. (The dev split does not depend on the train size: utterance i of a
    # split is drawn from (seed, i) alone.)
    checks = CHECKS[5]
    dev = ds2.make_splits(1, checks.DEV_SIZE, seed=checks.DATA_SEED)["dev-clean"]
    torch.manual_seed(0)
    untrained = ds2.evaluate(
        ds2.DeepSpeech2(ds2.DS2Config()), [ds2.featurize(w) for w in dev.waveforms], dev.texts
    )
    assert untrained["cer"] > 3 * checks.CER_BAR, untrained["cer"]


def test_the_ctc_reference_oracle_agrees_with_f_ctc_loss():
    generator = torch.Generator().manual_seed(0)
    for text, frames in [("hello", 20), ("aa", 3), ("a", 1), ("abba", 9)]:
        label = ds2.encode_text(text)
        log_probs = F.log_softmax(torch.randn(frames, 29, generator=generator), dim=-1).double()
        expected = F.ctc_loss(log_probs[:, None], label[None], [frames], [len(label)], reduction="sum")
        assert -torch.logsumexp(reference_alphas(log_probs, label)[-1, -2:], 0) == pytest.approx(
            float(expected), rel=1e-9
        )


def test_the_brute_force_alignment_oracle_agrees_with_f_ctc_loss():
    # Exercise 6's oracle: summing its blank- and non-blank-ending probabilities gives p(y|x).
    from checks.ex06_beam_search import _tiny_log_probs, enumerate_alignments

    symbols = [ds2.BLANK, *ds2.encode_text("ab").tolist()]
    log_probs = _tiny_log_probs(5, symbols, 0)
    table = enumerate_alignments(log_probs, symbols)
    for text in ("ab", "aba", "a", "bb"):
        label = ds2.encode_text(text)
        expected = -F.ctc_loss(log_probs[:, None], label[None], [5], [len(label)], reduction="sum")
        assert float(np.logaddexp(*table[tuple(label.tolist())])) == pytest.approx(float(expected), abs=1e-9)
    assert sum(math.exp(np.logaddexp(*pair)) for pair in table.values()) == pytest.approx(1.0, abs=1e-12)


def test_the_beam_search_cases_can_tell_the_mistakes_apart():
    # Exercise 6, part d: each (alpha, beta) of the brute-force LM case has its own answer, so ignoring alpha
    # or beta cannot pass; and the LM case really flips the greedy answer in the library's search too.
    from checks import ex06_beam_search as checks6

    log_probs, symbols = checks6.lm_case_log_probs()
    answers = [checks6.exact_best(log_probs, symbols, checks6.small_lm(), *case) for case in checks6.LM_CASES]
    assert len(set(answers)) == len(answers), answers
    two = checks6._frames([{"-": 0.6, "a": 0.4}, {"-": 0.6, "a": 0.4}])
    assert ds2.greedy_decode(two)[0] == "" and checks6.exact_best(two, [0, ds2.ALPHABET.index("a")]) == "a"


def test_frame_sizes_may_round_an_exact_half_either_way():
    # "The nearest integer" of 220.5 is 220 or 221: round() (half to even) and int(x + 0.5) both pass.
    module = fresh(1)
    module.frame_sizes = lambda sr, w=20.0, s=10.0: (int(sr * w / 1000 + 0.5), int(sr * s / 1000 + 0.5))
    result = check.run_part(1, CHECKS[1].PARTS[0], module)
    assert result.status is check.Status.PASSED, result.message


def test_the_reference_beam_search_is_exact_with_a_wide_beam_and_each_mistake_changes_the_narrow_cases():
    # Exercise 6's narrow-beam oracle is written in the checker: with a beam that keeps every prefix it
    # must find the brute force's answer; on the narrow cases each mistake it builds must change an answer,
    # and every case must be clear of rounding.
    from checks import ex06_beam_search as checks6

    log_probs, symbols = checks6.lm_case_log_probs()
    for alpha, beta in checks6.LM_CASES:
        expected = checks6.exact_best(log_probs, symbols, checks6.small_lm(), alpha, beta)
        assert checks6.reference_search(log_probs, 4096, checks6.small_lm(), alpha, beta)[0] == expected
    two = checks6._frames([{"-": 0.6, "a": 0.4}, {"-": 0.6, "a": 0.4}])
    assert checks6.reference_search(two, 4)[0] == "a" and checks6.reference_search(two, 1)[0] == ""
    changed = set()
    for seed, beam_width, alpha, beta in checks6.NARROW_CASES:
        log_probs = checks6.narrow_case_log_probs(seed)
        expected, margin = checks6.reference_search(log_probs, beam_width, checks6.small_lm(), alpha, beta)
        assert margin > 1e-6, (seed, margin)
        for mistake in checks6.NARROW_MISTAKES:
            wrong, _ = checks6.reference_search(
                log_probs, beam_width, checks6.small_lm(), alpha, beta, mistake=mistake
            )
            changed |= {mistake} if wrong != expected else set()
    assert changed == set(checks6.NARROW_MISTAKES)


@pytest.mark.parametrize(
    "mistake", [{"rank_during": "p_ctc"}, {"cut_first": True}], ids=["p_ctc", "cut first"]
)
def test_the_cat_sat_in_a_narrow_beam_catches_a_ranking_without_the_lm(mistake):
    # Exercise 6, part d: the hand-made beam-2 case alone (not just the random narrow cases) needs the LM
    # in the ranking after every frame.
    from checks import ex06_beam_search as checks6

    module = fresh(6)
    checks6._check_the_cat_sat_in_a_narrow_beam(module)  # the solution passes it
    module.prefix_beam_search = _beam_search(**mistake)(module)
    with pytest.raises(check.CheckFailed, match="expected 'the cat sat', got 'the kat sat'"):
        checks6._check_the_cat_sat_in_a_narrow_beam(module)


def test_the_conv_front_end_oracle_counts_real_frames():
    # Exercise 7, part a's oracle runs the library's front-end; it must agree with the textbook formula.
    from checks.ex07_model import real_output_frames

    for num_layers in (1, 2, 3):
        expected = torch.arange(1, 501)
        for index in range(num_layers):
            kernel, stride = ds2.PAPER_CONV_KERNELS[index][1], ds2.PAPER_CONV_STRIDES[index][1]
            expected = (expected + 2 * (kernel // 2) - kernel) // stride + 1
        assert list(real_output_frames(num_layers)) == expected.tolist()


def test_exercise_7_needs_only_the_recurrent_layers_interface():
    # GRULayer's insides may change; exercise 7 (solution and checks) must never reach into them.
    for path in (check.exercise_path(7, "solutions"), ROOT / "exercises" / "checks" / "ex07_model.py"):
        source = path.read_text()
        assert ".gru." not in source and "weight_ih" not in source and "_suffixes" not in source, path


# ---------------------------------------------------------------------------------------------------------
# What a learner sees: one-line summaries, never a traceback
# ---------------------------------------------------------------------------------------------------------


def test_an_exception_in_learner_code_is_one_line_naming_the_line(tmp_path):
    source = tmp_path / "exercise_04_sortagrad.py"
    source.write_text("def batches_by_length(lengths, batch_size):\n    return [[lengths[999]]]\n")
    module = check.load_file(source, "test_broken_learner_file")
    result = check.run_part(4, CHECKS[4].PARTS[0], module)
    assert result.status is check.Status.FAILED
    assert result.message.startswith("IndexError: list index out of range (in batches_by_length, line 2:")
    assert "\n" not in result.message


def test_a_file_that_does_not_import_is_reported_in_one_line(tmp_path, capsys):
    source = tmp_path / "exercise_02_ctc_loss.py"
    source.write_text("def extend_with_blanks(label):\n    return label +\n")
    assert check.check_and_report(2, source, "learner", all_hints=True) is False
    out = capsys.readouterr().out
    assert "SyntaxError" in out and "line 2" in out and "Traceback" not in out


def test_a_check_that_never_finishes_is_stopped_and_reported():
    def loop_forever(module):
        while True:
            pass

    part = check.Part("a", "a loop", ("f",), loop_forever, ("x" * 21,) * 3, time_limit_s=0.5)
    result = check.run_part(9, part, types.SimpleNamespace())
    assert result.status is check.Status.FAILED and "did not finish in 0.5 s" in result.message


def test_a_part_waiting_on_an_earlier_part_says_so():
    module = fresh(1)
    module.frame_signal = lambda *args: (_ for _ in ()).throw(
        NotImplementedError("Exercise 1, part b: write frame_signal")
    )
    result = check.run_part(1, CHECKS[1].PARTS[3], module)  # part d uses part b
    assert result.status is check.Status.NOT_ATTEMPTED and "part b first" in result.message


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_command_line_on_stubs_and_solutions(only_for_solutions, tmp_path):
    stubs = _run("exercises/check.py", "all")
    assert stubs.returncode == 1, stubs.stdout + stubs.stderr
    assert "Traceback" not in stubs.stdout + stubs.stderr
    assert stubs.stdout.count("not attempted yet") == len(PARTS) + len(
        CHECKS
    )  # a line per part + a summary each
    assert "PASSED" not in stubs.stdout and "FAILED" not in stubs.stdout
    # Exercises with slow parts (training a model) are left to test_part_passes, marked slow.
    quick = [number for number, module in CHECKS.items() if not any(part.slow for part in module.PARTS)]
    solutions = _run("exercises/check.py", *map(str, quick), "--solutions")
    assert solutions.returncode == 0, solutions.stdout + solutions.stderr
    assert solutions.stdout.count("PASSED") == sum(len(CHECKS[number].PARTS) for number in quick)
    # Running an exercise file directly checks that file.
    direct = _run(str(check.exercise_path(3, "learner")))
    assert direct.returncode == 1 and "Traceback" not in direct.stderr
    assert direct.stdout.count("not attempted yet") == len(CHECKS[3].PARTS) + 1
