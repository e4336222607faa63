// tailor ui: every form is drawn from /api/info and /api/train-schema (the CLI's own options); every action is a
// tailor command queued to the worker; the page polls the job for progress and results.
"use strict";
const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") e.textContent = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  kids.forEach((k) => e.append(k));
  return e;
};
let INFO = null, TRAINED = [];
const watch = {};  // tab -> job id shown in that tab

async function call(url, body) {
  const opts = body === undefined ? {} : {method: "POST", headers: {"content-type": "application/json"},
                                          body: JSON.stringify(body)};
  const r = await fetch(url, opts);
  const data = await r.json();
  if (!r.ok) throw new Error(data.error || r.statusText);
  return data;
}
function showError(tab, msg) { const e = $(tab + "-error"); e.textContent = msg || ""; e.classList.toggle("on", !!msg); }

// ------------------------------------------------------------------ fields from the CLI's options
function fieldInput(f, prefix) {
  const id = `${prefix}-${f.name}`, dflt = f.default;
  let input;
  if (f.type === "bool") {
    input = el("input", {type: "checkbox", id});
    input.checked = dflt === true || dflt === "True" || dflt === "true";
    const lab = el("label", {class: "bool", title: f.help}, input, f.flag || f.name);
    input.dataset.default = String(input.checked);
    return lab;
  }
  if (f.choices) {
    input = el("select", {id});
    f.choices.forEach((c) => input.append(el("option", {value: c, text: c})));
    if (dflt !== null && dflt !== undefined) input.value = String(dflt);
  } else if (f.multiple) {
    input = el("textarea", {id, rows: 1, placeholder: "one per line"});
    input.value = Array.isArray(dflt) ? dflt.join("\n") : (dflt ?? "");
  } else {
    input = el("input", {id, type: f.type === "int" || f.type === "float" ? "number" : "text"});
    if (f.type === "float") input.step = "any";
    input.value = dflt ?? "";
  }
  input.dataset.default = input.value;
  const lab = el("label", {title: f.help}, (f.flag || f.name) + (f.required ? " *" : ""));
  if (f.from_base) lab.append(el("span", {class: "badge", text: "base default"}));
  lab.append(input);
  if (f.upload) lab.append(uploadButton(input, f));
  return lab;
}
// upload into the workspace: a repeatable field gets one path per line, another one file's path or several's folder
function uploadButton(input, f) {
  const up = el("input", {type: "file", multiple: "", class: "f-upload", title: "upload into the workspace"});
  up.addEventListener("change", async () => {
    const folder = `uploads/${f.name}-${Date.now()}`;
    const tab = input.closest("section").id.replace("tab-", "");
    const paths = await uploadFiles(up.files, folder, tab);
    if (!paths.length) return;
    if (f.multiple) input.value = [input.value, ...paths].filter((s) => s).join("\n");
    else input.value = paths.length === 1 ? paths[0] : folder;
  });
  return up;
}
function renderFields(container, fields, prefix) {
  container.innerHTML = "";
  fields.forEach((f) => container.append(fieldInput(f, prefix)));
}
// only values that differ from the shown default are sent: the CLI applies its own defaults to the rest
function readFields(fields, prefix) {
  const out = {};
  for (const f of fields) {
    const input = $(`${prefix}-${f.name}`);
    if (!input) continue;
    const v = f.type === "bool" ? String(input.checked) : input.value;
    if (v === input.dataset.default && !f.required) continue;
    if (f.type === "bool") out[f.name] = input.checked;
    else if (f.multiple) out[f.name] = v.split("\n").map((s) => s.trim()).filter((s) => s);
    else if (v.trim() !== "") out[f.name] = v.trim();
  }
  return out;
}

