"""``verbund jobs``: training and fine-tuning jobs, as admin or as one institution."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer

from verbund.cli._output import echo_json, emit
from verbund.cli._target import InstitutionTargetCommand, Session, session

COLUMNS = ["id", "institution", "recipe", "status", "site", "created", "model", "cpu_s", "gpu_s"]


def _jobs(ctx: typer.Context) -> tuple[Session, str]:
    """With an institution key: /v1/training/jobs (its own jobs); else /admin/jobs."""
    s = session(ctx)
    return s, "/v1/training/jobs" if s.target.institution else "/admin/jobs"


def _when(ts: Any) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def list_jobs(
    ctx: typer.Context,
    institution: Annotated[str | None, typer.Option("--institution")] = None,
    status: Annotated[str | None, typer.Option("--status")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100)] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Jobs, newest first: status, site, model, CPU and GPU seconds."""
    s, base = _jobs(ctx)
    params: dict[str, Any] = {"limit": limit}
    if institution:
        params["institution"] = institution
    if status:
        params["status"] = status
    data = s.call("GET", base, params=params)["data"]
    if as_json:
        echo_json(data)
        return
    rows = [
        {
            "id": j["id"],
            "institution": j["institution"],
            "recipe": j["recipe"],
            "status": j["status"],
            "site": j["site"],
            "created": _when(j["created_at"]),
            "model": j["result_model"],
            "cpu_s": j["usage"]["cpu_seconds"],
            "gpu_s": j["usage"]["gpu_seconds"],
        }
        for j in data
    ]
    emit(rows, COLUMNS)


def show(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(help="Job id (ftjob-... or trjob-...).")],
) -> None:
    """One job in full (JSON)."""
    s, base = _jobs(ctx)
    echo_json(s.call("GET", f"{base}/{job_id}"))


def events(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    limit: Annotated[int, typer.Option("--limit", min=1, max=100)] = 100,
) -> None:
    """The job's events, oldest first: placement, progress and metrics, outcome."""
    s, base = _jobs(ctx)
    data = s.call("GET", f"{base}/{job_id}/events", params={"limit": limit})["data"]
    for e in reversed(data):
        typer.echo(f"{_when(e['created_at'])}  {e['level']:<5}  {e['message']}")


def cancel(ctx: typer.Context, job_id: Annotated[str, typer.Argument(help="Job id.")]) -> None:
    """Cancel a job; a running one is stopped at its site."""
    s, base = _jobs(ctx)
    data = s.call("POST", f"{base}/{job_id}/cancel")
    typer.echo(f"{data['id']}: {data['status']}")


def register(app: typer.Typer) -> None:
    jobs = typer.Typer(no_args_is_help=True, help="Training and fine-tuning jobs.")
    jobs.command("list", cls=InstitutionTargetCommand)(list_jobs)
    jobs.command("show", cls=InstitutionTargetCommand)(show)
    jobs.command("events", cls=InstitutionTargetCommand)(events)
    jobs.command("cancel", cls=InstitutionTargetCommand)(cancel)
    app.add_typer(jobs, name="jobs")
