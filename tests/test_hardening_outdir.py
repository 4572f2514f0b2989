"""Issue 19, the output folder: one process per --out (a lock naming its
holder, recovered after a kill), never a file replaced that mtlkit did not
write, files with the permissions a plain open gives, full-disk errors naming
the file, and the temporary files of a killed write cleaned up."""

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from mtlkit.errors import MtlkitError
from mtlkit.utils import io as mio
from mtlkit.utils import runlock
from mtlkit.utils.outdir import RECORD_NAME, OutputExists, claim, written
from mtlkit.utils.runlock import LOCK_NAME, RunLock, RunLocked

HOLDER = textwrap.dedent("""
    import sys, time
    from mtlkit.utils.runlock import RunLock
    lock = RunLock(sys.argv[1], command="mtlkit train holder.yaml --out X").acquire()
    print("held", flush=True)
    time.sleep(120)
""")


def _hold(folder):
    """A child process holding the lock of ``folder`` (killed by the caller)."""
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


# -- the lock ---------------------------------------------------------------------------
def test_a_second_process_is_refused_naming_the_holder_and_a_killed_holder_frees_it(tmp_path):
    out = tmp_path / "run"
    child = _hold(out)
    try:
        with pytest.raises(RunLocked) as info:
            RunLock(out).acquire()
        message = str(info.value)
        assert message.startswith(f"--out {out} is in use by another mtlkit process: pid {child.pid} on host "
                                  f"{socket.gethostname()}, `mtlkit train holder.yaml --out X`, since 20")
        assert "\n" not in message
        assert runlock.holder(out)["pid"] == child.pid
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert (out / LOCK_NAME).exists()  # a kill leaves the file...
    assert runlock.holder(out) is None  # ...but not the lock
    with RunLock(out) as lock:  # a stale lock is taken over
        assert lock.held and json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (out / LOCK_NAME).exists()  # released: nothing left behind


def test_the_lock_nests_within_a_process_and_leaves_no_folder_it_created(tmp_path):
    out = tmp_path / "a" / "b"
    with RunLock(out) as outer:
        assert out.is_dir() and outer.held
        with RunLock(out) as inner:  # re-entrant: the command's own code may lock again
            assert inner.held
        assert (out / LOCK_NAME).exists()  # still held by the outer one
    assert not (tmp_path / "a").exists()  # created for the lock and left empty: removed
    (tmp_path / "keep").mkdir()
    with RunLock(tmp_path / "keep"):
        (tmp_path / "keep" / "result.txt").write_text("x")
    assert sorted(os.listdir(tmp_path / "keep")) == ["result.txt"]  # a written folder stays


def test_disabled_lock_is_a_no_op(tmp_path):
    with RunLock(tmp_path / "x", enabled=False) as lock:
        assert not lock.held
    assert not (tmp_path / "x").exists()


def test_the_exclusive_file_fallback_refuses_a_live_holder_and_takes_a_dead_ones(tmp_path, monkeypatch):
    """Where flock is unavailable the file itself is the lock: a holder still
    running on this host keeps it, a killed one's is recovered."""
    monkeypatch.setattr(runlock, "fcntl", None)
    out = tmp_path / "run"
    out.mkdir()
    live = {"pid": os.getppid(), "host": socket.gethostname(), "command": "mtlkit eval x", "started": "t"}
    (out / LOCK_NAME).write_text(json.dumps(live))
    with pytest.raises(RunLocked, match=rf"pid {os.getppid()} on host .*`mtlkit eval x`"):
        RunLock(out).acquire()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / LOCK_NAME).write_text(json.dumps(dict(live, pid=dead.pid)))
    with RunLock(out) as lock:
        assert lock.held and json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (out / LOCK_NAME).exists()


# -- what mtlkit wrote -------------------------------------------------------------------
def test_claim_refuses_files_mtlkit_did_not_write_and_lets_a_command_rewrite_its_own(tmp_path):
    (tmp_path / "config.yaml").write_text("mine")
    with pytest.raises(OutputExists, match=r"already holds config.yaml, which `mtlkit train` would replace: "
                                           r"mtlkit did not write it"):
        claim(tmp_path, ["config.yaml", "last.pt"], "train")
    assert (tmp_path / "config.yaml").read_text() == "mine" and not (tmp_path / RECORD_NAME).exists()
    claim(tmp_path, ["metrics.json"], "eval")
    (tmp_path / "metrics.json").write_text("{}")
    claim(tmp_path, ["metrics.json"], "eval")  # a rerun replaces its own output
    with pytest.raises(OutputExists, match="it was written by `mtlkit eval`"):
        claim(tmp_path, ["metrics.json"], "train")
    assert written(tmp_path) == {"metrics.json": "eval"}


