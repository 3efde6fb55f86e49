import sys

from django.core.management.base import BaseCommand, CommandError

from gearman_pool.address import ServerAddress
from gearman_pool.errors import GearmanError, InvalidServerAddress
from gearman_pool.protocol import PRIORITIES
from gearman_pool.submit import submit_job


# One year; longer waits overflow poll() and the system clock, and mean "no timeout",
# which is what leaving --timeout out already gives.
MAX_TIMEOUT = 365 * 24 * 3600.0


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class Command(BaseCommand):
    help = (
        "Submit a Gearman job. It runs in the background unless --foreground is given. "
        "DATA is sent as UTF-8; '-' reads raw bytes from standard input."
    )

    def add_arguments(self, parser):
        parser.add_argument("task_name", help="Task to run, without the GEARMAN_CLIENT_NAMESPACE suffix.")
        parser.add_argument("data", nargs="?", default=None, help="Job payload; '-' reads it from standard input.")
        parser.add_argument(
            "--foreground",
            action="store_true",
            help="Wait for the job to finish and print its result.",
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=None,
            help="With --foreground, give up after this many seconds (default: wait as long as the job runs).",
        )
        parser.add_argument("--unique", default=None, help="Unique key; gearmand merges queued jobs with equal keys.")
        parser.add_argument("--priority", choices=PRIORITIES, default="normal", help="Queue priority (default: normal).")
        parser.add_argument(
            "--server",
            action="append",
            dest="servers",
            metavar="HOST:PORT",
            help="Job server to use instead of GEARMAN_SERVERS; repeat for several.",
        )

    def handle(self, *args, **options):
        task_name = options["task_name"]
        if not task_name or any(char.isspace() or not char.isprintable() for char in task_name):
            raise CommandError(
                f"invalid task name {task_name!r}: it must be non-empty, without white space or control characters"
            )
        timeout = options["timeout"]
        if timeout is not None and not 0 < timeout <= MAX_TIMEOUT:
            raise CommandError(
                f"invalid --timeout {timeout!r}: give a positive number of seconds, at most {MAX_TIMEOUT:g}"
            )
        if timeout is not None and not options["foreground"]:
            raise CommandError("--timeout applies only with --foreground; a background submit does not wait")
        servers = None
        if options["servers"]:
            try:
                servers = [ServerAddress.parse(value) for value in options["servers"]]
            except InvalidServerAddress as exc:
                raise CommandError(str(exc)) from None

        data = options["data"]
        if data == "-":
            data = sys.stdin.buffer.read()
        elif data is not None:
            data = data.encode("utf-8", "surrogateescape")

        try:
            job = submit_job(
                task_name,
                data,
                background=not options["foreground"],
                priority=options["priority"],
                unique=options["unique"],
                timeout=timeout,
                servers=servers,
            )
        except (GearmanError, OSError) as exc:
            raise CommandError(_one_line(exc)) from None

        if job.background:
            self.stdout.write(f"Submitted job {job.handle} of task {task_name!r} to {job.server}")
        else:
            self.write_result(job.result)

    def write_result(self, result: bytes) -> None:
        # Write the result's bytes unchanged when stdout is a real stream, so binary and
        # non-UTF-8 results survive a pipe; call_command(stdout=StringIO()) gets text.
        stream = getattr(self.stdout, "_out", None)
        buffer = getattr(stream, "buffer", None)
        if buffer is None:
            self.stdout.write(result.decode("utf-8", "replace"))
            return
        stream.flush()
        buffer.write(result)
        if stream.isatty():
            buffer.write(b"\n")
        buffer.flush()
