import math

import numpy as np
import pytest

from utils.training import schedules


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_learning_rate_matches_paper_formula(p):
    expected = 0.01 / (1 + 10 * p) ** 0.75
    assert float(schedules.annealed_learning_rate(p, 0.01, 10.0, 0.75)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_grl_lambda_matches_paper_formula(p):
    expected = 2 / (1 + math.exp(-10 * p)) - 1
    assert float(schedules.grl_lambda(p, 10.0)) == pytest.approx(expected, abs=1e-6)


def test_keras_schedule_follows_progress_and_stops_at_one():
    schedule = schedules.AnnealedLearningRate(0.01, 10.0, 0.75, total_steps=200)
    assert float(schedule(0)) == pytest.approx(0.01)
    assert float(schedule(100)) == pytest.approx(0.01 / 6 ** 0.75, rel=1e-6)
    assert float(schedule(200)) == pytest.approx(0.01 / 11 ** 0.75, rel=1e-6)
    assert float(schedule(400)) == pytest.approx(float(schedule(200)))
    assert np.isclose(float(schedules.progress(50, 200)), 0.25)
