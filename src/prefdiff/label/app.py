"""The FastAPI app: rater pages and API here, admin pages and API in `admin`.

Rater URLs carry the rater's token: `/r/{token}` (the page), `/api/r/{token}/next`,
`/api/r/{token}/votes` and `/api/r/{token}/image/{assignment_id}/{left|right}`. A token only
ever reaches its own assignments; images are served only through an assignment, never by path.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

from fastapi import FastAPI, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException as StarletteHTTPException

from prefdiff.label import assign
from prefdiff.label.db import Database, migrate
from prefdiff.label.errors import BadRequestError, ConflictError, NotFoundError, StudyError
from prefdiff.label.security import GuardMiddleware, RateLimiter, resolve_image
from prefdiff.label.studies import ensure_secret, has_admin_token, set_admin_token
from prefdiff.label.writer import Writer

T = TypeVar("T")

PACKAGE_DIR = Path(__file__).parent
templates = Jinja2Templates(directory=str(PACKAGE_DIR / "templates"))


# Row ids as URL path parameters: in range for the database's 64-bit integers, or a 422 at the edge
# (2**63 used to reach SQLite as an OverflowError and a 500).
RowId = Annotated[int, PathParam(ge=1, le=2**63 - 1)]


@dataclass(frozen=True)
class AppSettings:
    """Server settings (the `prefdiff label serve` options)."""

    db: str
    admin_token: str | None = None  # stored (hashed) when given
    max_body_bytes: int = 64 * 1024
    rate_per_s: float = 30.0  # per rater token, or per client IP for other URLs
    rate_burst: int = 60
    secure_cookies: bool = False  # set for HTTPS deployments
    # where rater links point; None: the request's own URL (the Host header a client sent), which
    # `label serve` never uses: it passes --base-url or its own host and port
    base_url: str | None = None


class VoteBody(BaseModel):
    """Body of `POST /api/r/{token}/votes`."""

    model_config = ConfigDict(extra="forbid")
    assignment_id: int = Field(ge=1, le=2**62)
    question: str = Field(min_length=1, max_length=64)
    choice: Literal["left", "right", "tie"]


def create_app(settings: AppSettings) -> FastAPI:
    """Build the app: migrate the database, load the secret, wire the routes."""
    db = Database(settings.db)
    migrate(db)
    if settings.admin_token:
        set_admin_token(db, settings.admin_token)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        app.state.writer.stop()  # finish queued writes on a clean shutdown

    app = FastAPI(title="prefdiff label", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.db = db
    app.state.writer = Writer(db)
    app.state.settings = settings
    app.state.secret = ensure_secret(db)
    app.state.has_admin = has_admin_token(db)
    app.mount("/static", StaticFiles(directory=str(PACKAGE_DIR / "static")), name="static")
    _install_error_handlers(app)
    _install_rater_routes(app)
    from prefdiff.label.admin import router as admin_router

    app.include_router(admin_router)
    limiter = RateLimiter(settings.rate_per_s, settings.rate_burst)
    app.state.limiter = limiter
    app.add_middleware(GuardMiddleware, max_body=settings.max_body_bytes, limiter=limiter)
    return app


def database(request: Request) -> Database:
    """The app's database."""
    return request.app.state.db


def check_same_origin(request: Request) -> None:
    """Refuse a state-changing request whose Origin (when sent) is another site (CSRF)."""
    origin = request.headers.get("origin")
    if origin is None:
        return
    host = request.headers.get("host", "")
    if urlsplit(origin).netloc != host:
        raise HTTPException(403, "cross-origin request refused")


def error_response(request: Request, status: int, detail: Any, headers: Any = None) -> Response:
    """JSON errors for the API (`/api/...`), an HTML page for everything else."""
    if request.url.path.startswith("/api/"):
        return JSONResponse({"detail": detail}, status_code=status, headers=headers)
    return templates.TemplateResponse(
        request, "error.html", {"status": status, "detail": detail}, status_code=status,
        headers=headers,
    )  # fmt: skip


def _install_error_handlers(app: FastAPI) -> None:
    status = {NotFoundError: 404, BadRequestError: 400, ConflictError: 409, StudyError: 400}

    for error_type, code in status.items():

        def handler(request: Request, exc: Exception, code: int = code) -> Response:
            return error_response(request, code, str(exc))

        app.add_exception_handler(error_type, handler)

    def validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)  # registered for this type only
        errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in exc.errors()]
        if not request.url.path.startswith("/api/"):
            detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
            return error_response(request, 422, f"malformed request ({detail})")
        return JSONResponse({"detail": "malformed request", "errors": errors}, status_code=422)

    app.add_exception_handler(RequestValidationError, validation)

    def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)  # registered for this type only
        return error_response(request, exc.status_code, exc.detail, exc.headers)

    app.add_exception_handler(StarletteHTTPException, http_error)


