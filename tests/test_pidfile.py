"""Unit tests of the master's pid file: atomic writes, stale files and ownership."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
import time

import pytest

from gearman_pool.pool import pidfile as pidfile_module
from gearman_pool.pool.pidfile import Pidfile, PidfileError

# Linux caps pid_max at 2**22 (PID_MAX_LIMIT on 64-bit), so no process has this pid.
UNUSED_PID = 2**22 + 1


def read_cmdline(pid: int) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as file:
        return file.read()


@pytest.fixture
def fake_pool_pid():
    """Start a `sleep` whose argv[0] is "gearman_pool_fake" and return its pid."""
    process = subprocess.Popen(["gearman_pool_fake", "30"], executable=shutil.which("sleep"))
    try:
        # Until execve() completes, /proc shows the forked Python or an empty cmdline.
        deadline = time.monotonic() + 5
        while not read_cmdline(process.pid).startswith(b"gearman_pool_fake"):
            assert time.monotonic() < deadline, "the helper sleep process did not start"
            time.sleep(0.001)
        yield process.pid
    finally:
        process.kill()
        process.wait()


@pytest.fixture
def path(tmp_path):
    return tmp_path / "pool.pid"


def test_create_writes_pid(path):
    Pidfile(str(path)).create(4321)

    assert path.read_text() == "4321\n"
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


def test_create_leaves_no_temporary_file(path):
    Pidfile(str(path)).create(4321)
    Pidfile(str(path)).create(4321)

    assert os.listdir(path.parent) == ["pool.pid"]


def test_create_uses_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    pidfile = Pidfile("pool.pid")

    assert pidfile.path == str(tmp_path / "pool.pid")


def test_fake_pool_cmdline(fake_pool_pid):
    assert read_cmdline(fake_pool_pid) == b"gearman_pool_fake\x0030\x00"


def test_create_rejects_running_pool(path, fake_pool_pid):
    path.write_text(f"{fake_pool_pid}\n")

    with pytest.raises(PidfileError) as raised:
        Pidfile(str(path)).create(os.getpid())

    message = str(raised.value)
    assert str(path) in message
    assert f"running gearman_pool process {fake_pool_pid}" in message
    assert path.read_text() == f"{fake_pool_pid}\n"
    assert os.listdir(path.parent) == ["pool.pid"]


def test_create_replaces_dead_pid(path):
    path.write_text(f"{UNUSED_PID}\n")

    Pidfile(str(path)).create(4321)

    assert path.read_text() == "4321\n"


def test_create_replaces_unrelated_process(path):
    parent = os.getppid()
    if b"gearman_pool" in read_cmdline(parent):
        pytest.skip(f"the parent process {parent} has gearman_pool in its command line")
    path.write_text(f"{parent}\n")

    Pidfile(str(path)).create(4321)

    assert path.read_text() == "4321\n"


def test_create_accepts_own_pid(path, fake_pool_pid):
    # After execv() on reload the master keeps its pid and finds its own file.
    path.write_text(f"{fake_pool_pid}\n")

    Pidfile(str(path)).create(fake_pool_pid)

    assert path.read_text() == f"{fake_pool_pid}\n"


@pytest.mark.parametrize(
    "content",
    [b"", b"not a pid\n", b"-5\n", b"12 34\n", b"\xff\xfe\x00garbage", b"99999999999999999999999\n"],
)
def test_create_replaces_garbage(path, content):
    path.write_bytes(content)

    Pidfile(str(path)).create(4321)

    assert path.read_text() == "4321\n"


def test_create_missing_directory(tmp_path):
    path = tmp_path / "missing" / "pool.pid"

    with pytest.raises(PidfileError) as raised:
        Pidfile(str(path)).create(4321)

    assert f"cannot write pid file {path}" in str(raised.value)


def test_create_unwritable_directory(tmp_path):
    directory = tmp_path / "read-only"
    directory.mkdir(mode=0o500)
    path = directory / "pool.pid"
    try:
        if os.access(directory, os.W_OK):
            pytest.skip("this user can write to a mode 0500 directory (root)")

        with pytest.raises(PidfileError) as raised:
            Pidfile(str(path)).create(4321)
    finally:
        directory.chmod(0o700)

    assert f"cannot write pid file {path}" in str(raised.value)
    assert os.listdir(directory) == []


def test_create_parent_not_directory(tmp_path):
    (tmp_path / "file").write_text("")
    path = tmp_path / "file" / "pool.pid"

    with pytest.raises(PidfileError) as raised:
        Pidfile(str(path)).create(4321)

    assert f"pid file {path}" in str(raised.value)
    assert "Not a directory" in str(raised.value)


def test_create_permission_denied(path, monkeypatch):
    # Root ignores directory modes, so the denied mkstemp() is simulated.
    def deny(**options):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(pidfile_module.tempfile, "mkstemp", deny)

    with pytest.raises(PidfileError) as raised:
        Pidfile(str(path)).create(4321)

    assert str(raised.value) == f"cannot write pid file {path}: Permission denied"


def test_create_disk_full(path, monkeypatch):
    def fail(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pidfile_module.os, "fsync", fail)

    with pytest.raises(PidfileError) as raised:
        Pidfile(str(path)).create(4321)

    assert str(raised.value) == f"cannot write pid file {path}: the disk is full"
    assert os.listdir(path.parent) == []


def test_create_directory_path(path):
    path.mkdir()

    with pytest.raises(PidfileError) as raised:
        Pidfile(str(path)).create(4321)

    assert f"pid file {path} exists and is not a regular file" in str(raised.value)


def test_create_fifo_path_does_not_block(path):
    os.mkfifo(path)

    with pytest.raises(PidfileError) as raised:
        Pidfile(str(path)).create(4321)

    assert "is not a regular file" in str(raised.value)


def test_create_logs_stale_pid(path, caplog):
    path.write_text("999999999\n")

    with caplog.at_level(logging.INFO):
        Pidfile(str(path)).create(4321)

    assert "Replacing stale pid file" in caplog.text
    assert path.read_text() == "4321\n"


def test_remove_own_pid(path):
    pidfile = Pidfile(str(path))
    pidfile.create(4321)

    pidfile.remove(4321)

    assert not path.exists()


def test_remove_keeps_other_pid(path):
    pidfile = Pidfile(str(path))
    path.write_text("1234\n")

    pidfile.remove(4321)

    assert path.read_text() == "1234\n"


def test_remove_missing_file(path):
    Pidfile(str(path)).remove(4321)

    assert not path.exists()


def test_remove_keeps_garbage(path):
    path.write_text("not a pid\n")

    Pidfile(str(path)).remove(4321)

    assert path.read_text() == "not a pid\n"
