"""The fast paths (fast_paths.py, the fused GRU kernel) against the readable code of implementation.py.

``implementation.FAST_PATHS`` chooses between them. Every test here runs both on the same inputs and
compares values and gradients (float64 where the comparison should be tight), and the readable code is
itself checked against PyTorch's own modules (``nn.GRUCell``, ``nn.GRU``, ``nn.BatchNorm1d``). A last test
proves the switch: with it off, no fast path runs at all.
"""

import pytest
import torch
from torch import nn

import devices
import fast_paths
import implementation as ds2


def seeded(seed=0):
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def twins(make, dtype=torch.float64):
    """Two modules with the same weights (BatchNorm's gamma and beta made non-trivial)."""
    first = make().to(dtype)
    with torch.no_grad():
        for module in first.modules():
            if isinstance(module, ds2.MaskedBatchNorm):
                module.weight.uniform_(0.5, 2.0)
                module.bias.normal_()
    second = make().to(dtype)
    second.load_state_dict(first.state_dict())
    return first, second


def run_both(modules, inputs, call, train=True):
    """``call(module, *inputs)`` on the fast path (first module) and the readable one (second): outputs,
    gradients of every input and trainable parameter, and the state dicts after the call."""
    results = []
    for module, fast in zip(modules, (True, False), strict=True):
        module.train(train)
        leaves = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs]
        with ds2.use_fast_paths(fast), torch.set_grad_enabled(train):
            output = call(module, *leaves)
        grads = []
        if train:
            wrt = [x for x in leaves if x.requires_grad] + [p for p in module.parameters() if p.requires_grad]
            weights = torch.randn(
                output.shape, generator=torch.Generator().manual_seed(1), dtype=output.dtype
            )
            grads = torch.autograd.grad((output * weights).sum(), wrt, allow_unused=True)
        results.append((output.detach(), grads, {k: v.clone() for k, v in module.state_dict().items()}))
    return results


def assert_same(results, rtol=1e-7, atol=1e-9):
    (fast_out, fast_grads, fast_state), (slow_out, slow_grads, slow_state) = results
    torch.testing.assert_close(fast_out, slow_out, rtol=rtol, atol=atol)
    assert len(fast_grads) == len(slow_grads)
    for a, b in zip(fast_grads, slow_grads, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=rtol, atol=atol)
    for name in fast_state:  # the running estimates of every BatchNorm were updated alike
        torch.testing.assert_close(fast_state[name].double(), slow_state[name].double(), rtol=rtol, atol=atol)


def padded_batch(features, lengths=(9, 4, 7, 1), dtype=torch.float64):
    lengths = torch.tensor(lengths)
    x = torch.randn(len(lengths), int(lengths.max()), features, dtype=dtype) * 2 + 1
    x[~ds2.lengths_to_mask(lengths, x.shape[1])] = 1e3  # garbage in the padding must never matter
    return x, lengths


# ---- the readable code against PyTorch's own modules ----------------------------------------------------


def test_gru_step_is_pytorchs_gru_cell():
    seeded()
    cell = nn.GRUCell(5, 4).double()
    x, h = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    a = x @ cell.weight_ih.T + cell.bias_ih  # the input term of the three gates
    torch.testing.assert_close(ds2.gru_step(a, h, cell.weight_hh, cell.bias_hh), cell(x, h))


def test_simple_rnn_step_is_the_clipped_equation():
    seeded()
    a, h, U = torch.randn(3, 4) * 30, torch.randn(3, 4), torch.randn(4, 4)
    expected = torch.clamp(a + h @ U.T, 0.0, 20.0)
    torch.testing.assert_close(ds2.simple_rnn_step(a, h, U), expected)
    assert (expected == 20).any() and (expected == 0).any()  # both kinks of the clipped ReLU in play


@pytest.mark.parametrize("bidirectional", [True, False])
def test_readable_gru_layer_without_batchnorm_is_nn_gru(bidirectional):
    """On a batch without padding, the readable layer is nn.GRU with its directions summed."""
    seeded()
    layer = ds2.GRULayer(5, 4, bidirectional=bidirectional, batch_norm=False).double()
    x = torch.randn(3, 6, 5, dtype=torch.float64)
    with ds2.use_fast_paths(False):
        ours = layer(x, torch.tensor([6, 6, 6]))
    expected, _ = layer.gru(x)  # (B, T, D * H)
    torch.testing.assert_close(ours, sum(expected.split(4, dim=-1)))


# ---- the fast paths against the readable code ------------------------------------------------------------


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("batch_norm", [True, False])
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("layer_type", [ds2.GRULayer, ds2.SimpleRNNLayer])
def test_recurrent_layers_fast_equals_readable(layer_type, bidirectional, batch_norm, train):
    """Training: hand-written BPTT (fast_paths) vs the equations; inference: the fused kernel (GRU)."""
    seeded()
    layers = twins(lambda: layer_type(6, 5, bidirectional=bidirectional, batch_norm=batch_norm))
    for _ in range(2):  # a second step sees running estimates updated by the first
        x, lengths = padded_batch(6)
        assert_same(run_both(layers, [x, lengths], lambda m, x, n: m(x, n), train=train))


