import dataclasses
import math
import signal
import sys

from django.core.management.base import BaseCommand, CommandError

from gearman_pool.conf import gearman_settings
from gearman_pool.errors import InvalidServerAddress
from gearman_pool.logs import LogFileError, check_log_files, ensure_log_handler
from gearman_pool.pool.master import DEFAULT_GRACEFUL_TIMEOUT, HANDLED_SIGNALS, PoolMaster
from gearman_pool.pool.control import ControlSocketError
from gearman_pool.pool.gearmand import GearmandError, LocalGearmand
from gearman_pool.pool.limits import (
    InvalidLimit,
    TaskLimits,
    parse_job_timeout,
    parse_max_jobs,
    parse_memory,
    resolve_limits,
)
from gearman_pool.pool.pidfile import Pidfile, PidfileError
from gearman_pool.pool.policy import (
    DEFAULT_INITIAL_DELAY,
    DEFAULT_MAX_BOOT_FAILURES,
    DEFAULT_MAX_DELAY,
    RestartPolicy,
)
from gearman_pool.pool.spec import (
    PoolConfigurationError,
    describe_valid_names,
    discover_worker_commands,
    parse_workers_option,
    resolve_entries,
)


class Command(BaseCommand):
    help = (
        "Run a supervised pool of Gearman workers: N forked children per worker command, "
        "replaced when they die, stopped gracefully on SIGTERM or SIGINT, reloaded on SIGHUP."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--workers",
            metavar="NAME=COUNT[,NAME=COUNT...]",
            help=(
                "Children per task, e.g. data_import=4,send_invoices=2. NAME is a task name or a "
                "gearman_worker_* command name. Default: the GEARMAN_POOL_WORKERS setting."
            ),
        )
        parser.add_argument(
            "--graceful-timeout",
            type=float,
            default=DEFAULT_GRACEFUL_TIMEOUT,
            metavar="SECONDS",
            help=(
                "On SIGTERM or SIGINT, how long children may take to finish their jobs before "
                f"they are killed (default: {DEFAULT_GRACEFUL_TIMEOUT:g})."
            ),
        )
        parser.add_argument(
            "--max-restart-delay",
            type=float,
            default=DEFAULT_MAX_DELAY,
            metavar="SECONDS",
            help=(
                "Cap of the growing delay before replacing a child that died during start-up "
                f"(default: {DEFAULT_MAX_DELAY:g})."
            ),
        )
        parser.add_argument(
            "--max-boot-failures",
            type=int,
            default=DEFAULT_MAX_BOOT_FAILURES,
            metavar="N",
            help=(
                "Consecutive start-up failures after which a task gets no more children "
                f"(default: {DEFAULT_MAX_BOOT_FAILURES}); the other tasks keep serving."
            ),
        )
        parser.add_argument(
            "--max-jobs",
            type=int,
            metavar="N",
            help="Recycle a child after about N jobs (plus up to 10%% random jitter). Default: no limit.",
        )
        parser.add_argument(
            "--max-memory",
            metavar="SIZE",
            help=(
                "Recycle a child, between jobs, when its unique memory (USS) exceeds SIZE, "
                "e.g. 512M or 1G. Needs psutil. Default: no limit."
            ),
        )
        parser.add_argument(
            "--job-timeout",
            type=float,
            metavar="SECONDS",
            help="Kill a child whose job runs longer than SECONDS; gearmand requeues the job. Default: no limit.",
        )
        parser.add_argument(
            "--control-socket",
            metavar="PATH",
            help="Unix socket for gearman_pool_status and gearman_pool_scale. Default: GEARMAN_POOL_CONTROL_SOCKET.",
        )
        parser.add_argument(
            "--with-gearmand",
            action="store_true",
            help=(
                "Run Debian's gearmand on the first GEARMAN_SERVERS address (a loopback address) as a "
                "supervised child: restarted if it dies, stopped after the workers."
            ),
        )
        parser.add_argument(
            "--gearmand-arg",
            action="append",
            default=[],
            dest="gearmand_args",
            metavar="ARG",
            help="Extra gearmand argument with --with-gearmand, e.g. --gearmand-arg=--job-retries=3; repeatable.",
        )
        parser.add_argument(
            "--pidfile",
            metavar="PATH",
            help="Write the master's pid to PATH. The pool does not start while PATH names a running pool.",
        )
        parser.add_argument(
            "--check",
            action="store_true",
            help="Check the settings and import every worker command, then exit without forking.",
        )

    @staticmethod
    def default_limits(options) -> TaskLimits:
        return TaskLimits(
            max_jobs=None if options["max_jobs"] is None else parse_max_jobs(options["max_jobs"]),
            max_memory=None if options["max_memory"] is None else parse_memory(options["max_memory"]),
            job_timeout=None if options["job_timeout"] is None else parse_job_timeout(options["job_timeout"]),
        )

    def run_from_argv(self, argv):
        # Only a master started from a command line can re-execute itself on SIGHUP.
        self.exec_argv = [sys.executable, *sys.orig_argv[1:]]
        super().run_from_argv(argv)

    def handle(self, *args, **options):
        # Hold the master's signals while it starts: PoolMaster.run() installs their
        # handlers and then unblocks them, so a SIGHUP or SIGTERM sent during start-up is
        # handled instead of killing the process by its default action. The previous mask
        # comes back on every way out, so that call_command() leaves its caller unchanged.
        previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        try:
            self.start_pool(options)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)

    def start_pool(self, options):
        graceful_timeout = options["graceful_timeout"]
        if not 0 <= graceful_timeout < math.inf:
            raise CommandError(f"invalid --graceful-timeout {graceful_timeout!r}: give a number of seconds, 0 or more")
        if not 0 < options["max_restart_delay"] < math.inf:
            raise CommandError(
                f"invalid --max-restart-delay {options['max_restart_delay']!r}: give a positive number of seconds"
            )
        if options["max_boot_failures"] < 1:
            raise CommandError(f"invalid --max-boot-failures {options['max_boot_failures']!r}: give 1 or more")
        try:
            gearman_settings.servers
            discovered = discover_worker_commands()
            if options["workers"] is None:
                pairs = list(gearman_settings.pool_workers.items())
                if not pairs:
                    raise PoolConfigurationError(
                        "no workers to run: pass --workers NAME=COUNT or set GEARMAN_POOL_WORKERS. "
                        + describe_valid_names(discovered)
                    )
            else:
                pairs = parse_workers_option(options["workers"])
            entries = resolve_entries(pairs, discovered)
            defaults = self.default_limits(options)
            per_task = gearman_settings.pool_limits
            entries = [
                dataclasses.replace(entry, limits=resolve_limits(defaults, per_task, entry.task_name))
                for entry in entries
            ]
        except (PoolConfigurationError, InvalidServerAddress, InvalidLimit) as exc:
            raise CommandError(str(exc)) from None
        if any(entry.limits.max_memory is not None for entry in entries) and not _has_psutil():
            raise CommandError("--max-memory and max_memory need psutil: pip install 'django-gearman-commands[memory]'")

        if options["check"]:
            counts = ", ".join(f"{entry.task_name}={entry.count} ({entry.limits.describe()})" for entry in entries)
            self.stdout.write(f"gearman_pool configuration is valid: {counts}")
            return

        ensure_log_handler()
        try:
            check_log_files()
        except LogFileError as exc:
            raise CommandError(str(exc)) from None
        gearmand = None
        if options["with_gearmand"]:
            try:
                gearmand = LocalGearmand(gearman_settings.servers[0], extra_args=options["gearmand_args"])
            except GearmandError as exc:
                raise CommandError(str(exc)) from None
        elif options["gearmand_args"]:
            raise CommandError("--gearmand-arg applies only with --with-gearmand")
        if options["pidfile"] is not None and not options["pidfile"].strip():
            raise CommandError("invalid --pidfile '': give the path of the pid file")
        pidfile = Pidfile(options["pidfile"]) if options["pidfile"] else None
        master = PoolMaster(
            entries,
            graceful_timeout=graceful_timeout,
            policy=RestartPolicy(
                max_delay=options["max_restart_delay"],
                initial_delay=min(DEFAULT_INITIAL_DELAY, options["max_restart_delay"]),
                max_boot_failures=options["max_boot_failures"],
            ),
            exec_argv=getattr(self, "exec_argv", None),
            pidfile=pidfile,
            control_socket=options["control_socket"] or gearman_settings.control_socket,
            gearmand=gearmand,
        )
        try:
            exit_code = master.run()
        except (PidfileError, ControlSocketError, GearmandError) as exc:
            raise CommandError(str(exc)) from None
        if exit_code:
            raise CommandError("every task failed to start; see the log above", returncode=exit_code)


def _has_psutil() -> bool:
    try:
        import psutil  # noqa: F401
    except ImportError:
        return False
    return True
