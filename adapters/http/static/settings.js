// A community's settings on the dashboard, over GET/PATCH /api/communities/{id}/settings.
// The page does not hard-code the keys: it shows every key as the community's raids use it (the
// answer's `effective`, dotted names such as "bonuses.early_joiners"), marks the ones the community set
// itself (`settings`), and sends back only what changed as {"settings": {dotted key: value}}: all are
// applied, or none. A server without the route (404) gets a plain sentence.
(() => {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const { api, ApiError, h } = window.nubi;
  let shown = null; // {communityId, values: Map(dotted key -> value)}

  function flatten(obj, prefix = "", out = new Map()) {
    for (const [k, v] of Object.entries(obj)) {
      const key = prefix ? `${prefix}.${k}` : k;
      if (v && typeof v === "object" && !Array.isArray(v)) flatten(v, key, out);
      else out.set(key, v);
    }
    return out;
  }

  function field(key, value, i, own) {
    const id = `setting-${i}`;
    let input;
    if (typeof value === "boolean") input = h("input", { id, type: "checkbox" });
    else if (typeof value === "number") input = h("input", { id, type: "number", step: "any" });
    else input = h("input", { id, type: "text" });
    if (typeof value === "boolean") input.checked = value;
    else input.value = Array.isArray(value) ? value.join(", ") : value == null ? "" : String(value);
    input.dataset.key = key;
    const row = h("div", { class: "setting" }, h("label", { for: id, text: key }), input);
    if (own) row.append(h("span", { class: "own", text: "set here" }));
    return row;
  }

  function read(input, before) {
    if (typeof before === "boolean") return input.checked;
    if (typeof before === "number") return input.value === "" ? before : Number(input.value);
    if (Array.isArray(before)) return input.value.split(",").map((s) => s.trim()).filter(Boolean);
    return input.value;
  }

  function render(communityId, data) {
    const values = flatten(data.effective || {});
    const own = new Set(Object.keys(data.settings || {}));
    shown = { communityId, values };
    $("settings-fields").replaceChildren(...[...values].map(([k, v], i) => field(k, v, i, own.has(k))));
    $("settings-form").hidden = values.size === 0;
    $("settings-note").textContent = own.size ? "" : "This community uses the server's defaults for everything.";
  }

  async function load(communityId, ui) {
    try {
      const data = await api(`/api/communities/${communityId}/settings`);
      if (ui.chosen()?.id === communityId) render(communityId, data);
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 404) throw err;
      shown = null;
      $("settings-form").hidden = true;
      $("settings-note").textContent = "This server does not offer community settings over its API yet " +
        "(GET /api/communities/{id}/settings answered 404). The server's configuration file applies.";
    }
  }

  $("settings-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!shown) return;
    const { communityId, values } = shown;
    const changed = [];
    for (const input of $("settings-fields").querySelectorAll("input")) {
      const before = values.get(input.dataset.key);
      const after = read(input, before);
      if (JSON.stringify(after) !== JSON.stringify(before)) changed.push([input.dataset.key, after]);
    }
    const status = $("mod-status"), error = $("mod-error");
    if (!changed.length) {
      error.textContent = "";
      status.textContent = "Nothing changed.";
      return;
    }
    try {
      const data = await api(`/api/communities/${communityId}/settings`, { method: "PATCH", body: { settings: Object.fromEntries(changed) } });
      render(communityId, data);
      error.textContent = "";
      status.textContent = `Saved ${changed.map(([k]) => k).join(", ")}.`;
    } catch (err) {
      status.textContent = "";
      error.textContent = err instanceof ApiError ? err.message : "The server could not be reached. Try again.";
    }
  });

  window.nubiSettings = { load, flatten };
})();
