from __future__ import annotations

import math

import pytest

from crossmatch_ext.engines import ConstantThreshold, OfficialRampThreshold, sigmoid_rampup


@pytest.mark.parametrize(
    "step, expected",
    [(1, 0.75), (2, 0.5210), (1000, 0.5219), (5000, 0.5342), (9001, 0.5771), (14001, 0.6681)],
)
def test_official_ramp_matches_authors_values(step, expected):
    assert OfficialRampThreshold(0.75)(step) == pytest.approx(expected, abs=1e-4)


def test_official_ramp_paper_era_initial():
    schedule = OfficialRampThreshold(0.85)
    assert schedule(1) == 0.85
    assert schedule(2) == pytest.approx(0.5899, abs=1e-4)
    assert schedule(9001) == pytest.approx(0.6235, abs=1e-4)


def test_ramp_without_ln2_reaches_one():
    assert OfficialRampThreshold(0.75, ramp_length=10, scale=1.0)(12) == pytest.approx(1.0)
    assert sigmoid_rampup(0, 100) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(5, 0) == 1.0


def test_constant_threshold_and_validation():
    assert ConstantThreshold(0.95)(12345) == 0.95
    with pytest.raises(ValueError):
        ConstantThreshold(1.5)
    with pytest.raises(ValueError):
        OfficialRampThreshold(-0.1)
