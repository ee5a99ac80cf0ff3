"""Your own data and the other medical VQA sets, each in its own layout: SLAKE's release folder (English and
Chinese rows, its own answer types), a CSV with another image column, LLaVA conversation JSON with
multi-turn entries, and a set with only train and test (its validation carved out of train by image)."""

import json
import zlib
from pathlib import Path

import pytest

from pathvqa.data.prepare import load_split
from pathvqa.data.spec import DatasetSpec, parse
from tests.conftest import QUICK, noise_image, run_cli

QUESTIONS = [  # (question, answer, answer_type): a CLOSED answer that is not yes/no, an OPEN "no"
    ("is there a lesion?", "yes", "CLOSED"),
    ("which side is larger, left or right?", "left", "CLOSED"),
    ("what organ is shown?", "lung", "OPEN"),
    ("is the heart enlarged?", "no", "CLOSED"),
]


def images(folder: Path, names: list[str]) -> None:
    for name in names:  # a different picture per name
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        noise_image(zlib.crc32(name.encode()), size=32).save(folder / name)


def slake(folder: Path) -> Path:
    """SLAKE as released: imgs/xmlabN/source.jpg, {train,validation,test}.json with English and Chinese."""
    counts = {"train": 12, "validation": 3, "test": 4}
    start = 0
    for split, n in counts.items():
        rows = []
        for k in range(start, start + n):
            name = f"xmlab{k}/source.jpg"
            images(folder / "imgs", [name])
            for q, a, t in QUESTIONS:
                rows.append({"img_name": name, "question": q, "answer": a, "q_lang": "en", "answer_type": t})
            rows.append({"img_name": name, "question": "图片中是什么器官？", "answer": "肺", "q_lang": "zh",
                         "answer_type": "OPEN"})  # fmt: skip
        (folder / f"{split}.json").write_text(json.dumps(rows, ensure_ascii=False))
        start += n
    return folder


