"""Rater endpoints: pages, next, votes, images — the happy path and every bad request (4xx,
never 500). Runs on SQLite and, with PREFDIFF_TEST_PG_URL, on PostgreSQL."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Env, make_env


def _vote_all(env: Env, token: str, choice: str = "left") -> list[int]:
    """Vote on everything the rater gets; return the assignment ids."""
    seen = []
    data = env.next(token)
    while data["assignment"] is not None:
        assignment_id = data["assignment"]["assignment_id"]
        seen.append(assignment_id)
        response = env.vote(token, assignment_id, choice)
        assert response.status_code == 200, response.text
        data = response.json()
        assert len(seen) < 100
    return seen


def test_rater_page(env: Env) -> None:
    """The page loads for a valid link and carries the API path; an unknown link is a 404."""
    page = env.client.get(f"/r/{env.tokens[0]}")
    assert page.status_code == 200
    assert f'data-api="/api/r/{env.tokens[0]}"' in page.text
    assert page.headers["referrer-policy"] == "same-origin"  # links never leak to other sites
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert env.client.get("/r/not-a-real-token").status_code == 404
    assert env.client.get("/").status_code == 200
    assert env.client.get("/healthz").json() == {"status": "ok"}


def test_next_returns_the_open_assignment_until_voted(env: Env) -> None:
    """Asking twice gives the same assignment; it holds the prompt, questions, image URLs."""
    first = env.next(env.tokens[0])
    again = env.next(env.tokens[0])
    assignment = first["assignment"]
    assert assignment == again["assignment"]
    assert assignment["questions"] == [{"key": "preference", "text": "Which image do you prefer?", "answered": False}]
    assert assignment["images"]["left"].endswith(f"/{assignment['assignment_id']}/left")
    assert first["progress"] == {"done": 0, "available": 6}


def test_vote_maps_sides_to_images_through_the_recorded_flip(env: Env) -> None:
    """'left' is image 1 when the assignment is flipped, image 0 otherwise."""
    ids = _vote_all(env, env.tokens[0], "left")
    rows = env.sql("SELECT a.flipped, v.choice, v.side FROM votes v JOIN assignments a ON a.id = v.assignment_id")
    assert len(rows) == len(ids) == 6
    for flipped, choice, side in rows:
        assert side == "left" and choice == (1 if flipped else 0)


def test_each_comparison_gets_k_distinct_raters_and_never_twice(env: Env) -> None:
    """4 raters, k = 3, 6 comparisons: 18 assignments, 3 per comparison, all distinct raters;
    the fourth rater runs out of work; left/right order varies between assignments."""
    for token in env.tokens:
        _vote_all(env, token)
    per_comparison = Counter(c for (c,) in env.sql("SELECT comparison_id FROM assignments"))
    assert sorted(per_comparison.values()) == [3] * 6
    pairs = env.sql("SELECT comparison_id, rater_id FROM assignments")
    assert len(set(pairs)) == len(pairs) == 18
    flips = {f for (f,) in env.sql("SELECT flipped FROM assignments")}
    assert flips == {True, False} or flips == {1, 0}
    assert env.next(env.tokens[3])["assignment"] is None


def test_same_vote_twice_is_idempotent_and_a_changed_vote_conflicts(env: Env) -> None:
    """Re-sending a vote is acknowledged again (duplicate) and stored once; another answer is 409."""
    token = env.tokens[0]
    assignment_id = env.next(token)["assignment"]["assignment_id"]
    first = env.vote(token, assignment_id, "right")
    second = env.vote(token, assignment_id, "right")
    assert first.status_code == second.status_code == 200
    assert (first.json()["duplicate"], second.json()["duplicate"]) == (False, True)
    assert second.json()["assignment"] == first.json()["assignment"]
    changed = env.vote(token, assignment_id, "left")
    assert changed.status_code == 409 and "already answered" in changed.json()["detail"]
    assert env.sql("SELECT count(*) FROM votes") == [(1,)]


def test_vote_on_someone_elses_assignment_is_refused(env: Env) -> None:
    """A valid token cannot vote on (or see) another rater's assignment."""
    mine = env.next(env.tokens[0])["assignment"]["assignment_id"]
    theirs = env.next(env.tokens[1])["assignment"]["assignment_id"]
    assert mine != theirs
    response = env.vote(env.tokens[0], theirs)
    assert response.status_code == 404
    assert env.client.get(f"/api/r/{env.tokens[0]}/image/{theirs}/left").status_code == 404
    assert env.vote(env.tokens[0], 999_999).status_code == 404
    assert env.sql("SELECT count(*) FROM votes") == [(0,)]


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 422),
        ({"content": b"[1, 2]", "headers": {"content-type": "application/json"}}, 422),
        ({"json": {"assignment_id": 1, "question": "preference"}}, 422),  # no choice
        ({"json": {"assignment_id": 1, "question": "preference", "choice": "up"}}, 422),
        ({"json": {"assignment_id": "one", "question": "preference", "choice": "left"}}, 422),
        ({"json": {"assignment_id": -3, "question": "preference", "choice": "left"}}, 422),
        ({"json": {"assignment_id": 2**70, "question": "preference", "choice": "left"}}, 422),
        ({"json": {"assignment_id": 1, "question": "x" * 65, "choice": "left"}}, 422),
        ({"json": {"assignment_id": 1, "question": "preference", "choice": "left", "extra": 1}}, 422),
        ({"data": {"assignment_id": "1", "question": "preference", "choice": "left"}}, 415),  # a form, not JSON
        ({"content": b"", "headers": {"content-type": "application/json"}}, 422),
    ],
)
def test_malformed_vote_bodies(env: Env, kwargs: dict, status: int) -> None:
    """Malformed bodies are 4xx and store nothing."""
    env.next(env.tokens[0])
    response = env.client.post(f"/api/r/{env.tokens[0]}/votes", **kwargs)
    assert response.status_code == status, response.text
    assert env.sql("SELECT count(*) FROM votes") == [(0,)]


