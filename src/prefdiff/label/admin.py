"""Admin pages (`/admin`, cookie session + CSRF tokens) and the admin JSON API (`/api/admin`,
`Authorization: Bearer <admin token>`). Every route here needs the admin token."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask

from prefdiff.label import studies
from prefdiff.label.app import RowId, check_same_origin, database, known_rater, templates
from prefdiff.label.report import list_studies, study_summary
from prefdiff.label.security import check_csrf, csrf_token

router = APIRouter()
COOKIE = "prefdiff_admin"
EXPORTS = {
    "votes.csv": "text/csv",
    "votes.parquet": "application/vnd.apache.parquet",
    "pickapic.parquet": "application/vnd.apache.parquet",
    "summary.json": "application/json",
}


def _bearer(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _admin_api(request: Request, allow_cookie: bool = False) -> None:
    """Require the admin token as a Bearer header (or, for downloads, the admin cookie)."""
    token = _bearer(request)
    if token is None and allow_cookie and request.cookies.get(COOKIE):
        if _admin_session(request) is None:
            raise HTTPException(403, "the admin session has ended or is not valid: log in again at /admin")
        return
    if token is None:
        raise HTTPException(401, "admin token required", headers={"www-authenticate": "Bearer"})
    if not studies.check_admin_token(database(request), token):
        raise HTTPException(403, "wrong admin token")


def _admin_session(request: Request) -> str | None:
    """The admin cookie's session id when it is a live server-side session, else None."""
    value = request.cookies.get(COOKIE)
    if value and studies.check_admin_session(database(request), value):
        return value
    return None


def _admin_form(request: Request, csrf: str | None) -> str:
    """Require an admin session and a valid CSRF token for a state-changing form."""
    check_same_origin(request)
    session = _admin_session(request)
    if session is None:
        raise HTTPException(401, "log in at /admin first")
    if not check_csrf(request.app.state.secret, session, csrf):
        raise HTTPException(403, "missing or invalid CSRF token; reload the page")
    return session


def _page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    session = _admin_session(request)
    csrf = csrf_token(request.app.state.secret, session) if session else ""
    return templates.TemplateResponse(
        request, name, {"csrf": csrf, "builtin": studies.BUILTIN_QUESTIONS, **context},
        status_code=status,
    )  # fmt: skip


def _base_url(request: Request) -> str:
    """Where rater links point: the configured base URL (`label serve --base-url`), never a Host
    header a client chose, unless no URL was configured (an app built directly)."""
    configured = request.app.state.settings.base_url
    return (configured or str(request.base_url)).rstrip("/")


# ----------------------------------------------------------------------------- pages


@router.get("/admin", response_class=HTMLResponse)
def admin_home(request: Request) -> Response:
    """Studies and their progress, or the login form."""
    if _admin_session(request) is None:
        return _page(request, "login.html", {"error": None})
    return _page(request, "admin_index.html", {"studies": list_studies(database(request))})


@router.post("/admin/login")
def admin_login(request: Request, token: Annotated[str, Form(max_length=256)]) -> Response:
    """Check the admin token and start a session (HttpOnly, SameSite=Strict cookie)."""
    check_same_origin(request)
    if not studies.check_admin_token(database(request), token):
        return _page(request, "login.html", {"error": "Wrong admin token."}, status=401)
    response = RedirectResponse("/admin", status_code=303)
    # the cookie holds a session id (expiring, revoked at logout), never the admin token itself
    response.set_cookie(
        COOKIE, studies.start_admin_session(database(request)), httponly=True, samesite="strict", path="/",
        secure=request.app.state.settings.secure_cookies, max_age=studies.ADMIN_SESSION_S,
    )  # fmt: skip
    return response


