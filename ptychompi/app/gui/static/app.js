// ptychompi GUI: plain JavaScript, no build step. Text from the server goes through
// textContent only (never innerHTML), so file names and job names cannot inject markup.
"use strict";

const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
};

async function api(path, body) {
  const opts = body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)};
  const r = await fetch(path, opts);
  let data = null;
  try { data = await r.json(); } catch (e) { data = {error: `${r.status} ${r.statusText}`}; }
  if (!r.ok && !data.error) data.error = `${r.status} ${r.statusText}`;
  return {ok: r.ok, data};
}

function say(target, text, good) {
  const m = $(target);
  m.textContent = text || "";
  m.className = "message " + (text ? (good ? "good" : "bad") : "");
}

const fmtTime = (s) => {
  if (s === null || s === undefined || !isFinite(s)) return "—";
  s = Math.round(s);
  return s >= 3600 ? `${Math.floor(s / 3600)} h ${Math.floor(s % 3600 / 60)} min`
    : s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
};
const fmtErr = (e) => (e === null || e === undefined) ? "—" : Number(e).toExponential(3);

// ------------------------------------------------------------------------- navigation
const pages = ["params", "run", "live", "results"];
function show(page) {
  if (!pages.includes(page)) page = "params";
  for (const p of pages) $("page-" + p).classList.toggle("hidden", p !== page);
  for (const a of document.querySelectorAll("header nav a"))
    a.classList.toggle("active", a.dataset.page === page);
  if (page === "run") { loadDevices(); refreshQueue(); }
  if (page === "live") refreshJobList();
  if (page === "results") loadTree();
}
window.addEventListener("hashchange", () => show(location.hash.slice(1)));

// ------------------------------------------------------------------------- parameters
let schema = null;
let validateTimer = null;

function fieldInput(f) {
  const id = "f-" + f.key;
  if (f.kind === "bool") {
    return el("input", {type: "checkbox", id, name: f.key, "data-kind": "bool"});
  }
  if (f.kind === "list" && f.choices) {
    const box = el("span", {class: "checks", id, "data-kind": "checks", "data-key": f.key});
    for (const c of f.choices)
      box.append(el("label", {}, el("input", {type: "checkbox", value: c, name: f.key}), " " + c));
    return box;
  }
  if (f.choices) {
    const s = el("select", {id, name: f.key});
    if (f.nullable) s.append(el("option", {value: "", text: "(null)"}));
    for (const c of f.choices) s.append(el("option", {value: c, text: c}));
    return s;
  }
  const props = {type: (f.kind === "int" || f.kind === "float") ? "number" : "text", id,
                 name: f.key};
  if (props.type === "number") {
    props.step = f.kind === "int" ? "1" : "any";
    if (f.low !== null) props.min = f.low;
    if (f.high !== null) props.max = f.high;
  }
  if (f.nullable) props.placeholder = "null";
  if (f.kind === "list") props.placeholder = (f.nullable ? "null, or " : "") + "a, b";
  return el("input", props);
}

function buildForm() {
  const form = $("form");
  form.textContent = "";
  const bySection = {};
  for (const f of schema.fields) (bySection[f.key.split(".")[0]] ||= []).push(f);
  for (const sec of schema.sections) {
    const fs = el("fieldset", {id: "section-" + sec.name},
      el("legend", {}, sec.name + " ", el("span", {class: "muted", text: sec.help})));
    for (const f of bySection[sec.name] || []) {
      let hint = f.help;
      if (f.low !== null || f.high !== null)
        hint += `  [${f.low ?? "−∞"} … ${f.high ?? "∞"}]`;
      if (f.nullable) hint += "  (empty = null)";
      const row = el("div", {class: "field", id: "row-" + f.key},
        el("label", {for: "f-" + f.key, text: f.key.split(".").slice(1).join("."), title: f.help}),
        fieldInput(f), el("div", {class: "hint", text: hint}));
      fs.append(row);
    }
    form.append(fs);
  }
  form.addEventListener("input", scheduleValidate);
  form.addEventListener("change", scheduleValidate);
}

