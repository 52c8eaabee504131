"""Exercise 3: sequence-wise BatchNorm and a recurrent layer that uses it (DS2 §3.1-3.2).

DS2 §3.2 adds BatchNorm to deep recurrent networks, but only to the *vertical* connection, the input
from the layer below; the recurrent connection is left alone:

    h_t^l = f( B(W^l h_t^{l-1}) + U^l h_{t-1}^l ),      f(x) = min(max(x, 0), 20)   (clipped ReLU, §3.1)

"Sequence-wise": the mean and variance of each feature of ``W h^{l-1}`` are taken over every
(utterance, time step) pair in the minibatch, not per time step. Utterances are padded to a common
length, and padded frames are not speech, so they must not enter the statistics. For inference the
paper keeps running (population) estimates, so an utterance's output does not depend on its batch.

Parts:
    a. the clipped ReLU
    b. mean and variance over the valid frames of a padded batch
    c. SequenceWiseBatchNorm.forward: normalise, scale and shift; update and use running estimates
    d. SimpleRNNLayer.forward: the equation above, one time step at a time

Shapes: B batch, T frames (padded), F features, H hidden units; ``lengths (B,)`` counts valid frames.

Check your work: ``python exercises/check.py 3`` (or run this file).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import Tensor, nn

# implementation.py lives in the repository root; find it so this file runs from any directory.
ROOT = next(path for path in Path(__file__).resolve().parents if (path / "implementation.py").is_file())
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
import implementation as ds2  # noqa: E402

# ---------------------------------------------------------------------------------------------------------
# Part a: the clipped ReLU
# ---------------------------------------------------------------------------------------------------------


def clipped_relu(x: Tensor, ceiling: float = 20.0) -> Tensor:
    """The paper's nonlinearity (DS2 §3.1): ``sigma(x) = min(max(x, 0), ceiling)``, elementwise.

    A ReLU that cannot exceed 20: the ceiling keeps a recurrent layer's activations (which feed back
    into themselves through U) from growing without bound.

    Args:
        x: any shape.
        ceiling: the largest output value (20 in the paper).

    Returns:
        Same shape as ``x``; differentiable (gradient 1 strictly between 0 and the ceiling, 0 outside).
    """
    return torch.clamp(x, min=0.0, max=ceiling)


# ---------------------------------------------------------------------------------------------------------
# Part b: statistics over valid frames
# ---------------------------------------------------------------------------------------------------------


def masked_mean_and_variance(x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Per-feature mean and variance over the valid frames of a padded batch (DS2 §3.2, "sequence-wise").

    Frame ``x[b, t]`` is valid when ``t < lengths[b]``. With N the number of valid frames in the whole
    batch (``lengths.sum()``), for every feature f:

        mean[f] = (1 / N) * sum over valid (b, t) of x[b, t, f]
        var[f]  = (1 / N) * sum over valid (b, t) of (x[b, t, f] - mean[f])^2     (biased: divide by N)

    Whatever the padded frames hold must not matter. ``implementation.lengths_to_mask`` builds the
    ``(B, T)`` boolean mask of valid frames.

    Args:
        x: ``(B, T, F)``.
        lengths: ``(B,)`` long, each in ``1..T``.

    Returns:
        ``(mean, var)``, each ``(F,)``; differentiable with respect to ``x``.
    """
    mask = ds2.lengths_to_mask(lengths, x.shape[1])  # (B, T), True on valid frames
    valid = x[mask]  # (N, F): boolean indexing keeps only the valid frames, as rows
    return valid.mean(dim=0), valid.var(dim=0, unbiased=False)


# ---------------------------------------------------------------------------------------------------------
# Part c: sequence-wise BatchNorm
# ---------------------------------------------------------------------------------------------------------


