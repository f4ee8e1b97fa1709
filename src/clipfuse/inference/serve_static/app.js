"use strict";
// The demo page: `info` (the /api/info answer) is defined by the page before this script.
const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const context = canvas.getContext("2d");
let chosen = null; // the File to segment
let current = null; // {answer, image, labels, indices, stem}: the segmentation shown
let requests = 0; // answers to older requests than the latest are dropped

$("vocabulary").textContent = `Trained classes: ${info.class_names.join(", ")}`;
if (info.open_vocab) {
  $("open-vocab-box").hidden = false;
  $("encoder").textContent = `embedded with ${info.text_encoder}`;
}
showExamples();

function showExamples() {
  if (!info.examples.length) return;
  $("examples-box").hidden = false;
  for (const name of info.examples) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "example";
    button.setAttribute("role", "listitem");
    button.setAttribute("aria-label", `segment the example ${name}`);
    const thumbnail = document.createElement("img");
    thumbnail.src = `examples/${encodeURIComponent(name)}`;
    thumbnail.alt = "";
    const caption = document.createElement("span");
    caption.textContent = name.replace(/\.[^.]+$/, "");
    button.append(thumbnail, caption);
    button.addEventListener("click", () => useExample(name));
    $("examples").appendChild(button);
  }
  const line = $("examples-licence");
  const text = info.examples_licence || "";
  const file = info.examples_licence_file;
  const link = document.createElement("a");
  if (file) link.href = `examples/${encodeURIComponent(file)}`;
  if (file && text.includes(file)) {
    const [before, ...after] = text.split(file);
    link.textContent = file;
    line.append(before, link, after.join(file));
  } else {
    line.textContent = text;
    if (file) { link.textContent = "licence"; line.append(" (", link, ")"); }
  }
}

async function useExample(name) {
  try {
    const response = await fetch(`examples/${encodeURIComponent(name)}`);
    if (!response.ok) throw new Error(`the example ${name} could not be loaded`);
    const blob = await response.blob();
    choose(new File([blob], name, { type: blob.type }));
  } catch (problem) {
    $("error").textContent = problem.message;
  }
}

function choose(file) {
  chosen = file;
  segment();
}

$("image").addEventListener("change", () => {
  if ($("image").files[0]) choose($("image").files[0]);
});
$("form").addEventListener("submit", (event) => {
  event.preventDefault();
  segment();
});
$("drop").addEventListener("keydown", (event) => {
  if (event.key === "Enter" || event.key === " ") { event.preventDefault(); $("image").click(); }
});
for (const type of ["dragenter", "dragover"]) {
  document.addEventListener(type, (event) => { event.preventDefault(); $("drop").classList.add("over"); });
}
document.addEventListener("dragleave", () => $("drop").classList.remove("over"));
document.addEventListener("drop", (event) => {
  event.preventDefault();
  $("drop").classList.remove("over");
  const file = [...event.dataTransfer.files].find((f) => f.type.startsWith("image/"));
  if (file) choose(file); else $("error").textContent = "Drop an image file.";
});
document.addEventListener("paste", (event) => {
  const file = [...event.clipboardData.files].find((f) => f.type.startsWith("image/"));
  if (file) { event.preventDefault(); choose(new File([file], file.name || "pasted.png", { type: file.type })); }
});

async function segment() {
  $("error").textContent = "";
  if (!chosen) { $("error").textContent = "Choose an image first."; return; }
  if (chosen.size > info.max_bytes) {
    const size = (n) => `${(n / 1e6).toFixed(1)} MB (${n.toLocaleString("en-US")} bytes)`;
    $("error").textContent = `The file is ${size(chosen.size)}: the limit is ${size(info.max_bytes)}.`;
    return;
  }
  const body = new FormData();
  body.append("image", chosen, chosen.name || "image");
  body.append("labels", $("labels").value);
  body.append("open_vocab", $("open-vocab").checked ? "true" : "false");
  const ticket = ++requests;
  $("status").textContent = `Segmenting ${chosen.name || "the image"}…`;
  const started = performance.now();
  let answer;
  try {
    const response = await fetch("api/predict", { method: "POST", body });
    answer = await response.json();
    if (!response.ok) throw new Error(answer.error || `error ${response.status}`);
  } catch (problem) {
    if (ticket === requests) { $("status").textContent = ""; $("error").textContent = problem.message; }
    return;
  }
  const shown = await decode(answer, chosen);
  if (ticket !== requests) return;
  current = shown;
  show(performance.now() - started);
}