function getValues() {
  const values = {};
  for (const f of schema.fields) {
    const node = $("f-" + f.key);
    if (!node) continue;
    if (node.dataset.kind === "bool") values[f.key] = node.checked ? "true" : "false";
    else if (node.dataset.kind === "checks")
      values[f.key] = [...node.querySelectorAll("input:checked")].map((i) => i.value).join(", ");
    else values[f.key] = node.value;
  }
  return values;
}

function setValues(values) {
  for (const [key, v] of Object.entries(values)) {
    const node = $("f-" + key);
    if (!node) continue;
    if (node.dataset.kind === "bool") node.checked = v === "true";
    else if (node.dataset.kind === "checks") {
      const on = new Set(String(v).split(",").map((s) => s.trim()));
      for (const i of node.querySelectorAll("input")) i.checked = on.has(i.value);
    } else node.value = v;
  }
  scheduleValidate(0);
}

function scheduleValidate(delay) {
  clearTimeout(validateTimer);
  validateTimer = setTimeout(validateNow, typeof delay === "number" ? delay : 250);
}

async function validateNow() {
  const {data} = await api("/api/config/validate", {values: getValues()});
  $("yaml-view").textContent = data.yaml || "";
  $("config-error").textContent = data.error || "";
  for (const r of document.querySelectorAll(".field.bad")) r.classList.remove("bad");
  if (data.key && $("row-" + data.key)) $("row-" + data.key).classList.add("bad");
  $("form").dataset.valid = data.ok ? "yes" : "no";
  return data;
}

function defaults() {
  const v = {};
  for (const f of schema.fields) v[f.key] = f.default;
  return v;
}

async function importInto(path, body, what) {
  const {ok, data} = await api(path, body);
  if (!ok) { say("params-message", data.error); return null; }
  setValues(data.values);
  for (const r of document.querySelectorAll(".field.changed")) r.classList.remove("changed");
  for (const key of Object.keys(data.changed || {}))
    if ($("row-" + key)) $("row-" + key).classList.add("changed");
  say("params-message", what(data), true);
  return data;
}

async function browse(ext, target, dir = ".") {
  const r = await fetch(`/api/files?dir=${encodeURIComponent(dir)}&ext=${ext}`);
  const data = await r.json();
  const box = $("browser");
  box.textContent = "";
  box.classList.remove("hidden");
  box.append(el("div", {class: "muted", text: "folder: " + data.dir + "  "},
                el("button", {class: "small", text: "close",
                              onclick: () => box.classList.add("hidden")})));
  if (data.parent !== null)
    box.append(el("a", {text: "⬑ ..", onclick: () => browse(ext, target, data.parent)}));
  for (const e of data.entries) {
    box.append(el("a", {text: (e.dir ? "📁 " : "") + e.name, onclick: () => {
      if (e.dir) browse(ext, target, e.path);
      else { $(target).value = e.path; box.classList.add("hidden"); }
    }}));
  }
}

function initParams() {
  $("yaml-load").onclick = async () => {
    const r = await fetch("/api/config/load?path=" + encodeURIComponent($("yaml-path").value));
    const data = await r.json();
    if (!r.ok) { say("params-message", data.error || "not found"); return; }
    setValues(data.values);
    say("params-message", "loaded " + $("yaml-path").value, true);
  };
  $("yaml-save").onclick = async () => {
    const {ok, data} = await api("/api/config/save",
                                 {path: $("yaml-path").value, values: getValues()});
    say("params-message", ok ? "saved " + data.path : data.error, ok);
  };
  $("yaml-download").onclick = async () => {
    const data = await validateNow();
    if (!data.ok) { say("params-message", data.error); return; }
    const a = el("a", {href: URL.createObjectURL(new Blob([data.yaml], {type: "text/yaml"})),
                       download: ($("job-name").value || "scan") + ".yaml"});
    a.click();
  };
  $("yaml-upload").onchange = async (ev) => {
    const file = ev.target.files[0];
    if (!file) return;
    await importInto("/api/config/from_yaml", {yaml: await file.text()},
                     () => "loaded " + file.name);
    ev.target.value = "";
  };
  $("reset-defaults").onclick = () => { setValues(defaults()); say("params-message", ""); };
  $("mda-browse").onclick = () => browse("mda", "mda-path");
  $("mda-import").onclick = () => importInto(
    "/api/config/from_mda", {path: $("mda-path").value, values: getValues()},
    (d) => "imported from the MDA file: " +
      Object.entries(d.changed).map(([k, v]) => `${k} = ${v}`).join("; "));
  $("ptychopy-import").onclick = () => importInto(
    "/api/config/from_ptychopy", {command: $("ptychopy-cmd").value},
    () => "imported the ptychopy command");
}

