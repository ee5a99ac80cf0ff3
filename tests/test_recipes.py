"""The tiny recipes end to end on the PathVQA-shaped set: the learning bars, measured.

One background job (started as soon as the test session has collected these tests, see
``conftest.pytest_collection_modifyitems``, so the rest of the suite runs beside it) writes the set
``pathvqa synth`` writes by default (8,000 / 500 / 1,500 pairs, seed 0) and trains both recipes from
scratch side by side, one CPU thread each. Each test then scores its run on the 1,500 test pairs, with
images and blind (grey images), against the question-only prior on the same questions.

The bars sit well inside what the recipes reach: measured over data seeds 7–10 with 1 thread (as here and
in ``make demo``) and this test's own configuration, ``scripts/learning_spread.py``; docs/study/learning-bars.md
has the table. Each lower bar is the lowest value measured minus three times the standard deviation across
those runs; the blind bar is the highest blind score plus 0.09.
"""

import atexit
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from pathvqa.evaluation.evaluate import run, run_baseline
from pathvqa.runtime.processes import all_cores
from pathvqa.scoring.metrics import compare, read_predictions

RECIPES = ["blip_tiny", "vlm_tiny"]
# (closed accuracy − prior, open exact match − prior, blind closed accuracy − prior): lower, lower, upper.
# Measured with 1 thread (docs/study/learning-bars.md): train seed = data seed on seeds that chose nothing
# (blip-tiny 7–14, vlm-tiny 7–10), and this test's own run (data seed 0, train seed 42, = make demo).
# Closed − prior blip +0.048..+0.121 (sd 0.024), vlm +0.044..+0.113 (sd 0.028); open EM − prior blip
# +0.209..+0.306 (sd 0.033), vlm +0.280..+0.364 (sd 0.036); blind − prior blip −0.315..−0.034, vlm
# −0.424..−0.016. Each lower bar: the lowest − 3 sd, rounded down; each blind bar: the highest + 0.09, rounded
# up (grey images must cost the models their yes/no answers: the prior is what a model that ignores the image
# gets).
BARS = {"blip_tiny": (-0.03, 0.11, 0.06), "vlm_tiny": (-0.05, 0.17, 0.08)}
STARTED: dict[str, object] = {}


def start_training() -> None:
    """Generate the data and launch both trainings, without waiting (one shell job)."""
    if STARTED:
        return
    root = Path(tempfile.mkdtemp(prefix="pathvqa-recipes-"))
    py = f"{sys.executable} -m pathvqa"
    data = root / "data"
    trainings = [
        f"{py} train configs/{c}.yaml --out {root / c} --set data.dataset={data} --set train.threads=1 "
        f"2> {root / c}.log & pids+=($!)"
        for c in RECIPES
    ]
    script = "\n".join(
        [
            "set -u",
            f"{py} synth --out {data} --seed 0 > {root}/synth.log 2>&1 || exit 1",
            "pids=()",
            *trainings,
            "status=0",
            'for p in "${pids[@]}"; do wait "$p" || status=1; done',
            "exit $status",
        ]
    )
    # output goes to files, not pipes: nothing can block
    job = subprocess.Popen(["bash", "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    STARTED.update(job=job, root=root, started=time.perf_counter())
    atexit.register(shutil.rmtree, root, ignore_errors=True)  # runs after the kill below (last in, first out)
    atexit.register(job.kill)  # a session that ends early leaves no training behind


def give_cores_back() -> None:
    """Every core for this process (the rest of the suite ran with one while the trainings held them)."""
    if not STARTED.get("cores_back"):
        all_cores()
        STARTED["cores_back"] = True


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(root folder, seconds from launch to finish, the prior's metrics) once both trainings are done."""
    start_training()
    job, root = STARTED["job"], STARTED["root"]
    job.wait(timeout=2400)
    give_cores_back()  # the trainings are done: every core for the evaluations
    logs = "".join(f"{p.name}:\n{p.read_text()[-2000:]}\n" for p in sorted(root.glob("*.log")))
    assert job.returncode == 0, logs
    seconds = round(time.perf_counter() - STARTED["started"])
    prior_dir = tmp_path_factory.mktemp("prior")
    prior = run_baseline(out=prior_dir, dataset=str(root / "data"))
    return root, seconds, {**prior, "predictions": str(prior_dir / "predictions.jsonl")}


@pytest.mark.slow
@pytest.mark.parametrize("config", RECIPES)
def test_tiny_recipe_beats_the_question_prior_and_needs_the_image(tmp_path, trained, config):
    root, seconds, prior = trained
    normal = run(out=tmp_path / "eval", checkpoint_dir=str(root / config), progress=False)
    blind = run(out=tmp_path / "blind", checkpoint_dir=str(root / config), blind=True, progress=False)
    paired = compare(
        read_predictions(Path(prior["predictions"])),
        read_predictions(tmp_path / "eval" / "predictions.jsonl"),
    )["metrics"]
    summary = {k: normal[k] for k in ("closed_accuracy", "open_exact_match", "open_exact_match_unseen")}
    summary.update(
        blind_closed_accuracy=blind["closed_accuracy"],
        prior_closed_accuracy=prior["closed_accuracy"],
        prior_open_exact_match=prior["open_exact_match"],
        closed_vs_prior=paired["closed_accuracy"],
        open_vs_prior=paired["open_exact_match"],
        seconds_from_launch=seconds,
    )
    print(config, json.dumps(summary))  # shown with -s / in the -ra report on failure
    closed_bar, open_bar, blind_bar = BARS[config]
    assert normal["n"] == 1500
    assert normal["closed_accuracy"] >= prior["closed_accuracy"] + closed_bar, summary
    assert normal["open_exact_match"] >= prior["open_exact_match"] + open_bar, summary
    assert blind["closed_accuracy"] <= prior["closed_accuracy"] + blind_bar, summary
