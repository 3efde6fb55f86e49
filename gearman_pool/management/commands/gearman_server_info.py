from django.core.management.base import BaseCommand, CommandError

from gearman_pool.address import ServerAddress
from gearman_pool.conf import gearman_settings
from gearman_pool.errors import InvalidServerAddress
from gearman_pool.info_tables import render_reports, reports_to_json
from gearman_pool.server_info import collect_reports


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = None
    # "not value > 0" also rejects NaN.
    if value is None or not value > 0 or value == float("inf"):
        raise ValueError(text)
    return value


# argparse names the option with this name in its "invalid value" message.
_positive_seconds.__name__ = "positive number of seconds"


class Command(BaseCommand):
    help = (
        "Print each Gearman server's version and response time, its tasks with their worker, "
        "running and queued job counts, and the workers with their tasks. "
        "Exits with an error after the output when a server is unavailable."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "task_filter",
            nargs="?",
            default=None,
            metavar="FILTER",
            help="Show only tasks whose name contains this text (case-sensitive), "
            "and the workers of those tasks.",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            dest="as_json",
            help="Print JSON instead of tables.",
        )
        parser.add_argument(
            "--server",
            action="append",
            dest="servers",
            metavar="HOST:PORT",
            help="Job server to query instead of GEARMAN_SERVERS. Repeat the option for several.",
        )
        parser.add_argument(
            "--timeout",
            type=_positive_seconds,
            default=None,
            metavar="SECONDS",
            help="Seconds to wait for the connection and for each reply of a server "
            "(default: GEARMAN_CONNECT_TIMEOUT, 5).",
        )

    def handle(self, *args, **options):
        try:
            if options["servers"]:
                servers = [ServerAddress.parse(value) for value in options["servers"]]
            else:
                servers = gearman_settings.servers
        except InvalidServerAddress as exc:
            raise CommandError(str(exc)) from None

        timeout = options["timeout"] or gearman_settings.connect_timeout
        reports = collect_reports(
            servers,
            task_filter=options["task_filter"],
            connect_timeout=timeout,
            io_timeout=timeout,
        )

        if options["as_json"]:
            self.stdout.write(reports_to_json(reports))
        else:
            self.stdout.write(render_reports(reports), ending="")

        failed = [report for report in reports if report.error is not None]
        if failed:
            raise CommandError(_describe_failures(failed, len(reports)))


def _describe_failures(failed, server_count: int) -> str:
    details = []
    for report in failed:
        address = str(report.address)
        # Most errors of the connection layer already name the server.
        reason = " ".join(report.error.split())
        details.append(reason if address in reason else f"{address}: {reason}")
    if server_count == 1:
        return "Gearman server unavailable: " + details[0]
    return f"{len(failed)} of {server_count} Gearman servers unavailable: " + "; ".join(details)
