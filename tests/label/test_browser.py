"""The rater page in headless Chromium (Debian's /usr/bin/chromium through Playwright): vote
with the mouse and with the keyboard, then check the votes in the database."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from conftest import Server, make_run
from prefdiff.label.db import Database, migrate
from prefdiff.label.sources import evaluation_source
from prefdiff.label.studies import StudyOptions, add_raters, create_study, parse_questions

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


@pytest.fixture
def browser_context(tmp_path: Path) -> Iterator[Any]:
    """A fresh headless Chromium profile (skips when Chromium or Playwright is missing)."""
    if CHROMIUM is None:
        pytest.skip("no chromium binary (scripts/install_system_test_deps.sh installs Debian's chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS,
        )  # fmt: skip
        try:
            yield context
        finally:
            context.close()


def _votes(db_url: str) -> list[tuple[int, str, int, bool]]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT v.assignment_id, v.side, v.choice, a.flipped FROM votes v "
                "JOIN assignments a ON a.id = v.assignment_id ORDER BY v.id"
            )).all()  # fmt: skip
        return [(a, side, choice, bool(flipped)) for a, side, choice, flipped in rows]
    finally:
        engine.dispose()


def test_rater_votes_with_mouse_and_keyboard(browser_context: Any, tmp_path: Path, server_factory: Any) -> None:
    """Click left, click tie, press →, press ←, press ↓: five votes stored with the sides
    chosen, mapped through each assignment's left/right order; progress updates on the page."""
    prompts = [f"a watercolour of a lighthouse, take {i}" for i in range(6)]
    run_a = make_run(tmp_path / "tuned", prompts, "sd-toy+dpo", colour=(230, 60, 60))
    run_b = make_run(tmp_path / "base", prompts, "sd-toy", colour=(60, 60, 230))
    db_url = f"sqlite:///{tmp_path / 'browser.db'}"
    db = Database(db_url)
    migrate(db)
    options = StudyOptions(name="browser", questions=parse_questions(None), raters_per_comparison=1)
    study = create_study(db, evaluation_source(run_a, run_b), options)
    token = add_raters(db, study, names=["ada"])[0].token
    db.dispose()
    server: Server = server_factory(db_url)
    server.start()

    page = browser_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(f"{server.url}/r/{token}")
    page.wait_for_selector("#pair:not([hidden])")
    assert page.inner_text("#prompt") == prompts[0]
    assert page.inner_text("#question") == "Which image do you prefer?"
    expect = pytest.importorskip("playwright.sync_api").expect
    # The page's CSP forbids eval, so wait through locators, not wait_for_function.
    expect(page.locator("#img-left")).to_have_js_property("complete", True)
    assert page.locator("#img-left").evaluate("img => img.naturalWidth") == 8

    def wait_for_done(n: int) -> None:
        expect(page.locator("#progress")).to_contain_text(f"{n} done")

    page.click("#choose-left")
    wait_for_done(1)
    page.click("#choose-tie")
    wait_for_done(2)
    for n, key in enumerate(["ArrowRight", "ArrowLeft", "ArrowDown"], start=3):
        page.keyboard.press(key)
        wait_for_done(n)
    assert page.inner_text("#progress") == "5 done · 1 left"
    page.keyboard.press("2")
    page.wait_for_selector("#done:not([hidden])")
    page.screenshot(path=str(tmp_path / "rater.png"))
    assert errors == []

    votes = _votes(db_url)
    assert [side for _, side, _, _ in votes] == ["left", "tie", "right", "left", "tie", "right"]
    for _, side, choice, flipped in votes:
        expected = 2 if side == "tie" else int((side == "right") != flipped)
        assert choice == expected
    assert len({a for a, _, _, _ in votes}) == 6


def test_admin_logs_in_and_adds_a_rater(browser_context: Any, tmp_path: Path, runs: tuple[Path, Path],
                                        server_factory: Any) -> None:  # fmt: skip
    """In a real browser the admin forms pass the CSRF and same-origin checks: log in, open the
    study, add a rater, and the new link works."""
    from conftest import ADMIN_TOKEN

    db_url = f"sqlite:///{tmp_path / 'admin.db'}"
    db = Database(db_url)
    migrate(db)
    create_study(db, evaluation_source(*runs), StudyOptions(name="admin-study", questions=parse_questions(None)))
    db.dispose()
    server: Server = server_factory(db_url)
    server.start()
    page = browser_context.new_page()
    page.goto(f"{server.url}/admin")
    page.fill("input[name=token]", ADMIN_TOKEN)
    page.click("button[type=submit]")
    page.click("text=admin-study")
    # The page's live refresh (admin.js) reads the study summary with the session cookie.
    summary = page.evaluate("async () => (await fetch(document.getElementById('study').dataset.api)).json()")
    assert summary["study"]["name"] == "admin-study" and "win_rate" in summary["questions"]["preference"]
    page.fill("input[name=count]", "1")
    page.click("text=Add raters")
    link = page.locator("code").inner_text()
    assert link.startswith(f"{server.url}/r/")
    page.goto(link)
    page.wait_for_selector("#pair:not([hidden])")
    assert page.inner_text("#question") == "Which image do you prefer?"
