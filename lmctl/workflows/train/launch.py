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

from lmctl.errors import LmctlError
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


def launch_processes(config: TrainConfig) -> TrainResult:
    """``--num-processes N`` (and ``--num-machines M``): re-run this training under N processes on
    this machine, M machines in all (torch's elastic launcher on CPU, ``accelerate launch`` where
    GPUs exist), then read back the result.  Every machine runs the same command with its own
    ``--machine-rank``; they meet at ``--main-process-ip:--main-process-port``."""
    import subprocess
    import tempfile

    import torch

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = dataclasses.replace(config, num_processes=1).to_dict()
    for name in ("train", "validation"):  # relative to here, not to the settings file's directory
        settings[name] = [str(Path(v).resolve()) if Path(v).exists() else v for v in settings[name]]
    # The settings travel in a temporary file outside --out, which on machines other than 0 stays empty.
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="lmctl-launch-", delete=False) as handle:
        json.dump(settings, handle)
        config_path = handle.name
    per_machine, machines = config.num_processes, config.num_machines
    try:
        if torch.cuda.is_available():
            launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
                        "--num_processes", str(per_machine * machines), "--num_machines", str(machines)]  # fmt: skip
            if machines > 1:
                launcher += ["--machine_rank", str(config.machine_rank), "--main_process_ip", str(config.main_process_ip),
                             "--main_process_port", str(config.main_process_port)]  # fmt: skip
        elif machines > 1:
            launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(machines), "--node_rank",
                        str(config.machine_rank), "--master_addr", str(config.main_process_ip), "--master_port",
                        str(config.main_process_port), "--nproc_per_node", str(per_machine)]  # fmt: skip
        else:
            launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(per_machine)]
        command = [*launcher, "-m", "lmctl", "train", "--config", config_path]
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // per_machine)))
        env["LMCTL_ASKED_WORLD_SIZE"] = str(per_machine * machines)
        completed = subprocess.run(command, env=env)
        if completed.returncode != 0:
            what = f"{per_machine}-process run" if machines == 1 else f"run on machine {config.machine_rank}"
            raise LmctlError(f"the {what} failed (exit code {completed.returncode}); see its output above")
    finally:
        os.unlink(config_path)
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
