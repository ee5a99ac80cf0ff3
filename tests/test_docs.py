"""The documentation: generated pages match the code, the site builds strictly, no developer-log language,
and the Python API example works as written."""

import contextlib
import io
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


def test_the_readme_python_example_runs_as_written(tmp_path):
    """The README's example, cut from README.md and run in an empty folder: it makes its own data."""
    readme = (ROOT / "README.md").read_text()
    code = readme.split("## In Python")[1].split("```python\n")[1].split("```")[0]
    assert code == api_docstring_example(), "the README and the API module's docstring show the same example"
    # run in this process (a fresh interpreter pays tens of seconds of imports on a cold machine), in the
    # empty folder, as a script: its own namespace, its printed lines captured
    import torch

    printed, threads = io.StringIO(), torch.get_num_threads()
    try:
        with contextlib.chdir(tmp_path), contextlib.redirect_stdout(printed):
            exec(compile(code, "README.md", "exec"), {"__name__": "__main__"})
    finally:
        torch.set_num_threads(threads)  # what training set, as a process's end would undo
    question, rest = printed.getvalue().strip().splitlines()[-1].split(" → ")
    assert question.endswith("?") and "(truth: " in rest
    assert (tmp_path / "runs" / "mine" / "eval" / "metrics.json").is_file()


def api_docstring_example() -> str:
    from pathvqa.apps import api

    return api.__doc__.split("written):\n\n")[1]


def test_the_dry_run_commands_give_the_settings_that_make_them_quick():
    """The dry runs the docs show use one sequence a step and no validation (the config's own batch takes
    minutes a step on a CPU), and say how long they took."""
    for page in (ROOT / "README.md", ROOT / "docs" / "getting-started" / "gpu.md"):
        text = page.read_text()
        for command in re.findall(r"pathvqa train [^\n]*model\.init=random(?:[^\n]*\\\n)*[^\n]*", text):
            assert all(
                k in command for k in ("train.batch_size=1", "train.grad_accum=1", "data.eval_split=null")
            ), command
    assert "took 31 s" in (ROOT / "docs" / "getting-started" / "gpu.md").read_text()
