"""Hyper-parameter sweeps on Optuna: ``pathvqa sweep SPEC.yaml --out DIR``.

A spec names a base config, a search space over its dotted keys, the objective (a validation metric the
config logs; higher is better) and Optuna's sampler and pruner. Each trial is an ordinary run folder,
``DIR/trial-NNN`` (train, then evaluate on the test split), so ``eval``, ``compare``, ``report`` and
``serve`` work on trials as on any run.

Workers share a study through Optuna's storage: ``sqlite:///DIR/sweep.db`` by default (one machine,
several workers), or any database URL Optuna takes (PostgreSQL, MySQL: every machine runs the same
command with the same ``--storage``). A worker records a heartbeat while it runs a trial; a trial whose
worker died (no heartbeat for the grace period) is failed and queued again with its parameters by
Optuna's retry callback, and the retry resumes the trial's run folder from its last checkpoint. A trial is
run by one worker at a time (the storage hands each waiting trial to one worker), and the command can be
rerun at any time: it continues the study until it holds ``trials`` finished trials.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import time
import zlib
from pathlib import Path
from typing import Any

from pathvqa.config import ExperimentConfig
from pathvqa.destinations import check_destination
from pathvqa.errors import PathVQAError
from pathvqa.runs import RunDir, metrics_file
from pathvqa.runtime.trackers import mlflow_uri, open_mlflow_store
from pathvqa.sweeps.spec import Spec, load_spec

log = logging.getLogger(__name__)
SPEC_FILE = "sweep.json"


def default_storage(out: Path) -> str:
    return f"sqlite:///{(out / 'sweep.db').resolve()}"


def open_study(spec: Spec, storage_url: str, create: bool = True):
    """The study on its storage (created on first use), with heartbeats and retries of dead workers' trials."""
    import warnings

    import optuna
    import sqlalchemy.exc

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # heartbeats and retries are marked experimental (since 2.8/2.9): said once in the docs, not per call
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    try:
        storage = _storage(spec, storage_url)
        if not create:
            return optuna.load_study(study_name=spec.name, storage=storage)
        return optuna.create_study(
            study_name=spec.name,
            storage=storage,
            direction="maximize",
            sampler=_sampler(spec),
            pruner=_pruner(spec),
            load_if_exists=True,
        )
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
        raise PathVQAError(f"cannot open the sweep storage {_safe(storage_url)}: {first[:300]}") from None
    except KeyError:
        raise PathVQAError(f"no sweep {spec.name!r} in {_safe(storage_url)}") from None


def _storage(spec: Spec, url: str, attempts: int = 6):
    """Optuna's RDB storage with heartbeats. Workers started together race to create its tables: the
    loser of that race (a unique-key clash, or SQLite's lock) tries again once the winner is done."""
    import optuna
    import sqlalchemy.exc

    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=_engine_kwargs(url),
                heartbeat_interval=spec.heartbeat_s,
                grace_period=3 * spec.heartbeat_s,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=3, inherit_intermediate_values=True
                ),
            )
        except sqlalchemy.exc.DBAPIError as err:
            racing = isinstance(err, sqlalchemy.exc.IntegrityError) or any(
                words in str(err) for words in ("locked", "already exists")
            )
            if not racing or attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def _engine_kwargs(url: str) -> dict:
    if url.startswith("sqlite"):  # workers on one machine share the file: wait for its lock, don't fail
        return {"connect_args": {"timeout": 60}}
    return {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}} if "postgres" in url else {}


def _safe(url: str) -> str:
    """A database URL without its password (it goes to logs and error lines)."""
    head, at, tail = url.rpartition("@")
    if not at or "://" not in head:
        return url
    scheme, _, credentials = head.partition("://")
    return f"{scheme}://{credentials.split(':')[0]}:***@{tail}"


def _sampler(spec: Spec):
    """Each worker's sampler draws from the spec's seed and its own process: workers seeded alike would
    propose the same parameters side by side (the trials of several workers interleave by timing, so a
    sweep with several is not reproducible anyway; each trial's parameters are in the study)."""
    import optuna

    seed = (spec.seed * 1_000_003 + zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode())) % 2**31
    if spec.sampler == "grid":
        return optuna.samplers.GridSampler({key: p.values for key, p in spec.space.items()}, seed=seed)
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(5, spec.trials))


def _pruner(spec: Spec):
    import optuna

    if spec.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)


def _counts(study) -> dict[str, int]:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    count = {state.name: sum(t.state == state for t in trials) for state in TrialState}
    count["finished"] = count["COMPLETE"] + count["PRUNED"]
    # failed trials that no retry replaced (diverged, no validation): a budget of failures, then stop
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    count["failed"] = sum(t.state == TrialState.FAIL and t.number not in retried for t in trials)
    return count


