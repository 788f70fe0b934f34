// nubi live dashboard: a REST snapshot on every (re)connect, then Socket.IO events on top of it
// (deliveries are at-most-once, so the snapshot is the truth and events only move it forward).
// moderate.js adds the moderator's tools on top, through window.nubi and "nubi:*" DOM events.
(() => {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const KEY = "nubi.apiKey"; // sessionStorage: the key lives as long as the tab, never on disk for good
  const state = {
    key: sessionStorage.getItem(KEY) || "",
    me: null, // {keysRequired, scope, community, communityId} once the server accepted us
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
  const chatTitle = (raid) => raid.chat.title || `${raid.chat.platform} ${raid.chat.id}`;
  const shortUrl = (url) => url.replace(/^https:\/\//, "");

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

  // 31 -> "31 s", 95 -> "1 min 35 s", 3720 -> "1 h 2 min": a short raid keeps its seconds.
  function duration(seconds) {
    const total = Math.max(0, Math.round(seconds));
    if (total < 60) return `${total} s`;
    const hrs = Math.floor(total / 3600), m = Math.floor(total / 60) % 60, s = total % 60;
    if (hrs) return m ? `${hrs} h ${m} min` : `${hrs} h`;
    return s ? `${m} min ${s} s` : `${m} min`;
  }

  // A member linked across platforms is one entry: small markers say where they have accounts.
  const PLATFORMS = { telegram: ["TG", "Telegram"], discord: ["DC", "Discord"], web: ["Web", "the web"], console: ["CLI", "the console"] };
  function platformMarks(platforms) {
    if (!platforms || !platforms.length) return null;
    const names = platforms.map((p) => (PLATFORMS[p] || [p, p])[1]);
    return h("span", { class: "platforms", title: names.join(", "), "data-platforms": platforms.join(" ") },
      ...platforms.map((p) => h("span", { class: `pf pf-${p}`, "aria-hidden": "true", text: (PLATFORMS[p] || [p])[0] })),
      h("span", { class: "visually-hidden", text: `on ${names.join(" and ")}` }));
  }

  // The member's highest milestone badge in the community (core/badges.py).
  function badgeMark(badge) {
    if (!badge) return null;
    return h("span", { class: "badge-chip" }, h("span", { "aria-hidden": "true", text: "🏅" }),
      h("span", { class: "visually-hidden", text: "badge" }), ` ${badge}`);
  }

  function board(list, entries, limit) {
    list.replaceChildren(...entries.slice(0, limit).map((e) =>
      h("li", { "data-member-id": String(e.memberId ?? e.member_id) }, h("span", { class: "rank", text: String(e.rank) }),
        h("span", { class: "name", text: e.name }), badgeMark(e.badge), platformMarks(e.platforms),
        h("span", { class: "pts", text: `${e.points} pt` }))));
  }

  // A text nubi also says in chat, in the community's language: marked so screen readers read it right.
  function inLanguage(node, text, language) {
    node.textContent = text;
    if (language) node.setAttribute("lang", language);
    else node.removeAttribute("lang");
  }

  class ApiError extends Error {
    constructor(status, body) {
      super(body?.error?.message || `HTTP ${status}`);
      this.status = status;
      this.code = body?.error?.code;
    }
  }

  // Every call of the page goes through here: the key as X-API-KEY, errors in the documented shape.
  async function api(path, { method = "GET", body } = {}) {
    const headers = state.key ? { "X-API-KEY": state.key } : {};
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const data = res.status === 204 ? null : await res.json().catch(() => null);
    if (res.status === 401) askForKey(state.key ? "That API key was not accepted." : "");
    if (!res.ok) throw new ApiError(res.status, data);
    return data;
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
    $("signout").hidden = true;
    $("signed-in").hidden = true;
    setConn("locked", "API key needed");
    $("no-active").textContent = "Sign in with an API key to see this server's raids.";
    $("no-ended").hidden = true;
    if (state.me) {
      state.me = null;
      document.dispatchEvent(new CustomEvent("nubi:signedout"));
    }
  }

  // -- the live region: one polite, throttled summary ----------------------------------------

  const ANNOUNCE_EVERY = 5000; // a screen reader hears at most one summary per 5 s
  let lastAnnounced = 0, pendingText = null, announceTimer = null;
  function announce(text) {
    pendingText = text;
    if (announceTimer) return;
    const wait = Math.max(0, lastAnnounced + ANNOUNCE_EVERY - Date.now());
    announceTimer = setTimeout(() => {
      announceTimer = null;
      lastAnnounced = Date.now();
      $("announcer").textContent = pendingText;
    }, wait);
  }

  function summary(raid) {
    const met = raid.objectives.filter((o) => o.met).length;
    return `Raid ${raid.id} in ${chatTitle(raid)}: ${raid.completionPct}% done, ${raid.participants} raiders, ` +
      `${raid.actions} actions, ${met} of ${raid.objectives.length} objectives met.`;
  }

  // -- raid cards ----------------------------------------------------------------------------

  // A card is an <article>; its title is a real button that selects it (aria-pressed says which is shown).
  // A click anywhere else on the card does the same for mouse users.
  function cardShell(raid, kind) {
    const select = h("button", { type: "button", class: "select", "aria-pressed": "false" });
    const node = h("article", { class: `card ${kind}`, "data-raid-id": String(raid.id) },
      h("header", {}, h("span", { class: "tag platform" }), h("h3", { class: "title" }, select), h("span", { class: "tag status" })),
      link(raid.targetUrl));
    select.addEventListener("click", () => choose(raid.id));
    node.addEventListener("click", (ev) => { if (!ev.target.closest("a, button")) choose(raid.id); });
    return node;
  }

  function fillShell(node, raid, statusText) {
    node.querySelector(".platform").textContent = raid.chat.platform;
    node.querySelector(".select").textContent = chatTitle(raid);
    node.querySelector(".select").setAttribute("aria-label", `Raid ${raid.id} in ${chatTitle(raid)}: show details`);
    const tag = node.querySelector(".tag.status");
    tag.className = `tag status ${raid.status}`;
    tag.textContent = statusText;
    markSelected(node);
  }

  function markSelected(node) {
    const on = node.dataset.raidId === String(state.selected);
    node.classList.toggle("selected", on);
    node.querySelector(".select").setAttribute("aria-pressed", String(on));
  }

  function activeCard(raid) {
    const node = cardShell(raid, "raid");
    node.append(
      h("div", { class: "overall" }, h("div", { class: "bar", "aria-hidden": "true" }, h("span")), h("span", { class: "pct" })),
      h("dl", { class: "stats" },
        h("div", {}, h("dt", { text: "Raiders" }), h("dd", {}, h("span", { class: "participants", "data-testid": "participants" }), h("small", { class: "max" }))),
        h("div", {}, h("dt", { text: "Actions" }), h("dd", { class: "actions" })),
        h("div", {}, h("dt", { text: "Points" }), h("dd", { class: "points" })),
        h("div", {}, h("dt", { text: "Time left" }), h("dd", { class: "time-left" }))),
      h("ul", { class: "objectives" }),
      h("ol", { class: "board top" }));
    return node;
  }

  function renderActive(raid) {
    let node = document.querySelector(`#active [data-raid-id="${raid.id}"]`);
    if (!node) {
      node = activeCard(raid);
      $("active").prepend(node);
    }
    fillShell(node, raid, "live");
    node.querySelector(".overall .bar > span").style.width = `${Math.min(100, raid.completionPct)}%`;
    node.querySelector(".pct").textContent = `${raid.completionPct}%`;
    node.querySelector(".participants").textContent = String(raid.participants);
    node.querySelector(".max").textContent = ` / ${raid.maxParticipants}`;
    node.querySelector(".actions").textContent = String(raid.actions);
    node.querySelector(".points").textContent = String(raid.pointsAwarded);
    node.querySelector(".objectives").replaceChildren(...raid.objectives.map((o) =>
      h("li", {}, h("span", { text: LABELS[o.action] || o.action }),
        h("div", { class: `bar small${o.met ? " met" : ""}`, "aria-hidden": "true" }, h("span", { style: `width:${Math.min(100, (100 * o.count) / o.target)}%` })),
        h("span", { class: "n", text: `${o.count}/${o.target}` }))));
    board(node.querySelector(".top"), raid.top, 3);
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
      state.detail.raid = { labels: state.detail.raid.labels, ...raid }; // live updates carry no labels
      renderDetail();
      refreshDetailSoon();
      announce(summary(raid));
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

  function reportFigures(raid, r) {
    const objectives = r.objectives || raid.objectives;
    return [["Duration", r.durationSeconds != null ? duration(r.durationSeconds) : "–"], ["Raiders", r.participants ?? raid.participants],
      ["Actions", r.actions ?? raid.actions], ["Objectives", `${objectives.filter((o) => o.met).length}/${objectives.length}`],
      ["Points", r.pointsAwarded ?? raid.pointsAwarded], ["Done", `${r.completionPct ?? raid.completionPct}%`],
      ...(r.endedBecause ? [["Ended", raid.labels?.endedBecause || r.endedBecause, raid.labels?.endedBecause ? raid.language : null]] : []),
      ...(r.claimsByState ? [["Claims", claimStates(r)]] : [])]
      .map(([k, v, lang]) => h("div", {}, h("dt", { text: k }), h("dd", { text: String(v), ...(lang ? { lang } : {}) })));
  }

  function renderEnded() {
    $("ended").replaceChildren(...state.ended.map((raid) => {
      const r = raid.report || {};
      const node = cardShell(raid, "ended");
      fillShell(node, raid, raid.status);
      node.append(h("dl", { class: "report" }, ...reportFigures(raid, r)), h("ol", { class: "board top" }));
      board(node.querySelector(".top"), r.topRaiders || raid.top, 3);
      return node;
    }));
    $("no-ended").hidden = state.ended.length > 0;
  }

  // Verified (a machine saw it) and accepted (a moderator approved it) are never shown as one number.
  const STATE_WORDS = { verified: "verified on X", accepted: "accepted by a moderator", unverifiable: "not verifiable",
    pending: "pending", rejected: "rejected" };
  function claimStates(r) {
    const parts = Object.entries(r.claimsByState).filter(([, n]) => n).map(([k, n]) => `${n} ${STATE_WORDS[k] || k}`);
    return parts.length ? parts.join(" · ") : "none";
  }

  // -- detail panel: chart, report and raid leaderboard --------------------------------------

  function choose(id) {
    select(id);
    $("detail").scrollIntoView({ block: "nearest" });
  }

  async function select(id) {
    state.selected = id;
    for (const n of document.querySelectorAll(".card")) markSelected(n);
    try {
      detailFetched = Date.now();
      const detail = await api(`/api/dashboard/raids/${id}`);
      if (state.selected !== id) return;
      state.detail = detail;
    } catch (err) {
      console.warn(err);
      return;
    }
    const raid = state.detail.raid;
    state.community = { id: raid.communityId, title: chatTitle(raid) };
    renderDetail();
    loadCommunity();
  }

  function renderDetail() {
    const { raid, metrics, report } = state.detail;
    const active = raid.status === "active";
    $("detail").hidden = false;
    $("detail-title").textContent = `Raid #${raid.id} · ${chatTitle(raid)}`;
    $("detail-sub").textContent = `${shortUrl(raid.targetUrl)} · ${raid.status} · ${raid.verification} verification` +
      (raid.pendingClaims ? ` · ${raid.pendingClaims} claims awaiting review` : "");
    if (raid.labels) {
      inLanguage($("raid-board-title"), raid.labels.board, raid.language);
      inLanguage($("raid-board-empty"), raid.labels.empty, raid.language);
    }
    board($("raid-board"), raid.top, 10);
    $("raid-board-empty").hidden = raid.top.length > 0;
    $("detail-report").hidden = active || !report;
    if (!active && report) $("detail-report").replaceChildren(...reportFigures(raid, report));
    const end = Date.parse(active ? raid.endsAt : raid.endedAt || raid.endsAt);
    const points = [{ t: Date.parse(raid.startedAt), pct: 0, raiders: 0 }]
      .concat(metrics.map((m) => ({ t: Date.parse(m.takenAt), pct: m.completionPct, raiders: m.participants })))
      .concat(state.live.get(raid.id) || []);
    if (!active) points.push({ t: end, pct: raid.completionPct, raiders: raid.participants });
    points.sort((a, b) => a.t - b.t);
    window.nubiChart.draw($("chart"), points, Date.parse(raid.startedAt), end);
    $("chart").setAttribute("aria-label", `Raid progress over time: ${raid.completionPct}% done, ${raid.participants} raiders`);
    const snaps = `${metrics.length} metrics snapshot${metrics.length === 1 ? "" : "s"}`;
    $("chart-note").textContent = !active
      ? `Final figures: ${raid.completionPct}% done, ${raid.participants} raiders, ${raid.actions} actions (${snaps}).`
      : metrics.length ? `${snaps} plus live updates.` : "No metrics snapshot yet: showing live updates only.";
    document.dispatchEvent(new CustomEvent("nubi:detail", { detail: raid }));
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
    inLanguage($("community-board-title"), data.labels.title, data.language);
    inLanguage($("community-empty"), data.labels.empty, data.language);
    $("community-language-name").textContent = data.languageName;
    $("community-language-name").setAttribute("lang", data.language);
    $("community-language").hidden = false;
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

  for (const button of document.querySelectorAll(".windows button")) {
    button.addEventListener("click", () => {
      state.window = button.dataset.window;
      for (const b of document.querySelectorAll(".windows button")) b.setAttribute("aria-pressed", String(b === button));
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
      const raid = state.active.get(msg.raidId);
      if (raid && state.selected === msg.raidId) announce(`Raid ${raid.id} in ${chatTitle(raid)} has ended.`);
      removeActive(msg.raidId);
      clearTimeout(endedTimer);
      endedTimer = setTimeout(loadEnded, 300);
      refreshCommunitySoon();
      setTimeout(() => { if (state.selected === msg.raidId) select(msg.raidId); }, 400); // unless another was chosen since
    }
    document.dispatchEvent(new CustomEvent("nubi:update", { detail: msg }));
  }

  // A member crossed a milestone: the list of recent badges, the live region, and fresh boards.
  const BADGES_SHOWN = 5;
  function onBadge(msg) {
    const item = h("li", { "data-member-id": String(msg.memberId), "data-community-id": String(msg.communityId) },
      h("span", { class: "badge-text", lang: msg.language, text: msg.text }), platformMarks(msg.platforms));
    $("badge-feed").prepend(item);
    while ($("badge-feed").children.length > BADGES_SHOWN) $("badge-feed").lastElementChild.remove();
    $("badge-feed-empty").hidden = true;
    announce(`${msg.name} earned the ${msg.badge} badge (${msg.points} points).`);
    if (state.community && state.community.id === msg.communityId) refreshCommunitySoon();
    if (state.detail && state.detail.raid.communityId === msg.communityId) refreshDetailSoon();
  }

  function showSignedIn(me) {
    const label = !me.keysRequired ? "Open server: no API key needed"
      : me.scope === "all" ? "Signed in · all communities" : `Signed in · ${me.community}`;
    $("signed-in").textContent = label;
    $("signed-in").hidden = false;
    $("signout").hidden = !me.keysRequired;
    $("no-active").textContent = "No active raid right now. New raids appear here as they start.";
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
      state.me = await api("/api/dashboard/me");
      showSignedIn(state.me);
      document.dispatchEvent(new CustomEvent("nubi:signedin", { detail: state.me }));
      const raids = await loadSnapshot();
      await Promise.all(raids.map((r) => subscribe(r.id)));
      setConn("live", "live");
    } catch (err) {
      console.warn(err);
      if (err instanceof ApiError && err.status === 401) return;
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
    socket.on("badge:earned", onBadge);
  }

  function reset() {
    for (const id of [...state.active.keys()]) removeActive(id);
    state.ended = [];
    state.selected = null;
    state.detail = null;
    state.community = null;
    $("badge-feed").replaceChildren();
    $("badge-feed-empty").hidden = false;
    renderEnded();
    $("detail").hidden = true;
  }

  $("keyform").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.key = $("apikey").value.trim();
    sessionStorage.setItem(KEY, state.key);
    state.socket.disconnect().connect();
  });

  $("signout").addEventListener("click", () => {
    state.key = "";
    sessionStorage.removeItem(KEY);
    $("apikey").value = "";
    reset();
    askForKey("");
    state.socket.disconnect().connect();
    $("apikey").focus();
  });

  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => state.detail && renderDetail(), 150);
  });

  window.nubi = { api, ApiError, state, select, loadEnded, announce, duration, h };
  setInterval(tick, 1000);
  updateCounts();
  connect();
})();
