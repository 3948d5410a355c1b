// my_llm playground: one page, six tabs, plain JavaScript.
// No framework on purpose: a learner can read this file top to bottom and see every request the page makes
// (the HTTP API is in scripts/playground/server.py) and how the answers are drawn.
"use strict";

// ---------------------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

// el("li", {class: "x", "data-i": 3}, "text", child) -> <li class="x" data-i="3">text<child></li>.
// Text always goes in as text (never as HTML), so a model's output cannot inject markup into the page.
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== null && value !== undefined && value !== false) node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// One way to call the server: GET when there is no body, POST JSON otherwise. Any failure (no connection,
// an HTTP error, a {"error": ...} answer) becomes a thrown Error with a message fit to show to the learner.
async function api(path, body) {
  const options = body === undefined ? {}
    : {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)};
  let response;
  try {
    response = await fetch(path, options);
  } catch {
    throw new Error(`连不上练习场服务器（${path}）：它还在运行吗？`);
  }
  if (!response.ok) throw await responseError(response);
  const data = await response.json().catch(() => null);
  if (data === null) throw new Error(`服务器的回答不是 JSON（${path}）`);
  if (data.error) throw new Error(data.error);
  return data;
}

// The server answers a bad request with HTTP 4xx and {"error": "one line"}; anything else gets the status.
async function responseError(response) {
  const data = await response.json().catch(() => null);
  const detail = data && (data.error || (typeof data.detail === "string" ? data.detail : null));
  return new Error(detail || `服务器出错：HTTP ${response.status} ${response.statusText}`);
}

function showError(box, err) {
  box.textContent = err instanceof Error ? err.message : String(err);
  box.hidden = false;
}

function clearError(box) {
  box.textContent = "";
  box.hidden = true;
}

// Ids like "stage2_rnn_lstm/runs/lstm" travel in the URL path: encode each part, keep the slashes.
function pathOf(prefix, id) {
  return prefix + id.split("/").map(encodeURIComponent).join("/");
}

// Short numbers for tables and axes: 0.8734, 12.5, 1,234, 3.2e-4.
function formatNumber(value) {
  if (typeof value !== "number" || !Number.isFinite(value)) return String(value);
  if (Number.isInteger(value)) return value.toLocaleString("en-US");
  const size = Math.abs(value);
  if (size >= 1000) return Math.round(value).toLocaleString("en-US");
  if (size !== 0 && size < 0.001) return value.toExponential(1);
  return String(Number(value.toPrecision(4)));
}

function percent(p) {
  return `${(100 * p).toFixed(1)}%`;
}

// Newlines and spaces are invisible in a list of tokens; show them as symbols a learner can see.
function visibleToken(text) {
  return text.replace(/\n/g, "↵").replace(/ /g, "␣").replace(/\t/g, "⇥") || "∅";
}

// ---------------------------------------------------------------------------------------------------------
// Tabs: each tab loads its data the first time it is shown; the address (#generate) remembers the tab
// ---------------------------------------------------------------------------------------------------------

const TAB_LOADERS = {models: loadModels, runs: loadRuns, results: loadResults};
const loadedTabs = new Set();

function showTab(name) {
  if (!$(`panel-${name}`)) name = "models";
  for (const button of document.querySelectorAll("#tabs [data-tab]")) {
    button.setAttribute("aria-selected", String(button.dataset.tab === name));
  }
  for (const panel of document.querySelectorAll(".panel")) panel.hidden = panel.id !== `panel-${name}`;
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
  if (TAB_LOADERS[name] && !loadedTabs.has(name)) {
    loadedTabs.add(name);
    TAB_LOADERS[name]();
  }
}

// ---------------------------------------------------------------------------------------------------------
// 1. Models
// ---------------------------------------------------------------------------------------------------------

const STAGE_NAMES = {
  1: "第 1 阶段 · MLP 文本分类", 2: "第 2 阶段 · RNN / LSTM", 3: "第 3 阶段 · 注意力 seq2seq",
  4: "第 4 阶段 · Transformer", 5: "第 5 阶段 · GPT",
};
const TASK_NAMES = {classify: "分类", translate: "翻译", generate: "生成"};
const KIND_NAMES = {best: "checkpoints/ 里的最好模型", last: "训练的最新状态（last.pt）"};

let catalog = {models: [], missing: []};
let catalogReady = null;          // the promise of the first /api/models answer; other tabs wait for it

function stageNumber(stage) {
  const match = /stage(\d+)/.exec(stage || "");
  return match ? Number(match[1]) : 0;
}

function stageName(stage) {
  return STAGE_NAMES[stageNumber(stage)] || stage;
}

// A model serves one or more tasks (a multi-task GPT translates and generates).
function serves(model, task) {
  return (model.tasks || [model.task]).includes(task);
}

function modelsFor(task) {
  return catalog.models.filter((m) => serves(m, task));
}

// Classify and translate ask every model of the task; runs' last.pt (a training's latest state) only on request,
// since a course folder soon holds many of them and each answer costs time.
// One model per stage (its newest best checkpoint: the catalog lists best ones first, newest first), or, when the
// learner asks for it, every checkpoint and run there is (slower: each one is loaded once).
function chosenModels(task, everyModel) {
  const models = modelsFor(task);
  if (everyModel) return models;
  const first = new Map();
  for (const m of models) if (!first.has(m.stage)) first.set(m.stage, m);
  return [...first.values()];
}

// A model's short name for card titles; an id the catalog does not know is shown as it is.
function modelLabel(id) {
  const model = catalog.models.find((m) => m.id === id);
  return model ? (model.label || model.model || id) : id;
}

function loadModels() {
  clearError($("models-error"));
  catalogReady = api("/api/models")
    .then((data) => {
      catalog = {models: data.models || [], missing: data.missing || [], unreadable: data.unreadable || []};
    })
    .catch((err) => showError($("models-error"), err))
    .then(() => {
      renderModels();
      fillPaneModels();
    });
  return catalogReady;
}

