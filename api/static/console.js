// Continuity console: a dependency-free client of the JSON API. Everything from the API is
// rendered with textContent, never parsed as HTML; the token lives in sessionStorage only.
"use strict";

(() => {
  const TOKEN_KEY = "continuity.token";
  const POLL_MS = 1500;
  const LIST_MS = 5000;
  const CIRCUITS_MS = 3000;
  const HEALTH_MS = 10000;
  // The NOC reads local time; the browser running the console may be set to any zone.
  // The deployment may name another zone (GET /display, CONTINUITY_DISPLAY_ZONE).
  let NOC_TZ = "Asia/Ho_Chi_Minh";
  const ROLE_LABEL = { duty_officer: "duty officer", operator: "operator", auditor: "auditor" };
  const STATUS_TEXT = {
    0: "API unreachable", 400: "Bad request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not found", 409: "Conflict", 422: "Unprocessable", 500: "Server error",
    502: "Bad gateway", 503: "Unavailable", 504: "Gateway timeout",
  };
  // Why a decision was refused, in the operator's words; the server's own detail follows it.
  const REFUSAL_TEXT = {
    SelfDecision: "the declarer may not decide / người công bố không được quyết định",
    NotAConfirmer: "not a confirmer of this wave / không thuộc người xác nhận của đợt này",
    UnknownOperator: "not an operator of the inventory / không phải vận hành viên",
    UnknownChange: "no such change / không có thay đổi này",
    ChangeNotPending: "no longer awaiting confirmation / không còn chờ xác nhận",
    WindowClosed: "its confirmation window closed / đã hết thời gian xác nhận",
    AlreadyDecided: "already decided / đã có quyết định",
    StaleChange: "the change sent other lines than this screen showed: reload / thay đổi khác với màn hình: tải lại",
  };
  const ENDING_PHASES = new Set(["standing_down", "aborting", "closed", "aborted"]);
  const AREA_HINT = "area id / mã địa bàn"; // the area input's placeholder before /areas answers

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY) || "",
    me: null, // {subject, role} as the server reports it; null when it has not said
    view: "incident",
    incidentId: null,
    pollTimer: null,
    pollSeq: 0,
    inflight: new Set(), // change ids with a decision on the wire
    // change id -> decision the server accepted; until the device change moves on, the row says
    // so instead of offering the buttons again (a second click would record a second decision)
    decided: new Map(),
    // change id -> {kind: "refused"|"busy", type, detail}: what the server said to the last try
    refusals: new Map(),
    // change id -> {decision, decided_by, deadline} from the store, which arbitrates decisions
    // and can be ahead of the incident's own status
    claims: new Map(),
    claimsEtag: null, // {id, etag, claims}: the claims list as last read, by its ETag
    statusEtag: null, // {id, etag, data}: the incident's status as last read, by its ETag
    rejectDrafts: new Map(), // change id -> reason being typed, survives re-renders
    report: null, // {form, text, incidentId}
    last: null, // the incident as last read, to re-render at once after a local change
    circuitInfo: new Map(), // circuit id -> {name, owner, area, priority_class}
    circuitsTimer: null,
    circuitsSeq: 0,
    skewMs: 0, // server clock minus ours, from the Date header, for the countdowns
  };

  const $ = (id) => document.getElementById(id);

  // The console sits at <root>/console/; the API is its parent, so a path prefix still works.
  const apiUrl = (path) => new URL(`../${path}`, document.baseURI).toString();

  class ApiError extends Error {
    constructor(status, type, detail, retryAfter) {
      super(`${status} ${type}: ${detail}`);
      this.status = status;
      this.type = type;
      this.detail = detail;
      this.retryAfter = retryAfter;
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

  function noteServerClock(res) {
    const date = Date.parse(res.headers.get("Date") || "");
    if (Number.isNaN(date)) return;
    // The header has whole seconds: only a clock that is clearly off is corrected.
    const skew = date + 500 - Date.now();
    state.skewMs = Math.abs(skew) > 2000 ? skew : 0;
  }

  // With ifNoneMatch (an ETag this console holds), a 304 is an answer: "what you hold is current".
  async function api(method, path, { body, ifNoneMatch } = {}) {
    const headers = { Accept: "application/json, text/markdown;q=0.9, */*;q=0.5" };
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (ifNoneMatch) headers["If-None-Match"] = ifNoneMatch;
    let res;
    try {
      res = await fetch(apiUrl(path), {
        method, headers, cache: "no-store", credentials: "omit", redirect: "error",
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      throw new ApiError(0, "Unreachable", `cannot reach the API (${e.message})`);
    }
    noteServerClock(res);
    if (res.ok || (ifNoneMatch && res.status === 304)) return res;
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
    const retryAfter = Number.parseInt(res.headers.get("Retry-After") || "", 10);
    throw new ApiError(res.status, type, detail, Number.isNaN(retryAfter) ? undefined : retryAfter);
  }

  // --- DOM helpers: text only ---------------------------------------------------------------

  function el(tag, props, ...children) {
    const n = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") n.className = v;
      else if (k === "text") n.textContent = String(v);
      else if (k.startsWith("data-") || k.startsWith("aria-") || k === "title" || k === "type"
        || k === "datetime") {
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

  // --- time: NOC local time with its offset, and UTC ---------------------------------------

  const pad = (n) => String(n).padStart(2, "0");

  // The store's timestamps can arrive without a zone (SQLite keeps them naive); they are UTC.
  // A zone-less ISO string would otherwise be read as the browser's local time.
  function parseTime(v) {
    if (!v) return null;
    if (v instanceof Date) return v;
    let s = String(v);
    if (/T\d{2}:\d{2}(:\d{2}(\.\d+)?)?$/.test(s)) s += "Z";
    const d = new Date(s);
    return Number.isNaN(d.getTime()) ? null : d;
  }

  let nocFormat = null;
  function useZone(zone) {
    try {
      nocFormat = new Intl.DateTimeFormat("en-GB", {
        timeZone: zone, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
        hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "longOffset",
      });
      NOC_TZ = zone;
    } catch (_) {
      nocFormat = null; // no time zone data: fall back to the browser's zone, offset still shown
    }
  }
  useZone(NOC_TZ);

  async function loadZone() {
    try {
      const zone = (await (await api("GET", "display")).json()).zone;
      if (zone && zone !== NOC_TZ) {
        useZone(zone);
        for (const node of document.querySelectorAll("time.ts[datetime]")) {
          const iso = node.getAttribute("datetime");
          node.title = fullTime(iso);
          const local = node.querySelector(".ts-local");
          if (local) local.textContent = fmtTime(iso, { date: local.textContent.includes("-") });
        }
      }
    } catch (_) {
      // The default zone stays: every time still carries its offset and UTC.
    }
  }

  // {date, time, offset} in NOC time ("+07:00"), or in the browser's zone without tz data.
  function nocParts(d) {
    if (nocFormat) {
      const p = Object.fromEntries(nocFormat.formatToParts(d).map((x) => [x.type, x.value]));
      const m = /([+-])(\d{1,2})(?::?(\d{2}))?/.exec(p.timeZoneName || "");
      const offset = m ? `${m[1]}${pad(m[2])}:${m[3] || "00"}` : "+00:00";
      return { date: `${p.year}-${p.month}-${p.day}`, time: `${p.hour}:${p.minute}:${p.second}`, offset, zone: NOC_TZ };
    }
    const off = -d.getTimezoneOffset();
    const sign = off >= 0 ? "+" : "-";
    return {
      date: `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`,
      time: `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`,
      offset: `${sign}${pad(Math.floor(Math.abs(off) / 60))}:${pad(Math.abs(off) % 60)}`,
      zone: "browser time",
    };
  }

  function utcParts(d) {
    return {
      date: `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`,
      time: `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`,
    };
  }

  const shortOffset = (offset) => offset.replace(/:00$/, "");

  // "03:16:50 +07" (with the date in front when asked); the full instant in both zones as title.
  function fmtTime(iso, { date = false } = {}) {
    const d = parseTime(iso);
    if (!d) return iso ? String(iso) : "—";
    const n = nocParts(d);
    return `${date ? `${n.date} ` : ""}${n.time} ${shortOffset(n.offset)}`;
  }

  function fmtUtc(iso, { date = false } = {}) {
    const d = parseTime(iso);
    if (!d) return "";
    const u = utcParts(d);
    return `${date ? `${u.date} ` : ""}${u.time} UTC`;
  }

  function fullTime(iso) {
    const d = parseTime(iso);
    if (!d) return "";
    const n = nocParts(d);
    const u = utcParts(d);
    return `${n.date} ${n.time} UTC${n.offset} (${n.zone}) = ${u.date} ${u.time} UTC`;
  }

  // A time cell: NOC time with offset, UTC underneath (both: true) or on hover only.
  function timeEl(iso, { date = false, both = true } = {}) {
    if (!iso) return el("span", { class: "muted", text: "—" });
    return el("time", { class: "ts", datetime: String(iso), title: fullTime(iso) },
      el("span", { class: "ts-local", text: fmtTime(iso, { date }) }),
      both ? el("span", { class: "ts-utc", text: fmtUtc(iso, { date }) }) : null);
  }

  const serverNow = () => Date.now() + state.skewMs;

  function fmtLeft(ms) {
    const s = Math.max(0, Math.ceil(ms / 1000));
    return `${Math.floor(s / 60)}:${pad(s % 60)}`;
  }

  function renderCountdown(node) {
    const d = parseTime(node.dataset.deadline);
    if (!d) return;
    const left = d.getTime() - serverNow();
    node.dataset.urgency = left <= 0 ? "closed" : left < 10000 ? "urgent" : "ok";
    node.textContent = left <= 0
      ? "window closing / hết giờ xác nhận"
      : `${fmtLeft(left)} left / còn ${fmtLeft(left)}`;
  }

  function tick() {
    const now = new Date(serverNow());
    const n = nocParts(now);
    const u = utcParts(now);
    $("clock").textContent = `${n.time} ${shortOffset(n.offset)} · ${u.time} UTC`;
    for (const node of document.querySelectorAll(".countdown[data-deadline]")) renderCountdown(node);
  }

  // --- messages --------------------------------------------------------------------------

  function showError(err, context) {
    const e = err instanceof ApiError ? err : new ApiError(0, "Error", String(err && err.message || err));
    const status = e.status ? `${e.status} ${STATUS_TEXT[e.status] || ""}`.trim() : STATUS_TEXT[0];
    $("alert-title").textContent = e.type === STATUS_TEXT[e.status] ? status : `${status} — ${e.type}`;
    $("alert-detail").textContent = e.status === 503
      ? `busy, try again${e.retryAfter ? ` in ${e.retryAfter} s` : ""} / hệ thống bận, thử lại — ${e.detail || ""}`
      : e.detail || "";
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
  // onError sees the failure first (e.g. to show it beside the row it concerns).
  function renderPlan(plan) {
    const lines = [
      `${plan.playbook} v${plan.version} · ${plan.circuits.length} circuits · plan ${plan.sha256.slice(0, 16)}`,
    ];
    for (const c of plan.changes) {
      lines.push("", `wave ${c.wave} (${c.wave_name}) ${c.device} [${c.platform}]: ${c.circuits.join(", ")}`);
      for (const line of c.reroute) lines.push(`  ${line}`);
    }
    if (!plan.changes.length) lines.push("", "nothing to send / không có lệnh nào");
    return lines.join("\n");
  }

  async function act(context, buttons, fn, onError) {
    clearError();
    buttons.forEach((b) => { b.disabled = true; });
    try {
      return await fn();
    } catch (e) {
      if (onError) onError(e);
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
    n.dataset.state = ok === null ? "unknown" : ok === "warn" ? "warn" : ok ? "ok" : "down";
    n.title = title;
  }

  // The dots a signed-in screen takes from GET /checks: `continuity doctor`'s own checks.
  const CHECK_DOTS = {
    temporal: "health-temporal",
    database: "health-database",
    devices: "health-devices",
    inventory: "health-devices",
    workers: "health-workers",
    telephony: "health-telephony",
  };

  function showChecks(checks) {
    const bySubject = {};
    for (const c of checks) {
      const id = CHECK_DOTS[c.subject];
      if (id) (bySubject[id] = bySubject[id] || []).push(c);
    }
    for (const [id, found] of Object.entries(bySubject)) {
      const worst = found.some((c) => c.verdict === "FAIL") ? false
        : found.some((c) => c.verdict === "warn") ? "warn" : true;
      setDot(id, worst, found.map((c) => `${c.verdict}: ${c.detail}`).join("\n"));
    }
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
      for (const id of ["health-temporal", "health-database", "health-devices", "health-workers", "health-telephony"]) {
        setDot(id, null, "unknown: the API did not answer");
      }
      return;
    }
    if (!state.token) {
      setDot("health-devices", null, "sign in to see the devices' checks");
      setDot("health-workers", null, "sign in to see the workers check");
      setDot("health-telephony", null, "sign in to see the telephony check");
      return;
    }
    try {
      showChecks((await (await api("GET", "checks")).json()).checks);
    } catch (e) {
      for (const id of ["health-devices", "health-workers", "health-telephony"]) {
        setDot(id, null, `checks: ${e.detail || e.message}`);
      }
    }
  }

  // --- views -----------------------------------------------------------------------------

  function showView(view) {
    state.view = view;
    for (const tab of document.querySelectorAll(".tabs .tab")) {
      tab.setAttribute("aria-pressed", String(tab.dataset.view === view));
    }
    $("circuits-view").hidden = view !== "circuits";
    $("incident-view").hidden = view !== "incident" || !state.incidentId;
    $("no-incident").hidden = view !== "incident" || Boolean(state.incidentId);
    if (view === "circuits") startCircuits();
    else stopCircuits();
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
        type: "button", class: "link mono incident-link", text: it.id, onclick: () => openIncident(it.id),
      }), el("div", { class: "small muted" }, timeEl(it.start_time, { date: true, both: false }))),
      el("td", {}, el("span", { class: "badge", "data-status": it.status, text: it.status }))));
    for (const row of tbody.rows) row.classList.toggle("selected", row.dataset.key === state.incidentId);
    $("incident-list-empty").hidden = items.length > 0;
  }

  // --- areas: the declare form's suggestions, from the inventory ----------------------------

  function renderAreas(areas, note) {
    fill($("areas"), areas.map((a) => el("option", {
      value: String(a.id), label: a.name ? `${a.id} — ${a.name}` : String(a.id),
    })));
    // The circuits panel filters by the same units (a former district: its communes' circuits).
    const select = $("circuits-area");
    const listed = new Set([...select.options].map((o) => o.value));
    for (const a of areas) {
      if (!listed.has(String(a.id))) {
        select.append(el("option", { value: String(a.id), text: a.name ? `${a.id} — ${a.name}` : String(a.id) }));
      }
    }
    $("declare-area").placeholder = areas.length ? String(areas[0].id) : AREA_HINT;
    $("areas-note").textContent = note;
    $("areas-note").hidden = !note;
  }

  async function loadSegments() {
    if (!state.token) {
      fill($("segments"), []);
      return;
    }
    try {
      const segments = await (await api("GET", "cable-segments")).json();
      fill($("segments"), (Array.isArray(segments) ? segments : []).map((g) => el("option", {
        value: String(g.id), label: `${g.id} — ${g.name} (${g.route_name}; ${g.circuits.length} circuits)`,
      })));
    } catch (e) {
      fill($("segments"), []); // a convenience: the id can still be typed, the server checks it
    }
  }

  // What the form declares: a cut segment runs the cable-cut playbook; a drill names devices.
  function declaration() {
    const segment = $("declare-segment").value.trim();
    const drill = $("declare-drill").checked;
    const devices = $("declare-drill-devices").value.split(",").map((d) => d.trim()).filter(Boolean);
    return {
      playbook: segment ? "sabotage-cable-cut" : "default",
      body: {
        kind: segment ? "sabotage" : $("declare-kind").value,
        area: $("declare-area").value.trim(),
        description: $("declare-description").value.trim(),
        ...(segment ? { segment, playbook: "sabotage-cable-cut" } : {}),
        ...(drill ? { drill: true, drill_devices: devices } : {}),
      },
    };
  }

  let areasSeq = 0;
  async function loadAreas() {
    const seq = ++areasSeq;
    if (!state.token) {
      renderAreas([], "");
      return;
    }
    try {
      const areas = await (await api("GET", "areas")).json();
      if (seq === areasSeq) renderAreas(Array.isArray(areas) ? areas : [], "");
    } catch (e) {
      // Suggestions are a convenience: any area id can still be typed, and the server checks it.
      if (seq === areasSeq) {
        renderAreas([], `No area list (${e.status || "unreachable"}): type the area id / Không tải được danh sách địa bàn`);
      }
    }
  }

  // --- circuits: names for the incident view, and the all-circuits panel -------------------

  function rememberCircuits(items) {
    for (const c of items) {
      state.circuitInfo.set(c.id, { name: c.name, owner: c.owner, area: c.area, priority_class: c.priority_class });
    }
    const select = $("circuits-area");
    const listed = new Set([...select.options].map((o) => o.value));
    for (const area of [...new Set(items.map((c) => c.area))].sort()) {
      if (!listed.has(area)) select.append(el("option", { value: area, text: area }));
    }
  }

  async function loadCircuitNames() {
    if (!state.token || state.circuitInfo.size) return;
    try {
      rememberCircuits(await (await api("GET", "circuits")).json());
      if (state.last) renderIncident(state.last);
    } catch (_) {
      // names are a convenience; the incident view shows circuit ids without them
    }
  }

  function startCircuits() {
    clearTimeout(state.circuitsTimer);
    state.circuitsSeq += 1;
    pollCircuits(state.circuitsSeq);
  }

  function stopCircuits() {
    clearTimeout(state.circuitsTimer);
    state.circuitsSeq += 1;
  }

  async function pollCircuits(seq) {
    if (seq !== state.circuitsSeq || state.view !== "circuits") return;
    if (state.token && !document.hidden) {
      // The area filter is applied by the server; the names are learnt from the full list.
      const area = $("circuits-area").value;
      try {
        const res = await api("GET", area ? `circuits?area=${encodeURIComponent(area)}` : "circuits");
        const items = await res.json();
        if (seq !== state.circuitsSeq) return;
        rememberCircuits(items);
        renderCircuits(items);
        $("circuits-updated").textContent = `live · ${fmtTime(new Date(serverNow()).toISOString())}`;
        if ($("alert").dataset.source === "circuits") clearError();
      } catch (e) {
        if (seq !== state.circuitsSeq) return;
        showError(e, "refreshing the circuits");
        $("alert").dataset.source = "circuits";
        $("circuits-updated").textContent = "refresh failed";
      }
    }
    if (seq === state.circuitsSeq) state.circuitsTimer = setTimeout(() => pollCircuits(seq), CIRCUITS_MS);
  }

  const stateBadge = (cls, value) => el("span", { class: `badge ${cls}`, "data-state": value, text: value });

  function incidentLinks(ids) {
    if (!ids || !ids.length) return el("span", { class: "muted", text: "—" });
    return ids.map((id) => el("div", {}, el("button", {
      type: "button", class: "link mono", "data-incident": id, text: id, title: `Open ${id}`,
      onclick: () => openIncident(id),
    })));
  }

  function renderCircuits(items) {
    const counts = new Map();
    for (const c of items) counts.set(c.state, (counts.get(c.state) || 0) + 1);
    fill($("circuits-summary"), [...counts].map(([s, n]) => el("span", { class: "chip" },
      stateBadge("cstate", s), ` ${n}`)));
    syncRows($("all-circuits").tBodies[0], items, (c) => c.id, (c) => {
      const latest = c.parts.map((p) => p.updated_at).filter(Boolean)
        .sort((a, b) => parseTime(a) - parseTime(b)).pop();
      return el("tr", { "data-circuit": c.id, "data-state": c.state },
        el("td", {}, el("div", { class: "mono nowrap", text: c.id }), el("div", { class: "small muted", text: c.name })),
        el("td", {}, el("div", { text: c.owner }), el("div", { class: "small muted mono", text: c.priority_class })),
        el("td", { class: "mono nowrap", text: c.area }),
        el("td", { class: "num", text: c.restoration_level }),
        el("td", { "data-cell": "state" }, stateBadge("cstate", c.state)),
        el("td", { "data-cell": "parts" }, c.parts.map((p) => el("div", { class: "part", "data-device": p.device },
          el("span", { class: "mono", text: p.device }), " ", stateBadge("pstate", p.state),
          p.change_id ? el("div", { class: "small muted mono wrap", title: p.detail || "", text: p.change_id }) : null))),
        el("td", { "data-cell": "holders" }, incidentLinks(c.held_by)),
        el("td", {}, timeEl(latest)));
    });
    $("all-circuits-empty").hidden = items.length > 0;
  }

  // --- incident view ---------------------------------------------------------------------

  function openIncident(id) {
    if (state.incidentId !== id) {
      state.rejectDrafts.clear();
      state.inflight.clear();
      state.decided.clear();
      state.refusals.clear();
      state.claims.clear();
      state.claimsEtag = null;
      state.statusEtag = null;
      state.last = null;
      for (const t of ["changes", "calls", "timeline", "inc-circuits", "review"]) $(t).tBodies[0].replaceChildren();
      closeReport();
      closeAbort();
    }
    state.incidentId = id;
    $("inc-id").textContent = id;
    $("inc-phase").textContent = "loading…";
    for (const row of $("incident-list").tBodies[0].rows) {
      row.classList.toggle("selected", row.dataset.key === id);
    }
    showView("incident");
    loadCircuitNames();
    startPolling();
  }

  function startPolling() {
    clearTimeout(state.pollTimer);
    state.pollSeq += 1;
    poll(state.pollSeq);
  }

  // The store's view of the changes awaiting confirmation: who already decided which. Sent
  // back by its ETag, an unchanged list is a 304 without a body, and the last one read stands.
  async function loadClaims(id) {
    try {
      const held = state.claimsEtag && state.claimsEtag.id === id ? state.claimsEtag : null;
      const res = await api("GET", `incidents/${encodeURIComponent(id)}/changes?state=awaiting_confirmation`,
        { ifNoneMatch: held ? held.etag : undefined });
      if (res.status === 304) return held.claims;
      const rows = await res.json();
      const claims = new Map(rows.map((r) => [r.change_id, {
        decision: r.decision, decided_by: r.decided_by, deadline: r.deadline, lines_sha256: r.lines_sha256,
      }]));
      const etag = res.headers.get("ETag");
      state.claimsEtag = etag ? { id, etag, claims } : null;
      return claims;
    } catch (_) {
      return null; // the incident's own status still says what to show
    }
  }

  async function poll(seq) {
    const id = state.incidentId;
    if (!id || !state.token || seq !== state.pollSeq) return;
    let again = true;
    const claims = loadClaims(id);
    try {
      // Sent back by its ETag: an unchanged status is a 304 without its body (~460 KB at
      // 200 devices), and the one already drawn stands.
      const held = state.statusEtag && state.statusEtag.id === id ? state.statusEtag : null;
      const res = await api("GET", `incidents/${encodeURIComponent(id)}`,
        { ifNoneMatch: held ? held.etag : undefined });
      const data = res.status === 304 ? held.data : await res.json();
      const fresh = await claims;
      if (seq !== state.pollSeq || id !== state.incidentId) return;
      const etag = res.headers.get("ETag");
      state.statusEtag = etag ? { id, etag, data } : null;
      if (fresh) state.claims = fresh;
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
    if (phase === "aborted") return "aborted";
    if (phase === "active") return "active";
    if (phase === "standing_down" || phase === "aborting") return "ending";
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
      el("span", { text: `declared by ${inc.declared_by} at ` }),
      el("time", { datetime: inc.declared_at, title: fullTime(inc.declared_at),
        text: `${fmtTime(inc.declared_at, { date: true })} (${fmtUtc(inc.declared_at)})` }),
      inc.description ? el("div", { class: "description", text: inc.description }) : null);
    $("inc-playbook").textContent = `playbook ${s.playbook} · sha256 ${s.playbook_sha256.slice(0, 16)}…`;
    $("inc-playbook").title = s.playbook_sha256;
    const phase = $("inc-phase");
    phase.textContent = s.phase;
    phase.dataset.phase = phaseKind(s.phase);
    $("inc-running").textContent = data.running ? "workflow running" : "workflow finished";
    $("inc-running").dataset.running = String(data.running);
    const now = new Date(serverNow()).toISOString();
    $("inc-updated").textContent = `${data.running ? "live" : "final"} · ${fmtTime(now)}`;

    renderOutcome(s);
    renderIncidentCircuits(s.circuits || []);

    syncRows($("changes").tBodies[0], s.changes, (c) => c.change_id, changeRow, (c) => {
      const claim = state.claims.get(c.change_id);
      const refusal = state.refusals.get(c.change_id);
      return `|${state.inflight.has(c.change_id)}|${state.decided.get(c.change_id) || ""}`
        + `|${claim ? `${claim.decision || ""}:${claim.decided_by || ""}` : ""}`
        + `|${refusal ? `${refusal.kind}:${refusal.type}:${refusal.detail}` : ""}|${state.me ? state.me.role : ""}`;
    });
    $("changes-empty").hidden = s.changes.length > 0;
    const awaiting = s.changes.filter((c) => c.state === "awaiting_confirmation").length;
    $("changes-summary").textContent = s.changes.length
      ? `${s.changes.length} changes${awaiting ? ` · ${awaiting} awaiting confirmation / chờ xác nhận` : ""}` : "";

    const review = s.review || [];
    syncRows($("review").tBodies[0], review, (r, i) => `${i}:${r.subject}`, (r) => el("tr", { "data-kind": r.kind },
      el("td", {}, timeEl(r.at)),
      el("td", {}, el("span", { class: "badge review-kind", "data-kind": r.kind, text: r.kind })),
      el("td", { class: "mono wrap", title: r.subject, text: shortChange(r.subject) }),
      el("td", { class: "wrap", text: r.detail })));
    $("review-empty").hidden = review.length > 0;
    $("review-panel").dataset.count = String(review.length);

    const calls = data.calls || [];
    syncRows($("calls").tBodies[0], calls, (c, i) => `${i}:${c.call_sid || ""}`, callRow);
    $("calls-empty").hidden = calls.length > 0;
    fill($("inc-ack"), data.acknowledged_by
      ? el("span", { class: "ack yes", text: `Acknowledged by ${data.acknowledged_by}` })
      : el("span", { class: "ack no", text: "Not acknowledged yet / Chưa xác nhận" }));

    const tl = $("timeline").tBodies[0];
    const box = tl.closest(".scroll");
    const stick = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
    // Child workflows report their events when they finish, so the record is not in time order;
    // the console sorts by time (stably), the Markdown report keeps the recorded order.
    const timeline = s.timeline.map((t, i) => ({ ...t, i }))
      .sort((a, b) => (parseTime(a.at) - parseTime(b.at)) || (a.i - b.i));
    syncRows(tl, timeline, (t) => String(t.i), (t) => el("tr", {},
      el("td", { class: "mono nowrap" }, timeEl(t.at, { both: false })),
      el("td", { class: "event", title: t.event, text: shortChange(t.event) }),
      el("td", { class: "wrap", text: t.detail })));
    if (stick) box.scrollTop = box.scrollHeight;

    // One ending order per incident: the workflow ignores a second one.
    const ended = !data.running || ENDING_PHASES.has(s.phase) || Boolean(s.stood_down_by || s.aborted_by);
    $("end-controls").hidden = ended;
    if (ended) closeAbort();
    tick();
  }

  function renderOutcome(s) {
    const outcome = $("inc-outcome");
    const ending = s.stood_down_by || s.aborted_by;
    outcome.hidden = !s.outcome && !ending;
    outcome.dataset.phase = s.phase;
    const inProgress = s.phase === "aborting" ? "abort in progress: undoing newest wave first / đang hủy bỏ"
      : "stand-down in progress: circuits going back to primary / đang kết thúc";
    fill(outcome,
      el("strong", { text: "Outcome / Kết quả: " }),
      el("span", { text: s.outcome || inProgress }),
      s.stood_down_by ? el("span", { class: "muted", text: ` · stood down by ${s.stood_down_by}` }) : null,
      s.aborted_by ? el("span", { class: "muted", text: ` · aborted by ${s.aborted_by}` }) : null,
      s.end_reason ? el("span", { class: "muted", text: ` · reason: ${s.end_reason}` }) : null,
      s.decisions_refused ? el("span", { class: "muted", text: ` · ${s.decisions_refused} decisions refused` }) : null,
      (s.closing_evidence || []).length
        ? el("span", { class: "muted", text: ` · closing read-back: ${s.closing_evidence.length} transcripts` }) : null);
  }

  function renderIncidentCircuits(circuits) {
    const counts = new Map();
    for (const c of circuits) counts.set(c.state, (counts.get(c.state) || 0) + 1);
    $("inc-circuits-summary").textContent = [...counts].map(([k, n]) => `${n} ${k}`).join(" · ");
    syncRows($("inc-circuits").tBodies[0], circuits, (c) => c.circuit_id, (c) => {
      const info = state.circuitInfo.get(c.circuit_id);
      return el("tr", { "data-circuit": c.circuit_id, "data-state": c.state },
        el("td", {}, el("div", { class: "mono nowrap", text: c.circuit_id }),
          info ? el("div", { class: "small muted", text: `${info.name} · ${info.owner}` }) : null,
          c.detail ? el("div", { class: "small wrap", text: c.detail }) : null),
        el("td", { class: "num", text: c.restoration_level }),
        el("td", { "data-cell": "state" }, stateBadge("cstate", c.state)),
        el("td", { "data-cell": "parts" }, Object.entries(c.parts || {}).map(([device, ps]) =>
          el("div", { class: "part", "data-device": device }, el("span", { class: "mono", text: device }), " ",
            stateBadge("pstate", ps)))),
        el("td", { "data-cell": "holders" }, incidentLinks(c.held_with)),
        el("td", { "data-cell": "rerouted" }, timeEl(c.rerouted_at)),
        el("td", { "data-cell": "confirmed" }, timeEl(c.confirmed_at)),
        el("td", { "data-cell": "restored" }, timeEl(c.restored_at)));
    }, (c) => `|${state.circuitInfo.has(c.circuit_id)}`);
    $("inc-circuits-empty").hidden = circuits.length > 0;
  }

  // Change ids repeat the incident id shown above them; the full id stays in the tooltip.
  function shortChange(text) {
    const id = state.incidentId;
    return id ? String(text).split(`-${id}-`).join("-…-") : String(text);
  }

  function changeRow(c) {
    const claim = state.claims.get(c.change_id);
    const extra = [];
    if (c.verification && c.verification !== c.detail) {
      extra.push(el("div", { class: "small wrap" },
        el("span", { class: c.verified ? "ok-text" : "muted", text: c.verified ? "verified: " : "not verified: " }),
        c.verification));
    } else {
      extra.push(el("div", { class: `small ${c.verified ? "ok-text" : "muted"}`, text: c.verified ? "verified" : "not verified" }));
    }
    if (c.error) {
      extra.push(el("div", { class: "error-text",
        text: `${c.error_type ? `${c.error_type}: ` : ""}${c.error}${c.retryable === null || c.retryable === undefined ? "" : c.retryable ? " (retryable)" : " (not retryable)"}` }));
    }
    if (c.commands.length) {
      extra.push(el("details", { class: "commands" },
        el("summary", { text: `${c.commands.length} commands` }),
        el("pre", { class: "mono", text: c.commands.join("\n") })));
    }
    if (c.transcripts.length) {
      extra.push(el("div", { class: "muted small wrap",
        text: `${c.transcripts.length} transcripts · ${c.transcripts.map((t) => `${t.step} ${t.sha256.slice(0, 8)}`).join(", ")}` }));
    }
    if (c.already_applied) extra.push(el("div", { class: "muted small", text: "found already in place" }));
    const when = [];
    if (c.started_at) when.push(el("div", { class: "small muted" }, "started ", timeEl(c.started_at, { both: false })));
    if (c.settled_at) when.push(el("div", { class: "small muted" }, "settled ", timeEl(c.settled_at, { both: false })));

    const awaiting = c.state === "awaiting_confirmation";
    const deadline = c.deadline || (claim && claim.deadline);
    const decision = c.decision || (claim && claim.decision);
    const decidedBy = c.decided_by || (claim && claim.decided_by);
    const where = c.direction === "restore" ? "restore" : `wave ${c.wave} · ${c.direction}`;
    return el("tr", { "data-change": c.change_id, "data-state": c.state, "data-direction": c.direction },
      el("td", { "data-label": "Device · Thiết bị" },
        el("div", { class: "mono nowrap strong", text: c.device }),
        el("div", { class: "small" }, el("span", { class: `direction ${c.direction}`, text: where })),
        el("div", { class: "mono small muted wrap", title: c.change_id, text: shortChange(c.change_id) })),
      // Each circuit with its owner, when the circuits list has said whose it is.
      el("td", { class: "mono circuits", "data-cell": "circuits", "data-label": "Circuits · Kênh" },
        c.circuits.map((id) => {
          const info = state.circuitInfo.get(id);
          return el("div", { title: info ? info.name : id }, id,
            info ? el("span", { class: "owner small muted", text: ` ${info.owner}` }) : null);
        })),
      el("td", { "data-cell": "state", "data-label": "State · Trạng thái" },
        el("span", { class: "badge state", "data-state": c.state, text: c.state }),
        // The countdown matters only while nobody has decided.
        awaiting && deadline && !decision && !state.decided.has(c.change_id) ? el("div", { class: "deadline small" },
          el("span", { class: "countdown", "data-deadline": deadline }),
          el("div", { class: "muted" }, "until ", timeEl(deadline, { both: false }))) : null,
        when),
      el("td", { class: "detail wrap", "data-cell": "detail", "data-label": "Detail · Chi tiết" },
        // A change on several circuits reports each one after "; ": one line each reads better.
        c.detail ? c.detail.split("; ").map((line) => el("div", { class: "detail-line", text: line })) : null,
        extra),
      // One cell: the decision once there is one, the controls while the change asks for it.
      el("td", { class: "actions", "data-cell": "decision", "data-label": "Decision · Quyết định" }, decision
        ? [el("span", { class: `decision ${decision}`, text: decision }),
           el("div", { class: "small", text: `by ${decidedBy || "?"}` }),
           c.decision_reason ? el("div", { class: "small wrap", text: c.decision_reason }) : null,
           awaiting && !c.decision ? el("div", { class: "small muted", "data-claimed": decision,
             text: "being carried out / đang thực hiện" }) : null]
        : awaiting ? decisionControls(c) : el("span", { class: "muted", text: "—" }),
        refusalNote(c.change_id)));
  }

  function refusalNote(id) {
    const r = state.refusals.get(id);
    if (!r) return null;
    if (r.kind === "busy") {
      return el("div", { class: "busy-text", "data-busy": r.type,
        text: `busy, try again${r.retryAfter ? ` in ${r.retryAfter} s` : ""} / hệ thống bận, thử lại` });
    }
    const why = REFUSAL_TEXT[r.type];
    return el("div", { class: "error-text refusal", "data-refusal": r.type },
      el("strong", { text: `Refused${why ? ` — ${why}` : ""}` }),
      el("div", { text: r.detail }));
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
    const form = el("form", { class: "reject-form", autocomplete: "off" }, reason,
      el("div", { class: "reject-buttons" }, send, cancel));
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

  function rerender(incidentId) {
    if (state.last && state.incidentId === incidentId) renderIncident(state.last);
  }

  async function decide(c, decision, reason, buttons) {
    const incidentId = state.incidentId;
    state.inflight.add(c.change_id);
    state.refusals.delete(c.change_id);
    const done = await act(`${decision === "confirm" ? "confirming" : "rejecting"} ${c.change_id}`, buttons,
      async () => {
        // The lines this screen was shown: a change that sent others is refused (StaleChange).
        const shown = (state.claims.get(c.change_id) || {}).lines_sha256;
        const body = shown ? { decision, reason, lines_sha256: shown } : { decision, reason };
        const res = await api("POST",
          `incidents/${encodeURIComponent(incidentId)}/changes/${encodeURIComponent(c.change_id)}/decision`,
          { body });
        return res.json();
      },
      (e) => {
        // 503: nothing was decided, the operator may send again. 403/404/409: the server's reason.
        const busy = e instanceof ApiError && (e.status === 503 || e.status === 0);
        state.refusals.set(c.change_id, {
          kind: busy ? "busy" : "refused", type: e.type || "Error", detail: e.detail || String(e.message || e),
          retryAfter: e.retryAfter,
        });
      });
    state.inflight.delete(c.change_id);
    if (done) {
      state.decided.set(c.change_id, decision);
      state.rejectDrafts.delete(c.change_id);
      // Same task as the answer: the row must not offer its buttons again, even for a moment.
      rerender(incidentId);
      notice(`${decision === "confirm" ? "Confirmed" : "Rejected"} ${c.change_id} on ${c.device}`
        + (done.delivered === false ? " · recorded; the incident picks it up before the window closes" : ""));
      startPolling();
    } else {
      rerender(incidentId);
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
      el("td", { class: "mono nowrap" }, timeEl(c.at, { both: false })));
  }

  // --- ending: stand-down and abort ------------------------------------------------------

  function closeAbort() {
    $("abort-panel").hidden = true;
    $("abort-reason").value = "";
  }

  async function endIncident(kind, reason, button) {
    const id = state.incidentId;
    const path = kind === "abort" ? "abort" : "stand-down";
    const ok = await act(`${kind === "abort" ? "aborting" : "standing down"} ${id}`, [button], async () => {
      await api("POST", `incidents/${encodeURIComponent(id)}/${path}`, { body: { reason } });
      return true;
    });
    if (!ok) {
      startPolling(); // 409 IncidentEnded: show what it ended as
      return false;
    }
    notice(kind === "abort"
      ? `Abort of ${id} requested; its changes are undone newest wave first`
      : `Stand-down of ${id} requested; devices go back to their primary paths`);
    startPolling();
    return true;
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
      const lang = $("report-lang").value === "vi" ? "vi" : "en";
      const path = `incidents/${encodeURIComponent(id)}/report?form=${encodeURIComponent(form)}&lang=${lang}`;
      // The Markdown is what "Download .md" saves; the HTML form (same text) is what is shown.
      const [md, page] = await Promise.all([api("GET", path), api("GET", `${path}&format=html`)]);
      const text = await md.text();
      const html = new DOMParser().parseFromString(await page.text(), "text/html");
      state.report = { form, text, incidentId: id };
      // A report is a snapshot; the time says how old it is while the incident moves on.
      const at = new Date(serverNow()).toISOString();
      const asOf = `${fmtTime(at)} (${fmtUtc(at)})`;
      $("report-title").textContent = form === "dossier_2c"
        ? `2c dossier — ${id} · as of ${asOf} (for police and the DIC / gửi Công an và Sở TT&TT)`
        : `Timeline report — ${id} · as of ${asOf}`;
      // Parsed, never executed: scripts in a parsed document do not run (and the CSP forbids).
      $("report-text").replaceChildren(...[...html.body.childNodes].map((n) => document.importNode(n, true)));
      $("report-panel").hidden = false;
      $("report-panel").scrollIntoView({ block: "nearest" });
    });
  }

  function closeReport() {
    state.report = null;
    $("report-panel").hidden = true;
    $("report-text").replaceChildren();
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
      checkHealth();  // the doctor's checks, now that the screen may read them
      loadAreas();
      loadSegments();
      await loadList();
      loadCircuitNames();
      if (state.incidentId) startPolling();
      if (state.view === "circuits") startCircuits();
    });
    $("token-forget").addEventListener("click", () => {
      state.token = "";
      sessionStorage.removeItem(TOKEN_KEY);
      clearTimeout(state.pollTimer);
      state.pollSeq += 1;
      stopCircuits();
      identify();
      loadAreas();
      loadSegments();
    });
    $("alert-close").addEventListener("click", clearError);
    $("list-refresh").addEventListener("click", () => { clearError(); loadList(); });
    for (const tab of document.querySelectorAll(".tabs .tab")) {
      tab.addEventListener("click", () => showView(tab.dataset.view));
    }
    $("circuits-area").addEventListener("change", startCircuits);
    $("circuits-refresh").addEventListener("click", () => { clearError(); startCircuits(); });
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && state.view === "circuits") startCircuits();
    });

    // The dry run before the order: what the default playbook would send for this area.
    $("declare-plan").addEventListener("click", async () => {
      const area = $("declare-area").value.trim();
      if (!area) {
        $("declare-area").focus();
        return;
      }
      const { playbook, body } = declaration();
      const params = new URLSearchParams({ area: body.area, kind: body.kind });
      if (body.segment) params.set("segment", body.segment);
      for (const d of body.drill_devices || []) params.append("drill_devices", d);
      const plan = await act("planning the declaration", [$("declare-plan")], async () => {
        const res = await api("GET", `playbooks/${encodeURIComponent(playbook)}/plan?${params}`);
        return res.json();
      });
      if (!plan) return;
      const out = $("declare-plan-out");
      out.textContent = renderPlan(plan);
      out.hidden = false;
    });
    $("declare-area").addEventListener("input", () => { $("declare-plan-out").hidden = true; });
    $("declare-kind").addEventListener("change", () => { $("declare-plan-out").hidden = true; });
    $("declare-segment").addEventListener("input", () => { $("declare-plan-out").hidden = true; });
    $("declare-drill").addEventListener("change", () => {
      $("declare-drill-devices-label").hidden = !$("declare-drill").checked;
      $("declare-plan-out").hidden = true;
    });
    $("declare-drill-devices").addEventListener("input", () => { $("declare-plan-out").hidden = true; });

    $("declare-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const { body } = declaration();
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
      const reason = $("standdown-reason").value.trim();
      if (await endIncident("stand_down", reason, $("standdown-submit"))) $("standdown-reason").value = "";
    });

    // Abort undoes everything: it takes a reason and a second, explicit click.
    $("abort-open").addEventListener("click", () => {
      $("abort-panel").hidden = false;
      $("abort-reason").focus();
    });
    $("abort-cancel").addEventListener("click", closeAbort);
    $("abort-panel").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const reason = $("abort-reason").value.trim();
      if (!reason) {
        $("abort-reason").focus();
        return;
      }
      if (await endIncident("abort", reason, $("abort-confirm"))) closeAbort();
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
    await loadZone();
    wire();
    tick();
    setInterval(tick, 1000);
    checkHealth();
    setInterval(checkHealth, HEALTH_MS);
    setInterval(() => { if (!document.hidden) loadList({ quiet: true }); }, LIST_MS);
    await identify();
    loadAreas();
    loadSegments();
    await loadList();
    loadCircuitNames();
  }

  start();
})();
