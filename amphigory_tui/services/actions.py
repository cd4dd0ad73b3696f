"""Write facade for the UI and the CLI: every user action, each a named store operation."""

from __future__ import annotations

from amphigory_tui.domain.errors import InvalidTransition
from amphigory_tui.domain.jobs import Job, JobStatus
from amphigory_tui.store import Store


class Actions:
    """What a user can do to the queue, from a key or a command."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def queue_all(self, limit: int | None = None) -> int:
        """Queue every file that needs transcoding and has no job (what `a` does); returns how many."""
        count = self._store.jobs.queue_for_transcoding(limit)
        if count:
            self._store.log.append(f"Queued {count} jobs", event_type="queued")
        return count

    def pause(self, job_id: int) -> Job:
        """Pause a job (a running one stops its tool; no attempt is used)."""
        return self._log(self._store.jobs.pause(job_id), "pause requested")

    def resume(self, job_id: int) -> Job:
        """Put a paused job back in the queue."""
        return self._log(self._store.jobs.resume(job_id), "resumed")

    def cancel(self, job_id: int) -> Job:
        """Cancel a job (a running one is stopped and its temp files removed)."""
        return self._log(self._store.jobs.cancel(job_id), "cancel requested")

    def kill(self, job_id: int) -> Job:
        """Force-cancel a job: its tool is killed without a grace period."""
        return self._log(self._store.jobs.kill(job_id), "kill requested")

    def retry(self, job_id: int) -> Job:
        """Resubmit a failed, canceled, skipped or completed job with a fresh budget of attempts."""
        return self._log(self._store.jobs.resubmit(job_id), "resubmitted")

    def dismiss(self, job_id: int) -> Job:
        """Hide a finished job from the queue."""
        return self._store.jobs.dismiss(job_id)

    def remove(self, job_id: int) -> Job:
        """Take a job off the list: a queued or paused one is canceled first; a running one is refused."""
        job = self._store.jobs.get(job_id)
        if job.status is JobStatus.RUNNING:
            raise InvalidTransition(job_id, job.status.value, "removed (cancel it first)")
        if job.status in (JobStatus.QUEUED, JobStatus.PAUSED):
            self._log(self._store.jobs.cancel(job_id, reason="removed from the queue"), "removed")
        return self._store.jobs.dismiss(job_id)

    def set_priority(self, job_id: int, priority: int) -> Job:
        """Change a job's priority (0–100)."""
        return self._store.jobs.set_priority(job_id, priority)

    def bulk(self, action: str, job_ids: list[int]) -> int:
        """Apply ``pause`` or ``cancel`` to many jobs; returns how many accepted it."""
        done = 0
        for job_id in job_ids:
            job = self._store.jobs.get(job_id)
            if action == "pause" and job.status in (JobStatus.RUNNING, JobStatus.QUEUED):
                self.pause(job_id)
                done += 1
            elif action == "cancel" and job.is_live:
                self.cancel(job_id)
                done += 1
        return done

    def _log(self, job: Job, what: str) -> Job:
        self._store.log.append(f"Job {job.id} {what}: {job.name}", event_type=what.split()[0], job_id=job.id)
        return job
