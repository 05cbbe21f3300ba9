"""Studies keep their last parameter importance (fANOVA) with the finished-trial count it was fitted on

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 14:40:00
"""

from alembic import op
import sqlalchemy as sa

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("lab_studies") as batch_op:
        batch_op.add_column(sa.Column("importance", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("lab_studies") as batch_op:
        batch_op.drop_column("importance")
