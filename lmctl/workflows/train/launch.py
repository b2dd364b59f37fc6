"""Launching: several processes for one run (``--num-processes``), and signals (SIGINT/SIGTERM
save a checkpoint before the run ends)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from lmctl.errors import LmctlError, UsageError
from lmctl.workflows.train.config import TrainConfig
from lmctl.workflows.train.result import TrainResult


def install_signal_handlers(trainer: Any) -> dict[int, Any]:
    """SIGINT/SIGTERM: finish the current step, save a checkpoint, exit.  A second SIGINT aborts."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if trainer.stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        trainer.stop_signal = name

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    return previous


def restore_signal_handlers(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


# The pid of the lmctl process that started a launcher: the launcher stops when that process dies.
LAUNCHED_BY_ENV = "LMCTL_LAUNCHED_BY"


def launch_processes(config: TrainConfig) -> TrainResult:
    """``--num-processes N`` (and ``--num-machines M``): re-run this training under N processes on
    this machine, M machines in all (torch's elastic launcher on CPU, ``accelerate launch`` where
    GPUs exist), then read back the result.  Every machine runs the same command with its own
    ``--machine-rank``; they meet at ``--main-process-ip:--main-process-port``."""
    import contextlib
    import subprocess
    import tempfile

    import torch

    from lmctl.core.run_lock import HELD_ENV
    from lmctl.errors import ERROR_FILE_ENV

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = dataclasses.replace(config, num_processes=1).to_dict()
    for name in ("train", "validation"):  # relative to here, not to the settings file's directory
        settings[name] = [str(Path(v).resolve()) if Path(v).exists() else v for v in settings[name]]
    # The settings travel in a temporary file outside --out, which on machines other than 0 stays empty.
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="lmctl-launch-", delete=False) as handle:
        json.dump(settings, handle)
        config_path = handle.name
    error_file = config_path[: -len(".json")] + ".error"
    per_machine, machines = config.num_processes, config.num_machines
    try:
        kind = "accelerate" if torch.cuda.is_available() else "torchrun"
        if kind == "accelerate":
            launcher = ["--multi_gpu", "--num_processes", str(per_machine * machines), "--num_machines", str(machines)]
            if machines > 1:
                launcher += ["--machine_rank", str(config.machine_rank), "--main_process_ip", str(config.main_process_ip),
                             "--main_process_port", str(config.main_process_port)]  # fmt: skip
        elif machines > 1:
            launcher = ["--nnodes", str(machines), "--node_rank", str(config.machine_rank), "--master_addr",
                        str(config.main_process_ip), "--master_port", str(config.main_process_port),
                        "--nproc_per_node", str(per_machine)]  # fmt: skip
        else:
            launcher = ["--standalone", "--nproc_per_node", str(per_machine)]
        # Through quiet_launcher (below): a failing worker must not end in the launcher's own
        # traceback and log lines, once per worker.
        command = [sys.executable, "-m", "lmctl.workflows.train.launch", kind, *launcher, "-m", "lmctl", "train", "--config", config_path]
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // per_machine)))
        env["LMCTL_ASKED_WORLD_SIZE"] = str(per_machine * machines)
        env[HELD_ENV] = "1"  # this process holds --out for its workers
        env[ERROR_FILE_ENV] = error_file  # the first failing worker's error line, reported here once
        env[LAUNCHED_BY_ENV] = str(os.getpid())
        process = subprocess.Popen(command, env=env)
        try:
            returncode = process.wait()
        except BaseException:
            # SIGTERM or Ctrl-C here: pass it on and wait (the launcher hands it to the workers,
            # which save a checkpoint), so no worker outlives the lock this process holds.
            process.send_signal(signal.SIGTERM)
            process.wait()
            raise
        if returncode != 0:
            raise worker_error(error_file, per_machine * machines, returncode)
    finally:
        for path in (config_path, error_file):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    if config.machine_rank != 0:  # machine 0 writes the record; this machine's --out holds no state
        return TrainResult(out=out, steps=-1, total_steps=0)
    record = json.loads((out / "run.json").read_text())
    res = record.get("result", {})
    return TrainResult(
        out=out,
        steps=res.get("steps", 0),
        total_steps=res.get("total_steps", 0),
        final_train_loss=res.get("final_train_loss"),
        final_eval=res.get("final_eval"),
        best_eval_loss=res.get("best_eval_loss"),
        best_checkpoint=res.get("best_checkpoint"),
        interrupted=res.get("interrupted"),
        wall_seconds=res.get("wall_seconds", 0.0),
        tokens_per_s=res.get("tokens_per_s"),
    )


def worker_error(error_file: str, num_processes: int, returncode: int) -> LmctlError:
    """The first failing worker's one line (and its exit code), else the launcher's exit code."""
    try:
        code_text, line = Path(error_file).read_text(encoding="utf-8").split("\n", 1)
        code = int(code_text)
    except (OSError, ValueError):
        return LmctlError(f"the {num_processes}-process run failed (exit code {returncode}); see its output above")
    error = UsageError(line.strip()) if code == 2 else LmctlError(line.strip())
    error.exit_code = code
    return error


def quiet_launcher(argv: list[str]) -> int:
    """``python -m lmctl.workflows.train.launch torchrun|accelerate ARGS``: run torch's elastic
    launcher (or ``accelerate launch``) in this process with its log lines off, and turn a failed
    worker into that worker's exit code instead of the launcher's traceback (the worker reported
    its error itself)."""
    import logging
    import subprocess

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    stop_with_parent(os.environ.get(LAUNCHED_BY_ENV))
    for name in ("torch.distributed", "torch.distributed.elastic", "torch.distributed.run"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    kind, rest = argv[0], argv[1:]
    try:
        if kind == "accelerate":
            from accelerate.commands.launch import launch_command, launch_command_parser

            launch_command(launch_command_parser().parse_args(rest))
        else:
            from torch.distributed.run import main

            main(rest)
    except ChildFailedError as exc:
        _rank, failure = exc.get_first_failure()
        code = failure.exitcode
        return 128 - code if code < 0 else code or 1  # killed by a signal: the shell's 128 + N
    except subprocess.CalledProcessError as exc:  # accelerate's single-process launcher
        return exc.returncode or 1
    except SignalException as exc:  # the launcher has stopped its workers; no traceback
        return 128 + int(exc.sigval)
    return 0


def stop_with_parent(parent_pid: str | None) -> None:
    """Linux: have the kernel send this launcher SIGTERM when the lmctl process that started it dies,
    even by SIGKILL.  torch's launcher starts its workers in sessions of their own, so neither a
    SIGKILL of lmctl nor one of its process group reaches them: without this they would train on,
    unwatched, into an --out whose lock is then stale.  On SIGTERM the launcher stops its workers
    (SIGTERM: they finish the step and save a checkpoint; SIGKILL after 30 s).

    The death signal is set here, not in the workers: it fires when the *thread* that started a
    process ends, and torch's launcher does not promise which thread starts its workers; lmctl
    starts the launcher from its main thread, which lives until the run ends."""
    if parent_pid is None or not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1  # <linux/prctl.h>
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
    if str(os.getppid()) != parent_pid:  # lmctl died before the line above
        os.kill(os.getpid(), signal.SIGTERM)


if __name__ == "__main__":
    sys.exit(quiet_launcher(sys.argv[1:]))
