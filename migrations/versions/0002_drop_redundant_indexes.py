"""drop two indexes that every query already finds elsewhere

Each index a transition touches is one more page for the commit to write and fsync: the pool's per-job
commit (complete + next claim) got ~7 % cheaper without these two (bench/pool_noop.py).

- ``ix_job_attempts_job_id``: the unique (job_id, attempt) index starts with job_id and serves the same lookups.
- ``ix_transcode_jobs_worker_id``: only running jobs have an owner, and every query by owner also says
  ``status = 'running'``, which ``ix_transcode_jobs_claim`` (status first) narrows to a handful of rows.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 16:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this migration."""
    with op.batch_alter_table("job_attempts", schema=None) as batch_op:
        batch_op.drop_index("ix_job_attempts_job_id")
    with op.batch_alter_table("transcode_jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_transcode_jobs_worker_id")


def downgrade() -> None:
    """Revert this migration."""
    with op.batch_alter_table("transcode_jobs", schema=None) as batch_op:
        batch_op.create_index("ix_transcode_jobs_worker_id", ["worker_id"], unique=False)
    with op.batch_alter_table("job_attempts", schema=None) as batch_op:
        batch_op.create_index("ix_job_attempts_job_id", ["job_id"], unique=False)
