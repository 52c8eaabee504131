"""Checks for exercise 7 (the Deep Speech 2 model: conv front-end, two directions, lookahead; DS2 §3).

Oracles: the number of frames ``implementation.ConvFrontEnd`` really outputs for every input length from 1
to 500, with 1, 2 and 3 layers (part a); ``implementation.ConvFrontEnd`` with the same weights, in
training and eval mode, and an utterance alone against the same utterance in a padded batch (part b);
``implementation.SimpleRNNLayer(bidirectional=True)`` with its weights split into two one-directional
layers, and two ``implementation.GRULayer``s run on each utterance alone (part c, which relies on the
recurrent layers' interface only, never on their insides); ``implementation.LookaheadConvolution`` with
the same weights, and which input frames each output frame depends on (part d);
``implementation.DeepSpeech2`` with the same weights (``load_state_dict``), first with the library's own
front-end and lookahead swapped into the learner's model (so that part e checks the assembly alone), then
with the learner's own parts, in training and eval mode, and batch invariance (part e).
"""

from __future__ import annotations

import copy
import functools

import torch
import torch.nn.functional as F
from torch import nn

import implementation as ds2
from checks.common import (
    CheckFailed,
    Part,
    call,
    expect_close,
    expect_equal,
    expect_shape,
    expect_tensor,
    is_close,
)

EXERCISE = 7
FILENAME = "exercise_07_model.py"
TITLE = "the Deep Speech 2 model: conv front-end, two directions, lookahead (DS2 §3)"
MINUTES = 50


def _padded(lengths: list[int], features: int, generator: torch.Generator, garbage: float = 1e3):
    """A ``(B, T, F)`` batch of random values, with large garbage in the padding."""
    lengths = torch.tensor(lengths)
    x = torch.randn(len(lengths), int(lengths.max()), features, generator=generator)
    padding = ~ds2.lengths_to_mask(lengths, x.shape[1])  # (B, T)
    x[padding] = garbage * (1 + torch.rand(int(padding.sum()), features, generator=generator))
    return x, lengths, padding


def _randomise_norms(module: nn.Module, generator: torch.Generator) -> None:
    """Give every BatchNorm a random scale, shift and running statistics (the defaults hide mistakes)."""
    with torch.no_grad():
        for norm in module.modules():
            if isinstance(norm, nn.BatchNorm1d):
                norm.weight.copy_(torch.rand(norm.weight.shape, generator=generator) + 0.5)
                norm.bias.copy_(torch.randn(norm.bias.shape, generator=generator) * 0.5)
                norm.running_mean.copy_(torch.randn(norm.running_mean.shape, generator=generator) * 0.1)
                norm.running_var.copy_(torch.rand(norm.running_var.shape, generator=generator) + 0.5)


def _load(what: str, learner: nn.Module, oracle: nn.Module) -> None:
    try:
        learner.load_state_dict(oracle.state_dict())
    except RuntimeError as error:
        raise CheckFailed(
            f"{what}: the library's weights do not fit your module ({str(error).splitlines()[0][:160]}); keep the "
            "modules __init__ builds, with their names"
        ) from None


# ---------------------------------------------------------------------------------------------------------
# Part a
# ---------------------------------------------------------------------------------------------------------


@functools.cache
def real_output_frames(num_layers: int) -> tuple[int, ...]:
    """Frames ``implementation.ConvFrontEnd`` outputs for an utterance of 1, 2, ..., 500 frames alone."""
    front = ds2.ConvFrontEnd(1, (1,) * num_layers).eval()  # one frequency bin and one channel: cheap
    frames = []
    with torch.no_grad():
        for length in range(1, 501):
            features, _ = front(torch.zeros(1, 1, length), torch.tensor([length]))
            frames.append(features.shape[1])
    return tuple(frames)