@router.post("/admin/logout")
def admin_logout(request: Request, csrf: Annotated[str, Form(max_length=128)] = "") -> Response:
    """End the admin session."""
    session = _admin_form(request, csrf)
    studies.end_admin_session(database(request), session)  # revoked on the server, not just forgotten
    response = RedirectResponse("/admin", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


@router.post("/admin/studies")
def admin_create_study(
    request: Request,
    name: Annotated[str, Form(max_length=200)],
    kind: Annotated[Literal["evaluation", "collection"], Form()],
    csrf: Annotated[str, Form(max_length=128)] = "",
    run_a: Annotated[str, Form(max_length=4096)] = "",
    run_b: Annotated[str, Form(max_length=4096)] = "",
    pairs: Annotated[str, Form(max_length=4096)] = "",
    questions: Annotated[list[str] | None, Form()] = None,
    custom_question: Annotated[str, Form(max_length=600)] = "",
    allow_ties: Annotated[bool, Form()] = False,
    raters_per_comparison: Annotated[int, Form(ge=1, le=100)] = 5,
) -> Response:
    """Create a study from server-side paths (generation runs, or a pairs file/folder)."""
    _admin_form(request, csrf)
    specs = list(questions or []) + ([custom_question] if custom_question.strip() else [])
    parsed = studies.parse_questions(specs)
    source = studies.load_source(
        kind, run_a=Path(run_a) if run_a else None, run_b=Path(run_b) if run_b else None,
        pairs=Path(pairs) if pairs else None,
    )  # fmt: skip
    options = studies.StudyOptions(
        name=name, questions=parsed, allow_ties=allow_ties,
        raters_per_comparison=raters_per_comparison,
    )  # fmt: skip
    study_id = studies.create_study(database(request), source, options)
    return RedirectResponse(f"/admin/studies/{study_id}", status_code=303)


@router.get("/admin/studies/{study_id}", response_class=HTMLResponse)
def admin_study(request: Request, study_id: RowId) -> Response:
    """Progress, raters, agreement and win rates of one study."""
    if _admin_session(request) is None:
        return RedirectResponse("/admin", status_code=303)
    summary = study_summary(database(request), study_id)
    return _page(request, "admin_study.html", {"s": summary, "exports": list(EXPORTS)})


@router.post("/admin/studies/{study_id}/raters", response_class=HTMLResponse)
def admin_add_raters(
    request: Request,
    study_id: RowId,
    csrf: Annotated[str, Form(max_length=128)] = "",
    names: Annotated[str, Form(max_length=20000)] = "",
    count: Annotated[int, Form(ge=0, le=1000)] = 0,
) -> Response:
    """Create raters; their links are shown once, on the page this returns."""
    _admin_form(request, csrf)
    created = studies.add_raters(database(request), study_id, names.splitlines(), count)
    for new in created:
        known_rater(request, new.token)
    links = [(r.name, r.link(_base_url(request))) for r in created]
    return _page(request, "links.html", {"study_id": study_id, "links": links})


@router.post("/admin/raters/{rater_id}/rotate", response_class=HTMLResponse)
def admin_rotate(request: Request, rater_id: RowId, csrf: Annotated[str, Form(max_length=128)] = "") -> Response:
    """Give a rater a new link (the old one stops working)."""
    _admin_form(request, csrf)
    rater = studies.rotate_rater_token(database(request), rater_id)
    known_rater(request, rater.token)
    study_id = _rater_study(request, rater_id)
    return _page(request, "links.html", {"study_id": study_id, "links": [(rater.name, rater.link(_base_url(request)))]})


@router.post("/admin/raters/{rater_id}/active")
def admin_set_active(
    request: Request,
    rater_id: RowId,
    active: Annotated[bool, Form()],
    csrf: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    """Enable or disable a rater's link."""
    _admin_form(request, csrf)
    studies.set_rater_active(database(request), rater_id, active)
    return RedirectResponse(f"/admin/studies/{_rater_study(request, rater_id)}", status_code=303)


def _rater_study(request: Request, rater_id: int) -> int:
    from prefdiff.label.schema import Rater

    with database(request).read() as session:
        rater = session.get(Rater, rater_id)
        if rater is None:
            raise HTTPException(404, f"no rater {rater_id}")
        return rater.study_id


@router.get("/admin/studies/{study_id}/export/{name}")
def admin_export(request: Request, study_id: RowId, name: str) -> Response:
    """Download an export (admin cookie or Bearer token)."""
    _admin_api(request, allow_cookie=True)
    return _export(request, study_id, name)


# ----------------------------------------------------------------------------- JSON API


class StudyCreate(BaseModel):
    """Body of `POST /api/admin/studies`."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    kind: Literal["evaluation", "collection"]
    run_a: str | None = Field(default=None, max_length=4096)
    run_b: str | None = Field(default=None, max_length=4096)
    name_a: str | None = Field(default=None, max_length=200)
    name_b: str | None = Field(default=None, max_length=200)
    pairs: str | None = Field(default=None, max_length=4096)
    questions: list[str] | None = Field(default=None, max_length=20)
    allow_ties: bool = True
    raters_per_comparison: int = Field(default=5, ge=1, le=100)
    assignment_ttl_s: int = Field(default=3600, ge=10, le=7 * 24 * 3600)


class RatersCreate(BaseModel):
    """Body of `POST /api/admin/studies/{id}/raters`."""

    model_config = ConfigDict(extra="forbid")
    names: list[str] = Field(default_factory=list, max_length=1000)
    count: int = Field(default=0, ge=0, le=1000)


class ActiveBody(BaseModel):
    """Body of `POST /api/admin/raters/{id}/active`."""

    model_config = ConfigDict(extra="forbid")
    active: bool


@router.get("/api/admin/studies")
def api_studies(request: Request) -> list[dict[str, Any]]:
    """Every study with its counts."""
    _admin_api(request, allow_cookie=True)
    return list_studies(database(request))


@router.post("/api/admin/studies", status_code=201)
def api_create_study(request: Request, body: StudyCreate) -> dict[str, Any]:
    """Create a study; returns its id."""
    _admin_api(request)
    questions = studies.parse_questions(body.questions)
    source = studies.load_source(
        body.kind, run_a=Path(body.run_a) if body.run_a else None,
        run_b=Path(body.run_b) if body.run_b else None, pairs=Path(body.pairs) if body.pairs else None,
        name_a=body.name_a, name_b=body.name_b,
    )  # fmt: skip
    options = studies.StudyOptions(
        name=body.name, questions=questions,
        allow_ties=body.allow_ties, raters_per_comparison=body.raters_per_comparison,
        assignment_ttl_s=body.assignment_ttl_s,
    )  # fmt: skip
    study_id = studies.create_study(database(request), source, options)
    return {"id": study_id, "comparisons": len(source.comparisons)}


@router.get("/api/admin/studies/{study_id}")
def api_study(request: Request, study_id: RowId) -> dict[str, Any]:
    """Progress, raters, agreement and win rates of one study (polled by the admin page)."""
    _admin_api(request, allow_cookie=True)
    return study_summary(database(request), study_id)


@router.post("/api/admin/studies/{study_id}/raters", status_code=201)
def api_add_raters(request: Request, study_id: RowId, body: RatersCreate) -> dict[str, Any]:
    """Create raters; the response is the only place their links appear."""
    _admin_api(request)
    created = studies.add_raters(database(request), study_id, body.names, body.count)
    for new in created:
        known_rater(request, new.token)
    base = _base_url(request)
    return {"raters": [{"id": r.id, "name": r.name, "token": r.token, "link": r.link(base)} for r in created]}


@router.post("/api/admin/raters/{rater_id}/rotate")
def api_rotate(request: Request, rater_id: RowId) -> dict[str, Any]:
    """A new link for a rater."""
    _admin_api(request)
    rater = studies.rotate_rater_token(database(request), rater_id)
    known_rater(request, rater.token)
    return {"id": rater.id, "name": rater.name, "token": rater.token, "link": rater.link(_base_url(request))}


@router.post("/api/admin/raters/{rater_id}/active")
def api_set_active(request: Request, rater_id: RowId, body: ActiveBody) -> dict[str, Any]:
    """Enable or disable a rater."""
    _admin_api(request)
    studies.set_rater_active(database(request), rater_id, body.active)
    return {"id": rater_id, "active": body.active}


@router.get("/api/admin/studies/{study_id}/export/{name}")
def api_export(request: Request, study_id: RowId, name: str) -> Response:
    """Download an export: votes.csv, votes.parquet, pickapic.parquet or summary.json."""
    _admin_api(request)
    return _export(request, study_id, name)


def _export(request: Request, study_id: int, name: str) -> Response:
    from prefdiff.label import export

    if name not in EXPORTS:
        raise HTTPException(404, f"unknown export {name!r}; choose from {sorted(EXPORTS)}")
    db = database(request)
    tmp = Path(tempfile.mkdtemp(prefix="prefdiff-export-"))
    try:
        path = tmp / name
        if name == "votes.csv":
            export.write_votes_csv(export.vote_rows(db, study_id), path)
        elif name == "votes.parquet":
            export.write_votes_parquet(export.vote_rows(db, study_id), path)
        elif name == "pickapic.parquet":
            export.write_pickapic(db, study_id, path)
        else:
            import json

            path.write_text(json.dumps(export.evaluation_summary(db, study_id), indent=2))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    cleanup = BackgroundTask(shutil.rmtree, tmp, ignore_errors=True)
    return FileResponse(path, media_type=EXPORTS[name], filename=f"study{study_id}-{name}", background=cleanup)
