// The rater page: shows one comparison at a time, one question at a time.
// Mouse: click an image (or the tie button). Keyboard: ← or 1 (left), → or 2 (right), ↓ or 0 (tie).
// A vote is re-sent on network errors (the server treats a repeated vote as the same vote).
"use strict";
(function () {
  const root = document.getElementById("rater");
  const api = root.dataset.api;
  const el = (id) => document.getElementById(id);
  let current = null;   // the assignment shown
  let busy = false;

  function pendingQuestion(assignment) {
    return assignment.questions.find((q) => !q.answered) || null;
  }

  // The exact number left comes with /next; after each vote the server sends only "done"
  // (available = -1), and the page counts down from the last exact figure.
  let base = { done: 0, available: 0 };
  function showProgress(progress) {
    if (progress.available >= 0) base = progress;
    const left = Math.max(0, base.available - (progress.done - base.done));
    el("progress").textContent = `${progress.done} done · ${left} left`;
  }

  function show(assignment) {
    current = assignment;
    if (!assignment) {
      el("pair").hidden = true;
      el("choose-tie").hidden = true;
      el("prompt").textContent = "";
      el("question").textContent = "";
      el("done").hidden = false;
      return;
    }
    const question = pendingQuestion(assignment);
    el("prompt").textContent = assignment.prompt;
    el("question").textContent = question ? question.text : "";
    const left = el("img-left"), right = el("img-right");
    if (left.getAttribute("src") !== assignment.images.left) left.src = assignment.images.left;
    if (right.getAttribute("src") !== assignment.images.right) right.src = assignment.images.right;
    el("pair").hidden = false;
    el("choose-tie").hidden = !assignment.allow_ties;
    el("done").hidden = true;
    root.dataset.assignment = String(assignment.assignment_id);
  }

  async function request(url, options, attempts) {
    for (let i = 0; ; i++) {
      try {
        const response = await fetch(url, options);
        if (response.status === 429 || response.status >= 500) throw new Error(`HTTP ${response.status}`);
        return response;
      } catch (err) {
        if (i + 1 >= attempts) throw err;
        el("status").textContent = "Connection problem, retrying…";
        await new Promise((resolve) => setTimeout(resolve, Math.min(500 * 2 ** i, 5000)));
      }
    }
  }

  async function load() {
    const response = await request(`${api}/next`, { headers: { Accept: "application/json" } }, 6);
    const data = await response.json();
    showProgress(data.progress);
    show(data.assignment);
  }

  async function vote(side) {
    if (busy || !current) return;
    const question = pendingQuestion(current);
    if (!question) return;
    if (side === "tie" && !current.allow_ties) return;
    busy = true;
    root.classList.add("busy");
    const body = JSON.stringify({ assignment_id: current.assignment_id, question: question.key, choice: side });
    try {
      const response = await request(`${api}/votes`, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body,
      }, 8);
      const data = await response.json();
      if (!response.ok) {
        el("status").textContent = data.detail || `Error ${response.status}`;
        await load();
      } else {
        el("status").textContent = "";
        showProgress(data.progress);
        show(data.assignment);
      }
    } catch (err) {
      el("status").textContent = "Could not reach the server; your last choice was not saved. Try again.";
    } finally {
      busy = false;
      root.classList.remove("busy");
    }
  }

  for (const id of ["choose-left", "choose-right", "choose-tie"]) {
    el(id).addEventListener("click", (event) => vote(event.currentTarget.dataset.side));
  }
  document.addEventListener("keydown", (event) => {
    if (event.altKey || event.ctrlKey || event.metaKey) return;
    const keys = { ArrowLeft: "left", "1": "left", ArrowRight: "right", "2": "right", ArrowDown: "tie", "0": "tie" };
    const side = keys[event.key];
    if (side) {
      event.preventDefault();
      vote(side);
    }
  });
  load().catch(() => { el("status").textContent = "Could not load the next comparison. Reload the page."; });
})();
