// Layercake dashboard: one grid cell per node, grouped by rack, coloured by
// Dsc PhysState (fill) with a Dsc RunState border; the image set's state
// shows as an outline (UPDATE: dotted amber, ERROR: amber, FATAL: red). Live from the server's
// event stream: a `snapshot` builds the grid once; each `nodes` message (a
// batch of changed node summaries, every 250 ms) touches only the cells
// that changed, so a page with thousands of nodes stays cheap.
//
// Large clusters (more than SUMMARY_FROM nodes) open in the summary view:
// one tile per rack with its counts by PhysState and convergence; a click
// on a tile expands that rack's cells. With an admin token (`#token=...`,
// or `#admin` on a root without tokens) each tile and the node detail get
// actions (power on/off, freeze/thaw), confirmed before they run.
"use strict";

const PHYS = ["PHYS_UNKNOWN", "POWER_OFF", "POWER_ON", "POWER_CYCLE", "PHYS_HANG", "PHYS_ERROR"];
const RUN = ["UNKNOWN", "INIT", "SYNC", "ERROR"];
const IMAGE = ["", "IDLE", "ACTIVE", "UPDATE", "ERROR", "FATAL"];
const cells = new Map(); // name -> {el, cls} (cells built so far)
const nodes = new Map(); // name -> latest summary
const racks = new Map(); // rack -> {names: [], phys: [..6], ok, fz, tile, grid, open}
const dirtyRacks = new Set();
const SUMMARY_FROM = 2000;
let summary = false;
let selected = null;
let detailTimer = null;
let paintQueued = false;

const $ = (id) => document.getElementById(id);
// A root run with `--api-tokens` needs a token: open the page as
// http://HOST/#token=TOKEN. A fragment never leaves the browser; the token
// goes with each request as `access_token` (EventSource cannot set headers).
const FRAGMENT = new URLSearchParams(location.hash.slice(1));
const TOKEN = FRAGMENT.get("token") || "";
const ADMIN = TOKEN !== "" || FRAGMENT.has("admin");
const authed = (u) => TOKEN ? u + (u.includes("?") ? "&" : "?") + "access_token=" + encodeURIComponent(TOKEN) : u;
// Fetches send the token in the Authorization header; the root accepts
// `access_token` only on the event stream.
const headers = () => TOKEN ? { headers: { Authorization: "Bearer " + TOKEN } } : {};

function cellClass(s) {
  let c = "cell p" + s.dp + " r" + s.dr + " i" + (s.di || 0);
  if (!s.ok) c += " pending";
  if (s.fz) c += " frozen";
  if (s.n === selected) c += " sel";
  return c;
}

function setCell(s) {
  const c = cells.get(s.n);
  if (!c) return false;
  const cls = cellClass(s);
  if (c.cls !== cls) {
    c.cls = cls;
    c.el.className = cls;
    c.el.dataset.phys = PHYS[s.dp] || "?";
    c.el.dataset.run = RUN[s.dr] || "?";
    c.el.dataset.image = IMAGE[s.di || 0] || "?";
    c.el.title = s.n + ": " + (PHYS[s.dp] || "?") + " / " + (RUN[s.dr] || "?") +
      (s.di ? " / images " + (IMAGE[s.di] || "?") : "") +
      (s.ok ? "" : " (wants " + (PHYS[s.cp] || "any") + " / " + (RUN[s.cr] || "any") + ")");
  }
  return true;
}

function rackOf(name) {
  const s = nodes.get(name);
  return racks.get(s ? s.r : "");
}

// Adds (sign 1) or removes (sign -1) a summary from its rack's counts.
function count(s, sign) {
  const r = racks.get(s.r);
  if (!r) return;
  r.phys[s.dp] = (r.phys[s.dp] || 0) + sign;
  if (s.ok) r.ok += sign;
  if (s.fz) r.fz += sign;
  dirtyRacks.add(s.r);
}

function cellGrid(rack) {
  const r = racks.get(rack);
  const grid = document.createElement("div");
  grid.className = "cells";
  // Square-ish racks: 10 columns up to 100 nodes, wider beyond.
  const n = r.names.length;
  const cols = n <= 100 ? 10 : Math.ceil(Math.sqrt(n * 2));
  grid.style.gridTemplateColumns = `repeat(${cols}, 14px)`;
  for (const name of r.names) {
    const el = document.createElement("i");
    el.dataset.n = name;
    grid.appendChild(el);
    cells.set(name, { el, cls: "" });
    setCell(nodes.get(name));
  }
  return grid;
}

function actions(label, target, short) {
  const bar = document.createElement("div");
  bar.className = "actions";
  for (const [text, brief, op] of [["power on", "on", "on"], ["power off", "off", "off"], ["freeze", "frz", "freeze"], ["thaw", "thaw", "thaw"]]) {
    const b = document.createElement("button");
    b.textContent = short ? brief : text;
    b.title = text + " " + label;
    b.dataset.op = op;
    b.addEventListener("click", (e) => { e.stopPropagation(); act(op, label, target); });
    bar.appendChild(b);
  }
  return bar;
}

