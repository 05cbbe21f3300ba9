"""lab_studies: a table of designed sets of runs; runs.study_id + runs.trial_number; status 'pruned'

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 03:20:00
"""

from alembic import op
import sqlalchemy as sa

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Written out: a migration must not change when the status enum does later.
BEFORE = ("queued", "running", "completed", "failed", "stopped", "lost")
AFTER = BEFORE + ("pruned",)


def _check(statuses) -> str:
    return "status IN ({})".format(", ".join(f"'{s}'" for s in statuses))


def upgrade() -> None:
    op.create_table(
        "lab_studies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("optuna_study_name", sa.String(length=200), nullable=False),
        sa.Column("configs_asked", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("optuna_study_name"),
    )
    with op.batch_alter_table("runs") as batch_op:
        batch_op.add_column(sa.Column("study_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("trial_number", sa.Integer(), nullable=True))
        batch_op.create_index("ix_runs_study_id", ["study_id"], unique=False)
        batch_op.create_foreign_key("fk_runs_study_id", "lab_studies", ["study_id"], ["id"], ondelete="SET NULL")
        batch_op.drop_constraint("ck_runs_status", type_="check")
        batch_op.create_check_constraint("ck_runs_status", _check(AFTER))


def downgrade() -> None:
    op.execute("UPDATE runs SET status = 'stopped' WHERE status = 'pruned'")
    with op.batch_alter_table("runs") as batch_op:
        batch_op.drop_constraint("ck_runs_status", type_="check")
        batch_op.create_check_constraint("ck_runs_status", _check(BEFORE))
        batch_op.drop_constraint("fk_runs_study_id", type_="foreignkey")
        batch_op.drop_index("ix_runs_study_id")
        batch_op.drop_column("trial_number")
        batch_op.drop_column("study_id")
    op.drop_table("lab_studies")
