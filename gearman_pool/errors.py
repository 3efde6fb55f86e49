"""Exceptions raised by the Gearman protocol layer, the client and the commands."""


class GearmanError(Exception):
    """Base class of every error this package raises about Gearman."""


class InvalidServerAddress(GearmanError, ValueError):
    """A server address that is not "host", "host:port" or "[ipv6]:port"."""


class ServerUnavailable(GearmanError, ConnectionError):
    """No connection to a job server could be made or kept."""


class ProtocolError(GearmanError):
    """The server sent bytes that are not valid Gearman protocol."""


class ServerError(GearmanError):
    """The server rejected a request with an ERROR packet or an ERR reply."""

    def __init__(self, code, text, address=None):
        self.code = code
        self.text = text
        self.address = address
        where = f" from {address}" if address else ""
        super().__init__(f"server error{where}: {code}: {text}" if text else f"server error{where}: {code}")


class QueueFull(ServerError):
    """gearmand refused a job because the task's queue reached its maxqueue size."""

    def __str__(self):
        where = f" on {self.address}" if self.address else ""
        return f"queue full{where}: gearmand rejected the job ({self.code}); raise the task's maxqueue or drain the queue"


class JobFailed(GearmanError):
    """A foreground job ended with WORK_FAIL or WORK_EXCEPTION.

    ``message`` is the exception text the worker reported, or an empty string when the
    worker sent a plain WORK_FAIL.
    """

    def __init__(self, task, handle, message=""):
        self.task = task
        self.handle = handle
        self.message = message
        detail = f": {message}" if message else ""
        super().__init__(f"job {handle} of task {task!r} failed{detail}")


class JobTimeout(GearmanError, TimeoutError):
    """A foreground job did not finish within its timeout.

    gearmand keeps the job queued, so it may still run later.
    """
