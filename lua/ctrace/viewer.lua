-- ctrace.viewer - a self-contained HTML page for a graph JSON (no CDN, no network), and a static
-- SVG of a graph for READMEs.
--
--   viewer.write(json_path [, html_path] [, {dashboards = table}])   -> html_path
--   viewer.page_parts(title, dashboards) -> the page before and after the graph JSON (g:save_json
--       streams a graph's page with them through g:save_page)
--       nodes laid out in a band per layer (labelled; tokens at the bottom, logits at the top) and
--       a column per position (a cell's nodes in rows inside its column); edges drawn on a canvas
--       the size of the view that follows the scroll (half a million of them, and graphs wider
--       than a canvas may be), coloured by sign; hover for label, activation and influence;
--       click for a node's strongest inputs and outputs, its edges highlighted over the rest (an
--       edge split by heads, from g:prune{heads}: click it for its heads, and a head for its QK
--       pairs when the graph holds them, g:prune{qk}); pin
--       nodes (the pin button or shift-click) and show only the pinned subgraph; group pinned
--       nodes into named supernodes; pins and supernodes read from the graph JSON's qParams and
--       saved back into it (circuit-tracer's form: pinnedIds, supernodes [name, id, ...]) by the
--       save link; an edge slider hides edges below a |weight| (its label gives the weight and
--       its share of the largest) and a node-threshold slider keeps the nodes carrying a share
--       of the influence (as pruning does); the feature dashboard (top activating tokens, top
--       logits) where one is given ({[layer .. "_" .. feature] = {top = {{text, activation}...},
--       logits = {...}}}). Opened with ?selftest, the page clicks its first feature node and
--       writes what it found into <pre id="selftest"> (used by the tests).
--   viewer.svg(json_path, svg_path)   the same layout as a static picture
local ct = require "ctrace"

local M = {}

local function read(path)
  local f = io.open(path, "rb")
  if not f then error("NOT_FOUND: cannot read " .. path, 3) end
  local s = f:read("*a")
  f:close()
  return s
end

local write = ct.write_file

local PAGE = [==[<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>%TITLE%</title>
<style>
body { font: 13px sans-serif; margin: 0; display: flex; height: 100vh; }
#main { flex: 1; overflow: auto; position: relative; }
#edges { position: absolute; left: 0; top: 0; }
#graph { position: absolute; left: 0; top: 0; }
#side { width: 360px; border-left: 1px solid #ccc; padding: 8px; overflow: auto; }
svg text { font-size: 10px; fill: #333; }
svg text.axis { fill: #777; }
.node { stroke: #333; stroke-width: 0.5; cursor: pointer; }
.node.pinned { stroke: #000; stroke-width: 2.5; }
.node.selected { stroke: #f0a; stroke-width: 3; }
.hidden { display: none; }
table { border-collapse: collapse; width: 100%; } td { padding: 1px 4px; border-bottom: 1px solid #eee; }
button { margin: 2px; } h3 { margin: 6px 0 3px; }
.sn { fill: none; stroke: #888; stroke-dasharray: 4 3; }
</style></head><body>
<div id="main"><canvas id="edges"></canvas><svg id="graph" xmlns="http://www.w3.org/2000/svg"></svg></div>
<div id="side">
  <div><b id="title"></b></div>
  <div id="stats"></div>
  <div>edges with |weight| &ge; <span id="thr-label">0</span><br>
    <input id="thr" type="range" min="0" max="1" step="0.01" value="0" style="width:100%"></div>
  <div>node threshold <span id="nthr-label">1</span> (keep the nodes carrying this share of influence)<br>
    <input id="nthr" type="range" min="0.05" max="1" step="0.01" value="1" style="width:100%"></div>
  <div><button id="pin">pin selected</button><button id="subgraph">pinned subgraph</button>
    <button id="all">whole graph</button><button id="group">group pinned</button><button id="clear">unpin all</button>
    <a id="save" href="#" download="graph.json">save pins and supernodes</a></div>
  <div id="hover" style="min-height:3em;color:#555"></div>
  <div id="details"></div>
  <h3>Supernodes</h3><div id="supernodes">none</div>
  <pre id="selftest"></pre>
</div>
<script type="application/json" id="graph-data">%DATA%</script>
<script type="application/json" id="dashboards">%DASH%</script>
<script>
window.ctraceErrors = [];
window.addEventListener("error", e => window.ctraceErrors.push(String(e.message)));
</script>
<script>
"use strict";
const data = JSON.parse(document.getElementById("graph-data").textContent);
const dash = JSON.parse(document.getElementById("dashboards").textContent);
const NS = "http://www.w3.org/2000/svg";
const svg = document.getElementById("graph"), canvas = document.getElementById("edges");
const byId = new Map(data.nodes.map(n => [n.node_id, n]));
// pins and supernodes: circuit-tracer's qParams (pinnedIds; supernodes as [name, id, id, ...])
const qp = data.qParams || {};
const pinned = new Set((Array.isArray(qp.pinnedIds) ? qp.pinnedIds : String(qp.pinnedIds || "").split(","))
  .filter(id => byId.has(id)));
const supernodes = (Array.isArray(qp.supernodes) ? qp.supernodes : [])
  .filter(s => Array.isArray(s) && s.length > 1).map(s => ({ name: String(s[0]), members: s.slice(1).filter(id => byId.has(id)) }));
let selected = null;
const layerOf = n => n.feature_type === "embedding" ? -1 : (parseInt(n.layer, 10) || 0);   // a bad layer: 0, drawn
const layers = [...new Set(data.nodes.map(layerOf))].sort((a, b) => a - b);
const logitLayer = data.nodes.filter(n => n.feature_type === "logit").map(layerOf)[0];
const nPos = data.metadata.prompt_tokens.length;
// layout: a band per layer (tokens at the bottom, logits at the top), a column per position; the
// nodes of a cell in rows inside their column, the most influential first, so no cell spills
// into its neighbours
const cells = new Map();
for (const n of data.nodes) {
  const k = layerOf(n) + "/" + n.ctx_idx;
  if (!cells.has(k)) cells.set(k, []);
  cells.get(k).push(n);
}
const colW = Math.max(70, Math.min(160, 12000 / Math.max(1, nPos)));
let maxRows = 1;
for (const list of cells.values()) maxRows = Math.max(maxRows, Math.ceil(list.length / Math.max(1, Math.floor((colW - 8) / 9))));
const bandH = Math.max(60, Math.min(200, maxRows * 9 + 16));
const left = 60, W = left + nPos * colW + 20, H = layers.length * bandH + 20;
svg.setAttribute("width", W); svg.setAttribute("height", H + 40);
const bandY = l => H - (layers.indexOf(l) + 0.5) * bandH;
for (const [k, list] of cells) {
  const [l, p] = k.split("/").map(Number);
  const perRow = Math.max(1, Math.floor((colW - 8) / 9)), rows = Math.ceil(list.length / perRow);
  const dy = Math.min(9, (bandH - 12) / Math.max(1, rows - 1));
  list.sort((a, b) => (a.influence ?? 1) - (b.influence ?? 1));
  list.forEach((n, i) => {
    const row = Math.floor(i / perRow), inRow = Math.min(perRow, list.length - row * perRow), c = i % perRow;
    n.x = left + p * colW + colW / 2 + (c - (inRow - 1) / 2) * 9;
    n.y = bandY(l) + (row - (rows - 1) / 2) * dy;
  });
}
function text(x, y, s, anchor, cls) {
  const t = document.createElementNS(NS, "text");
  t.setAttribute("x", x); t.setAttribute("y", y); t.setAttribute("text-anchor", anchor);
  if (cls) t.setAttribute("class", cls);
  t.textContent = s;
  svg.appendChild(t);
}
for (let p = 0; p < nPos; p++) text(left + (p + 0.5) * colW, H + 30, data.metadata.prompt_tokens[p], "middle");
for (const l of layers) text(left - 6, bandY(l) + 3, l === -1 ? "Emb" : l === logitLayer ? "Logit" : "L" + l, "end", "axis");
// edges on a canvas (a line element each would not hold half a million); the largest weight by a
// loop (Math.max(...list) takes no more arguments than the engine's stack holds)
let maxW = 1e-12;
for (const l of data.links) maxW = Math.max(maxW, Math.abs(l.weight));
const links = data.links.map(l => ({ s: byId.get(l.source), t: byId.get(l.target), w: l.weight, l }));
let drawn = 0, highlighted = 0, lastVisible = () => true, lastThr = 0, pending = false;
const ctx = canvas.getContext("2d"), main = document.getElementById("main");
// The canvas covers only the visible part of the graph and follows the scroll (a canvas the size of
// a long prompt's graph, past 32,767 pixels a side, would draw nothing); edges outside the view
// are skipped, those crossing it clipped by the canvas.
function drawEdges(visible, thr) {
  lastVisible = visible, lastThr = thr;
  const sl = main.scrollLeft, st = main.scrollTop;
  const cw = Math.min(W, main.clientWidth || 1200), ch = Math.min(H + 40, main.clientHeight || 800);
  if (canvas.width !== cw || canvas.height !== ch) { canvas.width = cw; canvas.height = ch; }
  canvas.style.left = sl + "px"; canvas.style.top = st + "px";
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, cw, ch);
  ctx.setTransform(1, 0, 0, 1, -sl, -st);
  const out = e => Math.max(e.s.x, e.t.x) < sl || Math.min(e.s.x, e.t.x) > sl + cw ||
                   Math.max(e.s.y, e.t.y) < st || Math.min(e.s.y, e.t.y) > st + ch;
  drawn = highlighted = 0;
  const mine = [];
  for (const sign of [1, -1]) {   // batched by colour: one path per sign
    ctx.beginPath();
    for (const e of links) {
      if ((e.w >= 0) !== (sign > 0) || !e.s || !e.t || Math.abs(e.w) < thr || !visible(e.s) || !visible(e.t)) continue;
      drawn++;
      if (selected && (e.s === selected || e.t === selected)) { mine.push(e); continue; }
      if (out(e)) continue;
      ctx.moveTo(e.s.x, e.s.y); ctx.lineTo(e.t.x, e.t.y);
    }
    ctx.strokeStyle = sign > 0 ? "#1f77b4" : "#d62728";
    ctx.globalAlpha = selected ? 0.08 : 0.35;
    ctx.lineWidth = 0.6;
    ctx.stroke();
  }
  ctx.globalAlpha = 0.9;   // the selected node's edges, on top, width by weight
  for (const e of mine) {
    ctx.beginPath(); ctx.moveTo(e.s.x, e.s.y); ctx.lineTo(e.t.x, e.t.y);
    ctx.strokeStyle = e.w >= 0 ? "#1f77b4" : "#d62728";
    ctx.lineWidth = 0.8 + 3 * Math.abs(e.w) / maxW;
    ctx.stroke();
    highlighted++;
  }
  ctx.globalAlpha = 1;
}
// scrolling redraws the edges once a frame
main.addEventListener("scroll", () => {
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => { pending = false; drawEdges(lastVisible, lastThr); });
});
const colors = { "cross layer transcoder": "#9ecae1", "mlp reconstruction error": "#bbbbbb", "embedding": "#a1d99b", "logit": "#fdae6b" };
const nodeEls = data.nodes.map(n => {
  const c = document.createElementNS(NS, "circle");
  c.setAttribute("class", "node"); c.setAttribute("cx", n.x); c.setAttribute("cy", n.y);
  c.setAttribute("r", n.feature_type === "cross layer transcoder" ? 3.5 : 4.5);
  c.setAttribute("fill", colors[n.feature_type] || "#ccc");
  c.dataset.id = n.node_id;
  const title = document.createElementNS(NS, "title");
  title.textContent = n.node_id + (n.clerp ? " " + n.clerp : "");
  c.appendChild(title);
  c.addEventListener("mouseenter", () => { document.getElementById("hover").textContent = describe(n); });
  c.addEventListener("click", ev => { if (ev.shiftKey) togglePin(n); select(n); });
  n.el = c;
  if (pinned.has(n.node_id)) c.classList.add("pinned");
  svg.appendChild(c);
  return c;
});
function fmt(x) { return x === null || x === undefined ? "-" : (+x).toPrecision(4); }
function describe(n) {
  return n.node_id + " (" + n.feature_type + ")" + (n.clerp ? ": " + n.clerp : "") +
    " activation " + fmt(n.activation) + ", influence " + fmt(n.influence);
}
// links split by attention heads (ctrace's "heads", "residual", "multi_hop" fields) and heads'
// scores split into QK pairs (ctrace's "qk": layer, head, query and key positions)
// (a file may come from anyone: entries that are not what ctrace writes are left out, every value
// shown goes through escapeHtml or Number)
const num = x => (typeof x === "number" && isFinite(x)) ? x : NaN;
const qkBy = new Map((Array.isArray(data.qk) ? data.qk : [])
  .filter(q => q && typeof q === "object" && Array.isArray(q.pairs))
  .map(q => [num(q.layer) + "/" + num(q.head) + "/" + num(q.query) + "/" + num(q.key), q]));
const headsOf = l => Array.isArray(l.heads) ? l.heads.filter(x => x && typeof x === "object") : [];
let shown = [];   // the links of the edge tables shown, by their rows' data-i
function edgeTable(title, list, key) {
  list.sort((a, b) => Math.abs(b.weight) - Math.abs(a.weight));
  let h = "<h3>" + title + " (" + list.length + ")</h3><table>";
  for (const l of list.filter(l => byId.has(l[key])).slice(0, 10)) {   // a link to no node of the file: left out
    const o = byId.get(l[key]), i = shown.push(l) - 1;
    const hs = headsOf(l), via = hs.length ? "via " + num(hs[0].layer) + "." + num(hs[0].head) : "";
    h += "<tr class=\"link" + (hs.length ? " split" : "") + "\" data-i=\"" + i + "\"><td>" + escapeHtml(o.node_id) + "</td><td>" +
      escapeHtml(o.clerp || "") + "</td><td>" + fmt(l.weight) + "</td><td>" + via + "</td></tr>";
  }
  return h + "</table>";
}
function showHeads(l) {
  const s = byId.get(l.source), t = byId.get(l.target);
  let h = "<h3>Heads of " + escapeHtml(l.source) + " &rarr; " + escapeHtml(l.target) + "</h3><div>edge " + fmt(l.weight) +
    ": residual " + fmt(l.residual) + ", multi-hop " + fmt(l.multi_hop) + "; one hop through</div><table>";
  for (const x of headsOf(l)) {
    const k = num(x.layer) + "/" + num(x.head) + "/" + num(t.ctx_idx) + "/" + num(s.ctx_idx), q = qkBy.get(k);
    h += "<tr class=\"head" + (q ? " qk" : "") + "\" data-q=\"" + (q ? k : "") + "\"><td>layer " + num(x.layer) + " head " +
      num(x.head) + "</td><td>" + fmt(x.weight) + "</td><td>" + (q ? "why it attends &rsaquo;" : "") + "</td></tr>";
  }
  document.getElementById("heads").innerHTML = h + "</table>";
  document.getElementById("qkpairs").innerHTML = "";
}
function showQK(q) {
  let h = "<h3>QK of layer " + num(q.layer) + " head " + num(q.head) + ", position " + num(q.query) + " to " + num(q.key) +
    "</h3><div>score " + fmt(q.score) + ", attention " + fmt(q.prob) +
    "</div><table><tr><td>query side</td><td>key side</td><td>term</td><td>shift</td></tr>";
  for (const x of q.pairs.filter(x => x && typeof x === "object"))
    h += "<tr><td>" + escapeHtml(x.query) + "</td><td>" + escapeHtml(x.key) + "</td><td>" + fmt(x.value) + "</td><td>" + fmt(x.shift) + "</td></tr>";
  document.getElementById("qkpairs").innerHTML = h + "</table>";
}
document.getElementById("details").addEventListener("click", ev => {
  const row = ev.target.closest("tr.link.split"), head = ev.target.closest("tr.head.qk");
  if (row) showHeads(shown[+row.dataset.i]);
  if (head) showQK(qkBy.get(head.dataset.q));
});
function escapeHtml(s) { return String(s).replace(/[&<>"]/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]); }
function select(n) {
  if (selected) selected.el.classList.remove("selected");
  selected = n; n.el.classList.add("selected");
  let h = "<h3>" + escapeHtml(n.node_id) + "</h3><div>" + escapeHtml(describe(n)) + "</div>";
  const d = n.feature_type === "cross layer transcoder" && dash[n.layer + "_" + featureIndex(n)];
  if (d) {
    h += "<h3>Top activations</h3><table>" + (d.top || []).slice(0, 8).map(t => "<tr><td>" + escapeHtml(t[0]) + "</td><td>" + fmt(t[1]) + "</td></tr>").join("") + "</table>";
    h += "<h3>Top logits</h3><div>" + (d.logits || []).slice(0, 8).map(escapeHtml).join(", ") + "</div>";
  }
  shown = [];
  h += edgeTable("Strongest inputs", data.links.filter(l => l.target === n.node_id), "source");
  h += edgeTable("Strongest outputs", data.links.filter(l => l.source === n.node_id), "target");
  document.getElementById("details").innerHTML = h + "<div id=\"heads\"></div><div id=\"qkpairs\"></div>";
  applyView(onlyPinned);
}
function featureIndex(n) { return n.node_id.split("_")[1]; }
function togglePin(n) {
  if (pinned.has(n.node_id)) pinned.delete(n.node_id); else pinned.add(n.node_id);
  n.el.classList.toggle("pinned", pinned.has(n.node_id));
}
// a node is kept by the node threshold q when its cumulative influence rank fraction is <= q
// (tokens and logits always)
function keptNode(n, q) {
  return n.influence === null || n.influence === undefined || n.feature_type === "embedding" || n.influence <= q;
}
function applyView(only) {
  const share = parseFloat(document.getElementById("thr").value), thr = share * maxW;
  const q = parseFloat(document.getElementById("nthr").value);
  document.getElementById("thr-label").textContent = fmt(thr) + " (" + Math.round(share * 100) + "% of the largest, " + fmt(maxW) + ")";
  document.getElementById("nthr-label").textContent = q.toFixed(2);
  const visible = n => keptNode(n, q) && (!only || pinned.has(n.node_id));
  drawEdges(visible, thr);
  for (const n of data.nodes) n.el.classList.toggle("hidden", !visible(n));
  document.getElementById("stats").textContent = data.nodes.length + " nodes, " + data.links.length + " edges (" + drawn + " shown)";
}
// the graph JSON with the current pins and supernodes in its qParams, as circuit-tracer's viewer saves them
function qParamsNow() {
  return Object.assign({}, qp, { pinnedIds: [...pinned], supernodes: supernodes.map(s => [s.name, ...s.members]) });
}
// (made when the link is clicked: the JSON of half a million links is not written at every pin)
document.getElementById("save").addEventListener("click", ev => {
  const a = ev.currentTarget;
  if (a.href.startsWith("blob:")) URL.revokeObjectURL(a.href);
  const strip = (k, v) => (k === "el" || k === "x" || k === "y") ? undefined : v;   // the layout's own fields
  a.href = URL.createObjectURL(new Blob([JSON.stringify(Object.assign({}, data, { qParams: qParamsNow() }), strip)],
                                        { type: "application/json" }));
  a.download = (data.metadata.slug || "graph") + ".json";
});
function drawSupernodes() {
  for (const r of svg.querySelectorAll("rect.sn")) r.remove();
  for (const s of supernodes) {
    const members = s.members.map(id => byId.get(id));
    if (!members.length) continue;
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (const m of members) { x0 = Math.min(x0, m.x); y0 = Math.min(y0, m.y); x1 = Math.max(x1, m.x); y1 = Math.max(y1, m.y); }
    const r = document.createElementNS(NS, "rect");
    r.setAttribute("class", "sn");
    r.setAttribute("x", x0 - 8); r.setAttribute("y", y0 - 8); r.setAttribute("width", x1 - x0 + 16); r.setAttribute("height", y1 - y0 + 16);
    svg.appendChild(r);
  }
  document.getElementById("supernodes").innerHTML = supernodes.length ? supernodes.map(s => "<div><b>" + escapeHtml(s.name) + "</b>: " + s.members.map(escapeHtml).join(", ") + "</div>").join("") : "none";
}
let onlyPinned = false;
document.getElementById("thr").addEventListener("input", () => applyView(onlyPinned));
document.getElementById("nthr").addEventListener("input", () => applyView(onlyPinned));
document.getElementById("pin").addEventListener("click", () => { if (selected) togglePin(selected); });
document.getElementById("subgraph").addEventListener("click", () => { onlyPinned = true; applyView(true); });
document.getElementById("all").addEventListener("click", () => { onlyPinned = false; applyView(false); });
document.getElementById("clear").addEventListener("click", () => { for (const id of [...pinned]) togglePin(byId.get(id)); applyView(onlyPinned); });
document.getElementById("group").addEventListener("click", () => {
  if (pinned.size < 1) return;
  const name = (window.prompt ? window.prompt("supernode name") : null) || ("group " + (supernodes.length + 1));
  supernodes.push({ name, members: [...pinned] });
  drawSupernodes();
});
document.getElementById("title").textContent = data.metadata.prompt;
applyView(false);
drawSupernodes();
const loadMs = performance.now();   // from the navigation's start: the page read, parsed and drawn
if (location.search.indexOf("selftest") >= 0) {
  window.ctraceErrors = window.ctraceErrors || [];
  const first = data.nodes.find(n => n.feature_type === "cross layer transcoder") || data.nodes[0];
  first.el.dispatchEvent(new MouseEvent("click", { bubbles: true }));
  const details = document.getElementById("details").textContent;
  const touching = data.links.filter(l => l.source === first.node_id || l.target === first.node_id).length;
  const highlightedOnClick = highlighted;
  const slider = document.getElementById("nthr");
  slider.value = "0.5";
  slider.dispatchEvent(new Event("input"));
  const visibleAtHalf = document.querySelectorAll("circle.node:not(.hidden)").length;
  const expectedAtHalf = data.nodes.filter(n => keptNode(n, 0.5)).length;
  slider.value = "1";
  slider.dispatchEvent(new Event("input"));
  // the canvas stays the size of the view and follows a scroll to the far end
  main.scrollLeft = W; main.scrollTop = H;
  drawEdges(lastVisible, lastThr);
  const canvasFollows = canvas.width <= Math.max(1, main.clientWidth) && parseInt(canvas.style.left, 10) === main.scrollLeft;
  main.scrollLeft = 0; main.scrollTop = 0;
  drawEdges(lastVisible, lastThr);
  // columns: every node inside its position's column
  const spill = data.nodes.filter(n => Math.abs(n.x - (left + (n.ctx_idx + 0.5) * colW)) > colW / 2).length;
  // an edge split by heads whose head has a QK split: its target selected, its row and then the
  // head's row clicked
  let headsShown = null, qkShown = null;
  const withQk = data.links.find(l => headsOf(l).some(x => qkBy.has(num(x.layer) + "/" + num(x.head) + "/" +
    num((byId.get(l.target) || {}).ctx_idx) + "/" + num((byId.get(l.source) || {}).ctx_idx))));
  if (withQk) {
    const t = byId.get(withQk.target);
    t.el.dispatchEvent(new MouseEvent("click", { bubbles: true }));
    let row = [...document.querySelectorAll("tr.link.split")].find(r => shown[+r.dataset.i] === withQk);
    if (row) row.dispatchEvent(new MouseEvent("click", { bubbles: true }));
    else showHeads(withQk);   // not among the 10 strongest inputs shown
    headsShown = document.getElementById("heads").textContent.indexOf("Heads of " + withQk.source) >= 0;
    const head = document.querySelector("tr.head.qk");
    if (head) head.dispatchEvent(new MouseEvent("click", { bubbles: true }));
    qkShown = document.getElementById("qkpairs").textContent.indexOf("query side") >= 0;
    first.el.dispatchEvent(new MouseEvent("click", { bubbles: true }));
  }
  // pins and supernodes as saved: the qParams the save link would write
  const saved = qParamsNow();
  document.getElementById("selftest").textContent = JSON.stringify({
    nodes: document.querySelectorAll("circle.node").length, edges: drawn,
    json_nodes: data.nodes.length, json_links: data.links.length, clicked: first.node_id,
    details_shown: details.indexOf(first.node_id) >= 0 && details.indexOf("Strongest inputs") >= 0,
    highlighted: highlightedOnClick, touching, spill, load_ms: Math.round(loadMs), canvas_follows: canvasFollows,
    graph_width: W,
    pinned: saved.pinnedIds, supernodes: saved.supernodes,
    threshold_visible: visibleAtHalf, threshold_expected: expectedAtHalf, heads_shown: headsShown, qk_shown: qkShown,
    qk_entries: qkBy.size, errors: window.ctraceErrors });
}
</script></body></html>
]==]

-- Keeps embedded JSON from closing or escaping its <script> element
-- (every '<' as \u003c: JSON has '<' only inside strings, where the escape reads the same, so no
-- "</script>", and no "<!--" then "<script" that would keep the element open, can come out of it)
local function embed(text) return (text:gsub("<", "\\u003c")) end

-- The page before and after the graph's JSON: title (a slug) and feature dashboards filled in.
function M.page_parts(title, dashboards)
  title = (title or "graph"):gsub("[<>&]", "")
  local page = PAGE:gsub("%%TITLE%%", function() return title end)
                   :gsub("%%DASH%%", function() return embed(ct.json_encode(dashboards or setmetatable({}, {}))) end)
  local at = page:find("%DATA%", 1, true)
  return page:sub(1, at - 1), page:sub(at + #"%DATA%")
end

function M.write(json_path, html_path, o)
  o = o or {}
  html_path = html_path or json_path:gsub("%.json$", "") .. ".html"
  local text = read(json_path)
  local g = ct.json_decode(text)
  if type(g) ~= "table" or type(g.nodes) ~= "table" or type(g.links) ~= "table" or type(g.metadata) ~= "table" then
    error("BAD_FORMAT: " .. json_path .. " is not a graph JSON (metadata, nodes, links)", 2)
  end
  local prefix, suffix = M.page_parts(g.metadata.slug, o.dashboards)
  write(html_path, prefix .. embed(text) .. suffix)
  return html_path
end

-- The viewer's layout as a static SVG (nodes, edges by sign and weight, token labels).
function M.svg(json_path, svg_path)
  local g = type(json_path) == "table" and json_path or ct.json_decode(read(json_path))
  local nPos = #g.metadata.prompt_tokens
  local layers, seen = {}, {}
  local function layer_of(n) return n.feature_type == "embedding" and -1 or tonumber(n.layer) end
  for _, n in ipairs(g.nodes) do
    local l = layer_of(n)
    if not seen[l] then seen[l] = true layers[#layers + 1] = l end
  end
  table.sort(layers)
  local rank = {}
  for i, l in ipairs(layers) do rank[l] = i - 1 end
  local W, H = math.max(900, nPos * 70), math.max(500, #layers * 70)
  local cells, pos = {}, {}
  for _, n in ipairs(g.nodes) do
    local k = layer_of(n) .. "/" .. n.ctx_idx
    cells[k] = (cells[k] or 0) + 1
    local i = cells[k]
    pos[n.node_id] = {40 + (n.ctx_idx + 0.5) * (W - 80) / nPos + (i - 1) * 7,
                      H - 20 - rank[layer_of(n)] * (H - 40) / math.max(1, #layers - 1), n}
  end
  local maxw = 1e-12
  for _, l in ipairs(g.links) do maxw = math.max(maxw, math.abs(l.weight)) end
  local out = {string.format('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" '
                             .. 'font-size="10"><rect width="100%%" height="100%%" fill="white"/>', W, H + 40)}
  for _, l in ipairs(g.links) do
    local s, t = pos[l.source], pos[l.target]
    if s and t then
      out[#out + 1] = string.format('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-opacity="0.5" '
                                    .. 'stroke-width="%.2f"/>', s[1], s[2], t[1], t[2], l.weight >= 0 and "#1f77b4" or "#d62728",
                                    0.3 + 3 * math.abs(l.weight) / maxw)
    end
  end
  local colors = {["cross layer transcoder"] = "#9ecae1", ["mlp reconstruction error"] = "#bbbbbb",
                  embedding = "#a1d99b", logit = "#fdae6b"}
  for _, n in ipairs(g.nodes) do
    local p = pos[n.node_id]
    out[#out + 1] = string.format('<circle cx="%.1f" cy="%.1f" r="4" fill="%s" stroke="#333" stroke-width="0.5"/>',
                                  p[1], p[2], colors[n.feature_type] or "#ccc")
  end
  for i, tok in ipairs(g.metadata.prompt_tokens) do
    out[#out + 1] = string.format('<text x="%.1f" y="%d" text-anchor="middle">%s</text>', 40 + (i - 0.5) * (W - 80) / nPos,
                                  H + 30, (tok:gsub("&", "&amp;"):gsub("<", "&lt;")))
  end
  out[#out + 1] = "</svg>\n"
  write(svg_path, table.concat(out, "\n"))
  return svg_path
end

return M