@pytest.mark.parametrize("layout", ["2d", "1d"])
def test_conv_batchnorm_fused_equals_readable(layout):
    """MaskedBatchNorm.clipped_relu: fast_paths.BatchNormClippedReLU vs BatchNorm then clipped ReLU."""
    seeded()
    norms = twins(lambda: ds2.MaskedBatchNorm(5))
    with torch.no_grad():
        for norm in norms:  # outputs above 20 and below 0: both kinks in play
            norm.bias.copy_(torch.tensor([19.0, -1.0, 5.0, 0.0, 21.0]))
    lengths = torch.tensor([7, 3, 5])
    mask = ds2.lengths_to_mask(lengths, 7)  # (B, T)
    if layout == "2d":  # (B, F, T, K) with a (B, 1, T) mask, as the 2D conv front-end calls it
        x, mask = torch.randn(3, 4, 7, 5, dtype=torch.float64) * 8, mask[:, None, :]
    else:  # (B, T, K), as the 1D front-end calls it
        x = torch.randn(3, 7, 5, dtype=torch.float64) * 8
    x = x.masked_fill(~mask[..., None], 1e4)
    results = run_both(norms, [x], lambda m, x: m.clipped_relu(x, mask))
    assert_same(results)
    assert (results[0][0] == 20).any() and (results[0][0] == 0).any()


@pytest.mark.parametrize(
    "config",
    [
        ds2.DS2Config(conv_channels=(4, 4), rnn_hidden=8),
        ds2.DS2Config(conv_channels=(4,), rnn_type="rnn", rnn_hidden=8, rnn_layers=1),
        ds2.DS2Config(conv_channels=(3, 3), rnn_hidden=8, bidirectional=False, lookahead_context=2),
        ds2.DS2Config(conv_channels=(4,), conv_type="1d", rnn_hidden=8, batch_norm=False),
    ],
    ids=["bigru", "rnn", "unidirectional-lookahead", "1d-no-bn"],
)
def test_the_whole_model_fast_equals_readable(config):
    seeded()
    models = twins(lambda: ds2.DeepSpeech2(config))
    lengths = torch.tensor([60, 33, 47])
    spectrograms = torch.randn(3, config.num_freq, 60, dtype=torch.float64)
    for train in (True, False):
        results = run_both(models, [spectrograms, lengths], lambda m, s, n: m(s, n)[0], train=train)
        assert_same(results, rtol=1e-6, atol=1e-8)


def test_masked_moments_is_numpys_mean_and_variance_of_the_valid_values():
    seeded()
    x, lengths = padded_batch(3)
    x[~ds2.lengths_to_mask(lengths, x.shape[1])] = float("nan")  # not even a NaN in the padding counts
    mask = ds2.lengths_to_mask(lengths, x.shape[1])
    mean, var, count = ds2.masked_moments(x, mask[..., None], dims=(0, 1))
    valid = x[mask].numpy()  # (valid frames, 3)
    torch.testing.assert_close(mean.flatten(), torch.from_numpy(valid.mean(axis=0)))
    torch.testing.assert_close(var.flatten(), torch.from_numpy(valid.var(axis=0)))
    assert count.flatten().tolist() == [int(lengths.sum())] * 3


def test_linear_moments_equal_masked_moments_of_the_product():
    """fast_paths.linear_moments(x, mask, W) == masked_moments(x @ W.T), values and gradients."""
    seeded()
    x = torch.randn(4, 7, 5, dtype=torch.float64) * 3 + 10  # a large mean: the two-pass formula keeps digits
    weight = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([7, 3, 5, 1])
    mask = ds2.lengths_to_mask(lengths, 7)
    x[~mask] = float("nan")  # garbage in the padding must not reach a statistic
    x.requires_grad_()

    def reference(x, weight):
        mean, var, count = ds2.masked_moments(x.nan_to_num() @ weight.T, mask[..., None], dims=(0, 1))
        return mean.flatten(), var.flatten(), count.flatten()[0]

    ours, oracle = fast_paths.linear_moments(x, mask, weight), reference(x, weight)
    for a, b in zip(ours, oracle, strict=True):
        torch.testing.assert_close(a, b)
    weights = torch.randn(2, 6, dtype=torch.float64)
    grads = [
        torch.autograd.grad((m * weights[0]).sum() + (v * weights[1]).sum(), (x, weight))
        for m, v, _ in (ours, reference(torch.where(mask[..., None], x, 0.0), weight))
    ]
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


# ---- the hand-written backward passes against finite differences ----------------------------------------


