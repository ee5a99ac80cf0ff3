"""Sweeps with real parts: worker processes sharing an Optuna study on SQLite and on a PostgreSQL server
started here, a worker killed mid-trial whose trial is retried, bad specs refused in one line, and MLflow
runs read back with MLflow's own client."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from pathvqa.sweeps import study as sweep
from pathvqa.sweeps.spec import load_spec
from tests.conftest import QUICK, run_cli


def write_spec(folder: Path, dataset: Path, steps: int = 4, sets: tuple[str, ...] = (), **extra) -> Path:
    spec = {
        "base": "configs/blip_tiny.yaml",
        "overrides": [
            f"data.dataset={dataset}",
            *QUICK,
            f"train.max_steps={steps}",
            "train.eval_every=2",
            *sets,
        ],
        "space": {"train.lr": {"log_uniform": ["1e-4", "3e-3"]}, "train.warmup_ratio": [0.0, 0.1]},
        "objective": "exact_match",
        "trials": 4,
        "heartbeat_s": 1,
        **extra,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


LOGS: dict[int, Path] = {}


def worker(spec: Path, out: Path, *args: str) -> subprocess.Popen:
    """``pathvqa sweep`` in its own process, as on another machine (output in a file: nothing blocks)."""
    path = out.parent / f"worker-{time.perf_counter_ns()}.log"
    command = [sys.executable, "-m", "pathvqa", "sweep", str(spec), "--out", str(out), *args]
    proc = subprocess.Popen(command, stdout=path.open("w"), stderr=subprocess.STDOUT)
    LOGS[proc.pid] = path
    return proc


def finish(*procs: subprocess.Popen, timeout: float = 300) -> None:
    for proc in procs:
        assert proc.wait(timeout=timeout) == 0, LOGS[proc.pid].read_text()[-3000:]


def check_trials(out: Path, storage: str | None, wanted: int) -> list[dict]:
    result = sweep.status(out, storage=storage)
    done = [t for t in result["trials"] if t["state"] in ("COMPLETE", "PRUNED")]
    assert len(done) == wanted, result["trials"]
    folders = [t["run_dir"] for t in done]
    assert len(set(folders)) == wanted, "two finished trials share a run folder"
    params = {json.dumps(t["params"], sort_keys=True) for t in done}
    assert len(params) == wanted, f"workers proposed the same parameters: {params}"
    for folder in folders:  # each trial's folder was started by one worker (no retry here)
        starts = (Path(folder) / "workers.jsonl").read_text().splitlines()
        assert len(starts) == 1, starts
    return result["trials"]


@pytest.mark.slow
def test_two_workers_on_sqlite_share_the_trials_and_the_report_draws_them(tmp_path, synth_dir):
    spec, out = write_spec(tmp_path, synth_dir), tmp_path / "sweep"
    procs = [worker(spec, out), worker(spec, out)]
    finish(*procs)
    trials = check_trials(out, None, 4)
    workers = {t["worker"] for t in trials}
    assert len(workers) == 2, f"one worker ran every trial: {workers}"
    table = run_cli("sweep", out, "--status").stdout
    assert "* " in table and "4 of 4 finished" in table and "trial-00" in table
    best = next(t for t in trials if t["best"])
    assert (Path(best["run_dir"]) / "eval" / "metrics.json").is_file()
    again = run_cli("sweep", spec, "--out", out)  # a rerun of a finished sweep starts nothing
    assert "4 of 4 finished" in again.stdout
    assert len(sweep.status(out)["trials"]) == 4
    files = run_cli("report", out, "--out", tmp_path / "report").stdout
    assert "sweep_importance.png" in files and "sweep_slices.png" in files
    html = (tmp_path / "report" / "report.html").read_text()
    assert html.count("trial-00") >= 4


@pytest.mark.slow
def test_a_killed_worker_has_its_trial_retried_from_its_checkpoint(tmp_path, synth_dir):
    sets = ("train.eval_every=1000", "train.save_every=2", "train.log_every=1")  # a checkpoint every 2 steps
    spec = write_spec(tmp_path, synth_dir, steps=80, sets=sets, trials=1, pruner="none", evaluate=False)
    out = tmp_path / "sweep"
    first = worker(spec, out)
    checkpoints = out / "trial-000" / "checkpoints"
    deadline = time.time() + 120
    while not any(checkpoints.glob("step-*/weights.safetensors")) and time.time() < deadline:
        time.sleep(0.2)
    assert any(checkpoints.glob("step-*")), "the trial never saved a checkpoint"
    first.send_signal(signal.SIGKILL)  # mid-trial: no chance to tell the storage
    first.wait()
    second = worker(spec, out)
    finish(second, timeout=300)
    trials = sweep.status(out)["trials"]
    states = {t["trial"]: t["state"] for t in trials}
    assert states[0] == "FAIL", trials  # failed by the heartbeat's grace period, then queued again
    retry = next(t for t in trials if t["retry_of"] == 0)
    assert retry["state"] == "COMPLETE" and retry["run_dir"] == str(out / "trial-000")
    starts = [json.loads(line) for line in (out / "trial-000" / "workers.jsonl").read_text().splitlines()]
    assert [s["trial"] for s in starts] == [0, retry["trial"]] and starts[0]["worker"] != starts[1]["worker"]
    steps = [json.loads(line).get("step") for line in (out / "trial-000" / "logs" / "train.jsonl").open()]
    assert steps.count(1) == 1 and steps.count(2) == 1, "the retry started over instead of resuming"
    assert max(steps) == 80
    result = sweep.status(out)
    assert result["finished"] == 1 and result["RUNNING"] == result["WAITING"] == 0, "exactly the asked number"


class QuickWorker(sweep.Worker):
    """A worker whose trials take milliseconds: claims collide as often as a test can make them."""

    def objective(self, trial) -> float:
        values = [p.suggest(trial, key) for key, p in self.spec.space.items()]
        time.sleep(0.01 * (trial.number % 3))
        return float(values[0])


def _quick_worker(spec_path: str, out: str, storage: str, start, results) -> None:
    spec = load_spec(spec_path)
    worker = QuickWorker(spec, Path(out), storage, progress=False)
    start.wait()  # every worker claims its first trial at the same instant
    results.put(worker.run()["finished"])


def run_quick_workers(spec: Path, out: Path, storage: str, workers: int) -> list[int]:
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(workers), context.Queue()
    args = (str(spec), str(out), storage, start, results)
    procs = [context.Process(target=_quick_worker, args=args) for _ in range(workers)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
        assert proc.exitcode == 0, f"a worker exited with {proc.exitcode}"
    return [results.get(timeout=5) for _ in procs]


def check_budget(out: Path, storage: str | None, wanted: int) -> None:
    result = sweep.status(out, storage=storage)
    states = [t["state"] for t in result["trials"]]
    assert states.count("COMPLETE") == wanted and len(states) == wanted, states
    params = {json.dumps(t["params"], sort_keys=True) for t in result["trials"]}
    assert len(params) == wanted, "two trials share their parameters"


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["sqlite", "postgresql"])
def test_the_budget_is_exact_however_many_workers_start_together(tmp_path, synth_dir, storage, request):
    """Four workers released by one barrier, trials of milliseconds (the race is at every claim): the
    study holds exactly the asked number of trials, three sweeps in a row."""
    for round in range(3):
        name = f"budget{round}"
        spec = write_spec(tmp_path / name, synth_dir, trials=9, name=name)
        out = tmp_path / name / "sweep"
        url = request.getfixturevalue("postgres") if storage == "postgresql" else sweep.default_storage(out)
        out.mkdir()
        finished = run_quick_workers(spec, out, url, workers=4)
        assert all(n == 9 for n in finished), finished  # every worker saw the study end at 9
        (out / sweep.SPEC_FILE).write_text(json.dumps({"storage": url, **load_spec(spec).to_json()}))
        check_budget(out, url, 9)


def _postgres_bin() -> Path | None:
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / "initdb").is_file():
            return folder
    found = shutil.which("initdb")
    return Path(found).parent if found else None


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server in a temporary folder, run by an unprivileged user; yields its URL."""
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.fail("PostgreSQL is not installed: make setup installs Debian's postgresql")
    root = Path(tempfile.mkdtemp(prefix="pathvqa-postgres-"))  # not under pytest's root-only folder
    as_user: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        shutil.chown(root, "nobody")
        as_user = ["runuser", "-u", "nobody", "--"]
    data = root / "data"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = lambda *a: subprocess.run([*as_user, *map(str, a)], check=True, capture_output=True, text=True)  # noqa: E731
    run(bin_dir / "initdb", "-D", data, "-U", "sweeper", "--auth=trust")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
    run(bin_dir / "pg_ctl", "-D", data, "-o", options, "-l", root / "server.log", "-w", "start")
    try:
        yield f"postgresql+psycopg://sweeper@127.0.0.1:{port}/postgres"
    finally:
        run(bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_three_workers_on_a_postgresql_server(tmp_path, synth_dir, postgres):
    spec, out = write_spec(tmp_path, synth_dir, steps=2, evaluate=False), tmp_path / "sweep"
    finish(*[worker(spec, out, "--storage", postgres, "--trials", "5") for _ in range(3)])
    check_trials(out, postgres, 5)
    assert len(sweep.status(out, storage=postgres)["trials"]) == 5, "a trial was created and never run"
    assert not (out / "sweep.db").exists(), "the SQLite default was used instead of the server"


def test_bad_specs_and_storage_fail_in_one_line_and_write_nothing(tmp_path, synth_dir):
    cases = {
        "unknown config key": ({"space": {"train.lerning_rate": [1e-4, 1e-3]}}, "train.lerning_rate"),
        "empty space": ({"space": {}}, "empty search space"),
        "metric not logged": ({"overrides": ["data.eval_split=null"]}, "not logged"),
        "not a metric": ({"objective": "accuracy"}, "not a validation metric"),
        "bad range": ({"space": {"train.lr": {"log_uniform": [0, 1]}}}, "low > 0"),
    }
    for case, (change, what) in cases.items():
        spec = write_spec(tmp_path / case.replace(" ", "_"), synth_dir, **change)
        out = tmp_path / f"out_{case.replace(' ', '_')}"
        proc = run_cli("sweep", spec, "--out", out, check=False)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and what in lines[0], (case, proc.stderr)
        assert not out.exists(), f"{case}: wrote {out}"
    spec = write_spec(tmp_path / "unreachable", synth_dir)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once the socket closes
    url = f"postgresql+psycopg://someone:secret@127.0.0.1:{port}/x"
    proc = run_cli("sweep", spec, "--out", tmp_path / "out_unreachable", "--storage", url, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "cannot open the sweep storage" in lines[0], (
        proc.stderr
    )
    assert "secret" not in proc.stderr and not (tmp_path / "out_unreachable").exists()


def test_mlflow_run_reads_back_with_mlflows_client(tmp_path, synth_dir):
    from mlflow.tracking import MlflowClient

    sets = [
        f"data.dataset={synth_dir}",
        *QUICK,
        "train.max_steps=4",
        "train.eval_every=2",
        "train.log_every=1",
    ]
    sets.append("train.report_to=[tensorboard, mlflow]")
    train = ["train", "configs/blip_tiny.yaml", "--out", tmp_path / "run"]
    run_cli(*train, *[a for s in sets for a in ("--set", s)])
    sets[sets.index("train.max_steps=4")] = "train.max_steps=6"  # resumed: the same MLflow run goes on
    run_cli(*train, "--resume", *[a for s in sets for a in ("--set", s)])
    run_cli("eval", "--checkpoint", tmp_path / "run", "--out", tmp_path / "run" / "eval")
    client = MlflowClient(f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("pathvqa")
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.run_name == "run" and found.data.params["train.lr"] == "0.001"
    assert found.data.params["model.family"] == "blip"
    assert found.data.params["train.max_steps"] == "4", (
        "parameters are the run's start (config.yaml has the rest)"
    )
    losses = client.get_metric_history(found.info.run_id, "train/loss")
    assert [m.step for m in losses] == [1, 2, 3, 4, 5, 6]
    assert [m.step for m in client.get_metric_history(found.info.run_id, "val/exact_match")] == [2, 4, 6]
    assert "test/closed_accuracy" in found.data.metrics and "test/n" in found.data.metrics
    assert json.loads((tmp_path / "run" / "logs" / "trackers.json").read_text())["mlflow"]["run_id"] == (
        found.info.run_id
    )


def test_each_validation_feeds_the_pruner_and_a_pruned_trial_stops(tmp_path, synth_dir):
    import optuna

    from pathvqa.config import load_config
    from pathvqa.training.stages import fit

    pruner = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    earlier = study.ask()
    for step in range(3):
        earlier.report(1.0, step)  # an earlier trial that was perfect at every validation
    study.tell(earlier, 1.0)
    trial, seen = study.ask(), []
    report = sweep._reporter(trial, "exact_match")

    def spy(label, step, metrics):
        seen.append(step)
        report(label, step, metrics)

    cfg = load_config(
        "configs/blip_tiny.yaml",
        [f"data.dataset={synth_dir}", *QUICK, "train.max_steps=6", "train.eval_every=2"],
    )
    with pytest.raises(optuna.TrialPruned):
        fit(cfg, tmp_path / "run", progress=False, on_validate=spy)
    assert seen == [2], "pruned at its first validation (below the earlier trial's median)"
    assert study.trials[1].intermediate_values.keys() == {0}
    assert (tmp_path / "run" / "checkpoints" / "step-2").is_dir() is False  # stopped before saving step 2
