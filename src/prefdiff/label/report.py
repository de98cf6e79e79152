"""What the admin page, `prefdiff label status` and the exports know about a study: its votes,
the majority decision per comparison and question, progress, agreement and win rates."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from prefdiff.label.assign import as_utc
from prefdiff.label.db import Database
from prefdiff.label.schema import Assignment, Comparison, Question, Rater, Study, Vote
from prefdiff.label.studies import find_study
from prefdiff.stats import (
    agreement,
    majority,
    rater_agreement_with_majority,
    win_rate,
)


@dataclass(frozen=True)
class VoteRow:
    """One vote with its context (a row of the raw votes export)."""

    vote_id: int
    question: str
    comparison_id: int
    rater_id: int
    rater_name: str
    assignment_id: int
    flipped: bool
    side: str
    choice: int
    assigned_at: datetime
    voted_at: datetime


@dataclass(frozen=True)
class Decision:
    """The majority decision of one comparison for one question."""

    comparison_id: int
    decision: int
    counts: tuple[int, int, int]  # votes for image 0, image 1, tie
    last_vote_at: datetime


def load_votes(session: Session, study_id: int) -> list[VoteRow]:
    """All votes of a study, in the order they were cast."""
    rows = session.execute(
        select(Vote, Question.key, Assignment, Rater.name)
        .join(Question, Question.id == Vote.question_id)
        .join(Assignment, Assignment.id == Vote.assignment_id)
        .join(Rater, Rater.id == Assignment.rater_id)
        .where(Question.study_id == study_id)
        .order_by(Vote.id)
    ).all()
    return [
        VoteRow(
            vote_id=vote.id,
            question=key,
            comparison_id=assignment.comparison_id,
            rater_id=assignment.rater_id,
            rater_name=rater_name,
            assignment_id=assignment.id,
            flipped=assignment.flipped,
            side=vote.side,
            choice=vote.choice,
            assigned_at=as_utc(assignment.created_at),
            voted_at=as_utc(vote.created_at),
        )  # fmt: skip
        for vote, key, assignment, rater_name in rows
    ]


def decisions(
    votes: list[VoteRow], question: str, required: int, include_incomplete: bool = False
) -> dict[int, Decision]:
    """Majority decisions for `question`: comparisons with `required` votes (all its raters),
    or with at least one vote when `include_incomplete`."""
    grouped: dict[int, list[VoteRow]] = defaultdict(list)
    for vote in votes:
        if vote.question == question:
            grouped[vote.comparison_id].append(vote)
    result = {}
    for comparison_id, group in grouped.items():
        if len(group) < required and not include_incomplete:
            continue
        choices = [v.choice for v in group]
        decided = majority(choices)
        assert decided is not None
        counts = (choices.count(0), choices.count(1), choices.count(2))
        last = max(v.voted_at for v in group)
        result[comparison_id] = Decision(comparison_id, decided, counts, last)
    return result


def study_summary(db: Database, study_ref: str | int, include_incomplete: bool = False) -> dict:
    """Progress, per-rater figures, agreement and (for evaluations) win rates, as JSON."""
    with db.read() as session:
        study = find_study(session, study_ref)
        questions = [(q.key, q.text) for q in study.questions]
        n_comparisons = (
            session.scalar(select(func.count()).select_from(Comparison).where(Comparison.study_id == study.id)) or 0
        )
        categories = dict(
            session.execute(select(Comparison.id, Comparison.category).where(Comparison.study_id == study.id)).all()
        )
        assignment_rows = session.execute(
            select(Assignment.rater_id, Assignment.comparison_id, Assignment.completed_at)
            .join(Comparison, Comparison.id == Assignment.comparison_id)
            .where(Comparison.study_id == study.id)
        ).all()
        raters = session.execute(
            select(Rater.id, Rater.name, Rater.active).where(Rater.study_id == study.id).order_by(Rater.id)
        ).all()
        votes = load_votes(session, study.id)
        info = _study_info(study)
    completed_per_comparison: dict[int, int] = defaultdict(int)
    per_rater: dict[int, dict[str, int]] = defaultdict(lambda: {"done": 0, "open": 0, "votes": 0})
    for rater_id, comparison_id, completed_at in assignment_rows:
        per_rater[rater_id]["done" if completed_at is not None else "open"] += 1
        if completed_at is not None:
            completed_per_comparison[comparison_id] += 1
    for vote in votes:
        per_rater[vote.rater_id]["votes"] += 1
    k = study.raters_per_comparison
    complete = sum(1 for c in completed_per_comparison.values() if c >= k)
    summary: dict = {
        "study": info,
        "progress": {
            "comparisons": n_comparisons,
            "complete": complete,
            "fraction_complete": complete / n_comparisons if n_comparisons else 0.0,
            "votes": len(votes),
            "votes_needed": n_comparisons * k * len(questions),
            "open_assignments": sum(r["open"] for r in per_rater.values()),
        },
        "questions": {},
    }
    rater_agree: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for key, text in questions:
        decided = decisions(votes, key, k, include_incomplete)
        by_item: dict[int, list[int]] = defaultdict(list)
        for vote in votes:
            if vote.question == key:
                by_item[vote.comparison_id].append(vote.choice)
        entry: dict = {
            "text": text,
            "decided": len(decided),
            "agreement": agreement(by_item.values()).as_json(),
        }
        if study.kind == "evaluation":
            entry["win_rate"] = win_rate(d.decision for d in decided.values()).as_json()
            entry["per_category"] = _per_category(decided, categories)
        summary["questions"][key] = entry
        own = rater_agreement_with_majority(
            ((v.rater_id, v.comparison_id, v.choice) for v in votes if v.question == key),
            {c: d.decision for c, d in decided.items()},
        )
        for rater_id, (total, agree) in own.items():
            rater_agree[rater_id][0] += total
            rater_agree[rater_id][1] += agree
    summary["raters"] = [
        {
            "id": rater_id,
            "name": name,
            "active": active,
            **per_rater[rater_id],
            "agreement_with_majority": (
                rater_agree[rater_id][1] / rater_agree[rater_id][0] if rater_agree[rater_id][0] else None
            ),
        }  # fmt: skip
        for rater_id, name, active in raters
    ]
    return summary


def _per_category(decided: dict[int, Decision], categories: dict[int, str | None]) -> dict:
    grouped: dict[str, list[int]] = defaultdict(list)
    for comparison_id, decision in decided.items():
        category = categories.get(comparison_id)
        if category is not None:
            grouped[category].append(decision.decision)
    return {name: win_rate(values).as_json() for name, values in sorted(grouped.items())}


def _study_info(study: Study) -> dict:
    return {
        "id": study.id,
        "name": study.name,
        "kind": study.kind,
        "run_a": study.run_a,
        "run_b": study.run_b,
        "raters_per_comparison": study.raters_per_comparison,
        "allow_ties": study.allow_ties,
        "assignment_ttl_s": study.assignment_ttl_s,
        "questions": [{"key": q.key, "text": q.text} for q in study.questions],
        "created_at": as_utc(study.created_at).isoformat(),
    }


def list_studies(db: Database) -> list[dict]:
    """Every study with its comparison, rater and vote counts."""
    with db.read() as session:
        studies = session.scalars(select(Study).order_by(Study.id)).all()
        out = []
        for study in studies:
            n = session.scalar(select(func.count()).select_from(Comparison).where(Comparison.study_id == study.id))
            raters = session.scalar(select(func.count()).select_from(Rater).where(Rater.study_id == study.id))
            votes = session.scalar(
                select(func.count())
                .select_from(Vote)
                .join(Question, Question.id == Vote.question_id)
                .where(Question.study_id == study.id)
            )
            out.append({**_study_info(study), "comparisons": n, "raters": raters, "votes": votes})
    return out
