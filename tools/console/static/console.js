// The QuorumDB console: polls /api/state once a second and draws the cluster, its charts and its
// events; chaos buttons POST /api/chaos with the token typed above (tools/console/server.py).
// Plain JavaScript, no library: the charts are small SVG line charts drawn here.
"use strict";

const POLL_MS = 1000;
const SERVICES = ["compute", "journal", "adjudicator", "storage"];
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];
let lastState = null;
let busy = false;

const $ = (id) => document.getElementById(id);

function text(tag, content, className) {
  const element = document.createElement(tag);
  if (content !== undefined) element.textContent = content;
  if (className) element.className = className;
  return element;
}

function number(value, digits = 1) {
  return value === null || value === undefined ? "-" : Number(value).toFixed(digits);
}

// --- the region picture -----------------------------------------------------------------------------
function nodeCard(node) {
  const card = text("div", undefined, "node");
  const down = !node.up;
  const paused = node.state === "paused";
  card.dataset.node = node.name;
  card.dataset.up = String(node.up);
  card.dataset.role = node.role || "";
  card.dataset.state = node.state || "";
  if (down) card.classList.add("down");
  else if (paused) card.classList.add("paused");
  else if (node.health !== "ok") card.classList.add("degraded");
  if (node.role === "leader") card.classList.add("leader");

  const title = text("div");
  title.append(text("span", node.name, "name"), text("span", down ? (node.state || "down") : node.role, "role"));
  card.append(title);
  const facts = [];
  if (!down) {
    if (node.epoch) facts.push(`epoch ${node.epoch}`);
    if (node.service === "journal") facts.push(`commit ${node.commit_index}`);
    if (node.service === "storage" || node.service === "adjudicator") facts.push(`applied ${node.applied_index}`);
    if (node.lag_entries !== null && node.lag_entries !== undefined) facts.push(`lag ${node.lag_entries}`);
    if (node.closed_lag_ms !== null && node.closed_lag_ms !== undefined) facts.push(`closed -${number(node.closed_lag_ms, 0)} ms`);
    if (node.cpu_percent !== null && node.cpu_percent !== undefined) facts.push(`cpu ${number(node.cpu_percent, 0)}%`);
    if (node.health !== "ok") facts.push(node.health);
  } else if (node.state) {
    facts.push(`supervisor: ${node.state}`);
  }
  card.append(text("div", facts.join(" · "), "facts"));

  const buttons = text("div", undefined, "buttons");
  buttons.append(actionButton("kill", node.name, "Kill"), actionButton("restart", node.name, "Restart"));
  buttons.append(paused ? actionButton("resume", node.name, "Resume") : actionButton("pause", node.name, "Pause"));
  card.append(buttons);
  return card;
}

function actionButton(action, target, label) {
  const button = text("button", label);
  button.dataset.action = action;
  if (target) button.dataset.target = target;
  return button;
}

// Bring `old` to look like `fresh`, keeping every element whose place and tag are unchanged: the page
// redraws once a second, and a button replaced between a press and its release gets no click (the
// press is lost). Returns the element now in the document.
function patch(old, fresh) {
  if (old.isEqualNode(fresh)) return old;
  if (old.nodeType !== Node.ELEMENT_NODE || old.tagName !== fresh.tagName
      || old.childNodes.length !== fresh.childNodes.length) {
    old.replaceWith(fresh);
    return fresh;
  }
  for (const name of old.getAttributeNames()) if (!fresh.hasAttribute(name)) old.removeAttribute(name);
  for (const name of fresh.getAttributeNames()) old.setAttribute(name, fresh.getAttribute(name));
  const pairs = [...old.childNodes].map((child, i) => [child, fresh.childNodes[i]]);
  for (const [child, freshChild] of pairs) patch(child, freshChild);
  return old;
}

function drawRegion(state) {
  const current = $("region");
  const region = current.cloneNode(false);
  drawRegionInto(region, state);
  patch(current, region);
}