def test_vote_needs_json_content_type(env: Env) -> None:
    """A JSON body sent as text/plain (what a cross-site form could send) is refused."""
    assignment_id = env.next(env.tokens[0])["assignment"]["assignment_id"]
    body = f'{{"assignment_id": {assignment_id}, "question": "preference", "choice": "left"}}'
    response = env.client.post(f"/api/r/{env.tokens[0]}/votes", content=body, headers={"content-type": "text/plain"})
    assert response.status_code == 415  # as docs/label.md says (it was a 422 before the body was read by hand)
    assert env.sql("SELECT count(*) FROM votes") == [(0,)]


def test_unknown_question_and_cross_origin_and_bad_token(env: Env) -> None:
    """Unknown question: 400. Another site's Origin: 403. Unknown token: 404."""
    assignment_id = env.next(env.tokens[0])["assignment"]["assignment_id"]
    response = env.vote(env.tokens[0], assignment_id, question="aesthetics")
    assert response.status_code == 400 and "unknown question" in response.json()["detail"]
    response = env.client.post(
        f"/api/r/{env.tokens[0]}/votes",
        json={"assignment_id": assignment_id, "question": "preference", "choice": "left"},
        headers={"origin": "http://evil.example"},
    )
    assert response.status_code == 403
    assert env.vote("x" * 32, assignment_id).status_code == 404
    assert env.vote("x" * 500, assignment_id).status_code == 404
    assert env.client.get("/api/r/" + "y" * 32 + "/next").status_code == 404
    assert env.sql("SELECT count(*) FROM votes") == [(0,)]


def test_ties_refused_when_the_study_disallows_them(db_url: str, runs: tuple[Path, Path]) -> None:
    """With --no-ties a tie vote is a 400; left/right still work."""
    env = make_env(db_url, runs, raters=1, allow_ties=False)
    try:
        data = env.next(env.tokens[0])
        assert data["assignment"]["allow_ties"] is False
        assignment_id = data["assignment"]["assignment_id"]
        assert env.vote(env.tokens[0], assignment_id, "tie").status_code == 400
        assert env.vote(env.tokens[0], assignment_id, "right").status_code == 200
    finally:
        env.client.app.state.db.dispose()


