// fastseg demo page: posts the picked image to /semantic-segmentation and draws the result.
// No dependencies and no network beyond this server.
"use strict";

const $ = (id) => document.getElementById(id);
let info = null;

function setStatus(text, isError) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", Boolean(isError));
}

async function loadInfo() {
  const r = await fetch("/info");
  info = await r.json();
  $("model-name").textContent = info.modelName;
  $("model-detail").textContent = `${info.numClasses} classes · max ${info.limits.maxPixels.toLocaleString()} pixels`;
  $("key-row").hidden = !info.authRequired;
  $("weights-note").textContent = info.weightsNote || "";
  $("weights-note").hidden = !info.weightsNote;
  $("scores-row").hidden = !info.scores;  // the server computes scores: offer the confidence map
}

function readAsDataURL(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("the browser cannot display this image"));
    img.src = url;
  });
}

function colourCanvas(labelMap, h, w) {
  const canvas = $("colour-canvas");
  canvas.width = w; canvas.height = h;
  const ctx = canvas.getContext("2d");
  const data = ctx.createImageData(w, h);
  const px = data.data;
  const pal = info.palette;
  const counts = new Map();
  for (let i = 0; i < labelMap.length; i++) {
    const c = labelMap[i];
    counts.set(c, (counts.get(c) || 0) + 1);
    const rgb = pal[c] || [0, 0, 0];
    const o = i * 4;
    px[o] = rgb[0]; px[o + 1] = rgb[1]; px[o + 2] = rgb[2]; px[o + 3] = 255;
  }
  ctx.putImageData(data, 0, 0);
  return counts;
}

function drawOverlay(img) {
  const canvas = $("overlay-canvas");
  const colour = $("colour-canvas");
  canvas.width = colour.width; canvas.height = colour.height;
  const ctx = canvas.getContext("2d");
  ctx.globalAlpha = 1;
  ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
  ctx.globalAlpha = Number($("opacity").value) / 100;
  ctx.drawImage(colour, 0, 0);
}

function drawLegend(counts, total) {
  const ul = $("legend");
  ul.replaceChildren();
  [...counts.entries()].sort((a, b) => b[1] - a[1]).forEach(([cls, n]) => {
    const li = document.createElement("li");
    const sw = document.createElement("span");
    sw.className = "swatch";
    const rgb = info.palette[cls] || [0, 0, 0];
    sw.style.background = `rgb(${rgb[0]},${rgb[1]},${rgb[2]})`;
    li.append(sw, `${info.classNames[cls] ?? "class " + cls} ${(100 * n / total).toFixed(1)}%`);
    li.dataset.classId = String(cls);
    ul.append(li);
  });
}

let lastImage = null;

async function segment(file) {
  if (!info) await loadInfo();
  setStatus(`Segmenting ${file.name}…`);
  const dataUrl = await readAsDataURL(file);
  const b64 = dataUrl.slice(dataUrl.indexOf(",") + 1);
  const headers = { "Content-Type": "application/json" };
  const key = $("api-key").value;
  if (key) headers.Authorization = `Bearer ${key}`;
  const t0 = performance.now();
  const request = { image: b64, visualize: false };
  const wantScores = info.scores && $("show-scores").checked;
  if (wantScores) request.scores = true;  // fastseg extension: result.scoreMapPng
  const r = await fetch("/semantic-segmentation", {
    method: "POST", headers, body: JSON.stringify(request),
  });
  const body = await r.json();
  const latency = performance.now() - t0;
  if (!r.ok || body.errorCode !== 0) {
    setStatus(`Error ${body.errorCode ?? r.status}: ${body.errorMsg ?? r.statusText}`, true);
    return;
  }
  const [h, w] = body.result.size;
  const img = await loadImage(dataUrl);
  lastImage = img;
  const input = $("input-canvas");
  input.width = w; input.height = h;
  input.getContext("2d").drawImage(img, 0, 0, w, h);
  const counts = colourCanvas(body.result.labelMap, h, w);
  drawOverlay(img);
  drawLegend(counts, h * w);
  $("score-figure").hidden = !wantScores;
  if (wantScores) {
    const scores = await loadImage(`data:image/png;base64,${body.result.scoreMapPng}`);
    const sc = $("score-canvas");
    sc.width = w; sc.height = h;
    sc.getContext("2d").drawImage(scores, 0, 0, w, h);
  }
  $("latency").textContent = latency.toFixed(1);
  $("size").textContent = `${w}×${h}`;
  $("file-name").textContent = file.name;
  $("result").hidden = false;
  setStatus(`Done: ${counts.size} class(es) found.`);
}

function run(file) {
  segment(file).catch((err) => setStatus(`Error: ${err.message}`, true));
}

$("file-input").addEventListener("change", (e) => { if (e.target.files[0]) run(e.target.files[0]); });
const zone = $("drop-zone");
zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
zone.addEventListener("dragleave", () => zone.classList.remove("over"));
zone.addEventListener("drop", (e) => {
  e.preventDefault(); zone.classList.remove("over");
  if (e.dataTransfer.files[0]) run(e.dataTransfer.files[0]);
});
$("show-scores").addEventListener("change", () => {
  const file = $("file-input").files[0];
  if (file) run(file);
});
$("opacity").addEventListener("input", () => { if (lastImage) drawOverlay(lastImage); });
loadInfo().catch((err) => setStatus(`Cannot reach the server: ${err.message}`, true));
