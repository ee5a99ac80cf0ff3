import json

import pytest
from nltk.tokenize import word_tokenize
from nltk.translate.bleu_score import sentence_bleu
from nltk.translate.meteor_score import single_meteor_score

from pathvqa import answers
from pathvqa.scoring import metrics, strict
from tests.conftest import run_cli


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Tumour!", "tumour"),
        ("  a  Carcinoma,  in-situ. ", "carcinoma insitu"),
        ("An answer; THE end", "answer end"),
        ("theory", "theory"),  # 'the' only as a word
        ("", ""),
    ],
)
def test_normalize(text, expected):
    assert answers.normalize(text) == expected


def test_exact_match_ignores_case_punctuation_articles():
    assert answers.exact_match("The Carcinoma.", "carcinoma") == 1.0
    assert answers.exact_match("carcinoma in situ", "carcinoma") == 0.0


@pytest.mark.parametrize(
    ("prediction", "answer", "expected"),
    [
        ("Yes.", "yes", 1.0),
        ("yes, there is", "yes", 1.0),
        ("no", "No", 1.0),
        ("not sure", "no", 0.0),  # first token, not substring: "not" is not "no"
        ("nothing", "no", 0.0),
        ("", "yes", 0.0),
        ("the yes", "yes", 1.0),  # articles dropped before taking the first token
        ("maybe yes", "yes", 0.0),
    ],
)
def test_closed_correct(prediction, answer, expected):
    assert answers.closed_correct(prediction, answer) == expected


def test_open_recall_counts_unique_answer_tokens():
    assert strict.open_recall("squamous cell", "squamous cell carcinoma") == pytest.approx(2 / 3)
    assert strict.open_recall("carcinoma carcinoma", "carcinoma") == 1.0
    assert strict.open_recall("", "carcinoma") == 0.0


def test_token_f1_matches_squad():
    # pred tokens: cell carcinoma; truth: squamous cell carcinoma → p=1, r=2/3, f1=0.8
    assert strict.token_f1("The cell carcinoma", "squamous cell carcinoma") == pytest.approx(0.8)
    assert strict.token_f1("", "") == 1.0
    assert strict.token_f1("x", "") == 0.0


@pytest.mark.parametrize(
    ("prediction", "answer"),
    [
        ("squamous cell carcinoma", "squamous cell carcinoma"),
        ("cell carcinoma", "squamous cell carcinoma"),  # brevity penalty
        ("carcinoma carcinoma carcinoma of the lung", "carcinoma of lung"),  # clipping
        ("yes", "no"),
        ("hematoxylin and eosin stain", "hematoxylin and eosin"),
    ],
)
@pytest.mark.filterwarnings("ignore::UserWarning")  # nltk warns on zero higher-order n-grams
def test_bleu1_equals_nltk_sentence_bleu(prediction, answer):
    pred, truth = answers.normalize(prediction).split(), answers.normalize(answer).split()
    expected = sentence_bleu([truth], pred, weights=(1, 0, 0, 0))
    assert strict.bleu1(prediction, answer) == pytest.approx(expected, abs=1e-12)


def test_bleu1_empty_prediction_is_zero():
    assert strict.bleu1("", "carcinoma") == 0.0


@pytest.mark.parametrize(
    ("prediction", "answer"),
    [
        ("there is a benign tumour in the liver", "there is a benign tumor in the liver"),
        ("carcinoma", "carcinoma"),
        ("squamous cell carcinoma", "adenocarcinoma of the lung"),
        ("The cells are large", "the cell is big"),  # stems and synonyms
    ],
)
def test_meteor_equals_nltk(prediction, answer):
    ref, hyp = word_tokenize(answer, preserve_line=True), word_tokenize(prediction, preserve_line=True)
    assert strict.meteor(prediction, answer) == pytest.approx(single_meteor_score(ref, hyp), abs=1e-12)


def test_meteor_uses_wordnet_synonyms():
    # 5 words in one chunk: 1 - 0.5 * (1/5)^3 = 0.996 only if WordNet matches tumour with tumor
    value = strict.meteor("a benign tumour was found", "a benign tumor was found")
    assert value == pytest.approx(0.996, abs=1e-9)

    class NoSynonyms:
        @staticmethod
        def synsets(word, pos=None):
            return []

    ref, hyp = ["a", "benign", "tumor", "was", "found"], ["a", "benign", "tumour", "was", "found"]
    assert single_meteor_score(ref, hyp, wordnet=NoSynonyms()) < 0.85  # what a skipped stage would give
    assert strict.meteor("tumour", "tumor") == pytest.approx(0.5)  # one-word match: fragmentation penalty
    assert strict.meteor("", "tumor") == 0.0


def test_score_aggregates_all_keys():
    rows = [
        {"answer": "yes", "prediction": "yes"},
        {"answer": "no", "prediction": "not at all"},
        {"answer": "Squamous cell carcinoma", "prediction": "squamous cell carcinoma."},
        {"answer": "lung", "prediction": "liver"},
    ]
    result = metrics.score(rows)
    assert list(result) == list(answers.METRIC_KEYS)
    assert result["n"] == 4 and result["n_closed"] == 2 and result["n_open"] == 2
    assert result["exact_match"] == pytest.approx(0.5)
    assert result["closed_accuracy"] == pytest.approx(0.5)
    assert result["open_exact_match"] == pytest.approx(0.5)
    assert result["open_recall"] == pytest.approx(0.5)
    assert result["f1"] == pytest.approx(0.5)
    assert result["meteor"] == pytest.approx(
        (0.5 + 0 + strict.meteor("squamous cell carcinoma.", "Squamous cell carcinoma") + 0) / 4
    )


def test_score_cli_json(tmp_path):
    path = tmp_path / "predictions.jsonl"
    rows = [
        {"id": "1", "question": "is there necrosis?", "answer": "yes", "prediction": "Yes"},
        {"id": "2", "question": "what stain?", "answer": "masson trichrome", "prediction": "trichrome"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = json.loads(run_cli("score", path, "--json").stdout)
    assert result["closed_accuracy"] == 1.0 and result["open_exact_match"] == 0.0
    assert result["open_recall"] == 0.5
    assert result["bleu1"] == pytest.approx((1.0 + 0.36787944117144233) / 2)


def test_score_cli_bad_input_is_one_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"answer": "yes"}\n')
    proc = run_cli("score", bad, "--json", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "missing prediction" in proc.stderr
    proc = run_cli("score", tmp_path / "absent.jsonl", check=False)
    assert proc.returncode == 2 and "not found" in proc.stderr and "Traceback" not in proc.stderr
