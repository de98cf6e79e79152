"""Handing comparisons to raters and recording their votes.

Policy: a rater holds at most one open assignment per study (the page shows one comparison at a
time). When they ask for work they get their open assignment back, or a new one: the
comparison with the most raters already (so majorities complete early), that they have never
been assigned, and that has fewer than `raters_per_comparison` raters. Left/right order is drawn
per assignment and stored. Open assignments without any vote that are older than the study's
`assignment_ttl_s` are released (their slot goes to someone else) when nothing else is left.

Concurrency: on PostgreSQL the candidate comparison is locked with `FOR UPDATE SKIP LOCKED`, so
concurrent raters take different comparisons without waiting; on SQLite the whole transaction
holds the write lock (`BEGIN IMMEDIATE`). The unique constraints of `schema` back both up.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from prefdiff.label.db import Database
from prefdiff.label.errors import BadRequestError, ConflictError, NotFoundError
from prefdiff.label.schema import TIE, Assignment, Comparison, Rater, Study, Vote, utcnow
from prefdiff.label.studies import hash_token

SIDES = ("left", "right", "tie")


def as_utc(moment: datetime) -> datetime:
    """SQLite returns naive datetimes; they were stored as UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class RaterView:
    """The rater a token belongs to, with what the pages need of their study."""

    rater_id: int
    rater_name: str
    study_id: int
    study_name: str
    allow_ties: bool


def rater_for_token(db: Database, token: str) -> RaterView | None:
    """The active rater holding `token`, or None (unknown, disabled or malformed token)."""
    if not token or len(token) > 128:
        return None
    with db.read() as session:
        row = session.execute(
            select(Rater, Study)
            .join(Study, Study.id == Rater.study_id)
            .where(Rater.token_sha256 == hash_token(token), Rater.active.is_(True))
        ).first()
    if row is None:
        return None
    rater, study = row
    return RaterView(rater.id, rater.name, study.id, study.name, study.allow_ties)


@dataclass
class AssignmentView:
    """What the rater page shows for one assignment (never which image is which run)."""

    assignment_id: int
    prompt: str
    questions: list[dict[str, object]]
    allow_ties: bool

    def as_json(self, image_url: str) -> dict[str, object]:
        """JSON for the page; `image_url` is the prefix of the image URLs."""
        return {
            "assignment_id": self.assignment_id,
            "prompt": self.prompt,
            "questions": self.questions,
            "allow_ties": self.allow_ties,
            "images": {side: f"{image_url}/{self.assignment_id}/{side}" for side in ("left", "right")},
        }


@dataclass
class Progress:
    """A rater's progress: comparisons done, and how many more they could still get."""

    done: int
    available: int
    extra: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, int]:
        """JSON for the page."""
        return {"done": self.done, "available": self.available, **self.extra}


def _view(session: Session, assignment: Assignment, study: Study) -> AssignmentView:
    comparison = session.get(Comparison, assignment.comparison_id)
    assert comparison is not None
    answered = set(
        session.scalars(select(Vote.question_id).where(Vote.assignment_id == assignment.id))
    )
    questions = [
        {"key": q.key, "text": q.text, "answered": q.id in answered} for q in study.questions
    ]
    return AssignmentView(assignment.id, comparison.prompt, questions, study.allow_ties)


def _candidate(session: Session, study: Study, rater_id: int) -> Comparison | None:
    already = exists().where(
        Assignment.comparison_id == Comparison.id, Assignment.rater_id == rater_id
    )
    query = (
        select(Comparison)
        .where(
            Comparison.study_id == study.id,
            Comparison.n_assigned < study.raters_per_comparison,
            ~already,
        )
        .order_by(Comparison.n_assigned.desc(), Comparison.position)
        .limit(1)
        .with_for_update(skip_locked=True, of=Comparison)
    )
    return session.scalar(query)