// ------------------------------------------------------------------ generate
function pathChoices(flag) {
  const names = (INFO.shipped[flag] || []).concat(TRAINED.filter((t) => t.flag === flag).map((t) => t.path));
  const listId = "list-" + flag.replace(/\W/g, "");
  let list = $(listId);
  if (!list) { list = el("datalist", {id: listId}); document.body.append(list); }
  list.innerHTML = "";
  names.forEach((n) => list.append(el("option", {value: n})));
  return listId;
}
function addAttachment(flag, path = "") {
  const kind = INFO.generate.attachments.find((k) => k.flag === flag);
  const row = el("div", {class: "attachment"});
  row.dataset.flag = flag;
  const f = (cls, attrs) => el("input", {class: cls, type: "text", ...attrs});
  const pathIn = f("a-path", {list: pathChoices(flag), placeholder: "trained folder or shipped name", value: path});
  const refs = f("a-refs", {placeholder: kind.refs ? "reference images (upload)" : "(no references)"});
  const upload = el("input", {type: "file", multiple: "", class: "a-upload"});
  upload.addEventListener("change", async () => {
    const paths = await uploadFiles(upload.files, "uploads/references", "generate");
    refs.value = refs.value ? refs.value + "+" + paths.join("+") : paths.join("+");
  });
  const num = (cls, ph) => el("input", {class: cls, type: "number", step: "any", placeholder: ph});
  const remove = el("button", {text: "x", title: "remove", onclick: () => row.remove()});
  row.append(el("b", {text: `${flag} `}), el("span", {class: "help", text: kind.help}),
    el("div", {class: "grid"}, el("label", {}, "path", pathIn), el("label", {}, "references", refs),
      el("label", {}, "weight", num("a-weight", "1")), el("label", {}, "start", num("a-start", "0")),
      el("label", {}, "end", num("a-end", "1")), remove), kind.refs ? upload : "");
  $("attachments").append(row);
  return row;
}
function readAttachments() {
  return [...document.querySelectorAll("#attachments .attachment")].map((row) => {
    const q = (c) => row.querySelector("." + c).value.trim();
    return {flag: row.dataset.flag, path: q("a-path"), refs: q("a-refs") ? q("a-refs").split("+") : [],
            weight: q("a-weight"), start: q("a-start"), end: q("a-end")};
  });
}
function generateForm(dry) {
  return {prompt: $("prompt").value, settings: readFields(INFO.generate.settings, "gen"),
          other: readFields(INFO.generate.other, "genx"), attachments: readAttachments(), dry};
}
async function submit(tab, url, body, commandBox) {
  showError(tab, "");
  try {
    const r = await call(url, body);
    if (commandBox) $(commandBox).textContent = r.command;
    if (r.job) { watch[tab] = r.job.id; $(tab + "-status").textContent = "queued"; }
    return r;
  } catch (e) { showError(tab, e.message); return null; }
}

// ------------------------------------------------------------------ uploads
async function uploadFiles(files, folder, tab) {
  const paths = [];
  showError(tab, "");
  for (const file of files) {
    const url = `/api/upload?folder=${encodeURIComponent(folder)}&name=${encodeURIComponent(file.name)}`;
    const r = await fetch(url, {method: "POST", body: file});
    const data = await r.json();
    if (!r.ok) { showError(tab, data.error); continue; }
    paths.push(data.path);
  }
  return paths;
}

// ------------------------------------------------------------------ train
let TRAIN = null, trainFolder = null, trainImages = "";
async function loadTrainSchema() {
  TRAIN = await call("/api/train-schema?method=" + encodeURIComponent($("train-method").value));
  $("train-summary").textContent = TRAIN.summary + (TRAIN.paper ? ` (${TRAIN.paper})` : "");
  renderFields($("train-method-options"), TRAIN.method_options, "tm");
  renderFields($("train-options"), TRAIN.train_options, "tt");
}
function trainForm(extra = {}) {
  const data = document.querySelector("input[name=data]:checked").value;
  return {method: TRAIN.method, options: {...readFields(TRAIN.method_options, "tm"),
          ...readFields(TRAIN.train_options, "tt")},
          images: data === "images" ? trainImages : "", subject: data === "subject" ? $("train-subject").value : "",
          ...extra};
}
function lossPlot(records) {
  const svg = $("loss-plot"), W = 420, H = 220, L = 50, B = 24;
  const pts = records.filter((r) => Number.isFinite(r.loss));
  const vals = pts.map((r) => r.loss).concat(records.filter((r) => Number.isFinite(r.val_loss)).map((r) => r.val_loss));
  let html = `<text x="${L}" y="14" font-size="11">loss (blue), validation loss (orange)</text>`;
  if (pts.length) {
    const x0 = Math.min(...pts.map((r) => r.step)), x1 = Math.max(...pts.map((r) => r.step), x0 + 1);
    const y0 = Math.min(...vals), y1 = Math.max(...vals, y0 + 1e-6);
    const X = (x) => L + (x - x0) / (x1 - x0) * (W - L - 10), Y = (y) => H - B - (y - y0) / (y1 - y0) * (H - B - 24);
    html += `<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="${
      pts.map((r) => `${X(r.step)},${Y(r.loss)}`).join(" ")}"/>`;
    records.filter((r) => Number.isFinite(r.val_loss)).forEach((r) => {
      html += `<circle cx="${X(r.step)}" cy="${Y(r.val_loss)}" r="3" fill="#ff7f0e"/>`; });
    html += `<text x="2" y="${Y(y1) + 4}" font-size="10">${y1.toPrecision(3)}</text>` +
      `<text x="2" y="${Y(y0)}" font-size="10">${y0.toPrecision(3)}</text>` +
      `<text x="${L}" y="${H - 6}" font-size="10">step ${x0}</text>` +
      `<text x="${W - 60}" y="${H - 6}" font-size="10">step ${x1}</text>`;
  }
  html += `<rect x="${L}" y="20" width="${W - L - 10}" height="${H - B - 20}" fill="none" stroke="#999"/>`;
  svg.innerHTML = html;
}

