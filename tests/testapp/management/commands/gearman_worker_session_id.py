import os
import time

from django.db import connection

from gearman_pool import GearmanWorkerBaseCommand

# When set, every process that instantiates this command appends "<pid> <session id>" to
# the file it names. The pool master instantiates each worker command during discovery,
# before it forks, so the file shows the master's session next to its children's.
SESSION_LOG_ENV = "TEST_SESSION_ID_LOG"

SESSION_ID_QUERIES = {
    "postgresql": "SELECT pg_backend_pid()",
    "mysql": "SELECT CONNECTION_ID()",
}


def database_session_id() -> int:
    """Run a query on the default connection and return the server's id for its session."""
    try:
        query = SESSION_ID_QUERIES[connection.vendor]
    except KeyError:
        raise ValueError(
            f"database vendor {connection.vendor!r} has no session id query; "
            "use PostgreSQL or MySQL"
        ) from None
    with connection.cursor() as cursor:
        cursor.execute(query)
        return cursor.fetchone()[0]


class Command(GearmanWorkerBaseCommand):
    """Returns {"pid": ..., "session_id": ...}: the process and its database session.

    The job data, when given, is a number of seconds to sleep before the query.
    """

    task_name = "session_id"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        log_path = os.environ.get(SESSION_LOG_ENV)
        if log_path:
            with open(log_path, "a") as log:
                log.write(f"{os.getpid()} {database_session_id()}\n")

    def do_job(self, job_data):
        time.sleep(float(job_data or 0))
        return {"pid": os.getpid(), "session_id": database_session_id()}
