"""Numbers a reviewer can trust: the LLaVA-Med protocol rule by rule (values worked out by hand), bootstrap
intervals, paired comparisons with McNemar's test, results per question type, data-stats on leakage and
duplicates, the question-only prior as a command, and the report that shows them."""

import json
import math

import numpy as np
import pytest

from pathvqa.scoring import llava_med, stats
from pathvqa.scoring.metrics import compare, score_all
from tests.conftest import noise_image, run_cli, write_jsonl


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("No, it is not.", "no it is not"),  # ", " touches a space: deleted; the final period goes
        ("x-ray", "x ray"),  # a hyphen inside a word becomes a space
        ("1,000 cells.", "1000 cells"),  # a digit,digit comma: every listed mark is deleted
        ("Two vessels", "2 vessels"),  # number words become digits
        ("none", "0"),
        ("the tumor (benign)", "tumor benign"),  # articles dropped; "(" touches a space, ")" becomes one
        ("a/b test", "b test"),  # "/" becomes a space, then "a" is an article
        ("3.5 cm", "3.5 cm"),  # a period before a digit stays
        ("H&E 50% it's", "h&e 50% it's"),  # & % ' stay
        ("dont know", "don't know"),  # the contraction table
        ("x" + "." * 40, "x" + "." * 8),  # at most 32 periods are removed (re.UNICODE passed as count)
        ("yes!", "yes"),
    ],
)
def test_llava_med_normalization_rule_by_rule(text, normalized):
    assert llava_med.normalize_word(text) == normalized


def test_llava_med_closed_rows_are_substring_matches():
    assert llava_med.closed_hit("not", "no") == 1.0  # "no" is found in "not": the rule, not fixed
    assert llava_med.closed_hit("normal", "no") == 1.0
    assert llava_med.closed_hit("No.", "no") == 1.0 and llava_med.closed_hit("yes", "no") == 0.0


def test_llava_med_open_rows_count_words_with_their_counts():
    # prediction words blood×2, cells; answer words blood, vessels: tp 2, fp 1, fn 1
    s = llava_med.open_scores("blood blood cells", "blood vessels")
    assert s["recall"] == pytest.approx(2 / 3) and s["precision"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 / 3)
    assert s["bleu1"] == pytest.approx(1 / 3)  # clipped unigram precision 1/3, no brevity penalty (3 > 2)
    assert (
        s["substring"] == 0.0
        and llava_med.open_scores("blood vessels seen", "blood vessels")["substring"] == 1.0
    )
    assert llava_med.open_scores("", "blood vessels") == {
        "substring": 0.0,
        "bleu1": 0.0,
        "f1": 0.0,
        "precision": 0.0,
        "recall": 0.0,
    }
    assert llava_med.open_scores("cells", "blood vessels")["recall"] == 0.0  # tp = 0


def rows_of(pairs, kind=None):
    return [
        {
            "id": f"q{i}",
            "question": q,
            "answer": a,
            "prediction": p,
            "type": kind or ("closed" if a in ("yes", "no") else "open"),
        }
        for i, (q, a, p) in enumerate(pairs)
    ]


def test_score_writes_both_protocols_with_intervals():
    result = score_all(
        rows_of([("is it?", "no", "not"), ("what stain?", "h&e", "h&e stain"), ("is it?", "yes", "yes")])
    )
    assert result["closed_accuracy"] == 0.5 and result["llava_med"]["closed_accuracy"] == 1.0
    assert result["llava_med"]["open_recall"] == 1.0 and result["llava_med"]["open_precision"] == 0.5
    assert set(result["llava_med"]) >= {
        "closed_accuracy", "open_recall", "open_precision", "open_f1", "open_bleu1", "open_substring_accuracy",
        "n_closed", "n_open",
    }  # fmt: skip
    for key in ("exact_match", "meteor", "closed_accuracy", "open_recall"):
        low, high = result[f"{key}_ci"]
        assert low <= result[key] <= high


def test_bootstrap_interval_of_a_proportion_matches_its_normal_approximation():
    correct = np.array([1.0] * 320 + [0.0] * 80)  # 0.8 on 400 questions: ±1.96·sqrt(0.8·0.2/400) = ±0.039
    low, high = stats.intervals({"acc": correct})["acc"]
    assert low == pytest.approx(0.8 - 0.039, abs=0.008) and high == pytest.approx(0.8 + 0.039, abs=0.008)
    assert stats.intervals({"acc": correct}) == stats.intervals({"acc": correct}), (
        "seeded: the same every time"
    )


