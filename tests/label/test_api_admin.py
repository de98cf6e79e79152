"""Admin JSON API and admin pages: authentication, CSRF, study/rater management, exports.
Runs on SQLite and, with PREFDIFF_TEST_PG_URL, on PostgreSQL."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from conftest import ADMIN_TOKEN, Env, make_pairs, make_run

ADMIN_GETS = ["/api/admin/studies", "/api/admin/studies/{id}", "/api/admin/studies/{id}/export/votes.csv"]
ADMIN_POSTS = [
    ("/api/admin/studies", {"name": "x", "kind": "collection", "pairs": "/tmp"}),
    ("/api/admin/studies/{id}/raters", {"count": 1}),
    ("/api/admin/raters/1/rotate", None),
    ("/api/admin/raters/1/active", {"active": False}),
]


BAD_HEADERS = [
    {},
    {"Authorization": "Bearer wrong-token-123456789"},
    {"Authorization": "Basic " + ADMIN_TOKEN},
    {"Authorization": "Bearer"},
]


@pytest.mark.parametrize("headers", BAD_HEADERS)
def test_admin_api_needs_the_admin_token(env: Env, headers: dict[str, str]) -> None:
    """No token, a wrong token or a wrong scheme: 401/403 on every admin endpoint."""
    for url in ADMIN_GETS:
        response = env.client.get(url.format(id=env.study_id), headers=headers)
        assert response.status_code in (401, 403), url
    for url, body in ADMIN_POSTS:
        response = env.client.post(url.format(id=env.study_id), json=body, headers=headers)
        assert response.status_code in (401, 403), url
    assert env.sql("SELECT count(*) FROM raters") == [(4,)]
    assert env.sql("SELECT count(*) FROM studies") == [(1,)]


def test_a_rater_token_is_not_an_admin_token(env: Env) -> None:
    """A rater's token gives no admin access, as header or as cookie."""
    headers = {"Authorization": f"Bearer {env.tokens[0]}"}
    assert env.client.get("/api/admin/studies", headers=headers).status_code == 403
    env.client.cookies.set("prefdiff_admin", env.tokens[0])
    assert env.client.get("/api/admin/studies").status_code == 403
    assert "Log in" in env.client.get("/admin").text


def test_admin_lists_and_summarises(env: Env) -> None:
    """The study list and summary carry progress, raters, agreement and the live win rate."""
    studies = env.client.get("/api/admin/studies", headers=env.admin).json()
    assert [(s["name"], s["comparisons"], s["raters"], s["votes"]) for s in studies] == [("tuned-vs-base", 6, 4, 0)]
    for token in env.tokens[:3]:
        data = env.next(token)
        while data["assignment"]:
            data = env.vote(token, data["assignment"]["assignment_id"], "left").json()
    summary = env.client.get(f"/api/admin/studies/{env.study_id}", headers=env.admin).json()
    assert summary["progress"]["complete"] == 6 and summary["progress"]["votes"] == 18
    question = summary["questions"]["preference"]
    assert question["decided"] == 6 and question["win_rate"]["n"] == 6
    low, high = question["win_rate"]["win_rate_ci"]
    assert 0 <= low <= question["win_rate"]["win_rate"] <= high <= 1
    assert [r["done"] for r in summary["raters"]] == [6, 6, 6, 0]
    assert env.client.get("/api/admin/studies/999", headers=env.admin).status_code == 404
    assert env.client.get("/api/admin/studies/abc", headers=env.admin).status_code == 422


def test_create_study_errors(env: Env, runs: tuple[Path, Path], tmp_path: Path) -> None:
    """Bad study requests are 4xx with a message naming the problem."""
    post = lambda body: env.client.post("/api/admin/studies", json=body, headers=env.admin)  # noqa: E731
    run_a, run_b = map(str, runs)
    other = make_run(tmp_path / "other", ["different prompt"] * 6, "m")
    cases = [
        ({"name": "tuned-vs-base", "kind": "evaluation", "run_a": run_a, "run_b": run_b}, 400, "already exists"),
        ({"name": "e", "kind": "evaluation", "run_a": run_a}, 400, "needs --run-a and --run-b"),
        ({"name": "e", "kind": "evaluation", "run_a": run_a, "run_b": str(other)}, 400, "prompt differs"),
        ({"name": "e", "kind": "collection", "pairs": str(tmp_path / "none")}, 400, "not found"),
        ({"name": "e", "kind": "collection", "pairs": "/etc/passwd"}, 400, "not valid JSON"),
        ({"name": "e", "kind": "survey"}, 422, None),
        ({"name": "e", "kind": "collection", "pairs": run_a, "questions": ["nope"]}, 400, "unknown question"),
        ({"name": "e", "kind": "collection", "pairs": run_a, "raters_per_comparison": 0}, 422, None),
        ({"name": "", "kind": "collection", "pairs": run_a}, 422, None),
        ({"name": "e", "kind": "collection", "pairs": run_a, "bogus": 1}, 422, None),
    ]
    for body, status, message in cases:
        response = post(body)
        assert response.status_code == status, (body, response.text)
        if message:
            assert message in response.json()["detail"], response.text
    assert env.sql("SELECT count(*) FROM studies") == [(1,)]