async function decode(answer, file) {
  const exact = { colorSpaceConversion: "none", premultiplyAlpha: "none" };
  const labels = await createImageBitmap(await (await fetch(answer.label_map)).blob(), exact);
  let image = null;
  try {
    image = await createImageBitmap(file, { imageOrientation: "from-image" });
  } catch {
    $("error").textContent = "This browser cannot show the image itself: showing the labels.";
  }
  const scratch = document.createElement("canvas");
  scratch.width = answer.width;
  scratch.height = answer.height;
  const pen = scratch.getContext("2d", { willReadFrequently: true });
  pen.drawImage(labels, 0, 0);
  const rgba = pen.getImageData(0, 0, answer.width, answer.height).data;
  const byColour = new Map(answer.palette.map(([r, g, b], k) => [(r << 16) | (g << 8) | b, k]));
  const indices = new Int16Array(answer.width * answer.height);
  for (let i = 0; i < indices.length; i++) {
    const key = (rgba[4 * i] << 16) | (rgba[4 * i + 1] << 8) | rgba[4 * i + 2];
    indices[i] = byColour.has(key) ? byColour.get(key) : -1;
  }
  const stem = (file.name || "image").replace(/\.[^.]+$/, "");
  return { answer, image, labels, indices, stem };
}

function view() {
  return document.querySelector('input[name="view"]:checked').value;
}

function composite(target, mode, opacity) {
  const { answer, image, labels } = current;
  target.globalAlpha = 1;
  target.clearRect(0, 0, answer.width, answer.height);
  if (image && mode !== "labels") target.drawImage(image, 0, 0, answer.width, answer.height);
  if (!image || mode === "labels") {
    target.drawImage(labels, 0, 0);
  } else if (mode === "overlay") {
    target.globalAlpha = opacity;
    target.drawImage(labels, 0, 0);
    target.globalAlpha = 1;
  }
}

function render() {
  if (!current) return;
  composite(context, view(), $("opacity").value / 100);
}

function show(milliseconds) {
  const { answer, stem } = current;
  canvas.width = answer.width;
  canvas.height = answer.height;
  $("placeholder").hidden = true;
  render();
  const rows = answer.class_names.map((name, k) => ({ name, k, area: answer.areas[k] }));
  rows.sort((a, b) => b.area - a.area);
  const body = $("legend").tBodies[0];
  body.replaceChildren();
  for (const row of rows) {
    const tr = body.insertRow();
    tr.className = row.area > 0 ? "class-row" : "class-row empty";
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${answer.palette[row.k].join(",")})`;
    tr.insertCell().appendChild(swatch);
    tr.insertCell().textContent = row.name;
    const area = tr.insertCell();
    area.className = "area";
    area.textContent = `${(100 * row.area).toFixed(1)} %`;
  }
  const labelsLink = $("download-labels");
  labelsLink.href = answer.label_map;
  labelsLink.download = `${stem}_labels.png`;
  $("download-overlay").download = `${stem}_overlay.png`;
  $("downloads").hidden = false;
  const t = answer.timing;
  $("status").textContent = `${answer.width} x ${answer.height} pixels, ` +
    `${answer.mode === "decoder" ? "decoder" : answer.mode + " (open vocabulary)"}: ` +
    `model ${Math.round(t.model_ms)} ms, decoding ${Math.round(t.preprocess_ms)} ms, ` +
    `encoding ${Math.round(t.postprocess_ms)} ms, waiting ${Math.round(t.wait_ms)} ms; ` +
    `${(milliseconds / 1000).toFixed(2)} s in all`;
}

for (const radio of document.querySelectorAll('input[name="view"]')) {
  radio.addEventListener("change", render);
}
$("opacity").addEventListener("input", () => {
  $("opacity-value").textContent = `${$("opacity").value} %`;
  if (view() === "original") document.querySelector('input[value="overlay"]').checked = true;
  render();
});

canvas.addEventListener("pointermove", (event) => {
  if (!current) return;
  const box = canvas.getBoundingClientRect();
  const { width, height, class_names: names } = current.answer;
  const x = Math.min(width - 1, Math.floor(((event.clientX - box.left) * width) / box.width));
  const y = Math.min(height - 1, Math.floor(((event.clientY - box.top) * height) / box.height));
  if (x < 0 || y < 0) return;
  const k = current.indices[y * width + x];
  $("hover").textContent = k >= 0 ? `${names[k]} (x ${x}, y ${y})` : "";
});
canvas.addEventListener("pointerleave", () => { $("hover").innerHTML = "&nbsp;"; });

$("download-overlay").addEventListener("click", (event) => {
  if (!current) { event.preventDefault(); return; }
  const scratch = document.createElement("canvas");
  scratch.width = current.answer.width;
  scratch.height = current.answer.height;
  composite(scratch.getContext("2d"), "overlay", $("opacity").value / 100);
  $("download-overlay").href = scratch.toDataURL("image/png");
});
