"""Shared pytest options, and hypothesis profiles: the suite derandomized by default (the same examples
on every run, so CI never fails on a draw no one can reproduce), `HYPOTHESIS_PROFILE=explore` for a
random search that keeps what it finds in .hypothesis/."""

import os

from hypothesis import settings

settings.register_profile("default", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_addoption(parser):
    parser.addoption("--update-goldens", action="store_true",
                     help="rewrite golden files from the current output instead of comparing")
