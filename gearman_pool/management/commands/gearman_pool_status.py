from django.core.management.base import BaseCommand, CommandError

from gearman_pool.conf import gearman_settings
from gearman_pool.pool.control_client import (
    ControlError,
    add_control_arguments,
    send_control_request,
)
from gearman_pool.status_tables import render_status, status_to_json


class Command(BaseCommand):
    help = (
        "Print the state of a running gearman_pool: the master, each task with its configured, "
        "running and busy children, and each child with its current job, job count and memory."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--json",
            action="store_true",
            dest="as_json",
            help="Print the master's status reply as JSON instead of tables.",
        )
        add_control_arguments(parser, "Seconds to wait for the master's reply")

    def handle(self, *args, **options):
        path = options["control_socket"] or gearman_settings.control_socket
        try:
            reply = send_control_request(path, {"command": "status"}, timeout=options["timeout"])
        except ControlError as exc:
            raise CommandError(" ".join(str(exc).split())) from None

        if options["as_json"]:
            self.stdout.write(status_to_json(reply))
        else:
            self.stdout.write(render_status(reply), ending="")
