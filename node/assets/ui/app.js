// graunt's browser UI: a metric tree, graphs drawn by /render, time ranges,
// auto-refresh, dashboards saved on the node. The whole view lives in the
// URL's fragment, so a link shares it.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const state = { from: "-24h", until: "", refresh: 0, graphs: [], current: 0, dashboard: "" };
let refreshTimer = null;
let metricIndex = null;

function status(text, isError) {
  const s = $("#status");
  s.textContent = text || "";
  s.className = isError ? "bad" : "";
}

async function getJSON(url, options) {
  const r = await fetch(url, options);
  const text = await r.text();
  let body;
  try { body = JSON.parse(text); } catch (e) { body = null; }
  if (!r.ok) throw new Error((body && body.error) || text.trim() || r.statusText);
  return body;
}

// ---- URL fragment ------------------------------------------------------

function saveToURL() {
  const view = { from: state.from, until: state.until, refresh: state.refresh,
                 graphs: state.graphs, dashboard: state.dashboard };
  history.replaceState(null, "", "#" + encodeURIComponent(JSON.stringify(view)));
}

function loadFromURL() {
  if (location.hash.length < 2) return false;
  try {
    applyView(JSON.parse(decodeURIComponent(location.hash.slice(1))));
    return true;
  } catch (e) {
    status("the link's view could not be read: " + e.message, true);
    return false;
  }
}

function applyView(view) {
  state.from = view.from || "-24h";
  state.until = view.until || "";
  state.refresh = Number(view.refresh) || 0;
  state.dashboard = view.dashboard || "";
  state.graphs = (view.graphs || []).map(g => ({ title: g.title || "", targets: (g.targets || []).slice() }));
  if (state.graphs.length === 0) state.graphs.push({ title: "", targets: [] });
  state.current = 0;
  $("#dash-name").value = state.dashboard;
  syncRangeControls();
  $("#refresh").value = String(state.refresh);
  drawAll();
  scheduleRefresh();
}

// ---- time range and refresh --------------------------------------------

function syncRangeControls() {
  const preset = [...$("#range").options].some(o => o.value === state.from) && !state.until;
  $("#range").value = preset ? state.from : "custom";
  $("#custom").hidden = preset;
  $("#from").value = state.from;
  $("#until").value = state.until;
}

function scheduleRefresh() {
  if (refreshTimer) clearInterval(refreshTimer);
  refreshTimer = state.refresh > 0 ? setInterval(() => redrawImages(), state.refresh * 1000) : null;
}

// ---- metric tree and search --------------------------------------------

async function loadChildren(prefix, ul) {
  ul.innerHTML = "<li class='muted'>loading…</li>";
  try {
    const nodes = await getJSON("/metrics/find?query=" + encodeURIComponent(prefix ? prefix + ".*" : "*"));
    ul.innerHTML = "";
    if (nodes.length === 0) ul.innerHTML = "<li class='muted'>no metrics yet</li>";
    for (const n of nodes) ul.appendChild(treeItem(n));
  } catch (e) {
    ul.innerHTML = "";
    const li = document.createElement("li");
    li.className = "bad";
    li.textContent = "cannot list metrics: " + e.message;
    ul.appendChild(li);
  }
}

function treeItem(n) {
  const li = document.createElement("li");
  li.dataset.id = n.id;
  li.className = n.leaf ? "leaf" : "branch";
  const label = document.createElement("span");
  label.className = "label";
  label.textContent = n.text;
  label.title = n.id;
  li.appendChild(label);
  if (n.leaf) {
    label.addEventListener("click", () => addTarget(n.id));
  } else {
    const children = document.createElement("ul");
    children.hidden = true;
    li.appendChild(children);
    label.addEventListener("click", () => {
      children.hidden = !children.hidden;
      li.classList.toggle("open", !children.hidden);
      if (!children.hidden && !children.dataset.loaded) {
        children.dataset.loaded = "1";
        loadChildren(n.id, children);
      }
    });
  }
  return li;
}

let searchTimer = null;
function onSearch() {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(runSearch, 250);
}

