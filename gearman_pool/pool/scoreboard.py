"""Each child's job state, in a small memory file shared by the child and the master.

A child updates its slot when a job starts and when it ends. The master reads the slot
once per loop step and before it replies to a status request. Unlike a message on the report
pipe, an update wakes no process, so the master costs no CPU per job. Apache httpd's
prefork MPM keeps its worker states in a "scoreboard" for the same reason.

The file is a memfd (an anonymous file in memory) where Linux has one, else an unlinked
temporary file. Its descriptor crosses the master's re-exec on reload, so the new master
image reads the slots of the children it adopts.

Writes follow the seqlock pattern: the child makes the sequence number odd, writes the
fields, then makes it even again. A read that finds an odd number, or a different number
after the fields, is retried, and after RETRIES failed attempts the master keeps the state
it read last.
"""

from __future__ import annotations

import dataclasses
import mmap
import os
import struct
import tempfile

# Sequence number, job start (time.monotonic(), 0.0 while idle), jobs done, handle length.
SEQUENCE = struct.Struct("=Q")
FIELDS = struct.Struct("=dQH")
FIELDS_OFFSET = SEQUENCE.size
HANDLE_OFFSET = FIELDS_OFFSET + FIELDS.size
# gearmand's handles read "H:<hostname>:<number>"; a longer handle is cut to this length
# in the slot, which only changes how status output names the job.
MAX_HANDLE = 512
SIZE = HANDLE_OFFSET + MAX_HANDLE
RETRIES = 100


@dataclasses.dataclass(frozen=True)
class JobState:
    """The contents of a slot: the running job's handle and start (None while idle), and
    the number of jobs done."""

    job_handle: str | None
    job_started_at: float | None
    jobs_done: int



class ScoreboardSlot:
    """One child's slot. The master creates it before fork() and keeps its descriptor.

    The master keeps two descriptors per slot: ``fd``, which it hands over across a
    re-exec, and the duplicate inside the mmap object.
    """

    def __init__(self, fd: int):
        self.fd = fd
        self.memory = mmap.mmap(fd, SIZE)
        self._sequence = SEQUENCE.unpack_from(self.memory, 0)[0]
        self._jobs_done = 0

    @classmethod
    def create(cls) -> ScoreboardSlot:
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("gearman_pool-scoreboard", os.MFD_CLOEXEC)
        else:
            fd, path = tempfile.mkstemp(prefix="gearman_pool-scoreboard-")
            os.unlink(path)
        try:
            os.ftruncate(fd, SIZE)
            return cls(fd)
        except BaseException:
            os.close(fd)
            raise

    def close(self) -> None:
        """Unmap the slot and close its descriptor; the child's own mapping stays valid."""
        self.memory.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def close_descriptor(self) -> None:
        """Close the descriptor that the master keeps, and keep the mapping for the child.

        CPython's mmap keeps a duplicate of the descriptor of its own, so a child keeps one
        descriptor of its slot open.
        """
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    # ---- the child's side --------------------------------------------------------

    def job_started(self, handle: bytes, started_at: float) -> None:
        handle = handle[:MAX_HANDLE]
        self._write(started_at, self._jobs_done, handle)

    def job_finished(self, jobs_done: int) -> None:
        self._jobs_done = jobs_done
        self._write(0.0, jobs_done, b"")

    def _write(self, started_at: float, jobs_done: int, handle: bytes) -> None:
        self._sequence += 1
        SEQUENCE.pack_into(self.memory, 0, self._sequence)
        FIELDS.pack_into(self.memory, FIELDS_OFFSET, started_at, jobs_done, len(handle))
        self.memory[HANDLE_OFFSET : HANDLE_OFFSET + len(handle)] = handle
        self._sequence += 1
        SEQUENCE.pack_into(self.memory, 0, self._sequence)

    # ---- the master's side -------------------------------------------------------

    def read(self) -> JobState | None:
        """Return the child's state, or None when every attempt overlapped a write."""
        # NOTE: the seqlock has no memory barriers of its own. It relies on x86-64 making
        # stores visible in program order. On a CPU with weaker ordering, a read may rarely
        # mix two updates, and the status then names the previous job's handle.
        for _ in range(RETRIES):
            before = SEQUENCE.unpack_from(self.memory, 0)[0]
            if before % 2:
                continue
            started_at, jobs_done, length = FIELDS.unpack_from(self.memory, FIELDS_OFFSET)
            handle = self.memory[HANDLE_OFFSET : HANDLE_OFFSET + min(length, MAX_HANDLE)]
            if SEQUENCE.unpack_from(self.memory, 0)[0] != before:
                continue
            if started_at == 0.0:
                return JobState(None, None, jobs_done)
            return JobState(handle.decode("utf-8", "replace"), started_at, jobs_done)
        return None