def release_expired(session: Session, study: Study) -> int:
    """Release open assignments of `study` older than its TTL that hold no vote; return count."""
    cutoff = utcnow() - timedelta(seconds=study.assignment_ttl_s)
    has_vote = exists().where(Vote.assignment_id == Assignment.id)
    stale = session.execute(
        select(Assignment.id, Assignment.comparison_id)
        .join(Comparison, Comparison.id == Assignment.comparison_id)
        .where(
            Comparison.study_id == study.id,
            Assignment.completed_at.is_(None),
            Assignment.created_at < cutoff,
            ~has_vote,
        )
        .limit(500)
    ).all()
    released = 0
    for assignment_id, comparison_id in stale:
        session.execute(
            select(Comparison.id).where(Comparison.id == comparison_id).with_for_update()
        )
        try:
            with session.begin_nested():
                gone = session.execute(
                    delete(Assignment).where(Assignment.id == assignment_id, ~has_vote)
                ).rowcount
                if gone:
                    session.execute(
                        update(Comparison)
                        .where(Comparison.id == comparison_id)
                        .values(n_assigned=Comparison.n_assigned - 1)
                    )
                    released += 1
        except IntegrityError:  # a vote arrived meanwhile: the assignment stays
            continue
    return released


def _assign(session: Session, study: Study, rater_id: int) -> Assignment | None:
    comparison = _candidate(session, study, rater_id)
    if comparison is None and release_expired(session, study):
        comparison = _candidate(session, study, rater_id)
    if comparison is None:
        return None
    taken = set(
        session.scalars(select(Assignment.slot).where(Assignment.comparison_id == comparison.id))
    )
    slot = next(s for s in range(study.raters_per_comparison) if s not in taken)
    assignment = Assignment(
        comparison_id=comparison.id,
        rater_id=rater_id,
        slot=slot,
        flipped=secrets.randbelow(2) == 1,
    )
    session.add(assignment)
    comparison.n_assigned = comparison.n_assigned + 1
    session.flush()
    return assignment


def _open_or_new(session: Session, study: Study, rater_id: int) -> AssignmentView | None:
    open_one = session.scalar(
        select(Assignment)
        .join(Comparison, Comparison.id == Assignment.comparison_id)
        .where(
            Assignment.rater_id == rater_id,
            Assignment.completed_at.is_(None),
            Comparison.study_id == study.id,
        )
        .order_by(Assignment.id)
        .limit(1)
    )
    assignment = open_one or _assign(session, study, rater_id)
    return None if assignment is None else _view(session, assignment, study)


def next_assignment(db: Database, rater: RaterView) -> AssignmentView | None:
    """The rater's open assignment, or a new one; None when there is nothing left for them."""
    for _attempt in range(5):
        try:
            with db.write() as session:
                study = session.get(Study, rater.study_id)
                assert study is not None
                return _open_or_new(session, study, rater.rater_id)
        except IntegrityError:  # lost a race for a slot (PostgreSQL): try the next comparison
            continue
    raise ConflictError("could not find a free comparison; please retry")


@dataclass(frozen=True)
class VoteResult:
    """Outcome of a vote: whether it was new, whether the assignment is now complete, and the
    rater's next assignment (None when nothing is left)."""

    duplicate: bool
    completed: bool
    next: AssignmentView | None


def record_vote(
    db: Database, rater: RaterView, assignment_id: int, question_key: str, side: str
) -> VoteResult:
    """Store one vote and hand out the rater's next assignment, in one transaction that is
    committed before this returns (so before the HTTP response acknowledges the vote).

    Re-sending the same vote is a no-op (`duplicate=True`); a different answer to an answered
    question is a `ConflictError`."""
    if side not in SIDES:
        raise BadRequestError(f"choice must be one of {list(SIDES)}, got {side!r}")
    if side == "tie" and not rater.allow_ties:
        raise BadRequestError("this study does not allow ties")
    for _attempt in range(5):
        try:
            return _record_vote(db, rater, assignment_id, question_key, side)
        except IntegrityError:  # a race (same vote twice, or a slot): nothing was committed
            continue
    raise ConflictError("the vote could not be stored because of concurrent updates; retry")


