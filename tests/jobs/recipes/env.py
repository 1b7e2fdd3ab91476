"""Test recipe: records the names of the environment variables it sees."""

import json
import os
import sys
from pathlib import Path

job = Path(sys.argv[1])
(job / "output" / "env.json").write_text(json.dumps(sorted(os.environ)))