# ---- a worker ----------------------------------------------------------------------------------------------
class Worker:
    """Runs trials of one study until it holds ``trials`` finished ones; several may run at once, anywhere.

    The budget is exact: a worker claims a trial only under the study's lock (:class:`StudyLock`, held by
    the storage itself), where it fails stale trials (queueing their retries), then takes a waiting trial
    or, while finished + running + waiting trials are fewer than ``trials``, creates a new one. Nothing
    else creates trials, so however many workers start together the study ends with exactly ``trials``
    finished ones, and a trial is created only by the worker that runs it."""

    def __init__(self, spec: Spec, out: Path, storage_url: str, progress: bool = True):
        self.spec, self.out, self.storage_url, self.progress = spec, out, storage_url, progress
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.study = open_study(spec, storage_url)
        self.lock = StudyLock(spec.name, storage_url)
        base = spec.config()
        self.mlflow_uri = mlflow_uri(base, out)  # one store for all trials (the sweep folder's by default)
        if "mlflow" in base.train.report_to:  # created once, here, before trials log to it
            open_mlflow_store(self.mlflow_uri)

    def run(self) -> dict[str, int]:
        """Claim and run trials until the study holds ``trials`` finished ones; with none left to claim,
        watch the ones under way (a dead worker's trial comes back as a waiting retry, claimed here).
        A failed trial (diverged, no validation value) is replaced, up to ``trials`` failures a run."""
        give_up: int | None = None
        while True:
            trial, count = self.claim(give_up)
            give_up = count["failed"] + self.spec.trials if give_up is None else give_up
            if trial is not None:
                self.run_trial(trial)
            elif count["finished"] >= self.spec.trials or count["failed"] >= give_up:
                return count
            else:
                time.sleep(min(5, self.spec.heartbeat_s))  # the last trials run elsewhere: watch them

    def claim(self, give_up: int | None = None) -> tuple[Any, dict[str, int]]:
        """(a trial this worker now owns, or None; the counts it decided on), under the study's lock: a
        waiting trial (a retry) first, else a new one while finished + running + waiting < ``trials``."""
        import warnings

        import optuna
        from optuna.storages import fail_stale_trials

        with self.lock:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                fail_stale_trials(self.study)  # a dead worker's trial: failed, its retry queued
            count = _counts(self.study)
            taken = count["finished"] + count["RUNNING"] + count["WAITING"]
            failing = give_up is not None and count["failed"] >= give_up
            if count["WAITING"] or (taken < self.spec.trials and not failing):
                return self.study.ask(), count  # pops the waiting trial first, else creates one
            return None, count

    def run_trial(self, trial) -> None:
        """Run one claimed trial with a heartbeat and tell the study how it ended (as Optuna's optimize)."""
        import optuna
        from optuna.storages._heartbeat import get_heartbeat_thread

        state, value = optuna.trial.TrialState.FAIL, None
        with get_heartbeat_thread(trial._trial_id, self.study._storage):
            try:
                value = self.objective(trial)
                state = optuna.trial.TrialState.COMPLETE
            except optuna.TrialPruned as err:
                state = optuna.trial.TrialState.PRUNED
                log.info("trial %d pruned: %s", trial.number, err)
            except TrialFailed as err:
                log.warning("%s", err)
            except BaseException:
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
                raise
        try:
            self.study.tell(trial, value if state == optuna.trial.TrialState.COMPLETE else None, state=state)
        except optuna.exceptions.UpdateFinishedTrialError:  # its heartbeat went stale: failed, retried
            log.warning("trial %d was failed by the study (no heartbeat) and queued again", trial.number)
            return
        if state == optuna.trial.TrialState.COMPLETE:
            log.info("trial %d: %s = %.4f", trial.number, self.spec.objective, value)

    def objective(self, trial) -> float:
        import optuna

        frozen = self.study._storage.get_trial(trial._trial_id)
        number = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
        number = trial.number if number is None else number  # a retry continues its original's folder
        values = {key: p.suggest(trial, key) for key, p in self.spec.space.items()}
        run_dir = self.out / f"trial-{number:03d}"
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("worker", self.name)
        extra = [f"train.experiment={self.spec.name}", f"train.mlflow_uri={self.mlflow_uri}"]
        cfg = self.spec.config(values, extra)
        resume = run_dir.is_dir()  # a retry: fit resumes from the folder's last valid checkpoint, if any
        _log_worker(run_dir, self.name, trial.number)
        log.info(
            "trial %d%s: %s", trial.number, f" (retry of {number})" if number != trial.number else "", values
        )
        return self._train_and_evaluate(trial, cfg, run_dir, resume, len(frozen.intermediate_values))

    def _train_and_evaluate(
        self, trial, cfg: ExperimentConfig, run_dir: Path, resume: bool, reported: int
    ) -> float:
        """Train (a retry resumes the folder; its original's reported validations are inherited, so the
        pruner's clock continues) and evaluate the best checkpoint; the objective is its validation value."""
        from pathvqa.evaluation.evaluate import run as evaluate
        from pathvqa.training.stages import TrainingDiverged, fit

        try:
            reporter = _reporter(trial, self.spec.objective, start=reported)
            summary = fit(cfg, run_dir, resume=resume, progress=self.progress, on_validate=reporter)
        except TrainingDiverged as err:
            raise TrialFailed(f"trial {trial.number} diverged: {err}") from None
        value = summary.get("best_value")
        if value is None or (isinstance(value, float) and math.isnan(value)):
            raise TrialFailed(f"trial {trial.number}: no validation value for {cfg.train.best_metric}")
        if self.spec.evaluate:
            metrics = evaluate(
                out=RunDir(run_dir).eval_dir(), checkpoint_dir=str(run_dir), progress=self.progress
            )
            for key in ("closed_accuracy", "open_exact_match", "exact_match"):
                if isinstance(metrics.get(key), float):
                    trial.set_user_attr(f"test_{key}", metrics[key])
        return float(value)


