"""The CLI in-process (Typer's CliRunner) against a fake admin API."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from verbund.admin_client import AdminError
from verbund.cli import Session, app
from verbund.cli._target import Target

Answer = Any | Callable[[dict[str, Any]], Any]


@dataclass
class FakeApi:
    """Answers (method, path) with canned JSON; records the targets and the calls."""

    routes: dict[tuple[str, str], Answer] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    closed: int = 0

    def connect(self, target: Target) -> FakeApi:
        self.targets.append(target)
        return self

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        self.calls.append((method, path, kwargs))
        try:
            answer = self.routes[(method, path)]
        except KeyError:
            raise AdminError(f"HTTP 404: no route {method} {path}") from None
        return answer(kwargs) if callable(answer) else answer

    def close(self) -> None:
        self.closed += 1


@dataclass
class Cli:
    api: FakeApi
    env: dict[str, str]

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> Result:
        return CliRunner().invoke(
            app, list(args), obj=Session(self.api.connect), env={**self.env, **(env or {})}
        )


TARGET = ("--url", "http://ap.test", "--admin-key", "vbadmin-test")


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """Runs in an empty directory (no .verbund/demo.json) without target variables."""
    monkeypatch.chdir(tmp_path)
    for name in ("VERBUND_URL", "VERBUND_ADMIN_KEY", "VERBUND_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    return Cli(FakeApi(), {"NO_COLOR": "1", "COLUMNS": "200"})