def _rater(request: Request, token: str) -> assign.RaterView:
    rater = assign.rater_for_token(database(request), token)
    if rater is None:
        raise HTTPException(404, "unknown or disabled rater link")
    known_rater(request, token)
    return rater


def known_rater(request: Request, token: str) -> None:
    """The token is a rater's: the rate limit keys its requests by it from now on."""
    limiter = getattr(request.app.state, "limiter", None)
    if limiter is not None:
        limiter.mark_known(token)


def _rater_in(session: Session, token: str) -> assign.RaterView:
    rater = assign.find_rater(session, token)
    if rater is None:
        raise NotFoundError("unknown or disabled rater link")
    return rater


async def _with_retries(request: Request, job: Callable[[Session], T]) -> T:
    """Run a write job through the app's single writer; retry when it lost a race with
    another process (a unique constraint fired: nothing of it was committed)."""
    writer: Writer = request.app.state.writer
    for _attempt in range(5):
        try:
            return await writer.run(job)
        except IntegrityError:
            continue
    raise ConflictError("could not complete the request because of concurrent updates; retry")


def _next_json(request: Request, token: str, view: assign.AssignmentView | None) -> Any:
    return None if view is None else view.as_json(f"/api/r/{token}/image")


def _install_rater_routes(app: FastAPI) -> None:
    @app.get("/", response_class=HTMLResponse)
    def home(request: Request) -> Response:
        """A landing page: raters use their personal link; admins go to /admin."""
        return templates.TemplateResponse(request, "home.html", {})

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """Liveness probe."""
        return {"status": "ok"}

    @app.get("/r/{token}", response_class=HTMLResponse)
    def rater_page(request: Request, token: str) -> Response:
        """The rating page of one rater."""
        rater = _rater(request, token)
        return templates.TemplateResponse(request, "rate.html", {"rater": rater, "api": f"/api/r/{token}"})

    @app.get("/api/r/{token}/next")
    async def next_comparison(request: Request, token: str) -> dict[str, Any]:
        """The rater's current assignment (or a new one) and progress."""

        def job(session: Session) -> tuple[assign.AssignmentView | None, assign.Progress]:
            rater = _rater_in(session, token)
            view = assign.next_in_session(session, rater)
            return view, assign.progress_in_session(session, rater)

        view, progress = await _with_retries(request, job)
        known_rater(request, token)
        return {"assignment": _next_json(request, token, view), "progress": progress.as_json()}

    @app.post("/api/r/{token}/votes")
    async def vote(request: Request, token: str) -> dict[str, Any]:
        """Record a vote and return the next assignment. The answer is sent only after the
        commit holding the vote has returned (see `writer`). The body is read here, after the
        Content-Type check, so a vote not sent as JSON is a 415 (as documented), not a 422."""
        check_same_origin(request)
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("application/json"):
            raise HTTPException(415, "send the vote as application/json")
        try:
            body = VoteBody.model_validate_json(await request.body())
        except ValidationError as err:
            raise RequestValidationError(err.errors(include_url=False, include_context=False)) from None

        def job(session: Session) -> tuple[assign.VoteResult, assign.Progress]:
            rater = _rater_in(session, token)
            result = assign.vote_in_session(session, rater, body.assignment_id, body.question, body.choice)
            return result, assign.progress_in_session(session, rater, exact=False)

        result, progress = await _with_retries(request, job)
        known_rater(request, token)
        return {
            "accepted": True,
            "duplicate": result.duplicate,
            "completed": result.completed,
            "assignment": _next_json(request, token, result.next),
            "progress": progress.as_json(),
        }

    @app.get("/api/r/{token}/image/{assignment_id}/{side}")
    def image(request: Request, token: str, assignment_id: RowId, side: str) -> Response:
        """An image of one of the rater's assignments, by side as that rater sees it."""
        rater = _rater(request, token)
        if side not in ("left", "right"):
            raise HTTPException(404, "side must be left or right")
        root, relative = assign.image_location(database(request), rater, assignment_id, side)
        target = resolve_image(root, relative)
        if target is None:
            raise HTTPException(404, "image not available")
        return FileResponse(target, headers={"cache-control": "private, max-age=3600"})


def app_from_env() -> FastAPI:
    """App factory for `uvicorn --factory prefdiff.label.app:app_from_env` (reads
    PREFDIFF_LABEL_DB and PREFDIFF_LABEL_ADMIN_TOKEN)."""
    from prefdiff.label.db import env_db

    return create_app(
        AppSettings(
            db=env_db(),
            admin_token=os.environ.get("PREFDIFF_LABEL_ADMIN_TOKEN"),
            base_url=os.environ.get("PREFDIFF_LABEL_BASE_URL"),
        )
    )
