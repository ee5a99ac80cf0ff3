"""Whether ``pathvqa sweep --trials N`` holds exactly N trials when several workers start in the same second.

Each round starts W real ``pathvqa sweep`` processes at once on a fresh sweep (blip-tiny on a small
synthetic set, 2 training steps a trial, no test evaluation), waits for all of them and reads the study
back: finished trials, trials of any state, distinct parameter sets, each worker's exit status.

    python scripts/sweep_budget.py --rounds 10 --out runs/budget-sqlite
    python scripts/sweep_budget.py --rounds 5 --storage postgresql+psycopg://user@host/db --out runs/budget-pg

Prints one line per round and a summary; exits 1 when any round held another number of trials.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

from pathvqa.sweeps import study as sweep


def write_spec(folder: Path, data: Path, trials: int, name: str) -> Path:
    spec = {
        "base": "configs/blip_tiny.yaml",
        "name": name,
        "overrides": [
            f"data.dataset={data}",
            "model.hidden_size=32",
            "model.num_layers=1",
            "model.image_size=32",
            "train.threads=1",
            "train.batch_size=8",
            "data.eval_samples=16",
            "eval.max_new_tokens=4",
            "train.max_steps=2",
            "train.eval_every=2",
        ],
        "space": {"train.lr": {"log_uniform": ["1e-4", "3e-3"]}, "train.warmup_ratio": [0.0, 0.1]},
        "objective": "exact_match",
        "trials": trials,
        "heartbeat_s": 2,
        "evaluate": False,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def one_round(spec: Path, out: Path, workers: int, trials: int, storage: str | None) -> dict:
    command = [
        sys.executable,
        "-m",
        "pathvqa",
        "sweep",
        str(spec),
        "--out",
        str(out),
        "--trials",
        str(trials),
    ]
    command += ["--storage", storage] if storage else []
    logs = [out.parent / f"worker-{i}.log" for i in range(workers)]
    start = time.time()
    procs = [subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT) for log in logs]
    codes = [proc.wait(timeout=900) for proc in procs]
    result = sweep.status(out, storage=storage)
    states = [t["state"] for t in result["trials"]]
    params = {json.dumps(t["params"], sort_keys=True) for t in result["trials"]}
    row = {
        "finished": result["finished"],
        "trials": len(states),
        "distinct_params": len(params),
        "exit_codes": codes,
        "seconds": round(time.time() - start, 1),
    }
    for code, log in zip(codes, logs, strict=True):
        if code:
            row.setdefault("failed_worker_log", log.read_text()[-2000:])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--storage", help="a database URL (default: each round's own SQLite file)")
    parser.add_argument("--out", type=Path, default=Path("runs/sweep-budget"))
    args = parser.parse_args()
    data = args.out / "data"
    if not data.is_dir():
        subprocess.run(
            [sys.executable, "-m", "pathvqa", "synth", "--out", str(data), "--train", "64", "--validation",
             "16", "--test", "16"],
            check=True,
        )  # fmt: skip
    stamp = time.strftime("%Y%m%d-%H%M%S")
    exact = 0
    for number in range(args.rounds):
        name = f"budget-{stamp}-{number}"  # one study per round, also on a shared database
        spec = write_spec(args.out / name, data, args.trials, name)
        row = one_round(spec, args.out / name / "sweep", args.workers, args.trials, args.storage)
        good = row["finished"] == row["trials"] == row["distinct_params"] == args.trials
        good = good and not any(row["exit_codes"])
        exact += good
        print(f"round {number}: {json.dumps(row)}{'' if good else '  <-- NOT EXACT'}", flush=True)
    where = "SQLite" if not args.storage else sweep._safe(args.storage)
    print(
        f"{exact} of {args.rounds} rounds exact ({args.workers} workers started together, --trials "
        f"{args.trials}, {where})"
    )
    sys.exit(0 if exact == args.rounds else 1)


if __name__ == "__main__":
    main()