function renderModels() {
  const list = $("models-list");
  list.replaceChildren();
  if (!catalog.models.length) list.append(el("p", {class: "hint"}, "还没有找到训练好的模型。"));
  const stages = [...new Set(catalog.models.map((m) => m.stage))].sort((a, b) => stageNumber(a) - stageNumber(b));
  // One compact table per stage, a row per (task, model): a course folder soon holds dozens of checkpoints.
  for (const stage of stages) {
    const rows = Object.keys(TASK_NAMES).flatMap((task) =>
      catalog.models.filter((m) => m.stage === stage && serves(m, task)).map((m) => modelRow(m, task)));
    list.append(el("div", {class: "stage-group", "data-stage": stage}, el("h2", {}, stageName(stage)),
      el("table", {class: "models"},
        el("thead", {}, el("tr", {}, ...["任务", "模型", "数据集", "来源", "训练进度"].map((h) => el("th", {}, h)))),
        el("tbody", {}, ...rows))));
  }
  // .pt files the catalog found but cannot use: said, so that a model does not just vanish from the list
  if (catalog.unreadable && catalog.unreadable.length) {
    list.append(el("div", {class: "stage-group", "data-testid": "unreadable"}, el("h2", {}, "找到但用不了的文件"),
      el("ul", {}, ...catalog.unreadable.map((item) => el("li", {}, el("code", {}, item.id), "：", item.why)))));
  }
  renderMissing();
}

function modelRow(model, task) {
  return el("tr", {class: "model", "data-model": model.id, "data-task": task},
    el("td", {}, TASK_NAMES[task]),
    el("td", {}, el("strong", {}, model.label || model.model), el("div", {class: "model-id"}, el("code", {}, model.id))),
    el("td", {}, model.dataset), el("td", {}, KIND_NAMES[model.kind] || model.kind),
    el("td", {}, formatProgress(model.progress)));
}

// "progress" says how far the training got (a line of text, a fraction, or a few named numbers).
function formatProgress(progress) {
  if (progress === null || progress === undefined || progress === "") return "";
  if (typeof progress === "number") return progress <= 1 ? `进度 ${percent(progress)}` : `进度 ${progress}`;
  if (typeof progress === "object") {
    return Object.entries(progress).map(([k, v]) => `${k} ${typeof v === "number" ? formatNumber(v) : v}`).join(", ");
  }
  return String(progress);
}

function renderMissing() {
  const list = $("models-missing");
  list.replaceChildren();
  if (!catalog.missing.length) list.append(el("li", {class: "hint"}, "每个阶段的模型都在了。"));
  for (const item of catalog.missing) {
    const copy = el("button", {class: "copy", "data-testid": "copy-command"}, "复制");
    copy.addEventListener("click", () => copyText(item.command, copy));
    const where = item.hardware ? `（${item.hardware}）` : "";
    const time = item.minutes ? `约 ${formatNumber(item.minutes)} 分钟${where}` : "";
    list.append(el("li", {class: "missing", "data-stage": item.stage},
      el("div", {}, el("strong", {}, `${stageName(item.stage)} · ${TASK_NAMES[item.task] || item.task}`), " ",
        item.what || "", " ", el("span", {class: "hint"}, time)),
      el("div", {class: "command"}, el("code", {}, item.command), copy)));
  }
}

// The clipboard API needs a secure page (localhost is one); older browsers get the select-and-copy way.
async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = el("textarea", {}, text);
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  button.textContent = "已复制";
  setTimeout(() => { button.textContent = "复制"; }, 1500);
}

// ---------------------------------------------------------------------------------------------------------
// 2. Classify: one request, every classifier answers; the server times each one
// ---------------------------------------------------------------------------------------------------------

async function classify() {
  const button = $("classify-run"), results = $("classify-results");
  clearError($("classify-error"));
  results.replaceChildren();
  button.disabled = true;
  try {
    await catalogReady;
    if (!$("classify-text").value.trim()) throw new Error("请先输入一段文字。");
    const models = chosenModels("classify", $("classify-last").checked).map((m) => m.id);
    if (!models.length) throw new Error("没有找到分类模型：先在「模型」页看看怎么训练一个。");
    // the first request for a model loads it (a second or more): say so while waiting
    results.append(el("div", {class: "hint"}, "分类中……第一次用到的模型要先加载，会慢一些。"));
    const data = await api("/api/classify", {text: $("classify-text").value, models});
    results.replaceChildren();
    results.append(...data.results.map(classifyCard));
  } catch (err) {
    showError($("classify-error"), err);
  } finally {
    button.disabled = false;
  }
}

function classifyCard(result) {
  const card = el("div", {class: "card", "data-model": result.model, "data-testid": "classify-card"},
    el("h3", {}, modelLabel(result.model)), el("div", {class: "hint"}, result.model));
  if (result.error) {
    card.append(el("div", {class: "error"}, result.error));
    return card;
  }
  const rows = Object.entries(result.probabilities).map(([name, p]) => ({name, p, chosen: name === result.label}));
  card.append(el("div", {class: "label"}, "结果：", el("strong", {"data-testid": "classify-label"}, result.label)),
    probabilityBars(rows), el("div", {class: "latency"}, `用时 ${formatNumber(result.ms)} ms` +
      (result.load_ms > 100 ? `（另加载模型 ${formatNumber(result.load_ms)} ms，只在第一次）` : "")));
  return card;
}

// A bar per choice, widest first; the chosen one is highlighted. Used for classes and for next tokens.
function probabilityBars(rows) {
  const sorted = [...rows].sort((a, b) => b.p - a.p);
  return el("div", {class: "bars"}, ...sorted.map((row) => {
    const bar = el("div", {class: "bar"});
    bar.style.width = percent(Math.max(0, Math.min(1, row.p)));
    return el("div", {class: row.chosen ? "bar-row chosen" : "bar-row", "data-testid": "bar-row"},
      el("span", {class: "bar-name"}, row.name), el("span", {class: "bar-track"}, bar),
      el("span", {class: "bar-value"}, percent(row.p)));
  }));
}

// ---------------------------------------------------------------------------------------------------------
// 3. Translate: one request per translator, in parallel, each card filled when its answer arrives
// ---------------------------------------------------------------------------------------------------------

function translateSettings() {
  const beam = $("translate-mode").value === "beam";
  return {
    text: $("translate-text").value,
    beam: beam ? numberFrom("translate-beam", "束宽") : 1,
    alpha: numberFrom("translate-alpha", "长度惩罚 α"),
  };
}

