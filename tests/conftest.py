"""Hypothesis profiles: CI draws the same examples on every run (`derandomize`), so a red CI run
always reproduces; a local run draws new examples each time. And no test sees the seed set or
build id of the shell that runs it."""
import os

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture(autouse=True)
def _hermetic_build_environment(monkeypatch):
    "Tests do not depend on the seed set or build of the shell that runs them (make book / test exports these)."
    for name in ("SFP_SEED_OFFSET", "SFP_BUILD_ID"):
        monkeypatch.delenv(name, raising=False)
