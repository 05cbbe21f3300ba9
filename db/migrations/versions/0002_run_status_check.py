"""runs.status: a CHECK constraint on the known run statuses

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 03:10:00
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# The statuses as of this revision, written out: a migration must not change when the enum does later.
STATUSES = ("queued", "running", "completed", "failed", "stopped", "lost")


def upgrade() -> None:
    # batch mode: SQLite cannot add a constraint to an existing table, so the table is copied with it.
    with op.batch_alter_table("runs") as batch_op:
        batch_op.create_check_constraint(
            "ck_runs_status", "status IN ({})".format(", ".join(f"'{s}'" for s in STATUSES))
        )


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch_op:
        batch_op.drop_constraint("ck_runs_status", type_="check")
