"""ScoreboardSlot: a child's job state shared with the master through a memory file."""

from __future__ import annotations

import os

import pytest

from gearman_pool.pool.scoreboard import MAX_HANDLE, SEQUENCE, JobState, ScoreboardSlot


@pytest.fixture
def slot():
    created = ScoreboardSlot.create()
    yield created
    created.close()


def test_new_slot_reads_idle(slot):
    assert slot.read() == JobState(None, None, 0)


def test_job_start_and_finish(slot):
    slot.job_started(b"H:host:1", 12.5)

    assert slot.read() == JobState("H:host:1", 12.5, 0)

    slot.job_finished(1)
    slot.job_started(b"H:host:2", 13.0)

    assert slot.read() == JobState("H:host:2", 13.0, 1)

    slot.job_finished(2)

    assert slot.read() == JobState(None, None, 2)


def test_long_handle_cut(slot):
    slot.job_started(b"H:" + b"x" * (2 * MAX_HANDLE), 1.0)

    state = slot.read()

    assert len(state.job_handle) == MAX_HANDLE
    assert state.job_handle.startswith("H:xxx")


def test_read_during_write_returns_none(slot):
    slot.job_started(b"H:host:1", 1.0)
    # An odd sequence number is what a reader sees while the child is in the middle of a write.
    SEQUENCE.pack_into(slot.memory, 0, 7)

    assert slot.read() is None


def test_child_writes_master_reads(slot):
    pid = os.fork()
    if pid == 0:
        try:
            slot.close_descriptor()
            slot.job_started(b"H:host:42", 99.0)
            slot.job_finished(5)
            slot.job_started(b"H:host:43", 100.0)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert slot.read() == JobState("H:host:43", 100.0, 5)


def test_descriptor_closed_on_exec(slot):
    assert not os.get_inheritable(slot.fd)


def test_mapping_through_other_descriptor(slot):
    # The master after a re-exec maps the slot again from the inherited descriptor.
    other = ScoreboardSlot(os.dup(slot.fd))
    try:
        slot.job_started(b"H:host:8", 3.0)

        assert other.read() == JobState("H:host:8", 3.0, 0)
    finally:
        other.close()
