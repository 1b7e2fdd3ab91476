"""``python -m verbund.demo_models train NAME ...``: train demo models ahead of ``verbund up``.

The environment scripts call it once their venv is made, so the demo starts warm.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from verbund.demo_models._environments import ENVIRONMENTS, find_python
from verbund.demo_models._mlserver import TRAINERS
from verbund.demo_models._training import TrainingFailed, train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verbund.demo_models")
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("train", help="train demo models (kept beside their venv)")
    cmd.add_argument("names", nargs="+", choices=sorted(TRAINERS))
    cmd.add_argument("--state-dir", default=".verbund", type=Path)
    args = parser.parse_args(argv)
    for name in args.names:
        environment = TRAINERS[name].environment
        python = find_python(environment)
        if python is None:
            print(f"no {environment} venv: run {ENVIRONMENTS[environment].script}", file=sys.stderr)
            return 1
        try:
            print(f"{name}: {train(name, python, args.state_dir)}")
        except TrainingFailed as exc:
            print(exc, file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
