// Moderator tools on the dashboard: start, end and cancel raids, work the review queue, manage scheduled
// leaderboards and the community's settings. Everything goes through the REST API with the signed-in
// key; the server decides what the key may do, and its error message is shown as it is.
(() => {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const { api, ApiError, h } = window.nubi;
  const mod = { me: null, communities: [], raid: null };
  const loadSettings = (communityId) => window.nubiSettings.load(communityId, { say, fail, chosen });

  function say(text) {
    $("mod-error").textContent = "";
    $("mod-status").textContent = text;
  }

  function fail(err) {
    $("mod-status").textContent = "";
    $("mod-error").textContent = err instanceof ApiError ? err.message : "The server could not be reached. Try again.";
    if (!(err instanceof ApiError)) console.warn(err);
  }

  // A community option is "id:<n>" for one that has rows, "new:<platform>:<id>" for a scoped key's
  // community before its first raid.
  function chosen() {
    const value = $("mod-community").value || "";
    if (value.startsWith("id:")) {
      const c = mod.communities.find((x) => String(x.id) === value.slice(3));
      return c && { id: c.id, platform: c.platform, externalId: c.externalId, title: c.title };
    }
    if (value.startsWith("new:")) {
      const [platform, ...rest] = value.slice(4).split(":");
      return { id: null, platform, externalId: rest.join(":"), title: null };
    }
    return null;
  }

  async function loadCommunities(prefer) {
    const { communities } = await api("/api/communities");
    mod.communities = communities;
    const options = communities.map((c) => h("option", { value: `id:${c.id}`, text: `${c.title || c.externalId} (${c.platform})` }));
    const own = mod.me.community;
    if (own && !communities.some((c) => `${c.platform}:${c.externalId}` === own)) {
      options.push(h("option", { value: `new:${own}`, text: `${own} (no raid yet)` }));
    }
    if (!options.length) options.push(h("option", { value: "new:web:dashboard", text: "web:dashboard (new)" }));
    const select = $("mod-community");
    const before = prefer ? `id:${prefer}` : select.value;
    select.replaceChildren(...options);
    if ([...select.options].some((o) => o.value === before)) select.value = before;
    await loadCommunityTools();
  }

  async function loadCommunityTools() {
    const c = chosen();
    const known = Boolean(c && c.id);
    for (const id of ["review-list", "schedule-list"]) $(id).replaceChildren();
    $("review-count").textContent = "0";
    $("review-empty").textContent = known ? "No claim is waiting for review." : "This community has no raid yet.";
    $("schedule-empty").textContent = known ? "No announcement is scheduled." : "Start a first raid to schedule leaderboards.";
    $("schedule-form").hidden = !known;
    $("settings-form").hidden = true;
    $("settings-note").textContent = known ? "Loading…" : "Start a first raid to see this community's settings.";
    if (!known) return;
    await Promise.all([loadReview(c.id), loadSchedules(c.id), loadSettings(c.id)].map((p) => p.catch(fail)));
  }

  // The pressed button left the page with its row: put the keyboard on the next row, or on the heading.
  function keepFocus(listId, headingId) {
    if (document.activeElement && document.activeElement !== document.body) return;
    const next = $(listId).querySelector("button");
    if (next) next.focus();
    else $(headingId).focus();
  }

  // -- start / end / cancel ----------------------------------------------------------------------

  $("start-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const c = chosen();
    if (!c) return fail(new ApiError(400, { error: { message: "Pick a community first." } }));
    const objectives = {};
    for (const action of ["like", "repost", "reply"]) {
      const n = Number($(`start-${action}`).value);
      if (n > 0) objectives[action] = n;
    }
    const body = { community: { platform: c.platform, id: c.externalId }, targetUrl: $("start-url").value.trim(),
      objectives, durationSeconds: Math.round(Number($("start-minutes").value) * 60) };
    if (c.title) body.community.title = c.title;
    if ($("start-verification").value) body.verification = $("start-verification").value;
    if ($("start-replace").checked) body.replace = true;
    try {
      const raid = await api("/api/raids", { method: "POST", body });
      say(`Raid #${raid.id} started in ${raid.chat.title || `${raid.chat.platform} ${raid.chat.id}`}.`);
      window.nubi.select(raid.id); // the moderator wants to watch the raid they just started
      if (!c.id) await loadCommunities(raid.communityId);
    } catch (err) {
      fail(err);
    }
  });

  async function endRaid(cancel) {
    const raid = mod.raid;
    if (!raid) return;
    try {
      const done = await api(`/api/raids/${raid.id}/end`, { method: "POST", body: cancel ? { cancel: true } : {} });
      say(done.ended ? `Raid #${raid.id} ${cancel ? "cancelled" : `ended: ${done.status}`}.`
        : `Raid #${raid.id} had already ended (${done.status}).`);
      setTimeout(() => { // events are at-most-once: read the outcome back
        window.nubi.loadEnded();
        if (window.nubi.state.selected === raid.id) window.nubi.select(raid.id);
      }, 300);
    } catch (err) {
      fail(err);
    }
  }
  $("end-raid").addEventListener("click", () => endRaid(false));
  $("cancel-raid").addEventListener("click", () => endRaid(true));

  document.addEventListener("nubi:detail", (ev) => {
    mod.raid = ev.detail;
    $("detail-actions").hidden = !mod.me || ev.detail.status !== "active";
  });

  // -- review queue --------------------------------------------------------------------------------

  async function loadReview(communityId) {
    const { items } = await api(`/api/communities/${communityId}/review`);
    if (chosen()?.id !== communityId) return;
    $("review-count").textContent = String(items.length);
    $("review-empty").hidden = items.length > 0;
    $("review-list").replaceChildren(...items.map((item) => {
      const what = `${item.name || `member ${item.memberId}`}: ${item.action} on raid #${item.raidId}`;
      const accept = h("button", { type: "button", text: "Accept", "aria-label": `Accept ${what}` });
      const reject = h("button", { type: "button", class: "danger", text: "Reject", "aria-label": `Reject ${what}` });
      accept.addEventListener("click", () => review(item, "accept", what));
      reject.addEventListener("click", () => review(item, "reject", what));
      const proof = item.proofUrl ? h("a", { href: item.proofUrl, target: "_blank", rel: "noopener noreferrer", text: "proof" }) : null;
      return h("li", { "data-claim-id": String(item.claimId) }, h("span", { class: "what", text: what }), proof,
        h("span", { class: "buttons" }, accept, reject));
    }));
  }

  async function review(item, decision, what) {
    try {
      await api(`/api/claims/${item.claimId}/review`, { method: "POST", body: { decision } });
      say(`${decision === "accept" ? "Accepted" : "Rejected"} ${what}.`);
      const c = chosen();
      if (c?.id) await loadReview(c.id);
      keepFocus("review-list", "review-title");
    } catch (err) {
      fail(err);
    }
  }

  let reviewTimer = null;
  document.addEventListener("nubi:update", (ev) => {
    if (!mod.me || !["action_completed", "progress_update"].includes(ev.detail.type)) return;
    clearTimeout(reviewTimer);
    reviewTimer = setTimeout(() => { const c = chosen(); if (c?.id) loadReview(c.id).catch(fail); }, 700);
  });

  // -- schedules -----------------------------------------------------------------------------------

  async function loadSchedules(communityId) {
    const { schedules } = await api(`/api/communities/${communityId}/schedules`);
    if (chosen()?.id !== communityId) return;
    $("schedule-empty").hidden = schedules.length > 0;
    $("schedule-list").replaceChildren(...schedules.map((s) => {
      const what = `${s.window} leaderboard, top ${s.top}, at "${s.cron}" ${s.tz}`;
      const remove = h("button", { type: "button", class: "danger", text: "Remove", "aria-label": `Remove the ${what}` });
      remove.addEventListener("click", async () => {
        try {
          await api(`/api/communities/${communityId}/schedules/${s.id}`, { method: "DELETE" });
          say(`Removed the ${what}.`);
          await loadSchedules(communityId);
          keepFocus("schedule-list", "schedules-title");
        } catch (err) {
          fail(err);
        }
      });
      return h("li", { "data-schedule-id": String(s.id) }, h("span", { class: "what", text: what }), h("span", { class: "buttons" }, remove));
    }));
  }

  $("schedule-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const c = chosen();
    if (!c?.id) return;
    const body = { cron: $("schedule-cron").value.trim(), window: $("schedule-window").value,
      top: Number($("schedule-top").value), tz: $("schedule-tz").value.trim() || "UTC" };
    try {
      const s = await api(`/api/communities/${c.id}/schedules`, { method: "POST", body });
      say(`Scheduled the ${s.window} leaderboard at "${s.cron}" ${s.tz}.`);
      await loadSchedules(c.id);
    } catch (err) {
      fail(err);
    }
  });

  document.addEventListener("nubi:signedin", (ev) => {
    mod.me = ev.detail;
    $("moderate").hidden = false;
    loadCommunities().catch(fail);
  });
  document.addEventListener("nubi:signedout", () => {
    mod.me = null;
    $("moderate").hidden = true;
    $("detail-actions").hidden = true;
  });
  $("mod-community").addEventListener("change", () => loadCommunityTools().catch(fail));

  window.nubiModerate = { chosen, loadCommunities };
})();
