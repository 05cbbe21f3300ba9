"""Diagnosis and progress: per-epoch validation predictions (packed), LR range tests, runs.progress, runs.facts, tta_results.seconds_per_image

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 06:45:00
"""

from alembic import op
import sqlalchemy as sa

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "epoch_predictions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("split", sa.String(length=16), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("pred", sa.LargeBinary(), nullable=False),
        sa.Column("confidence", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "split", "epoch", name="uq_epoch_predictions"),
    )
    op.create_table(
        "lr_finds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("dataset", sa.String(length=200), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("suggested_lr", sa.Float(), nullable=True),
        sa.Column("rule", sa.String(length=64), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("log_path", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("runs") as batch_op:
        batch_op.add_column(sa.Column("progress", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("facts", sa.JSON(), nullable=True))
    with op.batch_alter_table("tta_results") as batch_op:
        batch_op.add_column(sa.Column("seconds_per_image", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tta_results") as batch_op:
        batch_op.drop_column("seconds_per_image")
    with op.batch_alter_table("runs") as batch_op:
        batch_op.drop_column("facts")
        batch_op.drop_column("progress")
    op.drop_table("lr_finds")
    op.drop_table("epoch_predictions")