class SequenceWiseBatchNorm(nn.Module):
    """BatchNorm over all valid (utterance, time) frames of a padded batch (DS2 §3.2).

    Parameters and buffers have the names and meaning of ``nn.BatchNorm1d``'s, so the two can be
    compared directly: ``weight`` (gamma) and ``bias`` (beta), ``running_mean`` and ``running_var``.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.eps = eps  # added to the variance so a constant feature does not divide by zero
        self.momentum = momentum  # weight of the newest batch in the running estimates
        self.weight = nn.Parameter(torch.ones(num_features))  # gamma
        self.bias = nn.Parameter(torch.zeros(num_features))  # beta
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """Normalise each feature, then scale and shift: ``gamma * (x - mean) / sqrt(var + eps) + beta``.

        In training mode (``self.training``) ``mean`` and ``var`` are this batch's, from part b, and the
        running estimates move towards them:

            running_mean = (1 - momentum) * running_mean + momentum * mean
            running_var  = (1 - momentum) * running_var  + momentum * var * N / (N - 1)

        (the running variance uses the *unbiased* estimate, N = number of valid frames; that is what
        ``nn.BatchNorm1d`` does, and it is what this layer is checked against). Updating the buffers
        is bookkeeping, not part of the computation to differentiate. In eval mode
        the running estimates are used instead and nothing is updated, so each utterance is
        normalised the same way whatever it is batched with.

        Args:
            x: ``(B, T, F)``, padded along time (the padding may hold anything).
            lengths: ``(B,)`` long.

        Returns:
            ``(B, T, F)``; equal to ``nn.BatchNorm1d`` applied to the valid frames alone; padded frames
            come out as exactly 0.
        """
        mask = ds2.lengths_to_mask(lengths, x.shape[1])  # (B, T)
        if self.training:
            mean, var = masked_mean_and_variance(x, lengths)  # (F,) each
            count = int(mask.sum())
            with torch.no_grad():  # running estimates are statistics, not part of the gradient
                unbiased = var * count / max(count - 1, 1)
                self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
                self.running_var.mul_(1 - self.momentum).add_(self.momentum * unbiased)
        else:
            mean, var = self.running_mean, self.running_var
        normalized = (x - mean) / torch.sqrt(var + self.eps)  # (B, T, F), broadcasting over B and T
        out = normalized * self.weight + self.bias
        # masked_fill, not multiplication: garbage * 0 is NaN when the garbage is inf or NaN.
        return out.masked_fill(~mask[..., None], 0.0)


# ---------------------------------------------------------------------------------------------------------
# Part d: a simple recurrent layer with BatchNorm on W h^{l-1} only
# ---------------------------------------------------------------------------------------------------------


class SimpleRNNLayer(nn.Module):
    """One unidirectional simple-RNN layer of DS2 (§3.1-3.2): ``h_t = f(B(W x_t) + U h_{t-1})``.

    ``W`` (``input_projection``) has no bias: BatchNorm's shift beta plays that role. ``U``
    (``recurrent``) has no bias either. ``implementation.SimpleRNNLayer`` is the bidirectional version
    (and, with ``bidirectional=False``, the same computation as this one).
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.input_projection = nn.Linear(input_size, hidden_size, bias=False)  # W
        self.norm = SequenceWiseBatchNorm(hidden_size)  # B(.)
        self.recurrent = nn.Linear(hidden_size, hidden_size, bias=False)  # U

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """Run the layer over a padded batch.

            h_{-1} = 0,    h_t = clipped_relu( B(W x_t) + U h_{t-1} )    for t = 0 .. T-1

        ``B(W x_t)`` does not depend on h, so it can be computed for every frame at once (that is also
        the only way to get sequence-wise statistics: all valid frames of the batch together). The
        recurrent term must then be added one time step at a time, because h_t needs h_{t-1}; it is
        never normalised (§3.2 normalises the vertical connection only).

        Args:
            x: ``(B, T, input_size)``, padded along time.
            lengths: ``(B,)`` long.

        Returns:
            ``(B, T, hidden_size)``: h_t for every frame; exactly 0 on padded frames. Since the layer
            runs forwards in time, padding after an utterance cannot affect its valid outputs.
        """
        batch, frames, _ = x.shape
        projected = self.norm(self.input_projection(x), lengths)  # B(W x_t) for all t: (B, T, H)
        hidden = x.new_zeros(batch, self.hidden_size)  # h_{-1} = 0: (B, H)
        outputs = []
        for t in range(frames):
            hidden = clipped_relu(projected[:, t] + self.recurrent(hidden))  # (B, H)
            outputs.append(hidden)
        output = torch.stack(outputs, dim=1)  # (B, T, H)
        return output.masked_fill(~ds2.lengths_to_mask(lengths, frames)[..., None], 0.0)


if __name__ == "__main__":
    # Running this file checks it: the same as `python exercises/check.py 3` for this very file.
    sys.path.insert(0, str(ROOT / "exercises"))
    from check import check_file

    sys.exit(check_file(__file__))
