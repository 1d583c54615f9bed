// Layercake dashboard: one grid cell per node, grouped by rack, coloured by
// Dsc PhysState (fill) with a Dsc RunState border; the image set's state
// shows as an outline (UPDATE: dotted amber, ERROR: amber, FATAL: red). Live from the server's
// event stream: a `snapshot` builds the grid once; each `nodes` message (a
// batch of changed node summaries, every 250 ms) touches only the cells
// that changed, so a page with thousands of nodes stays cheap.
"use strict";

const PHYS = ["PHYS_UNKNOWN", "POWER_OFF", "POWER_ON", "POWER_CYCLE", "PHYS_HANG", "PHYS_ERROR"];
const RUN = ["UNKNOWN", "INIT", "SYNC", "ERROR"];
const IMAGE = ["", "IDLE", "ACTIVE", "UPDATE", "ERROR", "FATAL"];
const cells = new Map(); // name -> {el, cls}
let selected = null;
let detailTimer = null;

const $ = (id) => document.getElementById(id);
// A root run with `--api-tokens` needs a token: open the page as
// http://HOST/#token=TOKEN. A fragment never leaves the browser; the token
// goes with each request as `access_token` (EventSource cannot set headers).
const TOKEN = new URLSearchParams(location.hash.slice(1)).get("token") || "";
const authed = (u) => TOKEN ? u + (u.includes("?") ? "&" : "?") + "access_token=" + encodeURIComponent(TOKEN) : u;

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

function build(snapshot) {
  const racks = new Map();
  for (const s of snapshot.nodes) {
    if (!racks.has(s.r)) racks.set(s.r, []);
    racks.get(s.r).push(s);
  }
  const root = document.createDocumentFragment();
  cells.clear();
  for (const [rack, nodes] of racks) {
    const box = document.createElement("div");
    box.className = "rack";
    const h = document.createElement("h2");
    h.textContent = rack || "(no rack)";
    const n = document.createElement("span");
    n.className = "n";
    n.textContent = " · " + nodes.length;
    h.appendChild(n);
    const grid = document.createElement("div");
    grid.className = "cells";
    // Square-ish racks: 10 columns up to 100 nodes, wider beyond.
    const cols = nodes.length <= 100 ? 10 : Math.ceil(Math.sqrt(nodes.length * 2));
    grid.style.gridTemplateColumns = `repeat(${cols}, 14px)`;
    for (const s of nodes) {
      const el = document.createElement("i");
      el.dataset.n = s.n;
      grid.appendChild(el);
      cells.set(s.n, { el, cls: "" });
      setCell(s);
    }
    box.append(h, grid);
    root.appendChild(box);
  }
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
    setCell(s);
    if (s.n === selected) touchedSelected = true;
  }
  counters(msg.counters);
  if (touchedSelected) scheduleDetail();
}

async function resync() {
  try {
    const r = await fetch(authed("/api/v1/snapshot"));
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
    const r = await fetch(authed("/api/v1/nodes/" + encodeURIComponent(name)));
    if (!r.ok) return;
    d = await r.json();
  } catch (e) { return; }
  if (name !== selected) return;
  $("detail").hidden = false;
  $("detail-name").textContent = d.name;
  $("detail-meta").textContent = "rack " + d.rack + " · " + (d.converged ? "converged" : "converging") +
    (d.frozen ? " · frozen" : "");
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
$("search").addEventListener("input", (e) => {
  const q = e.target.value.trim();
  for (const [name, c] of cells) {
    const hit = q !== "" && name.includes(q);
    if (c.el.classList.contains("hit") !== hit) c.el.classList.toggle("hit", hit);
  }
  if (cells.has(q)) select(q);
});

connect();