def test_several_questions_one_after_another(db_url: str, runs: tuple[Path, Path]) -> None:
    """With three questions an assignment completes after its third vote."""
    env = make_env(db_url, runs, raters=1, questions=["preference", "aesthetics", "alignment"])
    try:
        token = env.tokens[0]
        first = env.next(token)["assignment"]
        assert [q["key"] for q in first["questions"]] == ["preference", "aesthetics", "alignment"]
        r1 = env.vote(token, first["assignment_id"], "left", "preference").json()
        assert r1["completed"] is False and r1["assignment"]["assignment_id"] == first["assignment_id"]
        assert [q["answered"] for q in r1["assignment"]["questions"]] == [True, False, False]
        env.vote(token, first["assignment_id"], "tie", "aesthetics")
        r3 = env.vote(token, first["assignment_id"], "right", "alignment").json()
        assert r3["completed"] is True and r3["assignment"]["assignment_id"] != first["assignment_id"]
        assert r3["progress"]["done"] == 1
    finally:
        env.client.app.state.db.dispose()


def test_images_are_served_only_through_own_assignments(env: Env, runs: tuple[Path, Path]) -> None:
    """Left/right serve the right files; traversal-looking URLs and bad sides are 404s."""
    token = env.tokens[0]
    assignment = env.next(token)["assignment"]
    assignment_id = assignment["assignment_id"]
    left = env.client.get(assignment["images"]["left"])
    right = env.client.get(assignment["images"]["right"])
    assert left.status_code == right.status_code == 200
    assert left.headers["content-type"] == "image/png" and left.content != right.content
    ((flipped, path_0, path_1),) = env.sql(
        "SELECT a.flipped, c.path_0, c.path_1 FROM assignments a JOIN comparisons c "
        "ON c.id = a.comparison_id WHERE a.id = :a", a=assignment_id,
    )  # fmt: skip
    image_0 = (runs[0] / path_0).read_bytes()
    assert (right.content if flipped else left.content) == image_0
    base = f"/api/r/{token}/image/{assignment_id}"
    for url in [
        f"{base}/top",
        f"{base}/../../../../etc/passwd",
        f"{base}/..%2F..%2F..%2Fetc%2Fpasswd",
        f"/api/r/{token}/image/..%2F..%2Fetc%2Fpasswd/left",
        f"/api/r/{token}/image/{assignment_id}%2F..%2F..%2Fsecret/left",
        "/static/../../../../etc/passwd",
        "/static/..%2F..%2F..%2Fetc%2Fpasswd",
        "/static/%2e%2e/%2e%2e/db.py",
    ]:
        response = env.client.get(url)
        assert 400 <= response.status_code < 500, url
        assert b"root:" not in response.content


def test_a_tampered_path_outside_the_image_dirs_is_not_served(env: Env, tmp_path: Path) -> None:
    """Even if the database row points outside the study's directories (or the file became a
    symlink to outside), the image endpoint answers 404 and reads nothing."""
    from sqlalchemy import text

    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG secret")
    token = env.tokens[0]
    assignment_id = env.next(token)["assignment"]["assignment_id"]
    with env.client.app.state.db.engine.begin() as conn:
        conn.execute(text("UPDATE comparisons SET path_0 = :p, path_1 = :q"),
                     {"p": "../secret.png", "q": str(secret)})  # fmt: skip
    for side in ("left", "right"):
        response = env.client.get(f"/api/r/{token}/image/{assignment_id}/{side}")
        assert response.status_code == 404 and b"secret" not in response.content


def test_disabled_rater_and_rotated_link(env: Env) -> None:
    """A disabled rater's link stops working; a rotated link replaces the old one."""
    rater_ids = [r for (r,) in env.sql("SELECT id FROM raters ORDER BY id")]
    response = env.client.post(f"/api/admin/raters/{rater_ids[0]}/active", json={"active": False}, headers=env.admin)
    assert response.status_code == 200
    assert env.client.get(f"/api/r/{env.tokens[0]}/next").status_code == 404
    rotated = env.client.post(f"/api/admin/raters/{rater_ids[1]}/rotate", headers=env.admin).json()
    assert env.client.get(f"/api/r/{env.tokens[1]}/next").status_code == 404
    assert env.client.get(f"/api/r/{rotated['token']}/next").status_code == 200
    assert rotated["link"].endswith(f"/r/{rotated['token']}")


