"""Which S3 client the storage seam should use, measured: ``python -m bench.storage``.

``clients`` (the boto3 client and django-storages' ``S3Storage`` as the service
would configure them), ``small`` (100 KB operations, interleaved), ``big`` (30 MB
put and stream, a child process each), ``creation`` (what making a client
costs), ``threads`` (one client shared by threads), ``behaviour`` (what the
store answers where a backend must know), ``figures`` (timing and the tables);
``__main__`` runs them in that order.
"""

from __future__ import annotations

import subprocess
import sys

from bench.support import ROOT


def run_child(*arguments: str) -> str:
    """``python -m bench.storage --child ARGUMENTS`` in a fresh process; what it printed."""
    command = [sys.executable, "-m", "bench.storage", "--child", *arguments]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout
