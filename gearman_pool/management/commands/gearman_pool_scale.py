import re

from django.core.management.base import BaseCommand, CommandError

from gearman_pool.conf import gearman_settings
from gearman_pool.pool.control_client import (
    ControlError,
    add_control_arguments,
    send_control_request,
)

COUNT_PATTERN = re.compile(r"([+-]?)([0-9]+)")
EXAMPLE = "data_import=4, data_import=+2 or data_import=-1"


class Command(BaseCommand):
    help = (
        "Change the number of children of tasks in a running gearman_pool. "
        "TASK=COUNT sets the count, TASK=+N adds N children and TASK=-N removes N. "
        "A count of 0 stops every child of the task until it is scaled up again. "
        "The change is not written to the settings, so a restarted pool starts with "
        "--workers or GEARMAN_POOL_WORKERS again."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "changes",
            nargs="+",
            metavar="TASK=COUNT",
            help="Task name or gearman_worker_* command name, then =COUNT (0 or more), =+N or =-N.",
        )
        add_control_arguments(parser, "Seconds to wait for the master's reply to each change")

    def handle(self, *args, **options):
        requests = parse_scale_arguments(options["changes"])
        path = options["control_socket"] or gearman_settings.control_socket

        for index, request in enumerate(requests):
            try:
                reply = send_control_request(path, request, timeout=options["timeout"])
            except ControlError as exc:
                message = f"scaling {request['task']} failed: {' '.join(str(exc).split())}"
                if index > 0:
                    message += " (the changes printed above were applied)"
                raise CommandError(message) from None
            self.stdout.write(describe_scale_reply(request, reply))


def parse_scale_arguments(values) -> list[dict]:
    """Turn TASK=COUNT, TASK=+N and TASK=-N arguments into scale requests for the master.

    Raises CommandError listing every invalid argument, so nothing is sent unless all are valid.
    """
    problems = []
    requests = []
    seen = set()
    for value in values:
        try:
            request = parse_scale_argument(value)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        # NOTE: only identical names are detected here. A task name and its gearman_worker_*
        # command name both pass, and the master applies both changes in order.
        if request["task"] in seen:
            problems.append(
                f"task {request['task']!r} is given more than once: give one change per task"
            )
            continue
        seen.add(request["task"])
        requests.append(request)
    if problems:
        raise CommandError("; ".join(problems))
    return requests


def parse_scale_argument(value: str) -> dict:
    """Parse one TASK=COUNT, TASK=+N or TASK=-N argument into a scale request.

    Raises ValueError naming the argument and the expected form.
    """
    task, separator, amount = value.partition("=")
    if not separator:
        raise ValueError(
            f"invalid argument {value!r}: expected TASK=COUNT, TASK=+N or TASK=-N, e.g. {EXAMPLE}"
        )
    if not task:
        raise ValueError(f"invalid argument {value!r}: the task name before '=' is empty")
    if not task.isprintable() or any(character.isspace() for character in task):
        raise ValueError(
            f"invalid task name {task!r} in {value!r}: "
            "remove the spaces and control characters from the name"
        )

    match = COUNT_PATTERN.fullmatch(amount)
    if match is None:
        raise ValueError(
            f"invalid count {amount!r} in {value!r}: expected a whole number of children "
            f"(0 or more), +N or -N, e.g. {EXAMPLE}"
        )
    sign, digits = match.groups()
    number = int(digits)
    if not sign:
        return {"command": "scale", "task": task, "count": number}
    if number == 0:
        raise ValueError(
            f"invalid change {value!r}: {sign}0 changes nothing. "
            f"Give a count such as {task}=4 or a change such as {task}=+1"
        )
    return {"command": "scale", "task": task, "delta": number if sign == "+" else -number}


def describe_scale_reply(request: dict, reply: dict) -> str:
    """Format a scale reply as "data_import: 4 -> 6 children"."""
    task = reply.get("task") or request["task"]
    count = reply.get("count")
    noun = "child" if count == 1 else "children"
    previous = reply.get("previous")
    if previous is None:
        return f"{task}: {count} {noun}"
    if previous == count:
        return f"{task}: {count} {noun} (unchanged)"
    return f"{task}: {previous} -> {count} {noun}"