def test_collection_study_and_raters(env: Env, tmp_path: Path) -> None:
    """A collection study from pairs.jsonl; raters by name and count; bad rater requests 4xx."""
    pairs = make_pairs(tmp_path / "pairs", 3)
    body = {"name": "collect", "kind": "collection", "pairs": str(pairs), "allow_ties": False,
            "questions": ["preference", "detail=Which image has more detail?"]}  # fmt: skip
    response = env.client.post("/api/admin/studies", json=body, headers=env.admin)
    assert response.status_code == 201 and response.json()["comparisons"] == 3
    study_id = response.json()["id"]
    url = f"/api/admin/studies/{study_id}/raters"
    made = env.client.post(url, json={"names": ["ana", "bo"], "count": 1}, headers=env.admin).json()["raters"]
    assert [r["name"] for r in made] == ["ana", "bo", "rater-3"]
    assert len({r["token"] for r in made}) == 3 and all(len(r["token"]) >= 32 for r in made)
    hashes = [h for (h,) in env.sql("SELECT token_sha256 FROM raters WHERE study_id = :s", s=study_id)]
    assert not set(hashes) & {r["token"] for r in made}  # only hashes are stored
    assert env.client.post(url, json={}, headers=env.admin).status_code == 400
    assert env.client.post(url, json={"count": 5000}, headers=env.admin).status_code == 422
    assert env.client.post("/api/admin/studies/999/raters", json={"count": 1}, headers=env.admin).status_code == 404
    assert env.client.post("/api/admin/raters/999/rotate", headers=env.admin).status_code == 404
    assert env.client.post("/api/admin/raters/999/active", json={"active": True}, headers=env.admin).status_code == 404
    summary = env.client.get(f"/api/admin/studies/{study_id}", headers=env.admin).json()
    assert "win_rate" not in summary["questions"]["preference"]
    response = env.client.get(f"/api/admin/studies/{study_id}/export/summary.json", headers=env.admin)
    assert response.status_code == 400 and "collection" in response.json()["detail"]


def test_exports_download(env: Env) -> None:
    """Every export downloads; unknown export or study is a 404."""
    import pyarrow.parquet as pq

    for token in env.tokens[:3]:
        data = env.next(token)
        while data["assignment"]:
            data = env.vote(token, data["assignment"]["assignment_id"], "right").json()
    base = f"/api/admin/studies/{env.study_id}/export"
    csv_text = env.client.get(f"{base}/votes.csv", headers=env.admin).text
    assert csv_text.splitlines()[0].startswith("vote_id,study,question") and len(csv_text.splitlines()) == 19
    votes = pq.read_table(io.BytesIO(env.client.get(f"{base}/votes.parquet", headers=env.admin).content))
    assert votes.num_rows == 18
    pairs = pq.read_table(io.BytesIO(env.client.get(f"{base}/pickapic.parquet", headers=env.admin).content))
    assert pairs.num_rows == 6
    summary = json.loads(env.client.get(f"{base}/summary.json", headers=env.admin).content)
    assert summary["n"] == 6 and summary["run_a"] == "tuned" and summary["run_b"] == "base"
    assert env.client.get(f"{base}/secrets.txt", headers=env.admin).status_code == 404
    assert env.client.get(f"{base}/..%2F..%2Fetc%2Fpasswd", headers=env.admin).status_code == 404
    assert env.client.get("/api/admin/studies/999/export/votes.csv", headers=env.admin).status_code == 404


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def test_admin_pages_login_csrf_and_forms(env: Env, tmp_path: Path) -> None:
    """Login sets a strict HttpOnly cookie; every form needs the CSRF token and same origin."""
    client = env.client
    assert "Admin token" in client.get("/admin").text
    assert client.post("/admin/login", data={"token": "wrong-token-1234567"}).status_code == 401
    assert client.post("/admin/login", data={}).status_code == 422
    response = client.post("/admin/login", data={"token": ADMIN_TOKEN}, follow_redirects=False)
    assert response.status_code == 303
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    index = client.get("/admin")
    assert "tuned-vs-base" in index.text
    csrf = _csrf(index.text)
    pairs = make_pairs(tmp_path / "pairs", 2)
    form = {"name": "via-form", "kind": "collection", "pairs": str(pairs), "questions": ["preference", "alignment"],
            "allow_ties": "true", "raters_per_comparison": "2"}  # fmt: skip
    assert client.post("/admin/studies", data=form).status_code == 403  # no CSRF token
    assert client.post("/admin/studies", data={**form, "csrf": "0" * 64}).status_code == 403
    evil = client.post("/admin/studies", data={**form, "csrf": csrf}, headers={"origin": "http://evil.example"})
    assert evil.status_code == 403
    created = client.post("/admin/studies", data={**form, "csrf": csrf}, follow_redirects=False)
    assert created.status_code == 303
    study_page = client.get(created.headers["location"])
    assert study_page.status_code == 200 and "Which image better fits the text?" in study_page.text
    study_id = int(created.headers["location"].rsplit("/", 1)[1])
    links = client.post(f"/admin/studies/{study_id}/raters", data={"csrf": csrf, "names": "ann\nben", "count": "0"})
    assert links.status_code == 200 and links.text.count("/r/") == 2
    rater_id = env.sql("SELECT id FROM raters WHERE name = 'ann'")[0][0]
    rotated = client.post(f"/admin/raters/{rater_id}/rotate", data={"csrf": csrf})
    assert rotated.status_code == 200 and "/r/" in rotated.text
    assert client.post(f"/admin/raters/{rater_id}/rotate", data={}).status_code == 403
    off = client.post(
        f"/admin/raters/{rater_id}/active", data={"csrf": csrf, "active": "false"}, follow_redirects=False
    )
    assert off.status_code == 303
    assert env.sql("SELECT active FROM raters WHERE id = :r", r=rater_id)[0][0] in (False, 0)
    download = client.get(f"/admin/studies/{env.study_id}/export/votes.csv")
    assert download.status_code == 200 and download.text.startswith("vote_id")
    assert client.get("/admin/studies/999").status_code == 404
    assert "404" in client.get("/admin/studies/999").text
    assert client.post("/admin/logout", data={}).status_code == 403
    assert client.post("/admin/logout", data={"csrf": csrf}, follow_redirects=False).status_code == 303


