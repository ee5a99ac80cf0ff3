"""``--protocol multimedeval`` against MultiMedEval's own code: its ``PathVQA`` task's ``evaluate`` (the
``VQA`` family's scoring, ``clean_str``, torchmetrics' BLEU) run on the same predictions.

MultiMedEval 1.0.0 is installed without its dependencies (spaCy, scikit-learn, BERTScore, Kaggle… are
needed by tasks other than VQA). Its package ``__init__`` builds the whole engine, so the test imports
its modules from the package folder directly and stands in empty modules for the imports that only
other tasks use; everything ``VQA.evaluate`` runs is MultiMedEval's own code and torchmetrics'."""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import json
import sys
import types

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pathvqa.scoring.metrics import score
from tests.conftest import run_cli

STAND_INS = {  # imported by MultiMedEval modules, never run by VQA scoring
    "gdown": [],
    "requests": [],
    "dill": [],
    "bert_score": ["BERTScorer"],
    "sklearn": [],
    "sklearn.metrics": ["auc", "f1_score", "precision_score", "accuracy_score", "roc_curve"],
    "nibabel": [],
    "nibabel.spatialimages": ["SpatialImage"],
    "multimedeval.report_comparison_utils": ["compute_bertscore", "compute_composite", "compute_meteor"],
}


@pytest.fixture(scope="module")
def their_pathvqa():
    """MultiMedEval's ``PathVQA`` task class, scoring a list of answers."""
    spec = importlib.util.find_spec("multimedeval")
    if spec is None:
        pytest.fail("multimedeval is not installed: run `make setup`")
    import datasets  # noqa: F401  (imported before the stand-ins: it probes for nibabel itself)
    import torchmetrics  # noqa: F401

    saved = {name: sys.modules.get(name) for name in [*STAND_INS, "multimedeval"]}
    absent = {name for name in STAND_INS if importlib.util.find_spec(name.split(".")[0]) is None}
    package = types.ModuleType("multimedeval")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["multimedeval"] = package
    for name, attrs in STAND_INS.items():
        if name.startswith("multimedeval.") or name in absent:
            module = types.ModuleType(name)
            module.__spec__ = importlib.machinery.ModuleSpec(name, None)  # libraries probe find_spec()
            for attr in attrs:
                setattr(module, attr, type(attr, (), {}))
            sys.modules[name] = module
    try:
        vqa = importlib.import_module("multimedeval.vqa")
        answer = importlib.import_module("multimedeval.utils").BatcherOutput  # what a model's batcher returns
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module

    class Task(vqa.PathVQA):
        def __init__(self, answers):
            super().__init__(engine=None, logger=None)
            self.dataset = [{"answer": a} for a in answers]

    def evaluate(rows):
        task = Task([r["answer"] for r in rows])
        outputs = [{"answer": answer(text=r["prediction"]), "idx": i} for i, r in enumerate(rows)]
        return task.evaluate(outputs).metrics

    return evaluate


OURS = {  # their metric name → ours (under metrics.json's "multimedeval")
    "bleu": "bleu1",
    "F1": "f1",
    "recall": "recall",
    "closedQuestionsAccuracy": "closed_accuracy",
    "openQuestionsRecall": "open_recall",
    "openQuestionsAccuracy": "open_accuracy",
}
EDGE_ROWS = [  # the rules' corners: "not" for "no", number words, articles, punctuation, empty text
    ("no", "not"),
    ("no", "no, it is not"),
    ("yes", "yes no"),
    ("No.", "no"),
    ("yes", ""),
    ("no", "normal"),
    ("two", "2"),
    ("the lung", "lung"),
    ("focal lung adenocarcinoma", "lung adenocarcinoma focal focal"),
    ("multifocal kidney amyloidosis with fat", "kidney amyloidosis"),
    ("e.g. a;b", "a ; b e.g"),
    ("1,000 cells", "1000 cells"),
    ("don't know", "dont know"),
    ("", "something"),
    ("hemorrhage", "hemorrhage and necrosis and hemorrhage"),
]


def _compare(theirs: dict, ours: dict) -> None:
    for name, key in OURS.items():
        mine = ours[key] if ours[key] is not None else 0  # theirs reports 0 where no row applies
        assert mine == pytest.approx(theirs[name], abs=1e-4), (name, theirs, ours)


def test_edge_cases_score_as_multimedeval_does(their_pathvqa):
    rows = [{"answer": a, "prediction": p} for a, p in EDGE_ROWS]
    _compare(their_pathvqa(rows), score(rows, protocols=True)["multimedeval"])


WORDS = st.sampled_from(
    ["yes", "no", "not", "the", "a", "lung", "focal", "two", "2", "none", "fat", "with", "dont", "it's", ""]
)
TEXT = st.lists(st.one_of(WORDS, st.text(alphabet="abc,.;!?-' 0123", max_size=6)), max_size=6).map(" ".join)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(TEXT, TEXT), min_size=1, max_size=12))
def test_any_predictions_score_as_multimedeval_does(their_pathvqa, pairs):
    rows = [{"answer": a, "prediction": p} for a, p in pairs]
    _compare(their_pathvqa(rows), score(rows, protocols=True)["multimedeval"])


def test_score_cli_prints_the_multimedeval_protocol(tmp_path, their_pathvqa):
    rows = [
        {"id": str(i), "question": "q?", "answer": a, "prediction": p} for i, (a, p) in enumerate(EDGE_ROWS)
    ]
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    shown = json.loads(run_cli("score", path, "--protocol", "multimedeval", "--json").stdout)
    _compare(their_pathvqa(rows), shown)
    assert shown["n_closed"] == 6 and shown["closed_accuracy_ci"] is not None