class StudyLock:
    """Mutual exclusion over one study, for the claim of a trial: held by the storage, so it is released
    when a worker dies. PostgreSQL: a session advisory lock; MySQL: a named lock; SQLite (one machine):
    an exclusive ``flock`` on a file beside the database. Re-entrant for nothing: hold it briefly."""

    def __init__(self, study_name: str, url: str):
        self.url = url
        key = f"pathvqa-sweep:{study_name}"
        self.key = zlib.crc32(key.encode())  # advisory locks are keyed by a number
        self.name = key[:64]
        self._held: Any = None
        self.kind = "sqlite" if url.startswith("sqlite") else "postgresql" if "postgres" in url else ""
        self.kind = self.kind or ("mysql" if url.startswith("mysql") else "")
        if not self.kind:
            scheme = url.split(":", 1)[0]
            raise PathVQAError(f"--storage {scheme}: sweeps run on SQLite, PostgreSQL or MySQL")
        if self.kind != "sqlite":
            import sqlalchemy

            self.engine = sqlalchemy.create_engine(url, **_engine_kwargs(url))

    def __enter__(self) -> StudyLock:
        if self.kind == "sqlite":
            import fcntl

            path = Path(self.url.removeprefix("sqlite:///") + ".lock")
            self._held = path.open("a")
            fcntl.flock(self._held, fcntl.LOCK_EX)
            return self
        from sqlalchemy import text

        self._held = self.engine.connect()
        sql = "SELECT pg_advisory_lock(:k)" if self.kind == "postgresql" else "SELECT GET_LOCK(:n, -1)"
        self._held.execute(text(sql), {"k": self.key, "n": self.name})
        self._held.commit()
        return self

    def __exit__(self, *exc) -> None:
        held, self._held = self._held, None
        if self.kind == "sqlite":
            held.close()  # closing the file releases its flock
            return
        from sqlalchemy import text

        sql = "SELECT pg_advisory_unlock(:k)" if self.kind == "postgresql" else "SELECT RELEASE_LOCK(:n)"
        try:
            held.execute(text(sql), {"k": self.key, "n": self.name})
            held.commit()
        finally:
            held.close()


class TrialFailed(PathVQAError):
    """A trial that ran but gave no objective (diverged, nothing validated): recorded as failed."""


def _reporter(trial, objective: str, start: int = 0):
    """Feed each validation of the objective to the pruner; stop the trial when it says so."""
    seen = {"n": start}

    def report(label: str, step: int, metrics: dict) -> None:
        import optuna

        value = metrics.get(objective)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return
        trial.report(float(value), seen["n"])  # the n-th validation: the same clock in every trial
        seen["n"] += 1
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at {label} step {step} ({value:.4f})")

    return report