async function translate() {
  const button = $("translate-run"), results = $("translate-results");
  clearError($("translate-error"));
  results.replaceChildren();
  button.disabled = true;
  try {
    await catalogReady;
    if (!$("translate-text").value.trim()) throw new Error("请先输入一句英文。");
    const translators = chosenModels("translate", $("translate-last").checked);
    if (!translators.length) throw new Error("没有找到翻译模型：先在「模型」页看看怎么训练一个。");
    const settings = translateSettings();
    // Promise.all waits for all, but each translateOne fills its own card the moment its answer comes.
    await Promise.all(translators.map((model) => translateOne(model, settings, results)));
  } catch (err) {
    showError($("translate-error"), err);
  } finally {
    button.disabled = false;
  }
}

async function translateOne(model, settings, results) {
  const status = el("div", {class: "hint"}, "翻译中……");
  const card = el("div", {class: "card wide", "data-model": model.id, "data-testid": "translate-card"},
    el("h3", {}, model.label || model.model), el("div", {class: "hint"}, model.id), status);
  results.append(card);
  try {
    const data = await api("/api/translate", {...settings, model: model.id});
    status.replaceWith(el("div", {class: "translation", "data-testid": "translation"}, data.translation),
      el("div", {class: "latency"}, `用时 ${formatNumber(data.ms)} ms`), data.note ? el("div", {class: "hint"}, data.note) : "");
    if (data.attention) card.append(attentionView(data.attention));
    else card.append(el("div", {class: "hint"}, "这个模型不给出注意力权重。"));
  } catch (err) {
    status.replaceWith(el("div", {class: "error"}, err.message));
  }
}

// The heatmap of one layer and one head (or the mean of the heads); selectors only when there is a choice.
function attentionView(attention) {
  const canvas = el("canvas", {class: "heatmap", "data-testid": "heatmap"});
  const layer = el("select", {"aria-label": "层", "data-testid": "attention-layer"},
    ...attention.layers.map((name, i) => el("option", {value: i}, name)));
  const head = el("select", {"aria-label": "头", "data-testid": "attention-head"},
    el("option", {value: "mean"}, "各头平均"),
    ...Array.from({length: attention.heads}, (_, i) => el("option", {value: i}, `第 ${i + 1} 个头`)));
  const redraw = () => {
    const heads = attention.maps[Number(layer.value)];
    const matrix = head.value === "mean" ? meanMatrix(heads) : heads[Number(head.value)];
    drawHeatmap(canvas, matrix, attention.source, attention.target);
  };
  layer.addEventListener("change", redraw);
  head.addEventListener("change", redraw);
  const choices = el("div", {class: "toolbar"});
  if (attention.layers.length > 1) choices.append(el("label", {}, "层 ", layer));
  if (attention.heads > 1) choices.append(el("label", {}, "头 ", head));
  redraw();
  return el("div", {class: "attention"},
    el("div", {class: "hint"}, "注意力：每一行是一个生成的法语词元，颜色越深，它越多地「看」那个英语词元。"),
    choices, canvas);
}

function meanMatrix(matrices) {
  const mean = (r, c) => matrices.reduce((sum, m) => sum + m[r][c], 0) / matrices.length;
  return matrices[0].map((row, r) => row.map((_, c) => mean(r, c)));
}

// Source tokens along x (labels on top, slanted), target tokens along y; one square per weight.
function drawHeatmap(canvas, matrix, source, target) {
  const cell = 26, font = "13px sans-serif";
  const context = canvas.getContext("2d");
  context.font = font;
  const left = 12 + Math.max(0, ...target.map((t) => context.measureText(t).width));
  const top = 12 + 0.75 * Math.max(0, ...source.map((t) => context.measureText(t).width));
  // The slanted labels lean right by about as much as they rise: leave that room after the last column.
  const width = left + cell * source.length + top, height = top + cell * target.length + 10;
  const ratio = window.devicePixelRatio || 1;         // sharp text on high-density screens
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  context.scale(ratio, ratio);
  context.font = font;
  const largest = Math.max(1e-9, ...matrix.flat());   // scale to the largest weight, so faint maps still show
  matrix.forEach((row, r) => row.forEach((weight, c) => {
    context.fillStyle = `rgba(30, 64, 175, ${weight / largest})`;
    context.fillRect(left + c * cell, top + r * cell, cell - 1, cell - 1);
  }));
  context.fillStyle = "#222";
  context.textBaseline = "middle";
  context.textAlign = "right";
  target.forEach((token, r) => context.fillText(token, left - 6, top + r * cell + cell / 2));
  context.textAlign = "left";
  source.forEach((token, c) => {
    context.save();
    context.translate(left + c * cell + cell / 2, top - 6);
    context.rotate(-Math.PI / 4);
    context.fillText(token, 0, 0);
    context.restore();
  });
  // Hovering names the pair and its weight, which the colour only hints at.
  canvas.onmousemove = (event) => {
    const c = Math.floor((event.offsetX - left) / cell), r = Math.floor((event.offsetY - top) / cell);
    const inside = r >= 0 && r < target.length && c >= 0 && c < source.length;
    canvas.title = inside ? `${target[r]} → ${source[c]}:${matrix[r][c].toFixed(3)}` : "";
  };
  canvas.dataset.drawn = `${target.length}x${source.length}`;
}

// ---------------------------------------------------------------------------------------------------------
// 4. Generate: two panes stream tokens from POST /api/generate (server-sent events read by hand)
// ---------------------------------------------------------------------------------------------------------

const panes = [0, 1].map((i) => ({
  select: $(`gen-model-${i}`), output: $(`gen-output-${i}`), stats: $(`gen-stats-${i}`),
  error: $(`gen-error-${i}`), note: $(`gen-note-${i}`), dist: $(`gen-dist-${i}`),
  controller: null, model: null, prompt: "", settings: null, promptIds: [], tokens: [], started: 0,
}));

// Default: the stage 2 LSTM on the left and the stage 5 GPT on the right, to compare an RNN with a Transformer:
// the checkpoints their train.py writes by default, else another best checkpoint of that stage.
const DEFAULT_GENERATORS = [
  {stage: 2, id: "stage2_rnn_lstm/checkpoints/best_lstm_char.pt"},
  {stage: 5, id: "stage5_gpt/checkpoints/gpt_shakespeare_char.pt"},
];

