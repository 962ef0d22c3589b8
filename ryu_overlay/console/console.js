// The ryu_overlay web console: the placement as a live graph (Cytoscape.js, vendored beside this file).
//
// Data: GET /v1/hypervisors, /v1/networks, /v1/ports, /v1/stats (and /metrics, when served, for the
// counters of the selected object). Updates: GET /v1/events read with fetch() as a server-sent event
// stream (a long poll if the answer is JSON); each event makes the console read the placement again,
// so it shows the controller's state whatever the event says. Where the controller has no
// /v1/events (404), it reads the placement every 2 s.
//
// Token (--rest-token): asked once, kept in sessionStorage (this tab only), sent as
// "Authorization: Bearer" on every request, the event stream included: that is why the stream is
// read with fetch() and not EventSource, which cannot send headers; the token never goes in a URL.
"use strict";

const POLL_MS = 2000;
const COUNTERS_MS = 5000;
const RETRY_MS = 2000;
const TOKEN_KEY = "ryu-overlay-token";
const PALETTE = ["#1a73e8", "#d93025", "#188038", "#e37400", "#9334e6", "#12b5cb", "#b06000", "#c5221f",
                 "#3949ab", "#00897b"];

const state = {
  hypervisors: new Map(), networks: new Map(), ports: new Map(), routers: new Map(), stats: {},
  metrics: null, loaded: false, tenant: "", selected: null, generation: 0,
};
let cy = null;
let abort = null;
let refreshing = null;
let refreshAgain = false;

class AuthNeeded extends Error {}

// --- requests --------------------------------------------------------------------------------

async function request(path, accept = "application/json", signal = undefined) {
  const headers = { Accept: accept };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  const resp = await fetch(path, { headers, cache: "no-store", signal });
  if (resp.status === 401) {
    askToken(token ? "The controller refused this token." : "");
    throw new AuthNeeded();
  }
  return resp;
}

async function getJson(path) {
  const resp = await request(path);
  if (!resp.ok) throw new Error(`${path} answered ${resp.status}`);
  return resp.json();
}

// --- state -----------------------------------------------------------------------------------

function byName(items) {
  return new Map(items.map((item) => [item.name, item]));
}

