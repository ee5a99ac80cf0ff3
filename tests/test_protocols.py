"""Scoring protocols as a registry: each is one module of ``pathvqa.scoring``, and MedEvalKit's PathVQA rule —
the fourth — equals MedEvalKit's own code (``PATH_VQA.cal_metrics``) on rows that exercise its quirks:
"not", "normal" and "no." answers, answer markers, boxed and tagged answers, open answers with
punctuation. The reference verdicts come from its code (``scripts/medevalkit_reference.py``)."""

import ast
import json
from pathlib import Path

import pytest

from pathvqa.scoring import medevalkit, protocol
from pathvqa.scoring.metrics import score_all
from tests.conftest import run_cli

DATA = Path(__file__).parent / "data"
SRC = Path(__file__).parent.parent / "src" / "pathvqa"


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return [json.loads(line) for line in (DATA / "medevalkit_rows.jsonl").read_text().splitlines()]


def test_medevalkit_protocol_equals_medevalkits_own_code_row_by_row(rows):
    reference = json.loads((DATA / "medevalkit_reference.json").read_text())
    ours = {r["id"]: medevalkit.correct(r["prediction"], r["answer"])[1] for r in rows}
    differ = {
        i: (r["answer"], r["prediction"])
        for i, r in zip(ours, rows, strict=True)
        if ours[i] != reference["correct"][i]
    }
    assert not differ, differ
    section = score_all(rows)["medevalkit"]
    for key in ("accuracy", "closed_accuracy", "open_accuracy"):
        assert section[key] == pytest.approx(reference[key], abs=1e-12), key
    assert ours["c6"] and ours["c7"] and ours["c4"], '"not", "normal" and "no." read as no'
    assert not ours["o3"], '"answer: necrosis" keeps its space after the split'


def test_score_prints_the_medevalkit_protocol(tmp_path, rows):
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    shown = json.loads(run_cli("score", path, "--protocol", "medevalkit", "--json").stdout)
    assert set(shown) >= {"closed_accuracy", "open_accuracy", "accuracy", "accuracy_ci", "n_closed"}
    assert shown["n"] == len(rows) and "medevalkit" in run_cli("score", "--help").stdout


def test_the_registry_finds_every_protocol_module_in_order():
    assert list(protocol.registry()) == ["strict", "llava-med", "multimedeval", "medevalkit"]
    assert [p.key for p in protocol.sections()] == ["llava_med", "multimedeval", "medevalkit"]


def test_no_module_but_its_own_names_a_protocol():
    """score, metrics.json, the report and the CLI loop over the registry: a protocol's name or key as a
    string appears in its own module only."""
    owners = {p.table.__module__: p for p in protocol.registry().values()}
    named = []
    for path in SRC.rglob("*.py"):
        module = ".".join(("pathvqa", *path.relative_to(SRC).with_suffix("").parts))
        own = owners.get(module)
        words = {w for p in protocol.registry().values() if p is not own for w in (p.name, p.key) if w}
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in words:
                named.append(f"{path.relative_to(SRC)}:{node.lineno} {node.value!r}")
    assert not named, named
