"""Handing comparisons to raters and recording their votes (the hot path of the app).

Policy: a rater holds at most one open assignment (the page shows one comparison at a time).
When they ask for work they get their open assignment back, or a new one: the comparison with
the most raters already (so majorities complete early), that they have never been assigned,
and that has fewer than `raters_per_comparison` raters. Left/right order is drawn per
assignment and stored. Open assignments without any vote that are older than the study's
`assignment_ttl_s` are released (their slot goes to someone else) when nothing else is left.

Concurrency: on PostgreSQL the candidate comparison is locked with `FOR UPDATE SKIP LOCKED`, so
concurrent raters take different comparisons without waiting; on SQLite the whole write
transaction holds the write lock. The unique constraints of `schema` back both up. Lookups that
need no lock (the rater behind a token, the study's questions, progress) run in read
transactions, outside the write lock. Statements are SQLAlchemy Core, not ORM objects: this
path runs for every vote.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast

from sqlalchemy import CursorResult, Table, bindparam, delete, exists, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from prefdiff.label.db import Database
from prefdiff.label.errors import BadRequestError, ConflictError, NotFoundError
from prefdiff.label.schema import (
    Assignment,
    Comparison,
    ImageRoot,
    Question,
    Rater,
    Study,
    Vote,
    utcnow,
)
from prefdiff.label.studies import hash_token
from prefdiff.stats import TIE

SIDES = ("left", "right", "tie")

# Prebuilt Core statements on the tables (no ORM layer, compiled once and cached by
# SQLAlchemy): this path runs for every vote, in the single writer thread.
_A, _C, _V = (cast(Table, model.__table__) for model in (Assignment, Comparison, Vote))
_R, _S, _Q = (cast(Table, model.__table__) for model in (Rater, Study, Question))
_FIND_RATER = (
    select(_R.c.id, _R.c.name, _S.c.id, _S.c.name, _S.c.allow_ties, _S.c.raters_per_comparison,
           _S.c.assignment_ttl_s, _Q.c.id, _Q.c.key, _Q.c.text)
    .select_from(_R.join(_S, _S.c.id == _R.c.study_id).join(_Q, _Q.c.study_id == _S.c.id))
    .where(_R.c.token_sha256 == bindparam("token_hash"), _R.c.active.is_(True))
    .order_by(_Q.c.position)
)  # fmt: skip
_VOTE_STATE = (
    select(_A.c.flipped, _A.c.completed_at, _V.c.side)
    .select_from(_A.outerjoin(_V, (_V.c.assignment_id == _A.c.id) & (_V.c.question_id == bindparam("q"))))
    .where(_A.c.id == bindparam("a"), _A.c.rater_id == bindparam("r"))
    .with_for_update(of=_A)
)
_INSERT_VOTE = insert(_V)
_COMPLETE = update(_A).where(_A.c.id == bindparam("a")).values(completed_at=bindparam("now"))
_COUNT_ANSWERED = select(func.count()).select_from(_V).where(_V.c.assignment_id == bindparam("a"))
_OPEN = (
    select(_A.c.id, _A.c.comparison_id)
    .where(_A.c.rater_id == bindparam("r"), _A.c.completed_at.is_(None))
    .order_by(_A.c.id)
    .limit(1)
)
# The order matches the `ix_comparisons_queue` index, so the database walks it and stops at the
# first comparison the rater has not had: the cost grows with the rater's own assignments, not
# with the size of the study.
_CANDIDATE = (
    select(_C.c.id, _C.c.prompt)
    .where(
        _C.c.study_id == bindparam("s"),
        _C.c.n_assigned < bindparam("k"),
        ~exists().where(_A.c.comparison_id == _C.c.id, _A.c.rater_id == bindparam("r")),
    )
    .order_by(_C.c.n_assigned.desc(), _C.c.position)
    .limit(1)
    .with_for_update(skip_locked=True, of=_C)
)
_SLOTS = select(_A.c.slot).where(_A.c.comparison_id == bindparam("c"))
_INSERT_ASSIGNMENT = insert(_A).returning(_A.c.id)
_BUMP = update(_C).where(_C.c.id == bindparam("c")).values(n_assigned=_C.c.n_assigned + 1)
_PROMPT = select(_C.c.prompt).where(_C.c.id == bindparam("c"))
_ANSWERED = select(_V.c.question_id).where(_V.c.assignment_id == bindparam("a"))
_DONE = select(func.count()).select_from(_A).where(_A.c.rater_id == bindparam("r"), _A.c.completed_at.is_not(None))


def as_utc(moment: datetime) -> datetime:
    """SQLite returns naive datetimes; they were stored as UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class RaterView:
    """The rater a token belongs to, with what voting needs of their study."""

    rater_id: int
    rater_name: str
    study_id: int
    study_name: str
    allow_ties: bool
    raters_per_comparison: int
    assignment_ttl_s: int
    questions: tuple[tuple[int, str, str], ...]  # (id, key, text) in order


