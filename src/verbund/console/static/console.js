// Verbund console: the little JavaScript the pages use. Everything works without it
// except the live refresh of a site's load. Values go in as text, never as markup.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const table = document.getElementById("live-load");
  if (!table) return;
  const refresh = async () => {
    try {
      const resp = await fetch(table.dataset.url, { credentials: "same-origin", headers: { accept: "application/json" } });
      if (!resp.ok) return;
      const data = await resp.json();
      for (const b of data.backends) {
        const row = table.querySelector(`tr[data-backend="${CSS.escape(b.name)}"]`);
        if (!row) continue;
        for (const field of ["health", "outstanding", "served", "failures", "ttft"]) {
          const cell = row.querySelector(`[data-field="${field}"]`);
          if (cell) cell.textContent = String(b[field]);
        }
        const health = row.querySelector('[data-field="health"]');
        if (health) health.className = b.health_class;
      }
    } catch (e) { /* the next tick tries again */ }
  };
  setInterval(refresh, 2000);
});
