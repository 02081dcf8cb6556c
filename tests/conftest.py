"""Settings every test shares."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _precision_verdicts_in_a_temporary_file(tmp_path_factory):
    """The precision guard's verdict cache of the runs the tests start (in this process and in the bundle CLIs they
    launch) goes to a temporary file, not to the user's ~/.cache; a test that sets its own path still can."""
    from crossmatch_ext.engines import PRECISION_CACHE_ENV

    previous = os.environ.get(PRECISION_CACHE_ENV)
    os.environ[PRECISION_CACHE_ENV] = str(tmp_path_factory.mktemp("precision") / "verdicts.json")
    yield
    if previous is None:
        os.environ.pop(PRECISION_CACHE_ENV, None)
    else:
        os.environ[PRECISION_CACHE_ENV] = previous
