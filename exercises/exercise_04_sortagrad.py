"""Exercise 4: SortaGrad, a curriculum for CTC training (DS2 §3.3).

DS2 §3.3: early in training, long utterances are hard: their CTC loss is large, their gradients can be
large and unstable, and the model has not learned anything yet to make sense of them. SortaGrad uses the
length of an utterance as a measure of difficulty. §3.3 describes the schedule (paraphrased here): in
the first training epoch, the minibatches go in increasing order of the length of their longest
utterance; from the second epoch on, the minibatches come in random order. The paper reports that it lowers the final error
as well as stabilising training (Table 2 topic).

This exercise (like ``implementation.sortagrad_batches``) meets that ordering by sorting the
*utterances* by length and then cutting them into minibatches: the first minibatch holds the shortest
utterances, and each minibatch's longest utterance is no shorter than the one before. Drawing random
minibatches and only ordering them by their longest utterance would satisfy the same words, but each
random minibatch holds long utterances too, so the curriculum (short, easy utterances first) would be
lost; the check explains which one you wrote.

A batching plan is a list of minibatches, each a list of sample indices (ints); an epoch must use every
sample exactly once.

Parts:
    a. the sorted plan: minibatches of increasing utterance length
    b. the shuffled plan: a random order, different every epoch, reproducible from a seed
    c. sortagrad_batches: the sorted plan in the first epoch (epoch 0), shuffled plans afterwards

Check your work: ``python exercises/check.py 4`` (or run this file).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np  # noqa: F401 (you will need it)

# implementation.py lives in the repository root; find it so this file runs from any directory.
ROOT = next(path for path in Path(__file__).resolve().parents if (path / "implementation.py").is_file())
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# ---------------------------------------------------------------------------------------------------------
# Part a: minibatches in order of increasing length
# ---------------------------------------------------------------------------------------------------------


def batches_by_length(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Split sample indices into minibatches, shortest utterances first.

    Order the indices by their utterance's length (shortest first; ties in any fixed order), then cut
    that order into consecutive minibatches of ``batch_size``. The last minibatch holds whatever is left
    (it may be smaller); no sample is dropped. Sorting the samples, not just the batches, also keeps
    utterances of similar length together, so little of each padded batch is padding.

    Args:
        lengths: length of every utterance (samples, frames or seconds: any unit), indexed by sample.
        batch_size: samples per minibatch, ``>= 1``.

    Returns:
        Minibatches of sample indices (Python ints). E.g. lengths ``[5, 1, 3]``, batch size 2 ->
        ``[[1, 2], [0]]``.
    """
    raise NotImplementedError("Exercise 4, part a: write batches_by_length (sorted by length)")


# ---------------------------------------------------------------------------------------------------------
# Part b: a shuffled plan, reproducible from (seed, epoch)
# ---------------------------------------------------------------------------------------------------------


def shuffled_batches(num_samples: int, batch_size: int, epoch: int, seed: int) -> list[list[int]]:
    """A random minibatch plan for one epoch: different for every epoch, identical for the same (seed, epoch).

    Reproducible means a run can be resumed or repeated: the plan must depend only on the arguments,
    never on a global random state (``random.seed``, ``torch.manual_seed``) that other code may touch.
    Create a random number generator of your own from ``seed`` and ``epoch`` (e.g.
    ``numpy.random.default_rng``, which accepts a list of integers as its seed, or a
    ``torch.Generator``).

    Args:
        num_samples: how many samples there are (indices ``0 .. num_samples - 1``).
        batch_size: samples per minibatch, ``>= 1``; the last minibatch may be smaller.
        epoch: the epoch number (counted from 0).
        seed: the run's seed.

    Returns:
        Minibatches of sample indices (Python ints), every index exactly once.
    """
    raise NotImplementedError("Exercise 4, part b: write shuffled_batches (shuffled, reproducible)")


# ---------------------------------------------------------------------------------------------------------
# Part c: SortaGrad
# ---------------------------------------------------------------------------------------------------------


def sortagrad_batches(lengths: Sequence[int], batch_size: int, epoch: int, seed: int = 0) -> list[list[int]]:
    """The minibatch plan for one epoch under SortaGrad (DS2 §3.3).

    Epoch 0 (the first): minibatches in order of increasing utterance length (part a). Every later
    epoch: a shuffled plan (part b), a different one each epoch, reproducible from ``seed``.
    (``implementation.sortagrad_batches`` refines the later epochs: it sorts by length within large
    random pools and shuffles the resulting minibatches, so batches stay random but hold little padding.)

    Args:
        lengths: length of every utterance, indexed by sample.
        batch_size: samples per minibatch, ``>= 1``.
        epoch: the epoch number, counted from 0.
        seed: the run's seed (for the shuffled epochs).

    Returns:
        Minibatches of sample indices (Python ints), every index exactly once.

    Raises:
        ValueError: for ``batch_size < 1`` or ``epoch < 0``.
    """
    raise NotImplementedError("Exercise 4, part c: write sortagrad_batches (SortaGrad)")


if __name__ == "__main__":
    # Running this file checks it: the same as `python exercises/check.py 4` for this very file.
    sys.path.insert(0, str(ROOT / "exercises"))
    from check import check_file

    sys.exit(check_file(__file__))