// Picking another model for a pane stops what it is writing and clears it: the text shown is always the
// model's whose name is above it.
panes.forEach((pane) => pane.select.addEventListener("change", () => {
  if (pane.controller) {
    pane.switching = true;          // the abort below ends the old stream: say why, not "stopped: 0 tokens"
    pane.controller.abort();
  }
  pane.output.replaceChildren();
  pane.dist.replaceChildren();
  pane.note.textContent = "";
  pane.stats.textContent = "";
  pane.tokens = [];
}));

function fillPaneModels() {
  const models = modelsFor("generate");
  panes.forEach((pane, i) => {
    const previous = pane.select.value, wanted = DEFAULT_GENERATORS[i];
    pane.select.replaceChildren(...modelOptions(models));
    const fallback = models.find((m) => m.id === wanted.id)
      || models.find((m) => stageNumber(m.stage) === wanted.stage && m.kind !== "last")
      || models.find((m) => stageNumber(m.stage) === wanted.stage) || models[i] || models[0];
    if (models.some((m) => m.id === previous)) pane.select.value = previous;
    else if (fallback) pane.select.value = fallback.id;
  });
}

// One <optgroup> per stage, so a long list of checkpoints stays easy to scan.
function modelOptions(models) {
  const stages = [...new Set(models.map((m) => m.stage))];
  return stages.map((stage) => el("optgroup", {label: stageName(stage)},
    ...models.filter((m) => m.stage === stage).map((m) => el("option", {value: m.id, title: m.id}, m.label || m.id))));
}

// A number box's value, or an error naming the box: an empty or unreadable box must not quietly become 0.
function numberFrom(id, label) {
  const box = $(id);
  if (box.value.trim() === "" || !Number.isFinite(Number(box.value)) || box.validity.badInput) {
    throw new Error(`「${label}」要填一个数（现在是空的或不是数字）`);
  }
  return Number(box.value);
}

function samplingSettings() {
  return {
    temperature: numberFrom("gen-temperature", "温度"),
    top_k: numberFrom("gen-top-k", "top-k"),
    top_p: numberFrom("gen-top-p", "top-p"),
  };
}

async function startGeneration() {
  clearError($("generate-error"));
  await catalogReady;
  if (!modelsFor("generate").length) {
    showError($("generate-error"), "没有找到生成模型：先在「模型」页看看怎么训练一个。");
    return;
  }
  let request;
  try {
    if (!$("gen-prompt").value.trim()) throw new Error("请先写一个开头（prompt）。");
    request = {
      prompt: $("gen-prompt").value, max_new_tokens: numberFrom("gen-length", "长度"),
      seed: numberFrom("gen-seed", "种子"), kv_cache: $("gen-kv").checked, ...samplingSettings(),
    };
  } catch (err) {
    showError($("generate-error"), err);
    return;
  }
  $("gen-start").disabled = true;
  $("gen-stop").disabled = false;
  await Promise.all(panes.map((pane) => runPane(pane, request)));
  $("gen-start").disabled = false;
  $("gen-stop").disabled = true;
}

// Stopping = aborting the fetch: the connection closes, and the server stops generating for it.
function stopGeneration() {
  for (const pane of panes) if (pane.controller) pane.controller.abort();
}

async function runPane(pane, request) {
  resetPane(pane, request);
  pane.controller = new AbortController();
  try {
    const response = await fetch("/api/generate", {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({...request, model: pane.model}), signal: pane.controller.signal,
    });
    if (!response.ok) throw await responseError(response);
    await readEvents(response.body, (event, data) => onGenerateEvent(pane, event, data));
    if (pane.output.dataset.state === "running") throw new Error("连接在生成结束前断开了。");
  } catch (err) {
    if (err.name === "AbortError" && pane.switching) finishPane(pane, "stopped", "换了模型：之前的生成已停止");
    else if (err.name === "AbortError") finishPane(pane, "stopped", `已停止：${pane.tokens.length} 个词元`);
    else if (err instanceof TypeError) failPane(pane, new Error("连不上练习场服务器：它还在运行吗？"));
    else failPane(pane, err);
  } finally {
    pane.controller = null;
    pane.switching = false;
  }
}

function resetPane(pane, request) {
  pane.model = pane.select.value;
  pane.prompt = request.prompt;
  // Kept with the pane: clicking a token later must ask about the settings it was generated with.
  pane.settings = {temperature: request.temperature, top_k: request.top_k, top_p: request.top_p};
  pane.promptIds = [];
  pane.tokens = [];
  pane.started = performance.now();
  pane.output.replaceChildren();
  pane.dist.replaceChildren();
  pane.note.textContent = "";
  pane.stats.textContent = "等待第一个词元……";
  pane.output.dataset.state = "running";
  clearError(pane.error);
}

// Server-sent events: blocks separated by a blank line; in each, "event: name" and "data: json" lines.
// Bytes arrive in arbitrary pieces, so keep what follows the last blank line until the rest of it comes.
async function readEvents(stream, onEvent) {
  const reader = stream.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true}).replace(/\r/g, "");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const {event, data} = parseEvent(block);
      if (data !== "") onEvent(event, JSON.parse(data));
    }
  }
}

function parseEvent(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;                  // a comment (keep-alive)
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  return {event, data: data.join("\n")};
}

function onGenerateEvent(pane, event, data) {
  if (event === "start") {
    pane.promptIds = data.prompt_ids;
    pane.output.append(el("span", {class: "prompt"}, pane.prompt));
    // kv_cache is null for a model without one (an RNN carries its state instead of caching keys and values).
    const notes = [data.note, data.kv_cache === null ? "这个模型没有 KV 缓存（RNN 靠隐藏状态记住前文）" : null];
    pane.note.textContent = notes.filter(Boolean).join("；");
  } else if (event === "token") {
    addToken(pane, data);
  } else if (event === "done") {
    const speed = `${formatNumber(data.tokens_per_second)} 词元/秒`;
    const first = data.first_token_ms === null ? "" : `，首个词元 ${formatNumber(data.first_token_ms)} ms`;
    const ended = data.reason === "end_of_text" ? "（模型写出了结束符 <|endoftext|>，提前结束）" : "";
    const line = `${data.stopped ? "已停止" : "完成"}：${data.tokens} 个词元，${formatNumber(data.seconds)} 秒，${speed}${first}${ended}`;
    finishPane(pane, data.stopped ? "stopped" : "done", line);
  } else if (event === "error") {
    failPane(pane, new Error(data.error));
  }
}

