"""Initial schema of the label app.

Revision ID: 0001
Revises:
Create Date: 2025-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create all tables."""
    op.create_table(
        "settings",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )
    op.create_table(
        "studies",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("raters_per_comparison", sa.Integer(), nullable=False),
        sa.Column("allow_ties", sa.Boolean(), nullable=False),
        sa.Column("assignment_ttl_s", sa.Integer(), nullable=False),
        sa.Column("run_a", sa.String(200), nullable=True),
        sa.Column("run_b", sa.String(200), nullable=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_table(
        "questions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("study_id", sa.Integer(), sa.ForeignKey("studies.id"), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("text", sa.String(500), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.UniqueConstraint("study_id", "key", name="uq_questions_study_key"),
    )
    op.create_index("ix_questions_study_id", "questions", ["study_id"])
    op.create_table(
        "image_roots",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("study_id", sa.Integer(), sa.ForeignKey("studies.id"), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
    )
    op.create_index("ix_image_roots_study_id", "image_roots", ["study_id"])
    op.create_table(
        "comparisons",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("study_id", sa.Integer(), sa.ForeignKey("studies.id"), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("category", sa.String(200), nullable=True),
        sa.Column("prompt_index", sa.Integer(), nullable=True),
        sa.Column("image_index", sa.Integer(), nullable=True),
        sa.Column("seed", sa.Integer(), nullable=True),
        sa.Column("root_0_id", sa.Integer(), sa.ForeignKey("image_roots.id"), nullable=False),
        sa.Column("path_0", sa.Text(), nullable=False),
        sa.Column("root_1_id", sa.Integer(), sa.ForeignKey("image_roots.id"), nullable=False),
        sa.Column("path_1", sa.Text(), nullable=False),
        sa.Column("model_0", sa.String(500), nullable=True),
        sa.Column("model_1", sa.String(500), nullable=True),
        sa.Column("n_assigned", sa.Integer(), nullable=False),
    )
    op.create_index("ix_comparisons_queue", "comparisons", ["study_id", sa.text("n_assigned DESC"), "position"])
    op.create_table(
        "raters",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("study_id", sa.Integer(), sa.ForeignKey("studies.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_index("ix_raters_study_id", "raters", ["study_id"])
    op.create_table(
        "assignments",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("comparison_id", sa.Integer(), sa.ForeignKey("comparisons.id"), nullable=False),
        sa.Column("rater_id", sa.Integer(), sa.ForeignKey("raters.id"), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("flipped", sa.Boolean(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("completed_at", _TS, nullable=True),
        sa.UniqueConstraint("comparison_id", "rater_id", name="uq_assignments_comparison_rater"),
        sa.UniqueConstraint("comparison_id", "slot", name="uq_assignments_comparison_slot"),
    )
    op.create_index("ix_assignments_rater_completed", "assignments", ["rater_id", "completed_at"])
    op.create_table(
        "votes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("assignment_id", sa.Integer(), sa.ForeignKey("assignments.id"), nullable=False),
        sa.Column("question_id", sa.Integer(), sa.ForeignKey("questions.id"), nullable=False),
        sa.Column("choice", sa.Integer(), nullable=False),
        sa.Column("side", sa.String(8), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.UniqueConstraint("assignment_id", "question_id", name="uq_votes_assignment_question"),
    )


def downgrade() -> None:
    """Drop all tables."""
    for table in (
        "votes",
        "assignments",
        "raters",
        "comparisons",
        "image_roots",
        "questions",
        "studies",
        "settings",
    ):
        op.drop_table(table)
