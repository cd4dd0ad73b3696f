"""``amphigory queue``, ``amphigory jobs`` and ``amphigory job ACTION ID``."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from amphigory_tui.cli.context import CliContext, pass_cli
from amphigory_tui.domain.jobs import Job, JobStatus


@click.command()
@click.option("--limit", type=click.IntRange(min=0), default=None, help="Queue at most N jobs.")
@pass_cli
def queue(cli: CliContext, limit: int | None) -> None:
    """Queue a job for every file that needs transcoding and has none (the `a` key)."""
    count = cli.services().actions.queue_all(limit)
    suffix = " — all candidates already queued" if count == 0 else ""
    click.echo(f"Queued {count} jobs{suffix}")


@click.command()
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice([s.value for s in JobStatus]),
    help="Only jobs with this status (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="A JSON array with one object per job, for scripts.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most N jobs.")
@pass_cli
def jobs(cli: CliContext, statuses: tuple[str, ...], as_json: bool, limit: int | None) -> None:
    """List jobs, running first, then by priority."""
    wanted = frozenset(JobStatus(s) for s in statuses) or None
    found = cli.services().queries.jobs(statuses=wanted, limit=limit)
    if as_json:
        click.echo(json.dumps([_job_json(j) for j in found], ensure_ascii=False, indent=None))
        return
    if not found:
        click.echo("no jobs")
        return
    for job in found:
        stage = f"/{job.stage.value}" if job.stage and job.status is JobStatus.RUNNING else ""
        progress = f" {job.progress_percent:5.1f}%" if job.status is JobStatus.RUNNING else ""
        # One row per job: an error's first line is its reason (a stderr tail may follow it; `--json` has it all).
        reason = (job.error_message or "").partition("\n")[0]
        error = f"  ({reason})" if reason and job.status is not JobStatus.COMPLETED else ""
        click.echo(
            f"{job.id:>6}  {job.status.value + stage:<20} p{job.priority:<3} "
            f"try {job.attempts}/{job.max_retries}{progress}  {job.input_path!r}{error}"
        )


def _job_json(job: Job) -> dict[str, object]:
    data = asdict(job)
    for key in ("kind", "status", "stage", "pause_reason"):
        value = getattr(job, key)
        data[key] = value.value if value is not None else None
    return data


@click.group()
def job() -> None:
    """Act on one job: pause, resume, cancel, kill, retry, dismiss, priority."""


def _job_action(name: str, help_text: str) -> click.Command:
    @click.command(name=name, help=help_text)
    @click.argument("job_id", type=int)
    @pass_cli
    def command(cli: CliContext, job_id: int) -> None:
        result: Job = getattr(cli.services().actions, name)(job_id)
        pending = " (its worker will stop it)" if result.control_request else ""
        click.echo(f"job {result.id}: {result.status.value}{pending}")

    return command


for _name, _help in (
    ("pause", "Pause a job; a running job stops its tool and keeps its attempt."),
    ("resume", "Put a paused job back in the queue."),
    ("cancel", "Cancel a job and remove its temp files."),
    ("kill", "Cancel a running job at once, without a grace period."),
    ("retry", "Resubmit a failed, canceled or skipped job."),
    ("dismiss", "Hide a finished job from the queue."),
):
    job.add_command(_job_action(_name, _help))


@job.command()
@click.argument("job_id", type=int)
@click.argument("priority", type=click.IntRange(0, 100))
@pass_cli
def priority(cli: CliContext, job_id: int, priority: int) -> None:
    """Set a job's priority (0–100; higher runs first)."""
    result = cli.services().actions.set_priority(job_id, priority)
    click.echo(f"job {result.id}: priority {result.priority}")


COMMANDS = [queue, jobs, job]
