"""Faults beyond bad input, each through the real CLI in real processes: two runs into one --out,
a killed run's lock, a full disk (a small tmpfs) or a file-size limit (RLIMIT_FSIZE) while saving
checkpoints, prepared data or the prepare cache, the free-space warning at start, errors under
--num-processes, settings that would change silently, and DeepSpeed's import noise.

Every full-disk failure here comes from the kernel: nothing in lmctl is patched.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, corpus_text, newest_checkpoint_step, write_prepared
from tests.fs_faults import (
    assert_unchanged,
    file_size_limit,
    fill,
    mount_tmpfs,
    tree_hashes,
    unmount_all,
)

TRAIN = ["train", "--model", "gpt2", "--from-scratch", "--preset", "tiny", "--block-size", "32", "--batch-size", "2",
         "--eval-every", "0", "--quiet"]  # fmt: skip


def lmctl(*args: str, env: dict[str, str] | None = None, preexec=None, timeout: int = 300, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lmctl", *args], capture_output=True, text=True, timeout=timeout, preexec_fn=preexec,
        env={**os.environ, "PYTHONPATH": str(REPO), "LMCTL_DEBUG": "", **(env or {})}, cwd=cwd,
    )  # fmt: skip


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lmctl", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "LMCTL_DEBUG": "", **(env or {})},
    )  # fmt: skip


def one_error_line(stderr: str) -> str:
    """The contract: no traceback, exactly one error line, and it is the last line."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr
    return errors[0]


