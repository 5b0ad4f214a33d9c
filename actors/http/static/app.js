// The actormq dashboard: a single page over the node's JSON API (/api/...).
// No framework and no build step: the node embeds this file as it is.
// Every view sets <body data-view="NAME"> once its data is on the page, so
// a browser test can tell a rendered view from one still loading.
"use strict";

const REFRESH_MS = 2000;
let timer = null;
let generation = 0;

// ---- small helpers -------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children.flat()) if (c) el.append(c);
  return el;
}

async function api(path, options) {
  const res = await fetch("api/" + path, options);
  let body = null;
  const text = await res.text();
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = { error: text }; }
  if (!res.ok) {
    const msg = body && body.error ? body.error : res.status + " " + res.statusText;
    throw new Error(msg);
  }
  return body;
}

function fmt(n) {
  if (n === undefined || n === null) return "–";
  if (typeof n !== "number") return String(n);
  if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(2) + " M";
  if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1) + " k";
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}

function num(v, attrs) {
  return h("td", Object.assign({ class: "num" }, attrs || {}), fmt(v));
}

function table(headers, rows, attrs) {
  return h("table", attrs || {},
    h("thead", {}, h("tr", {}, headers.map((t) => h("th", { class: t.num ? "num" : "" }, t.label || t)))),
    h("tbody", {}, rows.length ? rows : [h("tr", {}, h("td", { colspan: headers.length, class: "empty" }, "none"))]));
}

function card(label, value, key) {
  return h("div", { class: "card", "data-card": key }, h("div", { class: "label" }, label), h("div", { class: "value" }, value));
}

function setStatus(text, isError) {
  const s = document.getElementById("status");
  s.textContent = text;
  s.className = isError ? "status error" : "status";
}

function errorBox(e) {
  return h("div", { class: "error-box", "data-error": "" }, "Error: " + e.message);
}