function drawRegionInto(region, state) {
  const view = state.view;
  if (!view) return;
  const cutAzs = new Set();
  for (const az of state.cluster.azs) {
    // An AZ is partitioned when one of its nodes is cut from a node of another AZ.
    const names = new Set(view.nodes.filter((n) => n.az === az).map((n) => n.name));
    for (const link of state.cuts) {
      const ends = splitLink(link, view.nodes);
      if (ends && names.has(ends[0]) !== names.has(ends[1])) cutAzs.add(az);
    }
  }
  for (const az of state.cluster.azs) {
    const box = text("div", undefined, "az");
    box.dataset.az = az;
    if (cutAzs.has(az)) box.classList.add("partitioned");
    const heading = text("h3", az + (cutAzs.has(az) ? " (partitioned)" : ""));
    heading.append(actionButton("kill-az", az, "Kill AZ"), actionButton("restart-az", az, "Restart AZ"),
                   actionButton("partition", az, "Partition"));
    box.append(heading);
    const nodes = view.nodes.filter((n) => n.az === az)
      .sort((a, b) => SERVICES.indexOf(a.service) - SERVICES.indexOf(b.service) || a.name.localeCompare(b.name));
    for (const node of nodes) box.append(nodeCard(node));
    region.append(box);
  }
}

function splitLink(link, nodes) {
  // "a-b" where both are node names that may contain dashes: find the split that names two nodes.
  const names = new Set(nodes.map((n) => n.name));
  for (let i = link.indexOf("-"); i > 0; i = link.indexOf("-", i + 1)) {
    if (names.has(link.slice(0, i)) && names.has(link.slice(i + 1))) return [link.slice(0, i), link.slice(i + 1)];
  }
  return null;
}

// --- charts -------------------------------------------------------------------------------------------
function lineChart(svg, series, unit) {
  const width = svg.clientWidth || 400;
  const height = svg.clientHeight || 160;
  const pad = { left: 44, right: 8, top: 8, bottom: 18 };
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.replaceChildren();
  const ns = "http://www.w3.org/2000/svg";
  const points = series.flatMap((s) => s.points);
  if (points.length === 0) {
    const empty = document.createElementNS(ns, "text");
    empty.setAttribute("x", pad.left); empty.setAttribute("y", height / 2);
    empty.textContent = "waiting for data";
    svg.append(empty);
    return;
  }
  const t0 = Math.min(...points.map((p) => p[0]));
  const t1 = Math.max(...points.map((p) => p[0]), t0 + 1);
  const yMax = Math.max(...points.map((p) => p[1]), 1) * 1.1;
  const x = (t) => pad.left + (t - t0) / (t1 - t0) * (width - pad.left - pad.right);
  const y = (v) => height - pad.bottom - v / yMax * (height - pad.top - pad.bottom);
  for (const fraction of [0, 0.5, 1]) {
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", 2); label.setAttribute("y", y(yMax * fraction) + 3);
    label.textContent = `${number(yMax * fraction, yMax < 10 ? 1 : 0)}${unit}`;
    svg.append(label);
    const grid = document.createElementNS(ns, "line");
    grid.setAttribute("x1", pad.left); grid.setAttribute("x2", width - pad.right);
    grid.setAttribute("y1", y(yMax * fraction)); grid.setAttribute("y2", y(yMax * fraction));
    grid.setAttribute("stroke", "#e3e7ec");
    svg.append(grid);
  }
  series.forEach((s, i) => {
    if (s.points.length === 0) return;
    const path = document.createElementNS(ns, "polyline");
    path.setAttribute("points", s.points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" "));
    path.setAttribute("fill", "none");
    path.setAttribute("stroke", s.color || COLORS[i % COLORS.length]);
    path.setAttribute("stroke-width", "1.5");
    svg.append(path);
    const legend = document.createElementNS(ns, "text");
    const step = Math.min(90, (width - pad.left) / series.length);
    legend.setAttribute("x", pad.left + 6 + step * i); legend.setAttribute("y", height - 4);
    legend.setAttribute("fill", s.color || COLORS[i % COLORS.length]);
    legend.textContent = s.name;
    svg.append(legend);
  });
}

function seriesOf(history, key) {
  return history.filter((p) => p[key] !== null && p[key] !== undefined).map((p) => [p.time, p[key]]);
}

function drawCharts(state) {
  const history = state.history;
  lineChart($("chart-rate"), [
    { name: "commits/s", color: "#1f77b4", points: seriesOf(history, "commits_per_s") },
    { name: "aborts/s", color: "#d62728", points: seriesOf(history, "aborts_per_s") },
  ], "");
  lineChart($("chart-latency"), [
    { name: "p50", color: "#2ca02c", points: seriesOf(history, "commit_p50_ms") },
    { name: "p99", color: "#ff7f0e", points: seriesOf(history, "commit_p99_ms") },
  ], "");
  const copies = new Set(history.flatMap((p) => Object.keys(p.storage_lag || {})));
  lineChart($("chart-lag"), [...copies].sort().map((copy, i) => ({
    name: copy.replace("storage-", ""), color: COLORS[i % COLORS.length],
    points: history.filter((p) => p.storage_lag && p.storage_lag[copy] !== null && p.storage_lag[copy] !== undefined)
      .map((p) => [p.time, p.storage_lag[copy]]),
  })), "");
}

