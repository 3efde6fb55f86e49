"""Database connections across the pool's fork(), on PostgreSQL and on MariaDB.

Every test runs once per server, whatever TEST_DB selects for this process: each pool gets
TEST_DB and its connection settings through its environment (see tests/settings.py), and
this process reads the servers' session lists directly with psycopg and MySQLdb. A run
creates its own database, gearman_pool_fork_<pid>, on both servers and drops it at the end.
A server that cannot be reached makes the tests fail; they are never skipped.

The pools serve the "session_id" task of tests/testapp, whose result names the child's pid
and the id that the server gives its database session: pg_backend_pid() or CONNECTION_ID().
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import json
import os
import threading
import time
import uuid

import MySQLdb
import psutil
import psycopg
import pytest
from django.db import DEFAULT_DB_ALIAS, OperationalError, connections
from psycopg import sql

from gearman_pool.address import ServerAddress
from gearman_pool.client import GearmanClient
from gearman_pool.errors import JobFailed
from gearman_pool.pool.database import discard_inherited_connections
from tests.helpers import child_pids, submit, wait_until, worker_count
from tests.testapp.management.commands.gearman_worker_session_id import (
    SESSION_ID_QUERIES,
    SESSION_LOG_ENV,
)

pytestmark = pytest.mark.slow

TASK = "session_id"
HOST = "127.0.0.1"
# Seconds that a MariaDB session of a pool child may stay idle before the server ends it.
MARIADB_WAIT_TIMEOUT = 2
# Seconds to wait for a pool to register its children, or for a session to end.
START_TIMEOUT = 30.0
SESSION_END_TIMEOUT = 10.0
# Seconds that the session count is sampled while the pool serves jobs.
LOAD_SECONDS = 3.0


class DatabaseServer:
    """A database server that the tests reach over TCP as an administrator."""

    backend = ""  # TEST_DB value, and Django's connection.vendor for it
    label = ""
    port = 0
    admin_database = "test"
    driver_error: type[Exception] = Exception

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def connect(self, database: str):
        raise NotImplementedError

    def execute(self, statement, params=()) -> None:
        """Run one statement in a new autocommit connection."""
        connection = self.connect(self.admin_database)
        try:
            with connection.cursor() as cursor:
                cursor.execute(statement, params)
        finally:
            connection.close()

    def query_value(self, query, params=()):
        """Run one query in a new autocommit connection and return its first value, or None."""
        connection = self.connect(self.admin_database)
        try:
            with connection.cursor() as cursor:
                cursor.execute(query, params)
                row = cursor.fetchone()
        finally:
            connection.close()
        return None if row is None else row[0]

    def session_exists(self, session_id: int) -> bool:
        raise NotImplementedError

    def count_sessions(self, database: str, application_name: str) -> int:
        raise NotImplementedError

    def end_idle_session(self, session_id: int) -> None:
        """End a pool child's idle session from the server side and wait until it is gone."""
        raise NotImplementedError

    def wait_for_session_end(self, session_id: int) -> None:
        wait_until(
            lambda: not self.session_exists(session_id),
            timeout=SESSION_END_TIMEOUT,
            interval=0.1,
            message=f"{self.label} session {session_id} to end",
        )

    def django_settings(self, database: str) -> dict:
        raise NotImplementedError

    def pool_env(self, application_name: str) -> dict[str, str]:
        """Return the environment that tags a pool's sessions for count_sessions()."""
        return {}

    def idle_timeout_env(self) -> dict[str, str]:
        """Return the environment that makes the server end a pool's idle sessions itself."""
        return {}


class PostgresServer(DatabaseServer):
    backend = "postgresql"
    label = "PostgreSQL"
    port = 5432
    driver_error = psycopg.Error

    def connect(self, database: str):
        return psycopg.connect(
            host=HOST,
            port=self.port,
            user="postgres",
            dbname=database,
            autocommit=True,
            connect_timeout=5,
        )

    def create_database(self, name: str) -> None:
        if not self.query_value("SELECT count(*) FROM pg_database WHERE datname = %s", (name,)):
            self.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def drop_database(self, name: str) -> None:
        # FORCE (PostgreSQL 13 and later) ends sessions of killed children that the
        # server has not noticed yet.
        statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        self.execute(statement.format(sql.Identifier(name)))

    def session_exists(self, session_id: int) -> bool:
        query = "SELECT count(*) FROM pg_stat_activity WHERE pid = %s"
        return bool(self.query_value(query, (session_id,)))

    def count_sessions(self, database: str, application_name: str) -> int:
        return self.query_value(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
            (database, application_name),
        )

    def end_idle_session(self, session_id: int) -> None:
        # pg_terminate_backend() returns false, with a warning, for a session that has
        # already ended, as it has with CONN_MAX_AGE = 0.
        self.query_value("SELECT pg_terminate_backend(%s)", (session_id,))
        self.wait_for_session_end(session_id)

    def django_settings(self, database: str) -> dict:
        return {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": HOST,
            "PORT": str(self.port),
            "USER": "postgres",
            "PASSWORD": "",
            "NAME": database,
        }

    def pool_env(self, application_name: str) -> dict[str, str]:
        return {"TEST_DB_APPLICATION_NAME": application_name}