def test_gru_recurrence_backward_passes_gradcheck():
    seeded()
    directions, frames, batch, hidden = 2, 5, 3, 4
    gx = torch.randn(directions, frames, batch, 3 * hidden, dtype=torch.float64, requires_grad=True)
    weight_hh = torch.randn(directions, 3 * hidden, hidden, dtype=torch.float64, requires_grad=True)
    bias_hh = torch.randn(directions, 3 * hidden, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fast_paths.GRURecurrence.apply, (gx, weight_hh, bias_hh))


def test_rnn_recurrence_backward_passes_gradcheck():
    seeded()
    a = torch.randn(2, 5, 3, 4, dtype=torch.float64, requires_grad=True)
    weight = (torch.randn(2, 4, 4, dtype=torch.float64) * 0.5).requires_grad_()
    assert torch.autograd.gradcheck(fast_paths.RNNRecurrence.apply, (a, weight))


def test_gram_and_fused_batchnorm_backward_pass_gradcheck():
    seeded()
    assert torch.autograd.gradcheck(
        fast_paths.Gram.apply, (torch.randn(5, 3, dtype=torch.float64, requires_grad=True),)
    )
    lengths = torch.tensor([7, 3, 5])
    mask = ds2.lengths_to_mask(lengths, 7)[..., None]  # (B, T, 1)
    x = torch.where(mask, torch.randn(3, 7, 4, dtype=torch.float64), 0.0).requires_grad_()
    weight = torch.rand(4, dtype=torch.float64).add(0.5).requires_grad_()
    bias = torch.randn(4, dtype=torch.float64).requires_grad_()
    count = mask.sum()
    assert torch.autograd.gradcheck(
        lambda x, w, b: fast_paths.BatchNormClippedReLU.apply(x, mask, w, b, 1e-5, count)[0],
        (x, weight, bias),
    )


@pytest.mark.parametrize("bidirectional", [True, False])
def test_gru_layer_with_padding_passes_gradcheck(bidirectional):
    """The whole fast layer (BatchNorm statistics, reordering, recurrence) on a padded batch, float64."""
    seeded()
    layer = ds2.GRULayer(3, 2, bidirectional=bidirectional).double()
    names = [name for name, p in layer.named_parameters() if p.requires_grad]
    lengths = torch.tensor([4, 2, 3])
    x = torch.randn(3, 4, 3, dtype=torch.float64, requires_grad=True)

    def run(x, *params):
        return torch.func.functional_call(layer, dict(zip(names, params, strict=True)), (x, lengths))

    params = [p.detach().clone().requires_grad_() for name, p in layer.named_parameters() if name in names]
    assert torch.autograd.gradcheck(run, (x, *params))


# ---- the switch --------------------------------------------------------------------------------------------


def _forbid(monkeypatch, calls):
    """Every fast path records its use in ``calls`` (and still runs)."""

    def spy(name, function):
        def recorded(*args, **kwargs):
            calls.append(name)
            return function(*args, **kwargs)

        return recorded

    for cls in (fast_paths.GRURecurrence, fast_paths.RNNRecurrence, fast_paths.BatchNormClippedReLU):
        monkeypatch.setattr(cls, "apply", spy(cls.__name__, cls.apply))
    monkeypatch.setattr(ds2, "linear_moments", spy("linear_moments", ds2.linear_moments))
    for name in ("inputs_in_step_order", "sum_directions_in_frame_order"):
        monkeypatch.setattr(fast_paths, name, spy(name, getattr(fast_paths, name)))
    monkeypatch.setattr(
        devices, "global_batch_moments", spy("global_batch_moments", devices.global_batch_moments)
    )
    monkeypatch.setattr(torch, "gru", spy("torch.gru", torch.gru))


@pytest.mark.parametrize("rnn_type", ["gru", "rnn"])
def test_with_the_switch_off_no_fast_path_runs(monkeypatch, rnn_type):
    calls = []
    _forbid(monkeypatch, calls)
    seeded()
    model = ds2.DeepSpeech2(ds2.DS2Config(conv_channels=(4, 4), rnn_type=rnn_type, rnn_hidden=8))
    spectrograms, lengths = torch.randn(2, 161, 40), torch.tensor([40, 25])

    def one_step_and_inference():
        model.train()
        model(spectrograms, lengths)[0].sum().backward()
        model.eval()
        with torch.no_grad():
            model(spectrograms, lengths)

    assert ds2.FAST_PATHS  # on by default
    one_step_and_inference()
    expected = {"BatchNormClippedReLU", "inputs_in_step_order", "linear_moments"}
    expected |= {"GRURecurrence", "torch.gru"} if rnn_type == "gru" else {"RNNRecurrence"}
    assert expected <= set(calls)  # the spies do see the fast paths when they run
    calls.clear()
    with ds2.use_fast_paths(False):
        assert not ds2.FAST_PATHS
        one_step_and_inference()
    assert calls == []
    assert ds2.FAST_PATHS  # the context manager restores the switch