// ------------------------------------------------------------------ evaluate / convert
function toolTab(tab) {
  const sel = $(tab + "-command"), cmds = INFO.tools[tab];
  Object.keys(cmds).forEach((c) => sel.append(el("option", {value: c, text: "tailor " + c})));
  const draw = () => {
    renderFields($(tab + "-form"), cmds[sel.value], tab + "-opt");
    const json = cmds[sel.value].find((f) => f.flag === "--json");  // scores as a table
    if (json) $(`${tab}-opt-${json.name}`).checked = true;
  };
  sel.addEventListener("change", draw);
  draw();
  $(tab + "-run").addEventListener("click", () => submit(tab, "/api/tool",
    {command: sel.value, options: readFields(cmds[sel.value], tab + "-opt")}));
}
function table(tableEl, obj) {
  tableEl.innerHTML = "";
  const rows = [];
  const walk = (prefix, v) => {
    if (v && typeof v === "object" && !Array.isArray(v)) Object.entries(v).forEach(([k, x]) => walk(prefix ? `${prefix}.${k}` : k, x));
    else rows.push([prefix, Array.isArray(v) ? JSON.stringify(v) : (typeof v === "number" ? +v.toPrecision(4) : v)]);
  };
  walk("", obj);
  rows.slice(0, 200).forEach(([k, v]) => tableEl.append(el("tr", {}, el("td", {text: k}), el("td", {text: String(v)}))));
}

// ------------------------------------------------------------------ polling
function images(container, paths) {
  const have = [...container.querySelectorAll("img")].map((i) => i.dataset.path).join("|");
  if (have === paths.join("|")) return;
  container.innerHTML = "";
  paths.forEach((p) => container.append(el("img", {src: "/files/" + p + "?t=" + Date.now(), "data-path": p, title: p})));
}
async function poll() {
  try {
    const jobs = await call("/api/jobs");
    const running = jobs.find((j) => j.state === "running"), queued = jobs.filter((j) => j.state === "queued").length;
    $("queue").textContent = running ? `running ${running.kind} ${running.id}, ${queued} queued` : `idle, ${queued} queued`;
    const t = $("jobs");
    t.innerHTML = "<tr><th>id</th><th>kind</th><th>state</th><th>command</th><th></th></tr>";
    jobs.forEach((j) => t.append(el("tr", {onclick: () => showLog(j.id)}, el("td", {text: j.id}), el("td", {text: j.kind}),
      el("td", {text: j.state + (j.rc !== null ? ` (${j.rc})` : "")}), el("td", {text: j.meta.command || ""}),
      el("td", {}, ["queued", "running"].includes(j.state) ?
        el("button", {text: "cancel", onclick: () => call(`/api/jobs/${j.id}/cancel`, {})}) : ""))));
    for (const [tab, id] of Object.entries(watch)) await showJob(tab, await call("/api/jobs/" + id));
  } catch (e) { $("queue").textContent = "server unreachable"; }
  setTimeout(poll, 700);
}
async function showLog(id) {
  const d = await call("/api/jobs/" + id);
  $("job-log").textContent = d.log || "(no output yet)";
}
async function showJob(tab, d) {
  const p = d.progress, j = d.job, r = d.results;
  let text = `${j.kind} ${j.id}: ${j.state}`;
  if (p && j.state === "running") text += ` — ${p.what} ${p.step}/${p.total}${p.info ? ", " + p.info : ""}`;
  if (j.state === "done") text += ` in ${(j.ended - j.started).toFixed(1)} s`;
  $(tab + "-status").textContent = text;
  showError(tab, j.state === "failed" ? (d.error || "the command failed; see the Jobs tab") : "");
  if (tab === "generate" && r.images) {
    images($("gallery"), r.images);
    $("generation-json").href = "/files/" + r.generation;
    $("generation-json").textContent = "generation.json";
  }
  if (tab === "train") {
    if (p && p.what === "training") { $("train-progress").max = p.total; $("train-progress").value = p.step; }
    if (j.state === "done") $("train-progress").value = $("train-progress").max;
    lossPlot(r.records || []);
    images($("samples"), r.samples || []);
    trainFolder = r.artifact ? r.folder : null;
    $("train-use").disabled = !trainFolder;
  }
  if (tab === "evaluate" || tab === "convert") {
    const json = d.json;
    if (json) table($(tab + "-table"), json);
    else if (j.state === "done") $(tab + "-table").innerHTML = `<tr><td><pre>${d.log.replace(/[<&]/g, " ")}</pre></td></tr>`;
    images($(tab + "-images"), r.images || []);
  }
  if (!["queued", "running"].includes(j.state)) delete watch[tab];
}

