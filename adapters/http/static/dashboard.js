// nubi live dashboard: a REST snapshot on every (re)connect, then Socket.IO events on top of it
// (deliveries are at-most-once, so the snapshot is the truth and events only move it forward).
(() => {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const state = {
    key: localStorage.getItem("nubi.apiKey") || "",
    active: new Map(), // raid id -> latest RaidProgress dict
    deadlines: new Map(), // raid id -> local ms when it ends
    ended: [],
    selected: null, // raid id shown in the detail panel
    detail: null, // {raid, metrics, report} of the selected raid
    live: new Map(), // raid id -> [{t, pct, raiders}] points seen since the last snapshot
    window: "week",
    community: null, // {id, title}
    socket: null,
  };

  // -- small helpers -------------------------------------------------------------------------

  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    }
    for (const c of children) if (c != null) node.append(c);
    return node;
  }

  const LABELS = { like: "likes", repost: "reposts", reply: "replies", quote: "quotes", bookmark: "bookmarks", follow: "follows" };

  function chatTitle(raid) {
    return raid.chat.title || `${raid.chat.platform} ${raid.chat.id}`;
  }

  function shortUrl(url) {
    return url.replace(/^https:\/\//, "");
  }

  function link(url) {
    const a = h("a", { class: "target", text: shortUrl(url), title: url });
    if (/^https:\/\//.test(url)) {
      a.href = url;
      a.target = "_blank";
      a.rel = "noopener noreferrer";
    }
    return a;
  }

  function clock(seconds) {
    if (seconds <= 0) return "ending…";
    const s = Math.floor(seconds % 60), m = Math.floor(seconds / 60) % 60, hrs = Math.floor(seconds / 3600);
    const pad = (n) => String(n).padStart(2, "0");
    return hrs ? `${hrs}:${pad(m)}:${pad(s)}` : `${m}:${pad(s)}`;
  }

  function duration(seconds) {
    const m = Math.round(seconds / 60);
    return m < 60 ? `${m} min` : `${Math.floor(m / 60)} h ${m % 60} min`;
  }

  function board(list, entries, limit) {
    list.replaceChildren(...entries.slice(0, limit).map((e) =>
      h("li", {}, h("span", { class: "rank", text: String(e.rank) }), h("span", { class: "name", text: e.name }),
        h("span", { class: "pts", text: `${e.points} pt` }))));
  }

  async function api(path) {
    const res = await fetch(path, { headers: state.key ? { "X-API-KEY": state.key } : {} });
    if (res.status === 401) {
      askForKey("That API key was not accepted.");
      throw new Error("unauthorized");
    }
    if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
    return res.json();
  }

  function setConn(kind, text) {
    const pill = $("conn");
    pill.className = `pill ${kind}`;
    pill.textContent = text;
  }

  function askForKey(message) {
    $("keyform").hidden = false;
    $("keyerror").hidden = !message;
    $("keyerror").textContent = message || "";
    setConn("locked", "API key needed");
  }

  // -- active raid cards ---------------------------------------------------------------------

  function card(raid) {
    const node = h("article", { class: "card raid", "data-raid-id": String(raid.id), tabindex: "0" },
      h("header", {}, h("span", { class: "tag platform" }), h("h3", { class: "title" }), h("span", { class: "tag active", text: "live" })),
      link(raid.targetUrl),
      h("div", { class: "overall" }, h("div", { class: "bar" }, h("span")), h("span", { class: "pct" })),
      h("dl", { class: "stats" },
        h("div", {}, h("dt", { text: "Raiders" }), h("dd", {}, h("span", { class: "participants", "data-testid": "participants" }), h("small", { class: "max" }))),
        h("div", {}, h("dt", { text: "Actions" }), h("dd", { class: "actions" })),
        h("div", {}, h("dt", { text: "Points" }), h("dd", { class: "points" })),
        h("div", {}, h("dt", { text: "Time left" }), h("dd", { class: "time-left" }))),
      h("ul", { class: "objectives" }),
      h("ol", { class: "board top" }));
    node.addEventListener("click", () => select(raid.id));
    node.addEventListener("keydown", (ev) => { if (ev.key === "Enter") select(raid.id); });
    return node;
  }

  function renderActive(raid) {
    let node = document.querySelector(`#active [data-raid-id="${raid.id}"]`);
    if (!node) {
      node = card(raid);
      $("active").prepend(node);
    }
    node.querySelector(".platform").textContent = raid.chat.platform;
    node.querySelector(".title").textContent = chatTitle(raid);
    node.querySelector(".overall .bar > span").style.width = `${Math.min(100, raid.completionPct)}%`;
    node.querySelector(".pct").textContent = `${raid.completionPct}%`;
    node.querySelector(".participants").textContent = String(raid.participants);
    node.querySelector(".max").textContent = ` / ${raid.maxParticipants}`;
    node.querySelector(".actions").textContent = String(raid.actions);
    node.querySelector(".points").textContent = String(raid.pointsAwarded);
    node.querySelector(".objectives").replaceChildren(...raid.objectives.map((o) =>
      h("li", {}, h("span", { text: LABELS[o.action] || o.action }),
        h("div", { class: `bar small${o.met ? " met" : ""}` }, h("span", { style: `width:${Math.min(100, (100 * o.count) / o.target)}%` })),
        h("span", { class: "n", text: `${o.count}/${o.target}` }))));
    board(node.querySelector(".top"), raid.top, 3);
    node.classList.toggle("selected", state.selected === raid.id);
    tick();
  }

  // `raid` is a full RaidProgress from the server unless `optimistic` (a join bumped the counter ahead
  // of the coalesced progress_update); only full ones become chart points.
  function applyProgress(raid, optimistic = false) {
    if (raid.status !== "active") {
      removeActive(raid.id);
      return;
    }
    state.active.set(raid.id, raid);
    if (!optimistic) {
      state.deadlines.set(raid.id, Date.now() + raid.timeLeftSeconds * 1000);
      const pts = state.live.get(raid.id) || [];
      const t = Date.parse(raid.endsAt) - raid.timeLeftSeconds * 1000; // the server's "now"
      if (pts.length && pts[pts.length - 1].t === t) pts.pop();
      pts.push({ t, pct: raid.completionPct, raiders: raid.participants });
      state.live.set(raid.id, pts);
    }
    renderActive(raid);
    updateCounts();
    if (state.selected === null) select(raid.id);
    else if (state.selected === raid.id && state.detail && !optimistic) {
      state.detail.raid = raid;
      renderDetail();
      refreshDetailSoon();
    }
  }

  // Metrics snapshots are taken server-side every minute or so: refetch them at most every 5 s.
  let detailTimer = null, detailFetched = 0;
  function refreshDetailSoon() {
    if (detailTimer) return;
    const wait = Math.max(0, detailFetched + 5000 - Date.now());
    detailTimer = setTimeout(() => {
      detailTimer = null;
      if (state.selected !== null) select(state.selected);
    }, wait);
  }

  function removeActive(id) {
    state.active.delete(id);
    state.deadlines.delete(id);
    document.querySelector(`#active [data-raid-id="${id}"]`)?.remove();
    updateCounts();
  }

  function updateCounts() {
    $("active-count").textContent = String(state.active.size);
    $("no-active").hidden = state.active.size > 0;
  }

  function tick() {
    for (const [id, deadline] of state.deadlines) {
      const node = document.querySelector(`#active [data-raid-id="${id}"] .time-left`);
      if (node) node.textContent = clock(Math.round((deadline - Date.now()) / 1000));
    }
  }

  // -- ended raids ---------------------------------------------------------------------------

  function renderEnded() {
    $("ended").replaceChildren(...state.ended.map((raid) => {
      const r = raid.report || {};
      const objectives = r.objectives || raid.objectives;
      const node = h("article", { class: "card ended", "data-raid-id": String(raid.id), tabindex: "0" },
        h("header", {}, h("span", { class: "tag platform", text: raid.chat.platform }), h("h3", { text: chatTitle(raid) }),
          h("span", { class: `tag ${raid.status}`, text: raid.status })),
        link(raid.targetUrl),
        h("dl", { class: "report" },
          ...[["Duration", r.durationSeconds != null ? duration(r.durationSeconds) : "–"], ["Raiders", raid.participants],
            ["Actions", raid.actions], ["Objectives", `${objectives.filter((o) => o.met).length}/${objectives.length}`],
            ["Points", raid.pointsAwarded], ["Done", `${raid.completionPct}%`]]
            .map(([k, v]) => h("div", {}, h("dt", { text: k }), h("dd", { text: String(v) })))),
        h("ol", { class: "board top" }));
      board(node.querySelector(".top"), (r.topRaiders || raid.top).map((e) => ({ ...e })), 3);
      node.classList.toggle("selected", state.selected === raid.id);
      node.addEventListener("click", () => select(raid.id));
      return node;
    }));
    $("no-ended").hidden = state.ended.length > 0;
  }

  // -- detail panel: chart and raid leaderboard ----------------------------------------------

  async function select(id) {
    state.selected = id;
    for (const n of document.querySelectorAll(".card")) n.classList.toggle("selected", n.dataset.raidId === String(id));
    try {
      detailFetched = Date.now();
      state.detail = await api(`/api/dashboard/raids/${id}`);
    } catch (err) {
      console.warn(err);
      return;
    }
    if (state.selected !== id) return;
    const raid = state.detail.raid;
    state.community = { id: raid.communityId, title: chatTitle(raid) };
    renderDetail();
    loadCommunity();
  }

  function renderDetail() {
    const { raid, metrics } = state.detail;
    $("detail").hidden = false;
    $("detail-title").textContent = `Raid #${raid.id} · ${chatTitle(raid)}`;
    $("detail-sub").textContent = `${shortUrl(raid.targetUrl)} · ${raid.status} · ${raid.verification} verification` +
      (raid.pendingClaims ? ` · ${raid.pendingClaims} claims awaiting review` : "");
    board($("raid-board"), raid.top, 10);
    $("raid-board-empty").hidden = raid.top.length > 0;
    const points = [{ t: Date.parse(raid.startedAt), pct: 0, raiders: 0 }]
      .concat(metrics.map((m) => ({ t: Date.parse(m.takenAt), pct: m.completionPct, raiders: m.participants })))
      .concat(state.live.get(raid.id) || []);
    if (raid.status !== "active") {
      points.push({ t: Date.parse(raid.endedAt || raid.endsAt), pct: raid.completionPct, raiders: raid.participants });
    }
    points.sort((a, b) => a.t - b.t);
    drawChart(points, Date.parse(raid.startedAt), Date.parse(raid.status === "active" ? raid.endsAt : raid.endedAt || raid.endsAt));
    $("chart-note").textContent = metrics.length
      ? `${metrics.length} metrics snapshot${metrics.length === 1 ? "" : "s"}${raid.status === "active" ? " plus live updates" : ""}.`
      : "No metrics snapshot yet: showing live updates only.";
  }

  const SVG = "http://www.w3.org/2000/svg";
  function s(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    return node;
  }

  function drawChart(points, t0, t1) {
    const svg = $("chart");
    const W = Math.max(240, Math.round(svg.getBoundingClientRect().width) || 600), H = 220, L = 38, R = 28, T = 12, B = 26;
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    const span = Math.max(1, t1 - t0);
    const maxRaiders = Math.max(1, ...points.map((p) => p.raiders));
    const x = (t) => L + ((Math.min(Math.max(t, t0), t1) - t0) / span) * (W - L - R);
    const yPct = (v) => T + (1 - v / 100) * (H - T - B);
    const yRaiders = (v) => T + (1 - v / maxRaiders) * (H - T - B);
    const parts = [];
    for (const g of [0, 25, 50, 75, 100]) {
      parts.push(s("line", { x1: L, x2: W - R, y1: yPct(g), y2: yPct(g), stroke: "#e3e7ef", "stroke-width": 1 }));
      const label = s("text", { x: L - 6, y: yPct(g) + 4, "text-anchor": "end" });
      label.textContent = `${g}%`;
      parts.push(label);
    }
    const right = s("text", { x: W - R + 6, y: T + 8, "text-anchor": "start" });
    right.textContent = String(maxRaiders);
    parts.push(right);
    const fmt = (t) => new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    [[t0, "start"], [(t0 + t1) / 2, "middle"], [t1, "end"]].forEach(([t, anchor]) => {
      const label = s("text", { x: x(t), y: H - 8, "text-anchor": anchor });
      label.textContent = fmt(t);
      parts.push(label);
    });
    const line = (y, key) => points.map((p, i) => `${i ? "L" : "M"}${x(p.t).toFixed(1)},${y(p[key]).toFixed(1)}`).join(" ");
    const last = points[points.length - 1];
    parts.push(s("path", { d: `${line(yPct, "pct")} L${x(last.t).toFixed(1)},${yPct(0)} L${x(points[0].t).toFixed(1)},${yPct(0)} Z`, fill: "rgba(91,91,214,.10)" }));
    parts.push(s("path", { d: line(yRaiders, "raiders"), fill: "none", stroke: "#12a594", "stroke-width": 2, "stroke-dasharray": "5 4" }));
    parts.push(s("path", { d: line(yPct, "pct"), fill: "none", stroke: "#5b5bd6", "stroke-width": 2.5, "stroke-linejoin": "round" }));
    parts.push(s("circle", { cx: x(last.t), cy: yPct(last.pct), r: 4, fill: "#5b5bd6" }));
    svg.replaceChildren(...parts);
  }

  // -- community leaderboard -----------------------------------------------------------------

  let communityTimer = null;
  function refreshCommunitySoon() {
    clearTimeout(communityTimer);
    communityTimer = setTimeout(loadCommunity, 800);
  }

  async function loadCommunity() {
    if (!state.community) return;
    const { id, title } = state.community;
    let data;
    try {
      data = await api(`/api/dashboard/communities/${id}/leaderboard?window=${state.window}&top=10`);
    } catch (err) {
      console.warn(err);
      return;
    }
    if (!state.community || state.community.id !== id || data.window !== state.window) return;
    $("community-sub").textContent = title;
    board($("community-board"), data.entries, 10);
    $("community-empty").hidden = data.entries.length > 0;
    loadSettings(id);
  }

  // The community's own settings, read-only: moderators change them with /settings or the REST API.
  async function loadSettings(id) {
    let data;
    try {
      data = await api(`/api/dashboard/communities/${id}/settings`);
    } catch (err) {
      console.warn(err);
      return;
    }
    if (!state.community || state.community.id !== id) return;
    const own = Object.entries(data.settings);
    $("community-settings").replaceChildren(...own.flatMap(([key, value]) => [
      h("dt", {}, key), h("dd", {}, Array.isArray(value) ? value.join(", ") : String(value)),
    ]));
    $("community-settings-none").hidden = own.length > 0;
  }

  for (const tab of document.querySelectorAll(".tabs button")) {
    tab.addEventListener("click", () => {
      state.window = tab.dataset.window;
      for (const t of document.querySelectorAll(".tabs button")) t.classList.toggle("on", t === tab);
      loadCommunity();
    });
  }

  // -- snapshot and live events --------------------------------------------------------------

  let endedTimer = null;
  async function loadEnded() {
    state.ended = (await api("/api/dashboard/raids?status=ended&limit=12")).raids;
    renderEnded();
  }

  async function loadSnapshot() {
    const { raids } = await api("/api/dashboard/raids?status=active");
    const ids = new Set(raids.map((r) => r.id));
    for (const id of [...state.active.keys()]) if (!ids.has(id)) removeActive(id);
    for (const raid of raids.reverse()) applyProgress(raid);
    await loadEnded();
    if (state.selected === null && state.ended.length) select(state.ended[0].id);
    else if (state.selected !== null) select(state.selected);
    return raids;
  }

  async function subscribe(id) {
    const ack = await state.socket.timeout(5000).emitWithAck("raid:subscribe", { raidId: id });
    if (ack.ok) applyProgress(ack.data);
  }

  function onUpdate(msg) {
    if (msg.type === "progress_update") applyProgress(msg.progress);
    else if (msg.type === "participant_joined") {
      const raid = state.active.get(msg.raidId);
      if (raid && msg.position > raid.participants) applyProgress({ ...raid, participants: msg.position }, true);
      refreshCommunitySoon();
    } else if (msg.type === "action_completed") refreshCommunitySoon();
    else if (msg.type === "raid_completed") {
      removeActive(msg.raidId);
      clearTimeout(endedTimer);
      endedTimer = setTimeout(loadEnded, 300);
      refreshCommunitySoon();
      if (state.selected === msg.raidId) setTimeout(() => select(msg.raidId), 400);
    }
  }

  async function onConnect() {
    setConn("syncing", "syncing…");
    try {
      const auth = await state.socket.timeout(5000).emitWithAck("session:authenticate", state.key ? { apiKey: state.key } : {});
      if (!auth.ok) {
        askForKey(state.key ? auth.error.message : "");
        return;
      }
      $("keyform").hidden = true;
      const raids = await loadSnapshot();
      await Promise.all(raids.map((r) => subscribe(r.id)));
      setConn("live", "live");
    } catch (err) {
      console.warn(err);
      setConn("reconnecting", "retrying…");
      setTimeout(() => state.socket.connected && onConnect(), 2000);
    }
  }

  function connect() {
    const socket = io({ transports: ["websocket", "polling"] });
    state.socket = socket;
    socket.on("connect", onConnect);
    socket.on("disconnect", () => setConn("reconnecting", "reconnecting…"));
    socket.on("raid:created", (msg) => {
      const showingEnded = state.selected !== null && !state.active.has(state.selected);
      applyProgress(msg.raid);
      subscribe(msg.raidId);
      if (showingEnded) select(msg.raidId); // a live raid is more interesting than a finished one
    });
    socket.on("raid:update", onUpdate);
  }

  $("keyform").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.key = $("apikey").value.trim();
    localStorage.setItem("nubi.apiKey", state.key);
    state.socket.disconnect().connect();
  });

  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => state.detail && renderDetail(), 150);
  });
  setInterval(tick, 1000);
  updateCounts();
  connect();
})();