def test_admin_forms_without_a_session(env: Env) -> None:
    """Without the admin cookie, forms are refused (401) and pages show the login."""
    assert env.client.post("/admin/studies", data={"name": "x", "kind": "collection"}).status_code == 401
    assert env.client.post("/admin/raters/1/rotate", data={"csrf": "x"}).status_code == 401
    assert env.client.get(f"/admin/studies/{env.study_id}", follow_redirects=False).status_code == 303
    assert env.client.get(f"/admin/studies/{env.study_id}/export/votes.csv").status_code == 401


def test_rater_links_use_the_configured_base_url_not_the_host_header(sqlite_url: str, runs: tuple[Path, Path]) -> None:
    """A request with a forged Host header gets links to the configured server, not to the host
    it named (a phishing link the admin would hand out)."""
    from fastapi.testclient import TestClient

    from prefdiff.label.app import AppSettings, create_app

    app = create_app(AppSettings(db=sqlite_url, admin_token=ADMIN_TOKEN, base_url="https://label.example.org/"))
    client = TestClient(app)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Host": "evil.example"}
    body = {"name": "s", "kind": "evaluation", "run_a": str(runs[0]), "run_b": str(runs[1])}
    study = client.post("/api/admin/studies", json=body, headers=admin).json()["id"]
    created = client.post(f"/api/admin/studies/{study}/raters", json={"count": 2}, headers=admin).json()["raters"]
    assert all(r["link"].startswith("https://label.example.org/r/") for r in created), created
    rotated = client.post(f"/api/admin/raters/{created[0]['id']}/rotate", headers=admin).json()
    assert "evil.example" not in json.dumps(rotated)
    app.state.db.dispose()


def test_a_pairs_file_that_is_not_utf8_is_a_400_naming_the_line(env: Env, tmp_path: Path) -> None:
    """It used to be a 500 (UnicodeDecodeError); the CLI says the same in one line."""
    pairs = make_pairs(tmp_path / "pairs", 2)
    file = pairs / "pairs.jsonl" if pairs.is_dir() else pairs
    file.write_bytes(file.read_bytes() + '{"prompt": "caf\xe9"}\n'.encode("latin-1"))
    body = {"name": "latin", "kind": "collection", "pairs": str(pairs)}
    response = env.client.post("/api/admin/studies", json=body, headers=env.admin)
    assert response.status_code == 400 and "pairs.jsonl:3: not valid JSON (not UTF-8" in response.json()["detail"]


def test_the_admin_cookie_is_a_server_side_session_revoked_at_logout(env: Env) -> None:
    """The cookie never holds the admin token; logging out revokes the session on the server,
    so a copy of the cookie stops working; a new admin token ends every session."""
    from prefdiff.label.studies import set_admin_token

    client = env.client
    response = client.post("/admin/login", data={"token": ADMIN_TOKEN}, follow_redirects=False)
    session_id = response.cookies.get("prefdiff_admin")
    assert session_id and session_id != ADMIN_TOKEN and ADMIN_TOKEN not in response.headers["set-cookie"]
    assert "max-age=" in response.headers["set-cookie"].lower()
    assert client.get("/api/admin/studies").status_code == 200  # the session works for downloads and lists
    page = client.get("/admin").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    assert client.post("/admin/logout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    client.cookies.set("prefdiff_admin", session_id)  # a copy of the cookie, kept after logout
    assert client.get("/api/admin/studies").status_code == 403
    assert "Log in" in client.get("/admin").text
    client.cookies.clear()
    client.post("/admin/login", data={"token": ADMIN_TOKEN})
    assert client.get("/api/admin/studies").status_code == 200
    set_admin_token(client.app.state.db, "a-brand-new-admin-token-42")
    assert client.get("/api/admin/studies").status_code == 403
