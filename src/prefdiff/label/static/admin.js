// Study page: refresh the progress line every 10 s (the full page shows the rest on reload).
"use strict";
(function () {
  const root = document.getElementById("study");
  if (!root) return;
  async function refresh() {
    try {
      const response = await fetch(root.dataset.api, { credentials: "same-origin" });
      if (!response.ok) return;
      const s = await response.json();
      const p = s.progress;
      document.getElementById("progress").textContent =
        `${p.complete} of ${p.comparisons} comparisons complete · ${p.votes} of ${p.votes_needed} votes · ${p.open_assignments} open`;
      document.querySelector("progress").value = p.fraction_complete;
    } catch (err) { /* keep the last figures */ }
  }
  setInterval(refresh, 10000);
})();
