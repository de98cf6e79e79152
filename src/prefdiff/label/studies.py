"""Creating studies and raters, and the admin token. Used by the CLI and the admin pages."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from prefdiff.label.db import Database
from prefdiff.label.errors import NotFoundError, StudyError
from prefdiff.label.schema import Comparison, ImageRoot, Question, Rater, Setting, Study
from prefdiff.label.sources import Source, collection_source, evaluation_source

BUILTIN_QUESTIONS: dict[str, str] = {
    "preference": "Which image do you prefer?",
    "aesthetics": "Which image is more visually appealing?",
    "alignment": "Which image better fits the text?",
}
"""The paper's three questions; "preference" is the default and the one exported for training."""

_KEY_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
ADMIN_TOKEN_KEY = "admin_token_sha256"
SECRET_KEY = "secret"


def hash_token(token: str) -> str:
    """SHA-256 hex digest of a token (tokens are 192-bit random, so no salt/stretching needed)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A fresh unguessable token (32 URL-safe characters, 192 bits)."""
    return secrets.token_urlsafe(24)


def parse_questions(specs: list[str] | None) -> list[tuple[str, str]]:
    """Questions from CLI/form specs: a built-in key ("aesthetics") or "key=Question text?"."""
    if not specs:
        return [("preference", BUILTIN_QUESTIONS["preference"])]
    questions: list[tuple[str, str]] = []
    for spec in specs:
        key, sep, text = spec.partition("=")
        key, text = key.strip(), text.strip()
        if not sep:
            if key not in BUILTIN_QUESTIONS:
                raise StudyError(
                    f"unknown question {key!r}: use one of {sorted(BUILTIN_QUESTIONS)} or 'key=Your question?'"
                )
            text = BUILTIN_QUESTIONS[key]
        if not _KEY_RE.match(key):
            raise StudyError(f"question key {key!r} must match {_KEY_RE.pattern}")
        if not text or len(text) > 500:
            raise StudyError(f"question {key!r}: text must be 1-500 characters")
        if key in {k for k, _ in questions}:
            raise StudyError(f"question {key!r} given twice")
        questions.append((key, text))
    return questions


@dataclass(frozen=True)
class StudyOptions:
    """How a study asks: questions, ties, raters per comparison, assignment expiry."""

    name: str
    questions: list[tuple[str, str]]
    allow_ties: bool = True
    raters_per_comparison: int = 5
    assignment_ttl_s: int = 3600

    def validate(self) -> None:
        """Raise `StudyError` on an out-of-range option."""
        if not self.name.strip() or len(self.name) > 200:
            raise StudyError("study name must be 1-200 characters")
        if not 1 <= self.raters_per_comparison <= 100:
            raise StudyError("raters_per_comparison must be between 1 and 100")
        if self.assignment_ttl_s < 10:
            raise StudyError("assignment_ttl_s must be at least 10 seconds")
        if not self.questions:
            raise StudyError("a study needs at least one question")


def load_source(kind: str, *, run_a: Path | None = None, run_b: Path | None = None,
                pairs: Path | None = None, name_a: str | None = None,
                name_b: str | None = None, allow_sampler_mismatch: bool = False) -> Source:  # fmt: skip
    """Read the images of a study of `kind` ("evaluation" or "collection"); an evaluation of runs
    sampled differently is refused unless `allow_sampler_mismatch`."""
    if kind == "evaluation":
        if run_a is None or run_b is None:
            raise StudyError("an evaluation study needs --run-a and --run-b (generation run dirs)")
        return evaluation_source(Path(run_a), Path(run_b), name_a, name_b, allow_sampler_mismatch)
    if kind == "collection":
        if pairs is None:
            raise StudyError("a collection study needs --pairs (a pairs.jsonl or a pairs folder)")
        return collection_source(Path(pairs))
    raise StudyError(f"unknown study kind {kind!r}: use 'evaluation' or 'collection'")


def create_study(db: Database, source: Source, options: StudyOptions) -> int:
    """Store a study with its questions, image directories and comparisons; return its id."""
    options.validate()
    if not source.comparisons:
        raise StudyError("the study has no comparisons")
    try:
        with db.write() as session:
            study = Study(
                name=options.name.strip(), kind=source.description.get("kind", "collection")
                if source.description else "collection",
                raters_per_comparison=options.raters_per_comparison,
                allow_ties=options.allow_ties, assignment_ttl_s=options.assignment_ttl_s,
                run_a=source.run_a, run_b=source.run_b,
                source=json.dumps(source.description or {}),
            )  # fmt: skip
            session.add(study)
            session.flush()
            for position, (key, text) in enumerate(options.questions):
                session.add(Question(study_id=study.id, key=key, text=text, position=position))
            roots = [ImageRoot(study_id=study.id, path=str(root)) for root in source.roots]
            session.add_all(roots)
            session.flush()
            session.add_all(
                Comparison(
                    study_id=study.id,
                    position=position,
                    prompt=spec.prompt,
                    category=spec.category,
                    prompt_index=spec.prompt_index,
                    image_index=spec.image_index,
                    seed=spec.seed,
                    root_0_id=roots[spec.root_0].id,
                    path_0=spec.path_0,
                    root_1_id=roots[spec.root_1].id,
                    path_1=spec.path_1,
                    model_0=spec.model_0,
                    model_1=spec.model_1,
                    n_assigned=0,
                )  # fmt: skip
                for position, spec in enumerate(source.comparisons)
            )
            return study.id
    except IntegrityError:
        raise StudyError(f"a study named {options.name!r} already exists") from None


