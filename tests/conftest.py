"""pytest options for this suite.

``--exercises=learner`` makes tests/test_exercises.py check your own files in exercises/ instead of
exercises/solutions/ (the same as setting ``DS2_EXERCISES=learner``).
"""


def pytest_addoption(parser):
    parser.addoption(
        "--exercises",
        choices=("solutions", "learner"),
        default=None,
        help="which exercise files tests/test_exercises.py checks: solutions (default) or learner (yours)",
    )
