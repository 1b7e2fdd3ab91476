"""Test recipe: runs until the test creates ``release`` in the job folder (at most 60 s)."""

import sys
import time
from pathlib import Path

job = Path(sys.argv[1])
deadline = time.monotonic() + 60
while not (job / "release").exists() and time.monotonic() < deadline:
    time.sleep(0.05)  # polls for the test's file
