"""pytest options for this suite.

``--exercises=learner`` makes tests/test_exercises.py check your own files in exercises/ instead of
exercises/solutions/ (the same as setting ``DS2_EXERCISES=learner``). The fixture ``exact_labeling_probs``
is the suite's brute-force CTC oracle.
"""

import itertools
import math

import pytest

import implementation as ds2


def pytest_addoption(parser):
    parser.addoption(
        "--exercises",
        choices=("solutions", "learner"),
        default=None,
        help="which exercise files tests/test_exercises.py checks: solutions (default) or learner (yours)",
    )


def _exact_labeling_probs(log_probs, classes, alphabet=ds2.ENGLISH) -> dict[str, float]:
    """Enumerate every alignment of ``(T, C)`` log-probs over ``classes`` (ids); sum the probabilities of
    those that collapse (repeats, then blanks) to the same text: ``{text: probability}``."""
    totals: dict[str, float] = {}
    for path in itertools.product(classes, repeat=log_probs.shape[0]):
        collapsed = [k for i, k in enumerate(path) if (i == 0 or k != path[i - 1]) and k != ds2.BLANK]
        text = alphabet.decode(collapsed)
        p = math.exp(sum(log_probs[t, k].item() for t, k in enumerate(path)))
        totals[text] = totals.get(text, 0.0) + p
    return totals


@pytest.fixture
def exact_labeling_probs():
    """The brute-force CTC oracle: ``exact_labeling_probs(log_probs, class_ids, alphabet) -> {text: p}``."""
    return _exact_labeling_probs
