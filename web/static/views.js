/* team-executor dashboard views: diff, live log, timeline, Markdown.
 *
 * Every string shown here comes from agents (patches, logs, artifacts) and may
 * be hostile: it only ever becomes text nodes or setAttribute values, never
 * markup.  Exposed as window.TEViews for app.js; plain ES2020, no libraries.
 */
"use strict";

window.TEViews = (() => {
  const SVG_NS = "http://www.w3.org/2000/svg";

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  // Control characters (ANSI escapes, NULs, bells...) shown as visible marks, not acted on.
  // Tab and newline stay; a carriage return at a line's end is dropped.
  function visible(text) {
    return String(text)
      .replace(/\x1b\[[0-9;?]*[ -/]*[@-~]/g, "") // colour/cursor sequences: drop them
      .replace(/\r(?=\n|$)/g, "")
      .replace(/[\x00-\x08\x0b-\x1f\x7f]/g, (c) => String.fromCharCode(c === "\x7f" ? 0x2421 : 0x2400 + c.charCodeAt(0)));
  }

  // ---------------------------------------------------------------------------
  // diff

  function diffStat(file) {
    if (file.added == null) return "binary";
    return `+${file.added} −${file.removed || 0}`;
  }

  /** Render a /api/tasks/{id}/diff answer into `box`. */
  function renderDiff(box, diff) {
    clear(box);
    const files = Array.isArray(diff.files) ? diff.files : [];
    const head = el("div", "diff-summary");
    head.appendChild(el("span", null, `${files.length} file${files.length === 1 ? "" : "s"} changed, `));
    head.appendChild(el("span", "diff-add", `+${diff.added || 0}`));
    head.appendChild(document.createTextNode(" "));
    head.appendChild(el("span", "diff-del", `−${diff.removed || 0}`));
    if (diff.live) head.appendChild(el("span", "pill pill-amber", "live: attempt still running"));
    box.appendChild(head);
    if (!files.length) {
      box.appendChild(el("p", "muted", "No changes to the project's files."));
      return;
    }
    const list = el("ul", "diff-files");
    for (const f of files) {
      const li = el("li", "diff-file");
      li.dataset.path = String(f.path);
      li.appendChild(el("span", "diff-file-status diff-st-" + String(f.status || "M").replace(/[^A-Z]/g, ""), f.status || "M"));
      const name = el("button", "linklike diff-file-name", f.path);
      name.type = "button";
      name.addEventListener("click", () => {
        const target = box.querySelector(`.diff-file-head[data-path="${CSS.escape(String(f.path))}"]`);
        if (target) target.scrollIntoView({ block: "nearest" });
      });
      li.appendChild(name);
      li.appendChild(el("span", "diff-file-stat", diffStat(f)));
      list.appendChild(li);
    }
    box.appendChild(list);
    if (typeof diff.patch === "string") box.appendChild(renderPatch(diff.patch));
  }

  const MAX_PATCH_LINES = 5000;

  function renderPatch(patch) {
    const pre = el("pre", "diff-patch");
    const lines = patch.split("\n");
    if (lines.length && lines[lines.length - 1] === "") lines.pop();
    const shown = lines.slice(0, MAX_PATCH_LINES);
    for (const line of shown) {
      let cls = "dl";
      if (line.startsWith("diff --git ")) cls = "dl dl-file";
      else if (line.startsWith("+++ ") || line.startsWith("--- ")) cls = "dl dl-meta";
      else if (line.startsWith("@@")) cls = "dl dl-hunk";
      else if (line.startsWith("+")) cls = "dl dl-add";
      else if (line.startsWith("-")) cls = "dl dl-del";
      else if (/^(index |new file|deleted file|similarity|rename |old mode|new mode|Binary)/.test(line)) cls = "dl dl-meta";
      const span = el("span", cls, visible(line) + "\n");
      if (cls === "dl dl-file") {
        const m = /^diff --git a\/(.*) b\/(.*)$/.exec(line);
        span.classList.add("diff-file-head");
        if (m) span.dataset.path = m[2];
      }
      pre.appendChild(span);
    }
    if (lines.length > shown.length) {
      pre.appendChild(el("span", "dl dl-meta", `… ${lines.length - shown.length} more lines (see \`executor diff\`)\n`));
    }
    return pre;
  }

  // ---------------------------------------------------------------------------
  // live log over SSE

  /** Follows /api/tasks/{id}/log into `pre`, keeping the last `maxLines` lines. */
  class LogFollower {
    constructor(pre, note, maxLines = 500) {
      this.pre = pre;
      this.note = note;
      this.maxLines = maxLines;
      this.source = null;
      this.taskId = null;
      this.partial = null; // the last line's node, still growing
      this.lines = 0;
    }

    follow(taskId) {
      if (this.taskId === taskId && this.source) return;
      this.stop();
      this.taskId = taskId;
      clear(this.pre);
      this.partial = null;
      this.lines = 0;
      this.setNote("connecting…");
      // same origin: the session cookie goes along; Last-Event-ID resumes after a drop
      const es = new EventSource(`/api/tasks/${encodeURIComponent(taskId)}/log`);
      this.source = es;
      es.addEventListener("attempt", (ev) => {
        const d = this.parse(ev);
        if (!d) return;
        this.marker(`── attempt ${d.attempt}${d.backend ? " (" + d.backend + ")" : ""} ──`);
        this.setNote("live");
      });
      es.addEventListener("log", (ev) => {
        const d = this.parse(ev);
        if (d && typeof d.text === "string") this.append(d.text);
        this.setNote("live");
      });
      es.addEventListener("end", (ev) => {
        const d = this.parse(ev) || {};
        this.setNote(d.status === "unavailable" ? "(no log: " + (d.detail || "unavailable") + ")" : `(ended: ${d.status || "done"})`);
        this.stopSource();
      });
      es.onerror = () => {
        if (es.readyState === EventSource.CLOSED) this.setNote("(disconnected)");
        else this.setNote("reconnecting…");
      };
    }

    parse(ev) {
      try {
        return JSON.parse(ev.data);
      } catch (_) {
        return null;
      }
    }

    setNote(text) {
      if (this.note) this.note.textContent = text;
    }

    atBottom() {
      const p = this.pre;
      return p.scrollHeight - p.scrollTop - p.clientHeight < 24;
    }

    marker(text) {
      const stick = this.atBottom();
      if (this.partial) {
        this.partial = null;
      }
      this.pre.appendChild(el("span", "log-line log-marker", text + "\n"));
      this.lines++;
      this.trim(stick);
    }

    append(text) {
      const stick = this.atBottom();
      const parts = visible(text).split("\n");
      for (let i = 0; i < parts.length; i++) {
        const last = i === parts.length - 1;
        if (last && parts[i] === "") break; // text ended with a newline
        if (this.partial) {
          this.partial.textContent += parts[i] + (last ? "" : "\n");
          if (!last) this.partial = null;
        } else {
          const span = el("span", "log-line", parts[i] + (last ? "" : "\n"));
          this.pre.appendChild(span);
          this.lines++;
          if (last) this.partial = span;
        }
      }
      this.trim(stick);
    }

    trim(stick) {
      while (this.lines > this.maxLines && this.pre.firstChild) {
        if (this.pre.firstChild === this.partial) this.partial = null;
        this.pre.removeChild(this.pre.firstChild);
        this.lines--;
      }
      if (stick) this.pre.scrollTop = this.pre.scrollHeight;
    }

    stopSource() {
      if (this.source) this.source.close();
      this.source = null;
    }

    stop() {
      this.stopSource();
      this.taskId = null;
    }
  }

  // ---------------------------------------------------------------------------
  // timeline

  const ROW_H = 26;
  const LABEL_W = 96;
  const AXIS_H = 20;

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) node.setAttribute(k, String(v));
    return node;
  }

  function ts(iso) {
    if (!iso) return null;
    const t = Date.parse(iso);
    return Number.isFinite(t) ? t : null;
  }

  function niceStep(spanMs, pxWidth) {
    const target = spanMs / Math.max(1, pxWidth / 90); // a tick every ~90 px
    const steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400].map((s) => s * 1000);
    return steps.find((s) => s >= target) || steps[steps.length - 1];
  }

  function fmtOffset(ms) {
    const s = Math.round(ms / 1000);
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m${s % 60 ? String(s % 60).padStart(2, "0") : ""}`;
    return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}`;
  }

  /**
   * rows: [{id, name, status, runs: [{attempt, started_at, ended_at, outcome, error_kind, backend}],
   *         waits: [{from, to, issue, open}]}] in pipeline order.  onPick(id) when a row is clicked.
   */
  function renderTimeline(svgEl, rows, now, widthPx, onPick) {
    clear(svgEl);
    let t0 = Infinity;
    let t1 = -Infinity;
    for (const r of rows) {
      for (const run of r.runs) {
        const s = ts(run.started_at);
        if (s === null) continue;
        t0 = Math.min(t0, s);
        t1 = Math.max(t1, ts(run.ended_at) ?? now);
      }
      for (const w of r.waits) {
        const s = ts(w.from);
        if (s === null) continue;
        t0 = Math.min(t0, s);
        t1 = Math.max(t1, ts(w.to) ?? now);
      }
    }
    if (!Number.isFinite(t0)) return false;
    const span = Math.max(t1 - t0, 5000);
    // at least ~4 px a second so short attempts stay visible; scrolls sideways when wider than the panel
    const plotW = Math.max(widthPx - LABEL_W - 16, Math.min(span / 1000 * 4, 4000), 240);
    const x = (t) => LABEL_W + ((t - t0) / span) * plotW;
    const W = LABEL_W + plotW + 12;
    const H = AXIS_H + rows.length * ROW_H + 4;
    svgEl.setAttribute("width", String(W));
    svgEl.setAttribute("height", String(H));
    svgEl.setAttribute("viewBox", `0 0 ${W} ${H}`);

    const axis = svg("g", { class: "tl-axis" });
    const step = niceStep(span, plotW);
    for (let off = 0; off <= span; off += step) {
      const xx = x(t0 + off);
      axis.appendChild(svg("line", { x1: xx, x2: xx, y1: AXIS_H - 4, y2: H, class: "tl-grid" }));
      const label = svg("text", { x: xx + 2, y: AXIS_H - 8, class: "tl-tick" });
      label.textContent = "+" + fmtOffset(off);
      axis.appendChild(label);
    }
    svgEl.appendChild(axis);

    rows.forEach((r, i) => {
      const y = AXIS_H + i * ROW_H;
      const g = svg("g", r.worker
        ? { class: "tl-row tl-worker", "data-worker-id": r.id }
        : { class: "tl-row", "data-task-id": r.id, "data-status": r.status || "" });
      g.appendChild(svg("rect", { x: 0, y, width: W, height: ROW_H, class: i % 2 ? "tl-band odd" : "tl-band" }));
      const label = svg("text", { x: 6, y: y + ROW_H / 2 + 4, class: "tl-label" });
      label.textContent = r.id;
      const tip = svg("title");
      tip.textContent = r.worker ? `${r.id}: ${r.runs.length} attempt(s)` : `${r.id}: ${r.name || ""} (${r.status || "?"})`;
      label.appendChild(tip);
      g.appendChild(label);
      for (const w of r.waits) {
        const s = ts(w.from);
        if (s === null) continue;
        const e = ts(w.to) ?? now;
        const wait = svg("rect", {
          x: x(s), y: y + ROW_H - 7, width: Math.max(3, x(e) - x(s)), height: 4, rx: 2,
          class: "tl-wait" + (w.open ? " open" : ""),
        });
        const wt = svg("title");
        wt.textContent = `question${w.open ? " (open)" : ""}: ${w.issue || ""}`;
        wait.appendChild(wt);
        g.appendChild(wait);
        const mark = svg("path", { d: `M${x(s)},${y + 3} l4,6 l-8,0 z`, class: "tl-question" + (w.open ? " open" : "") });
        mark.appendChild(wt.cloneNode(true));
        g.appendChild(mark);
      }
      for (const run of r.runs) {
        const s = ts(run.started_at);
        if (s === null) continue;
        const e = ts(run.ended_at) ?? now;
        const outcome = run.ended_at ? run.outcome || "ended" : "running";
        const bar = svg("rect", {
          x: x(s), y: y + 5, width: Math.max(4, x(e) - x(s) - 1), height: ROW_H - 13, rx: 3,
          class: "tl-bar outcome-" + String(outcome).toLowerCase().replace(/[^a-z0-9_-]/g, "_"),
          "data-attempt": run.attempt, "data-outcome": outcome,
        });
        const bt = svg("title");
        const secs = Math.round((e - s) / 1000);
        bt.textContent = `${run.task_id || r.id} attempt ${run.attempt}: ${outcome}${run.error_kind ? " (" + run.error_kind + ")" : ""}, ${secs}s${run.backend ? " on " + run.backend : ""}${run.worker_id ? " (" + run.worker_id + ")" : ""}`;
        bar.appendChild(bt);
        if (run.task_id && onPick) {
          // a worker's row: the bar opens the task it ran
          bar.addEventListener("click", (ev) => {
            ev.stopPropagation();
            onPick(run.task_id);
          });
        }
        g.appendChild(bar);
        const tag = run.label || (run.attempt != null ? "#" + run.attempt : "");
        if (tag && x(e) - x(s) >= tag.length * 6 + 6) {
          const n = svg("text", { x: x(s) + 4, y: y + ROW_H / 2 + 3, class: "tl-attempt" });
          n.textContent = tag;
          g.appendChild(n);
        }
      }
      if (!r.worker) g.addEventListener("click", () => onPick && onPick(r.id));
      svgEl.appendChild(g);
    });
    const nowX = x(now);
    if (now <= t1 + 1000) svgEl.appendChild(svg("line", { x1: nowX, x2: nowX, y1: AXIS_H - 4, y2: H, class: "tl-now" }));
    return true;
  }

  // ---------------------------------------------------------------------------
  // Markdown: a small safe subset built as DOM nodes

  function inline(parent, text) {
    // code spans first, then links, bold, italic; everything else is text
    const re = /(`+)([^`]+?)\1|\[([^\]]+)\]\(([^)\s]+)\)|\*\*([^*]+)\*\*|__([^_]+)__|\*([^*\s][^*]*)\*|_([^_\s][^_]*)_/g;
    let last = 0;
    let m;
    while ((m = re.exec(text)) !== null) {
      if (m.index > last) parent.appendChild(document.createTextNode(text.slice(last, m.index)));
      if (m[2] !== undefined) parent.appendChild(el("code", null, m[2]));
      else if (m[3] !== undefined) {
        const href = m[4];
        if (/^https?:\/\//i.test(href)) {
          const a = el("a");
          a.href = href;
          a.rel = "noopener noreferrer nofollow";
          a.target = "_blank";
          inline(a, m[3]);
          parent.appendChild(a);
        } else {
          inline(parent, m[3]);
          parent.appendChild(el("span", "muted", ` (${href})`));
        }
      } else if (m[5] !== undefined || m[6] !== undefined) {
        const b = el("strong");
        inline(b, m[5] !== undefined ? m[5] : m[6]);
        parent.appendChild(b);
      } else {
        const i = el("em");
        inline(i, m[7] !== undefined ? m[7] : m[8]);
        parent.appendChild(i);
      }
      last = re.lastIndex;
    }
    if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
  }

  /** Markdown text -> a <div class="md"> of DOM nodes (headings, lists, code, quotes, emphasis, links). */
  function renderMarkdown(source) {
    const root = el("div", "md");
    const lines = visible(source || "").split("\n");
    let i = 0;
    let para = [];
    const flush = () => {
      if (!para.length) return;
      const p = el("p");
      inline(p, para.join(" "));
      root.appendChild(p);
      para = [];
    };
    while (i < lines.length) {
      const line = lines[i];
      const fence = /^\s*(```|~~~)(.*)$/.exec(line);
      if (fence) {
        flush();
        const body = [];
        i++;
        while (i < lines.length && !lines[i].trim().startsWith(fence[1])) body.push(lines[i++]);
        i++;
        const pre = el("pre", "md-code");
        pre.appendChild(el("code", null, body.join("\n")));
        root.appendChild(pre);
        continue;
      }
      const h = /^(#{1,6})\s+(.*?)\s*#*\s*$/.exec(line);
      if (h) {
        flush();
        const node = el("h" + Math.min(6, h[1].length + 3), "md-h md-h" + h[1].length);
        inline(node, h[2]);
        root.appendChild(node);
        i++;
        continue;
      }
      if (/^\s*([-*_])(\s*\1){2,}\s*$/.test(line)) {
        flush();
        root.appendChild(el("hr"));
        i++;
        continue;
      }
      const item = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/.exec(line);
      if (item) {
        flush();
        const ordered = /\d/.test(item[2]);
        const list = el(ordered ? "ol" : "ul");
        while (i < lines.length) {
          const it = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/.exec(lines[i]);
          if (!it) {
            // a continuation line (indented) belongs to the item before
            if (/^\s{2,}\S/.test(lines[i]) && list.lastChild) {
              list.lastChild.appendChild(document.createTextNode(" "));
              inline(list.lastChild, lines[i].trim());
              i++;
              continue;
            }
            break;
          }
          const li = el("li");
          if (it[1].length >= 2) li.className = "md-nested";
          const task = /^\[([ xX])\]\s+(.*)$/.exec(it[3]);
          if (task) {
            li.appendChild(el("span", "md-check", task[1] === " " ? "☐ " : "☑ "));
            inline(li, task[2]);
          } else inline(li, it[3]);
          list.appendChild(li);
          i++;
        }
        root.appendChild(list);
        continue;
      }
      if (/^\s*>/.test(line)) {
        flush();
        const quote = el("blockquote");
        const body = [];
        while (i < lines.length && /^\s*>/.test(lines[i])) body.push(lines[i++].replace(/^\s*>\s?/, ""));
        inline(quote, body.join(" "));
        root.appendChild(quote);
        continue;
      }
      if (!line.trim()) {
        flush();
        i++;
        continue;
      }
      para.push(line.trim());
      i++;
    }
    flush();
    return root;
  }

  return { renderDiff, renderMarkdown, renderTimeline, LogFollower, visible };
})();
