"""Test recipe: keeps the parameters it was given, as a site-model recipe gets them."""

import sys
from pathlib import Path

job = Path(sys.argv[1])
(job / "output" / "params.json").write_text((job / "params.json").read_text())
