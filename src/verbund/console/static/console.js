// Verbund console: the little JavaScript the pages use. Keys are made and revoked through
// the self-service key API with the session's CSRF token; a site's load refreshes itself.
// Values from the server go into the page as text (textContent), never as markup.
"use strict";

const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

async function callApi(method, url, body) {
  const headers = { "x-csrf-token": csrf(), accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  const resp = await fetch(url, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await resp.json(); } catch (e) { data = null; }
  if (!resp.ok) {
    const msg = data && data.error ? data.error.message : `The server answered ${resp.status}.`;
    throw new Error(msg);
  }
  return data;
}

function cell(text, code) {
  const td = document.createElement("td");
  if (code) { const c = document.createElement("code"); c.textContent = text; td.appendChild(c); }
  else td.textContent = text;
  return td;
}

function badge(text, cls) {
  const span = document.createElement("span");
  span.className = `badge ${cls}`;
  span.textContent = text;
  return span;
}

function utc(ts) {
  return ts ? new Date(ts * 1000).toISOString().slice(0, 16).replace("T", " ") : "never";
}

function showError(message) {
  const box = document.getElementById("key-error");
  box.textContent = message;
  box.classList.toggle("hidden", !message);
}

function wireRevoke(button) {
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await callApi("DELETE", button.dataset.api);
      const row = button.closest("tr");
      const state = row.querySelector('[data-field="state"]');
      state.replaceChildren(badge("revoked", "off"));
      button.remove();
      showError("");
    } catch (e) { showError(e.message); button.disabled = false; }
  });
}

function setUpKeys() {
  const form = document.getElementById("create-key");
  if (!form) return;
  for (const b of document.querySelectorAll("button.revoke-key")) wireRevoke(b);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const data = new FormData(form);
    const body = { name: data.get("name"), data_class: data.get("data_class") };
    const days = data.get("expires_in_days");
    if (days) body.expires_at = Math.floor(Date.now() / 1000) + Number(days) * 86400;
    const button = form.querySelector("button");
    button.disabled = true;
    try {
      const key = await callApi("POST", form.dataset.api, body);
      document.getElementById("new-key-name").textContent = `“${key.name}”`;
      document.getElementById("new-key-value").textContent = key.key;
      document.getElementById("new-key").classList.remove("hidden");
      const row = document.createElement("tr");
      row.dataset.key = key.id;
      row.append(cell(key.name), cell(key.id, true), cell(key.key.slice(0, 8) + "…", true),
                 cell(key.data_class || data.get("data_class")), cell(utc(key.created_at)),
                 cell(utc(key.expires_at)));
      const state = document.createElement("td");
      state.dataset.field = "state";
      state.append(badge("active", "ok"));
      const action = document.createElement("td");
      const revoke = document.createElement("button");
      revoke.type = "button";
      revoke.className = "danger revoke-key";
      revoke.dataset.api = `${form.dataset.api}/${encodeURIComponent(key.id)}`;
      revoke.textContent = "Revoke";
      wireRevoke(revoke);
      action.append(revoke);
      row.append(state, action);
      document.querySelector("#keys tbody").firstElementChild.after(row);
      document.getElementById("no-keys").classList.add("hidden");
      form.reset();
      showError("");
    } catch (e) { showError(e.message); }
    button.disabled = false;
  });
}

function setUpLiveLoad() {
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
          const c = row.querySelector(`[data-field="${field}"]`);
          if (c) c.textContent = String(b[field]);
        }
        const health = row.querySelector('[data-field="health"]');
        if (health) health.className = b.health_class;
      }
    } catch (e) { /* the next tick tries again */ }
  };
  setInterval(refresh, 2000);
}

document.addEventListener("DOMContentLoaded", () => { setUpKeys(); setUpLiveLoad(); });