// Each token is its own <span>, so it can be clicked to see what else the model considered at that point.
function addToken(pane, token) {
  const i = pane.tokens.length;
  pane.tokens.push(token);
  const span = el("span", {class: "token", "data-i": i, title: `词元 #${token.id}`}, token.text);
  span.addEventListener("click", () => showNextToken(pane, i));
  pane.output.append(span);
  const seconds = (performance.now() - pane.started) / 1000;
  pane.stats.textContent = `生成中：${pane.tokens.length} 个词元，${formatNumber(pane.tokens.length / seconds)} 词元/秒`;
}

function finishPane(pane, state, line) {
  pane.output.dataset.state = state;
  pane.stats.textContent = line;
}

function failPane(pane, err) {
  pane.output.dataset.state = "error";
  pane.stats.textContent = "";
  showError(pane.error, err);
}

// What did the model think before token i? Ask for the distribution after the prompt and the tokens before it.
async function showNextToken(pane, i) {
  for (const span of pane.output.querySelectorAll(".token.selected")) span.classList.remove("selected");
  pane.output.querySelector(`.token[data-i="${i}"]`).classList.add("selected");
  const chosen = pane.tokens[i];
  const ids = [...pane.promptIds, ...pane.tokens.slice(0, i).map((t) => t.id)];
  pane.dist.replaceChildren(el("div", {class: "hint"}, "计算中……"));
  try {
    const data = await api("/api/next_token", {model: pane.model, ids, ...pane.settings});
    const rows = data.top.map((t) => ({name: visibleToken(t.text), p: t.p, chosen: t.id === chosen.id}));
    const listed = data.top.some((t) => t.id === chosen.id);
    pane.dist.replaceChildren(
      el("h4", {}, `第 ${i + 1} 个词元「${visibleToken(chosen.text)}」处，模型的前 ${data.top.length} 个候选`),
      probabilityBars(rows),
      el("div", {class: "hint"}, `熵 ${formatNumber(data.entropy)} nat`
        + (listed ? "" : "；实际选中的词元不在前几名里（采样偶尔会抽到小概率的词元）")));
  } catch (err) {
    pane.dist.replaceChildren(el("div", {class: "error"}, err.message));
  }
}

// ---------------------------------------------------------------------------------------------------------
// Charts on <canvas>: lines, dots and a shaded band, with plain axes. Used by runs and sweeps.
// ---------------------------------------------------------------------------------------------------------

const COLORS = ["#1e40af", "#c2410c", "#15803d", "#7e22ce", "#b91c1c", "#0e7490", "#a16207"];

// chart = {series: [{label, points: [[x, y]], color, dots}], band: [[x, low, mean, high]] | null,
//          xLabel, yLabel, xTicks: [[x, text]] (optional: named positions instead of numbers)}
function drawChart(canvas, chart, width = 560, height = 300) {
  const ratio = window.devicePixelRatio || 1;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  const context = canvas.getContext("2d");
  context.scale(ratio, ratio);
  context.font = "12px sans-serif";
  const legend = legendLayout(context, chart, width);
  const box = {left: 64, right: width - 12, top: 12 + legend.height, bottom: height - 40};
  const band = chart.band || [];
  const points = chart.series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  const xs = [...points.map((p) => p[0]), ...band.map((b) => b[0])];
  const ys = [...points.map((p) => p[1]), ...band.flatMap((b) => [b[1], b[3]]).filter(Number.isFinite)];
  if (!xs.length) {
    context.fillText("没有数据点", box.left, box.top + 20);
    return;
  }
  // Named x positions (a sweep's grid values) get half a step of room on each side; numbers a little padding.
  const xRange = chart.xTicks ? [Math.min(...xs) - 0.5, Math.max(...xs) + 0.5]
    : padRange(Math.min(...xs), Math.max(...xs), 0.02);
  const yRange = padRange(Math.min(...ys), Math.max(...ys), 0.05);
  const toX = (x) => box.left + (x - xRange[0]) / (xRange[1] - xRange[0]) * (box.right - box.left);
  const toY = (y) => box.bottom - (y - yRange[0]) / (yRange[1] - yRange[0]) * (box.bottom - box.top);
  drawAxes(context, box, xRange, yRange, toX, toY, chart);
  if (band.length) drawBand(context, band, toX, toY);
  chart.series.forEach((series, i) => drawSeries(context, series, series.color || COLORS[i % COLORS.length], toX, toY));
  drawLegend(context, legend);
  canvas.dataset.drawn = String(points.length);
}

// A little room around the data; a flat line gets a range of its own so it is not divided by zero.
function padRange(low, high, fraction) {
  if (low === high) return [low - Math.abs(low || 1) * 0.1, high + Math.abs(high || 1) * 0.1];
  const pad = (high - low) * fraction;
  return [low - pad, high + pad];
}

// Round tick values (1, 2 or 5 times a power of ten apart), about `count` of them inside [low, high].
function niceTicks(low, high, count = 5) {
  const rough = (high - low) / count;
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = power * ([1, 2, 5].find((m) => m * power >= rough) || 10);
  const ticks = [];
  for (let tick = Math.ceil(low / step) * step; tick <= high + step * 1e-9; tick += step) {
    ticks.push(Number(tick.toPrecision(12)));         // 0.1 + 0.2 would print as 0.30000000000000004
  }
  return ticks;
}