def rater_for_token(db: Database, token: str) -> RaterView | None:
    """The active rater holding `token`, or None (unknown, disabled or malformed token)."""
    with db.read() as session:
        return find_rater(session, token)


def find_rater(session: Session, token: str) -> RaterView | None:
    """`rater_for_token` inside an open session."""
    if not token or len(token) > 128:
        return None
    rows = session.connection().execute(_FIND_RATER, {"token_hash": hash_token(token)}).all()
    if not rows:
        return None
    questions = tuple((row[7], row[8], row[9]) for row in rows)
    return RaterView(*rows[0][:7], questions=questions)


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

    def as_json(self) -> dict[str, int]:
        """JSON for the page."""
        return {"done": self.done, "available": self.available}


def _view(session: Session, rater: RaterView, assignment_id: int, comparison_id: int,
          prompt: str | None = None) -> AssignmentView:  # fmt: skip
    """The page's view of an assignment (`prompt` given for a fresh one: nothing answered)."""
    answered: set[int] = set()
    conn = session.connection()
    if prompt is None:
        prompt = conn.execute(_PROMPT, {"c": comparison_id}).scalar()
        if len(rater.questions) > 1:
            answered = set(conn.execute(_ANSWERED, {"a": assignment_id}).scalars())
    questions = [{"key": k, "text": t, "answered": i in answered} for i, k, t in rater.questions]
    return AssignmentView(assignment_id, prompt or "", questions, rater.allow_ties)


def _candidate(session: Session, rater: RaterView) -> tuple[int, str] | None:
    """(id, prompt) of the next comparison for the rater, locked (PostgreSQL)."""
    params = {"s": rater.study_id, "k": rater.raters_per_comparison, "r": rater.rater_id}
    row = session.connection().execute(_CANDIDATE, params).first()
    return None if row is None else (row[0], row[1])


def release_expired(session: Session, study_id: int, ttl_s: int) -> int:
    """Release open assignments of a study older than `ttl_s` that hold no vote; return how
    many. A vote racing in keeps its assignment: the foreign key makes the delete fail."""
    cutoff = utcnow() - timedelta(seconds=ttl_s)
    has_vote = exists().where(Vote.assignment_id == Assignment.id)
    stale = session.execute(
        select(Assignment.id, Assignment.comparison_id)
        .join(Comparison, Comparison.id == Assignment.comparison_id)
        .where(Comparison.study_id == study_id, Assignment.completed_at.is_(None),
               Assignment.created_at < cutoff, ~has_vote)
        .limit(500)
    ).all()  # fmt: skip
    released = 0
    for assignment_id, comparison_id in stale:
        session.execute(select(Comparison.id).where(Comparison.id == comparison_id).with_for_update())
        try:
            with session.begin_nested():
                deleted = session.execute(delete(Assignment).where(Assignment.id == assignment_id, ~has_vote))
                gone = cast(CursorResult, deleted).rowcount
                if gone:
                    session.execute(
                        update(Comparison).where(Comparison.id == comparison_id)
                        .values(n_assigned=Comparison.n_assigned - 1)
                    )  # fmt: skip
                    released += 1
        except IntegrityError:
            continue
    return released


def _assign(session: Session, rater: RaterView) -> AssignmentView | None:
    """Create a new assignment for the rater; None when nothing is left for them."""
    candidate = _candidate(session, rater)
    if candidate is None and release_expired(session, rater.study_id, rater.assignment_ttl_s):
        candidate = _candidate(session, rater)
    if candidate is None:
        return None
    comparison_id, prompt = candidate
    conn = session.connection()
    taken = set(conn.execute(_SLOTS, {"c": comparison_id}).scalars())
    slot = next(s for s in range(rater.raters_per_comparison) if s not in taken)
    assignment_id = conn.execute(
        _INSERT_ASSIGNMENT,
        {"comparison_id": comparison_id, "rater_id": rater.rater_id, "slot": slot,
         "flipped": secrets.randbelow(2) == 1, "created_at": utcnow(), "completed_at": None},
    ).scalar()  # fmt: skip
    conn.execute(_BUMP, {"c": comparison_id})
    assert assignment_id is not None
    return _view(session, rater, assignment_id, comparison_id, prompt)


def _open_or_new(session: Session, rater: RaterView) -> AssignmentView | None:
    row = session.connection().execute(_OPEN, {"r": rater.rater_id}).first()
    if row is not None:
        return _view(session, rater, row[0], row[1])
    return _assign(session, rater)


def next_in_session(session: Session, rater: RaterView) -> AssignmentView | None:
    """The rater's open assignment, or a new one; None when nothing is left for them."""
    return _open_or_new(session, rater)


def next_assignment(db: Database, rater: RaterView) -> AssignmentView | None:
    """`next_in_session` in its own write transaction (retried when it loses a race)."""
    for _attempt in range(5):
        try:
            with db.write() as session:
                return _open_or_new(session, rater)
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