// ------------------------------------------------------------------ start
async function start() {
  INFO = await call("/api/info");
  TRAINED = await call("/api/trained");
  $("where").textContent = `base ${INFO.base} · workspace ${INFO.workspace}`;
  document.querySelectorAll("#tabs button").forEach((b) => b.addEventListener("click", () => {
    document.querySelectorAll("#tabs button, .tab").forEach((x) => x.classList.remove("on"));
    b.classList.add("on");
    $("tab-" + b.dataset.tab).classList.add("on");
  }));
  renderFields($("gen-settings"), INFO.generate.settings, "gen");
  renderFields($("gen-other"), INFO.generate.other, "genx");
  INFO.generate.attachments.forEach((k) => $("attach-kind").append(
    el("option", {value: k.flag, text: `${k.flag}  (${k.methods.join(", ") || "any trained artifact"})`})));
  $("attach-add").addEventListener("click", () => addAttachment($("attach-kind").value));
  $("generate").addEventListener("click", () => submit("generate", "/api/generate", generateForm(false), "command"));
  $("show-command").addEventListener("click", () => submit("generate", "/api/generate", generateForm(true), "command"));

  INFO.methods.forEach((m) => $("train-method").append(el("option", {value: m.name, text: m.name})));
  INFO.subjects.forEach((s) => $("train-subject").append(el("option", {value: s, text: s})));
  $("train-method").value = INFO.methods.some((m) => m.name === "lora") ? "lora" : INFO.methods[0].name;
  $("train-method").addEventListener("change", loadTrainSchema);
  await loadTrainSchema();
  $("train-upload").addEventListener("change", async () => {
    const folder = `uploads/${TRAIN.method}-${Date.now()}`;
    const paths = await uploadFiles($("train-upload").files, folder, "train");
    trainImages = paths.length ? folder : "";
    $("train-uploaded").textContent = paths.length ? `${paths.length} images in ${folder}` : "";
    if (paths.length) document.querySelector("input[name=data][value=images]").checked = true;
  });
  let lastTrain = null;
  $("train-start").addEventListener("click", async () => {
    const r = await submit("train", "/api/train", trainForm(), "train-command-line");
    if (r) lastTrain = r.job;
  });
  $("train-command").addEventListener("click", () => submit("train", "/api/train", trainForm({dry: true}), "train-command-line"));
  $("train-stop").addEventListener("click", () => watch.train && call(`/api/jobs/${watch.train}/cancel`, {}));
  $("train-resume").addEventListener("click", async () => {
    if (!lastTrain) return showError("train", "nothing to resume yet; start a training first.");
    const r = await submit("train", "/api/train", {...lastTrain.meta.form, out: lastTrain.out, resume: true}, "train-command-line");
    if (r) lastTrain = r.job;
  });
  $("train-use").addEventListener("click", async () => {
    TRAINED = await call("/api/trained");
    const t = TRAINED.find((x) => x.path === trainFolder);
    addAttachment(t ? t.flag : "--apply", trainFolder);
    document.querySelector("#tabs button[data-tab=generate]").click();
  });
  toolTab("evaluate");
  toolTab("convert");
  poll();
}
start().catch((e) => showError("generate", "the page could not load: " + e.message));