function rackTile(rack) {
  const r = racks.get(rack);
  const box = document.createElement("div");
  box.className = "rack";
  box.dataset.rack = rack;
  const h = document.createElement("h2");
  h.textContent = rack || "(no rack)";
  const n = document.createElement("span");
  n.className = "n";
  h.appendChild(n);
  box.appendChild(h);
  r.tile = box;
  r.head = n;
  if (summary) {
    const bar = document.createElement("div");
    bar.className = "bar";
    box.appendChild(bar);
    r.bar = bar;
    const txt = document.createElement("div");
    txt.className = "counts";
    box.appendChild(txt);
    r.txt = txt;
    box.classList.add("summary");
    box.addEventListener("click", (e) => {
      if (e.target.dataset && e.target.dataset.n) return;
      toggleRack(rack);
    });
  } else {
    r.grid = cellGrid(rack);
    box.appendChild(r.grid);
  }
  if (ADMIN) box.appendChild(actions("rack " + rack, { group: rack }, summary));
  paintRack(rack);
  return box;
}

function toggleRack(rack) {
  const r = racks.get(rack);
  r.open = !r.open;
  if (r.open) {
    r.grid = cellGrid(rack);
    r.tile.appendChild(r.grid);
    r.tile.classList.add("open");
  } else {
    for (const name of r.names) cells.delete(name);
    if (r.grid) r.grid.remove();
    r.grid = null;
    r.tile.classList.remove("open");
  }
}

function paintRack(rack) {
  const r = racks.get(rack);
  if (!r || !r.tile) return;
  const total = r.names.length;
  // Summary tiles: converged/total; cell racks: the node count.
  r.head.textContent = summary ? " · " + r.ok + "/" + total + " ok" : " · " + total;
  r.head.title = summary ? "converged / nodes" : "nodes";
  r.tile.dataset.converged = r.ok;
  r.tile.dataset.total = total;
  if (!summary) return;
  const parts = [];
  r.bar.replaceChildren();
  for (let p = 0; p < PHYS.length; p++) {
    const k = r.phys[p] || 0;
    if (!k) continue;
    const seg = document.createElement("span");
    seg.className = "seg p" + p;
    seg.style.width = (100 * k / total) + "%";
    seg.title = PHYS[p] + ": " + k;
    r.bar.appendChild(seg);
    parts.push(PHYS[p].replace("POWER_", "").replace("PHYS_", "").toLowerCase() + " " + k);
  }
  r.txt.textContent = parts.join(" · ") + (r.fz ? " · frozen " + r.fz : "");
  for (let p = 0; p < PHYS.length; p++) r.tile.dataset["p" + p] = r.phys[p] || 0;
}

function paintDirty() {
  paintQueued = false;
  for (const rack of dirtyRacks) paintRack(rack);
  dirtyRacks.clear();
}

function build(snapshot) {
  nodes.clear();
  racks.clear();
  cells.clear();
  dirtyRacks.clear();
  for (const s of snapshot.nodes) {
    nodes.set(s.n, s);
    if (!racks.has(s.r)) racks.set(s.r, { names: [], phys: [], ok: 0, fz: 0, open: false });
    racks.get(s.r).names.push(s.n);
    count(s, 1);
  }
  if (!build.chosen) summary = snapshot.nodes.length > SUMMARY_FROM;
  document.body.classList.toggle("summary-view", summary);
  $("view").textContent = summary ? "show all cells" : "summary view";
  const root = document.createDocumentFragment();
  for (const rack of racks.keys()) root.appendChild(rackTile(rack));
  dirtyRacks.clear();
  $("racks").replaceChildren(root);
  counters(snapshot.counters);
}

function counters(c) {
  if (!c) return;
  $("node-count").textContent = c.nodes;
  $("converged-count").textContent = c.converged + "/" + c.nodes;
  for (const r of RUN) $("count-" + r).textContent = (c.run && c.run[r]) || 0;
  $("count-frozen").textContent = c.frozen || 0;
}

function update(msg) {
  let touchedSelected = false;
  for (const s of msg.nodes) {
    const old = nodes.get(s.n);
    if (old) count(old, -1);
    nodes.set(s.n, s);
    count(s, 1);
    setCell(s);
    if (s.n === selected) touchedSelected = true;
  }
  counters(msg.counters);
  if (!paintQueued && dirtyRacks.size) {
    paintQueued = true;
    requestAnimationFrame(paintDirty);
  }
  if (touchedSelected) scheduleDetail();
}

