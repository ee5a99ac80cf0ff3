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


# ---- what generation returns: scores equal to a teacher-forced recomputation ---------------------------------
FAMILIES = ["blip_tiny", "vlm_tiny", *(f"{arch}_tiny" for arch in ("blip2", "llava", "qwen25vl", "paligemma", "smolvlm"))]  # fmt: skip


def tiny(synth_dir, name: str):
    from pathvqa.config import load_config
    from pathvqa.models.registry import build

    sets = [f"data.dataset={synth_dir}", "stages=[]", "model.image_size=32", "eval.max_new_tokens=5"]
    if name not in ("blip_tiny", "vlm_tiny"):
        sets.append("model.hidden_size=64")
    family, bundle = build(load_config(f"configs/{name}.yaml", sets))
    bundle.model.eval()
    return family, bundle


def tokens_favoured(bundle, ids: list[int], by: float):
    """Adds ``by`` to the output logits of tokens ``ids`` in every output head (a forward hook, so generation
    and teacher forcing see the same model): a random model then answers with them, while the gap between
    them stays the model's own."""
    handles, seen = [], set()
    for module in bundle.model.modules():
        head = module.get_output_embeddings() if hasattr(module, "get_output_embeddings") else None
        if isinstance(head, torch.nn.Linear) and id(head) not in seen:
            seen.add(id(head))
            bias = torch.zeros(head.out_features)
            bias[ids] = by
            handles.append(head.register_forward_hook(lambda _m, _i, out, bias=bias: out + bias.to(out)))
    assert handles, "no output head found"
    return handles


def teacher_forced(family, bundle, samples, answers: list[str]) -> list[tuple[list[int], list[float]]]:
    """Each answer as a training target after its question: (its tokens as the family tokenizes it there,
    the end-of-answer token included; their log-probabilities through ``Family.token_logprobs``)."""
    from dataclasses import replace

    from pathvqa.data.batches import Collator, ImagePipeline

    targets = [replace(s, target=a) for s, a in zip(samples, answers, strict=True)]
    collate = Collator(targets, family, bundle, ImagePipeline(bundle.image_size), "vqa", train=True)
    tensors = collate(list(range(len(targets)))).tensors
    with torch.no_grad():
        logp, mask = family.token_logprobs(bundle, tensors)
    labels = tensors["labels"][:, 1:]  # token t is predicted at t - 1
    ids = [row[row != -100].tolist() for row in labels]
    return [(i, row[m.bool()].tolist()) for i, row, m in zip(ids, logp, mask, strict=True)]


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_greedy_scores_equal_teacher_forcing_and_closed_confidence_is_the_yes_no_softmax(synth_dir, name):
    from pathvqa.config import EvalConfig
    from pathvqa.data.prepare import load_split
    from tests.conftest import model_inputs

    family, bundle = tiny(synth_dir, name)
    samples = load_split(str(synth_dir), "test", progress=False).samples[:12]
    words = [teacher_forced(family, bundle, samples[:1], [w])[0][0][0] for w in ("yes", "no")]
    checked = 0
    for favoured in ([], words):  # the model's own answers, then answers that start with yes or no
        handles = tokens_favoured(bundle, favoured, 30.0) if favoured else []
        inputs = model_inputs(family, bundle, samples, train=False)
        got = family.generate(bundle, inputs, EvalConfig(max_new_tokens=5))
        forced = teacher_forced(family, bundle, samples, [g.text for g in got])
        for g, (ids, logp) in zip(got, forced, strict=True):
            if list(g.token_ids) != ids[: len(g.token_ids)] or len(ids) - len(g.token_ids) not in (0, 1):
                continue  # the text does not tokenize back to the generated tokens (a random model's odd words)
            assert g.token_logprobs == pytest.approx(logp[: len(g.token_logprobs)], abs=1e-4), (name, g.text)
            checked += 1
        if favoured:
            yes, no = (teacher_forced(family, bundle, samples, [w] * len(samples)) for w in ("yes", "no"))
            for g, (_, y), (_, n) in zip(got, yes, no, strict=True):
                assert g.yes_no_logit == pytest.approx(y[0] - n[0], abs=1e-4), (name, g.text)
                first = y[0] if g.text.lower().startswith("yes") else n[0]
                confidence = conf.row_confidence({"prediction": g.text, "yes_no_logit": g.yes_no_logit})
                assert confidence == pytest.approx(
                    math.exp(first) / (math.exp(y[0]) + math.exp(n[0])), abs=1e-5
                )
        for h in handles:
            h.remove()
    assert checked >= 4, f"{name}: only {checked} of {2 * len(samples)} answers tokenize back to themselves"


