"""Checks for exercise 4 (SortaGrad, DS2 §3.3).

There is no library oracle for a batching plan, so the checks test the properties that define one:
every index exactly once per epoch, full minibatches except possibly the last, epoch 0 in order of
increasing length, later epochs shuffled into new minibatches (not the same ones reordered), different
from epoch to epoch, identical for the same seed and epoch whatever the global random state, without
touching the global random state (Python's, numpy's or PyTorch's), and different for another seed; and
the ValueError the docstring promises for batch_size < 1 or epoch < 0.

Epoch 0 must sort the utterances themselves. A plan of random minibatches that are only ordered by their
longest utterance also fits §3.3's description of the order, but its first minibatches already hold long
utterances, so it loses the curriculum that is SortaGrad's point (and the exercise's part a asks for the
sorted plan); the check refuses it and says why.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from checks.common import CheckFailed, Part, call

EXERCISE = 4
FILENAME = "exercise_04_sortagrad.py"
TITLE = "SortaGrad batching (DS2 §3.3)"
MINUTES = 20


def _lengths(count: int, seed: int) -> list[int]:
    generator = random.Random(seed)
    return [generator.randint(50, 1500) for _ in range(count)]


def _expect_plan(
    what: str,
    plan,
    num_samples: int,
    batch_size: int,
    full_then_rest: bool = True,
    lengths: list[int] | None = None,
) -> list[int]:
    """A valid plan: lists of Python ints, every index exactly once; returns the plan's order of indices.

    ``full_then_rest``: full minibatches, then the remainder (the sorted plan). A shuffled plan may put its
    smaller minibatch(es) anywhere: a plan that shuffles length-sorted minibatches, as
    ``implementation.sortagrad_batches`` does, is as valid as one that shuffles samples. ``lengths``, when
    given, lets the message recognise a plan of sorted lengths instead of sample indices.
    """
    if not isinstance(plan, list) or not all(isinstance(batch, list) for batch in plan):
        raise CheckFailed(
            f"{what}: expected a list of minibatches, each a list of ints; got {type(plan).__name__}"
        )
    for number, batch in enumerate(plan):
        for index in batch:
            if not isinstance(index, int) or isinstance(index, bool):
                raise CheckFailed(
                    f"{what}: minibatch {number} holds a {type(index).__name__}; return plain Python ints (int(i), or .tolist())"
                )
    order = [index for batch in plan for index in batch]
    if (
        lengths is not None
        and order == sorted(lengths)
        and order != sorted(range(num_samples), key=lengths.__getitem__)
    ):
        raise CheckFailed(
            f"{what}: the minibatches hold the lengths themselves, sorted ({order[:6]}...); return the sample "
            "indices (positions in lengths), ordered by their length: sort range(len(lengths)) with "
            "key=lambda i: lengths[i]"
        )
    seen = set(order)
    missing = sorted(set(range(num_samples)) - seen)
    if len(order) != len(seen):
        repeated = sorted({index for index in order if order.count(index) > 1})[:5]
        raise CheckFailed(
            f"{what}: every sample must appear exactly once per epoch, but {repeated} appear more than once"
        )
    if missing or len(order) != num_samples:
        extra = sorted(seen - set(range(num_samples)))[:5]
        raise CheckFailed(
            f"{what}: every sample 0..{num_samples - 1} must appear exactly once; missing {missing[:5]}"
            + (f", out of range {extra}" if extra else "")
            + (
                " (is the last, partial minibatch dropped?)"
                if missing
                and num_samples % batch_size
                and len(order) == num_samples - num_samples % batch_size
                and seen <= set(range(num_samples))
                else ""
            )
        )
    sizes = [len(batch) for batch in plan]
    if not full_then_rest:
        most = -(-num_samples // batch_size) + num_samples // (10 * batch_size)  # ceil, plus a little slack
        if min(sizes) < 1 or max(sizes) > batch_size or len(plan) > most:
            raise CheckFailed(
                f"{what}: expected about {-(-num_samples // batch_size)} minibatches of at most {batch_size} "
                f"(none empty), got {len(plan)} with sizes from {min(sizes)} to {max(sizes)}"
            )
        return order
    expected_sizes = [batch_size] * (num_samples // batch_size) + (
        [num_samples % batch_size] if num_samples % batch_size else []
    )
    if sizes != expected_sizes:
        raise CheckFailed(
            f"{what}: minibatch sizes should be {expected_sizes[:6]}{'...' if len(expected_sizes) > 6 else ''} (full ones, then the rest), got {sizes[:6]}"
        )
    return order


# ---------------------------------------------------------------------------------------------------------
# Part a
# ---------------------------------------------------------------------------------------------------------


def check_sorted_plan(module) -> None:
    small = call(module, "batches_by_length", [5, 1, 3], 2)
    _expect_plan("batches_by_length([5, 1, 3], 2)", small, 3, 2, lengths=[5, 1, 3])
    if small != [[1, 2], [0]]:
        raise CheckFailed(f"batches_by_length([5, 1, 3], 2): expected [[1, 2], [0]], got {small!r}")
    for count, batch_size, seed in [(50, 8, 1), (48, 8, 2), (7, 32, 3), (9, 1, 4), (1, 4, 5)]:
        lengths = _lengths(count, seed)
        lengths[: count // 3] = [lengths[0]] * (count // 3)  # plenty of ties
        what = f"batches_by_length({count} utterances, batch_size={batch_size})"
        order = _expect_plan(
            what,
            call(module, "batches_by_length", list(lengths), batch_size),
            count,
            batch_size,
            lengths=lengths,
        )
        in_order = [lengths[index] for index in order]
        if in_order != sorted(lengths):
            position = next(i for i in range(1, len(in_order)) if in_order[i] < in_order[i - 1])
            raise CheckFailed(
                f"{what}: lengths must not decrease along the plan, but position {position - 1} has length {in_order[position - 1]} and position {position} has {in_order[position]}"
            )


# ---------------------------------------------------------------------------------------------------------
# Part b
# ---------------------------------------------------------------------------------------------------------


def _reseed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (the legacy global state is exactly what a learner might lean on)
    torch.manual_seed(seed)


def _global_states() -> tuple:
    return random.getstate(), np.random.get_state(), torch.random.get_rng_state()  # noqa: NPY002


def _changed_global_state(before: tuple) -> str | None:
    """Which global random generator changed since ``before`` (Python's, numpy's, PyTorch's), or None."""
    python, numpy, torch_state = _global_states()
    if python != before[0]:
        return "Python's global random state (random.seed, random.shuffle)"
    if numpy[0] != before[1][0] or not np.array_equal(numpy[1], before[1][1]) or numpy[2:] != before[1][2:]:
        return "numpy's global random state (np.random.seed, np.random.shuffle, np.random.permutation)"
    if not torch.equal(torch_state, before[2]):
        return "PyTorch's global random state (torch.manual_seed, torch.randperm without a generator)"
    return None


def _check_shuffled(
    module, name: str, make_args, num_samples: int, batch_size: int, new_minibatches: bool = True
) -> None:
    """Shared by parts b and c: epochs >= 1 are valid, shuffled, distinct, reproducible, seed-dependent."""
    # The check reseeds the global generators on purpose; put them back afterwards.
    states = _global_states()
    try:
        _check_shuffled_plans(module, name, make_args, num_samples, batch_size, new_minibatches)
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])  # noqa: NPY002
        torch.random.set_rng_state(states[2])


