"""Run the whole workflow on the example project, from nothing to a clean stop.

Starts a private gearmand on a free loopback port, migrates the example database, starts
`gearman_pool --workers data_import=2,send_invoices=1`, submits jobs with
`gearman_submit_job`, prints `gearman_server_info`, then stops the pool with SIGTERM
and gearmand. Every step runs the same manage.py command a user would type.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

EXAMPLE_DIR = Path(__file__).resolve().parent
REPO_ROOT = EXAMPLE_DIR.parent
sys.path.insert(0, str(REPO_ROOT))

from tests.gearmand import GearmandProcess  # noqa: E402  (needs the repository on sys.path)

STARTUP_TIMEOUT = 15.0


def manage(*args, env, check=True, input=None):
    command = [sys.executable, "manage.py", *args]
    print(f"\n$ ./manage.py {' '.join(args)}", flush=True)
    return subprocess.run(command, cwd=EXAMPLE_DIR, env=env, check=check, input=input)


def run_python(code, env):
    """Run ``code`` with the example project's Django set up, as `manage.py shell -c` would."""
    print(f"\n$ python -c {code!r}", flush=True)
    setup = "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'example_project.settings'); django.setup(); "
    subprocess.run([sys.executable, "-c", setup + code], cwd=EXAMPLE_DIR, env=env, check=True)


def wait_for_workers(address, expected):
    from gearman_pool.address import ServerAddress
    from gearman_pool.connection import AdminConnection

    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        counts = {}
        with AdminConnection(ServerAddress.parse(address)) as admin:
            admin.send_line(b"status")
            while (line := admin.read_line()) != b".":
                task, _total, _running, workers = line.decode().split("\t")
                counts[task] = int(workers)
        if all(counts.get(task, 0) >= count for task, count in expected.items()):
            return
        time.sleep(0.1)
    raise SystemExit(f"the pool did not register {expected} within {STARTUP_TIMEOUT:g} s")


def main():
    with GearmandProcess() as gearmand:
        print(f"gearmand {gearmand.address} started (pid {gearmand.pid})")
        env = dict(os.environ, GEARMAN_SERVERS=gearmand.address, PYTHONPATH=str(REPO_ROOT))
        manage("migrate", "--verbosity", "0", env=env)
        run_python("from invoices.models import Invoice; "
                   "[Invoice.objects.get_or_create(number=n) for n in ('2026-001', '2026-002')]", env=env)

        print("\n$ ./manage.py gearman_pool --workers data_import=2,send_invoices=1 &", flush=True)
        pool = subprocess.Popen(
            [sys.executable, "manage.py", "gearman_pool", "--workers", "data_import=2,send_invoices=1"],
            cwd=EXAMPLE_DIR,
            env=env,
        )
        try:
            wait_for_workers(gearmand.address, {"data_import": 2, "send_invoices": 1})
            manage("gearman_submit_job", "data_import", '[{"customer": "Příliš žluťoučký kůň"}, {"customer": "日本"}]',
                   env=env)
            manage("gearman_submit_job", "data_import", '{"customer": "foreground"}', "--foreground", env=env)
            manage("gearman_submit_job", "send_invoices", "--foreground", "--timeout", "10", env=env)
            time.sleep(0.5)
            manage("gearman_server_info", env=env)
            run_python("from invoices.models import ImportedRow, Invoice; "
                       "print(ImportedRow.objects.count(), 'rows imported;', "
                       "Invoice.objects.filter(sent_at__isnull=False).count(), 'invoices sent')", env=env)
        finally:
            print(f"\n$ kill -TERM {pool.pid}", flush=True)
            pool.send_signal(signal.SIGTERM)
            code = pool.wait(timeout=60)
        print(f"gearman_pool exited with code {code}; stopping gearmand")
    return code


if __name__ == "__main__":
    sys.exit(main())