// --- summary and events ----------------------------------------------------------------------------
function drawSummary(state) {
  const view = state.view;
  const summary = $("summary");
  if (!view) { summary.textContent = "waiting for the first poll..."; return; }
  const up = view.nodes.filter((n) => n.up).length;
  summary.replaceChildren();
  const parts = [
    ["leader", view.leader ? `${view.leader} (epoch ${view.epoch})` : "none"],
    ["nodes up", `${up} of ${view.nodes.length}`],
    ["commits/s", number(view.commits_per_s)],
    ["aborts/s", number(view.aborts_per_s)],
    ["commit p50", `${number(view.commit_p50_ms, 2)} ms`],
    ["p99", `${number(view.commit_p99_ms, 2)} ms`],
    ["journal index", String(view.commit_index)],
  ];
  for (const [label, value] of parts) {
    const span = text("span", `${label} `);
    const bold = text("b", value);
    bold.dataset.field = label;
    span.append(bold, document.createTextNode("   "));
    summary.append(span);
  }
  summary.dataset.leader = view.leader || "";
  $("updated").textContent = `updated ${new Date(view.wall * 1000).toLocaleTimeString()}`;
  drawAuthMode(state);
}

// Watching is open to anyone who reaches the page; chaos actions need a token unless the cluster runs
// --insecure (then the server checks nothing, and the page says so).
function drawAuthMode(state) {
  const insecure = state.cluster.auth === "insecure";
  const mode = $("auth-mode");
  mode.dataset.auth = state.cluster.auth;
  mode.classList.toggle("warning", insecure);
  if (insecure) mode.textContent = "INSECURE cluster (quorumdb up --insecure): chaos actions need no token";
  else if (!$("token").value.trim()) mode.textContent = "chaos actions need a token: quorumdb token --user admin";
  else mode.textContent = "";
}

function drawEvents(state) {
  const list = $("events");
  list.replaceChildren();
  for (const event of [...state.events].reverse()) {
    const item = text("li", `${new Date(event.time * 1000).toLocaleTimeString()}  ${event.text}`, event.kind);
    list.append(item);
  }
}

// --- polling and actions ----------------------------------------------------------------------------
async function poll() {
  try {
    const response = await fetch("/api/state", { cache: "no-store" });
    const state = await response.json();
    lastState = state;
    drawSummary(state);
    drawRegion(state);
    drawCharts(state);
    drawEvents(state);
  } catch (error) {
    $("summary").textContent = `the console does not answer (${error}); is quorumdb up still running?`;
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

async function act(action, target) {
  if (busy) return;
  busy = true;
  const result = $("action-result");
  result.className = "result";
  result.textContent = `${action} ${target || ""}...`;
  const token = $("token").value.trim();
  sessionStorage.setItem("quorumdb-user", $("user").value.trim());
  sessionStorage.setItem("quorumdb-token", token);
  try {
    const response = await fetch("/api/chaos", {
      method: "POST",
      headers: { "Content-Type": "application/json", "Authorization": `Bearer ${token}`,
                 "X-QuorumDB-User": $("user").value.trim() },
      body: JSON.stringify({ action, target: target || "" }),
    });
    const answer = await response.json();
    result.classList.add(response.ok ? "ok" : "error");
    result.textContent = response.ok ? answer.message : `refused (${response.status}): ${answer.error}`;
  } catch (error) {
    result.classList.add("error");
    result.textContent = `failed: ${error}`;
  } finally {
    busy = false;
  }
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  if (button) act(button.dataset.action, button.dataset.target);
});

$("user").value = sessionStorage.getItem("quorumdb-user") || "admin";
$("token").value = sessionStorage.getItem("quorumdb-token") || "";
// Kept for this tab only (sessionStorage, not localStorage): a token is a password.
$("user").addEventListener("change", () => sessionStorage.setItem("quorumdb-user", $("user").value.trim()));
$("token").addEventListener("change", () => sessionStorage.setItem("quorumdb-token", $("token").value.trim()));
poll();