class MariaDBServer(DatabaseServer):
    backend = "mysql"
    label = "MariaDB"
    port = 3306
    driver_error = MySQLdb.Error

    def connect(self, database: str):
        return MySQLdb.connect(
            host=HOST,
            port=self.port,
            user="root",
            passwd="",
            db=database,
            autocommit=True,
            connect_timeout=5,
        )

    def create_database(self, name: str) -> None:
        self.execute(f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4")

    def drop_database(self, name: str) -> None:
        self.execute(f"DROP DATABASE IF EXISTS `{name}`")

    def session_exists(self, session_id: int) -> bool:
        query = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %s"
        return bool(self.query_value(query, (session_id,)))

    def count_sessions(self, database: str, application_name: str) -> int:
        # MariaDB has no application name. The database belongs to this test run, and
        # each test waits until no session of an earlier pool is left in it.
        query = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = %s"
        return self.query_value(query, (database,))

    def end_idle_session(self, session_id: int) -> None:
        # The pool's init_command (idle_timeout_env) set a short wait_timeout, so the
        # server itself ends the session once it has been idle that long.
        self.wait_for_session_end(session_id)

    def django_settings(self, database: str) -> dict:
        return {
            "ENGINE": "django.db.backends.mysql",
            "HOST": HOST,
            "PORT": str(self.port),
            "USER": "root",
            "PASSWORD": "",
            "NAME": database,
            "OPTIONS": {"charset": "utf8mb4"},
        }

    def idle_timeout_env(self) -> dict[str, str]:
        return {"TEST_DB_INIT_COMMAND": f"SET SESSION wait_timeout={MARIADB_WAIT_TIMEOUT}"}


SERVERS = {server.backend: server for server in (PostgresServer(), MariaDBServer())}


@dataclasses.dataclass(frozen=True)
class ForkDatabase:
    """The database of this test run on one server."""

    server: DatabaseServer
    name: str


@pytest.fixture(scope="module", params=sorted(SERVERS))
def database(request) -> ForkDatabase:
    server = SERVERS[request.param]
    name = f"gearman_pool_fork_{os.getpid()}"
    error = None
    try:
        server.create_database(name)
    except server.driver_error as exc:
        error = exc
    if error is not None:
        pytest.fail(
            f"{server.label} at {server.address} is required by these tests "
            f"(see tests/settings.py), but creating database {name!r} there failed: {error}",
            pytrace=False,
        )
    yield ForkDatabase(server, name)
    server.drop_database(name)


def start_database_pool(spawn_manage, gearmand, database, count: int, **settings_env: str):
    """Start a pool of ``count`` session_id children on ``database``; wait until all registered."""
    env = {
        "GEARMAN_TEST_SERVER": gearmand.address,
        "TEST_DB": database.server.backend,
        "TEST_DB_NAME": database.name,
        **settings_env,
    }
    pool = spawn_manage("gearman_pool", "--workers", f"{TASK}={count}", env=env)

    def registered() -> bool:
        if pool.poll() is not None:
            stderr = pool.read_stderr()
            raise AssertionError(f"the pool exited with code {pool.returncode}:\n{stderr}")
        return worker_count(gearmand.address, TASK) == count

    wait_until(registered, timeout=START_TIMEOUT, message=f"{count} {TASK} workers")
    return pool


def run_session_job(gearmand) -> dict:
    """Run one foreground job and return its result: {"pid": ..., "session_id": ...}."""
    return json.loads(submit(gearmand, TASK, background=False).result)


def submit_jobs(gearmand, count: int, clients: int, data: bytes = b""):
    """Run ``count`` foreground jobs from ``clients`` threads.

    Returns the decoded results and the messages of the jobs that failed, as two lists.
    """

    def run_share(share: int) -> tuple[list[dict], list[str]]:
        results, failures = [], []
        with GearmanClient([ServerAddress.parse(gearmand.address)]) as client:
            for _ in range(share):
                try:
                    job = client.submit_job(TASK.encode(), data, background=False, timeout=30)
                except JobFailed as exc:
                    failures.append(exc.message)
                else:
                    results.append(json.loads(job.result))
        return results, failures

    shares = [count // clients + (1 if index < count % clients else 0) for index in range(clients)]
    all_results, all_failures = [], []
    with concurrent.futures.ThreadPoolExecutor(clients) as executor:
        futures = [executor.submit(run_share, share) for share in shares]
        for future in futures:
            results, failures = future.result()
            all_results += results
            all_failures += failures
    return all_results, all_failures


def read_session_log(path) -> dict[int, list[int]]:
    """Parse the "<pid> <session id>" lines of the session_id command: {pid: [session ids]}."""
    sessions = collections.defaultdict(list)
    for line in path.read_text().splitlines():
        pid, session_id = line.split()
        sessions[int(pid)].append(int(session_id))
    return sessions


def database_sockets(pid: int, port: int) -> list:
    sockets = psutil.Process(pid).net_connections(kind="tcp")
    return [sock for sock in sockets if sock.raddr and sock.raddr.port == port]


# ---- every child has its own session, never the master's ------------------------------


def test_children_sessions_differ_from_master(database, private_gearmand, spawn_manage, tmp_path):
    server = database.server
    session_log = tmp_path / "sessions.log"
    # CONN_MAX_AGE = None: a session that the master did not close before fork() would
    # stay open and be shared with the children.
    pool = start_database_pool(
        spawn_manage,
        private_gearmand,
        database,
        3,
        TEST_CONN_MAX_AGE="none",
        **{SESSION_LOG_ENV: str(session_log)},
    )
    children = child_pids(pool)

    # Six clients and a 10 ms job keep all three children busy, so each serves jobs.
    results, failures = submit_jobs(private_gearmand, 200, clients=6, data=b"0.01")

    assert failures == []
    assert len(results) == 200
    sessions_by_pid = collections.defaultdict(set)
    for result in results:
        sessions_by_pid[result["pid"]].add(result["session_id"])
    assert set(sessions_by_pid) == children
    for pid, sessions in sessions_by_pid.items():
        assert len(sessions) == 1, f"child {pid} used several sessions: {sorted(sessions)}"
    child_sessions = {pid: sessions.pop() for pid, sessions in sessions_by_pid.items()}
    assert len(set(child_sessions.values())) == 3, f"children share sessions: {child_sessions}"

    logged = read_session_log(session_log)
    assert len(logged[pool.pid]) == 1, f"the master logged {logged[pool.pid]}"
    master_session = logged[pool.pid][0]
    assert master_session not in child_sessions.values()
    # Each child opened its session when it instantiated the command, and kept it.
    for pid, session_id in child_sessions.items():
        assert logged[pid] == [session_id]

    # The master closed its session before the first fork() and opened no other.
    assert not server.session_exists(master_session)
    assert database_sockets(pool.pid, server.port) == []

    stderr = pool.read_stderr()
    assert "OperationalError" not in stderr
    assert "Traceback" not in stderr


# ---- discard_inherited_connections() keeps the parent's session ---------------------------


@pytest.fixture
def django_connection(database, django_db_blocker):
    """A Django connection to this run's database: an extra alias with CONN_MAX_AGE = None."""
    alias = f"fork_{database.server.backend}"
    settings_dict = database.server.django_settings(database.name)
    settings_dict["CONN_MAX_AGE"] = None
    connections.settings[alias] = connections.configure_settings({DEFAULT_DB_ALIAS: settings_dict})[
        DEFAULT_DB_ALIAS
    ]
    try:
        with django_db_blocker.unblock():
            yield connections[alias]
    finally:
        connections[alias].close()
        del connections[alias]
        del connections.settings[alias]


def query_session_id(connection) -> int:
    with connection.cursor() as cursor:
        cursor.execute(SESSION_ID_QUERIES[connection.vendor])
        return cursor.fetchone()[0]


def run_in_child(function) -> str:
    """Run ``function`` in a forked child and return str() of its result.

    The child ends with os._exit() on every path, so no pytest or Django clean-up runs
    there. Raises AssertionError with the child's exception when ``function`` raised.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        exit_code = 1
        try:
            os.close(read_fd)
            try:
                output = str(function())
                exit_code = 0
            except BaseException as exc:
                output = f"{type(exc).__name__}: {exc}"
            os.write(write_fd, output.encode("utf-8", "replace"))
        finally:
            os._exit(exit_code)

    os.close(write_fd)
    chunks = []
    with os.fdopen(read_fd, "rb") as pipe:
        while chunk := pipe.read():
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    output = b"".join(chunks).decode("utf-8", "replace")
    assert os.waitstatus_to_exitcode(status) == 0, f"the forked child failed: {output}"
    return output


def test_discard_keeps_parent_session(database, django_connection):
    parent_session = query_session_id(django_connection)
    raw_connection = django_connection.connection

    def in_child():
        discard_inherited_connections()
        return query_session_id(django_connection)

    child_session = int(run_in_child(in_child))

    assert child_session != parent_session
    assert django_connection.connection is raw_connection
    assert query_session_id(django_connection) == parent_session
    assert database.server.session_exists(parent_session)


def test_close_in_child_ends_parent_session(database, django_connection):
    # The negative control for test_discard_keeps_parent_session. Closing the inherited
    # connection in the child sends the protocol's termination message (PostgreSQL
    # Terminate, MySQL COM_QUIT) over the socket that the parent shares, so the server
    # ends the parent's session. Both processes write to one TCP stream, so the server
    # reads that message before the parent's next query, and that query fails every time.
    parent_session = query_session_id(django_connection)

    def in_child():
        django_connection.close()
        return "closed"

    assert run_in_child(in_child) == "closed"

    with pytest.raises(OperationalError):
        query_session_id(django_connection)
    database.server.wait_for_session_end(parent_session)


# ---- a session that the server ended while the child was idle --------------------------


@pytest.mark.parametrize(
    ("max_age", "health_checks"),
    [("none", "1"), ("0", "0")],
    ids=["persistent-with-health-checks", "closed-after-each-job"],
)
def test_child_survives_ended_session(
    database, private_gearmand, spawn_manage, max_age, health_checks
):
    server = database.server
    start_database_pool(
        spawn_manage,
        private_gearmand,
        database,
        1,
        TEST_CONN_MAX_AGE=max_age,
        TEST_CONN_HEALTH_CHECKS=health_checks,
        **server.idle_timeout_env(),
    )
    first = run_session_job(private_gearmand)

    server.end_idle_session(first["session_id"])
    second = run_session_job(private_gearmand)
    third = run_session_job(private_gearmand)

    assert second["pid"] == first["pid"]
    assert second["session_id"] != first["session_id"]
    assert third["pid"] == first["pid"]
    if max_age == "none":
        assert third["session_id"] == second["session_id"]


def test_without_health_checks_one_job_fails(database, private_gearmand, spawn_manage):
    # Without CONN_HEALTH_CHECKS, Django checks a persistent connection only after an error
    # (close_old_connections after the job), so the first job after the server ended the
    # session fails. That job's error makes Django close the connection, and the next job
    # opens a new one. The pool's system check warns about this configuration.
    server = database.server
    pool = start_database_pool(
        spawn_manage,
        private_gearmand,
        database,
        1,
        TEST_CONN_MAX_AGE="none",
        TEST_CONN_HEALTH_CHECKS="0",
        **server.idle_timeout_env(),
    )
    first = run_session_job(private_gearmand)

    server.end_idle_session(first["session_id"])
    with pytest.raises(JobFailed) as failure:
        run_session_job(private_gearmand)
    third = run_session_job(private_gearmand)

    assert failure.value.message.startswith("OperationalError: ")
    assert third["pid"] == first["pid"]
    assert third["session_id"] != first["session_id"]
    assert "OperationalError" in pool.read_stderr()


# ---- at most one session per child, plus the master's ----------------------------------


def test_sessions_at_most_one_per_child(database, private_gearmand, spawn_manage):
    server = database.server
    application_name = f"gearman_pool_fork_{uuid.uuid4().hex[:12]}"
    wait_until(
        lambda: server.count_sessions(database.name, application_name) == 0,
        timeout=SESSION_END_TIMEOUT,
        message="sessions of earlier pools to end",
    )
    start_database_pool(
        spawn_manage,
        private_gearmand,
        database,
        3,
        TEST_CONN_MAX_AGE="none",
        TEST_CONN_HEALTH_CHECKS="1",
        **server.pool_env(application_name),
    )

    stop_load = threading.Event()

    def load() -> tuple[list[dict], list[str]]:
        results, failures = [], []
        while not stop_load.is_set():
            batch, batch_failures = submit_jobs(private_gearmand, 6, clients=6, data=b"0.01")
            results += batch
            failures += batch_failures
        return results, failures

    samples = []
    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        load_future = executor.submit(load)
        try:
            deadline = time.monotonic() + LOAD_SECONDS
            while time.monotonic() < deadline:
                samples.append(server.count_sessions(database.name, application_name))
                time.sleep(0.1)
        finally:
            stop_load.set()
        results, failures = load_future.result()

    assert failures == []
    served_pids = {result["pid"] for result in results}
    assert len(served_pids) == 3
    assert samples
    assert max(samples) <= 3 + 1, f"sessions sampled while serving: {samples}"
    # Every child served jobs and keeps its one persistent session; the master has none.
    assert server.count_sessions(database.name, application_name) == 3
