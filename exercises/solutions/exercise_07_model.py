"""Exercise 7: the Deep Speech 2 model: conv front-end, two directions, lookahead, assembly (DS2 §3).

Exercises 1-6 built the input, the loss, the recurrent layer, the batching, the training loop and the
decoder. This one builds what is specific to DS2 at the level of the model (§3, Figure 1):

    spectrogram (B, F, T) --(b) 2D convolutions over (frequency, time), §3.5--> features (B, T', C * F')
        --recurrent layers; bidirectional ones (c) sum their two directions, §3.1--> (B, T', H)
        --(d) lookahead convolution, for unidirectional models, §3.7--> (B, T', H)
        --fully connected, log_softmax--> log-probabilities (B, T', 29)         (e) all of it, in order

The first convolution strides by 2 in time, so the network emits fewer frames than it is given, and
every layer after it, and the CTC loss, must be told how many of those frames are real (a). Utterances
in a batch are padded to a common length, and no layer may let the padding leak into a real frame.

Parts:
    a. the conv front-end's output lengths: frames out for frames in (Table 4 topic's kernels and strides)
    b. the conv front-end: convolution, BatchNorm over the valid positions, clipped ReLU, per layer
    c. a bidirectional layer: a second layer reads each utterance backwards; the two are summed
    d. the lookahead (row) convolution: each frame sees ``context`` frames of the future, no more
    e. the model: DeepSpeech2.forward and DeepSpeech2.output_lengths

The recurrent layers themselves (``implementation.GRULayer``, ``implementation.SimpleRNNLayer``) come from
the library: exercise 3 built one. Their interface is all this exercise relies on:
``layer(x (B, T, F), lengths (B,)) -> (B, T, H)``, exactly 0 on padded frames, with a bidirectional
layer's two directions already summed.

Shapes: B batch, F frequency bins (161), T frames, C conv channels, F' and T' after the convolutions,
H hidden units; ``lengths (B,)`` counts each utterance's valid frames.

Check your work: ``python exercises/check.py 7`` (or run this file).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# implementation.py lives in the repository root; find it so this file runs from any directory.
ROOT = next(path for path in Path(__file__).resolve().parents if (path / "implementation.py").is_file())
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
import implementation as ds2  # noqa: E402

# The paper's 2D convolutions as (frequency, time), from the Table 4 topic: 41x11 stride 2x2, then 21x11
# stride 2x1, then 21x11 stride 2x1. Each is padded by half its kernel, (20, 5) and (10, 5).
KERNELS = ds2.PAPER_CONV_KERNELS  # ((41, 11), (21, 11), (21, 11))
STRIDES = ds2.PAPER_CONV_STRIDES  # ((2, 2), (2, 1), (2, 1))

# ---------------------------------------------------------------------------------------------------------
# Part a: the output lengths of the conv front-end
# ---------------------------------------------------------------------------------------------------------


def conv_output_length(lengths: Tensor, kernel: int, stride: int, padding: int) -> Tensor:
    """Output positions of a convolution along one axis, for inputs of ``lengths`` positions.

    The kernel's first position is at ``-padding`` (zeros are padded on both sides), and it moves
    ``stride`` at a time while its last position stays inside the padded input of ``length + 2 padding``:

        out = floor((length + 2 padding - kernel) / stride) + 1

    Args:
        lengths: ``(B,)`` long tensor of input lengths (a Python int works too).
        kernel, stride, padding: of the convolution along this axis.

    Returns:
        The output lengths, the same type as ``lengths`` (integers: use ``//``, never ``/``).
    """
    return (lengths + 2 * padding - kernel) // stride + 1


def front_end_output_lengths(lengths: Tensor, num_layers: int) -> Tensor:
    """Frames out of the first ``num_layers`` convolutions of the paper's front-end, for frames in.

    Layer i has time kernel ``KERNELS[i][1]``, time stride ``STRIDES[i][1]`` and time padding
    ``KERNELS[i][1] // 2``; the lengths go through the layers one after another. With the paper's
    strides only the first layer changes the length: about T / 2 frames out.

    Args:
        lengths: ``(B,)`` long, frames of each spectrogram.
        num_layers: 1, 2 or 3.

    Returns:
        ``(B,)`` long, frames of each utterance after the convolutions: exactly the number of frames
        ``implementation.ConvFrontEnd`` outputs for an utterance of that length alone.
    """
    for index in range(num_layers):
        kernel, stride = KERNELS[index][1], STRIDES[index][1]  # the time axis
        lengths = conv_output_length(lengths, kernel, stride, kernel // 2)
    return lengths


# ---------------------------------------------------------------------------------------------------------
# Part b: the conv front-end
# ---------------------------------------------------------------------------------------------------------


class ConvFrontEnd(nn.Module):
    """1-3 layers of 2D convolution over (frequency, time), each followed by BatchNorm and the clipped
    ReLU (DS2 §3.5). Its parameters have the names of ``implementation.ConvFrontEnd``'s, so the two can be
    compared with the same weights.
    """

    def __init__(self, num_freq: int, channels: Sequence[int]):
        super().__init__()
        self.layers = nn.ModuleList()
        self.norms = nn.ModuleList()
        in_channels, freq = 1, num_freq
        for index, out_channels in enumerate(channels):
            kernel, stride = KERNELS[index], STRIDES[index]
            padding = (kernel[0] // 2, kernel[1] // 2)
            # No bias: BatchNorm's mean subtraction would cancel it (its shift beta plays that role).
            self.layers.append(nn.Conv2d(in_channels, out_channels, kernel, stride, padding, bias=False))
            self.norms.append(ds2.SequenceWiseBatchNorm(out_channels))  # one mean and variance per channel
            in_channels = out_channels
            freq = ds2.conv_output_size(freq, kernel[0], stride[0], padding[0])
        self.output_features = in_channels * freq  # C * F': the features of one output frame

    def forward(self, spec: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Run the convolutions over a padded batch of spectrograms.

        Per layer: the convolution (``self.layers[i]``, an image of one channel in, ``(B, 1, F, T)``, at
        the first layer); the new lengths (part a, with this layer's ``kernel_size[1]``, ``stride[1]``
        and ``padding[1]``); BatchNorm; the clipped ReLU (``implementation.clipped_relu``); and zeros on
        the padded frames.

        - Padding: zero the padded frames of the input *and* after every layer. The kernel is 11 frames
          wide, so the last real frames of a short utterance read 5 frames past its end: those must
          look exactly like the convolution's own zero padding, whatever the batch holds there.
        - BatchNorm: one mean and one variance per channel, over every valid (utterance, frequency,
          time) position of the batch. ``self.norms[i]`` is an ``implementation.SequenceWiseBatchNorm``,
          which normalises each feature of a ``(B, T, F)`` tensor over its valid frames. Lay the
          ``(B, C, F', T')`` output out as ``(B, T' * F', C)``, time outermost: then the valid positions
          of utterance b are its first ``lengths[b] * F'`` rows.
        - The output: each frame's features are all its channels and frequencies, ``(B, T', C * F')``
          with the channel outermost (``permute`` to ``(B, T', C, F')``, then ``reshape``).

        Args:
            spec: ``(B, F, T)`` spectrograms, padded along time (the padding may hold anything finite).
            lengths: ``(B,)`` long, valid frames.

        Returns:
            ``(features (B, T', C * F'), out_lengths (B,))``; features are exactly 0 on padded frames.
            Matches ``implementation.ConvFrontEnd`` with the same weights, in training and eval mode.
        """
        mask = ds2.lengths_to_mask(lengths, spec.shape[-1])  # (B, T)
        x = spec.masked_fill(~mask[:, None, :], 0.0).unsqueeze(1)  # (B, 1, F, T): padding -> 0
        for conv, norm in zip(self.layers, self.norms, strict=True):
            x = conv(x)  # (B, C, F', T')
            lengths = conv_output_length(lengths, conv.kernel_size[1], conv.stride[1], conv.padding[1])
            batch, channels, freq, frames = x.shape
            rows = x.permute(0, 3, 2, 1).reshape(batch, frames * freq, channels)  # (B, T' * F', C)
            rows = norm(rows, lengths * freq)  # statistics over every valid (time, frequency) position
            x = rows.reshape(batch, frames, freq, channels).permute(0, 3, 2, 1)  # (B, C, F', T')
            mask = ds2.lengths_to_mask(lengths, frames)  # (B, T')
            x = ds2.clipped_relu(x).masked_fill(~mask[:, None, None, :], 0.0)  # padding stays exactly 0
        batch, channels, freq, frames = x.shape
        features = x.permute(0, 3, 1, 2).reshape(batch, frames, channels * freq)  # (B, T', C * F')
        return features, lengths


# ---------------------------------------------------------------------------------------------------------
# Part c: two directions, summed
# ---------------------------------------------------------------------------------------------------------


def reverse_within_lengths(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each utterance in time within its own length; the padding stays where it is.

    ``out[b, t] = x[b, lengths[b] - 1 - t]`` for ``t < lengths[b]``, and ``out[b, t] = x[b, t]`` after
    it. (``torch.flip`` would move the padding to the front, so a layer reading the reversed utterance
    would start in the padding instead of at the utterance's last real frame.) Reversing twice gives
    back ``x``.

    Args:
        x: ``(B, T, F)``.
        lengths: ``(B,)`` long.

    Returns:
        ``(B, T, F)``.
    """
    time = torch.arange(x.shape[1], device=x.device)[None, :]  # (1, T)
    index = torch.where(time < lengths[:, None], lengths[:, None] - 1 - time, time)  # (B, T) source frame
    return x.gather(1, index[..., None].expand_as(x))  # (B, T, F)


class BidirectionalSum(nn.Module):
    """A bidirectional recurrent layer made of two unidirectional ones, their outputs summed (DS2 §3.1).

    ``forward_layer`` reads each utterance from its first frame to its last, ``backward_layer`` from
    its last to its first; at every frame the two hidden states are *added*, ``h_t = h_t^forward +
    h_t^backward`` (not concatenated: the output keeps H features). Both layers have the library's
    interface, ``layer(x (B, T, F), lengths (B,)) -> (B, T, H)``.
    """

    def __init__(self, forward_layer: nn.Module, backward_layer: nn.Module):
        super().__init__()
        self.forward_layer = forward_layer
        self.backward_layer = backward_layer

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """``forward_layer(x) + (backward_layer run on each utterance reversed, its output reversed back)``.

        The backward layer must start at each utterance's own last frame, not in the padding: reverse
        within the lengths (above), run the layer, and reverse its output back so that frame t of the
        result lines up with frame t of the forward layer's.

        Args:
            x: ``(B, T, F)``, padded along time.
            lengths: ``(B,)`` long.

        Returns:
            ``(B, T, H)``; exactly 0 on padded frames.
        """
        forward_out = self.forward_layer(x, lengths)  # (B, T, H), reading t = 0, 1, ...
        backward_in = reverse_within_lengths(x, lengths)  # each utterance from its last frame
        backward_out = reverse_within_lengths(self.backward_layer(backward_in, lengths), lengths)  # (B, T, H)
        mask = ds2.lengths_to_mask(lengths, x.shape[1])  # (B, T)
        return (forward_out + backward_out).masked_fill(~mask[..., None], 0.0)  # summed, not concatenated


# ---------------------------------------------------------------------------------------------------------
# Part d: the lookahead convolution
# ---------------------------------------------------------------------------------------------------------


class LookaheadConvolution(nn.Module):
    """Row convolution (DS2 §3.7): a unidirectional model's way of hearing a little of the future.

    A bidirectional layer needs the whole utterance before it can emit anything, which rules out
    streaming. A unidirectional model instead mixes, into each frame, the next ``context`` frames of
    the last recurrent layer's output, each feature with its own weights:

        r[t, i] = sum_{j=0}^{context} W[i, j] * h[t + j, i]          (h = 0 past the utterance's end)

    Parameters have the names of ``implementation.LookaheadConvolution``'s.
    """

    def __init__(self, features: int, context: int):
        super().__init__()
        self.context = context  # frames of future each output frame sees
        self.weight = nn.Parameter(
            torch.randn(features, context + 1) / (context + 1) ** 0.5
        )  # W: (H, context + 1)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """Apply the row convolution to a padded batch.

        Frame t reads frames t, t + 1, ..., t + context and nothing else: never the past (that is
        what the recurrent layer already summarised), never more than ``context`` frames ahead, and
        never the padding: frames past ``lengths[b]`` count as 0, whatever they hold.

        Args:
            x: ``(B, T, H)``, padded along time.
            lengths: ``(B,)`` long.

        Returns:
            ``(B, T, H)``; exactly 0 on padded frames. Matches ``implementation.LookaheadConvolution``.
        """
        frames = x.shape[1]
        x = x.masked_fill(~ds2.lengths_to_mask(lengths, frames)[..., None], 0.0)  # never read the padding
        future = F.pad(x, (0, 0, 0, self.context))  # (B, T + context, H): zeros after the last frame
        # Tap j multiplies frame t + j: a shifted copy of the sequence, weighted per feature.
        return sum(
            future[:, j : j + frames] * self.weight[:, j] for j in range(self.context + 1)
        )  # (B, T, H)


# ---------------------------------------------------------------------------------------------------------
# Part e: the model
# ---------------------------------------------------------------------------------------------------------


class DeepSpeech2(nn.Module):
    """Deep Speech 2 (DS2 §3, Figure 1), built from parts b and d and the library's recurrent layers.

    The modules (and so the ``state_dict``) have the names of ``implementation.DeepSpeech2``'s: ``conv``,
    ``rnns``, ``lookahead`` (None for a bidirectional model) and ``fc``; the check loads the library
    model's weights into yours and compares the two.
    """

    def __init__(self, config: ds2.DS2Config):
        super().__init__()
        if not config.batch_norm:
            raise ValueError("this exercise's model always uses BatchNorm (DS2 §3.2)")
        self.config = config
        self.conv = ConvFrontEnd(config.num_freq, config.conv_channels)  # part b
        layer_type = ds2.GRULayer if config.rnn_type == "gru" else ds2.SimpleRNNLayer
        sizes = [self.conv.output_features] + [config.rnn_hidden] * config.rnn_layers
        self.rnns = nn.ModuleList(
            layer_type(sizes[i], sizes[i + 1], config.bidirectional, True) for i in range(config.rnn_layers)
        )
        self.lookahead = (
            LookaheadConvolution(config.rnn_hidden, config.lookahead_context)  # part d
            if config.lookahead_context
            else None
        )
        self.fc = nn.Linear(config.rnn_hidden, config.num_classes)  # to the 29 symbols

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Output frames for input frames: what the CTC loss needs as its input lengths.

        Only the convolutions change the number of frames (part a); the recurrent layers, the lookahead
        and the fully connected layer keep it.

        Args:
            lengths: ``(B,)`` long, spectrogram frames.

        Returns:
            ``(B,)`` long, output frames.
        """
        return front_end_output_lengths(lengths, len(self.config.conv_channels))

    def forward(self, spectrograms: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Spectrograms in, per-frame log-probabilities over the 29 symbols out.

        In order: the conv front-end (``self.conv``, which also returns the output lengths); every
        recurrent layer of ``self.rnns`` in turn, each given the *output* lengths (after the strided
        convolution a spectrogram's length no longer counts the frames the layers see); the lookahead
        convolution when there is one; the fully connected layer; ``log_softmax`` over the symbols (the
        CTC loss takes log-probabilities).

        Args:
            spectrograms: ``(B, F, T)``, padded along time.
            lengths: ``(B,)`` long, valid frames.

        Returns:
            ``(log_probs (B, T', 29), out_lengths (B,))``; matches ``implementation.DeepSpeech2`` with the
            same weights, in training and eval mode.
        """
        x, out_lengths = self.conv(spectrograms, lengths)  # (B, T', C * F'), (B,)
        for rnn in self.rnns:
            x = rnn(x, out_lengths)  # (B, T', H): the output lengths, not the spectrogram's
        if self.lookahead is not None:
            x = self.lookahead(x, out_lengths)  # (B, T', H)
        logits = self.fc(x)  # (B, T', 29)
        return F.log_softmax(logits, dim=-1), out_lengths


if __name__ == "__main__":
    # Running this file checks it: the same as `python exercises/check.py 7` for this very file.
    sys.path.insert(0, str(ROOT / "exercises"))
    from check import check_file

    sys.exit(check_file(__file__))
