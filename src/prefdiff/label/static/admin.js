// Study page: refresh progress and the per-question results (live win rate with its Wilson
// interval) every 10 s; the rater table updates on reload.
"use strict";
(function () {
  const root = document.getElementById("study");
  if (!root) return;
  const fmt = (x) => x.toFixed(3);
  function setText(row, selector, text) {
    const cell = row.querySelector(selector);
    if (cell) cell.textContent = text;
  }
  async function refresh() {
    try {
      const response = await fetch(root.dataset.api, { credentials: "same-origin" });
      if (!response.ok) return;
      const s = await response.json();
      const p = s.progress;
      document.getElementById("progress").textContent =
        `${p.complete} of ${p.comparisons} comparisons complete · ${p.votes} of ${p.votes_needed} votes · ${p.open_assignments} open`;
      document.querySelector("progress").value = p.fraction_complete;
      for (const row of document.querySelectorAll("tr[data-question]")) {
        const q = s.questions[row.dataset.question];
        if (!q) continue;
        setText(row, ".decided", String(q.decided));
        const w = q.win_rate;
        if (w && w.win_rate !== null) {
          setText(row, ".win-rate", `${fmt(w.win_rate)} [${fmt(w.win_rate_ci[0])}, ${fmt(w.win_rate_ci[1])}]`);
          setText(row, ".wlt", `${w.wins} / ${w.losses} / ${w.ties}`);
        }
      }
    } catch (err) { /* keep the last figures */ }
  }
  setInterval(refresh, 10000);
})();
