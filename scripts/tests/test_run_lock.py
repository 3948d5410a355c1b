"""scripts/training.py::RunLock: one training per run folder; a stale lock is taken over."""
import json
import os
import subprocess
import sys
import time

import pytest

from scripts.common import UserError
from scripts.training import RunLock

HOLD = """
import sys, time
from scripts.training import RunLock
RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_a_second_process_is_refused_while_the_first_holds_the_folder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=rf"run is in use by process {holder.pid} .*train into another --out_dir"):
            RunLock(tmp_path / "run").acquire()
    finally:
        holder.kill()
        holder.wait()
    # killed: its lock stays behind, and is taken over with a note
    assert json.loads((tmp_path / "run" / "run.lock").read_text())["pid"] == holder.pid
    lock = RunLock(tmp_path / "run").acquire()
    assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    lock.release()
    assert not lock.path.exists()


def test_the_lock_goes_when_the_process_ends(tmp_path):
    code = "import sys; from scripts.training import RunLock; RunLock(sys.argv[1]).acquire(); sys.exit(130)"
    assert subprocess.run([sys.executable, "-c", code, str(tmp_path)]).returncode == 130
    assert not (tmp_path / "run.lock").exists()


def test_a_lock_of_this_process_or_an_unreadable_one_is_taken_over(tmp_path, capsys):
    first = RunLock(tmp_path).acquire()          # tests call main() twice in one process: no refusal
    second = RunLock(tmp_path).acquire()
    assert second.held and capsys.readouterr().err == ""
    second.release()
    first.release()
    (tmp_path / "run.lock").write_text("{half a json")
    RunLock(tmp_path).acquire().release()
    (tmp_path / "run.lock").write_text(json.dumps({"pid": 2 ** 22 + 99, "host": os.uname().nodename,
                                                   "command": "python train.py", "started": time.ctime()}))
    RunLock(tmp_path).acquire().release()
    assert "was left by process 4194403, which is gone; taking the run folder over" in capsys.readouterr().err


HOLD_CHECKPOINT = """
import sys, time
from scripts.training import RunLock
RunLock.for_checkpoint(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_two_runs_into_one_best_checkpoint_are_refused(tmp_path):
    """Different run folders, one --checkpoint: the second would overwrite the first's best model."""
    best = tmp_path / "checkpoints" / "best.pt"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_CHECKPOINT, str(best)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=rf"best.pt is in use by process {holder.pid} .*pass another --checkpoint"):
            RunLock.for_checkpoint(best).acquire()
    finally:
        holder.kill()
        holder.wait()
    lock = RunLock.for_checkpoint(best).acquire()     # the holder is gone: taken over
    lock.release()
    assert not lock.path.exists() and not list(best.parent.glob("*.pt"))