def _minibatches(plan) -> set[frozenset[int]]:
    """A plan's minibatches as sets, whatever their order: what stays fixed if only the order is shuffled."""
    return {frozenset(batch) for batch in plan}


def _check_shuffled_plans(
    module, name: str, make_args, num_samples: int, batch_size: int, new_minibatches: bool
) -> None:
    plans = {}
    for epoch in (1, 2, 3):
        what = f"{name} for epoch {epoch} (seed 7, {num_samples} samples, batch_size {batch_size})"
        _reseed_everything(epoch)
        before = _global_states()
        plans[epoch] = call(module, name, *make_args(epoch, 7))
        changed = _changed_global_state(before)
        order = _expect_plan(what, plans[epoch], num_samples, batch_size, full_then_rest=False)
        if order == sorted(order):
            raise CheckFailed(
                f"{what}: the indices come out in order 0, 1, 2, ...; a later epoch must be shuffled"
            )
        _reseed_everything(1000 + epoch)  # a different global random state must not matter
        again = call(module, name, *make_args(epoch, 7))
        if again != plans[epoch]:
            raise CheckFailed(
                f"{what}: a second call with the same seed and epoch gave a different plan; build your own "
                "generator from (seed, epoch) instead of using the global random state"
            )
        if changed:  # reproducible, but at the cost of everyone else's random numbers
            raise CheckFailed(
                f"{what}: the call changed {changed}: reseeding a global generator resets the random numbers "
                "of all other code too, and drawing from it moves them. Draw from a generator of your own, "
                "np.random.default_rng([seed, epoch]) (or a torch.Generator), and leave the global ones alone"
            )
    if plans[1] == plans[2] or plans[2] == plans[3]:
        raise CheckFailed(
            f"{name}: epochs 1, 2 and 3 must each get a different order (mix the epoch into the seed); two were identical"
        )
    if new_minibatches and _minibatches(plans[1]) == _minibatches(plans[2]):
        raise CheckFailed(
            f"{name} ({num_samples} samples, batch_size {batch_size}): epochs 1 and 2 hold the very same "
            "minibatches, only in another order, so each sample always meets the same few others. Shuffle "
            "the samples, then cut the shuffled order into minibatches"
        )
    if call(module, name, *make_args(1, 8)) == plans[1]:
        raise CheckFailed(
            f"{name}: seeds 7 and 8 gave the same plan for epoch 1; the seed must change the order"
        )


