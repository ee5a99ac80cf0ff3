"""How sure an answer is: the calibration scores against torchmetrics and a direct computation, temperature
scaling, and confidence from what generation returns."""

import math

import numpy as np
import pytest
import torch

from pathvqa.scoring import confidence as conf


@pytest.fixture
def scored():
    rng = np.random.default_rng(0)
    confidence = rng.random(400)
    confidence[:4] = [0.0, 1.0, 1 / 15, 0.5]  # on bin edges
    return confidence, (rng.random(400) < confidence**2).astype(float)


def test_ece_equals_torchmetrics_binary_calibration_error(scored):
    from torchmetrics.classification import BinaryCalibrationError

    confidence, correct = scored
    theirs = BinaryCalibrationError(n_bins=15, norm="l1")(
        torch.tensor(confidence), torch.tensor(correct).long()
    )
    assert conf.expected_calibration_error(confidence, correct) == pytest.approx(theirs.item(), abs=1e-12)


def test_aurc_and_selective_accuracy_equal_a_direct_computation(scored):
    confidence, correct = scored
    order = sorted(range(len(confidence)), key=lambda i: -confidence[i])
    risks = [sum(1 - correct[i] for i in order[:k]) / k for k in range(1, len(order) + 1)]
    assert conf.aurc(confidence, correct) == pytest.approx(sum(risks) / len(risks), abs=1e-12)
    half = order[: math.ceil(0.5 * len(order))]
    assert conf.accuracy_at(confidence, correct, 0.5) == pytest.approx(np.mean([correct[i] for i in half]))
    assert conf.brier(np.array([0.9, 0.2]), np.array([1.0, 0.0])) == pytest.approx((0.01 + 0.04) / 2)


def test_summary_carries_intervals_and_a_sure_model_beats_its_own_average(scored):
    confidence, correct = scored  # right more often where more confident
    out = conf.summary(confidence, correct, closed=True)
    assert out["accuracy_at_50"] > out["accuracy"] and out["ece_bins"] == 15
    for key in ("ece", "brier", "aurc", "accuracy_at_90", "accuracy_at_80", "accuracy_at_50"):
        low, high = out[f"{key}_ci"]
        assert low <= out[key] <= high, key
    assert "brier" not in conf.summary(confidence, correct, closed=False)


def test_temperature_scaling_recovers_an_overconfident_models_temperature():
    rng = np.random.default_rng(1)
    true_z = rng.normal(0, 1.5, 4000)
    outcome = (rng.random(4000) < 1 / (1 + np.exp(-true_z))).astype(float)
    fitted = conf.fit_temperature(true_z * 3.0, outcome, "closed")  # logits three times too sure
    assert fitted == pytest.approx(3.0, rel=0.1)


def test_row_confidence_is_the_renormalised_yes_no_probability_or_the_geometric_mean():
    z = math.log(0.6) - math.log(0.2)  # p(yes) = 0.6, p(no) = 0.2 at the first answer token
    assert conf.row_confidence({"prediction": "yes", "yes_no_logit": z}) == pytest.approx(0.75)
    assert conf.row_confidence({"prediction": "no", "yes_no_logit": z}) == pytest.approx(0.25)
    assert conf.row_confidence({"prediction": "no", "yes_no_logit": z}, {"closed": 2.0}) == pytest.approx(
        1 / (1 + math.exp(z / 2))
    )
    logps = [math.log(0.5), math.log(0.8)]
    row = {"prediction": "fibrin", "logprob_mean": sum(logps) / 2}
    assert conf.row_confidence(row) == pytest.approx(math.sqrt(0.5 * 0.8))
    assert conf.row_confidence({"prediction": "x"}) is None
