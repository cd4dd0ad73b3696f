"""The exception family every layer raises; the CLI turns them into one-line messages."""

from __future__ import annotations


class AmphigoryError(Exception):
    """Base of every error amphigory expects and reports without a traceback."""

    exit_code = 1


class ConfigError(AmphigoryError):
    """The configuration file or a command-line value is invalid (exit code 2)."""

    exit_code = 2


class UsageError(AmphigoryError):
    """The command line asks for something impossible (exit code 2)."""

    exit_code = 2


class ScanBusy(AmphigoryError):
    """Another scan of the same database is running (exit code 1: nothing is wrong, try again once it is done)."""


class InvalidTransition(AmphigoryError):
    """A job status change that the state machine does not allow."""

    def __init__(self, job_id: int | None, current: str, target: str) -> None:
        self.job_id = job_id
        self.current = current
        self.target = target
        who = f"job {job_id}" if job_id is not None else "a job"
        super().__init__(f"{who} cannot go from {current} to {target}")


class StaleLease(AmphigoryError):
    """An update from a worker that no longer owns the job (it changed nothing)."""


class JobNotFound(AmphigoryError):
    """No job with the given id exists."""

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id} does not exist")


class ToolNotFound(AmphigoryError):
    """An external program (HandBrakeCLI, ffprobe, makemkvcon) is not installed."""

    def __init__(self, tool: str, hint: str = "") -> None:
        self.tool = tool
        message = f"{tool} was not found"
        super().__init__(f"{message}; {hint}" if hint else message)


class ToolFailed(AmphigoryError):
    """An external program exited with a failure."""

    def __init__(self, tool: str, returncode: int, stderr_tail: str = "", *, permanent: bool = False) -> None:
        self.tool = tool
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        self.permanent = permanent
        tail = stderr_tail.strip().splitlines()[-1:] if stderr_tail.strip() else []
        detail = f": {tail[0]}" if tail else ""
        super().__init__(f"{tool} exited with code {returncode}{detail}")


class JobError(AmphigoryError):
    """A pipeline stage failed; ``permanent`` says whether retrying can help."""

    def __init__(self, message: str, *, permanent: bool = False, skip: bool = False) -> None:
        self.permanent = permanent
        self.skip = skip
        super().__init__(message)


class StoreError(AmphigoryError):
    """The database cannot be opened, migrated or written."""