# -- the root, permissions, full disks, temporary files -----------------------------------
@pytest.mark.parametrize("path", ["/", "//", "/.", ""])
def test_out_may_not_be_the_root_or_empty(path):
    with pytest.raises(MtlkitError, match="root folder|is empty"):
        mio.check_out_dir(path)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_get_the_permissions_of_a_plain_open(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        with mio.atomic_write(tmp_path / "a.json") as handle:
            handle.write("{}")
        with open(tmp_path / "plain.txt", "w") as handle:
            handle.write("x")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "a.json").st_mode & 0o777 == mode
    assert os.stat(tmp_path / "plain.txt").st_mode & 0o777 == mode
    os.chmod(tmp_path / "a.json", 0o640)  # a replaced file keeps its mode, as open() would
    with mio.atomic_write(tmp_path / "a.json") as handle:
        handle.write("{}")
    assert os.stat(tmp_path / "a.json").st_mode & 0o777 == 0o640


def test_a_full_disk_names_the_file(tmp_path, monkeypatch, capsys):
    from mtlkit.cli import run_guarded

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(mio.os, "fsync", full)

    def write():
        with mio.atomic_write(tmp_path / "metrics.json") as handle:
            handle.write("{}")

    assert run_guarded(write) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'metrics.json'}: No space left on device\n"
    assert os.listdir(tmp_path) == []  # the temporary file is gone too


def test_a_full_disk_while_logging_names_metrics_jsonl(tmp_path):
    from mtlkit.engine.logger import RunLogger

    logger = RunLogger(str(tmp_path), tensorboard=False)

    class Full:
        def write(self, text):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def close(self):
            pass

    logger._file = Full()
    with pytest.raises(OSError) as info:
        logger.log({"iter": 1})
    assert info.value.filename == os.path.join(str(tmp_path), "metrics.jsonl")


def test_stale_temporary_files_of_a_killed_write_are_removed(tmp_path):
    from mtlkit.engine.checkpoint import save_checkpoint

    target = tmp_path / "last.pt"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = mio._host_tag()
    stale = tmp_path / f".last.pt.{host}.{dead.pid}.abcd1234.tmp"      # its writer is gone
    live = tmp_path / f".last.pt.{host}.{os.getpid()}.efgh5678.tmp"    # a write in progress
    legacy = tmp_path / ".last.pt.ijkl9012.tmp"                          # before temp names had pids
    other_host = tmp_path / ".last.pt.0badc0de.1.mnop3456.tmp"          # another machine's write
    mine = tmp_path / ".last.pt.notes.tmp"                               # not mtlkit's pattern
    for path in (stale, live, legacy, other_host, mine):
        path.write_bytes(b"x")
    old = time.time() - 2 * 3600
    os.utime(legacy, (old, old))
    save_checkpoint({"model": {}}, str(target))
    assert not stale.exists() and not legacy.exists()
    assert live.exists() and other_host.exists() and mine.exists()
    assert target.is_file()
    # a SIGKILL in the middle of a real write leaves a temp file that the next write removes
    code = textwrap.dedent(f"""
        import os, signal, torch
        from mtlkit.engine.checkpoint import save_checkpoint
        real = torch.save
        def save(obj, handle):
            handle.write(b"partial")
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save = save
        save_checkpoint({{"model": {{}}}}, {str(target)!r})
    """)
    child = subprocess.run([sys.executable, "-c", code])
    assert child.returncode == -signal.SIGKILL
    left = [n for n in os.listdir(tmp_path) if n.startswith(".last.pt.") and str(os.getpid()) not in n
            and n not in (other_host.name, mine.name)]
    assert len(left) == 1, left
    from mtlkit.engine.checkpoint import load_checkpoint

    load_checkpoint(str(target))  # opening the checkpoint cleans up too
    assert not (tmp_path / left[0]).exists()
