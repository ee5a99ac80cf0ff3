"""The documentation: generated pages match the code, the site builds strictly, no developer-log language,
and the Python API example works as written."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import docs  # noqa: E402  (scripts/docs.py)

DIARY = ("this round", "this session", "done-when", "the issue", "used to say")


def test_the_generated_pages_and_tables_match_the_code_and_result_files():
    stale = [str(p.relative_to(ROOT)) for p, text in docs.expected().items() if p.read_text() != text]
    assert not stale, f"run `python scripts/docs.py`: {stale}"


def table_rows(section: str) -> dict[str, str]:
    """key → default cell of a reference table (cells split on unescaped pipes)."""
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 4 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells[2]
    return rows


def test_the_config_reference_lists_every_field_with_its_default():
    """Read independently of the generator: each field of each config model has a row whose default is
    the code's."""
    page = (ROOT / "docs/reference/config.md").read_text()
    sections = dict(re.findall(r"^## `(.+?)`\n(.*?)(?=^## |\Z)", page, re.M | re.S))
    missing, wrong = [], []
    for prefix, model in docs.config_sections():
        rows = table_rows(sections.get(prefix.rstrip(".") or "top level", ""))
        base = prefix.split(" ")[0]
        for name, field in model.model_fields.items():
            key = f"{base}{name}"
            if key not in rows:
                missing.append(f"{prefix}{name}")
                continue
            if field.default_factory is None and field.default is not PydanticUndefined:
                expected = f"`{json.dumps(field.default)}`"
                if rows[key].strip() != expected:
                    wrong.append((key, rows[key].strip(), expected))
    assert not missing, missing
    assert not wrong, wrong


def test_the_checker_sees_a_field_the_reference_lacks(monkeypatch):
    from pathvqa.config import EvalConfig

    page = docs.config_reference()
    monkeypatch.setitem(EvalConfig.model_fields, "beam_width_new", EvalConfig.model_fields["num_beams"])
    assert docs.config_reference() != page and "`eval.beam_width_new`" in docs.config_reference()


def test_no_developer_log_language_in_readme_docs_or_configs():
    files = [
        ROOT / "README.md",
        *(ROOT / "docs").rglob("*.md"),
        *(ROOT / "src/pathvqa/configs").rglob("*.yaml"),
    ]
    found = [f"{f.relative_to(ROOT)}: {w}" for f in files for w in DIARY if w in f.read_text().lower()]
    assert not found, found


def test_the_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, len(lines)
    head = "\n".join(lines[:25])
    assert "make demo" in head and "make test" in head


@pytest.mark.slow
def test_the_site_builds_strictly(tmp_path):
    mkdocs = Path(sys.executable).parent / "mkdocs"
    command = [
        str(mkdocs) if mkdocs.exists() else shutil.which("mkdocs"),
        "build",
        "--strict",
        "--site-dir",
        str(tmp_path),
    ]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "reference/config/index.html").is_file()


def test_the_python_api_example_trains_evaluates_and_answers(tmp_path, synth_dir):
    from pathvqa.apps.api import Answerer, evaluate, load_config, train

    cfg = load_config(
        ROOT / "configs/blip_tiny.yaml",
        [f"data.dataset={synth_dir}", "train.max_steps=2", "model.hidden_size=32", "model.num_layers=1",
         "eval.max_new_tokens=4", "data.eval_split=null"],
    )  # fmt: skip
    summary = train(cfg, tmp_path / "run", progress=False)
    assert summary
    metrics = evaluate(
        tmp_path / "run", out=tmp_path / "eval", dataset=str(synth_dir), limit=8, progress=False
    )
    assert metrics["n"] == 8 and "llava_med" in metrics
    image = next((synth_dir).rglob("*.parquet"))
    import pyarrow.parquet as pq

    row = pq.read_table(image).to_pylist()[0]
    answers = Answerer(tmp_path / "run").answer(row["image"]["bytes"], ["what stain is used?"])
    assert len(answers) == 1 and answers[0].question == "what stain is used?"
