"""The example project's demo: the whole workflow from a fresh database to a clean stop."""

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_example_demo_runs_main_job(tmp_path):
    env = dict(os.environ, EXAMPLE_DB_PATH=str(tmp_path / "example.sqlite3"))
    env.pop("DJANGO_SETTINGS_MODULE", None)

    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "example" / "demo.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert "3 rows imported; 2 invoices sent" in result.stdout
    assert '{"imported": 1}' in result.stdout
    assert "| data_import   |       2 |" in result.stdout
    assert "| send_invoices |       1 |" in result.stdout
    assert "Pool master stopped" in result.stderr
    assert "gearman_pool exited with code 0" in result.stdout
