"""The label app's tables (SQLAlchemy ORM). The Alembic migrations in `migrations/versions`
create exactly these; a test checks that the two agree.

Invariants that the database itself enforces (so that no race in the app can break them):

- a rater is assigned a comparison at most once: unique (comparison_id, rater_id);
- a comparison has at most `raters_per_comparison` assignments: each takes a numbered slot,
  unique (comparison_id, slot), and the app only hands out slots below the limit;
- one vote per (assignment, question): unique (assignment_id, question_id), which is also what
  makes re-submitting a vote idempotent;
- a vote's assignment can never be deleted (foreign key without cascade), so releasing an
  abandoned assignment can never take an acknowledged vote with it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base of the label app's tables."""


class Setting(Base):
    """Key/value settings of one label database (admin token hash, CSRF secret)."""

    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class AdminSession(Base):
    """A logged-in admin browser: the cookie holds a random id, this table its hash. A session
    ends at ``expires_at`` or when revoked (logout, or a new admin token)."""

    __tablename__ = "admin_sessions"
    id_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Study(Base):
    """One labelling study: an evaluation (run A vs run B) or a collection of new pairs."""

    __tablename__ = "studies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(20))  # "evaluation" | "collection"
    raters_per_comparison: Mapped[int] = mapped_column(Integer, default=5)
    allow_ties: Mapped[bool] = mapped_column(Boolean, default=True)
    assignment_ttl_s: Mapped[int] = mapped_column(Integer, default=3600)
    run_a: Mapped[str | None] = mapped_column(String(200), nullable=True)
    run_b: Mapped[str | None] = mapped_column(String(200), nullable=True)
    source: Mapped[str] = mapped_column(Text, default="")  # JSON: where the pairs came from
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    questions: Mapped[list[Question]] = relationship(back_populates="study", order_by="Question.position")
    roots: Mapped[list[ImageRoot]] = relationship(back_populates="study")


class Question(Base):
    """A question asked of every comparison of a study, e.g. "Which image do you prefer?"."""

    __tablename__ = "questions"
    __table_args__ = (UniqueConstraint("study_id", "key", name="uq_questions_study_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    key: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(String(500))
    position: Mapped[int] = mapped_column(Integer)

    study: Mapped[Study] = relationship(back_populates="questions")


class ImageRoot(Base):
    """A directory registered with a study; images are served only from inside these."""

    __tablename__ = "image_roots"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    path: Mapped[str] = mapped_column(Text)  # absolute, symlinks resolved

    study: Mapped[Study] = relationship(back_populates="roots")


class Comparison(Base):
    """Two images of one prompt. In an evaluation study image 0 is run A's, image 1 run B's."""

    __tablename__ = "comparisons"
    # The hand-out queue: "most raters first, then in order", walked by this index until the
    # first comparison the rater has not had (see assign._candidate).
    __table_args__ = (Index("ix_comparisons_queue", "study_id", text("n_assigned DESC"), "position"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    position: Mapped[int] = mapped_column(Integer)
    prompt: Mapped[str] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(String(200), nullable=True)
    prompt_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    image_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    seed: Mapped[int | None] = mapped_column(Integer, nullable=True)
    root_0_id: Mapped[int] = mapped_column(ForeignKey("image_roots.id"))
    path_0: Mapped[str] = mapped_column(Text)  # relative to root 0, POSIX separators
    root_1_id: Mapped[int] = mapped_column(ForeignKey("image_roots.id"))
    path_1: Mapped[str] = mapped_column(Text)
    model_0: Mapped[str | None] = mapped_column(String(500), nullable=True)
    model_1: Mapped[str | None] = mapped_column(String(500), nullable=True)
    n_assigned: Mapped[int] = mapped_column(Integer, default=0)


class Rater(Base):
    """A person with a personal link. Only the SHA-256 of the link's token is stored."""

    __tablename__ = "raters"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Assignment(Base):
    """A comparison handed to a rater, with the left/right order that rater sees."""

    __tablename__ = "assignments"
    __table_args__ = (
        UniqueConstraint("comparison_id", "rater_id", name="uq_assignments_comparison_rater"),
        UniqueConstraint("comparison_id", "slot", name="uq_assignments_comparison_slot"),
        Index("ix_assignments_rater_completed", "rater_id", "completed_at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    comparison_id: Mapped[int] = mapped_column(ForeignKey("comparisons.id"))
    rater_id: Mapped[int] = mapped_column(ForeignKey("raters.id"))
    slot: Mapped[int] = mapped_column(Integer)
    flipped: Mapped[bool] = mapped_column(Boolean)  # True: image 1 is shown on the left
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Vote(Base):
    """One rater's answer to one question about one comparison.

    `choice` is in comparison terms: 0 (image 0 wins), 1 (image 1 wins) or 2 (tie),
    `prefdiff.stats.WIN/LOSS/TIE`; `side` is what the rater clicked: "left", "right" or "tie".
    """

    __tablename__ = "votes"
    __table_args__ = (UniqueConstraint("assignment_id", "question_id", name="uq_votes_assignment_question"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id"))
    question_id: Mapped[int] = mapped_column(ForeignKey("questions.id"))
    choice: Mapped[int] = mapped_column(Integer)
    side: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