def test_paired_comparison_and_mcnemar_by_hand(tmp_path):
    # 100 closed questions: both right on 40, only A on 10, only B on 30, both wrong on 20
    outcome = [(1, 1)] * 40 + [(1, 0)] * 10 + [(0, 1)] * 30 + [(0, 0)] * 20
    a = rows_of([(f"is {i}?", "yes", "yes" if x else "no") for i, (x, _) in enumerate(outcome)])
    b = rows_of([(f"is {i}?", "yes", "yes" if y else "no") for i, (_, y) in enumerate(outcome)])
    result = compare(a, b)
    entry = result["metrics"]["closed_accuracy"]
    assert entry["difference"] == pytest.approx(0.2) and entry["ci"][0] > 0.05 and entry["n"] == 100
    exact = min(1.0, 2 * sum(math.comb(40, k) for k in range(11)) / 2**40)  # two-sided binomial, 10 of 40
    assert result["mcnemar_closed"] == {
        "a_only_right": 10,
        "b_only_right": 30,
        "p": pytest.approx(exact, abs=1e-4),
    }
    for name, rows in (("a", a), ("b", b)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = run_cli("compare", tmp_path / "a.jsonl", tmp_path / "b.jsonl")
    assert "closed_accuracy: B − A = +0.200 [" in proc.stdout and f"p = {exact:.2g}" in proc.stdout


def test_results_per_question_type_carry_n():
    questions = ["what is this?"] * 6 + ["how many cells?"] * 5 + ["is it?"] * 7 + ["where?"] * 2
    correct = np.array([1] * 6 + [0] * 5 + [1, 0] * 3 + [1] + [1, 1], dtype=float)
    types = stats.by_question_type(questions, correct)
    assert list(types) == ["is", "what", "how many", "other"]
    assert types["is"]["n"] == 7 and types["is"]["accuracy"] == round(4 / 7, 4)
    assert types["other"] == {"n": 2, "accuracy": 1.0, "ci": [1.0, 1.0]}


@pytest.fixture(scope="module")
def leaky(tmp_path_factory):
    """train / validation / test in JSONL + PNG: test reuses one training image and one training
    question-answer pair, and repeats one of its own rows."""
    root = tmp_path_factory.mktemp("leaky")
    (root / "img").mkdir()
    for i in range(12):
        noise_image(100 + i, 24).save(root / "img" / f"{i}.png")
    row = lambda i, q, a: {"image": f"img/{i}.png", "question": q, "answer": a}  # noqa: E731
    write_jsonl(root, "train", [row(i, "is this normal?", "yes" if i % 2 else "no") for i in range(6)]
                + [row(0, "what stain is used?", "h&e"), row(1, "what stain is used?", "h&e")])  # fmt: skip
    write_jsonl(root, "validation", [row(6, "is this normal?", "yes"), row(7, "what organ?", "liver")])
    test = [
        row(8, "is this normal?", "no"),
        row(9, "what stain is used?", "h&e"),
        row(0, "what organ?", "lung"),
    ]
    write_jsonl(root, "test", [*test, row(10, "what organ?", "kidney"), row(10, "what organ?", "kidney")])
    return root


def test_data_stats_reports_leakage_duplicates_and_the_prior(leaky):
    stats_ = json.loads(run_cli("data-stats", "--dataset", leaky, "--split", "test", "--json").stdout)
    assert stats_["duplicates"] == 1 and stats_["rows_kept"] == 4  # training's view: the repeat is dropped
    assert stats_["yes_share_of_closed"] == 0.0 and stats_["unique_answers"] == 4
    leak = stats_["across_splits"]["leakage"]["train->test"]
    assert leak["shared_images"] == 1 and leak["rows_with_a_seen_image"] == 1
    assert leak["shared_question_answer_pairs"] == 2 and leak["rows_seen_exactly"] == 0
    prior = stats_["across_splits"]["question_prior"]
    # every test row counts (5, the repeat too): "is this normal?" → its majority "no" (a tie: first seen);
    # "what stain is used?" → "h&e"; "what organ?" is unseen → the overall majority, "no": 2 of 5 right
    assert prior["exact_match"] == pytest.approx(2 / 5)
    assert stats_["across_splits"]["unseen_test_answers"] == {"open_rows": 4, "unseen": 3, "share": 0.75}
    text = run_cli("data-stats", "--dataset", leaky, "--split", "test").stdout
    assert "train->test: 1 shared images" in text and "question-only prior on test" in text


def test_question_prior_baseline_command_counts_every_test_row(leaky, tmp_path):
    kept = json.loads(
        run_cli(
            "eval", "--baseline", "question-prior", "--dataset", leaky, "--out", tmp_path / "a", "--json"
        ).stdout
    )
    dropped = json.loads(
        run_cli(
            "eval",
            "--baseline",
            "question-prior",
            "--dataset",
            leaky,
            "--out",
            tmp_path / "b",
            "--dedupe",
            "--json",
        ).stdout
    )
    assert kept["n"] == 5 and dropped["n"] == 4 and kept["duplicate_rows"] == 1
    assert (tmp_path / "a" / "predictions.jsonl").read_text().count("\n") == 5
    medical = json.loads(
        run_cli("score", tmp_path / "a" / "predictions.jsonl", "--protocol", "llava-med", "--json").stdout
    )
    assert medical == kept["llava_med"]


def test_every_paired_test_equals_its_reference_implementation():
    """The permutation test equals scipy's permutation_test (exact, every flip, on 11 rows), McNemar's equals
    scipy's binomial test on the discordant pairs, Holm's adjustment equals statsmodels' multipletests."""
    from scipy.stats import binomtest, permutation_test
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(3)
    a, b = rng.random(11), rng.random(11)
    theirs = permutation_test(
        (a, b), lambda x, y, axis: np.mean(x - y, axis=axis), permutation_type="samples", vectorized=True
    ).pvalue
    assert stats.permutation_p(a, b) == pytest.approx(theirs, abs=1e-12)
    big_a, big_b = rng.random(400), rng.random(400) + 0.03  # Monte Carlo: within its error of scipy's
    ref = permutation_test((big_a, big_b), lambda x, y, axis: np.mean(x - y, axis=axis),
                           permutation_type="samples", vectorized=True, n_resamples=9999, random_state=1).pvalue  # fmt: skip
    assert abs(stats.permutation_p(big_a, big_b) - ref) < 8 * np.sqrt(0.25 / 9999)  # 4 standard errors of 2·p̂
    right_a, right_b = rng.random(200) < 0.6, rng.random(200) < 0.7
    only_a, only_b = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    expected = binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue
    assert stats.mcnemar(right_a, right_b)["p"] == pytest.approx(expected, rel=5e-3)
    pvalues = [0.001, 0.04, 0.03, 0.2, 0.012, 0.5, 0.049]
    assert stats.holm(pvalues) == pytest.approx(list(multipletests(pvalues, method="holm")[1]), abs=1e-12)
    assert stats.holm([0.02, None, 0.01]) == pytest.approx([0.02, None, 0.02])


def test_seed_aggregates_equal_a_direct_computation():
    """Mean, sd and the t interval over three seeds, worked out directly; the seed-aware paired interval
    widens when the seeds disagree (a bootstrap over seeds and questions)."""
    summary = stats.over_seeds([0.70, 0.74, 0.72])
    half = 4.302652729911275 * 0.02 / np.sqrt(3)  # t(0.975, 2) · sd / √3
    assert summary["mean"] == 0.72 and summary["sd"] == 0.02 and summary["seeds"] == 3
    assert summary["ci"] == pytest.approx([0.72 - half, 0.72 + half], abs=1e-4)
    rng = np.random.default_rng(0)
    base = (rng.random((1, 300)) < 0.6).astype(float)
    steady = stats.seed_aware_difference(np.repeat(base, 3, 0), np.repeat(base, 3, 0) * 0 + base)
    wobbly_b = np.stack([(rng.random(300) < q).astype(float) for q in (0.5, 0.7, 0.9)])
    wobbly = stats.seed_aware_difference(np.repeat(base, 3, 0), wobbly_b)
    assert steady["difference"] == 0 and steady["ci"] == [0.0, 0.0]
    assert wobbly["ci"][1] - wobbly["ci"][0] > 0.2 and wobbly["seeds"] == [3, 3]