async function runSearch() {
  const q = $("#search").value.trim();
  const out = $("#results");
  if (!q) { out.hidden = true; $("#tree").hidden = false; return; }
  let names = [];
  try {
    if (/[*?[{]/.test(q)) {
      const r = await getJSON("/metrics/expand?leavesOnly=1&query=" + encodeURIComponent(q));
      names = r.results || [];
    } else {
      if (!metricIndex) metricIndex = await getJSON("/metrics/index.json");
      const low = q.toLowerCase();
      names = metricIndex.filter(m => m.toLowerCase().includes(low));
    }
  } catch (e) {
    status("search failed: " + e.message, true);
  }
  out.innerHTML = "";
  for (const name of names.slice(0, 200)) {
    const li = document.createElement("li");
    li.className = "leaf";
    li.dataset.id = name;
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = name;
    label.addEventListener("click", () => addTarget(name));
    li.appendChild(label);
    out.appendChild(li);
  }
  if (names.length > 200) {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = `${names.length - 200} more: narrow the search`;
    out.appendChild(li);
  }
  if (names.length === 0) out.innerHTML = "<li class='muted'>nothing matches</li>";
  out.hidden = false;
  $("#tree").hidden = true;
}

// ---- graphs ------------------------------------------------------------

let functionNames = [];

function addTarget(target) {
  if (state.graphs.length === 0) state.graphs.push({ title: "", targets: [] });
  const g = state.graphs[Math.min(state.current, state.graphs.length - 1)];
  g.targets.push(target);
  drawAll();
}

function renderURL(g, width, height) {
  const p = new URLSearchParams();
  for (const t of g.targets) p.append("target", t);
  p.set("from", state.from);
  if (state.until) p.set("until", state.until);
  p.set("width", String(width));
  p.set("height", String(height));
  if (g.title) p.set("title", g.title);
  return "/render?" + p.toString();
}

function drawAll() {
  const box = $("#graphs");
  box.innerHTML = "";
  state.graphs.forEach((g, i) => box.appendChild(graphCard(g, i)));
  saveToURL();
  redrawImages();
}

function graphCard(g, i) {
  const card = $("#graph-template").content.firstElementChild.cloneNode(true);
  card.dataset.index = String(i);
  card.classList.toggle("current", i === state.current);
  const title = $(".title", card);
  title.value = g.title;
  title.addEventListener("change", () => { g.title = title.value; saveToURL(); redrawImages(); });
  $(".select", card).addEventListener("click", () => { state.current = i; drawAll(); });
  $(".remove", card).addEventListener("click", () => {
    state.graphs.splice(i, 1);
    state.current = Math.max(0, Math.min(state.current, state.graphs.length - 1));
    drawAll();
  });
  const list = $(".targets", card);
  g.targets.forEach((t, j) => {
    const li = document.createElement("li");
    const check = document.createElement("input");
    check.type = "checkbox";
    check.className = "pick";
    const text = document.createElement("input");
    text.className = "target";
    text.value = t;
    text.addEventListener("change", () => { g.targets[j] = text.value; saveToURL(); redrawImages(); });
    const del = document.createElement("button");
    del.textContent = "✕";
    del.title = "remove this target";
    del.addEventListener("click", () => { g.targets.splice(j, 1); drawAll(); });
    li.append(check, text, del);
    list.appendChild(li);
  });
  const add = $(".new-target", card);
  add.addEventListener("keydown", e => {
    if (e.key === "Enter" && add.value.trim()) { g.targets.push(add.value.trim()); drawAll(); }
  });
  const fn = $(".function", card);
  for (const name of functionNames) {
    const o = document.createElement("option");
    o.value = o.textContent = name;
    fn.appendChild(o);
  }
  fn.addEventListener("change", () => {
    if (!fn.value) return;
    const picks = [...card.querySelectorAll(".pick")].map(c => c.checked);
    const any = picks.some(Boolean);
    const extra = $(".args", card).value.trim();
    g.targets = g.targets.map((t, j) => (!any || picks[j]) ? `${fn.value}(${t}${extra ? ", " + extra : ""})` : t);
    drawAll();
  });
  return card;
}

// Images are fetched rather than set as src, so a failing target shows the
// server's message instead of a broken image.
async function redrawImages() {
  const cards = document.querySelectorAll("#graphs .graph");
  await Promise.all([...cards].map(async card => {
    const g = state.graphs[Number(card.dataset.index)];
    const img = $(".image", card), loading = $(".loading", card), err = $(".error", card);
    const empty = $(".empty", card);
    empty.hidden = g.targets.length > 0;
    err.hidden = true;
    if (g.targets.length === 0) { img.hidden = true; loading.hidden = true; return; }
    const width = Math.max(300, Math.min(1600, $(".canvas", card).clientWidth || 600));
    const url = renderURL(g, width, 300);
    $(".link", card).href = url;
    loading.hidden = false;
    card.classList.add("busy");
    try {
      const r = await fetch(url + "&_salt=" + Date.now());
      if (!r.ok) throw new Error((await r.text()).trim() || r.statusText);
      const blob = await r.blob();
      if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
      img.src = URL.createObjectURL(blob);
      img.hidden = false;
      loading.hidden = true;
      card.classList.remove("busy");
      card.dataset.loaded = String(Number(card.dataset.loaded || 0) + 1);
    } catch (e) {
      img.hidden = true;
      err.textContent = "this graph failed: " + e.message;
      err.hidden = false;
    } finally {
      loading.hidden = true;
      card.classList.remove("busy");
    }
  }));
}

// ---- dashboards --------------------------------------------------------

async function listDashboards() {
  const sel = $("#dash-list");
  try {
    const r = await getJSON("/dashboard/find?query=");
    sel.innerHTML = "<option value=''>open dashboard…</option>";
    for (const d of r.dashboards) {
      const o = document.createElement("option");
      o.value = o.textContent = d.name;
      sel.appendChild(o);
    }
  } catch (e) {
    status("cannot list dashboards: " + e.message, true);
  }
}

async function saveDashboard() {
  const name = $("#dash-name").value.trim();
  if (!name) { status("give the dashboard a name first", true); return; }
  const view = { from: state.from, until: state.until, refresh: state.refresh, graphs: state.graphs };
  try {
    await getJSON("/dashboard/save/" + encodeURIComponent(name), {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: "state=" + encodeURIComponent(JSON.stringify(view)),
    });
    state.dashboard = name;
    saveToURL();
    status(`saved dashboard “${name}”`);
    listDashboards();
  } catch (e) {
    status("cannot save: " + e.message, true);
  }
}

async function openDashboard(name) {
  if (!name) return;
  try {
    const r = await getJSON("/dashboard/load/" + encodeURIComponent(name));
    applyView(Object.assign({}, r.state, { dashboard: name }));
    status(`opened dashboard “${name}”`);
  } catch (e) {
    status("cannot open: " + e.message, true);
  }
}

// ---- start -------------------------------------------------------------

async function start() {
  $("#range").addEventListener("change", () => {
    const v = $("#range").value;
    if (v === "custom") { $("#custom").hidden = false; return; }
    state.from = v; state.until = "";
    syncRangeControls(); saveToURL(); redrawImages();
  });
  $("#apply-range").addEventListener("click", () => {
    state.from = $("#from").value.trim() || "-24h";
    state.until = $("#until").value.trim();
    saveToURL(); redrawImages();
  });
  $("#refresh").addEventListener("change", () => {
    state.refresh = Number($("#refresh").value);
    saveToURL(); scheduleRefresh();
  });
  $("#add-graph").addEventListener("click", () => {
    state.graphs.push({ title: "", targets: [] });
    state.current = state.graphs.length - 1;
    drawAll();
  });
  $("#dash-save").addEventListener("click", saveDashboard);
  $("#dash-list").addEventListener("change", () => openDashboard($("#dash-list").value));
  $("#search").addEventListener("input", onSearch);
  window.addEventListener("resize", () => redrawImages());
  // A pasted link into an open page changes only the fragment.
  window.addEventListener("hashchange", () => loadFromURL());
  try {
    functionNames = Object.keys(await getJSON("/functions")).sort();
  } catch (e) {
    status("cannot load the function list: " + e.message, true);
  }
  if (!loadFromURL()) applyView({});
  loadChildren("", $("#tree"));
  listDashboards();
}

start();