def find_study(session: Session, study: str | int) -> Study:
    """A study by id or name."""
    if isinstance(study, int) or str(study).isdigit():
        found = session.get(Study, int(study))
        if found is not None:
            return found
    found = session.scalar(select(Study).where(Study.name == str(study)))
    if found is None:
        raise NotFoundError(f"no study {study!r}")
    return found


@dataclass(frozen=True)
class NewRater:
    """A rater just created: the token is shown once and never stored in clear."""

    id: int
    name: str
    token: str

    def link(self, base_url: str) -> str:
        """The rater's personal link."""
        return f"{base_url.rstrip('/')}/r/{self.token}"


def add_raters(db: Database, study: str | int, names: list[str] | None = None,
               count: int = 0) -> list[NewRater]:  # fmt: skip
    """Create raters (named, or `count` numbered ones) and return their one-time tokens."""
    with db.write() as session:
        found = find_study(session, study)
        existing = session.scalar(select(func.count()).where(Rater.study_id == found.id)) or 0
        wanted = [n.strip() for n in names or [] if n.strip()]
        wanted += [f"rater-{existing + len(wanted) + i + 1}" for i in range(count)]
        if not wanted:
            raise StudyError("give rater names or a count of raters to create")
        if len(wanted) > 1000:
            raise StudyError("at most 1000 raters at a time")
        created = []
        for name in wanted:
            token = new_token()
            rater = Rater(study_id=found.id, name=name[:200], token_sha256=hash_token(token), active=True)
            session.add(rater)
            session.flush()
            created.append(NewRater(id=rater.id, name=rater.name, token=token))
        return created


def rotate_rater_token(db: Database, rater_id: int) -> NewRater:
    """Give a rater a new link (the old one stops working); their votes stay theirs."""
    with db.write() as session:
        rater = session.get(Rater, rater_id)
        if rater is None:
            raise NotFoundError(f"no rater {rater_id}")
        token = new_token()
        rater.token_sha256 = hash_token(token)
        return NewRater(id=rater.id, name=rater.name, token=token)


def set_rater_active(db: Database, rater_id: int, active: bool) -> None:
    """Enable or disable a rater's link."""
    with db.write() as session:
        rater = session.get(Rater, rater_id)
        if rater is None:
            raise NotFoundError(f"no rater {rater_id}")
        rater.active = active


def ensure_secret(db: Database) -> str:
    """The server secret (signs CSRF tokens), created on first use."""
    with db.write() as session:
        row = session.get(Setting, SECRET_KEY)
        if row is None:
            row = Setting(key=SECRET_KEY, value=secrets.token_hex(32))
            session.add(row)
        return row.value


def set_admin_token(db: Database, token: str | None = None) -> str:
    """Store the hash of `token` (or of a new random one) as the admin token; return it."""
    token = token or new_token()
    if len(token) < 16:
        raise StudyError("the admin token must be at least 16 characters")
    with db.write() as session:
        row = session.get(Setting, ADMIN_TOKEN_KEY)
        if row is None:
            session.add(Setting(key=ADMIN_TOKEN_KEY, value=hash_token(token)))
        elif row.value != hash_token(token):  # a new token ends every session the old one opened
            row.value = hash_token(token)
            _revoke_admin_sessions(session)
    return token


ADMIN_SESSION_S = 12 * 3600
"""How long an admin login lasts."""


def start_admin_session(db: Database, ttl_s: int = ADMIN_SESSION_S) -> str:
    """A new admin session: returns its id (for the cookie); only its hash is stored."""
    from datetime import timedelta

    from prefdiff.label.schema import AdminSession, utcnow

    session_id = new_token()
    with db.write() as session:
        session.add(AdminSession(id_sha256=hash_token(session_id), expires_at=utcnow() + timedelta(seconds=ttl_s)))
    return session_id


def check_admin_session(db: Database, session_id: str | None) -> bool:
    """Whether ``session_id`` is a live admin session (not expired, not revoked)."""
    from prefdiff.label.schema import AdminSession, utcnow

    if not session_id or len(session_id) > 256:
        return False
    with db.read() as session:
        row = session.get(AdminSession, hash_token(session_id))
        if row is None or row.revoked_at is not None:
            return False
        expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=utcnow().tzinfo)
        return expires > utcnow()


def end_admin_session(db: Database, session_id: str | None) -> None:
    """Revoke ``session_id`` (logout): the cookie stops working even if it was copied."""
    from prefdiff.label.schema import AdminSession, utcnow

    if not session_id:
        return
    with db.write() as session:
        row = session.get(AdminSession, hash_token(session_id))
        if row is not None and row.revoked_at is None:
            row.revoked_at = utcnow()


def _revoke_admin_sessions(session: Session) -> None:
    from sqlalchemy import update

    from prefdiff.label.schema import AdminSession, utcnow

    session.execute(update(AdminSession).where(AdminSession.revoked_at.is_(None)).values(revoked_at=utcnow()))


def has_admin_token(db: Database) -> bool:
    """Whether an admin token was set."""
    with db.read() as session:
        return session.get(Setting, ADMIN_TOKEN_KEY) is not None


def check_admin_token(db: Database, token: str | None) -> bool:
    """Constant-time check of a presented admin token."""
    if not token:
        return False
    with db.read() as session:
        row = session.get(Setting, ADMIN_TOKEN_KEY)
    return row is not None and hmac.compare_digest(row.value, hash_token(token))