def csv_set(folder: Path) -> Path:
    import csv

    for split, n in {"train": 10, "validation": 3, "test": 4}.items():
        names = [f"pictures/{split}_{i}.png" for i in range(n)]
        images(folder, names)
        with (folder / f"{split}.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, ["image_name", "question", "answer"])
            writer.writeheader()
            for name in names:
                for q, a, _ in QUESTIONS:
                    writer.writerow({"image_name": name, "question": q, "answer": a})
    return folder


def llava_set(folder: Path) -> Path:
    for split, n in {"train": 10, "validation": 3, "test": 4}.items():
        entries = []
        for i in range(n):
            name = f"images/{split}_{i}.png"
            images(folder, [name])
            turns = []
            for j, (q, a, _) in enumerate(QUESTIONS[:3]):
                turns += [
                    {"from": "human", "value": f"<image>\n{q}" if j == 0 else q},
                    {"from": "gpt", "value": a},
                ]
            entries.append({"id": f"{split}{i}", "image": name, "conversations": turns})
        (folder / f"{split}.json").write_text(json.dumps(entries))
    return folder


def train_test_set(folder: Path) -> Path:
    """VQA-RAD's shape: train and test only (JSONL + images)."""
    for split, n in {"train": 40, "test": 6}.items():
        rows = []
        for i in range(n):
            name = f"images/{split}_{i}.png"
            images(folder, [name])
            rows += [{"image": name, "question": q, "answer": a} for q, a, _ in QUESTIONS]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_slake_reads_english_rows_with_its_own_answer_types(tmp_path):
    folder = slake(tmp_path / "Slake1.0")
    data = load_split(f"slake:{folder}", "train", progress=False)
    assert len(data.samples) == 12 * 4, "English rows only"
    kinds = {s.question: s.type for s in data.samples}
    assert kinds["which side is larger, left or right?"] == "closed", (
        "answer_type decides, not the yes/no rule"
    )
    assert all(s.type_given for s in data.samples)


def test_the_question_prior_is_scored_by_the_datasets_own_answer_types(tmp_path):
    """The prior's rows carry the dataset's answer type, as a model's do: a CLOSED answer that is not yes/no
    counts as closed for the prior too (one prediction-row contract: ``Sample.prediction_row``)."""
    from pathvqa.evaluation.baselines import QuestionPrior, prior_scores

    data = load_split(f"slake:{slake(tmp_path / 'Slake1.0')}", "train", progress=False)
    rows = QuestionPrior(data.samples).predictions(data.samples)
    assert {r["answer_type"] for r in rows} == {"closed", "open"}
    closed = sum(s.type == "closed" for s in data.samples)
    assert prior_scores(data.samples, data.samples)["n_closed"] == closed


def test_a_csv_with_its_own_image_column(tmp_path):
    folder = csv_set(tmp_path / "csv")
    spec = DatasetSpec(str(folder), columns={"image": "image_name"})
    data = load_split(spec, "test", progress=False)
    assert len(data.samples) == 4 * 4 and {s.type for s in data.samples} == {"closed", "open"}
    assert data.samples[1].type == "open", "no answer_type column: the yes/no rule"


def test_llava_conversations_give_one_row_per_turn(tmp_path):
    folder = llava_set(tmp_path / "llava")
    data = load_split(DatasetSpec(str(folder), format="llava"), "train", progress=False)
    assert len(data.samples) == 10 * 3
    assert {s.question for s in data.samples} == {q for q, _, _ in QUESTIONS[:3]}, "<image> removed"


def test_a_train_test_set_gets_a_validation_split_carved_by_image(tmp_path):
    folder = train_test_set(tmp_path / "rad")
    train = load_split(str(folder), "train", progress=False, dedupe=False)
    validation = load_split(str(folder), "validation", progress=False, dedupe=False)
    assert validation.samples, "a share of train's images became validation"
    assert not {s.image_key for s in train.samples} & {s.image_key for s in validation.samples}
    assert len(train.samples) + len(validation.samples) == 40 * 4
    again = load_split(str(folder), "validation", progress=False, dedupe=False)
    assert [s.image_key for s in again.samples] == [s.image_key for s in validation.samples], "seeded"
    test = load_split(str(folder), "test", progress=False)
    assert len(test.samples) == 6 * 4, "the test split is never carved"


LAYOUTS = {
    "slake": (slake, lambda f: [f"data.dataset={f}", "data.preset=slake"], lambda f: f"slake:{f}"),
    "csv": (csv_set, lambda f: [f"data.dataset={f}", "data.columns={image: image_name}"], None),
    "llava": (llava_set, lambda f: [f"data.dataset={f}", "data.format=llava"], None),
    "train-test": (train_test_set, lambda f: [f"data.dataset={f}"], lambda f: str(f)),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_train_eval_report_and_data_stats_on_each_layout(layout, tmp_path):
    make, sets, name = LAYOUTS[layout]
    folder = make(tmp_path / layout)
    config = [*sets(folder), *QUICK, "train.max_steps=2", "train.eval_every=2", "data.eval_samples=8"]
    trained = run_cli(
        "train",
        "configs/blip_tiny.yaml",
        "--out",
        tmp_path / "run",
        *[a for s in config for a in ("--set", s)],
    )
    if layout == "train-test":  # however often the split is opened, the notice is said once
        assert trained.stderr.count("carved out as it") == 1, trained.stderr
    run_cli("eval", "--checkpoint", tmp_path / "run", "--out", tmp_path / "run" / "eval")
    metrics = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    assert metrics["n"] > 0
    run_cli("report", tmp_path / "run", "--out", tmp_path / "report")
    assert (tmp_path / "report" / "report.html").is_file()
    if layout == "slake":  # answer_type decided closed vs open in the scores
        rows = [
            json.loads(x) for x in (tmp_path / "run" / "eval" / "predictions.jsonl").read_text().splitlines()
        ]
        assert {r["answer_type"] for r in rows} == {"closed", "open"}
        assert metrics["n_closed"] == 3 * 4, "left/right answers count as closed, as SLAKE says"
    spec = tmp_path / "dataset.yaml"
    described = dict(s.split("=", 1) for s in sets(folder))
    spec.write_text("\n".join(f"{k.removeprefix('data.')}: {v}" for k, v in described.items()) + "\n")
    table = run_cli("data-stats", "--dataset", name(folder) if name else spec).stdout
    assert "rows kept" in table and "question-only prior" in table
    mapped = run_cli(
        "data-stats", "--dataset", folder, *[a for s in sets(folder)[1:] for a in ("--set", s)]
    ).stdout
    kept = [text.splitlines()[0].split("]: ")[1] for text in (mapped, table)]
    assert kept[0] == kept[1], "data-stats maps columns with --set as train does"


def test_a_dataset_yaml_names_everything(tmp_path):
    folder = csv_set(tmp_path / "csv")
    (tmp_path / "mine.yaml").write_text(f"dataset: {folder}\ncolumns: {{image: image_name}}\n")
    assert parse(str(tmp_path / "mine.yaml")).columns == {"image": "image_name"}