// ------------------------------------------------------------------------- run page
let devicesInfo = null;
async function loadDevices() {
  const {data} = await api("/api/devices");
  devicesInfo = data;
  const body = $("device-table").querySelector("tbody");
  body.textContent = "";
  for (const g of data.gpus) {
    const mem = g.memory_bytes ? (g.memory_bytes / 2 ** 30).toFixed(1) + " GiB" : "?";
    body.append(el("tr", {}, el("td", {text: "GPU " + g.index}), el("td", {text: g.name}),
                    el("td", {text: mem})));
  }
  body.append(el("tr", {}, el("td", {text: "CPU"}),
                  el("td", {text: data.cpu_cores + " cores"}), el("td", {})));
  $("device-note").textContent = data.gpus.length
    ? `GPUs found through ${data.gpu_source}` : "no GPU found (CuPy / nvidia-smi): jobs run on CPU";
  updateQueueCommand();
}

function nDevices() {
  return devicesInfo ? Math.max(1, devicesInfo.gpus.length || 1) : 1;
}

function ranksPerJob() {
  const mode = $("job-mode").value;
  if (mode === "per-device") return 1;
  if (mode === "all") return nDevices();
  return Math.max(1, parseInt($("job-ranks").value || "1", 10));
}

function updateQueueCommand() {
  const k = ranksPerJob();
  $("job-ranks").value = k;
  $("job-ranks").disabled = $("job-mode").value !== "custom";
  const world = Math.max(k, nDevices());
  $("queue-command").textContent =
    `mpiexec -n ${world} ptychompi queue run ${$("queue-folder").dataset.folder || "QUEUE"}` +
    ` --ranks-per-job ${k}`;
}

async function allocateQueue() {
  const body = {scheduler: $("alloc-scheduler").value, ranks_per_job: ranksPerJob(),
                nodes: $("job-nodes").value, gpus_per_node: $("job-gpn").value,
                time: $("job-time").value, account: $("job-account").value,
                partition: $("job-partition").value, dry_run: $("job-dry").checked};
  const {ok, data} = await api("/api/queue/allocate", body);
  $("run-output").classList.add("hidden");
  if (!ok) { say("run-message", data.error); return; }
  say("run-message", `${data.scheduler}: the queue runs in one allocation. ${data.message || ""}`, true);
  $("run-output").textContent = data.output;
  $("run-output").classList.remove("hidden");
}

async function submitJob() {
  const target = $("job-target").value;
  const body = {values: getValues(), target, name: $("job-name").value,
                email: $("job-email").value, priority: $("job-priority").value,
                ranks_per_job: ranksPerJob(), nodes: $("job-nodes").value,
                gpus_per_node: $("job-gpn").value, time: $("job-time").value,
                account: $("job-account").value, partition: $("job-partition").value,
                dry_run: $("job-dry").checked};
  const {ok, data} = await api("/api/submit", body);
  $("run-output").classList.add("hidden");
  if (!ok) { say("run-message", data.error); return; }
  if (target === "queue") {
    say("run-message", `queued job ${data.job.id} (${data.job.name}) → ${data.job.output_dir}`, true);
    refreshQueue();
  } else {
    say("run-message", `${target}: wrote ${data.config}. ${data.message || ""}`, true);
    $("run-output").textContent = data.output;
    $("run-output").classList.remove("hidden");
  }
}

