"""Imports of the installed package from the checkout's root folder."""

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_client_imports_from_checkout_root():
    # Python puts the working folder first on sys.path, so a core package
    # folder in the root would shadow the installed one, which alone
    # contains ecrs.client and ecrs.export.
    result = subprocess.run(
        [sys.executable, "-c", "import ecrs.client.client, ecrs.export"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