def check_shuffled_plan(module) -> None:
    for num_samples, batch_size in [(50, 8), (64, 16), (10, 3)]:
        _check_shuffled(
            module,
            "shuffled_batches",
            lambda epoch, seed, n=num_samples, b=batch_size: (n, b, epoch, seed),
            num_samples,
            batch_size,
        )


# ---------------------------------------------------------------------------------------------------------
# Part c
# ---------------------------------------------------------------------------------------------------------


def check_sortagrad(module) -> None:
    for count, batch_size in [(50, 8), (33, 4), (5, 16)]:
        lengths = _lengths(count, count)
        what = f"sortagrad_batches epoch 0 ({count} utterances, batch_size {batch_size})"
        plan = call(module, "sortagrad_batches", list(lengths), batch_size, 0, 7)
        order = _expect_plan(what, plan, count, batch_size, full_then_rest=False, lengths=lengths)
        longest = [max(lengths[index] for index in batch) for batch in plan]
        contents = [sorted(lengths[index] for index in batch) for batch in plan]
        ascending = sorted(lengths)
        sorted_contents = [ascending[i : i + batch_size] for i in range(0, count, batch_size)]
        in_order = [lengths[i] for i in order]
        if longest == sorted(longest) and in_order != ascending and contents != sorted_contents:
            # The literal reading of §3.3: random minibatches, ordered by their longest utterance.
            first = sorted(lengths[index] for index in plan[0])
            shortest = sorted(lengths)[: len(plan[0])]
            raise CheckFailed(
                f"{what}: the minibatches come in increasing order of their longest utterance ({longest[:4]}...), "
                "as §3.3 describes the order, but each minibatch is a random draw of utterances, so the first one "
                f"already holds lengths up to {first[-1]}, where the {len(first)} shortest utterances go up to "
                f"{shortest[-1]}: the curriculum of short utterances first is lost. Sort the utterances "
                "themselves (part a): the minibatches' longest utterances then increase too"
            )
        _expect_plan(what, plan, count, batch_size)  # full minibatches, then the rest
        if longest != sorted(longest) or in_order != ascending:
            raise CheckFailed(
                f"{what}: the first epoch must go in order of increasing length (longest per minibatch: {longest[:6]}...)"
            )
        if call(module, "sortagrad_batches", list(lengths), batch_size, 1, 7) == plan and count > batch_size:
            raise CheckFailed(
                "sortagrad_batches: epoch 1 gave the same plan as epoch 0; only epoch 0 is sorted, later epochs are shuffled"
            )
        if count > batch_size:
            _check_shuffled(
                module,
                "sortagrad_batches",
                lambda epoch, seed, ls=lengths, b=batch_size: (list(ls), b, epoch, seed),
                count,
                batch_size,
                # A plan that sorts by length within large random pools (implementation.sortagrad_batches)
                # has one pool here, so its minibatches are the same every epoch; the large case below.
                new_minibatches=False,
            )
    # Many utterances: later epochs must mix them into new minibatches, not reshuffle the same ones.
    lengths = _lengths(1000, 1000)
    plans = [call(module, "sortagrad_batches", list(lengths), 4, epoch, 7) for epoch in (1, 2)]
    if _minibatches(plans[0]) == _minibatches(plans[1]):
        raise CheckFailed(
            "sortagrad_batches (1000 utterances, batch_size 4): epochs 1 and 2 hold the very same minibatches, "
            "only in another order, so each utterance always meets the same few others; later epochs are "
            "shuffled plans (part b), whose minibatches change from epoch to epoch"
        )
    _check_input_validation(module)
    # Already sorted input: epoch 1 must still be shuffled, not just "sorted again".
    ascending = list(range(100, 140))
    plan = call(module, "sortagrad_batches", ascending, 4, 1, 0)
    if [index for batch in plan for index in batch] == list(range(40)):
        raise CheckFailed(
            "sortagrad_batches: epoch 1 came out in length order; only epoch 0 is sorted, later epochs are shuffled"
        )


