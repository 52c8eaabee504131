"""What every exercise's checks share: a part, a failed check, and comparisons that say what differed.

A check is a function ``check(module)`` that calls the learner's functions in ``module`` and raises
``CheckFailed`` with a message a learner can act on ("expected ..., got ..."). Anything else it raises
(``NotImplementedError`` from a stub, an error in the learner's code) is caught and summarised by the
runner in ``exercises/check.py``, so a check never needs a ``try``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType

import torch
from torch import Tensor


class CheckFailed(Exception):
    """A learner's result differs from the oracle; the message says what was expected and what came out.

    Deliberately not an ``AssertionError``: an ``assert`` that fails inside the learner's own code is the
    learner's exception, and the runner reports it as such.
    """


@dataclass(frozen=True)
class Part:
    """One graded part of an exercise.

    Attributes:
        letter: "a", "b", ...; the stubs raise ``NotImplementedError("Exercise N, part <letter>: ...")``.
        title: a few words, shown on the part's result line.
        functions: the names (functions or ``Class.method``) the learner writes in this part.
        check: ``check(module)``; returns on success, raises ``CheckFailed`` on a wrong result.
        hints: three hints, from a gentle nudge to nearly the answer.
        slow: the check takes long (it trains a model, say): the checker announces it before it starts,
            and pytest marks it ``slow``.
        time_limit_s: the check is stopped after this long (learner code stuck in a loop, say).
    """

    letter: str
    title: str
    functions: tuple[str, ...]
    check: Callable[[ModuleType], None]
    hints: tuple[str, str, str]
    slow: bool = False
    time_limit_s: float = 60.0


# ---------------------------------------------------------------------------------------------------------
# Comparisons. Each raises CheckFailed with "<what>: expected ..., got ..." and never an AssertionError.
# ---------------------------------------------------------------------------------------------------------


def show(value) -> str:
    """A short, readable rendering of a value for a one-line message."""
    if isinstance(value, Tensor):
        if value.numel() == 1:
            return show(value.item())
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, float):
        return f"{value:.6g}"
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def fail(what: str, expected, got, extra: str = "") -> None:
    """Raise ``CheckFailed('<what>: expected <expected>, got <got>. <extra>')``."""
    message = f"{what}: expected {show(expected) if not isinstance(expected, str) else expected}, got {show(got) if not isinstance(got, str) else got}"
    raise CheckFailed(message + (f". {extra}" if extra else ""))


def expect_tensor(what: str, got) -> Tensor:
    """The learner must return a tensor; say so plainly if they returned something else."""
    if not isinstance(got, Tensor):
        fail(what, "a torch.Tensor", f"{type(got).__name__} {show(got)}")
    return got


def expect_shape(what: str, got, shape: Sequence[int]) -> Tensor:
    """A tensor of exactly this shape."""
    got = expect_tensor(what, got)
    if tuple(got.shape) != tuple(shape):
        fail(f"{what} shape", f"{tuple(shape)}", f"{tuple(got.shape)}")
    return got


def expect_equal(what: str, got, expected, extra: str = "") -> None:
    """Exact equality for ints, strings, lists and tuples (tensors are compared with ``expect_close``)."""
    if type(got) is not type(expected) and not (isinstance(got, int) and isinstance(expected, int)):
        fail(what, f"{type(expected).__name__} {show(expected)}", f"{type(got).__name__} {show(got)}", extra)
    if got != expected:
        fail(what, expected, got, extra)


def _worst_element(
    got: Tensor, expected: Tensor, atol: float, rtol: float
) -> tuple[bool, tuple[int, ...], float]:
    """Whether ``|got - expected| <= atol + rtol |expected|`` everywhere; the worst element and its difference.

    Infinities agree only with the same infinity (no tolerance is "relative to infinity"), and NaN agrees
    with nothing.
    """
    got, expected = got.detach().double(), expected.detach().double()
    difference = (got - expected).abs()
    same_infinity = torch.isinf(got) & torch.isinf(expected) & (got.sign() == expected.sign())
    difference = torch.where(same_infinity, 0.0, difference)
    difference = torch.where(torch.isnan(difference), float("inf"), difference)
    tolerance = torch.where(torch.isfinite(expected), atol + rtol * expected.abs(), 0.0)
    excess = difference - tolerance  # > 0 where out of tolerance; inf - 0 = inf, never NaN
    flat = int(excess.flatten().argmax())
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), excess.shape))
    return bool(excess.flatten()[flat] <= 0), index, float(difference.flatten()[flat])


def is_close(got, expected: Tensor, atol: float, rtol: float) -> bool:
    """True when ``got`` is a tensor of ``expected``'s shape within tolerance (used to diagnose mistakes)."""
    if not isinstance(got, Tensor) or got.shape != expected.shape:
        return False
    return got.numel() == 0 or _worst_element(got, expected, atol, rtol)[0]


def expect_close(
    what: str, got, expected: Tensor, atol: float = 1e-5, rtol: float = 1e-4, extra: str = ""
) -> None:
    """Elementwise ``|got - expected| <= atol + rtol |expected|``, with the worst element in the message."""
    got = expect_shape(what, got, expected.shape).detach()
    expected = expected.detach()
    if got.numel() == 0:
        return
    if torch.isnan(got).any() and not torch.isnan(expected).any():
        index = tuple(int(i) for i in torch.isnan(got).nonzero()[0])
        fail(
            what,
            f"finite values (e.g. {show(float(expected[index]))} at {list(index)})",
            f"NaN at {list(index)}",
            extra,
        )
    ok, index, difference = _worst_element(got, expected, atol, rtol)
    if not ok:
        fail(
            what,
            f"{show(float(expected[index]))} at {list(index)}",
            f"{show(float(got[index]))} (difference {difference:.3g}; tolerance {atol:g} + {rtol:g} x |expected|)",
            extra,
        )


def expect_scalar(what: str, got) -> float:
    """A Python number or a one-element tensor, as a float."""
    if isinstance(got, Tensor) and got.numel() == 1:
        return float(got.detach())
    if isinstance(got, int | float):
        return float(got)
    fail(what, "a number (a float or a 0-dimensional tensor)", f"{type(got).__name__} {show(got)}")
    raise AssertionError("unreachable")  # fail() always raises; this keeps type checkers quiet


def call(module: ModuleType, name: str, *args, **kwargs):
    """Call the learner's ``module.name(*args)`` on copies of tensor arguments, so nothing they do in place
    can leak into the oracle's inputs."""
    args = [arg.clone() if isinstance(arg, Tensor) else arg for arg in args]
    kwargs = {key: value.clone() if isinstance(value, Tensor) else value for key, value in kwargs.items()}
    function = getattr(module, name, None)
    if function is None:
        raise CheckFailed(
            f"the file has no `{name}`; did you rename or delete it? (the checker calls it by name)"
        )
    return function(*args, **kwargs)