def wait_for(condition, timeout: float = 240, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def prepared(tmp_path, tokenizer_for) -> Path:
    text = corpus_text(20_000)
    return write_prepared(tmp_path / "data", tokenizer_for("causal"), "causal", text)


@pytest.fixture
def mounts():
    yield
    unmount_all()


# --- 1. one writer per run ------------------------------------------------------------------------


def test_a_second_run_into_the_same_out_is_refused_while_the_first_trains(tmp_path, prepared):
    out = tmp_path / "run"
    first = start(*TRAIN, "--train", str(prepared), "--out", str(out), "--max-steps", "100000", "--save-every", "1000")
    try:
        wait_for(lambda: (out / "run.json").is_file() or first.poll() is not None, what="the first run to start")
        assert first.poll() is None, first.communicate()
        owner = json.loads((out / ".lmctl.lock").read_text())
        assert owner["pid"] == first.pid and owner["host"] == socket.gethostname()

        second = lmctl(*TRAIN, "--train", str(prepared), "--out", str(out), "--max-steps", "5", "--seed", "7")
        assert second.returncode == 1
        line = one_error_line(second.stderr)
        assert f"pid {first.pid}" in line and "in use by another run" in line and str(out / ".lmctl.lock") in line
        assert first.poll() is None  # the first run goes on, untouched
    finally:
        first.send_signal(signal.SIGTERM)  # saves a checkpoint and ends
        first.communicate(timeout=240)
    assert first.returncode == 143
    assert not (out / ".lmctl.lock").exists()  # released on the way out
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "SIGTERM" and record["config"]["seed"] != 7  # only the first run's record


def test_a_killed_runs_lock_is_taken_over_and_resume_auto_goes_on(tmp_path, prepared):
    out = tmp_path / "run"
    args = [*TRAIN, "--train", str(prepared), "--out", str(out), "--max-steps", "100000", "--save-every", "3"]
    first = start(*args)
    try:
        wait_for(lambda: newest_checkpoint_step(out) >= 3 or first.poll() is not None, what="the first checkpoint")
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate()
    assert json.loads((out / ".lmctl.lock").read_text())["pid"] == first.pid  # left behind by the kill

    # On a busy machine the first run may have written more than step 3 before the kill landed.
    killed_at = newest_checkpoint_step(out)
    second = start(*args, "--resume", "auto")
    try:
        # Resumed past the killed run's checkpoint: a new one is written.
        wait_for(lambda: newest_checkpoint_step(out) > killed_at or second.poll() is not None,
                 what="the resumed run's next checkpoint")  # fmt: skip
        assert second.poll() is None
        assert json.loads((out / ".lmctl.lock").read_text())["pid"] == second.pid
    finally:
        second.send_signal(signal.SIGTERM)
        _, stderr = second.communicate(timeout=240)
    assert second.returncode == 143, stderr
    notes = [line for line in stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and f"pid {first.pid}" in notes[0] and "taking it over" in notes[0], stderr
    assert "Traceback" not in stderr
    assert newest_checkpoint_step(out) > killed_at >= 3 and not (out / ".lmctl.lock").exists()


# --- 2. full disk ---------------------------------------------------------------------------------


def limited(kind: str, root: Path, size: int) -> str:
    """Make ``root`` a place where writes run out: a tmpfs of ``size`` bytes (root only; anyone
    else falls back to the rlimit case), or an ordinary directory whose child processes get a
    file-size limit (``file_size_limit``).  Returns the kind used."""
    if kind == "tmpfs" and mount_tmpfs(root, size):
        return "tmpfs"
    root.mkdir(parents=True, exist_ok=True)
    return "rlimit"


# The default suite runs one kind (a real full disk where it can); -m slow adds the other for root.
KINDS = [pytest.param("tmpfs"), pytest.param("rlimit", marks=pytest.mark.slow)]


@pytest.mark.parametrize("kind", KINDS)
def test_a_full_disk_during_a_checkpoint_save_keeps_the_last_good_one(tmp_path, prepared, kind, mounts):
    disk = tmp_path / "disk"
    kind = limited(kind, disk, 8 << 20)
    out = disk / "run"
    args = [*TRAIN, "--train", str(prepared), "--out", str(out), "--max-steps", "6", "--save-every", "2", "--keep-last", "5"]
    made = lmctl(*args)
    assert made.returncode == 0, made.stderr
    size = sum(f.stat().st_size for f in (out / "checkpoints" / "step-2").iterdir())
    # As if the run had stopped after its first checkpoint: resuming writes step-4 next (a finished
    # run also checkpoints its last step, so that one goes too).
    for later in ("step-4", "step-6"):
        subprocess.run(["rm", "-rf", str(out / "checkpoints" / later)], check=True)
    from lmctl.core.run_dir import remove_final_model

    remove_final_model(out)  # a run stopped at step 2 has no final model yet
    before = tree_hashes(out)

    if kind == "tmpfs":
        filler = fill(disk, leave=size // 3)
        failed = lmctl(*args, "--resume", "auto")
    else:
        filler = None
        failed = lmctl(*args, "--resume", "auto", preexec=file_size_limit(size // 4))
    assert failed.returncode == 1, failed.stderr
    line = one_error_line(failed.stderr)
    reason = "no space left on device" if kind == "tmpfs" else "file-size limit"
    for needle in ("could not save the checkpoint of step 4", reason, "step 2", "is intact", "A checkpoint needs about",
                   "--resume auto"):  # fmt: skip
        assert needle in line, (needle, line)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-2"]  # the partial one is gone
    # Nothing saved before changed; run.json and metrics.jsonl belong to the resumed run.
    assert_unchanged(before, tree_hashes(out), ignore=("run.json", "metrics.jsonl"))

    if filler is not None:
        filler.unlink()
    resumed = lmctl(*args, "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr
    assert (out / "checkpoints" / "step-4" / "trainer_state.json").is_file()


@pytest.mark.parametrize("kind", KINDS)
def test_a_full_disk_during_prepare_keeps_the_earlier_output(tmp_path, tokenizer_for, kind, mounts):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(corpus_text(300_000), encoding="utf-8")
    disk = tmp_path / "disk"
    kind = limited(kind, disk, 4 << 20)
    out = disk / "prepared"
    tokenizer = tmp_path / "tokenizer"
    tokenizer_for("causal").save_pretrained(tokenizer)
    args = ["prepare", "--train", str(corpus), "--tokenizer", str(tokenizer), "--block-size", "32", "--out", str(out)]
    small = tmp_path / "small.txt"
    small.write_text(corpus_text(20_000), encoding="utf-8")
    made = lmctl(*args[:2], str(small), *args[3:])
    assert made.returncode == 0, made.stderr
    before = tree_hashes(disk)
    if kind == "tmpfs":
        fill(disk, leave=64 << 10)
        failed = lmctl(*args, "--force")
    else:
        failed = lmctl(*args, "--force", preexec=file_size_limit(64 << 10))
    assert failed.returncode == 1, failed.stderr
    line = one_error_line(failed.stderr)
    assert "could not write the prepared data" in line and "partial output is removed" in line, line
    assert not [p for p in disk.iterdir() if ".tmp-" in p.name]
    after = tree_hashes(disk)
    assert_unchanged(before, after)  # --force replaces only after a complete write

    # The implicit prepare of `lmctl train` into the cache: the same care, and a hint to move it.
    cache = disk / "cache"
    env = {"LMCTL_CACHE": str(cache)}
    if kind == "tmpfs":
        trained = lmctl(*TRAIN, "--train", str(corpus), "--tokenizer", str(tokenizer), "--out", str(tmp_path / "run"), env=env)
    else:
        trained = lmctl(*TRAIN, "--train", str(corpus), "--tokenizer", str(tokenizer), "--out", str(tmp_path / "run"),
                        env=env, preexec=file_size_limit(64 << 10))  # fmt: skip
    assert trained.returncode == 1, trained.stderr
    line = one_error_line(trained.stderr)
    assert "could not write the prepared data" in line and "LMCTL_CACHE" in line, line
    prepared_root = cache / "prepared"
    assert not prepared_root.exists() or not any(prepared_root.iterdir()), list(prepared_root.iterdir())


def test_little_free_space_is_warned_about_at_start(tmp_path, prepared, mounts):
    if not mount_tmpfs(tmp_path / "disk", 1 << 20):
        pytest.skip("needs root to mount a small tmpfs (a free-space figure cannot be limited otherwise)")
    out = tmp_path / "disk" / "run"
    done = lmctl(*TRAIN, "--train", str(prepared), "--out", str(out), "--max-steps", "1", "--save-every", "1", "--keep-last", "3")
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, done.stderr
    assert "free under" in warnings[0] and "--keep-last 3" in warnings[0] and "4 checkpoint(s)" in warnings[0]


# --- 4. settings that would change silently -------------------------------------------------------


def cli(*args: str):
    """In-process through the real CLI (faster than a process where no process boundary matters)."""
    from typer.testing import CliRunner

    from lmctl.cli.app import app

    result = CliRunner().invoke(app, list(args), env={"LMCTL_DEBUG": ""})
    result.returncode = result.exit_code
    return result


def test_generate_past_the_models_positions_says_what_happens(tiny_model_dir):
    done = cli("generate", "--model", str(tiny_model_dir("causal")), "hello", "--max-new-tokens", "100", "--seed", "0")
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "runs past the model's 64 positions" in warnings[0] and "sliding window" in warnings[0]


def test_eval_on_a_few_tokens_warns_how_many_predictions_it_rests_on(tmp_path, tiny_model_dir):
    data = tmp_path / "one.txt"
    data.write_text("the", encoding="utf-8")
    done = cli("eval", "--model", str(tiny_model_dir("causal")), "--data", str(data), "--json")
    assert done.returncode == 0, done.stderr
    count = json.loads(done.stdout.splitlines()[0])["tokens"]
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and f"rest on {count} prediction" in warnings[0], done.stderr


# --- 6. errors under --num-processes --------------------------------------------------------------


@pytest.mark.multiprocess
def test_an_error_every_process_hits_is_reported_once(tmp_path, prepared):
    done = lmctl(*TRAIN, "--train", str(prepared), "--out", str(tmp_path / "run"), "--num-processes", "2",
                 "--model-config", "n_embd=65", timeout=600)  # fmt: skip
    assert done.returncode == 2, done.stderr
    line = one_error_line(done.stderr)
    assert "n_embd=65" in line and "--model-config" in line
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr  # no launcher lines, no second rank
    assert not (tmp_path / "run" / ".lmctl.lock").exists()


@pytest.mark.multiprocess
def test_under_an_external_launcher_only_the_first_failing_process_prints(tmp_path, prepared):
    """torchrun (what `accelerate launch` runs): the launcher's own summary follows, but lmctl's
    error line appears once, not once per process."""
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "lmctl",
         *TRAIN, "--train", str(prepared), "--out", str(tmp_path / "run"), "--model-config", "n_embd=65"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO), "LMCTL_DEBUG": ""},
    )  # fmt: skip
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "n_embd=65" in errors[0], done.stderr


# --- 8. third-party import noise ------------------------------------------------------------------


@pytest.mark.slow
def test_deepspeed_installed_prints_nothing_of_its_own(tmp_path, tiny_model_dir, prepared):
    """A venv that sees this one's packages (CPU torch included) plus real DeepSpeed, installed
    with --no-build-isolation so that its build uses that torch instead of fetching another."""
    import sysconfig

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    # pip sees the packages of this environment as installed, so DeepSpeed's build and its
    # requirements use this CPU torch (--no-build-isolation) instead of downloading another.
    Path(site, "base-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-build-isolation", "deepspeed"],
                               capture_output=True, text=True, timeout=1200)  # fmt: skip
    if installed.returncode != 0:
        pytest.skip(f"DeepSpeed could not be installed here: {installed.stderr.strip().splitlines()[-1:]}")
    probe = subprocess.run([str(python), "-c", "import deepspeed"], capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr
    assert "Setting accelerator to CPU" in probe.stdout + probe.stderr  # what DeepSpeed says on import (stdout)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(python), "-m", "lmctl", *args], capture_output=True, text=True, timeout=600,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=tmp_path)  # fmt: skip

    out = tmp_path / "run"
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(corpus_text(20_000), encoding="utf-8")
    commands = [
        ["--help"],
        ["plugins", "list"],
        ["prepare", "--train", str(corpus), "--tokenizer", str(tiny_model_dir("causal")), "--block-size", "32", "--out", str(tmp_path / "p")],
        [*TRAIN, "--train", str(prepared), "--out", str(out), "--max-steps", "2", "--save-every", "1"],
        ["eval", "--model", str(out), "--data", str(prepared)],
        ["generate", "--model", str(out), "hello", "--max-new-tokens", "5"],
        ["export", str(out / "checkpoints" / "step-1"), "--out", str(tmp_path / "exported")],
    ]  # fmt: skip
    for args in commands:
        done = run(*args)
        assert done.returncode == 0, (args, done.stderr)
        for noise in ("real_accelerator", "Setting accelerator", "[WARNING]", "DeepSpeed"):
            assert noise not in done.stderr + done.stdout, (args, done.stderr)


def test_run_lock_rules(tmp_path, monkeypatch):
    """The lock's rules on their own: re-entrant in one process, a dead owner on this host taken
    over with a note, another host's lock refused, only rank 0 and no launched worker holds it."""
    from lmctl.core import run_lock

    out = tmp_path / "run"
    lock = out / ".lmctl.lock"
    with run_lock.run_lock(out, command="outer"):
        with run_lock.run_lock(out, command="inner"):  # quickstart -> train
            assert json.loads(lock.read_text())["command"] == "outer"
        assert lock.exists()
    assert not lock.exists()
    assert not out.exists()  # the run created --out and wrote nothing: no empty directory is left
    out.mkdir()

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    lock.write_text(json.dumps({"pid": gone.pid, "host": socket.gethostname(), "started": time.time(), "command": "lmctl train"}))
    notes: list[str] = []
    with run_lock.run_lock(out, note=notes.append):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert len(notes) == 1 and f"pid {gone.pid}" in notes[0] and "taking it over" in notes[0]

    lock.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "started": 0}))  # alive
    with pytest.raises(run_lock.RunLockedError, match="in use by another run"):
        run_lock.acquire(out)
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": 0}))
    with pytest.raises(run_lock.RunLockedError, match=r"host elsewhere.*delete .*\.lmctl\.lock"):
        run_lock.acquire(out)
    assert json.loads(lock.read_text())["host"] == "elsewhere"  # a refused run leaves it alone

    lock.unlink()
    monkeypatch.setenv("RANK", "1")
    with run_lock.run_lock(out):
        assert not lock.exists()  # rank 0 holds it, not this one
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv(run_lock.HELD_ENV, "1")
    with run_lock.run_lock(out):
        assert not lock.exists()  # the launching process holds it