def _check_input_validation(module) -> None:
    """The docstring promises a ValueError for batch_size < 1 and epoch < 0: no silent empty plan."""
    lengths = _lengths(10, 10)
    for batch_size, epoch in [(0, 0), (-1, 0), (-1, 1), (4, -1)]:
        what = f"sortagrad_batches({len(lengths)} utterances, batch_size={batch_size}, epoch={epoch})"
        try:
            plan = call(module, "sortagrad_batches", list(lengths), batch_size, epoch, 0)
        except ValueError:
            continue
        raise CheckFailed(
            f"{what} returned {plan!r}; it must raise ValueError (the docstring's Raises: batch_size < 1 or "
            "epoch < 0), with a message that says what was wrong: a silent empty plan trains on nothing"
        )


HINTS = {
    "a": (
        "Sort the sample indices (not the lengths) by length, then cut the sorted list into chunks.",
        "sorted(range(len(lengths)), key=...) orders indices by any key; slices order[i:i + batch_size] for i "
        "in range(0, n, batch_size) keep the partial last chunk.",
        "order = sorted(range(len(lengths)), key=lambda i: lengths[i]); "
        "return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]",
    ),
    "b": (
        "Shuffle a list of all indices with a random generator that belongs to this call alone, then chunk it.",
        "numpy.random.default_rng([seed, epoch]) (or torch.Generator().manual_seed(...) from both numbers) "
        "gives a generator fixed by seed and epoch; .permutation(n) is a shuffled arange.",
        "order = np.random.default_rng([seed, epoch]).permutation(num_samples).tolist(); "
        "return [order[i:i + batch_size] for i in range(0, num_samples, batch_size)]",
    ),
    "c": (
        "This part only chooses between parts a and b. Which epoch is the first one?",
        "Epochs are counted from 0: epoch 0 is sorted; any epoch >= 1 is shuffled with (seed, epoch). Check "
        "the arguments first: the docstring promises a ValueError for batch_size < 1 or epoch < 0.",
        "if batch_size < 1 or epoch < 0: raise ValueError(...); then return batches_by_length(lengths, "
        "batch_size) if epoch == 0 else shuffled_batches(len(lengths), batch_size, epoch, seed)",
    ),
}

PARTS = [
    Part("a", "sorted by length", ("batches_by_length",), check_sorted_plan, HINTS["a"]),
    Part("b", "shuffled, reproducible", ("shuffled_batches",), check_shuffled_plan, HINTS["b"]),
    Part("c", "SortaGrad", ("sortagrad_batches",), check_sortagrad, HINTS["c"]),
]