function drawAxes(context, box, xRange, yRange, toX, toY, chart) {
  context.strokeStyle = "#ccc";
  context.fillStyle = "#444";
  context.lineWidth = 1;
  context.textAlign = "right";
  context.textBaseline = "middle";
  for (const y of niceTicks(yRange[0], yRange[1])) {
    context.beginPath();
    context.moveTo(box.left, toY(y));
    context.lineTo(box.right, toY(y));
    context.stroke();
    context.fillText(formatNumber(y), box.left - 6, toY(y));
  }
  context.textAlign = "center";
  context.textBaseline = "top";
  const ticks = chart.xTicks || niceTicks(xRange[0], xRange[1]).map((x) => [x, formatNumber(x)]);
  for (const [x, text] of ticks) context.fillText(text, toX(x), box.bottom + 6);
  context.fillText(chart.xLabel || "", (box.left + box.right) / 2, box.bottom + 22);
  context.save();
  context.translate(14, (box.top + box.bottom) / 2);
  context.rotate(-Math.PI / 2);
  context.fillText(chart.yLabel || "", 0, -8);
  context.restore();
}

// The reference band: shaded between the lowest and highest seed, with the mean dashed.
function drawBand(context, band, toX, toY) {
  context.fillStyle = "rgba(120, 120, 120, 0.18)";
  context.beginPath();
  band.forEach(([x, low], i) => (i ? context.lineTo(toX(x), toY(low)) : context.moveTo(toX(x), toY(low))));
  [...band].reverse().forEach(([x, , , high]) => context.lineTo(toX(x), toY(high)));
  context.closePath();
  context.fill();
  context.strokeStyle = "#777";
  context.setLineDash([5, 4]);
  context.beginPath();
  band.forEach(([x, , mean], i) => (i ? context.lineTo(toX(x), toY(mean)) : context.moveTo(toX(x), toY(mean))));
  context.stroke();
  context.setLineDash([]);
}

// Non-finite values (a loss that became NaN) break the line rather than the chart.
function drawSeries(context, series, color, toX, toY) {
  context.strokeStyle = color;
  context.fillStyle = color;
  context.lineWidth = 2;
  context.beginPath();
  let drawing = false;
  for (const [x, y] of series.points) {
    if (!Number.isFinite(x) || !Number.isFinite(y)) {
      drawing = false;
      continue;
    }
    if (series.dots) context.fillRect(toX(x) - 3, toY(y) - 3, 6, 6);
    if (!series.dots || series.line) {
      if (drawing) context.lineTo(toX(x), toY(y));
      else context.moveTo(toX(x), toY(y));
      drawing = true;
    }
  }
  context.stroke();
}

// The legend sits above the plot, entries left to right (wrapping), so it never hides a line.
function legendLayout(context, chart, width) {
  const entries = chart.series.map((s, i) => [s.label, s.color || COLORS[i % COLORS.length]])
    .filter(([label]) => label);
  if (chart.band && chart.band.length) entries.push(["参考范围", "rgba(120, 120, 120, 0.4)"]);
  let x = 64, y = 10;
  const placed = entries.map(([label, color]) => {
    const size = 20 + context.measureText(label).width + 16;
    if (x + size > width && x > 64) [x, y] = [64, y + 16];
    const item = {label, color, x, y};
    x += size;
    return item;
  });
  return {placed, height: entries.length ? y + 10 : 0};
}

function drawLegend(context, legend) {
  context.textAlign = "left";
  context.textBaseline = "middle";
  for (const {label, color, x, y} of legend.placed) {
    context.fillStyle = color;
    context.fillRect(x, y - 5, 14, 10);
    context.fillStyle = "#222";
    context.fillText(label, x + 20, y);
  }
}

// ---------------------------------------------------------------------------------------------------------
// 5. Runs: the list, then one run's curves over its reference band and the diagnosis
// ---------------------------------------------------------------------------------------------------------

const STATUS_NAMES = {finished: "已完成", interrupted: "已中断", running: "训练中"};
const LEVEL_NAMES = {ok: "正常", warn: "注意", bad: "问题"};

async function loadRuns() {
  const list = $("runs-list");
  clearError($("runs-error"));
  try {
    const data = await api("/api/runs");
    list.replaceChildren(...data.runs.map(runItem));
    if (!data.runs.length) list.append(el("li", {class: "hint"}, "还没有训练记录：训练一个模型后再来。"));
  } catch (err) {
    showError($("runs-error"), err);
  }
}

function runItem(run) {
  const button = el("button", {class: "run", "data-run": run.id, "data-testid": "run-item"},
    el("span", {class: `status status-${run.status}`}, STATUS_NAMES[run.status] || run.status), " ",
    el("strong", {}, run.name),
    el("div", {class: "hint"}, `第 ${stageNumber(run.stage)} 阶段 · ${shortTime(run.modified)}`));
  button.addEventListener("click", () => showRun(run.id));
  return el("li", {}, button);
}

// "12月7日 09:30": when the run last wrote something (a running one moves on).
function shortTime(seconds) {
  return new Date(seconds * 1000).toLocaleString("zh-CN", {month: "short", day: "numeric", hour: "2-digit",
    minute: "2-digit"});
}

// A running run is read again every 5 seconds while it stays on screen, so its curves grow as it trains.
let runRefresh = null;

async function showRun(id, again = false) {
  clearTimeout(runRefresh);
  const detail = $("run-detail");
  for (const button of document.querySelectorAll("#runs-list .run")) {
    button.classList.toggle("selected", button.dataset.run === id);
  }
  if (!again) detail.replaceChildren(el("p", {class: "hint"}, "读取中……"));
  try {
    const run = await api(pathOf("/api/runs/", id));
    if (run.status === "running") runRefresh = setTimeout(() => showRun(id, true), 5000);
    detail.replaceChildren(el("h2", {}, id),
      run.command ? el("div", {class: "command"}, el("code", {}, run.command)) : "",
      el("p", {class: "summary", "data-testid": "run-summary"}, run.summary),
      el("ul", {class: "findings", "data-testid": "run-findings"}, ...run.findings.map(findingItem)),
      referenceNote(run.reference), runCharts(run));
  } catch (err) {
    detail.replaceChildren(el("div", {class: "error"}, err.message));
  }
}

function findingItem(finding) {
  return el("li", {class: `finding level-${finding.level}`, "data-code": finding.code},
    el("span", {class: "level"}, LEVEL_NAMES[finding.level] || finding.level), " ", finding.message);
}

function referenceNote(reference) {
  return el("p", {class: "hint"}, reference
    ? `灰色区域：参考运行「${reference.name}」几个种子的范围，虚线是它们的平均。`
    : "这个运行没有可比的参考运行，只画它自己的曲线。");
}

