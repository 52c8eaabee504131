"""Checks for exercise 3 (sequence-wise BatchNorm and a simple recurrent layer; DS2 §3.1-3.2).

Oracles: ``torch.clamp`` (clipped ReLU); boolean indexing of the valid frames (statistics);
``nn.BatchNorm1d`` run on the valid frames alone, in training and eval mode, with its running estimates
and gradients (sequence-wise BatchNorm); ``implementation.SimpleRNNLayer(bidirectional=False)`` with
the same weights copied in (the recurrent layer). Padding is always filled with garbage, which must
change nothing. BatchNorm's batches hold one quiet feature (std about 2e-3, variance below eps), where eps
added after the square root shows, and its running estimates must stay out of the autograd graph.
"""

from __future__ import annotations

import torch
from torch import nn

import implementation as ds2
from checks.common import CheckFailed, Part, call, expect_close, expect_shape, expect_tensor, is_close

EXERCISE = 3
FILENAME = "exercise_03_rnn_batchnorm.py"
TITLE = "sequence-wise BatchNorm and a simple recurrent layer (DS2 §3.1-3.2)"
MINUTES = 45


def _padded_batch(lengths: list[int], features: int, generator: torch.Generator, garbage: float = 1e4):
    """A ``(B, T, F)`` batch with real values on valid frames and large garbage in the padding."""
    lengths = torch.tensor(lengths)
    x = torch.randn(len(lengths), int(lengths.max()), features, generator=generator) * 2.0 + 0.5
    padding = ~ds2.lengths_to_mask(lengths, x.shape[1])  # (B, T)
    x[padding] = garbage * (1 + torch.rand(int(padding.sum()), features, generator=generator))
    return x, lengths, padding


# ---------------------------------------------------------------------------------------------------------
# Part a
# ---------------------------------------------------------------------------------------------------------


def check_clipped_relu(module) -> None:
    x = torch.cat([torch.linspace(-30, 40, 701), torch.tensor([0.0, 19.999, 20.0, 20.001, 1e6, -1e6])])
    got = call(module, "clipped_relu", x)
    if is_close(got, torch.relu(x), 1e-6, 0):
        raise CheckFailed(
            "clipped_relu: values above 20 must come out as 20 (the ceiling is missing); got 40 for 40"
        )
    expect_close("clipped_relu on -30..40", got, torch.clamp(x, 0, 20), atol=1e-6, rtol=0)
    expect_close(
        "clipped_relu(x, ceiling=6)",
        call(module, "clipped_relu", x, 6.0),
        torch.clamp(x, 0, 6),
        atol=1e-6,
        rtol=0,
    )
    shaped = torch.randn(2, 3, 4) * 30
    expect_close(
        "clipped_relu on a (2, 3, 4) tensor",
        call(module, "clipped_relu", shaped),
        torch.clamp(shaped, 0, 20),
        atol=1e-6,
        rtol=0,
    )
    # Differentiable, with gradient 1 between 0 and 20 and 0 outside.
    inputs = torch.tensor([-5.0, 3.0, 19.0, 25.0], requires_grad=True)
    out = expect_tensor("clipped_relu", module.clipped_relu(inputs))
    if not out.requires_grad:
        raise CheckFailed(
            "clipped_relu: the result is not differentiable; use torch operations (torch.clamp, torch.minimum...) on the tensor itself"
        )
    out.sum().backward()
    expect_close(
        "gradient of clipped_relu at -5, 3, 19, 25",
        inputs.grad,
        torch.tensor([0.0, 1.0, 1.0, 0.0]),
        atol=1e-6,
        rtol=0,
    )


# ---------------------------------------------------------------------------------------------------------
# Part b
# ---------------------------------------------------------------------------------------------------------