def test_a_dead_unreaped_owner_is_stale(tmp_path):
    """A SIGKILLed run whose parent is gone too stays a zombie until init reaps it (not at once in a
    container): it writes nothing any more, so its lock is taken over like that of any dead run."""
    from lmctl.core import run_lock

    out = tmp_path / "run"
    out.mkdir()
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])  # ended, not waited for: a zombie
    try:
        deadline = time.time() + 30
        while not run_lock._zombie(zombie.pid) and time.time() < deadline:
            time.sleep(0.05)
        assert run_lock._zombie(zombie.pid) and not run_lock._pid_alive(zombie.pid)
        (out / ".lmctl.lock").write_text(json.dumps({"pid": zombie.pid, "host": socket.gethostname(), "started": 0}))
        notes: list[str] = []
        with run_lock.run_lock(out, note=notes.append):
            assert json.loads((out / ".lmctl.lock").read_text())["pid"] == os.getpid()
        assert len(notes) == 1 and "taking it over" in notes[0]
    finally:
        zombie.wait()
    assert not run_lock._zombie(os.getpid()) and run_lock._pid_alive(os.getpid())


def test_machines_other_than_0_take_no_lock_and_need_no_checkpoint_of_their_own(tmp_path, monkeypatch):
    """--num-machines without a shared filesystem: only machine 0's --out holds the run (DDP), so
    machine 1's stays empty (no lock file, even after a SIGKILL) and its early checks do not refuse
    --resume auto for want of a checkpoint that machine 0 holds (it would leave machine 0 waiting
    at the rendezvous).  Machine 0 keeps every check of a single machine."""
    from lmctl.core import run_lock
    from lmctl.core.run_dir import check_new_run_dir
    from lmctl.errors import UsageError
    from lmctl.workflows import preflight
    from lmctl.workflows.train.config import TrainConfig

    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv(run_lock.HELD_ENV, raising=False)
    machine0, machine1 = tmp_path / "machine0", tmp_path / "machine1"
    machine1.mkdir()
    with run_lock.run_lock(machine1, machine_rank=1):
        assert list(machine1.iterdir()) == []
    assert machine1.is_dir() and list(machine1.iterdir()) == []  # neither a lock nor a removed --out
    with run_lock.run_lock(machine0, machine_rank=0):
        assert (machine0 / ".lmctl.lock").is_file()
    assert not run_lock.should_hold(1) and run_lock.should_hold(0)

    def config(rank: int, out: Path, **settings) -> TrainConfig:
        return TrainConfig(train=["data"], out=str(out), num_machines=2, machine_rank=rank, **settings)

    preflight._check_out(config(1, machine1, resume="auto"))  # machine 0 finds the checkpoint and sends it
    with pytest.raises(UsageError, match="--resume auto: no checkpoint in"):
        preflight._check_out(config(0, machine0, resume="auto"))
    # Only machine 0 looks at locks (its main process holds the run's); a new run on machine 0 does.
    (machine1 / ".lmctl.lock").write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "started": 0}))
    check_new_run_dir(machine1, resume=None, overwrite=False, machine_rank=1)
    with pytest.raises(run_lock.RunLockedError, match="in use by another run"):
        check_new_run_dir(machine1, resume=None, overwrite=False, machine_rank=0)