def _record_vote(
    db: Database, rater: RaterView, assignment_id: int, question_key: str, side: str
) -> VoteResult:
    with db.write() as session:
        assignment = session.scalar(
            select(Assignment)
            .where(Assignment.id == assignment_id, Assignment.rater_id == rater.rater_id)
            .with_for_update()
        )
        if assignment is None:
            raise NotFoundError(f"assignment {assignment_id} is not assigned to you (or expired)")
        study = session.get(Study, rater.study_id)
        assert study is not None
        questions = list(study.questions)
        question = next((q for q in questions if q.key == question_key), None)
        if question is None:
            raise BadRequestError(
                f"unknown question {question_key!r}; this study asks {[q.key for q in questions]}"
            )
        choice = TIE if side == "tie" else int((side == "right") != assignment.flipped)
        existing = session.scalar(
            select(Vote).where(Vote.assignment_id == assignment.id, Vote.question_id == question.id)
        )
        duplicate = existing is not None
        if existing is not None and existing.side != side:
            raise ConflictError(
                f"question {question_key!r} of assignment {assignment_id} was already "
                f"answered {existing.side!r}; votes are final"
            )
        if existing is None:
            session.add(
                Vote(assignment_id=assignment.id, question_id=question.id, choice=choice, side=side)
            )
            session.flush()
            answered = session.scalar(
                select(func.count()).select_from(Vote).where(Vote.assignment_id == assignment.id)
            )
            if answered == len(questions):
                assignment.completed_at = utcnow()
        completed = assignment.completed_at is not None
        following = _open_or_new(session, study, rater.rater_id)
        return VoteResult(duplicate=duplicate, completed=completed, next=following)


def rater_progress(db: Database, rater: RaterView) -> Progress:
    """How many comparisons the rater finished, and how many more they could get."""
    with db.read() as session:
        study = session.get(Study, rater.study_id)
        assert study is not None
        done = session.scalar(
            select(func.count())
            .select_from(Assignment)
            .where(Assignment.rater_id == rater.rater_id, Assignment.completed_at.is_not(None))
        )
        already = exists().where(
            Assignment.comparison_id == Comparison.id, Assignment.rater_id == rater.rater_id
        )
        available = session.scalar(
            select(func.count())
            .select_from(Comparison)
            .where(
                Comparison.study_id == study.id,
                Comparison.n_assigned < study.raters_per_comparison,
                ~already,
            )
        )
        open_count = session.scalar(
            select(func.count())
            .select_from(Assignment)
            .where(Assignment.rater_id == rater.rater_id, Assignment.completed_at.is_(None))
        )
    return Progress(done=done or 0, available=(available or 0) + (open_count or 0))


def image_location(db: Database, rater: RaterView, assignment_id: int, side: str) -> tuple[str, str]:
    """(image directory, relative path) of the image shown on `side` of the rater's assignment."""
    from prefdiff.label.schema import ImageRoot

    if side not in ("left", "right"):
        raise NotFoundError("side must be 'left' or 'right'")
    with db.read() as session:
        row = session.execute(
            select(Assignment, Comparison)
            .join(Comparison, Comparison.id == Assignment.comparison_id)
            .where(Assignment.id == assignment_id, Assignment.rater_id == rater.rater_id)
        ).first()
        if row is None:
            raise NotFoundError(f"assignment {assignment_id} is not assigned to you")
        assignment, comparison = row
        image = int((side == "right") != assignment.flipped)
        root_id, path = (
            (comparison.root_0_id, comparison.path_0)
            if image == 0
            else (comparison.root_1_id, comparison.path_1)
        )
        root = session.get(ImageRoot, root_id)
        assert root is not None
        return root.path, path
