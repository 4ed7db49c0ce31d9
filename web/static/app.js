/* team-executor dashboard: plain ES2020, no libraries, no build step.
 *
 * Every piece of server text goes through textContent / setAttribute, never
 * innerHTML.  Styles are set through classes or element.style (CSP allows the
 * CSSOM, not style attributes in markup).
 */
"use strict";

(() => {
  // ---------------------------------------------------------------------------
  // constants

  const SVG_NS = "http://www.w3.org/2000/svg";
  const STATUSES = ["pending", "in_progress", "review", "completed", "failed"];
  const PRIORITY_RANK = { P0: 0, P1: 1, P2: 2 };
  // Every event type the executor logs (protocol/events.py).  EventSource only
  // delivers named events to listeners registered for that exact name.
  const EVENT_TYPES = [
    "run_started", "session_reconciled", "shutdown_requested", "shutdown_completed",
    "run_completed", "task_created", "task_ready", "task_dispatched", "task_started",
    "task_progress", "task_completed", "task_failed", "task_reset", "task_cancelled",
    "tasks_reopened", "task_rolled_back", "task_stalled", "blocker_reported", "escalation_opened",
    "escalation_answered", "notification_dropped", "revision_created",
    "consensus_blocked", "capability_gap", "budget_warning", "budget_exceeded",
    "worker_spawned", "worker_crashed", "worker_restarted", "service_restarted",
  ];
  const NODE_W = 176;
  const NODE_H = 62;
  const GAP_X = 70;
  const GAP_Y = 16;
  const MARGIN = 20;
  const GRAPH_MIN_SCALE = 0.8; // below this the labels are too small to read
  const GRAPH_MAX_FIT = 1.4;
  const NAME_CHARS = 25; // a line of the name in a node; it takes two lines
  const REFRESH_DEBOUNCE_MS = 250;
  const POLL_MS = 5000;
  const LOG_POLL_MS = 2000;
  const MAX_EVENTS = 20;
  const AUTH_HEADER = "team-executor";

  // ---------------------------------------------------------------------------
  // state

  const state = {
    session: null,
    tasks: [],
    taskMap: new Map(),
    escalations: [],
    answeredIds: new Set(), // answered here; hide even if a stale fetch still lists them
    agents: null,
    agentsFetchedAt: 0,
    lastEventId: null,
    events: [],
    graphKey: "",
    nodeEls: new Map(),
    selectedTaskId: null,
    drawerDetail: null,
    drawerSeq: 0,
    drawerInflight: 0, // seq of the detail request under way, 0 if none
    artifactPath: null,
    graphZoom: null, // null: fit the panel's width (never below a readable scale); else a chosen scale
    orientationKey: "",
    graphVertical: false, // layers top to bottom, when the panel is too narrow for them side by side
    sort: { key: null, dir: 1 },
    pipelineOrder: [], // task ids by graph layer, then position in it
    diffKey: "", // task, attempt and run count the diff view shows
    diffAttempt: "", // "" for all attempts
    timelineDetails: new Map(), // task id -> detail (runs, escalations) for the timeline
    timelineFetchedAt: 0,
    timelineInflight: false,
    timelineTimer: null,
    timelineBy: "task", // rows per task or per worker
  };

  const views = window.TEViews;
  let logFollower = null;

  let eventSource = null;
  let refreshTimer = null;
  let refreshInflight = false;
  let refreshAgain = false;

  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------------------
  // small helpers

  function el(tag, opts, ...children) {
    const node = document.createElement(tag);
    if (opts) applyOpts(node, opts);
    appendChildren(node, children);
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v !== undefined && v !== null) node.setAttribute(k, String(v));
      }
    }
    appendChildren(node, children);
    return node;
  }

  function applyOpts(node, opts) {
    for (const [k, v] of Object.entries(opts)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = String(v);
      else if (k === "title") node.title = String(v);
      else if (k === "dataset") Object.assign(node.dataset, v);
      else if (k === "on") for (const [evt, fn] of Object.entries(v)) node.addEventListener(evt, fn);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
  }

  function appendChildren(node, children) {
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      node.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function safeClass(s) {
    return String(s == null ? "unknown" : s).toLowerCase().replace(/[^a-z0-9_-]/g, "_");
  }

  function truncate(s, n) {
    s = s == null ? "" : String(s);
    return s.length > n ? s.slice(0, n - 1) + "…" : s;
  }

  function fmtInt(n) {
    return typeof n === "number" && isFinite(n) ? n.toLocaleString("en-US") : "—";
  }

  function fmtUsd(n) {
    if (typeof n !== "number" || !isFinite(n)) return "—";
    return "$" + (Math.abs(n) < 1 && n !== 0 ? n.toFixed(4) : n.toFixed(2));
  }

  function fmtDuration(s) {
    if (typeof s !== "number" || !isFinite(s)) return "—";
    s = Math.max(0, Math.floor(s));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const sec = s % 60;
    const pad = (x) => String(x).padStart(2, "0");
    if (h) return `${h}h ${pad(m)}m ${pad(sec)}s`;
    if (m) return `${m}m ${pad(sec)}s`;
    return `${sec}s`;
  }

  function parseTime(iso) {
    if (!iso) return null;
    const d = new Date(iso);
    return isNaN(d.getTime()) ? null : d;
  }

  function fmtTime(iso) {
    const d = parseTime(iso);
    if (!d) return iso ? String(iso) : "—";
    const now = new Date();
    const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
    if (d.toDateString() === now.toDateString()) return time;
    return d.toLocaleDateString([], { month: "short", day: "numeric" }) + " " + time;
  }

  function secondsBetween(a, b) {
    const da = parseTime(a);
    const db = b ? parseTime(b) : new Date();
    if (!da || !db) return null;
    return (db.getTime() - da.getTime()) / 1000;
  }

  function statusLabel(s) {
    return s ? String(s).replace(/_/g, " ") : "—";
  }

  function statusPill(status, extraClass) {
    return el("span", { class: `pill status-${safeClass(status)}${extraClass ? " " + extraClass : ""}`, text: statusLabel(status) });
  }

  // ---------------------------------------------------------------------------
  // HTTP

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function errorDetail(resp) {
    let text = "";
    try {
      text = await resp.text();
    } catch (_) {
      /* ignore */
    }
    if (text) {
      try {
        const body = JSON.parse(text);
        const d = body && body.detail !== undefined ? body.detail : body;
        if (typeof d === "string") return d;
        if (Array.isArray(d)) return d.map((x) => (x && x.msg ? x.msg : JSON.stringify(x))).join("; ");
        return JSON.stringify(d);
      } catch (_) {
        return truncate(text, 300);
      }
    }
    return `${resp.status} ${resp.statusText || "error"}`;
  }

  async function handleResponse(resp, asText) {
    if (resp.status === 401) {
      showAuthBanner(true);
      throw new ApiError(401, "Not signed in");
    }
    if (!resp.ok) throw new ApiError(resp.status, await errorDetail(resp));
    showAuthBanner(false);
    return asText ? resp.text() : resp.json();
  }

  async function apiGet(url, asText = false) {
    const resp = await fetch(url, {
      credentials: "same-origin",
      headers: { Accept: asText ? "text/plain, */*" : "application/json" },
    });
    return handleResponse(resp, asText);
  }

  async function apiPost(url, body) {
    const resp = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/json",
        "X-Requested-With": AUTH_HEADER,
        Accept: "application/json",
      },
      body: JSON.stringify(body === undefined ? {} : body),
    });
    return handleResponse(resp, false);
  }

  function showAuthBanner(show) {
    $("banner-auth").hidden = !show;
  }

  // ---------------------------------------------------------------------------
  // toasts

  function toast(message, kind = "info") {
    const t = el("div", { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status", text: message });
    const remove = () => t.remove();
    t.addEventListener("click", remove);
    $("toasts").appendChild(t);
    setTimeout(remove, kind === "error" ? 9000 : 5000);
  }

  // ---------------------------------------------------------------------------
  // refresh cycle

  function scheduleRefresh(delay = REFRESH_DEBOUNCE_MS) {
    if (refreshTimer) clearTimeout(refreshTimer);
    refreshTimer = setTimeout(() => {
      refreshTimer = null;
      refreshAll();
    }, delay);
  }

  async function refreshAll() {
    if (refreshInflight) {
      refreshAgain = true;
      return;
    }
    refreshInflight = true;
    try {
      const results = await Promise.allSettled([
        loadSession(),
        loadTasks(),
        loadEscalations(),
        loadAgents(),
      ]);
      const failed = results.filter((r) => r.status === "rejected");
      setOffline(failed.length === results.length && !failed.every((r) => r.reason && r.reason.status === 401));
      if (state.selectedTaskId) loadDrawer(state.selectedTaskId, false);
      loadTimeline();
      ensureEventSource();
    } finally {
      refreshInflight = false;
      if (refreshAgain) {
        refreshAgain = false;
        scheduleRefresh(50);
      }
    }
  }

  function setOffline(offline) {
    document.body.classList.toggle("offline", offline);
  }

  async function loadSession() {
    const s = await apiGet("/api/session");
    const previous = state.session;
    state.session = s;
    if (previous && previous.session_id !== s.session_id) {
      // a different session: start the event stream again from its log
      state.lastEventId = null;
      state.events = [];
      renderEvents();
      if (eventSource) {
        eventSource.close();
        eventSource = null;
      }
    }
    if (state.lastEventId === null && typeof s.last_event_id === "number") {
      // ask for the last few so the "recent events" panel is not empty
      state.lastEventId = Math.max(0, s.last_event_id - MAX_EVENTS);
    }
    renderSession();
  }

  async function loadTasks() {
    const data = await apiGet("/api/tasks");
    state.tasks = Array.isArray(data.tasks) ? data.tasks : [];
    state.taskMap = new Map(state.tasks.map((t) => [String(t.id), t]));
    renderGraph();
    renderFilters();
    renderTable();
  }

  async function loadEscalations() {
    const data = await apiGet("/api/escalations?status=open");
    const list = Array.isArray(data.escalations) ? data.escalations : [];
    state.escalations = list.filter((e) => !state.answeredIds.has(String(e.id)) && (!e.status || e.status === "open"));
    renderEscalations();
    updateHeld();
  }

  async function loadAgents() {
    const data = await apiGet("/api/agents");
    state.agents = data;
    state.agentsFetchedAt = performance.now();
    renderWorkers();
  }

  // ---------------------------------------------------------------------------
  // Server-Sent Events

  function ensureEventSource() {
    if (state.lastEventId === null) return; // wait for the session's last_event_id
    if (!$("banner-auth").hidden) return; // not signed in: the stream would be refused too
    if (eventSource && eventSource.readyState !== EventSource.CLOSED) return;
    connectEvents();
  }

  function connectEvents() {
    if (eventSource) eventSource.close();
    const es = new EventSource("/api/events?after=" + encodeURIComponent(String(state.lastEventId || 0)));
    eventSource = es;
    setConn("connecting");
    es.onopen = () => setConn("live");
    es.onerror = () => setConn(es.readyState === EventSource.CLOSED ? "closed" : "connecting");
    es.onmessage = onServerEvent;
    for (const type of EVENT_TYPES) es.addEventListener(type, onServerEvent);
  }

  function setConn(stateName) {
    const c = $("conn");
    c.className = "conn conn-" + stateName;
    c.title = {
      live: "live event stream connected",
      connecting: "event stream reconnecting (polling every 5 s)",
      closed: "event stream closed (polling every 5 s)",
    }[stateName] || stateName;
  }

  function onServerEvent(ev) {
    let data = null;
    try {
      data = ev.data ? JSON.parse(ev.data) : null;
    } catch (_) {
      data = null;
    }
    let id = parseInt(ev.lastEventId, 10);
    if (isNaN(id) && data && typeof data.id === "number") id = data.id;
    if (!isNaN(id)) {
      // ids only grow: anything at or below the last one seen is a replay
      // (EventSource reconnects with the URL's original ?after=)
      if (state.lastEventId !== null && id <= state.lastEventId) return;
      state.lastEventId = id;
    }
    const evt = Object.assign({}, data || {}, {
      id: isNaN(id) ? null : id,
      type: (data && data.type) || ev.type || "message",
    });
    state.events.unshift(evt);
    state.events.sort((a, b) => (b.id || 0) - (a.id || 0));
    if (state.events.length > MAX_EVENTS) state.events.length = MAX_EVENTS;
    renderEvents();
    scheduleRefresh();
  }

  function eventDetail(e) {
    const parts = [];
    const pick = (k) => {
      const v = e[k];
      if (v === undefined || v === null || v === "" || (Array.isArray(v) && !v.length)) return;
      parts.push(Array.isArray(v) ? `${k}: ${v.join(", ")}` : typeof v === "object" ? `${k}: ${JSON.stringify(v)}` : String(v));
    };
    switch (e.type) {
      case "task_progress":
        if (typeof e.percent === "number") parts.push(e.percent + "%");
        pick("note");
        break;
      case "task_failed":
        pick("error_kind");
        pick("error");
        if (e.final) parts.push("(final)");
        break;
      case "task_dispatched":
        pick("backend");
        pick("worker_id");
        break;
      case "escalation_opened":
        pick("issue");
        break;
      case "escalation_answered":
        pick("choice");
        break;
      case "run_completed":
        parts.push(`${e.completed}/${e.total}`);
        pick("failed");
        break;
      case "run_started":
        pick("command");
        break;
      default:
        ["reason", "detail", "summary", "error", "note", "worker_id", "scope"].forEach(pick);
    }
    return parts.join(" · ");
  }

  function renderEvents() {
    const list = $("event-list");
    clear(list);
    for (const e of state.events) {
      const li = el("li", { class: `event event-${safeClass(e.type)}` },
        el("span", { class: "event-time", text: fmtTime(e.at) }),
        el("span", { class: "event-type", text: statusLabel(e.type) }),
        e.task_id ? taskLink(e.task_id) : null,
      );
      const detail = eventDetail(e);
      if (detail) li.appendChild(el("span", { class: "event-detail", text: truncate(detail, 160), title: detail }));
      list.appendChild(li);
    }
    $("events-empty").hidden = state.events.length > 0;
  }

  function taskLink(taskId) {
    return el("button", {
      type: "button",
      class: "linklike task-link",
      text: String(taskId),
      title: "open " + taskId,
      on: { click: (ev) => { ev.stopPropagation(); openDrawer(String(taskId)); } },
    });
  }

  // ---------------------------------------------------------------------------
  // header / session

  function renderSession() {
    const s = state.session || {};
    $("session-id").textContent = s.session_id || "—";
    const st = $("session-status");
    st.textContent = statusLabel(s.status || "no session");
    st.className = "pill status-" + safeClass(s.status || "none");

    const pct = typeof s.percent === "number" && isFinite(s.percent) ? Math.max(0, Math.min(100, s.percent)) : 0;
    $("progress-fill").style.width = pct + "%";
    $("progress").setAttribute("aria-valuenow", String(Math.round(pct)));
    $("progress-text").textContent = `${fmtInt(s.completed || 0)} / ${fmtInt(s.total || 0)} (${pct.toFixed(pct % 1 ? 1 : 0)}%)`;

    const rs = $("run-state");
    const run = s.run;
    rs.textContent = run ? String(run.state) : "not running";
    rs.className = "run-state run-" + safeClass(run ? run.state : "none");
    rs.dataset.state = run ? String(run.state) : "none";
    $("run-detail").textContent = run ? `${run.run_id || ""} · ${fmtInt(run.max_workers)} workers` : "";

    $("panic").hidden = !s.panic;
    document.body.classList.toggle("panicked", !!s.panic);
    $("spent-total").textContent = fmtUsd(s.spent_usd || 0);

    const open = s.open_escalations || 0;
    const oc = $("open-esc-count");
    oc.hidden = open <= 0;
    oc.textContent = `${open} open question${open === 1 ? "" : "s"}`;

    const goal = $("goal");
    goal.textContent = s.goal ? truncate(s.goal, 200) : "";
    goal.title = s.goal || "";

    const nc = $("next-command-wrap");
    nc.hidden = !s.next_command;
    $("next-command").textContent = s.next_command || "";

    const rec = $("recovery");
    const report = s.recovery_report;
    rec.hidden = report === null || report === undefined;
    $("recovery-text").textContent = report == null ? "" : String(report);

    renderSpend();
    document.title = s.session_id ? `${pct.toFixed(0)}% · ${s.session_id} · team-executor` : "team-executor";
  }

  function renderSpend() {
    const s = state.session || {};
    $("spend-total").textContent = fmtUsd(s.spent_usd || 0);
    const rows = $("spend-rows");
    clear(rows);
    const spend = Array.isArray(s.spend) ? s.spend : [];
    if (!spend.length) rows.appendChild(el("tr", null, el("td", { class: "empty", colspan: "6", text: "nothing spent yet" })));
    for (const r of spend) {
      rows.appendChild(el("tr", null,
        el("td", { text: r.model || "—", title: r.model || "" }),
        el("td", { text: r.key_id || "—" }),
        el("td", { text: r.backend || "—" }),
        el("td", { class: "num", text: fmtInt(r.runs) }),
        el("td", { class: "num", text: `${fmtInt(r.tokens_in)} / ${fmtInt(r.tokens_out)}` }),
        el("td", { class: "num", text: fmtUsd(r.cost_usd) }),
      ));
    }
    const keyRows = $("key-rows");
    clear(keyRows);
    const keys = Array.isArray(s.keys) ? s.keys : [];
    if (!keys.length) keyRows.appendChild(el("tr", null, el("td", { class: "empty", colspan: "5", text: "no API keys in use" })));
    for (const k of keys) {
      const name = `${k.provider || "?"} ${k.key_id || ""}${k.last4 ? " …" + k.last4 : ""}`;
      const titleBits = [
        `tokens in/out ${fmtInt(k.tokens_in)} / ${fmtInt(k.tokens_out)}`,
        k.tier ? "tier " + k.tier : "",
        k.source ? "from " + k.source : "",
        k.last_error ? "last error: " + k.last_error : "",
      ].filter(Boolean);
      const statusCell = el("td", null, el("span", { class: "pill key-" + safeClass(k.status), text: k.status || "—" }));
      if (typeof k.cooling_for_s === "number" && k.cooling_for_s > 0) {
        statusCell.appendChild(el("span", { class: "muted", text: " " + fmtDuration(k.cooling_for_s) }));
      }
      keyRows.appendChild(el("tr", { title: titleBits.join(", ") },
        el("td", { text: name.trim() }),
        statusCell,
        el("td", { class: "num", text: fmtInt(k.requests) }),
        el("td", { class: "num", text: fmtUsd(k.cost_usd) }),
        el("td", { class: "num", text: `${fmtInt(k.rate_limits)} / ${fmtInt(k.errors)}`, title: k.last_error || "" }),
      ));
    }
  }

  // ---------------------------------------------------------------------------
  // graph layout

  function graphParents(task) {
    const out = [];
    const seen = new Set();
    for (const p of Array.isArray(task.blocked_by) ? task.blocked_by : []) {
      const pid = String(p);
      if (pid === String(task.id) || seen.has(pid) || !state.taskMap.has(pid)) continue;
      seen.add(pid);
      out.push(pid);
    }
    return out;
  }

  function cmpId(a, b) {
    return a < b ? -1 : a > b ? 1 : 0;
  }

  function computeLayout(tasks) {
    const ids = tasks.map((t) => String(t.id));
    const parents = new Map(tasks.map((t) => [String(t.id), graphParents(t)]));

    // layer = longest path from a root; edges that close a cycle are ignored
    const layer = new Map();
    const onStack = new Set();
    const backEdges = new Set();
    for (const root of ids) {
      if (layer.has(root)) continue;
      // iterative DFS, so a 300-long chain cannot overflow the stack
      const stack = [[root, 0]];
      onStack.add(root);
      while (stack.length) {
        const frame = stack[stack.length - 1];
        const [id, i] = frame;
        const ps = parents.get(id);
        if (i < ps.length) {
          frame[1] = i + 1;
          const p = ps[i];
          if (layer.has(p)) continue;
          if (onStack.has(p)) {
            backEdges.add(p + "\u0000" + id);
            continue;
          }
          onStack.add(p);
          stack.push([p, 0]);
        } else {
          let l = 0;
          for (const p of ps) {
            if (backEdges.has(p + "\u0000" + id)) continue;
            if (layer.has(p)) l = Math.max(l, layer.get(p) + 1);
          }
          layer.set(id, l);
          onStack.delete(id);
          stack.pop();
        }
      }
    }

    const layers = [];
    for (const id of ids) {
      const l = layer.get(id) || 0;
      (layers[l] = layers[l] || []).push(id);
    }
    for (let i = 0; i < layers.length; i++) layers[i] = layers[i] || [];

    // order within a layer: barycenter of the parents' positions, then id;
    // then place each node near its parents while keeping a minimum spacing
    const step = NODE_H + GAP_Y;
    const y = new Map();
    layers.forEach((ids_, li) => {
      const bary = new Map();
      for (const id of ids_) {
        const ys = parents.get(id).filter((p) => y.has(p) && layer.get(p) < li).map((p) => y.get(p));
        bary.set(id, ys.length ? ys.reduce((a, b) => a + b, 0) / ys.length : null);
      }
      if (li === 0) {
        ids_.sort(cmpId);
        ids_.forEach((id, i) => y.set(id, MARGIN + i * step));
        return;
      }
      ids_.sort((a, b) => {
        const ba = bary.get(a);
        const bb = bary.get(b);
        if (ba !== null && bb !== null && ba !== bb) return ba - bb;
        if (ba === null && bb !== null) return 1;
        if (bb === null && ba !== null) return -1;
        return cmpId(a, b);
      });
      // desired positions, pushed down to keep spacing, then shifted back up
      // by the mean overshoot so the layer stays centred on its parents
      let prev = -Infinity;
      const placed = [];
      let fallback = MARGIN;
      for (const id of ids_) {
        const want = bary.get(id) !== null ? bary.get(id) : Math.max(fallback, prev + step);
        const at = Math.max(want, prev + step);
        placed.push([id, at, want]);
        prev = at;
        fallback = at + step;
      }
      const shift = placed.reduce((acc, [, at, want]) => acc + (at - want), 0) / placed.length;
      let minY = Infinity;
      for (const p of placed) {
        p[1] -= shift;
        minY = Math.min(minY, p[1]);
      }
      const fix = minY < MARGIN ? MARGIN - minY : 0;
      for (const [id, at] of placed) y.set(id, at + fix);
    });

    const pos = new Map();
    let maxY = 0;
    for (const id of ids) {
      const l = layer.get(id) || 0;
      const yy = y.get(id);
      pos.set(id, { x: MARGIN + l * (NODE_W + GAP_X), y: yy });
      maxY = Math.max(maxY, yy);
    }
    const width = MARGIN * 2 + Math.max(1, layers.length) * NODE_W + Math.max(0, layers.length - 1) * GAP_X;
    const height = maxY + NODE_H + MARGIN;
    return { pos, parents, width, height, backEdges };
  }

  function graphKeyOf(tasks) {
    return JSON.stringify([state.graphVertical, tasks.map((t) => [t.id, t.name, graphParents(t)])]);
  }

  // Layers top to bottom: each layer a row, its tasks side by side in the order the layout chose.
  function verticalLayout(layout) {
    const rows = new Map();
    for (const [id, p] of layout.pos) {
      if (!rows.has(p.x)) rows.set(p.x, []);
      rows.get(p.x).push([id, p.y]);
    }
    const xs = [...rows.keys()].sort((a, b) => a - b);
    let widest = 1;
    const pos = new Map();
    xs.forEach((x, li) => {
      const row = rows.get(x).sort((a, b) => a[1] - b[1]);
      widest = Math.max(widest, row.length);
      row.forEach(([id], i) => pos.set(id, { x: MARGIN + i * (NODE_W + GAP_Y), y: MARGIN + li * (NODE_H + 36) }));
    });
    layout.pos = pos;
    layout.width = MARGIN * 2 + widest * NODE_W + (widest - 1) * GAP_Y;
    layout.height = MARGIN * 2 + xs.length * NODE_H + Math.max(0, xs.length - 1) * 36;
  }

  // Side by side when the layers fit the panel at a readable scale, else top to bottom.
  function chooseOrientation(tasks) {
    const wrap = $("graph-wrap").clientWidth;
    if (!wrap || !tasks.length) return;
    const key = wrap + "|" + JSON.stringify(tasks.map((t) => [t.id, graphParents(t)]));
    if (key === state.orientationKey) return;
    state.orientationKey = key;
    const probe = computeLayout(tasks);
    const layers = new Set(Array.from(probe.pos.values(), (p) => p.x));
    state.graphVertical = layers.size > 1 && probe.width * GRAPH_MIN_SCALE > wrap;
  }

  function heldTaskIds() {
    const held = new Set();
    for (const e of state.escalations) {
      if (e.holds_task && e.task_id && (!e.status || e.status === "open")) held.add(String(e.task_id));
    }
    return held;
  }

  function renderGraph() {
    const g = $("graph");
    const tasks = state.tasks;
    $("graph-empty").hidden = tasks.length > 0;
    chooseOrientation(tasks);
    const key = graphKeyOf(tasks);
    if (key !== state.graphKey) {
      state.graphKey = key;
      buildGraph(g, tasks);
    }
    updateGraphStatus();
  }

  function buildGraph(g, tasks) {
    clear(g);
    state.nodeEls.clear();
    if (!tasks.length) {
      g.setAttribute("viewBox", "0 0 10 10");
      g.setAttribute("width", "0");
      g.setAttribute("height", "0");
      return;
    }
    const layout = computeLayout(tasks);
    if (state.graphVertical) verticalLayout(layout);
    const { pos, parents, width, height } = layout;
    state.pipelineOrder = Array.from(pos.entries())
      .sort(([a, pa], [b, pb]) => pa.x - pb.x || pa.y - pb.y || cmpId(a, b))
      .map(([id]) => id);
    g.setAttribute("viewBox", `0 0 ${width} ${height}`);
    g.dataset.width = String(width);
    g.dataset.height = String(height);
    applyGraphSize();

    g.appendChild(svg("defs", null,
      svg("marker", {
        id: "arrow", viewBox: "0 0 10 10", refX: "9", refY: "5",
        markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse", markerUnits: "userSpaceOnUse",
      }, svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" })),
    ));

    const edges = svg("g", { class: "edges" });
    for (const t of tasks) {
      const to = String(t.id);
      const b = pos.get(to);
      for (const from of parents.get(to)) {
        const a = pos.get(from);
        if (!a) continue;
        const x1 = a.x + NODE_W;
        const y1 = a.y + NODE_H / 2;
        const x2 = b.x - 2;
        const y2 = b.y + NODE_H / 2;
        let d;
        if (state.graphVertical) {
          const vx1 = a.x + NODE_W / 2;
          const vy1 = a.y + NODE_H;
          const vx2 = b.x + NODE_W / 2;
          const vy2 = b.y - 2;
          const dy = Math.max(16, (vy2 - vy1) / 2);
          d = vy2 > vy1
            ? `M ${vx1} ${vy1} C ${vx1} ${vy1 + dy}, ${vx2} ${vy2 - dy}, ${vx2} ${vy2}`
            : `M ${a.x + NODE_W} ${a.y + NODE_H / 2} C ${a.x + NODE_W + 50} ${a.y}, ${b.x + NODE_W + 50} ${b.y}, ${b.x + NODE_W} ${b.y + NODE_H / 2}`;
        } else if (x2 > x1) {
          const dx = Math.max(30, (x2 - x1) / 2);
          d = `M ${x1} ${y1} C ${x1 + dx} ${y1}, ${x2 - dx} ${y2}, ${x2} ${y2}`;
        } else {
          // a back edge (cycle) or same layer: loop around above
          const top = Math.min(a.y, b.y) - 14;
          d = `M ${x1} ${y1} C ${x1 + 60} ${top}, ${x2 - 60} ${top}, ${x2} ${y2}`;
        }
        edges.appendChild(svg("path", {
          d, class: "edge", "marker-end": "url(#arrow)",
          "data-from": from, "data-to": to,
        }));
      }
    }
    g.appendChild(edges);

    const nodes = svg("g", { class: "nodes" });
    for (const t of tasks) {
      const id = String(t.id);
      const p = pos.get(id);
      const node = svg("g", {
        class: "node",
        "data-task-id": id,
        "data-status": t.status || "unknown",
        transform: `translate(${p.x}, ${p.y})`,
        tabindex: "0",
        role: "button",
        "aria-label": `${id} ${t.name || ""}`,
      });
      const title = svg("title");
      node.appendChild(title);
      node.appendChild(svg("rect", { class: "held-ring", x: -4, y: -4, width: NODE_W + 8, height: NODE_H + 8, rx: 11, ry: 11 }));
      node.appendChild(svg("rect", { class: "node-box", x: 0, y: 0, width: NODE_W, height: NODE_H, rx: 8, ry: 8 }));
      node.appendChild(svg("rect", { class: "node-bar", x: 0, y: 0, width: 5, height: NODE_H, rx: 2, ry: 2 }));
      const idText = svg("text", { class: "node-id", x: 12, y: 18 });
      idText.textContent = truncate(id, 18);
      node.appendChild(idText);
      const meta = svg("text", { class: "node-meta", x: NODE_W - 8, y: 18, "text-anchor": "end" });
      node.appendChild(meta);
      nameLines(t.name || "").forEach((line, i) => {
        const nameText = svg("text", { class: "node-name", x: 12, y: 36 + i * 16 });
        nameText.textContent = line;
        node.appendChild(nameText);
      });
      node.addEventListener("click", () => openDrawer(id));
      node.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter" || ev.key === " ") {
          ev.preventDefault();
          openDrawer(id);
        }
      });
      node.addEventListener("mouseenter", () => highlightEdges(id, true));
      node.addEventListener("mouseleave", () => highlightEdges(id, false));
      nodes.appendChild(node);
      state.nodeEls.set(id, { node, title, meta });
    }
    g.appendChild(nodes);
  }

  // The name in two lines, broken between words where it can be, the rest cut with an ellipsis.
  function nameLines(name) {
    const words = String(name).split(/\s+/).filter(Boolean);
    let first = "";
    while (words.length && (first ? first.length + 1 : 0) + words[0].length <= NAME_CHARS) {
      first += (first ? " " : "") + words.shift();
    }
    if (!first) return [truncate(name, NAME_CHARS), truncate(String(name).slice(NAME_CHARS - 1), NAME_CHARS)].filter(Boolean);
    const rest = words.join(" ");
    return rest ? [first, truncate(rest, NAME_CHARS)] : [first];
  }

  function highlightEdges(id, on) {
    for (const path of $("graph").querySelectorAll("path.edge")) {
      if (path.getAttribute("data-from") === id || path.getAttribute("data-to") === id) {
        path.classList.toggle("edge-hot", on);
      }
    }
  }

  function updateGraphStatus() {
    const held = heldTaskIds();
    for (const t of state.tasks) {
      const id = String(t.id);
      const refs = state.nodeEls.get(id);
      if (!refs) continue;
      const status = t.status || "unknown";
      if (refs.node.getAttribute("data-status") !== status) refs.node.setAttribute("data-status", status);
      refs.node.classList.toggle("held", held.has(id));
      refs.node.classList.toggle("selected", state.selectedTaskId === id);
      refs.node.classList.toggle("known-status", STATUSES.includes(status));
      const bits = [t.priority || ""];
      if ((t.attempts || 0) > 0) bits.push(`${t.attempts}/${t.max_attempts || "?"}`);
      refs.meta.textContent = bits.filter(Boolean).join(" · ");
      refs.title.textContent = `${id} — ${t.name || ""}\n${statusLabel(status)}${held.has(id) ? " (waiting for an answer)" : ""}` +
        `\nowner: ${t.owner || "—"}` + (t.last_error ? `\nlast error: ${truncate(t.last_error, 300)}` : "");
    }
    // edges out of completed tasks look "satisfied"
    for (const path of $("graph").querySelectorAll("path.edge")) {
      const from = state.taskMap.get(path.getAttribute("data-from"));
      path.classList.toggle("edge-done", !!from && from.status === "completed");
    }
  }

  function applyGraphSize() {
    const g = $("graph");
    const w = Number(g.dataset.width);
    const h = Number(g.dataset.height);
    if (!w || !h) return;
    const wrap = $("graph-wrap");
    let scale = state.graphZoom;
    if (scale === null) {
      // fit the width, but scroll rather than shrink labels below a readable size
      scale = Math.max(GRAPH_MIN_SCALE, Math.min(GRAPH_MAX_FIT, (wrap.clientWidth - 4) / w));
    }
    g.setAttribute("width", String(Math.round(w * scale)));
    g.setAttribute("height", String(Math.round(h * scale)));
    g.dataset.scale = scale.toFixed(2);
    $("graph-zoom-level").textContent = `${Math.round(scale * 100)}%`;
    $("graph-fit").disabled = state.graphZoom === null;
    wrap.classList.toggle("fit", state.graphZoom === null);
  }

  function zoomGraph(factor) {
    const current = Number($("graph").dataset.scale) || 1;
    state.graphZoom = Math.max(0.3, Math.min(3, current * factor));
    applyGraphSize();
  }

  function updateHeld() {
    updateGraphStatus();
    renderTable();
    if (state.selectedTaskId) renderDrawerHeader();
  }

  // ---------------------------------------------------------------------------
  // escalations

  function renderEscalations() {
    const list = $("escalation-list");
    const open = state.escalations;
    const wanted = new Set(open.map((e) => String(e.id)));
    for (const node of Array.from(list.children)) {
      if (!wanted.has(node.getAttribute("data-escalation-id"))) node.remove();
    }
    const existing = new Map(Array.from(list.children).map((n) => [n.getAttribute("data-escalation-id"), n]));
    for (const e of open) {
      const id = String(e.id);
      let node = existing.get(id);
      const sig = JSON.stringify([e.issue, e.options, e.task_id, e.deadline, e.default_choice, e.holds_task]);
      if (node && node.dataset.sig !== sig && !node.classList.contains("busy")) {
        node.remove();
        node = null;
      }
      if (!node) {
        node = buildEscalation(e);
        node.dataset.sig = sig;
      }
      list.appendChild(node); // keeps server order
    }
    const section = $("escalations");
    section.classList.toggle("has-open", open.length > 0);
    $("esc-count").textContent = open.length ? String(open.length) : "";
    $("esc-empty").hidden = open.length > 0;
    tickDeadlines();
  }

  function buildEscalation(e) {
    const id = String(e.id);
    const node = el("div", { class: "escalation", "data-escalation-id": id });
    const head = el("div", { class: "esc-head" },
      el("code", { class: "esc-id", text: id }),
      e.task_id ? el("span", { class: "muted", text: " task " }) : null,
      e.task_id ? taskLink(e.task_id) : null,
      e.holds_task ? el("span", { class: "pill pill-amber", text: "task waits" }) : null,
    );
    node.appendChild(head);
    node.appendChild(el("p", { class: "esc-issue", text: e.issue || "(no text)" }));
    const meta = el("div", { class: "esc-meta muted" },
      el("span", { text: `from ${e.opened_by || "?"} · ${fmtTime(e.created_at)}` }),
    );
    if (e.deadline) {
      meta.appendChild(el("span", {
        class: "esc-deadline",
        "data-deadline": String(e.deadline),
        "data-default": e.default_choice == null ? "" : String(e.default_choice),
      }));
    }
    node.appendChild(meta);

    const options = Array.isArray(e.options) ? e.options : [];
    const buttons = el("div", { class: "esc-options" });
    for (const opt of options) {
      const text = String(opt);
      const btn = el("button", {
        type: "button",
        class: "btn esc-choice" + (e.default_choice != null && String(e.default_choice) === text ? " esc-default" : ""),
        "data-choice": text,
        text,
        title: e.default_choice != null && String(e.default_choice) === text ? "default choice" : null,
      });
      btn.addEventListener("click", () => answerEscalation(id, text, node));
      buttons.appendChild(btn);
    }
    if (!options.length) {
      // no options offered: let the user type an answer
      const input = el("input", { type: "text", class: "esc-free", placeholder: "your answer…" });
      const send = el("button", { type: "button", class: "btn", text: "Answer" });
      const submit = () => {
        const v = input.value.trim();
        if (v) answerEscalation(id, v, node);
      };
      send.addEventListener("click", submit);
      input.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter") submit();
      });
      buttons.appendChild(input);
      buttons.appendChild(send);
    }
    node.appendChild(buttons);
    return node;
  }

  function setBusy(node, busy) {
    node.classList.toggle("busy", busy);
    for (const c of node.querySelectorAll("button, input")) c.disabled = busy;
  }

  async function answerEscalation(id, choice, node) {
    if (node.classList.contains("busy")) return;
    setBusy(node, true);
    try {
      const result = await apiPost(`/api/escalations/${encodeURIComponent(id)}/answer`, { choice });
      state.answeredIds.add(id);
      state.escalations = state.escalations.filter((e) => String(e.id) !== id);
      node.remove();
      renderEscalations();
      updateHeld();
      const chosen = result && result.choice != null ? result.choice : choice;
      toast(`${id}: answered “${chosen}”`, "ok");
      scheduleRefresh(50);
    } catch (err) {
      setBusy(node, false);
      toast(`Could not answer ${id}: ${err.message}`, "error");
    }
  }

  function tickDeadlines() {
    for (const span of document.querySelectorAll(".esc-deadline")) {
      const left = secondsBetween(new Date().toISOString(), span.getAttribute("data-deadline"));
      const def = span.getAttribute("data-default");
      if (left === null) {
        span.textContent = "";
        continue;
      }
      const suffix = def ? ` → “${def}”` : "";
      span.textContent = left > 0 ? ` · default in ${fmtDuration(left)}${suffix}` : ` · deadline passed${suffix}`;
      span.classList.toggle("soon", left > 0 && left < 60);
    }
  }

  // ---------------------------------------------------------------------------
  // workers

  function renderWorkers() {
    const a = state.agents || {};
    const workers = Array.isArray(a.workers) ? a.workers : [];
    const list = $("worker-list");
    clear(list);
    for (const w of workers) {
      const elapsed = el("span", { class: "elapsed", "data-elapsed": String(Number(w.elapsed_s) || 0) });
      const li = el("li", { class: "worker" },
        el("div", { class: "worker-line" },
          w.task_id ? taskLink(w.task_id) : el("span", { class: "muted", text: "idle" }),
          el("span", { class: "muted", text: ` #${w.attempt == null ? "?" : w.attempt}` }),
          elapsed,
        ),
        el("div", { class: "worker-line muted small" },
          el("span", { text: [w.role, w.backend, w.model].filter(Boolean).join(" · ") || "—" }),
          el("span", { class: "worker-pid", text: `${w.worker_id || ""}${w.pid ? " pid " + w.pid : ""}${w.node ? " on " + w.node : ""}` }),
        ),
      );
      list.appendChild(li);
    }
    $("workers-count").textContent = workers.length ? String(workers.length) : "";
    $("workers-empty").hidden = workers.length > 0;
    tickElapsed();

    const stats = $("agent-stats");
    clear(stats);
    for (const s of Array.isArray(a.agents) ? a.agents : []) {
      stats.appendChild(el("tr", null,
        el("td", { text: s.backend || "—" }),
        el("td", { text: s.role || "—" }),
        el("td", { class: "num", text: fmtInt(s.runs) }),
        el("td", { class: "num", text: fmtInt(s.completed) }),
        el("td", { class: "num", text: fmtInt(s.failed) }),
        el("td", { class: "num", text: s.mean_completion_s == null ? "—" : fmtDuration(s.mean_completion_s) }),
        el("td", { class: "num", text: typeof s.error_rate === "number" ? (s.error_rate * 100).toFixed(0) + "%" : "—" }),
      ));
    }
    const inst = $("installed");
    clear(inst);
    const installed = a.installed && typeof a.installed === "object" ? a.installed : {};
    for (const [name, ok] of Object.entries(installed)) {
      inst.appendChild(el("span", { class: "chip " + (ok ? "chip-ok" : "chip-missing"), text: name, title: ok ? "installed" : "not installed" }));
    }
  }

  function tickElapsed() {
    const extra = state.agentsFetchedAt ? (performance.now() - state.agentsFetchedAt) / 1000 : 0;
    for (const span of document.querySelectorAll("#worker-list .elapsed")) {
      const base = parseFloat(span.getAttribute("data-elapsed")) || 0;
      span.textContent = fmtDuration(base + extra);
    }
  }

  // ---------------------------------------------------------------------------
  // task table

  function setOptions(select, values, labelFor) {
    const current = select.value;
    const want = ["all", ...values];
    const have = Array.from(select.options).map((o) => o.value);
    if (JSON.stringify(want) !== JSON.stringify(have)) {
      clear(select);
      for (const v of want) select.appendChild(el("option", { value: v, text: v === "all" ? "all" : labelFor(v) }));
    }
    select.value = want.includes(current) ? current : "all";
  }

  function renderFilters() {
    const extraStatuses = [...new Set(state.tasks.map((t) => t.status).filter((s) => s && !STATUSES.includes(s)))].sort();
    setOptions($("filter-status"), [...STATUSES, ...extraStatuses], (v) => v);
    const owners = [...new Set(state.tasks.map((t) => t.owner).filter((o) => o !== null && o !== undefined && o !== ""))].map(String).sort();
    setOptions($("filter-owner"), owners, (v) => v);
  }

  function filteredTasks() {
    const status = $("filter-status").value;
    const owner = $("filter-owner").value;
    const text = $("filter-text").value.trim().toLowerCase();
    let rows = state.tasks.filter((t) => {
      if (status !== "all" && t.status !== status) return false;
      if (owner !== "all" && String(t.owner) !== owner) return false;
      if (text) {
        const hay = [t.id, t.name, t.owner, t.last_error, t.last_error_kind, t.source].map((x) => (x == null ? "" : String(x))).join("\n").toLowerCase();
        if (!hay.includes(text)) return false;
      }
      return true;
    });
    const { key, dir } = state.sort;
    if (key) {
      const val = (t) => {
        if (key === "priority") return PRIORITY_RANK[t.priority] ?? 9;
        if (key === "status") return STATUSES.indexOf(t.status);
        if (key === "attempts") return t.attempts || 0;
        return t[key] == null ? "" : String(t[key]);
      };
      rows = rows.slice().sort((a, b) => {
        const va = val(a);
        const vb = val(b);
        if (va < vb) return -dir;
        if (va > vb) return dir;
        return cmpId(String(a.id), String(b.id));
      });
    }
    return rows;
  }

  function renderTable() {
    const body = $("task-rows");
    const rows = filteredTasks();
    const held = heldTaskIds();
    const frag = document.createDocumentFragment();
    for (const t of rows) {
      const id = String(t.id);
      const blocked = el("td", { class: "blocked-by" });
      for (const b of Array.isArray(t.blocked_by) ? t.blocked_by : []) {
        const bt = state.taskMap.get(String(b));
        if (bt) {
          const link = taskLink(b);
          link.classList.add("dep-" + safeClass(bt.status));
          blocked.appendChild(link);
        } else {
          blocked.appendChild(el("span", { class: "dep-unknown", text: String(b), title: "unknown task" }));
        }
        blocked.appendChild(document.createTextNode(" "));
      }
      const tr = el("tr", {
        "data-task-id": id,
        "data-status": t.status || "unknown",
        class: [
          "row-" + safeClass(t.status),
          held.has(id) ? "held" : "",
          state.selectedTaskId === id ? "selected" : "",
        ].filter(Boolean).join(" "),
        tabindex: "0",
      },
        el("td", null, el("code", { text: id })),
        el("td", { text: t.name || "", title: t.name || "" }),
        el("td", { text: t.owner || "—" }),
        el("td", null, statusPill(t.status), held.has(id) ? el("span", { class: "pill pill-amber", text: "held" }) : null),
        el("td", { text: t.priority || "—" }),
        el("td", { class: "num", text: `${t.attempts || 0}/${t.max_attempts == null ? "?" : t.max_attempts}` }),
        blocked,
        el("td", { class: "nowrap", text: fmtTime(t.updated_at), title: t.updated_at || "" }),
        el("td", { class: "error-cell", text: truncate(t.last_error || "", 90), title: t.last_error || "" }),
      );
      tr.addEventListener("click", () => openDrawer(id));
      tr.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter") openDrawer(id);
      });
      frag.appendChild(tr);
    }
    clear(body);
    body.appendChild(frag);
    if (!rows.length) {
      body.appendChild(el("tr", { class: "empty-row" }, el("td", { colspan: "9", class: "empty", text: state.tasks.length ? "No task matches the filters." : "No tasks yet." })));
    }
    const counts = {};
    for (const t of state.tasks) counts[t.status] = (counts[t.status] || 0) + 1;
    const summary = STATUSES.filter((s) => counts[s]).map((s) => `${counts[s]} ${statusLabel(s)}`).join(" · ");
    $("task-count").textContent = rows.length === state.tasks.length
      ? `${state.tasks.length}${summary ? " — " + summary : ""}`
      : `${rows.length} of ${state.tasks.length}`;
    for (const th of document.querySelectorAll("#task-table th[data-sort]")) {
      th.classList.toggle("sorted-asc", state.sort.key === th.dataset.sort && state.sort.dir === 1);
      th.classList.toggle("sorted-desc", state.sort.key === th.dataset.sort && state.sort.dir === -1);
    }
  }

  // ---------------------------------------------------------------------------
  // drawer

  function openDrawer(id) {
    const changed = state.selectedTaskId !== id;
    state.selectedTaskId = id;
    const drawer = $("drawer");
    drawer.hidden = false;
    document.body.classList.add("drawer-open");
    if (changed) {
      state.drawerDetail = null;
      state.artifactPath = null;
      $("artifact-view").hidden = true;
      $("artifact-view").textContent = "";
      $("artifact-head").hidden = true;
      $("log-tail").textContent = "";
      state.diffKey = "";
      state.diffAttempt = "";
      clear($("drawer-diff"));
      renderDrawerSkeleton(id);
    }
    if (!logFollower) logFollower = new views.LogFollower($("log-tail"), $("log-note"), 500);
    logFollower.follow(id);
    updateGraphStatus();
    renderTable();
    loadDrawer(id, true);
  }

  function closeDrawer() {
    state.selectedTaskId = null;
    state.drawerDetail = null;
    state.drawerSeq++;
    state.drawerInflight = 0;
    $("drawer").hidden = true;
    if (logFollower) logFollower.stop();
    document.body.classList.remove("drawer-open");
    updateGraphStatus();
    renderTable();
  }

  function renderDrawerSkeleton(id) {
    const t = state.taskMap.get(id);
    $("drawer-id").textContent = id;
    $("drawer-name").textContent = t ? t.name || "" : "";
    clear($("drawer-meta"));
    $("drawer-description").textContent = "Loading…";
    clear($("drawer-progress"));
    clear($("drawer-runs"));
    clear($("drawer-artifacts"));
    $("drawer-error").hidden = true;
    $("drawer-escalations-wrap").hidden = true;
    renderDrawerHeader();
  }

  async function loadDrawer(id, showErrors) {
    if (state.drawerInflight && !showErrors) return;
    const seq = ++state.drawerSeq;
    state.drawerInflight = seq;
    try {
      const detail = await apiGet(`/api/tasks/${encodeURIComponent(id)}`);
      if (seq !== state.drawerSeq || state.selectedTaskId !== id) return;
      state.drawerDetail = detail;
      if (detail && detail.task) {
        // the detail is fresher than the list: keep the graph in step
        const t = detail.task;
        const prev = state.taskMap.get(String(t.id));
        if (prev && prev.status !== t.status) {
          Object.assign(prev, t);
          updateGraphStatus();
          renderTable();
        }
      }
      renderDrawer();
    } catch (err) {
      if (seq !== state.drawerSeq || state.selectedTaskId !== id) return;
      if (showErrors) {
        $("drawer-description").textContent = "";
        const box = $("drawer-error");
        box.hidden = false;
        box.textContent = `Could not load ${id}: ${err.message}`;
      }
    } finally {
      if (state.drawerInflight === seq) state.drawerInflight = 0;
    }
  }

  function drawerTask() {
    const id = state.selectedTaskId;
    const d = state.drawerDetail;
    return (d && d.task) || state.taskMap.get(id) || null;
  }

  function renderDrawerHeader() {
    const t = drawerTask();
    const status = t ? t.status : null;
    const pill = $("drawer-status");
    pill.textContent = statusLabel(status);
    pill.className = "pill status-" + safeClass(status);
    $("drawer-held").hidden = !heldTaskIds().has(state.selectedTaskId);
    $("drawer-cancel").hidden = !(status === "pending" || status === "in_progress");
    $("drawer").setAttribute("data-task-id", state.selectedTaskId || "");
    $("drawer").setAttribute("data-status", status || "");
  }

  function metaRow(dl, label, value) {
    if (value === null || value === undefined || value === "") return;
    dl.appendChild(el("dt", { text: label }));
    const dd = el("dd");
    if (value instanceof Node) dd.appendChild(value);
    else dd.textContent = String(value);
    dl.appendChild(dd);
  }

  function renderDrawer() {
    const d = state.drawerDetail;
    if (!d) return;
    const t = d.task || state.taskMap.get(state.selectedTaskId) || {};
    $("drawer-id").textContent = String(t.id || state.selectedTaskId);
    $("drawer-name").textContent = t.name || "";
    renderDrawerHeader();

    const dl = $("drawer-meta");
    clear(dl);
    metaRow(dl, "owner", t.owner);
    metaRow(dl, "priority", t.priority);
    metaRow(dl, "attempts", `${t.attempts || 0} of ${t.max_attempts == null ? "?" : t.max_attempts}`);
    if (Array.isArray(t.blocked_by) && t.blocked_by.length) {
      const span = el("span");
      for (const b of t.blocked_by) {
        const bt = state.taskMap.get(String(b));
        span.appendChild(bt ? taskLink(b) : el("span", { class: "dep-unknown", text: String(b), title: "unknown task" }));
        if (bt) span.lastChild.classList.add("dep-" + safeClass(bt.status));
        span.appendChild(document.createTextNode(" "));
      }
      metaRow(dl, "blocked by", span);
    }
    const dependents = state.tasks.filter((x) => Array.isArray(x.blocked_by) && x.blocked_by.map(String).includes(String(t.id)));
    if (dependents.length) {
      const span = el("span");
      for (const x of dependents) {
        span.appendChild(taskLink(x.id));
        span.appendChild(document.createTextNode(" "));
      }
      metaRow(dl, "blocks", span);
    }
    metaRow(dl, "source", t.source);
    metaRow(dl, "created", t.created_at ? fmtTime(t.created_at) : null);
    metaRow(dl, "updated", t.updated_at ? fmtTime(t.updated_at) : null);
    metaRow(dl, "completed", t.completed_at ? fmtTime(t.completed_at) : null);

    const errBox = $("drawer-error");
    if (t.last_error) {
      errBox.hidden = false;
      errBox.textContent = (t.last_error_kind ? `[${t.last_error_kind}] ` : "") + t.last_error;
    } else {
      errBox.hidden = true;
      errBox.textContent = "";
    }

    const desc = $("drawer-description");
    clear(desc);
    if (d.description && d.description.trim()) desc.appendChild(views.renderMarkdown(d.description));
    else if (t.name) desc.appendChild(el("div", null, el("span", { text: t.name }), el("span", { class: "muted", text: " — the task's whole text (it has no longer description)" })));
    else desc.appendChild(el("span", { class: "muted", text: "(no description)" }));

    const prog = $("drawer-progress");
    clear(prog);
    const p = d.progress;
    if (p) {
      const pct = typeof p.percent === "number" ? Math.max(0, Math.min(100, p.percent)) : null;
      if (pct !== null) {
        const fill = el("div", { class: "progress-fill" });
        fill.style.width = pct + "%";
        prog.appendChild(el("div", { class: "progress progress-small" }, fill));
      }
      // A finished task keeps its last report: say it is history, not what runs now.
      prog.appendChild(el("div", { class: "muted small" },
        t.status === "in_progress" ? "" : "last reported: ",
        pct !== null ? `${pct}% ` : "",
        p.note ? `— ${p.note} ` : "",
        p.at ? `(${fmtTime(p.at)})` : "",
      ));
    } else {
      prog.appendChild(el("span", { class: "muted", text: "no progress reported" }));
    }

    const escs = Array.isArray(d.escalations) ? d.escalations : [];
    $("drawer-escalations-wrap").hidden = !escs.length;
    const escList = $("drawer-escalations");
    clear(escList);
    for (const e of escs) {
      escList.appendChild(el("li", null,
        el("code", { text: String(e.id) }), " ",
        statusPill(e.status), " ",
        el("span", { text: e.issue || "" }),
        e.choice != null ? el("span", { class: "muted", text: ` → “${e.choice}”${e.answered_by ? " by " + e.answered_by : ""}` }) : null,
      ));
    }

    const runs = $("drawer-runs");
    clear(runs);
    const runList = Array.isArray(d.runs) ? d.runs : [];
    if (!runList.length) runs.appendChild(el("tr", null, el("td", { colspan: "8", class: "empty", text: "no runs yet" })));
    for (const r of runList) {
      const took = secondsBetween(r.started_at, r.ended_at);
      const outcome = el("td", null, el("span", { class: "pill outcome-" + safeClass(r.outcome || "running"), text: r.outcome || "running" }));
      if (r.error_kind || r.error) {
        outcome.appendChild(el("div", { class: "run-error", text: truncate(`${r.error_kind ? r.error_kind + ": " : ""}${r.error || ""}`, 200), title: r.error || "" }));
      }
      runs.appendChild(el("tr", null,
        el("td", { class: "num", text: r.attempt == null ? "—" : String(r.attempt) }),
        el("td", { text: [r.backend, r.model].filter(Boolean).join(" / ") || "—" }),
        el("td", { text: r.worker_id || "—" }),
        el("td", { class: "nowrap", text: fmtTime(r.started_at) }),
        el("td", { class: "nowrap", text: took === null ? "—" : fmtDuration(took) + (r.ended_at ? "" : "…") }),
        outcome,
        el("td", { class: "num", text: fmtUsd(r.cost_usd) }),
        el("td", { class: "num", text: `${fmtInt(r.tokens_in)} / ${fmtInt(r.tokens_out)}` }),
      ));
    }

    const arts = $("drawer-artifacts");
    clear(arts);
    const artList = Array.isArray(d.artifacts) ? d.artifacts : [];
    if (!artList.length) arts.appendChild(el("li", { class: "muted", text: "none yet" }));
    for (const path of artList) {
      const btn = el("button", {
        type: "button",
        class: "linklike artifact-link" + (state.artifactPath === String(path) ? " active" : ""),
        "data-path": String(path),
        text: String(path),
      });
      btn.addEventListener("click", () => loadArtifact(String(path)));
      arts.appendChild(el("li", null, btn));
    }

    renderAttemptChoice(runList);
    const running = runList.some((r) => !r.ended_at);
    const key = `${t.id}|${state.diffAttempt}|${runList.length}|${running ? Date.now() >> 13 : t.status}`;
    if (key !== state.diffKey) {
      state.diffKey = key;
      loadDiff(String(t.id), state.diffAttempt);
    }
    if (logFollower && logFollower.taskId !== String(t.id)) logFollower.follow(String(t.id));
    else if (logFollower && !logFollower.source && running) {
      // a new attempt began after the stream ended: follow it
      logFollower.stop();
      logFollower.follow(String(t.id));
    }
  }

  function renderAttemptChoice(runList) {
    const select = $("diff-attempt");
    const attempts = [...new Set(runList.map((r) => r.attempt).filter((a) => a != null))].sort((a, b) => a - b);
    select.hidden = attempts.length < 2;
    const values = [""].concat(attempts.map(String));
    const have = Array.from(select.options).map((o) => o.value);
    if (have.join(",") !== values.join(",")) {
      clear(select);
      for (const v of values) {
        const run = runList.find((r) => String(r.attempt) === v);
        select.appendChild(el("option", { value: v, text: v ? `attempt ${v}${run && run.outcome ? " — " + run.outcome : ""}` : "all attempts" }));
      }
    }
    select.value = state.diffAttempt;
  }

  async function loadDiff(id, attempt) {
    const box = $("drawer-diff");
    const note = $("diff-note");
    note.textContent = "loading…";
    const q = attempt ? `?attempt=${encodeURIComponent(attempt)}` : "";
    try {
      const diff = await apiGet(`/api/tasks/${encodeURIComponent(id)}/diff${q}`);
      if (state.selectedTaskId !== id || state.diffAttempt !== attempt) return;
      views.renderDiff(box, diff);
      note.textContent = Array.isArray(diff.attempts) && diff.attempts.length
        ? `(attempt${diff.attempts.length > 1 ? "s" : ""} ${diff.attempts[0]}${diff.attempts.length > 1 ? "–" + diff.attempts[diff.attempts.length - 1] : ""})`
        : "";
    } catch (err) {
      if (state.selectedTaskId !== id || state.diffAttempt !== attempt) return;
      clear(box);
      box.appendChild(el("p", { class: "muted", text: err.status === 404 || err.status === 400 ? err.message : `Could not load the diff: ${err.message}` }));
      note.textContent = "";
    }
  }

  // ---------------------------------------------------------------------------
  // timeline

  const TIMELINE_MIN_MS = 3000;
  const TIMELINE_MAX_TASKS = 80;

  async function loadTimeline() {
    const wait = TIMELINE_MIN_MS - (performance.now() - state.timelineFetchedAt);
    if (state.timelineInflight || wait > 0) {
      // come back once the pause is over, so the last change of a burst is not left out
      if (!state.timelineTimer) {
        state.timelineTimer = setTimeout(() => {
          state.timelineTimer = null;
          loadTimeline();
        }, Math.max(wait, 500));
      }
      return;
    }
    state.timelineInflight = true;
    try {
      const order = state.pipelineOrder.length ? state.pipelineOrder : state.tasks.map((t) => String(t.id));
      const wanted = order.filter((id) => {
        const t = state.taskMap.get(id);
        return t && ((t.attempts || 0) > 0 || t.status !== "pending" || !state.timelineDetails.has(id));
      }).slice(0, TIMELINE_MAX_TASKS);
      // only tasks that can have changed since the last look
      const stale = wanted.filter((id) => {
        const t = state.taskMap.get(id);
        const had = state.timelineDetails.get(id);
        // a run whose end is not recorded yet (the store may write it just after the task settles)
        return !had || had.task.updated_at !== t.updated_at || t.status === "in_progress" ||
          (had.runs || []).some((r) => !r.ended_at) ||
          (had.escalations || []).some((e) => e.status === "open") || state.escalations.some((e) => String(e.task_id) === id);
      });
      for (let i = 0; i < stale.length; i += 6) {
        const batch = await Promise.allSettled(stale.slice(i, i + 6).map((id) => apiGet(`/api/tasks/${encodeURIComponent(id)}`)));
        for (const r of batch) if (r.status === "fulfilled" && r.value && r.value.task) state.timelineDetails.set(String(r.value.task.id), r.value);
      }
      state.timelineFetchedAt = performance.now();
      renderTimeline();
    } finally {
      state.timelineInflight = false;
    }
  }

  function renderTimeline() {
    const order = state.pipelineOrder.length ? state.pipelineOrder : state.tasks.map((t) => String(t.id));
    const rows = [];
    for (const id of order.slice(0, TIMELINE_MAX_TASKS)) {
      const t = state.taskMap.get(id);
      const d = state.timelineDetails.get(id);
      if (!t) continue;
      const runs = d && Array.isArray(d.runs) ? d.runs : [];
      const waits = (d && Array.isArray(d.escalations) ? d.escalations : []).map((e) => ({
        from: e.created_at, to: e.answered_at, issue: e.issue, open: !e.status || e.status === "open",
      }));
      rows.push({ id, name: t.name, status: t.status, runs, waits });
    }
    if (state.timelineBy === "worker") {
      // one row per worker: its attempts, whichever task they were for
      const byWorker = new Map();
      for (const r of rows) {
        for (const run of r.runs) {
          const w = run.worker_id || run.backend || "?";
          if (!byWorker.has(w)) byWorker.set(w, []);
          byWorker.get(w).push(Object.assign({}, run, { task_id: r.id, label: r.id }));
        }
      }
      rows.length = 0;
      for (const w of [...byWorker.keys()].sort((a, b) => a.localeCompare(b, undefined, { numeric: true }))) {
        rows.push({ id: w, worker: true, runs: byWorker.get(w), waits: [] });
      }
    }
    const box = $("timeline");
    const drawn = views.renderTimeline(box, rows, Date.now(), $("timeline-wrap").clientWidth, openDrawer);
    $("timeline-empty").hidden = drawn;
    box.classList.toggle("empty-svg", !drawn);
  }

  async function loadArtifact(path) {
    state.artifactPath = path;
    for (const b of document.querySelectorAll("#drawer-artifacts .artifact-link")) {
      b.classList.toggle("active", b.getAttribute("data-path") === path);
    }
    const view = $("artifact-view");
    const head = $("artifact-head");
    head.hidden = false;
    head.textContent = path + " — loading…";
    view.hidden = false;
    view.classList.remove("error");
    try {
      const text = await apiGet("/api/artifact?path=" + encodeURIComponent(path), true);
      if (state.artifactPath !== path) return;
      clear(view);
      if (/\.(md|markdown)$/i.test(path)) {
        view.classList.add("rendered");
        view.appendChild(views.renderMarkdown(text));
      } else {
        view.classList.remove("rendered");
        view.textContent = text;
      }
      view.scrollTop = 0;
      head.textContent = `${path} — ${fmtInt(text.length)} characters`;
    } catch (err) {
      if (state.artifactPath !== path) return;
      view.textContent = `Could not load ${path}: ${err.message}`;
      view.classList.add("error");
      head.textContent = path;
    }
  }

  async function cancelSelected() {
    const id = state.selectedTaskId;
    if (!id) return;
    const t = drawerTask();
    const what = t && t.status === "in_progress" ? " Its running worker will be stopped." : "";
    if (!window.confirm(`Cancel task ${id}?${what} It ends failed and is not retried.`)) return;
    const btn = $("drawer-cancel");
    btn.disabled = true;
    try {
      const r = await apiPost(`/api/tasks/${encodeURIComponent(id)}/cancel`, {});
      toast(`${r.task_id || id}: cancelled (was ${r.was || "?"})${r.note ? " — " + r.note : ""}`, "ok");
      scheduleRefresh(50);
    } catch (err) {
      toast(`Could not cancel ${id}: ${err.message}`, "error");
    } finally {
      btn.disabled = false;
    }
  }

  function drawerLogTick() {
    const id = state.selectedTaskId;
    if (!id || $("drawer").hidden) return;
    const listed = state.taskMap.get(id);
    const t = drawerTask();
    if ((t && t.status === "in_progress") || (listed && listed.status === "in_progress")) loadDrawer(id, false);
  }

  // ---------------------------------------------------------------------------
  // wiring

  function init() {
    $("drawer-close").addEventListener("click", closeDrawer);
    $("diff-attempt").addEventListener("change", () => {
      state.diffAttempt = $("diff-attempt").value;
      state.diffKey = "";
      if (state.selectedTaskId) renderDrawer();
    });
    $("drawer-cancel").addEventListener("click", cancelSelected);
    document.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape" && !$("drawer").hidden) closeDrawer();
    });
    $("graph-fit").addEventListener("click", () => {
      state.graphZoom = null;
      applyGraphSize();
    });
    $("timeline-by").addEventListener("change", () => {
      state.timelineBy = $("timeline-by").value;
      renderTimeline();
    });
    $("graph-zoom-in").addEventListener("click", () => zoomGraph(1.25));
    $("graph-zoom-out").addEventListener("click", () => zoomGraph(0.8));
    let resizeTimer = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => {
        renderGraph();
        applyGraphSize();
        renderTimeline();
      }, 150);
    });
    for (const id of ["filter-status", "filter-owner"]) $(id).addEventListener("change", renderTable);
    $("filter-text").addEventListener("input", renderTable);
    for (const th of document.querySelectorAll("#task-table th[data-sort]")) {
      th.addEventListener("click", () => {
        const key = th.dataset.sort;
        if (state.sort.key === key) {
          if (state.sort.dir === 1) state.sort.dir = -1;
          else state.sort = { key: null, dir: 1 };
        } else {
          state.sort = { key, dir: 1 };
        }
        renderTable();
      });
    }
    setOptions($("filter-status"), STATUSES, (v) => v);
    setConn("connecting");

    refreshAll();
    setInterval(refreshAll, POLL_MS);
    setInterval(drawerLogTick, LOG_POLL_MS);
    setInterval(() => {
      tickElapsed();
      tickDeadlines();
    }, 1000);
    window.addEventListener("beforeunload", () => {
      if (eventSource) eventSource.close();
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
