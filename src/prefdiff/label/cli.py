"""`prefdiff label ...` sub-commands. Only typer is imported at module level, so that
`prefdiff label --help` stays fast; each command imports what it needs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from prefdiff.label.db import Database
    from prefdiff.label.studies import NewRater

app = typer.Typer(
    help="The preference labelling web app: studies, raters, votes, exports.",
    no_args_is_help=True,
)

DbOption = Annotated[
    str,
    typer.Option(
        "--db",
        envvar="PREFDIFF_LABEL_DB",
        help="SQLAlchemy URL (sqlite:///label.db, postgresql+psycopg://user:pw@host/db) or a SQLite file path.",
    ),
]
StudyOption = Annotated[str, typer.Option("--study", help="Study name or id.")]
BaseUrlOption = Annotated[str, typer.Option("--base-url", help="Public URL of the server, used to print rater links.")]
DEFAULT_DB = "prefdiff-label.db"


def _database(db: str) -> Database:
    """Open `db` and bring its schema up to date."""
    from sqlalchemy.exc import DatabaseError, OperationalError

    from prefdiff.label.db import Database, migrate
    from prefdiff.label.errors import StudyError

    database = Database(db)
    try:
        migrate(database)
    except (DatabaseError, OperationalError) as err:  # not a database, unreadable, or unreachable
        database.dispose()
        cause = str(err.orig) if getattr(err, "orig", None) is not None else str(err).splitlines()[0]
        raise StudyError(f"--db {db}: cannot open the label database ({cause})") from None
    return database


def _print_links(created: list[NewRater], base_url: str) -> None:
    """One line per rater: name, tab, personal link."""
    for rater in created:
        typer.echo(f"{rater.name}\t{rater.link(base_url)}")


@app.command()
def init(db: DbOption = DEFAULT_DB) -> None:
    """Create or upgrade the database schema; print a new admin token if none is set."""
    from prefdiff.label.studies import has_admin_token, set_admin_token

    database = _database(db)
    if has_admin_token(database):
        typer.echo(f"database ready: {database.url} (admin token already set)")
    else:
        typer.echo(f"database ready: {database.url}")
        typer.echo(f"admin token (shown once): {set_admin_token(database)}")


@app.command("admin-token")
def admin_token(db: DbOption = DEFAULT_DB) -> None:
    """Replace the admin token with a new random one and print it."""
    from prefdiff.label.studies import set_admin_token

    typer.echo(set_admin_token(_database(db)))


@app.command()
def serve(
    db: DbOption = DEFAULT_DB,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    admin_token: Annotated[
        str | None,
        typer.Option(
            envvar="PREFDIFF_LABEL_ADMIN_TOKEN",
            help="Set this admin token (else the stored one; a new one is printed when none is stored).",
        ),
    ] = None,
    rate_limit: Annotated[float, typer.Option(help="Requests/s per rater link or client IP (0: off).")] = 30.0,
    max_body_kb: Annotated[int, typer.Option(help="Largest request body accepted, in KiB.")] = 64,
    secure_cookies: Annotated[bool, typer.Option(help="Mark the admin cookie Secure (HTTPS).")] = False,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
    base_url: Annotated[
        str | None,
        typer.Option(
            "--base-url",
            envvar="PREFDIFF_LABEL_BASE_URL",
            help="Public URL of the server, for the rater links the admin pages make (default: http://HOST:PORT).",
        ),
    ] = None,
) -> None:
    """Run the web app (rater pages at /r/<token>, admin at /admin)."""
    import uvicorn

    from prefdiff.label.app import AppSettings, create_app
    from prefdiff.label.studies import has_admin_token, set_admin_token

    database = _database(db)
    if admin_token is None and not has_admin_token(database):
        typer.echo(f"admin token (shown once): {set_admin_token(database)}")
    database.dispose()
    settings = AppSettings(
        db=db, admin_token=admin_token, rate_per_s=rate_limit, rate_burst=max(int(2 * rate_limit), 1),
        max_body_bytes=max_body_kb * 1024, secure_cookies=secure_cookies,
        base_url=base_url or f"http://{host}:{port}",
    )  # fmt: skip
    application = create_app(settings)
    typer.echo(f"prefdiff label: serving {database.url} on http://{host}:{port} (admin: /admin)")
    uvicorn.run(application, host=host, port=port, log_level=log_level, access_log=False)


@app.command("create-study")
def create_study(
    name: Annotated[str, typer.Option("--name", help="Unique study name.")],
    kind: Annotated[str, typer.Option(help="evaluation (run A vs run B) or collection (new pairs).")],
    db: DbOption = DEFAULT_DB,
    run_a: Annotated[Path | None, typer.Option(help="Evaluation: run A's directory (manifest.jsonl).")] = None,
    run_b: Annotated[Path | None, typer.Option(help="Evaluation: run B's directory (manifest.jsonl).")] = None,
    name_a: Annotated[str | None, typer.Option(help="Name of run A (default: its folder name).")] = None,
    name_b: Annotated[str | None, typer.Option(help="Name of run B (default: its folder name).")] = None,
    pairs: Annotated[Path | None, typer.Option(help="Collection: a pairs.jsonl or a folder of pair folders.")] = None,
    allow_sampler_mismatch: Annotated[
        bool,
        typer.Option(
            help="Evaluation: pair runs sampled differently (steps, guidance, strength, ...); refused by default."
        ),
    ] = False,
    question: Annotated[
        list[str] | None,
        typer.Option(
            help="Repeatable: preference, aesthetics, alignment or 'key=Question text?'. Default: preference."
        ),
    ] = None,
    ties: Annotated[bool, typer.Option("--ties/--no-ties", help="Allow 'about the same'.")] = True,
    raters_per_comparison: Annotated[int, typer.Option(help="Distinct raters per comparison.")] = 5,
    assignment_ttl: Annotated[int, typer.Option(help="Seconds before an untouched assignment is released.")] = 3600,
    raters: Annotated[int, typer.Option(help="Also create this many raters and print their links.")] = 0,
    base_url: BaseUrlOption = "http://127.0.0.1:8000",
) -> None:
    """Create a study from two generation runs or from unlabelled pairs."""
    from prefdiff.label.studies import StudyOptions, add_raters, load_source, parse_questions
    from prefdiff.label.studies import create_study as create

    questions = parse_questions(question)
    source = load_source(kind, run_a=run_a, run_b=run_b, pairs=pairs, name_a=name_a, name_b=name_b,
                         allow_sampler_mismatch=allow_sampler_mismatch)  # fmt: skip
    database = _database(db)
    options = StudyOptions(
        name=name, questions=questions, allow_ties=ties,
        raters_per_comparison=raters_per_comparison, assignment_ttl_s=assignment_ttl,
    )  # fmt: skip
    study_id = create(database, source, options)
    typer.echo(f"study {study_id} {name!r}: {len(source.comparisons)} comparisons")
    if raters:
        _print_links(add_raters(database, study_id, count=raters), base_url)


@app.command("add-raters")
def add_raters_command(
    study: StudyOption,
    db: DbOption = DEFAULT_DB,
    name: Annotated[list[str] | None, typer.Option(help="Repeatable: a rater's name.")] = None,
    count: Annotated[int, typer.Option(help="Number of unnamed raters to create.")] = 0,
    base_url: BaseUrlOption = "http://127.0.0.1:8000",
) -> None:
    """Create raters and print their personal links (shown only now)."""
    from prefdiff.label.studies import add_raters

    _print_links(add_raters(_database(db), study, name or [], count), base_url)


@app.command()
def status(
    study: StudyOption,
    db: DbOption = DEFAULT_DB,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full summary as JSON.")] = False,
) -> None:
    """Progress, agreement and (evaluation) win rate of a study."""
    from prefdiff.label.report import study_summary

    summary = study_summary(_database(db), study)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    info, progress = summary["study"], summary["progress"]
    typer.echo(f"{info['name']} ({info['kind']}): {progress['complete']}/{progress['comparisons']} "
               f"comparisons complete, {progress['votes']}/{progress['votes_needed']} votes")  # fmt: skip
    for key, q in summary["questions"].items():
        line = f"  {key}: {q['decided']} decided, pairwise agreement {q['agreement']['pairwise']}"
        if "win_rate" in q and q["win_rate"]["win_rate"] is not None:
            wr = q["win_rate"]
            line += (f"; win rate {info['run_a']} over {info['run_b']} {wr['win_rate']:.3f} "
                     f"[{wr['win_rate_ci'][0]:.3f}, {wr['win_rate_ci'][1]:.3f}]")  # fmt: skip
        typer.echo(line)


@app.command()
def export(
    study: StudyOption,
    out: Annotated[Path, typer.Option(help="Output directory.")],
    db: DbOption = DEFAULT_DB,
    votes_format: Annotated[str, typer.Option(help="Raw votes as csv, parquet or both.")] = "both",
    question: Annotated[str | None, typer.Option(help="Question for the majority export (default: the first).")] = None,
    include_incomplete: Annotated[
        bool, typer.Option(help="Decide comparisons that do not have all their votes yet.")
    ] = False,
) -> None:
    """Write votes.csv/.parquet, pickapic.parquet (majority decisions) and, for evaluation
    studies, summary.json (the same format as `prefdiff compare`)."""
    from prefdiff.label.export import export_study

    written = export_study(_database(db), study, out, votes_format, question, include_incomplete)
    for what, path in written.items():
        typer.echo(f"{what}: {path}")


def main() -> None:
    """Run the label commands; user errors print one line and exit 2."""
    from prefdiff.errors import run_reporting_user_errors

    run_reporting_user_errors(app)