let queueTimer = null;
async function refreshQueue() {
  clearTimeout(queueTimer);
  const {ok, data} = await api("/api/queue");
  if (ok) {
    $("queue-folder").textContent = data.folder + (data.exists ? "" : " (empty)");
    $("queue-folder").dataset.folder = data.folder;
    updateQueueCommand();
    const body = $("queue-table").querySelector("tbody");
    body.textContent = "";
    for (const j of data.jobs) {
      const pct = j.progress === null ? 0 : Math.round(100 * j.progress);
      const bar = el("span", {class: "bar"}, el("span", {style: `width:${pct}%`}));
      const actions = el("td", {});
      if (j.state === "queued" || j.state === "running")
        actions.append(el("button", {class: "small", text: "cancel",
          onclick: async () => { await api(`/api/queue/${j.id}/cancel`, {}); refreshQueue(); }}));
      if (j.state === "failed" || j.state === "cancelled")
        actions.append(el("button", {class: "small", text: "retry",
          onclick: async () => { await api(`/api/queue/${j.id}/retry`, {}); refreshQueue(); }}));
      actions.append(el("button", {class: "small", text: "live",
        onclick: () => { location.hash = "live"; watch({job: j.id}); }}));
      const errCell = el("td", {text: j.error ? j.error : fmtErr(j.final_error)});
      body.append(el("tr", {id: "job-row-" + j.id},
        el("td", {text: j.id}), el("td", {text: j.name}),
        el("td", {class: "state-" + j.state, text: j.state + (j.cancel_requested ? " (cancel requested)" : "")}),
        el("td", {}, bar, ` ${j.iteration}/${j.iterations}`), errCell,
        el("td", {text: fmtTime(j.wall_s)}), el("td", {text: j.group ?? ""}), actions));
    }
  } else {
    $("queue-folder").textContent = data.error;
  }
  if (!$("page-run").classList.contains("hidden")) queueTimer = setTimeout(refreshQueue, 2000);
}

function initRun() {
  $("job-submit").onclick = submitJob;
  $("alloc-submit").onclick = allocateQueue;
  for (const id of ["job-mode", "job-target", "job-ranks"]) $(id).onchange = updateQueueCommand;
}

// ------------------------------------------------------------------------- live view
let liveSource = null;
let liveWatch = null;
let liveIteration = -1;

function imageControls(container, onchange) {
  const cm = el("select", {class: "cmap"});
  for (const c of ["gray", "viridis", "magma", "cyclic"]) cm.append(el("option", {value: c, text: c}));
  const lo = el("input", {type: "number", class: "tiny low", value: "0.5", min: "0", max: "100", step: "0.5"});
  const hi = el("input", {type: "number", class: "tiny high", value: "99.5", min: "0", max: "100", step: "0.5"});
  const bar = el("input", {type: "checkbox", class: "scalebar"});
  bar.checked = true;
  container.append(el("label", {}, "colour map ", cm), el("label", {}, "contrast % ", lo, " – ", hi),
                   el("label", {}, bar, " scale bar"));
  for (const n of [cm, lo, hi, bar]) n.addEventListener("change", onchange);
  return () => `cmap=${cm.value}&low=${lo.value}&high=${hi.value}&bar=${bar.checked ? 1 : 0}`;
}

let liveImageArgs = null;

function liveQuery() {
  if (!liveWatch) return "";
  return liveWatch.job ? `job=${liveWatch.job}` : `dir=${encodeURIComponent(liveWatch.dir)}`;
}

function refreshLiveImages() {
  if (!liveWatch || liveIteration < 0) return;
  const q = `${liveQuery()}&${liveImageArgs()}&t=${liveIteration}`;
  $("live-phase").src = `/api/live/image?kind=phase&${q}`;
  $("live-amplitude").src = `/api/live/image?kind=amplitude&${q}`;
  $("live-probe").src = `/api/live/image?kind=probe&mode=${$("live-mode").value || 0}&${q}&cmap=gray`;
}