def _log_worker(run_dir: Path, worker: str, number: int) -> None:
    """Who ran this folder, when (``workers.jsonl``: one line per start, the proof no trial ran twice)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / "workers.jsonl").open("a") as f:
        f.write(json.dumps({"worker": worker, "trial": number, "started": time.time()}) + "\n")


def run_sweep(
    spec_path: str | Path,
    out: str | Path,
    trials: int | None = None,
    storage: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Check the spec and every config it makes, open the storage, then run trials (this worker's share)."""
    spec = load_spec(spec_path)
    if trials is not None:
        spec.trials = trials
    from pathvqa.training.stages import reads_of

    out = check_destination(out, reads=reads_of(spec.config(extra=[])))  # the dataset, a run it starts from
    url = storage or default_storage(out)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).parent.is_dir():
        if storage is not None:
            raise PathVQAError(f"--storage {url}: its folder does not exist")
        out.mkdir(parents=True, exist_ok=True)  # workers started together all make it
    worker = Worker(spec, out, url, progress)  # the storage answers before anything is written here
    out.mkdir(parents=True, exist_ok=True)
    (out / SPEC_FILE).write_text(json.dumps({"storage": _safe(url), **spec.to_json()}, indent=1))
    count = worker.run()
    if count["finished"] < spec.trials:
        log.warning(
            "sweep %s: %d trials failed (diverged or gave no validation value); it stopped with %d of %d "
            "finished: narrow the space and rerun to continue",
            spec.name,
            count["failed"],
            count["finished"],
            spec.trials,
        )
    return {"study": spec.name, "storage": _safe(url), **count}


# ---- what a sweep holds ------------------------------------------------------------------------------------
def locate(target: str | Path, out: str | Path | None, storage: str | None) -> tuple[Spec, str, Path]:
    """(spec, storage URL, sweep folder) from a sweep folder (its ``sweep.json``) or a spec and ``--out``."""
    target = Path(target)
    folder = target if target.is_dir() else Path(out) if out else None
    if folder is None or not (folder / SPEC_FILE).is_file():
        where = folder or target
        raise PathVQAError(
            f"{where}: not a sweep folder (no {SPEC_FILE}; run pathvqa sweep SPEC --out DIR first)"
        )
    saved = json.loads((folder / SPEC_FILE).read_text())
    url = storage or os.environ.get("PATHVQA_SWEEP_STORAGE") or saved["storage"]
    if "***" in url:
        raise PathVQAError(
            f"{folder}: its storage has a password: pass it again with --storage URL (or PATHVQA_SWEEP_STORAGE)"
        )
    return Spec.from_json(saved), url, folder


def open_sweep(target: str | Path, storage: str | None = None) -> tuple[Spec, Any]:
    """(spec, study) of a sweep folder: what ``status``, the report's trials and its pictures read."""
    spec, url, _ = locate(target, None, storage)
    return spec, open_study(spec, url, create=False)


def trial_rows(study) -> list[dict[str, Any]]:
    """One row per trial: number, state, objective value, parameters, run folder, the best marked."""
    import optuna

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value).number if complete else None
    rows = []
    for t in study.trials:
        retry_of = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t)
        rows.append(
            {
                "trial": t.number,
                "retry_of": retry_of,
                "state": t.state.name,
                "value": t.value,
                "params": dict(t.params),
                "run_dir": t.user_attrs.get("run_dir"),
                "worker": t.user_attrs.get("worker"),
                "best": t.number == best,
                **{k: v for k, v in t.user_attrs.items() if k.startswith("test_")},
            }
        )
    return rows


def status(target: str | Path, out: str | Path | None = None, storage: str | None = None) -> dict[str, Any]:
    spec, url, folder = locate(target, out, storage)
    study = open_study(spec, url, create=False)
    return {"study": spec.name, "objective": spec.objective, "trials_wanted": spec.trials,
            "folder": str(folder), "trials": trial_rows(study), **_counts(study)}  # fmt: skip


def status_table(result: dict[str, Any]) -> str:
    """The ``--status`` table (plain text)."""
    keys = sorted({k for row in result["trials"] for k in row["params"]})
    head = ["trial", "state", result["objective"], *keys, "run folder"]
    lines = [head]
    for row in result["trials"]:
        number = f"{row['trial']}" + (f" (retry of {row['retry_of']})" if row["retry_of"] is not None else "")
        value = "" if row["value"] is None else f"{row['value']:.4f}"
        params = [_short(row["params"].get(k)) for k in keys]
        lines.append(
            [("* " if row["best"] else "  ") + number, row["state"], value, *params, row["run_dir"] or ""]
        )
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    text = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines]
    done = f"{result['finished']} of {result['trials_wanted']} finished"
    return "\n".join([f"sweep {result['study']} ({done}; * best {result['objective']})", *text])


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else "" if value is None else str(value)


def trial_folders(study) -> list[str]:
    """The run folders of a sweep's completed, evaluated trials, in trial order."""
    rows = trial_rows(study)
    found = [r["run_dir"] for r in rows if r["state"] == "COMPLETE" and r["run_dir"]]
    return [f for f in dict.fromkeys(found) if metrics_file(RunDir(f).eval_dir()).is_file()]