// One small chart per curve (losses, accuracies and learning rates have different scales).
function runCharts(run) {
  const bands = (run.reference && run.reference.bands) || {};
  const charts = el("div", {class: "charts"});
  for (const [key, points] of Object.entries(run.curves)) {
    const canvas = el("canvas", {"data-testid": "run-curve", "data-key": key});
    charts.append(el("figure", {}, el("figcaption", {}, key), canvas));
    drawChart(canvas, {series: [{label: "这次运行", points}], band: bands[key], xLabel: "步数 / 轮数", yLabel: key},
      420, 250);
  }
  if (!charts.children.length) charts.append(el("p", {class: "hint"}, "还没有曲线数据。"));
  return charts;
}

// ---------------------------------------------------------------------------------------------------------
// 6. Results: the course-wide tables (filterable), the plots, and each sweep as metric against parameter
// ---------------------------------------------------------------------------------------------------------

let resultsData = null;            // the last /api/results answer, re-tabled when "README only" is switched

async function loadResults() {
  clearError($("results-error"));
  clearError($("sweeps-error"));
  try {
    resultsData = await api("/api/results");
    renderResults();
  } catch (err) {
    showError($("results-error"), err);
  }
  try {
    const data = await api("/api/sweeps");
    $("sweeps").replaceChildren(...data.sweeps.map(sweepView));
    if (!data.sweeps.length) $("sweeps").append(el("p", {class: "hint"}, "还没有扫描结果（见 scripts/sweep.py）。"));
  } catch (err) {
    showError($("sweeps-error"), err);
  }
}

function renderResults() {
  const data = resultsData;
  const notes = (data.notes || []).map((note) => el("p", {class: "hint"}, note));
  $("results-tables").replaceChildren(...notes, ...resultTables(data, $("results-readme").checked).map(resultTable));
  $("results-plots").replaceChildren(...(data.plots || []).map(plotFigure));
  applyResultFilters();
}

// The few metrics each table shows (a results file holds many more: throughput, epochs, ...): [label, the keys
// that hold it (the first one present wins: stages name some metrics differently), format].
const TASK_TABLES = [
  {task: "classify", title: "文本分类", metrics: [
    ["准确率", ["accuracy"], "percent"], ["macro-F1", ["macro_f1"], "percent"], ["每条用时 ms", ["latency_ms_bs1"]]]},
  {task: "translate", title: "英译法", metrics: [
    ["BLEU", ["bleu_beam", "bleu"]], ["BLEU（贪心）", ["bleu_greedy"]], ["chrF", ["chrf_beam", "chrf"]]]},
  {task: "language_model", title: "语言模型", metrics: [
    ["验证损失", ["val_loss", "loss"]], ["困惑度", ["perplexity", "ppl"]], ["bits/byte", ["bits_per_byte"]],
    ["训练词元/秒", ["train_tokens_per_s"]]]},
];

// /api/results gives one row per results file and each stage's measured commands; make the course's tables.
function resultTables(data, readmeOnly) {
  const rows = (data.rows || []).filter((row) => !readmeOnly || (row.tables || []).length);
  const tables = TASK_TABLES.map((spec) => taskTable(spec, rows.filter((row) => row.task === spec.task)));
  const runs = {
    id: "runs", title: "各阶段的训练命令（实测用时）",
    columns: [{key: "stage", label: "阶段", filter: true}, {key: "run", label: "运行", filter: true},
      {key: "command", label: "命令"}, {key: "minutes", label: "分钟"}, {key: "score", label: "成绩"},
      {key: "hardware", label: "硬件", filter: true}],
    rows: (data.runs || []).map((run) => ({...run, stage: stageName(run.stage)})),
  };
  return [...tables, runs].filter((table) => table.rows.length);
}

function taskTable(spec, rows) {
  const metrics = spec.metrics.filter(([, keys]) => rows.some((row) => keys.some((k) => row.metrics[k] != null)));
  // filter: the columns whose few repeated values make a useful drop-down (the text box searches every column)
  const columns = [{key: "stage", label: "阶段", filter: true}, {key: "model", label: "模型"},
    {key: "dataset", label: "数据集", filter: true}, {key: "split", label: "划分", filter: true},
    ...metrics.map(([label, , format]) => ({key: label, label, format})),
    {key: "params", label: "参数量"}, {key: "minutes", label: "训练分钟"}, {key: "hardware", label: "硬件", filter: true},
    {key: "file", label: "结果文件"}];
  const flat = rows.map((row) => ({
    stage: row.stage_number, model: row.model_name, dataset: row.dataset_name, split: row.split,
    params: row.params, hardware: row.hardware, file: row.id,
    minutes: row.train_seconds != null ? Number((row.train_seconds / 60).toFixed(1)) : null,
    ...Object.fromEntries(metrics.map(([label, keys]) => [label, keys.map((k) => row.metrics[k]).find((v) => v != null)])),
  }));
  return {id: spec.task, title: spec.title, columns, rows: flat};
}

function cellText(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "number") return formatNumber(value);
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

// A filter column with more than one value gets a drop-down of its values.
function resultTable(table) {
  const filters = table.columns.map((column) => {
    const values = [...new Set(table.rows.map((r) => cellText(r[column.key])))].filter(Boolean)
      .sort((a, b) => a.localeCompare(b, "zh-CN", {numeric: true}));
    if (!column.filter || values.length < 2) return el("th");
    const select = el("select", {"data-column": column.key, "aria-label": column.label},
      el("option", {value: ""}, "全部"), ...values.map((v) => el("option", {value: v}, v)));
    select.addEventListener("change", applyResultFilters);
    return el("th", {}, select);
  });
  const text = (column, value) => (column.format === "percent" && typeof value === "number" ? percent(value)
    : cellText(value));
  const body = el("tbody", {}, ...table.rows.map((row) => el("tr", {"data-testid": "result-row"},
    ...table.columns.map((c) => el("td", {"data-column": c.key}, text(c, row[c.key]))))));
  return el("div", {class: "result-table", "data-testid": "result-table", "data-table": table.id},
    el("h3", {}, table.title), table.note ? el("p", {class: "hint"}, table.note) : "",
    el("div", {class: "table-scroll"}, el("table", {},
      el("thead", {}, el("tr", {}, ...table.columns.map((c) => el("th", {}, c.label))),
        el("tr", {class: "filters"}, ...filters)),
      body)),
    el("div", {class: "hint count"}));
}

