// Continuity console: a dependency-free client of the JSON API. Everything from the API is
// rendered with textContent, never parsed as HTML; the token lives in sessionStorage only.
"use strict";

(() => {
  const TOKEN_KEY = "continuity.token";
  const POLL_MS = 1500;
  const LIST_MS = 5000;
  const HEALTH_MS = 10000;
  const ROLE_LABEL = { duty_officer: "duty officer", operator: "operator", auditor: "auditor" };
  const STATUS_TEXT = {
    0: "API unreachable", 400: "Bad request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not found", 409: "Conflict", 422: "Unprocessable", 500: "Server error",
    502: "Bad gateway", 503: "Unavailable", 504: "Gateway timeout",
  };

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY) || "",
    me: null, // {subject, role} as the server reports it; null when it has not said
    incidentId: null,
    pollTimer: null,
    pollSeq: 0,
    inflight: new Set(), // change ids with a decision on the wire
    // change id -> decision the server accepted; until the device change moves on, the row says
    // so instead of offering the buttons again (a second click would record a second decision)
    decided: new Map(),
    rejectDrafts: new Map(), // change id -> reason being typed, survives re-renders
    report: null, // {form, text, incidentId}
    last: null, // the incident as last read, to re-render at once after a local change
  };

  const $ = (id) => document.getElementById(id);

  // The console sits at <root>/console/; the API is its parent, so a path prefix still works.
  const apiUrl = (path) => new URL(`../${path}`, document.baseURI).toString();

  class ApiError extends Error {
    constructor(status, type, detail) {
      super(`${status} ${type}: ${detail}`);
      this.status = status;
      this.type = type;
      this.detail = detail;
    }
  }

  function formatDetail(detail) {
    if (detail === undefined || detail === null) return "";
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) {
      // FastAPI and pydantic validation errors: [{loc, msg, type}, ...]
      return detail.map((d) => {
        if (d && typeof d === "object") {
          const loc = Array.isArray(d.loc) ? d.loc.filter((x) => x !== "body").join(".") : "";
          return (loc ? `${loc}: ` : "") + (d.msg || JSON.stringify(d));
        }
        return String(d);
      }).join("; ");
    }
    return JSON.stringify(detail);
  }

  async function api(method, path, { body } = {}) {
    const headers = { Accept: "application/json, text/markdown;q=0.9, */*;q=0.5" };
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let res;
    try {
      res = await fetch(apiUrl(path), {
        method, headers, cache: "no-store", credentials: "omit", redirect: "error",
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      throw new ApiError(0, "Unreachable", `cannot reach the API (${e.message})`);
    }
    if (res.ok) return res;
    const text = await res.text();
    let type = STATUS_TEXT[res.status] || res.statusText || "Error";
    let detail = text.slice(0, 500);
    try {
      const j = JSON.parse(text);
      if (j && typeof j === "object") {
        if (j.error) type = String(j.error);
        detail = formatDetail(j.detail);
      }
    } catch (_) {
      // not JSON (a proxy's error page): the first part of the text is all we have
    }
    throw new ApiError(res.status, type, detail);
  }

  // --- DOM helpers: text only ---------------------------------------------------------------

  function el(tag, props, ...children) {
    const n = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") n.className = v;
      else if (k === "text") n.textContent = String(v);
      else if (k.startsWith("data-") || k === "title" || k === "type" || k === "aria-label") {
        n.setAttribute(k, String(v));
      } else if (k.startsWith("on")) n.addEventListener(k.slice(2), v);
      else n[k] = v;
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      n.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return n;
  }

  const vi = (text) => el("span", { class: "vi", text });

  // replaceChildren would print a skipped (null) child as the text "null".
  function fill(node, ...children) {
    node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false)
      .map((c) => (c instanceof Node ? c : document.createTextNode(String(c)))));
  }

  // Rows are reused while their data is unchanged, so open <details>, focus and a half-typed
  // reject reason survive the 1.5 s refresh.
  function syncRows(tbody, items, keyOf, build, localSig = () => "") {
    const wanted = items.map((it, i) => ({ key: keyOf(it, i), sig: JSON.stringify(it) + localSig(it), it }));
    const keep = new Map();
    for (const row of [...tbody.children]) {
      const w = wanted.find((x) => x.key === row.dataset.key);
      if (w && w.sig === row.dataset.sig && !keep.has(w.key)) keep.set(w.key, row);
      else row.remove();
    }
    let cursor = tbody.firstChild;
    for (const w of wanted) {
      let row = keep.get(w.key);
      if (!row) {
        row = build(w.it);
        row.dataset.key = w.key;
        row.dataset.sig = w.sig;
      }
      if (row === cursor) cursor = cursor.nextSibling;
      else tbody.insertBefore(row, cursor);
    }
  }

  const pad = (n) => String(n).padStart(2, "0");
  function fmtTime(iso, { date = false } = {}) {
    if (!iso) return "—";
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    const t = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    return date ? `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${t}` : t;
  }

  // --- messages --------------------------------------------------------------------------

  function showError(err, context) {
    const e = err instanceof ApiError ? err : new ApiError(0, "Error", String(err && err.message || err));
    const status = e.status ? `${e.status} ${STATUS_TEXT[e.status] || ""}`.trim() : STATUS_TEXT[0];
    $("alert-title").textContent = e.type === STATUS_TEXT[e.status] ? status : `${status} — ${e.type}`;
    $("alert-detail").textContent = e.detail || "";
    $("alert-context").textContent = context ? `(while ${context})` : "";
    $("alert").dataset.status = String(e.status);
    $("alert").dataset.source = context && context.startsWith("refreshing") ? "poll" : "action";
    $("alert").hidden = false;
  }

  function clearError() {
    $("alert").hidden = true;
  }

  let noticeTimer = null;
  function notice(text) {
    const n = $("notice");
    n.textContent = text;
    n.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => { n.hidden = true; }, 6000);
  }

  // Wraps a user action: one error banner per failure, buttons disabled while it runs.
  async function act(context, buttons, fn) {
    clearError();
    buttons.forEach((b) => { b.disabled = true; });
    try {
      return await fn();
    } catch (e) {
      showError(e, context);
      return undefined;
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  }

  // --- identity and health ---------------------------------------------------------------

  // Actions stay clickable for every role: the server decides, and its refusal is shown. A muted
  // look only tells the user which role an action needs.
  function markRole(node) {
    const role = state.me && state.me.role;
    const other = Boolean(role) && node.dataset.role !== role;
    node.classList.toggle("not-my-role", other);
    node.title = other
      ? `Needs the ${ROLE_LABEL[node.dataset.role]} role; you act as ${ROLE_LABEL[role] || role}` : "";
  }

  function renderIdentity(text, kind) {
    const n = $("identity");
    n.textContent = text;
    n.dataset.state = kind;
    document.body.dataset.role = (state.me && state.me.role) || "";
    for (const node of document.querySelectorAll("[data-role]")) markRole(node);
  }

  let identifySeq = 0;
  async function identify() {
    const seq = ++identifySeq;
    state.me = null;
    if (!state.token) {
      renderIdentity("No token / Chưa có mã", "none");
      return;
    }
    renderIdentity("Checking token…", "pending");
    try {
      let me = null;
      try {
        me = await (await api("GET", "me")).json();
      } catch (e) {
        if (!(e instanceof ApiError && e.status === 404)) throw e;
        // An API without /me: check the token anyway; the server still enforces the role.
        await api("GET", "incidents");
      }
      if (seq !== identifySeq) return;
      if (me) {
        state.me = { subject: String(me.subject), role: String(me.role) };
        renderIdentity(`Acting as ${ROLE_LABEL[state.me.role] || state.me.role} · ${state.me.subject}`, "ok");
      } else {
        renderIdentity("Token accepted · role not reported by this server", "ok");
      }
    } catch (e) {
      if (seq !== identifySeq) return;
      if (e.status === 401) {
        // A refused token is not worth keeping, even for this tab.
        state.token = "";
        sessionStorage.removeItem(TOKEN_KEY);
        renderIdentity("Token refused / Mã không hợp lệ", "bad");
      } else {
        renderIdentity("Token not checked", "bad");
      }
      showError(e, "checking the token");
    }
  }

  function setDot(id, ok, title) {
    const n = $(id);
    n.dataset.state = ok === null ? "unknown" : ok ? "ok" : "down";
    n.title = title;
  }

  async function checkHealth() {
    try {
      const res = await api("GET", "healthz");
      const h = await res.json();
      setDot("health-api", true, `API: ${h.status}`);
      setDot("health-temporal", Boolean(h.temporal), h.temporal ? "Temporal reachable" : "Temporal unreachable");
      setDot("health-database", Boolean(h.database), h.database ? "Database reachable" : "Database unreachable");
    } catch (e) {
      setDot("health-api", false, `API: ${e.detail || e.message}`);
      setDot("health-temporal", null, "unknown: the API did not answer");
      setDot("health-database", null, "unknown: the API did not answer");
    }
  }

  // --- incident list ---------------------------------------------------------------------

  async function loadList({ quiet = false } = {}) {
    if (!state.token) return;
    try {
      const res = await api("GET", "incidents");
      renderList(await res.json());
    } catch (e) {
      if (!quiet) showError(e, "listing incidents");
    }
  }

  function renderList(items) {
    const tbody = $("incident-list").tBodies[0];
    syncRows(tbody, items, (it) => it.id, (it) => el("tr", { "data-incident": it.id },
      el("td", {}, el("button", {
        type: "button", class: "link mono", text: it.id, onclick: () => openIncident(it.id),
      })),
      el("td", {}, el("span", { class: "badge", "data-status": it.status, text: it.status })),
      el("td", { class: "mono", text: fmtTime(it.start_time, { date: true }) })));
    for (const row of tbody.rows) row.classList.toggle("selected", row.dataset.key === state.incidentId);
    $("incident-list-empty").hidden = items.length > 0;
  }

  // --- incident view ---------------------------------------------------------------------

  function openIncident(id) {
    if (state.incidentId !== id) {
      state.rejectDrafts.clear();
      state.inflight.clear();
      state.decided.clear();
      for (const t of ["changes", "calls", "timeline"]) $(t).tBodies[0].replaceChildren();
      closeReport();
    }
    state.incidentId = id;
    $("incident-view").hidden = false;
    $("no-incident").hidden = true;
    $("inc-id").textContent = id;
    $("inc-phase").textContent = "loading…";
    for (const row of $("incident-list").tBodies[0].rows) {
      row.classList.toggle("selected", row.dataset.key === id);
    }
    startPolling();
  }

  function startPolling() {
    clearTimeout(state.pollTimer);
    state.pollSeq += 1;
    poll(state.pollSeq);
  }

  async function poll(seq) {
    const id = state.incidentId;
    if (!id || !state.token || seq !== state.pollSeq) return;
    let again = true;
    try {
      const res = await api("GET", `incidents/${encodeURIComponent(id)}`);
      const data = await res.json();
      if (seq !== state.pollSeq || id !== state.incidentId) return;
      renderIncident(data);
      // A refresh that failed during an outage is over once one succeeds; an action's error stays.
      if ($("alert").dataset.source === "poll") clearError();
      again = data.running; // a finished incident no longer changes
      if (!again) loadList({ quiet: true });
    } catch (e) {
      if (seq !== state.pollSeq) return;
      showError(e, `refreshing incident ${id}`);
      // Auth and missing-incident errors will not fix themselves; outages might.
      again = !(e.status === 401 || e.status === 403 || e.status === 404);
      $("inc-updated").textContent = "refresh failed";
    }
    if (again && seq === state.pollSeq) state.pollTimer = setTimeout(() => poll(seq), POLL_MS);
  }

  function phaseKind(phase) {
    if (phase === "closed") return "closed";
    if (phase === "active") return "active";
    if (phase.startsWith("awaiting")) return "waiting";
    return "working";
  }

  function renderIncident(data) {
    state.last = data;
    const s = data.status;
    const inc = s.incident;
    $("inc-id").textContent = inc.id;
    fill($("inc-meta"),
      el("span", { class: "badge kind", "data-kind": inc.kind, text: inc.kind }), " ",
      el("span", { text: `area ${inc.area}` }), " · ",
      el("span", { text: `declared by ${inc.declared_by} at ${fmtTime(inc.declared_at, { date: true })}` }),
      inc.description ? el("div", { class: "description", text: inc.description }) : null);
    $("inc-playbook").textContent = `playbook ${s.playbook} · sha256 ${s.playbook_sha256.slice(0, 16)}…`;
    $("inc-playbook").title = s.playbook_sha256;
    const phase = $("inc-phase");
    phase.textContent = s.phase;
    phase.dataset.phase = phaseKind(s.phase);
    $("inc-running").textContent = data.running ? "workflow running" : "workflow finished";
    $("inc-running").dataset.running = String(data.running);
    $("inc-updated").textContent = data.running ? `live · ${fmtTime(new Date().toISOString())}`
      : `final · ${fmtTime(new Date().toISOString())}`;

    const outcome = $("inc-outcome");
    outcome.hidden = !s.outcome && !s.stood_down;
    fill(outcome,
      el("strong", { text: "Outcome / Kết quả: " }),
      el("span", { text: s.outcome || "stand-down in progress" }),
      s.stood_down_by ? el("span", { class: "muted", text: ` · stood down by ${s.stood_down_by}` }) : null,
      s.decisions_refused ? el("span", { class: "muted", text: ` · ${s.decisions_refused} decisions refused` }) : null);

    fill($("inc-circuits"), ...(s.circuits.length
      ? s.circuits.map((c) => el("span", { class: "chip mono", text: c }))
      : [el("span", { class: "muted", text: "none selected yet" })]));

    syncRows($("changes").tBodies[0], s.changes, (c) => c.change_id, changeRow,
      (c) => `|${state.inflight.has(c.change_id)}|${state.decided.get(c.change_id) || ""}`);
    $("changes-empty").hidden = s.changes.length > 0;

    const calls = data.calls || [];
    syncRows($("calls").tBodies[0], calls, (c, i) => `${i}:${c.call_sid || ""}`, callRow);
    $("calls-empty").hidden = calls.length > 0;
    fill($("inc-ack"), data.acknowledged_by
      ? el("span", { class: "ack yes", text: `Acknowledged by ${data.acknowledged_by}` })
      : el("span", { class: "ack no", text: "Not acknowledged yet / Chưa xác nhận" }));

    const tl = $("timeline").tBodies[0];
    const atBottom = tl.closest(".scroll");
    const stick = atBottom.scrollTop + atBottom.clientHeight >= atBottom.scrollHeight - 4;
    // Child workflows report their events when they finish, so the record is not in time order;
    // the console sorts by time (stably), the Markdown report keeps the recorded order.
    const timeline = s.timeline.map((t, i) => ({ ...t, i }))
      .sort((a, b) => (Date.parse(a.at) - Date.parse(b.at)) || (a.i - b.i));
    syncRows(tl, timeline, (t) => String(t.i), (t) => el("tr", {},
      el("td", { class: "mono nowrap", title: t.at, text: fmtTime(t.at) }),
      el("td", { class: "nowrap", title: t.event, text: shortChange(t.event) }),
      el("td", { class: "wrap", text: t.detail })));
    if (stick) atBottom.scrollTop = atBottom.scrollHeight;

    const standDown = $("standdown-submit");
    standDown.hidden = !data.running || s.stood_down;
    $("standdown-reason").hidden = standDown.hidden;
  }

  // Change ids repeat the incident id shown above them; the full id stays in the tooltip.
  function shortChange(text) {
    const id = state.incidentId;
    return id ? String(text).split(`-${id}-`).join("-…-") : String(text);
  }

  function changeRow(c) {
    const details = [];
    if (c.commands.length) {
      details.push(el("details", { class: "commands" },
        el("summary", { text: `${c.commands.length} commands` }),
        el("pre", { class: "mono", text: c.commands.join("\n") })));
    }
    if (c.transcripts.length) {
      details.push(el("div", { class: "muted small",
        text: `${c.transcripts.length} transcripts · ${c.transcripts.map((t) => `${t.step} ${t.sha256.slice(0, 8)}`).join(", ")}` }));
    }
    if (c.already_applied) details.push(el("div", { class: "muted small", text: "found already applied on retry" }));
    const wave = c.wave === 0 ? "restore" : String(c.wave);
    return el("tr", { "data-change": c.change_id, "data-state": c.state },
      el("td", {}, el("div", { class: "mono nowrap", title: c.change_id, text: shortChange(c.change_id) }), details),
      el("td", { class: "mono nowrap", text: c.device }),
      el("td", { text: wave }),
      el("td", { class: "mono" }, c.circuits.map((id) => el("div", { class: "nowrap", text: id }))),
      el("td", {},
        el("span", { class: "badge state", "data-state": c.state, text: c.state }),
        c.error ? el("div", { class: "error-text",
          text: `${c.error_type ? `${c.error_type}: ` : ""}${c.error}${c.retryable === null ? "" : c.retryable ? " (retryable)" : " (not retryable)"}` })
          : null),
      el("td", { class: "wrap" },
        el("span", { class: c.verified ? "ok-text" : "muted", text: c.verified ? "verified" : "not verified" }),
        c.verification ? el("div", { class: "small wrap", text: c.verification }) : null),
      el("td", {}, c.decision
        ? [el("span", { class: `decision ${c.decision}`, text: c.decision }),
           el("div", { class: "small", text: `by ${c.decided_by || "?"}` }),
           c.decision_reason ? el("div", { class: "small wrap", text: c.decision_reason }) : null]
        : el("span", { class: "muted", text: "—" })),
      el("td", { class: "actions" }, c.state === "awaiting_confirmation" ? decisionControls(c) : null));
  }

  function decisionControls(c) {
    const id = c.change_id;
    const sent = state.decided.get(id);
    if (sent) {
      return el("span", { class: "muted", "data-sent": sent,
        text: `${sent} sent · waiting for the device / đã gửi, chờ thiết bị` });
    }
    const busy = state.inflight.has(id);
    const wrap = el("div", { class: "decide", "data-role": "operator" });
    const confirm = el("button", { type: "button", class: "ok", "data-action": "confirm", disabled: busy },
      "Confirm", vi("Xác nhận"));
    const reject = el("button", { type: "button", class: "danger", "data-action": "reject", disabled: busy },
      "Reject", vi("Từ chối"));
    const reason = el("input", {
      class: "reject-reason", maxLength: 500, required: true,
      placeholder: "Reason for rejecting / Lý do từ chối", "aria-label": "Reason for rejecting",
    });
    const send = el("button", { type: "submit", class: "danger", "data-action": "send-reject" }, "Send reject");
    const cancel = el("button", { type: "button", class: "secondary" }, "Cancel");
    const form = el("form", { class: "reject-form", autocomplete: "off" }, reason, send, cancel);
    const draft = state.rejectDrafts.get(id);
    form.hidden = draft === undefined;
    reason.value = draft || "";
    reason.addEventListener("input", () => state.rejectDrafts.set(id, reason.value));
    reject.addEventListener("click", () => {
      state.rejectDrafts.set(id, reason.value);
      form.hidden = false;
      reason.focus();
    });
    cancel.addEventListener("click", () => {
      state.rejectDrafts.delete(id);
      form.hidden = true;
    });
    confirm.addEventListener("click", () => decide(c, "confirm", "", [confirm, reject]));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const why = reason.value.trim();
      if (!why) {
        reason.focus();
        return;
      }
      decide(c, "reject", why, [confirm, reject, send]);
    });
    wrap.append(confirm, reject);
    markRole(wrap);
    return [wrap, form];
  }

  async function decide(c, decision, reason, buttons) {
    const incidentId = state.incidentId;
    state.inflight.add(c.change_id);
    const done = await act(`${decision === "confirm" ? "confirming" : "rejecting"} ${c.change_id}`, buttons,
      async () => {
        const res = await api("POST",
          `incidents/${encodeURIComponent(incidentId)}/changes/${encodeURIComponent(c.change_id)}/decision`,
          { body: { decision, reason } });
        return res.json();
      });
    state.inflight.delete(c.change_id);
    if (done) {
      state.decided.set(c.change_id, decision);
      state.rejectDrafts.delete(c.change_id);
      // Same task as the answer: the row must not offer its buttons again, even for a moment.
      if (state.last && state.incidentId === incidentId) renderIncident(state.last);
      notice(`${decision === "confirm" ? "Confirmed" : "Rejected"} ${c.change_id} on ${c.device}`);
      startPolling();
    }
  }

  function callRow(c) {
    return el("tr", { "data-acknowledged": String(c.acknowledged) },
      el("td", {}, el("div", { text: c.officer_name }), el("div", { class: "mono small muted", text: c.officer_id })),
      el("td", {}, el("span", { class: "badge", "data-call": c.status, text: c.status }),
        c.error ? el("div", { class: "error-text", text: c.error }) : null),
      el("td", { class: c.acknowledged ? "ok-text" : "muted", text: c.acknowledged ? "yes" : "no" }),
      el("td", { class: "mono small wrap" },
        el("div", { text: c.call_sid || "—" }), c.sms_sid ? el("div", { text: `SMS ${c.sms_sid}` }) : null),
      el("td", { class: "mono nowrap", text: fmtTime(c.at) }));
  }

  // --- reports and history ---------------------------------------------------------------

  function saveBlob(blob, filename) {
    const url = URL.createObjectURL(blob);
    const a = el("a", { href: url, download: filename, class: "sr-only" });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  async function openReport(form, button) {
    const id = state.incidentId;
    await act(`fetching the ${form} report of ${id}`, [button], async () => {
      const res = await api("GET", `incidents/${encodeURIComponent(id)}/report?form=${encodeURIComponent(form)}`);
      const text = await res.text();
      state.report = { form, text, incidentId: id };
      // A report is a snapshot; the time says how old it is while the incident moves on.
      const at = fmtTime(new Date().toISOString());
      $("report-title").textContent = form === "dossier_2c"
        ? `2c dossier — ${id} · as of ${at} (for police and the DIC / gửi Công an và Sở TT&TT)`
        : `Timeline report — ${id} · as of ${at}`;
      $("report-text").textContent = text;
      $("report-panel").hidden = false;
      $("report-panel").scrollIntoView({ block: "nearest" });
    });
  }

  function closeReport() {
    state.report = null;
    $("report-panel").hidden = true;
    $("report-text").textContent = "";
  }

  async function downloadHistory(button) {
    const id = state.incidentId;
    await act(`exporting the history of ${id}`, [button], async () => {
      const res = await api("GET", `incidents/${encodeURIComponent(id)}/history`);
      saveBlob(await res.blob(), `${id}.json`);
      notice(`History of ${id} downloaded`);
    });
  }

  // --- wiring ----------------------------------------------------------------------------

  function wire() {
    $("token-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const input = $("token-input");
      const token = input.value.trim();
      if (!token) {
        input.focus();
        return;
      }
      clearError();
      state.token = token;
      sessionStorage.setItem(TOKEN_KEY, token);
      input.value = "";
      await identify();
      await loadList();
      if (state.incidentId) startPolling();
    });
    $("token-forget").addEventListener("click", () => {
      state.token = "";
      sessionStorage.removeItem(TOKEN_KEY);
      clearTimeout(state.pollTimer);
      state.pollSeq += 1;
      identify();
    });
    $("alert-close").addEventListener("click", clearError);
    $("list-refresh").addEventListener("click", () => { clearError(); loadList(); });

    $("declare-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const body = {
        kind: $("declare-kind").value,
        area: $("declare-area").value.trim(),
        description: $("declare-description").value.trim(),
      };
      const created = await act("declaring an incident", [$("declare-submit")], async () => {
        const res = await api("POST", "incidents", { body });
        return res.json();
      });
      if (!created) return;
      notice(`Declared ${created.id} · playbook ${created.playbook}`);
      $("declare-description").value = "";
      openIncident(created.id);
      loadList({ quiet: true });
    });

    $("standdown-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const id = state.incidentId;
      const reason = $("standdown-reason").value.trim();
      const ok = await act(`standing down ${id}`, [$("standdown-submit")], async () => {
        await api("POST", `incidents/${encodeURIComponent(id)}/stand-down`, { body: { reason } });
        return true;
      });
      if (!ok) return;
      $("standdown-reason").value = "";
      notice(`Stand-down of ${id} requested; devices go back to their primary paths`);
      startPolling();
    });

    $("report-timeline").addEventListener("click", (ev) => openReport("timeline", ev.currentTarget));
    $("report-dossier").addEventListener("click", (ev) => openReport("dossier_2c", ev.currentTarget));
    $("history-download").addEventListener("click", (ev) => downloadHistory(ev.currentTarget));
    $("report-close").addEventListener("click", closeReport);
    $("report-download").addEventListener("click", () => {
      const r = state.report;
      if (r) saveBlob(new Blob([r.text], { type: "text/markdown;charset=utf-8" }), `${r.incidentId}-${r.form}.md`);
    });
  }

  async function start() {
    wire();
    checkHealth();
    setInterval(checkHealth, HEALTH_MS);
    setInterval(() => { if (!document.hidden) loadList({ quiet: true }); }, LIST_MS);
    await identify();
    await loadList();
  }

  start();
})();