def check_masked_statistics(module) -> None:
    generator = torch.Generator().manual_seed(20)
    for lengths in ([9, 3, 1, 6], [5], [2, 2]):
        x, lengths, padding = _padded_batch(lengths, 6, generator)
        valid = x[~padding]  # (N, F)
        what = f"masked_mean_and_variance (lengths {lengths.tolist()}, garbage in the padding)"
        got = call(module, "masked_mean_and_variance", x, lengths)
        if not isinstance(got, tuple | list) or len(got) != 2:
            raise CheckFailed(f"{what}: expected a pair (mean, var), got {type(got).__name__}")
        mean, var = got
        if not is_close(mean, valid.mean(0), 1e-4, 1e-4) and is_close(
            mean, x.reshape(-1, 6).mean(0), 1e-3, 1e-3
        ):
            raise CheckFailed(f"{what}: your mean includes the padded frames; use only frames t < lengths[b]")
        expect_close(f"{what}: mean", mean, valid.mean(0), atol=1e-4, rtol=1e-4)
        if (
            valid.shape[0] > 1
            and is_close(var, valid.var(0, unbiased=True), 1e-4, 1e-4)
            and not is_close(var, valid.var(0, unbiased=False), 1e-4, 1e-4)
        ):
            raise CheckFailed(
                f"{what}: that is the unbiased variance (divide by N - 1); BatchNorm normalises with the biased one (divide by N)"
            )
        expect_close(f"{what}: var", var, valid.var(0, unbiased=False), atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------------------------
# Part c
# ---------------------------------------------------------------------------------------------------------


QUIET = 2  # the feature scaled by 1e-3 in part c's batches: std about 2e-3, its variance below eps


def _check_eps_inside_the_root(what: str, got, valid, gamma, beta) -> None:
    """Name ``(x - mean) / (sqrt(var) + eps)``, wrong by about half on a feature whose variance is below eps."""
    mean, var = valid.mean(0), valid.var(0, unbiased=False)
    outside = (valid - mean) / (var.sqrt() + 1e-5) * gamma + beta  # (N, F)
    inside = (valid - mean) / (var + 1e-5).sqrt() * gamma + beta
    if is_close(got, outside, 1e-4, 1e-4) and not is_close(got, inside, 1e-4, 1e-4):
        raise CheckFailed(
            f"{what}: feature {QUIET} (std {float(var[QUIET].sqrt()):.2g}) comes out as if eps were added "
            "after the square root, (x - mean) / (sqrt(var) + eps); eps goes inside it, "
            "(x - mean) / sqrt(var + eps), as in nn.BatchNorm1d (the two differ wherever var is near eps)"
        )


def _check_running_estimates_are_not_in_the_graph(norm, what: str) -> None:
    """The running estimates are statistics, not part of the computation: no grad_fn, no requires_grad."""
    for name in ("running_mean", "running_var"):
        buffer = getattr(norm, name)
        if buffer.grad_fn is not None or buffer.requires_grad:
            tracked = (
                f"carries a grad_fn ({type(buffer.grad_fn).__name__})" if buffer.grad_fn else "requires grad"
            )
            raise CheckFailed(
                f"{name} after {what}: it {tracked}: the running "
                "estimates were updated outside torch.no_grad(), so autograd records the update and every "
                "step's graph stays alive through them (memory grows step after step). Update them inside "
                "`with torch.no_grad():` (or from mean.detach() and var.detach())"
            )


def check_sequence_wise_batch_norm(module) -> None:
    generator = torch.Generator().manual_seed(21)
    features = 5
    ours = module.SequenceWiseBatchNorm(features)
    oracle = nn.BatchNorm1d(features)
    with torch.no_grad():
        gamma, beta = (
            torch.rand(features, generator=generator) + 0.5,
            torch.randn(features, generator=generator),
        )
        for norm in (ours, oracle):
            norm.weight.copy_(gamma)
            norm.bias.copy_(beta)
    ours.train()
    oracle.train()
    for step, lengths in enumerate(([7, 2, 5], [4, 4, 1, 3], [6])):
        x, lengths, padding = _padded_batch(lengths, features, generator)
        x[..., QUIET] = torch.where(padding, x[..., QUIET], x[..., QUIET] * 1e-3)  # a quiet feature
        what = f"training step {step + 1} (lengths {lengths.tolist()}, garbage in the padding)"
        x_ours = x.clone().requires_grad_(True)
        x_oracle = x[~padding].clone().requires_grad_(True)  # (N, F): the valid frames alone
        out = expect_shape(f"SequenceWiseBatchNorm output, {what}", ours(x_ours, lengths), x.shape)
        expected = oracle(x_oracle)  # (N, F)
        if not torch.equal(out.detach()[padding], torch.zeros(int(padding.sum()), features)):
            raise CheckFailed(f"SequenceWiseBatchNorm, {what}: padded frames must come out as exactly 0")
        everything = nn.functional.batch_norm(x.reshape(-1, features), None, None, gamma, beta, training=True)
        if not is_close(out[~padding], expected, 1e-4, 1e-4) and is_close(
            out[~padding], everything.reshape(x.shape)[~padding], 1e-3, 1e-3
        ):
            raise CheckFailed(
                f"SequenceWiseBatchNorm, {what}: your statistics include the padded frames; use only t < lengths[b]"
            )
        _check_eps_inside_the_root(f"SequenceWiseBatchNorm, {what}", out[~padding], x[~padding], gamma, beta)
        expect_close(
            f"SequenceWiseBatchNorm output on the valid frames, {what} (vs nn.BatchNorm1d)",
            out[~padding],
            expected,
            atol=1e-4,
            rtol=1e-4,
        )
        _check_running_estimates_are_not_in_the_graph(ours, what)
        count = int((~padding).sum())
        if not is_close(ours.running_var, oracle.running_var, 1e-4, 1e-4):
            biased = oracle.running_var.clone()
            if count > 1:
                with torch.no_grad():
                    batch_var = x[~padding].var(0, unbiased=True)
                    biased = (
                        oracle.running_var - oracle.momentum * batch_var
                    ) + oracle.momentum * batch_var * (count - 1) / count
            if is_close(ours.running_var, biased, 1e-4, 1e-4):
                raise CheckFailed(
                    f"running_var after {what}: update it with the unbiased variance var * N / (N - 1), as nn.BatchNorm1d does"
                )
        expect_close(
            f"running_mean after {what}", ours.running_mean, oracle.running_mean, atol=1e-4, rtol=1e-4
        )
        expect_close(f"running_var after {what}", ours.running_var, oracle.running_var, atol=1e-4, rtol=1e-4)
        # Gradients flow through the batch statistics exactly as nn.BatchNorm1d's do.
        weights = torch.randn(expected.shape, generator=generator)
        if not out.requires_grad:
            raise CheckFailed(
                f"SequenceWiseBatchNorm, {what}: the output is not differentiable (was something detached?)"
            )
        out[~padding].mul(weights).sum().backward()
        expected.mul(weights).sum().backward()
        expect_close(
            f"gradient with respect to the input on valid frames, {what}",
            x_ours.grad[~padding],
            x_oracle.grad,
            atol=1e-4,
            rtol=1e-3,
        )
        expect_close(
            f"gradient with respect to gamma (weight), {what}",
            ours.weight.grad,
            oracle.weight.grad,
            atol=1e-4,
            rtol=1e-3,
        )
        expect_close(
            f"gradient with respect to beta (bias), {what}",
            ours.bias.grad,
            oracle.bias.grad,
            atol=1e-4,
            rtol=1e-3,
        )
        for norm in (ours, oracle):
            norm.zero_grad()
    # Eval mode: running estimates, no update, and an utterance's output does not depend on its batch.
    ours.eval()
    oracle.eval()
    before = ours.running_mean.clone()
    x, lengths, padding = _padded_batch([6, 3], features, generator)
    with torch.no_grad():
        out = expect_shape("SequenceWiseBatchNorm output in eval mode", ours(x, lengths), x.shape)
        if is_close(
            out[~padding],
            nn.functional.batch_norm(x[~padding], None, None, gamma, beta, training=True),
            1e-4,
            1e-4,
        ):
            raise CheckFailed(
                "SequenceWiseBatchNorm in eval mode: you normalised with the batch's statistics; eval mode (not self.training) uses running_mean and running_var"
            )
        expect_close(
            "SequenceWiseBatchNorm output in eval mode (vs nn.BatchNorm1d.eval())",
            out[~padding],
            oracle(x[~padding]),
            atol=1e-4,
            rtol=1e-4,
        )
        expect_close(
            "running_mean after an eval-mode call (it must not change)",
            ours.running_mean,
            before,
            atol=0,
            rtol=0,
        )
        alone = ours(x[1:, :3], lengths[1:])
        expect_close("eval mode: utterance 2 alone vs in a batch", alone[0], out[1, :3], atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# Part d
# ---------------------------------------------------------------------------------------------------------


def _layers(module, input_size: int, hidden: int, generator: torch.Generator, recurrent_scale: float):
    """The learner's layer and implementation.SimpleRNNLayer (unidirectional) with the same weights."""
    ours = module.SimpleRNNLayer(input_size, hidden)
    oracle = ds2.SimpleRNNLayer(input_size, hidden, bidirectional=False, batch_norm=True)
    with torch.no_grad():
        oracle.input_projection.weight.copy_(
            torch.randn(hidden, input_size, generator=generator) / input_size**0.5
        )
        oracle.recurrent[0].weight.copy_(
            torch.randn(hidden, hidden, generator=generator) * recurrent_scale / hidden**0.5
        )
        oracle.norm.weight.copy_(torch.rand(hidden, generator=generator) * 2 + 0.5)
        oracle.norm.bias.copy_(torch.randn(hidden, generator=generator) + 1.0)
        ours.input_projection.weight.copy_(oracle.input_projection.weight)
        ours.recurrent.weight.copy_(oracle.recurrent[0].weight)
        ours.norm.weight.copy_(oracle.norm.weight)
        ours.norm.bias.copy_(oracle.norm.bias)
    return ours, oracle


def _compare_layers(ours, oracle, x, lengths, what: str, extra: str = "") -> None:
    got = expect_shape(
        f"SimpleRNNLayer output, {what}",
        ours(x.clone(), lengths),
        (x.shape[0], x.shape[1], oracle.hidden_size),
    )
    expected = oracle(x.clone(), lengths)
    padding = ~ds2.lengths_to_mask(lengths, x.shape[1])  # (B, T)
    if not torch.equal(got.detach()[padding], torch.zeros_like(got.detach()[padding])):
        raise CheckFailed(
            f"SimpleRNNLayer output, {what}: padded frames must come out as exactly 0 "
            f"(largest there: {got.detach()[padding].abs().max():.4g})"
        )
    expect_close(
        f"SimpleRNNLayer output, {what} (vs implementation.SimpleRNNLayer)",
        got,
        expected,
        atol=1e-4,
        rtol=1e-4,
        extra=extra,
    )


def check_recurrent_layer(module) -> None:
    generator = torch.Generator().manual_seed(22)
    input_size, hidden = 7, 6
    x, lengths, _ = _padded_batch([12, 5, 9, 1], input_size, generator, garbage=1e3)

    # 1. U = 0 isolates the vertical path: h_t = clipped_relu(B(W x_t)), every frame independent.
    ours, oracle = _layers(module, input_size, hidden, generator, recurrent_scale=0.0)
    _compare_layers(
        ours,
        oracle,
        x,
        lengths,
        "with U = 0 (so h_t = clipped_relu(B(W x_t)))",
        "check B(W x) and the padding first",
    )

    # 2. The ceiling: every pre-activation is far above 20 (or far below 0).
    for shift, value in ((40.0, 20.0), (-40.0, 0.0)):
        ours, oracle = _layers(module, input_size, hidden, generator, recurrent_scale=0.0)
        with torch.no_grad():
            ours.norm.bias.fill_(shift)
        got = ours(x.clone(), lengths).detach()
        valid = ds2.lengths_to_mask(lengths, x.shape[1])
        if not torch.all(got[valid] == value):
            raise CheckFailed(
                f"SimpleRNNLayer with beta = {shift:g}: every pre-activation is {'above 20' if value else 'below 0'}, so every "
                f"output should be exactly {value:g}; got values from {got[valid].min():.4g} to {got[valid].max():.4g}"
            )

    # 3. A strong recurrent matrix: U h_{t-1} must be added after BatchNorm, unnormalised.
    ours, oracle = _layers(module, input_size, hidden, generator, recurrent_scale=1.5)
    _compare_layers(
        ours,
        oracle,
        x,
        lengths,
        "with a strong recurrent matrix U",
        "BatchNorm applies to W x_t only; U h_(t-1) is added afterwards, one time step at a time, unnormalised",
    )

    # 4. Gradients reach W, U and BatchNorm's gamma as they do in the oracle.
    ours, oracle = _layers(module, input_size, hidden, generator, recurrent_scale=0.8)
    weights = torch.randn(x.shape[0], x.shape[1], hidden, generator=generator)
    try:
        (ours(x.clone(), lengths) * weights).sum().backward()
    except RuntimeError as error:
        raise CheckFailed(
            f"backpropagating through SimpleRNNLayer failed: {str(error).splitlines()[0]} (collect h_t in a list "
            "and torch.stack it, rather than writing into a preallocated tensor)"
        ) from None
    (oracle(x.clone(), lengths) * weights).sum().backward()
    for name, mine, theirs in [
        ("W (input_projection.weight)", ours.input_projection.weight, oracle.input_projection.weight),
        ("U (recurrent.weight)", ours.recurrent.weight, oracle.recurrent[0].weight),
        ("gamma (norm.weight)", ours.norm.weight, oracle.norm.weight),
    ]:
        if mine.grad is None:
            raise CheckFailed(
                f"SimpleRNNLayer: no gradient reached {name}; is it used in the forward pass, without detach()?"
            )
        expect_close(f"gradient with respect to {name}", mine.grad, theirs.grad, atol=1e-3, rtol=1e-3)

    # 5. Eval mode uses the running estimates the training step above left behind.
    ours.eval()
    oracle.eval()
    with torch.no_grad():
        _compare_layers(ours, oracle, x, lengths, "in eval mode, after one training step")


HINTS = {
    "a": (
        "Two bounds: nothing below 0, nothing above the ceiling.",
        "torch.clamp takes both a min and a max; torch.minimum / torch.maximum work too. Stay in torch so "
        "autograd can differentiate it.",
        "return torch.clamp(x, min=0.0, max=ceiling)",
    ),
    "b": (
        "First select the valid frames, then take ordinary statistics over them.",
        "mask = implementation.lengths_to_mask(lengths, T) is (B, T); x[mask] is then (N, F), the valid "
        "frames as rows. Mean and variance over dim 0; the variance divides by N (unbiased=False).",
        "valid = x[ds2.lengths_to_mask(lengths, x.shape[1])]; return valid.mean(0), valid.var(0, unbiased=False)",
    ),
    "c": (
        "Two modes: self.training picks batch statistics (and updates the running ones) or the running "
        "estimates. Either way: normalise, scale by weight, shift by bias, zero the padding.",
        "Training: mean, var = masked_mean_and_variance(x, lengths); under torch.no_grad() update "
        "running_mean and running_var with momentum, using var * N / (N - 1) for the variance. "
        "(x - mean) / sqrt(var + eps) broadcasts over (B, T, F).",
        "out = (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias; "
        "return out.masked_fill(~ds2.lengths_to_mask(lengths, x.shape[1])[..., None], 0.0)",
    ),
    "d": (
        "Split the equation: the part that does not depend on h can be computed for all frames at once; "
        "the part that does must loop over time.",
        "projected = self.norm(self.input_projection(x), lengths)  # (B, T, H). Then hidden = zeros (B, H); "
        "for each t: hidden = clipped_relu(projected[:, t] + self.recurrent(hidden)); keep every hidden.",
        "Collect the hidden states in a list, output = torch.stack(outputs, dim=1)  # (B, T, H), and zero "
        "the padded frames with masked_fill(~mask[..., None], 0.0) before returning.",
    ),
}

PARTS = [
    Part("a", "clipped ReLU", ("clipped_relu",), check_clipped_relu, HINTS["a"]),
    Part(
        "b",
        "mean and variance over valid frames",
        ("masked_mean_and_variance",),
        check_masked_statistics,
        HINTS["b"],
    ),
    Part(
        "c",
        "sequence-wise BatchNorm, train and eval",
        ("SequenceWiseBatchNorm.forward",),
        check_sequence_wise_batch_norm,
        HINTS["c"],
    ),
    Part(
        "d", "recurrent layer, BN on W h only", ("SimpleRNNLayer.forward",), check_recurrent_layer, HINTS["d"]
    ),
]
