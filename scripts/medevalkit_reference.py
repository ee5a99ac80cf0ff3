"""MedEvalKit's own verdicts on the rows of ``tests/data/medevalkit_rows.jsonl``, from its own code: the
reference ``tests/test_protocols.py`` holds ``--protocol medevalkit`` to.

    python scripts/medevalkit_reference.py /path/to/MedEvalKit     # a checkout (alibaba-damo-academy's or a fork)

needs ``pip install mathruler`` (MedEvalKit's ``extract_boxed_content``) and nltk. It loads
``utils/utils.py`` and ``utils/PATH_VQA/PATH_VQA.py`` from the checkout without its package ``__init__``
(which imports every benchmark), with stand-ins for what scoring never calls (the LLM-judge clients, rouge,
the prompt builders), runs ``PATH_VQA.cal_metrics`` on the rows, and writes each row's ``correct`` and the
accuracies to ``tests/data/medevalkit_reference.json``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import types
from pathlib import Path

ROWS = Path(__file__).parent.parent / "tests" / "data" / "medevalkit_rows.jsonl"
OUT = ROWS.with_name("medevalkit_reference.json")


def _stub(name: str, **attrs) -> None:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module


def _stand_ins() -> None:
    """The imports of MedEvalKit's utils that scoring never reaches: LLM-judge clients, retries, rouge."""

    class _Client:
        def __init__(self, *args, **kwargs):
            pass

    class _Rouge:
        def get_scores(self, pred, target):
            return [{k: {"f": 0.0, "p": 0.0, "r": 0.0} for k in ("rouge-1", "rouge-2", "rouge-l")}]

    os.environ.setdefault("api_key", "unused")  # its judge client is built at import
    _stub("google", genai=types.SimpleNamespace(Client=_Client))
    _stub("google.genai", Client=_Client)
    _stub("openai", OpenAI=_Client, AsyncOpenAI=_Client, AzureOpenAI=_Client, AsyncAzureOpenAI=_Client)
    _stub("tenacity", retry=lambda **kw: lambda f: f, stop_after_attempt=lambda n: n, wait_fixed=lambda s: s)
    _stub("rouge", Rouge=_Rouge)


def load_path_vqa(checkout: Path):
    """``PATH_VQA`` from ``checkout/utils/PATH_VQA/PATH_VQA.py``, its package loaded without ``__init__``."""
    _stand_ins()
    package = types.ModuleType("medevalkit_utils")
    package.__path__ = [str(checkout / "utils")]
    sys.modules["medevalkit_utils"] = package
    for name in ("base_dataset", "question_formats"):  # prompt building and the run loop: not scoring
        sys.modules[f"medevalkit_utils.{name}"] = types.ModuleType(name)
    sys.modules["medevalkit_utils.base_dataset"].BaseDataset = object
    formats = sys.modules["medevalkit_utils.question_formats"]
    for name in (
        "get_judgement_prompt",
        "get_open_ended_prompt",
        "get_image_index_info",
        "add_image_index_to_prompt",
    ):
        setattr(formats, name, lambda *args, **kwargs: "")
    for name in ("utils", "PATH_VQA.PATH_VQA"):
        path = checkout / "utils" / (name.replace(".", "/") + ".py")
        spec = importlib.util.spec_from_file_location(f"medevalkit_utils.{name}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return sys.modules["medevalkit_utils.PATH_VQA.PATH_VQA"].PATH_VQA


def main(checkout: str) -> None:
    rows = [json.loads(line) for line in ROWS.read_text().splitlines() if line.strip()]
    path_vqa = load_path_vqa(Path(checkout).resolve())
    samples = [{"question": r["question"], "answer": r["answer"], "response": r["prediction"]} for r in rows]
    metrics, scored = path_vqa.__new__(path_vqa).cal_metrics(samples)
    reference = {
        "source": "MedEvalKit utils/PATH_VQA/PATH_VQA.py cal_metrics (with utils/utils.py's judges)",
        "correct": {r["id"]: bool(s["correct"]) for r, s in zip(rows, scored, strict=True)},
        "accuracy": metrics["total metrics"]["acc"],
        "closed_accuracy": metrics["close"]["acc"],
        "open_accuracy": metrics["open"][
            "em"
        ],  # its open "acc" is divided by the open count twice: "em" is the mean
    }
    OUT.write_text(json.dumps(reference, indent=1) + "\n")
    print(f"wrote {OUT}: accuracy {reference['accuracy']:.4f} over {len(rows)} rows")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/medevalkit_reference.py /path/to/MedEvalKit")
    main(sys.argv[1])