// Admin actions: a Cfg write (or freeze/thaw) on a rack or a node,
// confirmed first; the root answers 401/403 to a token that may not.
async function act(op, label, target) {
  const what = { on: "power on", off: "power off", freeze: "freeze", thaw: "thaw" }[op];
  const n = target.group !== undefined ? (racks.get(target.group) || { names: [] }).names.length : 1;
  if (!window.confirm(`${what} ${label} (${n} node${n === 1 ? "" : "s"})?`)) return;
  const body = Object.assign({}, target);
  let url = "/api/v1/cfg";
  if (op === "on" || op === "off") body.values = { "/PhysState": op === "on" ? "POWER_ON" : "POWER_OFF" };
  else url = "/api/v1/" + op;
  const headers = { "content-type": "application/json" };
  if (TOKEN) headers.authorization = "Bearer " + TOKEN;
  let msg;
  try {
    const r = await fetch(url, { method: "POST", headers, body: JSON.stringify(body) });
    const j = await r.json().catch(() => ({}));
    msg = r.ok ? `${what} ${label}: ${j.matched} matched, ${j.changed} changed`
      : `${what} ${label} refused: ${(j.error && j.error.message) || r.status}`;
  } catch (e) {
    msg = `${what} ${label} failed: ${e}`;
  }
  $("status").textContent = msg;
}

async function resync() {
  try {
    const r = await fetch("/api/v1/snapshot", headers());
    if (r.ok) build(await r.json());
  } catch (e) { /* the stream reconnects by itself */ }
}

function connect() {
  const es = new EventSource(authed("/api/v1/events?types=snapshot,nodes,lagged"));
  es.addEventListener("open", () => { $("conn").className = "conn up"; $("conn").textContent = "live"; });
  es.addEventListener("error", () => { $("conn").className = "conn down"; $("conn").textContent = "reconnecting"; });
  es.addEventListener("snapshot", (e) => build(JSON.parse(e.data)));
  es.addEventListener("nodes", (e) => update(JSON.parse(e.data)));
  es.addEventListener("lagged", () => resync());
}

function scheduleDetail() {
  if (detailTimer) return;
  detailTimer = setTimeout(() => { detailTimer = null; showDetail(selected); }, 300);
}

async function showDetail(name) {
  if (!name) return;
  let d;
  try {
    const r = await fetch("/api/v1/nodes/" + encodeURIComponent(name), headers());
    if (!r.ok) return;
    d = await r.json();
  } catch (e) { return; }
  if (name !== selected) return;
  $("detail").hidden = false;
  $("detail-name").textContent = d.name;
  $("detail-meta").textContent = "rack " + d.rack + " · " + (d.converged ? "converged" : "converging") +
    (d.frozen ? " · frozen" : "");
  const old = $("detail-actions");
  if (ADMIN) old.replaceChildren(actions("node " + d.name, { hosts: d.name }));
  const chain = $("detail-chain");
  chain.replaceChildren();
  if (d.chain === null) {
    chain.append(Object.assign(document.createElement("li"), { textContent: "no chain reaches Cfg", className: "none" }));
  } else if (d.chain.length === 0) {
    chain.append(Object.assign(document.createElement("li"), { textContent: "(nothing to do: converged)", className: "none" }));
  } else {
    for (const step of d.chain) chain.append(Object.assign(document.createElement("li"), { textContent: step }));
  }
  const urls = new Set([...Object.keys(d.cfg || {}), ...Object.keys(d.dsc || {})]);
  const body = $("detail-values").tBodies[0];
  body.replaceChildren();
  for (const u of [...urls].sort()) {
    const tr = document.createElement("tr");
    const c = (d.cfg || {})[u] ?? "", s = (d.dsc || {})[u] ?? "";
    if (c !== s) tr.className = "diff";
    for (const t of [u.replace("type.googleapis.com/", ""), c, s]) {
      tr.append(Object.assign(document.createElement("td"), { textContent: t }));
    }
    body.append(tr);
  }
}

function select(name) {
  const old = selected && cells.get(selected);
  selected = name;
  if (old) { old.el.classList.remove("sel"); old.cls = old.el.className; }
  const c = name && cells.get(name);
  if (c) { c.el.classList.add("sel"); c.cls = c.el.className; }
  if (!name) $("detail").hidden = true;
  showDetail(name);
}

$("racks").addEventListener("click", (e) => {
  const n = e.target.dataset && e.target.dataset.n;
  if (n) select(n);
});
$("close").addEventListener("click", () => select(null));
$("view").addEventListener("click", () => {
  build.chosen = true;
  summary = !summary;
  resync();
});
$("search").addEventListener("input", (e) => {
  const q = e.target.value.trim();
  // In the summary view, a full name opens its rack.
  if (summary && nodes.has(q)) {
    const r = rackOf(q);
    if (r && !r.open) toggleRack(nodes.get(q).r);
  }
  for (const [name, c] of cells) {
    const hit = q !== "" && name.includes(q);
    if (c.el.classList.contains("hit") !== hit) c.el.classList.toggle("hit", hit);
  }
  if (cells.has(q)) select(q);
});

connect();