def check_vote(rater: RaterView, question_key: str, side: str) -> int:
    """Validate a vote's question and choice for the rater's study; return the question id."""
    if side not in SIDES:
        raise BadRequestError(f"choice must be one of {list(SIDES)}, got {side!r}")
    if side == "tie" and not rater.allow_ties:
        raise BadRequestError("this study does not allow ties")
    question_id = next((i for i, key, _ in rater.questions if key == question_key), None)
    if question_id is None:
        keys = [key for _, key, _ in rater.questions]
        raise BadRequestError(f"unknown question {question_key!r}; this study asks {keys}")
    return question_id


def record_vote(db: Database, rater: RaterView, assignment_id: int, question_key: str, side: str) -> VoteResult:
    """Store one vote and hand out the rater's next assignment, in one transaction that is
    committed before this returns (the web app does the same through `writer.Writer`)."""
    for _attempt in range(5):
        try:
            with db.write() as session:
                return vote_in_session(session, rater, assignment_id, question_key, side)
        except IntegrityError:  # a race (same vote twice, or a slot): nothing was committed
            continue
    raise ConflictError("the vote could not be stored because of concurrent updates; retry")


def vote_in_session(session: Session, rater: RaterView, assignment_id: int,
                    question_key: str, side: str) -> VoteResult:  # fmt: skip
    """Store one vote (and hand out the next assignment) in an open write transaction.

    Re-sending the same vote is a no-op (`duplicate=True`); a different answer to an answered
    question is a `ConflictError`; someone else's assignment is a `NotFoundError`."""
    question_id = check_vote(rater, question_key, side)
    conn = session.connection()
    row = conn.execute(_VOTE_STATE, {"q": question_id, "a": assignment_id, "r": rater.rater_id}).first()
    if row is None:
        raise NotFoundError(f"assignment {assignment_id} is not assigned to you (or expired)")
    flipped, completed_at, existing = row
    if existing is not None and existing != side:
        raise ConflictError(
            f"question {question_key!r} of assignment {assignment_id} was already "
            f"answered {existing!r}; votes are final"
        )
    if existing is None:
        choice = TIE if side == "tie" else int((side == "right") != bool(flipped))
        conn.execute(
            _INSERT_VOTE,
            {"assignment_id": assignment_id, "question_id": question_id, "choice": choice,
             "side": side, "created_at": utcnow()},
        )  # fmt: skip
        answered = 1
        if len(rater.questions) > 1:
            answered = conn.execute(_COUNT_ANSWERED, {"a": assignment_id}).scalar() or 0
        if answered == len(rater.questions):
            completed_at = utcnow()
            conn.execute(_COMPLETE, {"a": assignment_id, "now": completed_at})
    following = _open_or_new(session, rater)
    return VoteResult(existing is not None, completed_at is not None, following)


def rater_progress(db: Database, rater: RaterView, exact: bool = True) -> Progress:
    """`progress_in_session` in a read transaction."""
    with db.read() as session:
        return progress_in_session(session, rater, exact)


def progress_in_session(session: Session, rater: RaterView, exact: bool = True) -> Progress:
    """How many comparisons the rater finished and how many more they could get (their open
    one included). With `exact=False` (after each vote) `available` is -1: counting it scans
    the study, so the page only asks for it when it loads the next comparison."""
    done = session.connection().execute(_DONE, {"r": rater.rater_id}).scalar() or 0
    if not exact:
        return Progress(done=done, available=-1)
    already = exists().where(Assignment.comparison_id == Comparison.id, Assignment.rater_id == rater.rater_id)
    available = session.scalar(
        select(func.count()).select_from(Comparison).where(
            Comparison.study_id == rater.study_id,
            Comparison.n_assigned < rater.raters_per_comparison, ~already,
        )
    ) or 0  # fmt: skip
    still_open = session.scalar(
        select(func.count()).select_from(Assignment)
        .where(Assignment.rater_id == rater.rater_id, Assignment.completed_at.is_(None))
    ) or 0  # fmt: skip
    return Progress(done=done, available=available + still_open)


def image_location(db: Database, rater: RaterView, assignment_id: int, side: str) -> tuple[str, str]:
    """(image directory, relative path) of the image shown on `side` of the rater's assignment."""
    if side not in ("left", "right"):
        raise NotFoundError("side must be 'left' or 'right'")
    with db.read() as session:
        row = session.execute(
            select(Assignment.flipped, Comparison.root_0_id, Comparison.path_0,
                   Comparison.root_1_id, Comparison.path_1)
            .join(Comparison, Comparison.id == Assignment.comparison_id)
            .where(Assignment.id == assignment_id, Assignment.rater_id == rater.rater_id)
        ).first()  # fmt: skip
        if row is None:
            raise NotFoundError(f"assignment {assignment_id} is not assigned to you")
        flipped, root_0, path_0, root_1, path_1 = row
        image = int((side == "right") != bool(flipped))
        root_id, path = (root_0, path_0) if image == 0 else (root_1, path_1)
        root = session.scalar(select(ImageRoot.path).where(ImageRoot.id == root_id))
        assert root is not None
        return root, path