function drawCurve(canvas, errors) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, w, h);
  const ys = (errors || []).filter((e) => e > 0 && isFinite(e));
  if (ys.length < 1) { ctx.fillStyle = "#6b7280"; ctx.fillText("no errors yet", 10, 20); return; }
  const lmin = Math.log10(Math.min(...ys)), lmax = Math.log10(Math.max(...ys));
  const span = Math.max(lmax - lmin, 1e-6);
  const L = 58, R = 8, T = 10, B = 24;
  ctx.strokeStyle = "#d9dee7"; ctx.strokeRect(L, T, w - L - R, h - T - B);
  ctx.fillStyle = "#1d2330"; ctx.font = "11px sans-serif";
  ctx.fillText(Math.pow(10, lmax).toExponential(2), 2, T + 8);
  ctx.fillText(Math.pow(10, lmin).toExponential(2), 2, h - B);
  ctx.fillText("1", L, h - 8);
  ctx.fillText(String(errors.length), w - R - 20, h - 8);
  ctx.fillText("iteration", w / 2 - 20, h - 8);
  ctx.strokeStyle = "#2457c5"; ctx.lineWidth = 1.5; ctx.beginPath();
  errors.forEach((e, i) => {
    if (!(e > 0)) return;
    const x = L + (errors.length > 1 ? i / (errors.length - 1) : 0.5) * (w - L - R);
    const y = T + (1 - (Math.log10(e) - lmin) / span) * (h - T - B);
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.stroke();
}

function onLive(p) {
  const st = p.status || {};
  $("live-state").textContent = p.state;
  $("live-iteration").textContent = st.iteration ?? "—";
  $("live-total").textContent = st.iterations ?? (p.job ? p.job.iterations : "—");
  const errs = st.error || [];
  $("live-error").textContent = fmtErr(errs[errs.length - 1]);
  $("live-eta").textContent = p.state === "running" ? fmtTime(st.eta_s) : "—";
  const follow = st.follow;  // run --follow: rows arrived / planned
  $("live-rows-box").classList.toggle("hidden", !follow);
  if (follow) {
    $("live-rows").textContent = `${follow.rows}/${follow.planned}` +
      (follow.aborted ? " (scan ended early)" : "");
  }
  const moved = st.positions;  // position refinement: how far the positions moved
  $("live-moved-box").classList.toggle("hidden", !moved);
  if (moved) {
    $("live-moved").textContent = `${moved.rms_shift_px.toFixed(2)} px RMS ` +
      `(max ${moved.max_shift_px.toFixed(2)})`;
  }
  drawCurve($("live-curve"), errs);
  if (st.iteration !== undefined && st.iteration !== liveIteration) {
    liveIteration = st.iteration;
    refreshLiveImages();
  }
  const btn = $("live-open-result");
  btn.classList.toggle("hidden", !p.result);
  btn.onclick = () => { location.hash = "results"; openResult("a", p.result); };
}

function watch(target) {
  if (liveSource) liveSource.close();
  liveWatch = target;
  liveIteration = -1;
  for (const id of ["live-phase", "live-amplitude", "live-probe"]) $(id).removeAttribute("src");
  if (target.job) $("live-job").value = String(target.job);
  liveSource = new EventSource(`/api/live/events?${liveQuery()}`);
  liveSource.onmessage = (ev) => {
    const p = JSON.parse(ev.data);
    onLive(p);
    if (["done", "failed", "cancelled"].includes(p.state)) liveSource.close();
  };
  liveSource.onerror = () => { $("live-state").textContent = "connection lost"; };
}

async function refreshJobList() {
  const {ok, data} = await api("/api/queue");
  if (!ok) return;
  const sel = $("live-job");
  const keep = liveWatch && liveWatch.job ? String(liveWatch.job) : sel.value;
  sel.textContent = "";
  sel.append(el("option", {value: "", text: "—"}));
  for (const j of data.jobs) sel.append(el("option", {value: j.id, text: `${j.id} ${j.name} (${j.state})`}));
  sel.value = keep;
}

function initLive() {
  liveImageArgs = imageControls($("live-controls"), refreshLiveImages);
  $("live-mode").onchange = refreshLiveImages;
  $("live-watch").onclick = () => {
    const job = $("live-job").value;
    if (job) watch({job: parseInt(job, 10)});
    else if ($("live-dir").value) watch({dir: $("live-dir").value});
  };
}

// ------------------------------------------------------------------------- results
const panels = {};

function makePanel(name) {
  const root = $("panel-" + name);
  root.append($("panel-template").content.cloneNode(true));
  const panel = {root, path: null};
  const controls = root.querySelector(".controls");
  const view = el("select", {class: "view"});
  for (const v of ["phase", "amplitude", "probe", "probe_phase"]) view.append(el("option", {value: v, text: v}));
  const mode = el("input", {type: "number", class: "tiny mode", value: "0", min: "0"});
  controls.append(el("label", {}, "view ", view), el("label", {}, "mode ", mode));
  const args = imageControls(controls, () => panelImage(panel));
  view.onchange = mode.onchange = () => panelImage(panel);
  panel.args = () => `kind=${view.value}&mode=${mode.value}&${args()}`;
  panels[name] = panel;
}

function panelImage(panel) {
  if (!panel.path) return;
  panel.root.querySelector(".p-image").src =
    `/api/results/image?path=${encodeURIComponent(panel.path)}&${panel.args()}`;
}

async function openResult(name, path) {
  const panel = panels[name];
  const r = await fetch("/api/results/info?path=" + encodeURIComponent(path));
  const info = await r.json();
  const title = panel.root.querySelector(".p-title");
  if (!r.ok) { title.textContent = info.error || "not found"; return; }
  panel.path = info.path;
  title.textContent = `${info.folder}: object ${info.object_shape.join("×")}, ` +
    `${info.probe_modes} probe mode(s), pixel ${(info.pixel_size_m * 1e9).toPrecision(3)} nm`;
  title.classList.remove("muted");
  panel.root.querySelector(".p-body").classList.remove("hidden");
  panel.root.querySelector(".mode").max = info.probe_modes - 1;
  panelImage(panel);
  drawCurve(panel.root.querySelector(".p-curve"), info.error);
  const dl = panel.root.querySelector(".downloads");
  dl.textContent = "download: ";
  for (const [fmt, label] of [["hdf5", "HDF5"], ["tiff", "TIFF"], ["png", "PNG"], ["csv", "CSV"], ["error-csv", "error CSV"]])
    dl.append(el("a", {href: `/api/results/download?path=${encodeURIComponent(info.path)}&fmt=${fmt}`, text: label}));
  const prov = panel.root.querySelector(".p-prov tbody");
  prov.textContent = "";
  for (const [k, v] of Object.entries(info.provenance))
    prov.append(el("tr", {}, el("td", {text: k}), el("td", {text: typeof v === "object" ? JSON.stringify(v) : String(v)})));
  panel.root.querySelector(".p-config").textContent = info.config_yaml;
  for (const a of document.querySelectorAll("#tree a.sel")) a.classList.remove("sel");
}

async function loadTree() {
  const {data} = await api("/api/results/tree");
  const root = {};
  for (const r of data.results || []) {
    let node = root;
    for (const part of r.folder.split("/")) node = (node[part] ||= {});
    node["\u0000result"] = r;
  }
  const render = (node) => {
    const ul = el("ul");
    for (const [name, child] of Object.entries(node).sort()) {
      if (name === "\u0000result") continue;
      const li = el("li");
      const r = child["\u0000result"];
      if (r) {
        li.append(el("a", {text: name, "data-path": r.path, title: r.path,
                           onclick: () => openResult("a", r.path)}), " ",
                  el("button", {class: "small", text: "B", title: "open on the right",
                                onclick: () => openResult("b", r.path)}));
      } else li.append(el("span", {class: "folder", text: name + "/"}));
      if (Object.keys(child).some((k) => k !== "\u0000result")) li.append(render(child));
      ul.append(li);
    }
    return ul;
  };
  const tree = $("tree");
  tree.textContent = "";
  tree.append(data.results && data.results.length ? render(root) : el("p", {class: "muted", text: "no result.h5 under the root yet"}));
}

// ------------------------------------------------------------------------- start
async function start() {
  const {ok, data} = await api("/api/config/schema");
  if (!ok) { document.body.textContent = data.error; return; }
  schema = data;
  buildForm();
  setValues(defaults());
  initParams();
  initRun();
  initLive();
  makePanel("a");
  makePanel("b");
  $("tree-refresh").onclick = loadTree;
  show(location.hash.slice(1) || "params");
  document.body.dataset.ready = "yes";
}
start();
api("/api/info").then(({data}) => {
  $("root-info").textContent = `ptychompi ${data.version} · root ${data.root}`;
});