async function refresh() {
  // one refresh at a time; a request made meanwhile runs once more after it
  if (refreshing) { refreshAgain = true; return refreshing; }
  refreshing = (async () => {
    try {
      do {
        refreshAgain = false;
        const [h, n, p, s, r] = await Promise.all(
          [...["/v1/hypervisors", "/v1/networks", "/v1/ports", "/v1/stats"].map(getJson), getRouters()]);
        const next = { hypervisors: byName(h.hypervisors), networks: byName(n.networks), ports: byName(p.ports),
                       routers: byName(r) };
        if (state.loaded) logChanges(next);
        Object.assign(state, next, { stats: s, loaded: true });
        if (state.selected) await readMetrics();
        render();
      } while (refreshAgain);
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

async function getRouters() {
  // routers where the controller has them (a 404 from one that predates them)
  const resp = await request("/v1/routers");
  if (resp.status === 404) return [];
  if (!resp.ok) throw new Error(`/v1/routers answered ${resp.status}`);
  return (await resp.json()).routers;
}

async function refreshCounters() {
  state.stats = await getJson("/v1/stats");
  if (state.selected) await readMetrics();
  renderTotals();
  renderDetails();
}

async function readMetrics() {
  // /metrics (Prometheus text) where the controller serves it; the console works without it
  try {
    const resp = await request("/metrics", "text/plain");
    state.metrics = resp.ok ? parseMetrics(await resp.text()) : null;
  } catch (err) {
    if (err instanceof AuthNeeded) throw err;
    state.metrics = null;
  }
}

function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    const m = /^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    samples.push({ name: m[1], labels, value: m[3] });
  }
  return samples;
}

// --- keeping up: the event stream, else polling ----------------------------------------------

function setTransport(what, label) {
  const el = document.getElementById("transport");
  el.dataset.transport = what;
  el.textContent = label;
}

// As docs/rest.md advises: the latest seq first, then the state, then every event after that seq
// (one met twice changes nothing: each event only makes the console read the state again).
async function follow(generation) {
  let since = null;
  let counters = null;
  try {
    while (generation === state.generation) {
      try {
        if (since === null) {
          const first = await request("/v1/events?timeout=0", "application/json", abort.signal);
          if (first.status === 404) return await poll(generation);
          if (!first.ok) throw new Error(`/v1/events answered ${first.status}`);
          since = lastSeq(await first.json(), 0);
          await refresh();
          if (!counters) counters = setInterval(() => refreshCounters().catch(() => {}), COUNTERS_MS);
        }
        const resp = await request(`/v1/events?since=${encodeURIComponent(since)}`, "text/event-stream",
                                   abort.signal);
        if (resp.status === 404) return await poll(generation);
        if (!resp.ok) throw new Error(`/v1/events answered ${resp.status}`);
        if ((resp.headers.get("Content-Type") || "").startsWith("application/json")) {
          // a server without the stream answers the long poll: follow it that way
          setTransport("long-poll", "live: long poll");
          since = lastSeq(await resp.json(), since);
          await refresh();
          since = await longPoll(generation, since);
        } else {
          setTransport("stream", "live: event stream");
          since = await readStream(resp, since);
        }
      } catch (err) {
        if (err instanceof AuthNeeded || generation !== state.generation) return;
        setTransport("offline", "controller unreachable; retrying");
        await sleep(RETRY_MS);
      }
    }
  } finally {
    if (counters) clearInterval(counters);
  }
}

async function readStream(resp, since) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return since;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let data = false;
      for (const line of block.split("\n")) {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "id") since = val;
        else if (field === "data") data = true;
      }
      if (data) refresh().catch(() => {});
    }
  }
}

async function longPoll(generation, since) {
  while (generation === state.generation) {
    const resp = await request(`/v1/events?since=${encodeURIComponent(since)}&timeout=25`, "application/json",
                               abort.signal);
    if (!resp.ok) throw new Error(`/v1/events answered ${resp.status}`);
    const body = await resp.json();
    if ((body.events || []).length || body.resync) refresh().catch(() => {});
    since = lastSeq(body, since);
  }
  return since;
}

function lastSeq(body, since) {
  return body.last ?? since;
}

