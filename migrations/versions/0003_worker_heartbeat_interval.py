"""record each worker's heartbeat interval

Machines sharing a PostgreSQL database may beat at different intervals; the Workers tab judges a late heartbeat
by the interval of the worker that writes it, not by the viewer's own setting.  Rows of older versions keep NULL
there and are judged by the viewer's interval, as before.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 09:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this migration."""
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("heartbeat_interval_s", sa.Float(), nullable=True))


def downgrade() -> None:
    """Revert this migration."""
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_column("heartbeat_interval_s")