// A line chart of `series` ([{label, cls, color, points: [[ts, v]...]}]).
function chart(title, series, key) {
  const W = 520, H = 160, P = 30;
  const all = series.flatMap((s) => s.points);
  const t0 = all.length ? Math.min(...all.map((p) => p[0])) : 0;
  const t1 = all.length ? Math.max(...all.map((p) => p[0])) : 1;
  const vmax = Math.max(1, ...all.map((p) => p[1]));
  const x = (t) => P + ((t - t0) / Math.max(1, t1 - t0)) * (W - P - 8);
  const y = (v) => H - 18 - (v / vmax) * (H - 30);
  const g = svg("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, "data-chart": key });
  g.append(svg("line", { x1: P, y1: H - 18, x2: W - 8, y2: H - 18, stroke: "#d9dee8" }));
  const top = svg("text", { x: 2, y: 14, "font-size": 10, fill: "#667085" });
  top.textContent = fmt(vmax);
  g.append(top);
  const span = svg("text", { x: W - 120, y: H - 4, "font-size": 10, fill: "#667085" });
  span.textContent = all.length ? `last ${Math.round((t1 - t0) / 1000)} s` : "no samples yet";
  g.append(span);
  for (const s of series) {
    if (!s.points.length) continue;
    const pts = s.points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
    g.append(svg("polyline", { points: pts, fill: "none", stroke: s.color, "stroke-width": 2, "data-series": s.cls }));
  }
  return h("div", { class: "chart" },
    h("div", { class: "title" }, title),
    g,
    h("div", { class: "legend" }, series.map((s) => h("span", { class: s.cls }, "— " + s.label))));
}

function messageRows(messages) {
  return messages.map((m) => h("tr", { "data-msg-id": m.msg_id },
    h("td", {}, h("a", { href: "#/messages?id=" + encodeURIComponent(m.msg_id) }, m.msg_id)),
    h("td", {}, m.topic), h("td", {}, m.tags || ""), h("td", {}, m.keys || ""),
    num(m.queue_id), num(m.queue_offset), num(m.reconsume_times),
    h("td", {}, m.store_ts ? new Date(m.store_ts).toISOString() : ""),
    h("td", {}, h("pre", { class: "body" }, m.body))));
}
const MESSAGE_HEADERS = ["Message id", "Topic", "Tags", "Keys", { label: "Queue", num: true },
  { label: "Offset", num: true }, { label: "Reconsumed", num: true }, "Stored", "Body"];

// ---- views ---------------------------------------------------------------

const views = {
  async overview() {
    const [cluster, stats, topics, groups] = await Promise.all([
      api("cluster"), api("stats"), api("topics"), api("groups")]);
    const samples = stats.samples || [];
    const last = samples.length ? samples[samples.length - 1] : {};
    const userTopics = (topics.topics || []).filter((t) => !t.system);
    const root = h("div", {},
      h("div", { class: "cards" },
        card("Brokers", fmt((cluster.brokers || []).length), "brokers"),
        card("Topics", fmt(userTopics.length), "topics"),
        card("Consumer groups", fmt((groups.groups || []).length), "groups"),
        card("TPS in", fmt(last.tps_in || 0), "tps-in"),
        card("TPS out", fmt(last.tps_out || 0), "tps-out"),
        card("Messages in", fmt(last.messages_in_total || 0), "messages-in"),
        card("Total lag", fmt(last.total_lag || 0), "total-lag")),
      h("div", { class: "charts" },
        chart("Messages per second", [
          { label: "in", cls: "in", color: "#2f6fed", points: samples.map((s) => [s.ts_ms, s.tps_in]) },
          { label: "out", cls: "out", color: "#12a150", points: samples.map((s) => [s.ts_ms, s.tps_out]) }], "tps"),
        chart("Consumer lag (all groups)", [
          { label: "lag", cls: "lag", color: "#c2410c", points: samples.map((s) => [s.ts_ms, s.total_lag]) }], "lag")),
      h("h2", {}, "Brokers"),
      table(["Cluster", "Broker", { label: "Id", num: true }, "Address", "Role"],
        (cluster.brokers || []).map((b) => h("tr", { "data-broker": b.broker },
          h("td", {}, b.cluster), h("td", {}, b.broker), num(b.broker_id), h("td", {}, b.addr), h("td", {}, b.role)))));
    return { root, refresh: true };
  },

  async topics(name) {
    if (name) {
      const t = await api("topics/" + encodeURIComponent(name));
      const root = h("div", {},
        h("h2", {}, "Topic ", h("span", { "data-topic-name": t.topic }, t.topic)),
        table(["Broker", { label: "Queue", num: true }, { label: "Min offset", num: true }, { label: "Max offset", num: true }, { label: "Messages", num: true }],
          (t.queues || []).map((q) => h("tr", { "data-queue": q.queue_id },
            h("td", {}, q.broker), num(q.queue_id), num(q.min_offset), num(q.max_offset, { "data-max-offset": q.max_offset }),
            num(q.max_offset - q.min_offset)))));
      return { root, refresh: true };
    }
    const data = await api("topics");
    const createForm = h("form", {
      onsubmit: async (ev) => {
        ev.preventDefault();
        const f = ev.target;
        try {
          await api("topics", { method: "POST", headers: { "content-type": "application/json" },
            body: JSON.stringify({ topic: f.topic.value, queues: Number(f.queues.value) || undefined }) });
          render();
        } catch (e) { f.append(errorBox(e)); }
      } },
      h("input", { name: "topic", placeholder: "new topic", required: true }),
      h("input", { name: "queues", type: "number", min: 1, placeholder: "queues" }),
      h("button", { type: "submit" }, "Create topic"));
    const root = h("div", {}, h("h2", {}, "Topics"), createForm,
      table(["Topic", { label: "Queues", num: true }, { label: "Messages", num: true }],
        (data.topics || []).filter((t) => !t.system).map((t) => h("tr", { "data-topic": t.topic },
          h("td", {}, h("a", { href: "#/topics/" + encodeURIComponent(t.topic) }, t.topic)),
          num(t.queues), num(t.messages, { "data-messages": t.messages })))));
    return { root, refresh: false };
  },

  async groups(name) {
    if (name) {
      const g = await api("groups/" + encodeURIComponent(name));
      const root = h("div", {},
        h("h2", {}, "Consumer group ", h("span", { "data-group-name": g.group }, g.group),
          " · total lag ", h("span", { "data-total-lag": g.total_lag }, fmt(g.total_lag))),
        table(["Topic", "Broker", { label: "Queue", num: true }, { label: "Broker offset", num: true },
          { label: "Consumer offset", num: true }, { label: "Lag", num: true }],
          (g.progress || []).map((p) => h("tr", { "data-progress": `${p.topic}/${p.broker}/${p.queue_id}` },
            h("td", {}, p.topic), h("td", {}, p.broker), num(p.queue_id), num(p.broker_offset),
            num(p.consumer_offset), h("td", { class: "num" + (p.lag > 0 ? " lag-positive" : ""), "data-lag": p.lag }, fmt(p.lag))))),
        h("h2", {}, "Connected clients"),
        table(["Client id", "Address", "Language", "Version"],
          (g.connections || []).map((c) => h("tr", { "data-client": c.client_id },
            h("td", {}, c.client_id), h("td", {}, c.addr), h("td", {}, c.language), h("td", {}, c.version)))));
      return { root, refresh: true };
    }
    const data = await api("groups");
    const root = h("div", {}, h("h2", {}, "Consumer groups"),
      table(["Group", "Orderly", { label: "Max retries", num: true }, { label: "Consumers", num: true }, { label: "Total lag", num: true }],
        (data.groups || []).map((g) => h("tr", { "data-group": g.group },
          h("td", {}, h("a", { href: "#/groups/" + encodeURIComponent(g.group) }, g.group)),
          h("td", {}, g.orderly ? "yes" : "no"), num(g.retry_max), num(g.consumers),
          h("td", { class: "num" + (g.total_lag > 0 ? " lag-positive" : ""), "data-total-lag": g.total_lag }, fmt(g.total_lag))))));
    return { root, refresh: true };
  },

  async messages(_name, params) {
    const form = h("form", {
      onsubmit: (ev) => {
        ev.preventDefault();
        const f = ev.target;
        const q = new URLSearchParams();
        if (f.id.value) q.set("id", f.id.value.trim());
        else { q.set("topic", f.topic.value.trim()); q.set("key", f.key.value.trim()); }
        location.hash = "#/messages?" + q.toString();
      } },
      h("input", { name: "id", placeholder: "message id", size: 34, value: params.get("id") || "" }),
      h("span", {}, "or"),
      h("input", { name: "topic", placeholder: "topic", value: params.get("topic") || "" }),
      h("input", { name: "key", placeholder: "key", value: params.get("key") || "" }),
      h("button", { type: "submit" }, "Look up"));
    const root = h("div", {}, h("h2", {}, "Message lookup"), form);
    let found = null;
    if (params.get("id")) {
      found = [await api("messages/" + encodeURIComponent(params.get("id")))];
    } else if (params.get("topic") && params.get("key")) {
      const q = new URLSearchParams({ topic: params.get("topic"), key: params.get("key") });
      found = (await api("messages?" + q.toString())).messages || [];
    }
    if (found) root.append(h("div", { "data-results": found.length }, table(MESSAGE_HEADERS, messageRows(found))));
    return { root, refresh: false };
  },

  async dlq(name) {
    const groups = (await api("groups")).groups || [];
    const pick = h("form", { onsubmit: (ev) => { ev.preventDefault(); location.hash = "#/dlq/" + encodeURIComponent(ev.target.group.value); } },
      h("select", { name: "group" }, groups.map((g) => h("option", { value: g.group, selected: g.group === name }, g.group))),
      h("button", { type: "submit" }, "Show dead letters"));
    const root = h("div", {}, h("h2", {}, "Dead-letter queues"), pick);
    if (name) {
      const d = await api("dlq/" + encodeURIComponent(name) + "?limit=100");
      const msgs = d.messages || [];
      const result = h("div", { "data-resend-result": "" });
      const resend = h("button", {
        "data-resend": name,
        disabled: msgs.length === 0,
        onclick: async () => {
          try {
            const r = await api("dlq/" + encodeURIComponent(name) + "/resend", {
              method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
            result.textContent = `Resent ${(r.resent || []).length} message(s).`;
          } catch (e) { result.replaceChildren(errorBox(e)); }
        } }, "Resend all to the group");
      root.append(h("h2", {}, "%DLQ%" + name, " · ", h("span", { "data-dlq-count": msgs.length }, msgs.length), " message(s)"),
        resend, result, table(MESSAGE_HEADERS, messageRows(msgs)));
    }
    return { root, refresh: false };
  },
};

// ---- routing -------------------------------------------------------------

function route() {
  const hash = location.hash.replace(/^#\/?/, "") || "overview";
  const [path, query] = hash.split("?");
  const [view, ...rest] = path.split("/");
  return { view: views[view] ? view : "overview", name: rest.length ? decodeURIComponent(rest.join("/")) : null,
    params: new URLSearchParams(query || "") };
}

async function render() {
  clearTimeout(timer);
  const my = ++generation;
  const r = route();
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.nav === r.view);
  try {
    const { root, refresh } = await views[r.view](r.name, r.params);
    if (my !== generation) return;
    document.getElementById("view").replaceChildren(root);
    document.body.dataset.view = r.view + (r.name ? ":" + r.name : "");
    setStatus("updated " + new Date().toLocaleTimeString());
    if (refresh) timer = setTimeout(render, REFRESH_MS);
  } catch (e) {
    if (my !== generation) return;
    document.getElementById("view").replaceChildren(errorBox(e));
    document.body.dataset.view = "error";
    setStatus("error: " + e.message, true);
    timer = setTimeout(render, REFRESH_MS);
  }
}

window.addEventListener("hashchange", render);
render();
