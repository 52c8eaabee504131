"""The checks behind ``python exercises/check.py``: one module per exercise (``exNN_<topic>.py``).

Each module defines ``EXERCISE`` (its number), ``FILENAME`` (the exercise file it checks), ``TITLE``,
``MINUTES`` (expected time for a learner) and ``PARTS`` (a list of ``common.Part``). ``check.py`` finds
the modules by name, so adding an exercise is adding one module here (plus the exercise and its solution).
"""