// Hide the rows that miss the text (any cell) or a column's chosen value; say how many are left.
function applyResultFilters() {
  const words = $("results-filter").value.trim().toLowerCase().split(/\s+/).filter(Boolean);
  for (const table of document.querySelectorAll("#results-tables .result-table")) {
    const chosen = [...table.querySelectorAll("select[data-column]")].filter((s) => s.value);
    let shown = 0;
    const rows = table.querySelectorAll("tbody tr");
    for (const row of rows) {
      const text = [...row.cells].map((cell) => cell.textContent).join(" | ").toLowerCase();
      const visible = words.every((w) => text.includes(w)) && chosen.every((select) =>
        row.querySelector(`td[data-column="${CSS.escape(select.dataset.column)}"]`).textContent === select.value);
      row.hidden = !visible;
      shown += visible;
    }
    table.querySelector(".count").textContent = `显示 ${shown} / ${rows.length} 行`;
  }
  for (const figure of document.querySelectorAll("#results-plots figure")) {
    figure.hidden = !words.every((w) => figure.textContent.toLowerCase().includes(w));
  }
}

// A plot is {id (its path), stage (null for docs/images), name}; the caption is searched by the filter too.
function plotFigure(plot) {
  const image = el("img", {src: pathOf("/api/image/", plot.id), alt: plot.name, loading: "lazy"});
  const where = plot.stage ? stageName(plot.stage) : "docs/images";
  const figure = el("figure", {"data-testid": "result-plot", "data-plot": plot.id}, image,
    el("figcaption", {}, `${where} · ${plot.name}`));
  image.addEventListener("error", () => figure.append(el("div", {class: "error"}, `图片读不出来：${plot.id}`)));
  return figure;
}

// A sweep is {id, stage, params, metrics, metric, mode, note, rows: [{param: value, ..., metric: number, seed}]}:
// pick the parameter along x and the metric along y.
function sweepView(sweep) {
  const canvas = el("canvas", {"data-testid": "sweep-chart"});
  const param = el("select", {"aria-label": "横轴参数"}, ...sweep.params.map((p) => el("option", {value: p}, p)));
  const metrics = sweep.metrics && sweep.metrics.length ? sweep.metrics : [sweep.metric];
  const metric = el("select", {"aria-label": "纵轴指标"}, ...metrics.map((m) => el("option", {value: m}, m)));
  metric.value = sweep.metric;
  const redraw = () => drawChart(canvas, sweepChart(sweep.rows, param.value, sweep.params, metric.value));
  param.addEventListener("change", redraw);
  metric.addEventListener("change", redraw);
  const better = sweep.mode === "max" ? "越大越好" : "越小越好";
  const view = el("div", {class: "sweep", "data-testid": "sweep", "data-sweep": sweep.id},
    el("h3", {}, sweep.id), el("p", {class: "hint"}, [sweep.stage && stageName(sweep.stage), sweep.script, sweep.note,
      sweep.hardware].filter(Boolean).join(" · ")),
    el("div", {class: "toolbar"}, el("label", {}, "横轴 ", param), el("label", {}, "纵轴 ", metric),
      el("span", {class: "hint"}, `${better}；点是单次运行（每个种子一个），线是平均`)),
    canvas);
  if (sweep.params.length) redraw();
  return view;
}

// x: the chosen parameter's values in order (evenly spaced, as a grid is); one line per setting of the others.
function sweepChart(rows, param, params, metric) {
  const values = [...new Set(rows.map((r) => String(r[param])))]
    .sort((a, b) => (Number.isNaN(Number(a)) || Number.isNaN(Number(b)) ? a.localeCompare(b) : Number(a) - Number(b)));
  const others = params.filter((p) => p !== param);
  const groups = new Map();
  for (const row of rows) {
    const name = others.map((p) => `${p}=${cellText(row[p])}`).join(", ") || metric;
    if (!groups.has(name)) groups.set(name, []);
    groups.get(name).push([values.indexOf(String(row[param])), row[metric]]);
  }
  const series = [...groups.entries()].flatMap(([name, points], i) => {
    const color = COLORS[i % COLORS.length];
    const means = values.map((_, x) => {
      const ys = points.filter((p) => p[0] === x).map((p) => p[1]);
      return [x, ys.length ? ys.reduce((a, b) => a + b, 0) / ys.length : NaN];
    });
    return [{label: name, points: means, color}, {label: "", points, color, dots: true}];
  });
  const label = (v) => (Number.isNaN(Number(v)) ? v : formatNumber(Number(v)));
  return {series, xLabel: param, yLabel: metric, xTicks: values.map((v, x) => [x, label(v)])};
}

// ---------------------------------------------------------------------------------------------------------
// Wiring: buttons to functions, then the first tab
// ---------------------------------------------------------------------------------------------------------

function wire() {
  for (const button of document.querySelectorAll("#tabs [data-tab]")) {
    button.addEventListener("click", () => showTab(button.dataset.tab));
  }
  $("models-refresh").addEventListener("click", loadModels);
  $("classify-run").addEventListener("click", classify);
  $("translate-run").addEventListener("click", translate);
  $("translate-mode").addEventListener("change", () => {
    const beam = $("translate-mode").value === "beam";
    $("translate-beam").disabled = !beam;
    $("translate-alpha").disabled = !beam;
  });
  $("gen-start").addEventListener("click", startGeneration);
  $("gen-stop").addEventListener("click", stopGeneration);
  $("runs-refresh").addEventListener("click", loadRuns);
  $("results-refresh").addEventListener("click", loadResults);
  $("results-filter").addEventListener("input", applyResultFilters);
  $("results-readme").addEventListener("change", () => resultsData && renderResults());
  window.addEventListener("hashchange", () => showTab(location.hash.slice(1)));
}

wire();
loadedTabs.add("models");             // the catalog is needed by several tabs: load it once, now
loadModels();
showTab(location.hash.slice(1) || "models");