def _time_lengths(lengths: torch.Tensor, num_layers: int, padding: bool = True, strides=None) -> torch.Tensor:
    for index in range(num_layers):
        kernel = ds2.PAPER_CONV_KERNELS[index][1]
        stride = (strides or [s[1] for s in ds2.PAPER_CONV_STRIDES])[index]
        lengths = (lengths + 2 * (kernel // 2 if padding else 0) - kernel) // stride + 1
    return lengths


def check_output_lengths(module) -> None:
    for args, expected in [
        ((10, 3, 1, 1), 10),
        ((10, 11, 2, 5), 5),
        ((7, 41, 2, 20), 4),
        ((100, 11, 1, 5), 100),
    ]:
        what = f"conv_output_length({', '.join(map(str, args))})"
        got = call(module, "conv_output_length", torch.tensor([args[0]]), *args[1:])
        got = expect_tensor(what, got)
        if got.is_floating_point():
            raise CheckFailed(
                f"{what}: a length must stay an integer, got {got.dtype}: use // (floor division), not /"
            )
        length, kernel, stride, padding = args
        if int(got[0]) == (length - kernel) // stride + 1 != expected:
            raise CheckFailed(
                f"{what}: expected {expected}, got {int(got[0])}: the padding is missing; the input is "
                f"{padding} zeros longer on each side, (length + 2 * padding - kernel) // stride + 1"
            )
        expect_equal(what, int(got[0]), expected)
    lengths = torch.arange(1, 501)
    for num_layers in (1, 2, 3):
        expected = torch.tensor(real_output_frames(num_layers))
        what = f"front_end_output_lengths(1..500 frames, {num_layers} layer{'s' if num_layers > 1 else ''})"
        got = expect_shape(
            what, call(module, "front_end_output_lengths", lengths, num_layers), expected.shape
        )
        if got.is_floating_point():
            raise CheckFailed(f"{what}: lengths must stay integers, got {got.dtype}: use // (floor division)")
        if torch.equal(got, expected):
            continue
        first = int((got != expected).nonzero()[0])
        detail = (
            f"for {first + 1} frames ConvFrontEnd outputs {int(expected[first])}, you say {int(got[first])}"
        )
        variants = [
            (
                lengths // 2,
                "T // 2 drops the last frame of an odd-length input; the padded convolution gives "
                "(T + 2 * 5 - 11) // 2 + 1",
            ),
            (
                _time_lengths(lengths, num_layers, padding=False),
                "the padding is missing: each convolution is padded by kernel // 2 on both sides",
            ),
            (
                _time_lengths(lengths, num_layers, strides=[2, 2, 2]),
                "only the first layer strides in time "
                "(2x2); the second and third stride 2x1, by 2 in frequency only",
            ),
            (_time_lengths(lengths, 1), "every layer goes through the formula, not only the first"),
        ]
        for variant, message in variants:
            if torch.equal(got, variant.to(got.dtype)):
                raise CheckFailed(f"{what}: {detail}: {message}")
        raise CheckFailed(f"{what}: {detail}")


# ---------------------------------------------------------------------------------------------------------
# Part b
# ---------------------------------------------------------------------------------------------------------


def _front_end_variant(oracle, spec, lengths, stats_over_padding=False, zero_input=True, ceiling=True):
    """The front-end computed here in training mode, with one common mistake switched on."""
    mask = ds2.lengths_to_mask(lengths, spec.shape[-1])
    x = (spec.masked_fill(~mask[:, None, :], 0.0) if zero_input else spec).unsqueeze(1)
    for conv, norm in zip(oracle.layers, oracle.norms, strict=True):
        x = F.conv2d(x, conv.weight, None, conv.stride, conv.padding)
        lengths = ds2.conv_output_size(lengths, conv.kernel_size[1], conv.stride[1], conv.padding[1])
        valid = ds2.lengths_to_mask(lengths, x.shape[-1])[:, None, None, :].expand_as(x)  # (B, C, F', T')
        values = x.transpose(0, 1).reshape(x.shape[1], -1)  # (C, everything)
        picked = (
            values if stats_over_padding else x.transpose(0, 1)[valid.transpose(0, 1)].view(x.shape[1], -1)
        )
        mean, var = picked.mean(1), picked.var(1, unbiased=False)
        x = (x - mean[:, None, None]) / torch.sqrt(var[:, None, None] + norm.eps) * norm.weight[:, None, None]
        x = x + norm.bias[:, None, None]
        x = (ds2.clipped_relu(x) if ceiling else torch.relu(x)).masked_fill(~valid, 0.0)
    batch, channels, freq, frames = x.shape
    return x.permute(0, 3, 1, 2).reshape(batch, frames, channels * freq), lengths


def _compare_front_end(what, got, expected, expected_lengths, oracle=None, spec=None, lengths=None) -> None:
    if not isinstance(got, tuple | list) or len(got) != 2:
        raise CheckFailed(f"{what}: expected a pair (features, out_lengths), got {type(got).__name__}")
    features, out_lengths = got
    features = expect_shape(f"{what}: features", features, expected.shape)
    expect_equal(
        f"{what}: out_lengths",
        expect_tensor(f"{what}: out_lengths", out_lengths).tolist(),
        expected_lengths.tolist(),
    )
    padding = ~ds2.lengths_to_mask(expected_lengths, expected.shape[1])  # (B, T')
    if not torch.equal(features.detach()[padding], torch.zeros_like(features.detach()[padding])):
        raise CheckFailed(f"{what}: padded frames of the output must be exactly 0")
    if is_close(features, expected, 1e-4, 1e-4):
        return
    batch, frames, _ = expected.shape
    channels = oracle.layers[-1].out_channels if oracle is not None else 1
    swapped = expected.view(batch, frames, channels, -1).transpose(2, 3).reshape(batch, frames, -1)
    if channels > 1 and is_close(features, swapped, 1e-4, 1e-4):
        raise CheckFailed(
            f"{what}: the features of a frame are in (frequency, channel) order; DS2's layout is channel "
            "outermost: permute to (B, T', C, F') before reshaping to (B, T', C * F')"
        )
    if oracle is not None and oracle.training:
        for settings, message in [
            (
                dict(stats_over_padding=True),
                "BatchNorm's statistics include the padded positions; take them "
                "over the valid (frequency, time) positions only: (B, T' * F', C) rows with lengths * F'",
            ),
            (
                dict(zero_input=False),
                "the padded frames of the input were not zeroed: the first convolution's kernel reaches 5 "
                "frames past each utterance's end, into whatever the padding holds; masked_fill them first",
            ),
            (
                dict(ceiling=False),
                "that is a ReLU without the ceiling: implementation.clipped_relu caps at 20",
            ),
        ]:
            variant, _ = _front_end_variant(oracle, spec, lengths, **settings)
            if is_close(features, variant, 1e-4, 1e-4):
                raise CheckFailed(f"{what}: {message}")
    expect_close(
        f"{what}: features (vs implementation.ConvFrontEnd)", features, expected, atol=1e-4, rtol=1e-4
    )


def check_front_end(module) -> None:
    generator = torch.Generator().manual_seed(71)
    for channels in ((3,), (2, 3), (2, 2, 3)):
        oracle = ds2.ConvFrontEnd(161, channels)
        _randomise_norms(oracle, generator)
        with torch.no_grad():
            oracle.norms[-1].bias[0] = 22.0  # most of channel 0 above 20: the clipped ReLU's ceiling shows
        ours = module.ConvFrontEnd(161, channels)
        name = f"ConvFrontEnd(161, {channels})"
        _load(name, ours, oracle)
        x, lengths, _ = _padded([37, 12, 30], 161, generator)
        spec = x.transpose(1, 2).contiguous()  # (B, F, T), garbage in the padded frames
        ours.train()
        oracle.train()
        what = f"{name} in training mode (lengths {lengths.tolist()}, garbage in the padding)"
        reference = copy.deepcopy(oracle)
        expected, expected_lengths = oracle(spec.clone(), lengths)
        got = ours(spec.clone(), lengths)
        _compare_front_end(what, got, expected, expected_lengths, reference, spec, lengths)
        for key, value in oracle.state_dict().items():
            if value.is_floating_point():
                expect_close(
                    f"{name}: {key} after one training step", ours.state_dict()[key], value, 1e-4, 1e-4
                )
        ours.eval()
        oracle.eval()
        with torch.no_grad():
            what = f"{name} in eval mode"
            expected, expected_lengths = oracle(spec.clone(), lengths)
            got = ours(spec.clone(), lengths)
            _compare_front_end(what, got, expected, expected_lengths)
            alone, _ = ours(spec[1:2, :, :12].clone(), lengths[1:2])
            batched = got[0][1:2, : alone.shape[1]]
            if not is_close(alone, batched, 1e-4, 1e-4):
                raise CheckFailed(
                    f"{name} in eval mode: utterance 1 (12 frames) alone differs from the same utterance in the "
                    "padded batch: the padding leaks into its last frames; zero the padded frames of the input "
                    "and after every layer"
                )


# ---------------------------------------------------------------------------------------------------------
# Part c
# ---------------------------------------------------------------------------------------------------------


def _check_reverse(module) -> None:
    generator = torch.Generator().manual_seed(72)
    x, lengths, padding = _padded([5, 2, 7, 1], 3, generator)
    expected = x.clone()
    for b, length in enumerate(lengths.tolist()):
        expected[b, :length] = x[b, :length].flip(0)
    what = "reverse_within_lengths (lengths 5, 2, 7, 1)"
    got = expect_shape(what, call(module, "reverse_within_lengths", x, lengths), x.shape)
    if torch.equal(got, x.flip(1)):
        raise CheckFailed(
            f"{what}: torch.flip reverses the padding too, to the front of each shorter utterance; reverse "
            "only t < lengths[b] and leave the padding where it is"
        )
    if not torch.equal(got[padding], x[padding]):
        raise CheckFailed(f"{what}: the padded frames must stay where they are, untouched")
    expect_close(what, got, expected, atol=0, rtol=0)


def _split_simple_rnn(bidirectional: ds2.SimpleRNNLayer, input_size: int, hidden: int):
    """Two one-directional SimpleRNNLayers holding the two directions of ``bidirectional``."""
    layers = [ds2.SimpleRNNLayer(input_size, hidden, bidirectional=False) for _ in range(2)]
    with torch.no_grad():
        for direction, layer in enumerate(layers):
            part = slice(direction * hidden, (direction + 1) * hidden)
            layer.input_projection.weight.copy_(bidirectional.input_projection.weight[part])
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(layer.norm, name).copy_(getattr(bidirectional.norm, name)[part])
            layer.recurrent[0].weight.copy_(bidirectional.recurrent[direction].weight)
    return layers


def _bidirectional(module, forward_layer, backward_layer, x, lengths, what: str):
    layer = module.BidirectionalSum(forward_layer, backward_layer)
    got = expect_tensor(what, layer(x.clone(), lengths))
    if got.dim() == 3 and got.shape[-1] == 2 * forward_layer.hidden_size:
        raise CheckFailed(
            f"{what}: the output has 2H = {got.shape[-1]} features: the directions were concatenated; DS2 sums "
            "them, h_t = h_t(forward) + h_t(backward), and keeps H features (§3.1)"
        )
    return got


def check_bidirectional(module) -> None:
    _check_reverse(module)
    generator = torch.Generator().manual_seed(73)
    input_size, hidden = 5, 6
    oracle = ds2.SimpleRNNLayer(input_size, hidden, bidirectional=True)
    with torch.no_grad():
        oracle.recurrent[0].weight.mul_(3.0)  # strong recurrence: the direction of reading shows
        oracle.recurrent[1].weight.mul_(3.0)
    _randomise_norms(oracle, generator)
    x, lengths, padding = _padded([9, 4, 7, 1], input_size, generator)
    for mode in ("train", "eval"):
        forward_layer, backward_layer = _split_simple_rnn(oracle, input_size, hidden)
        for layer in (oracle, forward_layer, backward_layer):
            layer.train(mode == "train")
        what = f"BidirectionalSum of two SimpleRNNLayers, {mode} mode (lengths {lengths.tolist()}, garbage in the padding)"
        expected = oracle(x.clone(), lengths)
        reference = copy.deepcopy((forward_layer, backward_layer))
        got = expect_shape(
            what, _bidirectional(module, forward_layer, backward_layer, x, lengths, what), expected.shape
        )
        if not torch.equal(got.detach()[padding], torch.zeros_like(got.detach()[padding])):
            raise CheckFailed(f"{what}: padded frames must come out as exactly 0")
        if not is_close(got, expected, 1e-4, 1e-4):
            fwd, bwd = copy.deepcopy(reference[0]), copy.deepcopy(reference[1])
            forward_out = fwd(x.clone(), lengths)
            mask = ds2.lengths_to_mask(lengths, x.shape[1])[..., None]
            flipped = (forward_out + bwd(x.flip(1), lengths).flip(1)).masked_fill(~mask, 0.0)
            if is_close(got, flipped, 1e-4, 1e-4):
                raise CheckFailed(
                    f"{what}: torch.flip moves the padding to the front, so the backward layer starts in the "
                    "padding, not at each utterance's last frame: use reverse_within_lengths"
                )
            bwd = copy.deepcopy(reference[1])
            backward_raw = bwd(ds2.reverse_padded(x, lengths), lengths)
            if is_close(got, (forward_out + backward_raw).masked_fill(~mask, 0.0), 1e-4, 1e-4):
                raise CheckFailed(
                    f"{what}: the backward layer's output is still reversed: reverse it back, so that its "
                    "frame t lines up with frame t of the forward layer's"
                )
            if is_close(got, forward_out, 1e-4, 1e-4):
                raise CheckFailed(f"{what}: that is the forward layer alone; add the backward layer's output")
        expect_close(
            f"{what} (vs implementation.SimpleRNNLayer(bidirectional=True))", got, expected, 1e-4, 1e-4
        )
    # The interface alone: two GRU layers, in eval mode, against each utterance run on its own.
    forward_layer = ds2.GRULayer(input_size, hidden, bidirectional=False).eval()
    backward_layer = ds2.GRULayer(input_size, hidden, bidirectional=False).eval()
    with torch.no_grad():
        what = "BidirectionalSum of two GRULayers in eval mode (vs each utterance alone)"
        got = expect_shape(
            what, _bidirectional(module, forward_layer, backward_layer, x, lengths, what), (4, 9, hidden)
        )
        for b, length in enumerate(lengths.tolist()):
            alone = x[b : b + 1, :length]
            one = torch.tensor([length])
            expected = forward_layer(alone, one) + backward_layer(alone.flip(1), one).flip(1)
            expect_close(
                f"{what}: utterance {b} ({length} frames)", got[b : b + 1, :length], expected, 1e-4, 1e-4
            )


# ---------------------------------------------------------------------------------------------------------
# Part d
# ---------------------------------------------------------------------------------------------------------


def _lookahead_variant(weight, x, lengths, looks_back=False, reads_padding=False, flipped=False):
    context = weight.shape[1] - 1
    if not reads_padding:
        x = x.masked_fill(~ds2.lengths_to_mask(lengths, x.shape[1])[..., None], 0.0)
    frames = x.shape[1]
    taps = weight.flip(1) if flipped else weight
    if looks_back:
        past = F.pad(x, (0, 0, context, 0))  # (B, context + T, H)
        return sum(past[:, context - j : context - j + frames] * taps[:, j] for j in range(context + 1))
    future = F.pad(x, (0, 0, 0, context))
    return sum(future[:, j : j + frames] * taps[:, j] for j in range(context + 1))


def check_lookahead(module) -> None:
    generator = torch.Generator().manual_seed(74)
    features = 4
    for context in (1, 3):
        oracle = ds2.LookaheadConvolution(features, context)
        ours = module.LookaheadConvolution(features, context)
        _load(f"LookaheadConvolution({features}, {context})", ours, oracle)
        x, lengths, padding = _padded([8, 3, 6], features, generator)
        what = (
            f"LookaheadConvolution(context={context}) on lengths {lengths.tolist()} (garbage in the padding)"
        )
        got = expect_shape(what, ours(x.clone(), lengths), x.shape)
        expected = oracle(x.clone(), lengths)
        if not torch.equal(got.detach()[padding], torch.zeros_like(got.detach()[padding])):
            if is_close(got[~padding], expected[~padding], 1e-5, 1e-5):
                raise CheckFailed(f"{what}: padded frames must come out as exactly 0")
        if not is_close(got, expected, 1e-5, 1e-5):
            with torch.no_grad():
                for settings, message in [
                    (
                        dict(looks_back=True),
                        "your convolution looks back in time (frames t - context .. t); the "
                        "lookahead reads frames t .. t + context: pad with zeros on the right, after the last frame",
                    ),
                    (
                        dict(reads_padding=True),
                        "the last frames read the padding; frames past lengths[b] must "
                        "count as 0 (masked_fill them before convolving)",
                    ),
                    (
                        dict(flipped=True),
                        "the taps are reversed: weight[:, j] multiplies frame t + j, so "
                        "weight[:, 0] is the current frame (F.conv1d does not flip its kernel)",
                    ),
                ]:
                    if is_close(got, _lookahead_variant(ours.weight, x, lengths, **settings), 1e-5, 1e-5):
                        raise CheckFailed(f"{what}: {message}")
        expect_close(f"{what} (vs implementation.LookaheadConvolution)", got, expected, 1e-5, 1e-5)
        # Which inputs each output frame reads: frames t .. t + context of its own utterance, no others.
        inputs = x[:1, :8].clone().requires_grad_(True)  # one utterance of 8 frames, no padding
        for t in range(8):
            (gradient,) = torch.autograd.grad(ours(inputs, torch.tensor([8]))[0, t].sum(), inputs)
            reads = [s for s in range(8) if gradient[0, s].abs().max() > 0]
            allowed = list(range(t, min(t + context, 7) + 1))
            if reads != allowed:
                raise CheckFailed(
                    f"LookaheadConvolution(context={context}): output frame {t} reads input frames {reads}; it "
                    f"must read {allowed}, the frame itself and at most {context} frames ahead, nothing earlier"
                )


# ---------------------------------------------------------------------------------------------------------
# Part e
# ---------------------------------------------------------------------------------------------------------

CONFIGS = [
    ds2.DS2Config(conv_channels=(3,), rnn_layers=2, rnn_hidden=16),  # bidirectional GRUs
    ds2.DS2Config(
        conv_channels=(2, 2, 3), rnn_layers=1, rnn_hidden=12, bidirectional=False, lookahead_context=2
    ),
    ds2.DS2Config(conv_channels=(2, 3), rnn_type="rnn", rnn_layers=2, rnn_hidden=12),  # simple RNNs
]


def _describe(config: ds2.DS2Config) -> str:
    kind = (
        "bidirectional" if config.bidirectional else f"unidirectional, lookahead {config.lookahead_context}"
    )
    return f"DeepSpeech2({len(config.conv_channels)} conv, {config.rnn_layers} x {config.rnn_type.upper()} {kind})"


def _record_lengths(model: nn.Module):
    """Forward pre-hooks recording the lengths each recurrent layer and the lookahead receive."""
    seen: list[tuple[str, torch.Tensor | None]] = []
    handles = []
    named = [(f"rnns[{i}]", rnn) for i, rnn in enumerate(model.rnns)]
    if getattr(model, "lookahead", None) is not None:
        named.append(("lookahead", model.lookahead))
    for name, layer in named:

        def hook(layer_, args, kwargs, name=name):
            lengths = args[1] if len(args) > 1 else kwargs.get("lengths", next(iter(kwargs.values()), None))
            seen.append((name, lengths))

        handles.append(layer.register_forward_pre_hook(hook, with_kwargs=True))
    return seen, handles, [name for name, _ in named]


def _forward(what: str, model, spectrograms, lengths):
    got = model(spectrograms.clone(), lengths)
    if not isinstance(got, tuple | list) or len(got) != 2:
        raise CheckFailed(f"{what}: expected a pair (log_probs, out_lengths), got {type(got).__name__}")
    return got


def _compare_models(what: str, got, expected) -> None:
    log_probs, out_lengths = got
    expected_log_probs, expected_lengths = expected
    out_lengths = expect_tensor(f"{what}: out_lengths", out_lengths)
    log_probs = expect_shape(f"{what}: log_probs", log_probs, expected_log_probs.shape)
    valid = ds2.lengths_to_mask(expected_lengths, expected_log_probs.shape[1])  # (B, T')
    got_valid, expected_valid = log_probs[valid], expected_log_probs[valid]  # (N, 29)
    if not is_close(got_valid, expected_valid, 1e-4, 1e-4):
        if is_close(got_valid, expected_valid.exp(), 1e-4, 1e-4):
            raise CheckFailed(f"{what}: those are probabilities (softmax); the CTC loss takes log_softmax")
        shift = got_valid - expected_valid
        if is_close(shift, shift[:, :1].expand_as(shift), 1e-4, 1e-4):
            raise CheckFailed(
                f"{what}: those are the raw scores of the fully connected layer; finish with "
                "F.log_softmax(logits, dim=-1), so each frame is a distribution over the 29 symbols"
            )
    expect_close(
        f"{what}: log_probs on the valid frames (vs implementation.DeepSpeech2)",
        got_valid,
        expected_valid,
        1e-4,
        1e-4,
    )


def _check_lengths_passed(what: str, seen, lengths, expected_lengths) -> None:
    """Each recurrent layer and the lookahead must get the conv front-end's output lengths."""
    for layer, passed in seen:
        if isinstance(passed, torch.Tensor) and torch.equal(passed, lengths):
            raise CheckFailed(
                f"{what}: {layer} got the spectrogram's lengths {lengths.tolist()}; after the strided "
                f"convolution the utterances have {expected_lengths.tolist()} frames: pass the conv front-end's "
                "output lengths"
            )
        if not isinstance(passed, torch.Tensor) or not torch.equal(passed, expected_lengths):
            raise CheckFailed(f"{what}: {layer} got lengths {passed!r}, expected {expected_lengths.tolist()}")


def _check_assembly(module, config: ds2.DS2Config, generator: torch.Generator) -> None:
    """The learner's forward with the library's front-end and lookahead swapped in: the assembly alone."""
    name = _describe(config)
    oracle = ds2.DeepSpeech2(config)
    _randomise_norms(oracle, generator)
    model = module.DeepSpeech2(config)
    _load(name, model, oracle)
    model.conv = copy.deepcopy(oracle.conv)  # the library's parts: this check is about forward's wiring
    if oracle.lookahead is not None:
        model.lookahead = copy.deepcopy(oracle.lookahead)
    x, lengths, _ = _padded([47, 20, 33], 161, generator, garbage=50.0)
    spectrograms = x.transpose(1, 2).contiguous()  # (B, F, T)
    expected_lengths = oracle.output_lengths(lengths)
    for mode in ("eval", "train"):
        model.train(mode == "train")
        oracle.train(mode == "train")
        what = f"{name}.forward in {mode} mode (the library's front-end and lookahead swapped in)"
        seen, handles, layers = _record_lengths(model)
        try:
            got = _forward(what, model, spectrograms, lengths)
        except Exception:
            _check_lengths_passed(
                what, seen, lengths, expected_lengths
            )  # a wrong length often breaks a layer
            raise
        finally:
            for handle in handles:
                handle.remove()
        if [layer for layer, _ in seen] != layers:
            missing = [layer for layer in layers if layer not in [s for s, _ in seen]]
            raise CheckFailed(
                f"{what}: the layers ran as {[layer for layer, _ in seen]}, expected {layers}, each once and in "
                "that order" + (f" ({', '.join(missing)} never ran)" if missing else "")
            )
        _check_lengths_passed(what, seen, lengths, expected_lengths)
        out_lengths = expect_tensor(f"{what}: out_lengths", got[1])
        if torch.equal(out_lengths, lengths):
            raise CheckFailed(
                f"{what}: out_lengths {lengths.tolist()} are the spectrogram's lengths; return the output lengths "
                f"{expected_lengths.tolist()} (the CTC loss needs the number of output frames)"
            )
        expect_equal(f"{what}: out_lengths", out_lengths.tolist(), expected_lengths.tolist())
        _compare_models(what, got, oracle(spectrograms.clone(), lengths))


def check_model(module) -> None:
    generator = torch.Generator().manual_seed(75)
    frames = torch.arange(1, 301)
    for config in CONFIGS:
        name = _describe(config)
        model = module.DeepSpeech2(config)
        got = expect_tensor(f"{name}.output_lengths(1..300 frames)", model.output_lengths(frames))
        expect_equal(
            f"{name}.output_lengths(1..300 frames)",
            got.tolist(),
            ds2.DeepSpeech2(config).output_lengths(frames).tolist(),
        )
        _check_assembly(module, config, generator)
    # Your own parts b and d inside, against the library model with the same weights, and batch invariance.
    for config in CONFIGS[:2]:
        name = _describe(config)
        oracle = ds2.DeepSpeech2(config)
        _randomise_norms(oracle, generator)
        model = module.DeepSpeech2(config)
        _load(name, model, oracle)
        x, lengths, _ = _padded([41, 18, 30], 161, generator, garbage=50.0)
        spectrograms = x.transpose(1, 2).contiguous()
        for mode in ("train", "eval"):
            model.train(mode == "train")
            oracle.train(mode == "train")
            what = f"{name}.forward in {mode} mode, with your own front-end and lookahead"
            _compare_models(
                what, _forward(what, model, spectrograms, lengths), oracle(spectrograms.clone(), lengths)
            )
        with torch.no_grad():
            log_probs, out_lengths = _forward(what, model, spectrograms, lengths)
            alone, _ = _forward(what, model, spectrograms[1:2, :, :18], lengths[1:2])
            expect_close(
                f"{name} in eval mode: utterance 1 alone vs in a padded batch",
                alone[0, : int(out_lengths[1])],
                log_probs[1, : int(out_lengths[1])],
                1e-4,
                1e-4,
            )


HINTS = {
    "a": (
        "A convolution's output length: where can the kernel's first position be, if its last position must "
        "stay inside the input with its zero padding on both sides? Then chain the layers.",
        "conv_output_length = (length + 2 * padding - kernel) // stride + 1. For layer i of the front-end, the "
        "time axis uses kernel KERNELS[i][1], stride STRIDES[i][1] and padding KERNELS[i][1] // 2.",
        "for i in range(num_layers): k, s = KERNELS[i][1], STRIDES[i][1]; lengths = conv_output_length(lengths, "
        "k, s, k // 2); return lengths",
    ),
    "b": (
        "Per layer: convolve, new lengths, BatchNorm over the valid positions, clipped ReLU, zero the padding. "
        "Zero the input's padding before the first layer too.",
        "x = spec.masked_fill(~mask[:, None, :], 0).unsqueeze(1) is (B, 1, F, T). After conv: lengths = "
        "conv_output_length(lengths, conv.kernel_size[1], conv.stride[1], conv.padding[1]); BatchNorm sees "
        "x.permute(0, 3, 2, 1).reshape(B, T' * F', C) with lengths * F'.",
        "Reshape back with .reshape(B, T', F', C).permute(0, 3, 2, 1); x = ds2.clipped_relu(x).masked_fill("
        "~mask[:, None, None, :], 0); at the end features = x.permute(0, 3, 1, 2).reshape(B, T', C * F').",
    ),
    "c": (
        "Reversing within a length is an index: frame t of the result is frame lengths[b] - 1 - t of the input "
        "while t < lengths[b]. The backward layer reads reversed input; its output comes out reversed too.",
        "index = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t) with t = torch.arange(T)[None]; "
        "x.gather(1, index[..., None].expand_as(x)).",
        "forward_out = self.forward_layer(x, lengths); backward_out = reverse_within_lengths(self.backward_layer("
        "reverse_within_lengths(x, lengths), lengths), lengths); return the sum, padding filled with 0.",
    ),
    "d": (
        "Zero the padding first. Then the output at frame t is a weighted sum of frames t, t + 1, ..., "
        "t + context, each feature with its own weight per tap.",
        "Pad the time axis with context zero frames at the end: future = F.pad(x, (0, 0, 0, context)) is "
        "(B, T + context, H); future[:, j : j + T] is the sequence shifted j frames ahead.",
        "x = x.masked_fill(~mask[..., None], 0); return sum(future[:, j : j + T] * self.weight[:, j] for j in "
        "range(self.context + 1))",
    ),
    "e": (
        "forward is five lines in Figure 1's order; output_lengths is part a. Which lengths do the recurrent "
        "layers need: the spectrogram's, or the front-end's output?",
        "x, out_lengths = self.conv(spectrograms, lengths); for rnn in self.rnns: x = rnn(x, out_lengths); then "
        "the lookahead (if not None), self.fc, and F.log_softmax(..., dim=-1).",
        "output_lengths: return front_end_output_lengths(lengths, len(self.config.conv_channels)). forward: "
        "return F.log_softmax(self.fc(x), dim=-1), out_lengths",
    ),
}

PARTS = [
    Part(
        "a",
        "conv front-end output lengths",
        ("conv_output_length", "front_end_output_lengths"),
        check_output_lengths,
        HINTS["a"],
    ),
    Part("b", "the conv front-end", ("ConvFrontEnd.forward",), check_front_end, HINTS["b"]),
    Part(
        "c",
        "two directions, summed",
        ("reverse_within_lengths", "BidirectionalSum.forward"),
        check_bidirectional,
        HINTS["c"],
    ),
    Part("d", "lookahead convolution", ("LookaheadConvolution.forward",), check_lookahead, HINTS["d"]),
    Part(
        "e",
        "the model, assembled",
        ("DeepSpeech2.output_lengths", "DeepSpeech2.forward"),
        check_model,
        HINTS["e"],
    ),
]
