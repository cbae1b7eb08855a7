"""Hypothesis profiles: CI draws the same examples on every run (`derandomize`), so a red CI run
always reproduces; a local run draws new examples each time, to keep looking for bugs."""
import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
