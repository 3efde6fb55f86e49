"""Gearman worker loop: registers tasks, grabs jobs, runs them, reports results.

The loop keeps one connection per server. With no job available it sends PRE_SLEEP and
waits in poll() for gearmand's NOOP, for a stop request on the worker's wake-up pipe, or
for the next periodic check, whichever comes first. A server that goes away is
reconnected with capped exponential backoff while the other servers keep serving.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import socket
import time
from collections.abc import Callable

from gearman_pool.address import ServerAddress
from gearman_pool.connection import DEFAULT_CONNECT_TIMEOUT, DEFAULT_IO_TIMEOUT, Connection, wait_readable
from gearman_pool.errors import ProtocolError, ServerUnavailable
from gearman_pool.protocol import PacketType

logger = logging.getLogger(__name__)

RECONNECT_INITIAL_DELAY = 0.5
RECONNECT_MAX_DELAY = 5.0
# How often an idle worker wakes up to run its periodic check, in seconds.
TICK_INTERVAL = 1.0


@dataclasses.dataclass
class Job:
    """A job assigned to this worker. Every field is bytes, as gearmand sent it."""

    handle: bytes
    task: bytes
    unique: bytes
    data: bytes
    connection: Connection = dataclasses.field(repr=False)

    def send_status(self, numerator: int, denominator: int) -> None:
        """Report progress to a waiting client (WORK_STATUS)."""
        self.connection.send_packet(
            PacketType.WORK_STATUS, self.handle, str(numerator).encode(), str(denominator).encode()
        )

    def send_data(self, data: bytes) -> None:
        """Send a partial result to a waiting client (WORK_DATA)."""
        self.connection.send_packet(PacketType.WORK_DATA, self.handle, data)

    def send_warning(self, data: bytes) -> None:
        self.connection.send_packet(PacketType.WORK_WARNING, self.handle, data)


JobHandler = Callable[[Job], bytes]


@dataclasses.dataclass
class _ServerState:
    connection: Connection
    registered: bool = False
    sleeping: bool = False
    failures: int = 0
    next_attempt: float = 0.0


class GearmanWorker:
    """Serves jobs for the tasks in ``handlers`` from every server in ``servers``.

    A handler receives the Job and returns the result as bytes. An exception raised by a
    handler is logged once with its traceback and reported to the client as
    WORK_EXCEPTION carrying "ExceptionType: message". The worker then serves the next job.

    ``keep_running`` is called between jobs and on every idle tick; returning False
    stops the loop like ``request_stop()`` does. ``on_registered(address)`` is called
    after each successful registration at a server, ``on_job_started(job)`` before a
    job runs, and ``on_job_finished(job, ok)`` after its result was sent; the pool uses
    them to report to its master. ``wake()`` ends an idle wait without stopping, so that
    ``keep_running`` runs at once.
    """

    def __init__(
        self,
        servers: list[ServerAddress],
        handlers: dict[bytes, JobHandler],
        *,
        client_id: str | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        io_timeout: float = DEFAULT_IO_TIMEOUT,
        keep_running: Callable[[], bool] | None = None,
        tick_interval: float = TICK_INTERVAL,
        reconnect_max_delay: float = RECONNECT_MAX_DELAY,
        on_registered: Callable[[ServerAddress], None] | None = None,
        on_job_started: Callable[[Job], None] | None = None,
        on_job_finished: Callable[[Job, bool], None] | None = None,
    ):
        if not servers:
            raise ValueError("GearmanWorker needs at least one server address")
        if not handlers:
            raise ValueError("GearmanWorker needs at least one task handler")
        self.handlers = dict(handlers)
        self.client_id = client_id or f"{socket.gethostname()}-{os.getpid()}"
        self.keep_running = keep_running
        self.tick_interval = tick_interval
        self.reconnect_max_delay = reconnect_max_delay
        self.on_registered = on_registered
        self.on_job_started = on_job_started
        self.on_job_finished = on_job_finished
        self.jobs_done = 0
        self.current_job: Job | None = None
        self._servers = [
            _ServerState(Connection(address, connect_timeout=connect_timeout, io_timeout=io_timeout))
            for address in servers
        ]
        self._stop_requested = False
        self._next_server = 0
        self._wakeup_read, self._wakeup_write = os.pipe()
        os.set_blocking(self._wakeup_read, False)
        os.set_blocking(self._wakeup_write, False)

    @property
    def task_names(self) -> str:
        return ", ".join(task.decode("utf-8", "replace") for task in self.handlers)

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested

    def request_stop(self) -> None:
        """Ask the loop to return after the job in hand, or at once when idle.

        Safe to call from a signal handler: it only sets a flag and writes one byte to
        the wake-up pipe, which ends the loop's poll() at once.
        """
        self._stop_requested = True
        self.wake()

    def wake(self) -> None:
        """End the loop's idle wait; safe to call from a signal handler."""
        try:
            os.write(self._wakeup_write, b"\x00")
        except OSError:
            # A full pipe already wakes the loop; a closed one means the worker is done.
            pass

    def close(self) -> None:
        for state in self._servers:
            state.connection.close()
        for fd in (self._wakeup_read, self._wakeup_write):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wakeup_read = self._wakeup_write = -1

    def work(self, max_jobs: int | None = None) -> int:
        """Serve jobs until a stop is requested or ``max_jobs`` jobs are done.

        Returns the number of jobs done by this call.
        """
        done_before = self.jobs_done
        try:
            while not self._should_stop():
                if max_jobs is not None and self.jobs_done - done_before >= max_jobs:
                    break
                self.work_once()
        finally:
            for state in self._servers:
                state.connection.close()
                state.registered = False
                state.sleeping = False
        return self.jobs_done - done_before

    def work_once(self) -> bool:
        """Run one iteration: connect what is due, grab and run one job, or sleep.

        Returns True when a job ran.
        """
        self._connect_due_servers()

        # Ask every awake server for a job before sleeping, starting one further along
        # each time, so that a busy server cannot starve the others.
        self._next_server = (self._next_server + 1) % len(self._servers)
        for state in self._servers[self._next_server :] + self._servers[: self._next_server]:
            if self._should_stop():
                return False
            if not state.registered or state.sleeping:
                continue
            job = self._grab_job(state)
            if job is not None:
                self._run_job(job)
                return True

        if not self._should_stop():
            self._sleep_until_woken()
        return False

    def _should_stop(self) -> bool:
        if self._stop_requested:
            return True
        if self.keep_running is not None and not self.keep_running():
            self._stop_requested = True
        return self._stop_requested

    def _connect_due_servers(self) -> None:
        now = time.monotonic()
        for state in self._servers:
            if state.registered or now < state.next_attempt:
                continue
            try:
                registered = self._register(state)
            except (ServerUnavailable, ProtocolError, TimeoutError) as exc:
                self._schedule_reconnect(state, exc)
                continue
            if not registered:
                # A stop request arrived while the server had not confirmed yet.
                state.connection.close()
                return
            if state.failures:
                logger.info(
                    "Reconnected to Gearman server %s for %s after %d failed attempts (pid %s)",
                    state.connection.address,
                    self.task_names,
                    state.failures,
                    os.getpid(),
                )
            state.failures = 0
            if self.on_registered is not None:
                self.on_registered(state.connection.address)

    def _register(self, state: _ServerState) -> bool:
        """Connect and register every task; return False when a stop request cut it short."""
        connection = state.connection
        connection.close()
        connection.connect()
        connection.send_packet(PacketType.SET_CLIENT_ID, self.client_id.encode())
        connection.send_packet(PacketType.RESET_ABILITIES)
        for task in self.handlers:
            connection.send_packet(PacketType.CAN_DO, task)
        # gearmand handles one connection's packets in order, so its reply to ECHO_REQ
        # proves that it has read every CAN_DO above. Only then does on_registered run:
        # the pool retires an old child on it during a reload, and must not do so while
        # gearmand does not yet count the new child as a worker.
        if not self._confirm_registration(connection):
            return False
        state.registered = True
        state.sleeping = False
        logger.debug(
            "Registered tasks %s at Gearman server %s (pid %s)",
            ", ".join(task.decode("utf-8", "replace") for task in self.handlers),
            connection.address,
            os.getpid(),
        )
        return True

    def _confirm_registration(self, connection: Connection) -> bool:
        """Wait for the reply to an ECHO_REQ; return False when a stop request came first."""
        token = f"registered {os.getpid()}".encode()
        deadline = time.monotonic() + connection.io_timeout
        connection.send_packet(PacketType.ECHO_REQ, token)
        while True:
            try:
                packet = connection.read_packet(
                    timeout=max(0.0, deadline - time.monotonic()), wakeup_fd=self._wakeup_read
                )
            except TimeoutError:
                raise TimeoutError(
                    f"no reply to ECHO_REQ from Gearman server {connection.address} "
                    f"within {connection.io_timeout:g} s"
                ) from None
            if packet is None:
                # Woken through the pipe: by a stop request, or by wake() for another reason.
                self._drain_wakeup_pipe()
                if self._should_stop():
                    return False
                continue
            if packet.type == PacketType.ECHO_RES and packet.args[0] == token:
                return True
            if packet.type == PacketType.NOOP:
                # A wake-up for a job queued meanwhile; the first GRAB_JOB_UNIQ finds it.
                continue
            raise ProtocolError(
                f"Gearman server {connection.address} sent {packet.type.name} in reply to ECHO_REQ"
            )

    def _schedule_reconnect(self, state: _ServerState, exc: Exception) -> None:
        state.connection.close()
        state.registered = False
        state.sleeping = False
        state.failures += 1
        delay = min(self.reconnect_max_delay, RECONNECT_INITIAL_DELAY * 2 ** (state.failures - 1))
        delay *= random.uniform(0.8, 1.2)
        state.next_attempt = time.monotonic() + delay
        # Log the first failure of an outage as a warning and the retries at debug
        # level, so that a long outage does not flood the log.
        level = logging.WARNING if state.failures == 1 else logging.DEBUG
        logger.log(
            level,
            "Gearman server %s unavailable for %s (%s); retrying in %.1f s (pid %s)",
            state.connection.address,
            self.task_names,
            exc,
            delay,
            os.getpid(),
        )

    def _grab_job(self, state: _ServerState) -> Job | None:
        connection = state.connection
        # One deadline for the whole reply, so that a server sending NOOP after NOOP
        # cannot hold the worker here past its io_timeout.
        deadline = time.monotonic() + connection.io_timeout
        try:
            connection.send_packet(PacketType.GRAB_JOB_UNIQ)
            while True:
                packet = connection.read_packet(timeout=max(0.0, deadline - time.monotonic()))
                if packet.type == PacketType.JOB_ASSIGN_UNIQ:
                    handle, task, unique, data = packet.args
                    return Job(handle, task, unique, data, connection)
                if packet.type == PacketType.NO_JOB:
                    connection.send_packet(PacketType.PRE_SLEEP)
                    state.sleeping = True
                    return None
                if packet.type == PacketType.NOOP:
                    # A wake-up that crossed our GRAB_JOB_UNIQ; the reply follows.
                    continue
                if packet.type == PacketType.ERROR:
                    raise ProtocolError(f"Gearman server {connection.address} sent ERROR {packet.args!r}")
                raise ProtocolError(
                    f"Gearman server {connection.address} sent {packet.type.name} in reply to GRAB_JOB_UNIQ"
                )
        except TimeoutError as exc:
            self._schedule_reconnect(state, exc)
        except (ServerUnavailable, ProtocolError) as exc:
            self._schedule_reconnect(state, exc)
        return None

    def _sleep_until_woken(self) -> None:
        sleeping = {state.connection.fileno(): state for state in self._servers if state.registered}
        timeout = self.tick_interval
        pending = [state.next_attempt for state in self._servers if not state.registered]
        if pending:
            timeout = max(0.0, min(timeout, min(pending) - time.monotonic()))

        ready = wait_readable([self._wakeup_read, *sleeping], timeout)
        if self._wakeup_read in ready:
            self._drain_wakeup_pipe()
        for fd in ready:
            state = sleeping.get(fd)
            if state is None:
                continue
            try:
                packets = state.connection.receive()
            except (ServerUnavailable, ProtocolError) as exc:
                self._schedule_reconnect(state, exc)
                continue
            if any(packet.type == PacketType.NOOP for packet in packets):
                state.sleeping = False

    def _drain_wakeup_pipe(self) -> None:
        try:
            while os.read(self._wakeup_read, 512):
                pass
        except BlockingIOError:
            pass

    def _run_job(self, job: Job) -> None:
        handler = self.handlers.get(job.task)
        task_text = job.task.decode("utf-8", "replace")
        handle_text = job.handle.decode("utf-8", "replace")
        if handler is None:
            logger.error("Gearman server assigned job %s of unregistered task %r", handle_text, task_text)
            self._send_result(job, PacketType.WORK_FAIL, job.handle)
            return

        self.current_job = job
        if self.on_job_started is not None:
            self.on_job_started(job)
        ok = False
        try:
            result = handler(job)
            if result is None:
                result = b""
            if not isinstance(result, (bytes, bytearray, memoryview)):
                raise TypeError(f"the handler of task {task_text!r} returned {type(result).__name__}, expected bytes")
        except Exception as exc:
            logger.exception("Job %s of task %r failed (pid %s)", handle_text, task_text, os.getpid())
            message = f"{type(exc).__name__}: {exc}".encode("utf-8", "replace")
            self._send_result(job, PacketType.WORK_EXCEPTION, job.handle, message)
        else:
            self._send_result(job, PacketType.WORK_COMPLETE, job.handle, bytes(result))
            ok = True
        self.jobs_done += 1
        self.current_job = None
        if self.on_job_finished is not None:
            self.on_job_finished(job, ok)

    def _send_result(self, job: Job, packet_type: PacketType, *args: bytes) -> None:
        try:
            job.connection.send_packet(packet_type, *args)
        except ServerUnavailable as exc:
            # The result is lost with the connection. gearmand requeues the job when the
            # worker's connection closes, so the job runs again.
            logger.warning(
                "Could not report job %s of task %r: %s; gearmand will requeue it",
                job.handle.decode("utf-8", "replace"),
                job.task.decode("utf-8", "replace"),
                exc,
            )
            for state in self._servers:
                if state.connection is job.connection:
                    self._schedule_reconnect(state, exc)
