// The moderator console (docs/reviews.md#the-moderator-console). Plain JavaScript, no library:
// it lists the queue, claims one task at a time, and sends allow/block with a reason code.
// The reason codes come from the API's own OpenAPI document (one list, in the code).
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const state = { key: sessionStorage.getItem("moderatorKey") || "", queue: [], current: null, timer: null };

  function status(text, isError) {
    $("status").textContent = text;
    $("status").className = isError ? "error" : "";
  }

  // Relative URLs: the page is served at <base>/console, the API at <base>/...
  async function api(method, path, body) {
    const headers = { "x-api-key": state.key };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let resp;
    try {
      resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (err) {
      return { status: 0, body: { code: "network", message: String(err) } };
    }
    let data = null;
    try { data = await resp.json(); } catch (_) { data = { message: resp.statusText }; }
    return { status: resp.status, body: data };
  }

  async function loadReasons() {
    const r = await fetch("openapi.json");
    const doc = await r.json();
    const codes = doc.components.schemas.VerdictRequest.properties.reason.enum;
    const select = $("reason");
    select.innerHTML = "";
    codes.forEach((code, i) => {
      const opt = document.createElement("option");
      opt.value = code;
      opt.textContent = `${i + 1}. ${code}`;
      select.appendChild(opt);
    });
  }

  async function refresh() {
    const r = await api("GET", "moderation/reviews?limit=50");
    if (r.status !== 200) {
      status(`Cannot read the queue: ${r.status} ${r.body.code || ""} ${r.body.message || ""}`, true);
      return false;
    }
    state.queue = r.body.tasks;
    const list = $("queue");
    list.innerHTML = "";
    for (const t of state.queue) {
      const li = document.createElement("li");
      li.className = t.kind;
      li.textContent = `#${t.task_id} ${t.kind} · p=${fmt(t.probability)}`;
      list.appendChild(li);
    }
    $("depth").textContent = `(${state.queue.length}${r.body.next_cursor ? "+" : ""})`;
    $("next").disabled = state.queue.length === 0;
    return true;
  }

  function fmt(p) { return p === null || p === undefined ? "–" : Number(p).toFixed(3); }

  async function claimNext() {
    if (!(await refresh())) return;
    for (const t of state.queue) {
      const r = await api("POST", `moderation/reviews/${t.task_id}/claim`);
      if (r.status === 200) { show(t, r.body); return; }
      if (r.status !== 409 && r.status !== 404) {
        status(`Claim failed: ${r.status} ${r.body.code || ""} ${r.body.message || ""}`, true);
        return;
      }
    }
    status("Nothing to claim: the queue is empty or every task is claimed by someone else.");
    hide();
  }

  function show(task, lease) {
    state.current = { task, lease };
    $("ad").hidden = false;
    $("ad-kind").textContent = task.kind === "appeal" ? "Appeal of a block:" : "Review:";
    $("ad-task").textContent = `#${task.task_id} (ad ${task.item_id})`;
    $("ad-name").textContent = task.name ?? "(the ad was deleted)";
    $("ad-description").textContent = task.description ?? "";
    $("ad-category").textContent = task.category ?? "–";
    $("ad-images").textContent = task.images_qty ?? "–";
    $("ad-seller").textContent = task.seller_id === null ? "–"
      : `${task.seller_id} (${task.is_verified_seller ? "verified" : "not verified"})`;
    $("ad-model").textContent = `probability ${fmt(task.probability)}, version ${task.model_version ?? "–"}, `
      + `model decision ${task.model_decision ?? "–"}`;
    const appeal = task.kind === "appeal";
    $("ad-appeal-label").hidden = !appeal;
    $("ad-appeal").hidden = !appeal;
    $("ad-appeal").textContent = appeal
      ? `The seller says: ${task.appeal_reason}. Current decision ${task.decision}`
        + (task.reviewed_by ? ` by ${task.reviewed_by} (${task.review_reason})` : " by the model")
      : "";
    $("note").value = "";
    tick();
    clearInterval(state.timer);
    state.timer = setInterval(tick, 1000);
    status(`Claimed task #${task.task_id}: allow (a) or block (b) with a reason (1-5).`);
  }

  function tick() {
    if (!state.current) return;
    const left = Math.round((new Date(state.current.lease.lease_expires_at) - new Date()) / 1000);
    $("lease").textContent = left > 0 ? `lease: ${left} s left` : "lease expired";
    if (left <= 0) {
      clearInterval(state.timer);
      status(`Your lease on task #${state.current.task.task_id} has expired: the task is back in the queue. `
        + "Claim it again (n) before deciding.", true);
    }
  }

  function hide() {
    state.current = null;
    clearInterval(state.timer);
    $("ad").hidden = true;
  }

  async function decide(decision) {
    if (!state.current) return;
    const id = state.current.task.task_id;
    const reason = $("reason").value;
    const note = $("note").value.trim();
    const body = { decision, reason };
    if (note) body.note = note;
    const r = await api("POST", `moderation/reviews/${id}/verdict`, body);
    if (r.status === 200) {
      $("result").textContent = JSON.stringify(r.body, null, 2);
      status(`Task #${id}: ${r.body.decision} (${reason}), decided_by ${r.body.decided_by}.`);
      hide();
      await refresh();
      return;
    }
    if (r.status === 409 && r.body.code === "lease_required") {
      status(`Lease lost on task #${id}: it expired or another moderator took it. Your verdict was NOT recorded.`, true);
      hide();
      await refresh();
      return;
    }
    status(`Verdict refused: ${r.status} ${r.body.code || ""} ${r.body.message || ""}`, true);
  }

  async function connect(event) {
    if (event) event.preventDefault();
    state.key = $("key").value.trim() || state.key;
    sessionStorage.setItem("moderatorKey", state.key);
    await loadReasons();
    if (await refresh()) status(`Queue loaded: ${state.queue.length} task(s) waiting. Claim the next one (n).`);
  }

  document.addEventListener("keydown", (event) => {
    if (event.target instanceof HTMLInputElement || event.target instanceof HTMLTextAreaElement) return;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const k = event.key.toLowerCase();
    if (k === "a") decide("allow");
    else if (k === "b") decide("block");
    else if (k === "n") claimNext();
    else if (/^[1-9]$/.test(k)) {
      const select = $("reason");
      const i = Number(k) - 1;
      if (i < select.options.length) select.selectedIndex = i;
    } else return;
    event.preventDefault();
  });
  $("login").addEventListener("submit", connect);
  $("next").addEventListener("click", claimNext);
  $("allow").addEventListener("click", () => decide("allow"));
  $("block").addEventListener("click", () => decide("block"));
  if (state.key) { $("key").value = state.key; connect(); }
})();