async function poll(generation) {
  setTransport("poll", `live: reading every ${POLL_MS / 1000} s`);
  while (generation === state.generation) {
    try {
      await refresh();
      setTransport("poll", `live: reading every ${POLL_MS / 1000} s`);
    } catch (err) {
      if (err instanceof AuthNeeded) return;
      setTransport("offline", "controller unreachable; retrying");
    }
    await sleep(POLL_MS);
  }
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function start() {
  state.generation += 1;
  if (abort) abort.abort();
  abort = new AbortController();
  follow(state.generation);
}

// --- the token -------------------------------------------------------------------------------

function askToken(message) {
  state.generation += 1;  // stop every loop until a token is given
  if (abort) abort.abort();
  setTransport("token", "waiting for the token");
  const dialog = document.getElementById("login");
  document.getElementById("login-error").textContent = message;
  if (!dialog.open) dialog.showModal();
}

function tokenGiven(event) {
  event.preventDefault();
  const input = document.getElementById("token");
  sessionStorage.setItem(TOKEN_KEY, input.value.trim());
  input.value = "";
  document.getElementById("login").close();
  start();
}

// --- what changed (the event list) -------------------------------------------------------------

function logChanges(next) {
  const lines = [];
  for (const kind of ["hypervisors", "networks", "ports", "routers"]) {
    const before = state[kind];
    const after = next[kind];
    for (const [name, obj] of after) {
      const old = before.get(name);
      if (!old) lines.push(`${singular(kind)} ${name} created`);
      else if (JSON.stringify(old) !== JSON.stringify(obj)) lines.push(describeChange(kind, name, old, obj));
    }
    for (const name of before.keys()) if (!after.has(name)) lines.push(`${singular(kind)} ${name} deleted`);
  }
  const list = document.getElementById("events");
  const time = new Date().toLocaleTimeString();
  for (const line of lines) {
    const li = document.createElement("li");
    li.textContent = `${time} ${line}`;
    list.prepend(li);
  }
  while (list.children.length > 40) list.lastChild.remove();
}

function describeChange(kind, name, old, obj) {
  if (kind === "ports" && old.hypervisor !== obj.hypervisor) {
    return `port ${name} moved ${old.hypervisor ?? "nowhere"} → ${obj.hypervisor ?? "nowhere"}`;
  }
  if (kind === "ports" && obj.frozen && !old.frozen) return `port ${name} frozen`;
  if (kind === "hypervisors" && old.connected !== obj.connected) {
    return `hypervisor ${name} ${obj.connected ? "connected" : "disconnected"}`;
  }
  if (kind === "hypervisors" && old.in_sync !== obj.in_sync) {
    return `hypervisor ${name} ${obj.in_sync ? "in sync" : "syncing"}`;
  }
  return `${singular(kind)} ${name} changed`;
}

function singular(kind) {
  return kind.slice(0, -1);
}

// --- the view --------------------------------------------------------------------------------

function visible() {
  const tenant = state.tenant;
  const networks = [...state.networks.values()].filter((n) => !tenant || n.tenant === tenant);
  const netNames = new Set(networks.map((n) => n.name));
  const ports = [...state.ports.values()].filter((p) => netNames.has(p.network));
  const hosting = new Set(ports.map((p) => p.hypervisor).filter(Boolean));
  const hypervisors = [...state.hypervisors.values()].filter((h) => !tenant || hosting.has(h.name));
  const routers = [...state.routers.values()].filter((r) => !tenant || r.tenant === tenant);
  return { networks, ports, hypervisors, routers };
}

function colour(name) {
  let h = 0;
  for (const c of name) h = (h * 31 + c.codePointAt(0)) >>> 0;
  return PALETTE[h % PALETTE.length];
}

function syncOf(hv) {
  if (!hv) return ["not located", "down"];
  if (hv.in_sync) return ["in sync", "in-sync"];
  if (hv.connected) return ["connected, changes not yet confirmed", "syncing"];
  return ["disconnected", "down"];
}

function tunnels(ports) {
  // a tunnel between two hypervisors that both host a port of one network (its VNI rides it)
  const hostsByNet = new Map();
  for (const p of ports) {
    if (!p.hypervisor) continue;
    if (!hostsByNet.has(p.network)) hostsByNet.set(p.network, new Set());
    hostsByNet.get(p.network).add(p.hypervisor);
  }
  const pairs = new Map();
  for (const [net, hosts] of hostsByNet) {
    const sorted = [...hosts].sort();
    for (let i = 0; i < sorted.length; i++) {
      for (let j = i + 1; j < sorted.length; j++) {
        const key = `${sorted[i]}|${sorted[j]}`;
        if (!pairs.has(key)) pairs.set(key, { a: sorted[i], b: sorted[j], vnis: [] });
        pairs.get(key).vnis.push(state.networks.get(net)?.vni ?? net);
      }
    }
  }
  return [...pairs.values()];
}

function elements() {
  const { networks, ports, hypervisors, routers } = visible();
  const hvNames = new Set(hypervisors.map((h) => h.name));
  const out = [];
  for (const h of hypervisors) {
    const [sync, cls] = syncOf(h);
    out.push({ group: "nodes", data: { id: "hv:" + h.name, kind: "hypervisors", name: h.name,
                                       label: `${h.name} · ${sync}\n${h.tunnel_ip}` }, classes: cls });
  }
  for (const n of networks) {
    out.push({ group: "nodes", data: { id: "net:" + n.name, kind: "networks", name: n.name, colour: colour(n.name),
                                       label: `${n.name}\nVNI ${n.vni} · ${n.tenant}` } });
  }
  for (const p of ports) {
    const parent = p.hypervisor && hvNames.has(p.hypervisor) ? "hv:" + p.hypervisor : undefined;
    out.push({ group: "nodes", data: { id: "port:" + p.name, kind: "ports", name: p.name, parent,
                                       colour: colour(p.network), label: p.name },
               classes: p.frozen || p.duplicate ? "alarm" : "" });
    out.push({ group: "edges", data: { id: "member:" + p.name, kind: "member", source: "port:" + p.name,
                                       target: "net:" + p.network, colour: colour(p.network) } });
  }
  const netNames = new Set(networks.map((n) => n.name));
  for (const r of routers) {
    out.push({ group: "nodes", data: { id: "router:" + r.name, kind: "routers", name: r.name,
                                       label: `${r.name}\nrouter · ${r.tenant}` } });
    r.interfaces.filter((i) => netNames.has(i.network)).forEach((i, k) => {
      out.push({ group: "edges", data: { id: `iface:${r.name}:${k}`, kind: "interface", source: "router:" + r.name,
                                         target: "net:" + i.network, label: i.ip } });
    });
    if (r.gateway && hvNames.has(r.gateway.hypervisor)) {
      out.push({ group: "edges", data: { id: `uplink:${r.name}`, kind: "uplink", source: "router:" + r.name,
                                         target: "hv:" + r.gateway.hypervisor, label: `uplink ${r.gateway.ip}` } });
    }
  }
  for (const t of tunnels(ports)) {
    if (!hvNames.has(t.a) || !hvNames.has(t.b)) continue;
    out.push({ group: "edges", data: { id: `tunnel:${t.a}|${t.b}`, kind: "tunnel", source: "hv:" + t.a,
                                       target: "hv:" + t.b, label: "VNI " + t.vnis.join(", ") } });
  }
  return out;
}

const STYLE = [
  { selector: "node", style: { label: "data(label)", "font-size": 11, "text-wrap": "wrap", color: "#1d2330" } },
  { selector: 'node[kind = "hypervisors"]', style: {
    shape: "round-rectangle", "background-color": "#eef2f8", "border-width": 2, "border-color": "#8a93a3",
    "text-valign": "top", "text-halign": "center", "font-weight": "bold", padding: 18 } },
  { selector: 'node[kind = "hypervisors"].in-sync', style: { "border-color": "#1b7f3b" } },
  { selector: 'node[kind = "hypervisors"].syncing', style: { "border-color": "#e37400", "border-style": "dashed" } },
  { selector: 'node[kind = "hypervisors"].down', style: { "border-color": "#b3261e", "border-style": "dotted" } },
  { selector: 'node[kind = "networks"]', style: {
    shape: "hexagon", width: 44, height: 38, "background-color": "data(colour)", "text-valign": "bottom",
    "text-margin-y": 4 } },
  { selector: 'node[kind = "ports"]', style: {
    width: 22, height: 22, "background-color": "data(colour)", "text-valign": "bottom", "text-margin-y": 2,
    "font-size": 10 } },
  { selector: 'node[kind = "routers"]', style: {
    shape: "round-diamond", width: 40, height: 40, "background-color": "#3c4043", "text-valign": "top",
    "text-margin-y": -4 } },
  { selector: 'edge[kind = "interface"], edge[kind = "uplink"]', style: {
    width: 2, "line-color": "#3c4043", "curve-style": "straight", label: "data(label)", "font-size": 9,
    "text-background-color": "#fff", "text-background-opacity": 1 } },
  { selector: 'edge[kind = "uplink"]', style: { "line-style": "dotted" } },
  { selector: "node.alarm", style: { "border-width": 3, "border-color": "#b3261e" } },
  { selector: 'edge[kind = "member"]', style: {
    width: 1.5, "line-color": "data(colour)", opacity: 0.45, "curve-style": "straight" } },
  { selector: 'edge[kind = "tunnel"]', style: {
    width: 3, "line-color": "#5b6b82", "line-style": "dashed", "curve-style": "unbundled-bezier",
    "control-point-weights": 0.5, "edge-distances": "node-position", label: "data(label)",
    "font-size": 10, "text-background-color": "#fff", "text-background-opacity": 1,
    "text-background-padding": 2 } },
  { selector: ":selected", style: { "border-width": 4, "border-color": "#1a73e8", "border-style": "solid" } },
];

function renderGraph() {
  const want = elements();
  const wantIds = new Set(want.map((e) => e.data.id));
  const before = cy.elements().map((e) => e.id() + ">" + (e.data("parent") ?? "")).sort().join();
  cy.batch(() => {
    cy.elements().filter((e) => !wantIds.has(e.id())).remove();
    for (const el of want) {
      const have = cy.getElementById(el.data.id);
      if (have.empty()) {
        cy.add(el);
        continue;
      }
      if (el.group === "nodes" && (have.data("parent") ?? undefined) !== el.data.parent) {
        have.move({ parent: el.data.parent ?? null });
      }
      const { parent, ...data } = el.data;
      have.data(data);
      have.classes(el.classes || "");
    }
    place();
  });
  const after = cy.elements().map((e) => e.id() + ">" + (e.data("parent") ?? "")).sort().join();
  if (after !== before) fit();
}

// Where things go: networks in a row on top, hypervisors in rows below (at most HV_ROW each), each
// with its ports in a grid inside it, tunnels as arcs under the hypervisors, ports without a
// location above their network, routers above the networks they join. Placed again on every change, so a moved port jumps to its new box.
const GAP = 64;
const HV_ROW = 6;

function place() {
  const hvs = cy.nodes('[kind = "hypervisors"]').sort((a, b) => a.data("name").localeCompare(b.data("name")));
  const byName = (a, b) => a.data("name").localeCompare(b.data("name"));
  const order = new Map();
  let x = 0;
  let y = 0;
  let rowHeight = 0;
  let width = 0;
  hvs.forEach((hv, i) => {
    if (i > 0 && i % HV_ROW === 0) {
      x = 0;
      y += rowHeight + 3 * GAP;
      rowHeight = 0;
    }
    order.set(hv.id(), i);
    const ports = hv.children().sort(byName);
    // one row up to 6 ports (the edges to the networks above then cross no port), a square beyond
    const cols = Math.min(Math.max(6, Math.ceil(Math.sqrt(ports.length))), Math.max(ports.length, 2));
    ports.forEach((p, k) => p.position({ x: x + (k % cols) * GAP, y: y + Math.floor(k / cols) * GAP }));
    if (ports.empty()) hv.position({ x: x + GAP / 2, y });
    const w = (cols - 1) * GAP;
    rowHeight = Math.max(rowHeight, Math.floor(Math.max(ports.length - 1, 0) / cols) * GAP);
    width = Math.max(width, x + w);
    x += Math.max(w, 2 * GAP) + 2.5 * GAP;  // room for the label too
  });
  const nets = cy.nodes('[kind = "networks"]').sort(byName);
  const step = nets.length > 1 ? Math.max(2 * GAP, width / (nets.length - 1)) : 0;
  const left = nets.length > 1 ? Math.min(0, (width - step * (nets.length - 1)) / 2) : width / 2;
  nets.forEach((n, i) => {
    n.position({ x: left + i * step, y: -3 * GAP });
    cy.nodes('[kind = "ports"]').filter((p) => p.isOrphan() && p.connectedEdges().targets().same(n))
      .sort(byName).forEach((p, k) => p.position({ x: left + i * step + (k - 1) * GAP / 2, y: -4.3 * GAP }));
  });
  cy.nodes('[kind = "routers"]').sort(byName).forEach((r, i) => {
    const xs = r.outgoers('node[kind = "networks"]').map((n) => n.position("x"));
    const at = xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : left + i * step;
    r.position({ x: at + (i % 2) * GAP / 2, y: -6 * GAP });
  });
  cy.edges('[kind = "tunnel"]').forEach((t) => {
    const span = Math.abs(order.get(t.data("target")) - order.get(t.data("source")));
    t.style("control-point-distances", GAP * (0.9 + 0.45 * span));
  });
}

function fit() {
  cy.fit(undefined, 30);
  if (cy.zoom() > 1.6) {
    cy.zoom(1.6);
    cy.center();
  }
}

function renderTable() {
  const body = document.querySelector("#ports tbody");
  const ports = visible().ports.sort((a, b) => a.name.localeCompare(b.name));
  const key = JSON.stringify(ports.map((p) => [p.name, p.network, p.hypervisor, p.interface, p.location_source]));
  if (body.dataset.key === key) return;  // rows are replaced only when they change
  body.dataset.key = key;
  body.replaceChildren(...ports.map((p) => {
    const tr = document.createElement("tr");
    tr.dataset.port = p.name;
    for (const [col, val] of [["name", p.name], ["network", p.network], ["hypervisor", p.hypervisor ?? "—"],
                              ["interface", p.interface ?? "—"], ["source", p.location_source ?? "—"]]) {
      const td = document.createElement("td");
      td.dataset.col = col;
      td.textContent = val;
      tr.append(td);
    }
    tr.addEventListener("click", () => select("ports", p.name));
    return tr;
  }));
}

function renderTenants() {
  const select = document.getElementById("tenant");
  const tenants = [...new Set([...state.networks.values()].map((n) => n.tenant))].sort();
  const have = [...select.options].slice(1).map((o) => o.value);
  if (JSON.stringify(have) === JSON.stringify(tenants)) return;
  select.replaceChildren(new Option("all tenants", ""), ...tenants.map((t) => new Option(t, t)));
  select.value = tenants.includes(state.tenant) ? state.tenant : "";
  state.tenant = select.value;
}

function renderTotals() {
  const s = state.stats;
  document.getElementById("totals").textContent =
    `${s.hypervisors_connected ?? 0}/${s.hypervisors ?? 0} hypervisors connected · ${s.networks ?? 0} networks · ` +
    `${s.ports_located ?? 0}/${s.ports ?? 0} ports located · ${s.flows_installed ?? 0} flows`;
}

function countersOf(kind, obj) {
  const ports = [...state.ports.values()];
  if (kind === "hypervisors") {
    const here = ports.filter((p) => p.hypervisor === obj.name);
    return { ports: here.length, networks: new Set(here.map((p) => p.network)).size,
             tunnels: tunnels(ports).filter((t) => t.a === obj.name || t.b === obj.name).length,
             "switch ports": obj.ofports ? Object.keys(obj.ofports).length : "—" };
  }
  if (kind === "networks") {
    const mine = ports.filter((p) => p.network === obj.name);
    return { ports: mine.length, "ports located": mine.filter((p) => p.hypervisor).length,
             hypervisors: new Set(mine.map((p) => p.hypervisor).filter(Boolean)).size };
  }
  if (kind === "routers") {
    return { interfaces: obj.interfaces.length, networks: new Set(obj.interfaces.map((i) => i.network)).size,
             "floating IPs": Object.keys(obj.floating_ips || {}).length,
             gateway: obj.gateway ? `${obj.gateway.hypervisor}/${obj.gateway.interface}` : "none" };
  }
  return { mobility_seq: obj.mobility_seq, "recent moves": obj.recent_moves.length, frozen: obj.frozen,
           duplicate: obj.duplicate ? `${obj.duplicate.hypervisor}/${obj.duplicate.interface}` : "no" };
}

function metricsOf(kind, obj) {
  // every sample one of whose labels names this object (its name, or a hypervisor's dpid)
  if (!state.metrics) return {};
  const keys = new Set([obj.name, obj.dpid].filter(Boolean));
  const out = {};
  for (const s of state.metrics) {
    const values = Object.values(s.labels);
    if (!values.some((v) => keys.has(v))) continue;
    const rest = Object.entries(s.labels).filter(([, v]) => !keys.has(v)).map(([k, v]) => `${k}=${v}`);
    out[s.name + (rest.length ? `{${rest.join(",")}}` : "")] = s.value;
  }
  return out;
}

function renderDetails() {
  const title = document.getElementById("details-title");
  const sync = document.getElementById("details-sync");
  const json = document.getElementById("details-json");
  let counters;
  const sel = state.selected;
  const obj = sel && state[sel.kind].get(sel.name);
  if (!obj) {
    title.textContent = "Controller (click an object)";
    sync.textContent = "";
    sync.className = "";
    json.textContent = "";
    counters = state.stats;
  } else {
    title.textContent = `${singular(sel.kind)} ${obj.name}`;
    let text;
    let cls;
    if (sel.kind === "hypervisors") [text, cls] = syncOf(obj);
    else if (sel.kind === "ports") [text, cls] = syncOf(state.hypervisors.get(obj.hypervisor));
    else {
      const nets = new Set(sel.kind === "routers" ? obj.interfaces.map((i) => i.network) : [obj.name]);
      const hosts = new Set([...state.ports.values()].filter((p) => nets.has(p.network) && p.hypervisor)
        .map((p) => p.hypervisor));
      const synced = [...hosts].filter((h) => state.hypervisors.get(h)?.in_sync).length;
      [text, cls] = [`in sync on ${synced} of ${hosts.size} hypervisors`, synced === hosts.size ? "in-sync" : "syncing"];
    }
    sync.textContent = "sync: " + text;
    sync.className = cls;
    json.textContent = JSON.stringify(obj, null, 2);
    counters = { ...countersOf(sel.kind, obj), ...metricsOf(sel.kind, obj) };
  }
  const table = document.getElementById("details-counters");
  table.replaceChildren(...Object.entries(counters).map(([k, v]) => {
    const tr = document.createElement("tr");
    const th = document.createElement("th");
    const td = document.createElement("td");
    th.textContent = k;
    td.textContent = String(v);
    tr.append(th, td);
    return tr;
  }));
}

function render() {
  renderTenants();
  renderTotals();
  renderGraph();
  renderTable();
  renderDetails();
}

function select(kind, name) {
  state.selected = kind ? { kind, name } : null;
  cy.elements().unselect();
  if (kind) cy.getElementById(`${{ hypervisors: "hv", networks: "net", ports: "port", routers: "router" }[kind]}:${name}`).select();
  renderDetails();
  if (kind) readMetrics().then(renderDetails).catch(() => {});
}

function main() {
  cy = cytoscape({ container: document.getElementById("graph"), style: STYLE,
                   boxSelectionEnabled: false });
  window.overlayGraph = cy;  // for the browser test and for curious operators (the devtools console)
  cy.on("tap", "node", (ev) => select(ev.target.data("kind"), ev.target.data("name")));
  cy.on("tap", (ev) => { if (ev.target === cy) select(null); });
  document.getElementById("tenant").addEventListener("change", (ev) => {
    state.tenant = ev.target.value;
    render();
    fit();
  });
  document.getElementById("login-form").addEventListener("submit", tokenGiven);
  start();
}

document.addEventListener("DOMContentLoaded", main);