@pytest.mark.parametrize("name", ["blip_tiny", "vlm_tiny"])
def test_beam_search_answers_carry_their_tokens_log_probabilities(synth_dir, name):
    from pathvqa.config import EvalConfig
    from pathvqa.data.prepare import load_split
    from tests.conftest import model_inputs

    family, bundle = tiny(synth_dir, name)
    samples = load_split(str(synth_dir), "test", progress=False).samples[:8]
    words = [teacher_forced(family, bundle, samples[:1], [w])[0][0][0] for w in ("yes", "no")]
    handles = tokens_favoured(bundle, words, 4.0)  # beams among yes/no sequences, which tokenize back
    inputs = model_inputs(family, bundle, samples, train=False)
    beams = family.generate(bundle, inputs, EvalConfig(max_new_tokens=4, num_beams=3))
    forced = teacher_forced(family, bundle, samples, [b.text for b in beams])
    for h in handles:
        h.remove()
    checked = 0
    for b, (ids, logp) in zip(beams, forced, strict=True):
        assert len(b.token_logprobs) == len(b.token_ids) > 0
        if list(b.token_ids) == ids[: len(b.token_ids)] and len(ids) - len(b.token_ids) in (0, 1):
            assert b.token_logprobs == pytest.approx(logp[: len(b.token_logprobs)], abs=1e-4), (name, b.text)
            checked += 1
    assert checked >= 4, f"{name}: only {checked} answers tokenize back to themselves"


def old_rows() -> list[dict]:
    """Prediction rows as they were written before answers carried their scores."""
    closed = [{"id": f"c{i}", "question": "is it benign?", "answer": "yes", "prediction": "yes" if i % 3 else "no",
               "type": "closed"} for i in range(12)]  # fmt: skip
    opened = [{"id": f"o{i}", "question": "what stain is used?", "answer": "eosin",
               "prediction": "eosin" if i % 2 else "blue", "type": "open"} for i in range(12)]  # fmt: skip
    return closed + opened


def test_old_predictions_without_confidences_still_score_and_say_n_a(tmp_path):
    import json

    from pathvqa.analysis.report import build
    from pathvqa.scoring.metrics import score, score_all
    from tests.conftest import run_cli

    rows = old_rows()
    assert score_all(rows)["calibration"] == {"closed": "n/a", "open": "n/a"}
    folder = tmp_path / "old_eval"
    folder.mkdir()
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "metrics.json").write_text(json.dumps({**score(rows, intervals=True), "split": "test"}))
    files = build([folder], tmp_path / "report")
    table = (tmp_path / "report" / "results.md").read_text().split("## Confidence")[1]
    assert "| old_eval | n/a | n/a | n/a | n/a | n/a | n/a | n/a |" in table
    assert "reliability" not in files  # nothing to draw without confidences
    proc = run_cli("score", folder / "predictions.jsonl", "--json")
    assert json.loads(proc.stdout)["calibration"] == {"closed": "n/a", "open": "n/a"}


def test_compare_pairs_selective_prediction_when_both_sides_carry_confidences():
    from pathvqa.scoring.metrics import compare

    rng = np.random.default_rng(1)
    a, b = old_rows(), old_rows()
    for row in a:
        row["confidence"] = float(rng.random())  # says nothing about being right
    for row in b:
        row["confidence"] = 0.9 if row["prediction"] == row["answer"] else 0.2  # ranks right answers first
    result = compare(a, b)["selective"]
    assert compare(old_rows(), b)["selective"] == "n/a"
    closed = result["closed"]["aurc"]
    assert closed["b"] == pytest.approx(conf.aurc(np.array([r["confidence"] for r in b[:12]]),
                                                  np.array([r["prediction"] == "yes" for r in b[:12]], float)), abs=1e-4)  # fmt: skip
    assert closed["difference"] < 0 and closed["ci"][1] <= 0.0 + 1e-9 and 0 < closed["p"] <= 1
    assert {"p_holm", "test", "n"} <= set(result["open"]["accuracy_at_50"]) and result["coverage"] == 0.5