def test_expired_assignment_is_released_to_another_rater(db_url: str, runs: tuple[Path, Path]) -> None:
    """k = 1: when everything is taken, an old untouched assignment goes to a rater who asks,
    and the first rater's late vote on it is refused (404) — nothing half-stored."""
    from sqlalchemy import text

    env = make_env(db_url, runs, raters=2, k=1)
    try:
        first = env.tokens[0]
        held = env.next(first)["assignment"]["assignment_id"]
        for _ in range(5):  # the second rater takes the other five comparisons
            data = env.next(env.tokens[1])
            env.vote(env.tokens[1], data["assignment"]["assignment_id"])
        assert env.next(env.tokens[1])["assignment"] is None  # the sixth is held by the first
        with env.client.app.state.db.engine.begin() as conn:
            conn.execute(text("UPDATE assignments SET created_at = :t WHERE id = :a"),
                         {"t": "2000-01-01 00:00:00", "a": held})  # fmt: skip
        taken = env.next(env.tokens[1])["assignment"]
        assert taken is not None and taken["assignment_id"] != held
        assert env.vote(first, held).status_code == 404
        assert env.vote(env.tokens[1], taken["assignment_id"]).status_code == 200
        assert env.sql("SELECT count(*) FROM assignments") == [(6,)]
    finally:
        env.client.app.state.db.dispose()


def test_rate_limit_answers_429(db_url: str, runs: tuple[Path, Path]) -> None:
    """With 1 request/s and bursts of 2, a third immediate request is refused with 429."""
    env = make_env(db_url, runs, raters=1, rate_per_s=1.0)
    try:
        statuses = [env.client.get(f"/api/r/{env.tokens[0]}/next").status_code for _ in range(4)]
        assert statuses[:2] == [200, 200] and 429 in statuses[2:]
    finally:
        env.client.app.state.db.dispose()


def test_request_size_limit(env: Env) -> None:
    """Bodies over 64 KiB are refused with 413, with or without Content-Length."""
    big = b'{"assignment_id": 1, "question": "' + b"x" * 70_000 + b'", "choice": "left"}'
    url = f"/api/r/{env.tokens[0]}/votes"
    response = env.client.post(url, content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]

    response = env.client.post(url, content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    response = env.client.post(url, content=b"{}", headers={"content-type": "application/json", "content-length": "zz"})
    assert 400 <= response.status_code < 500


@pytest.mark.parametrize("row_id", [2**63, 2**64, 0, -1])
def test_row_ids_out_of_range_are_4xx_never_500(env: Env, row_id: int) -> None:
    """Ids past SQLite's 64-bit integers used to reach the database as an OverflowError (a 500);
    they are refused at the edge, on every route that takes one."""
    admin, token = env.admin, env.tokens[0]
    requests = [
        ("get", f"/api/admin/studies/{row_id}", {}),
        ("get", f"/api/admin/studies/{row_id}/export/votes.csv", {}),
        ("post", f"/api/admin/raters/{row_id}/rotate", {}),
        ("post", f"/api/admin/raters/{row_id}/active", {"json": {"active": False}}),
        ("get", f"/api/r/{token}/image/{row_id}/left", {}),
    ]
    for method, url, extra in requests:
        response = getattr(env.client, method)(url, headers=admin, **extra)
        assert response.status_code == 422, (url, response.status_code, response.text)


def test_made_up_tokens_share_their_clients_bucket(db_url: str, runs: tuple[Path, Path]) -> None:
    """Unknown tokens are rate-limited by client address, not one fresh bucket each: 20 made-up
    links from one client are mostly refused, and a real rater keeps its own bucket."""
    env = make_env(db_url, runs, raters=1, rate_per_s=1.0)
    try:
        statuses = [env.client.get(f"/api/r/made-up-{k:02d}-token/next").status_code for k in range(20)]
        assert statuses.count(429) >= 17 and set(statuses) <= {404, 429}
        assert env.client.get(f"/api/r/{env.tokens[0]}/next").status_code == 200  # its own bucket
    finally:
        env.client.app.state.db.dispose()
