"""The web demo's page (``clipfuse serve``, ``GET /``): one self-contained HTML file that
uploads an image to ``POST /predict`` and shows the overlay and the per-class areas."""

import html
import json


def demo_page(info: dict) -> str:
    """The page for the model that ``info`` describes (method, backbone, classes, text)."""
    names = html.escape(", ".join(info["class_names"]))
    open_vocab = (
        '<label><input type="checkbox" id="open-vocab"> open vocabulary (any labels, from the '
        f"score map; encoder {html.escape(str(info['text_encoder']))})</label>"
        if info["open_vocab"]
        else ""
    )
    title = f"clipfuse: {html.escape(info['method'])} + {html.escape(info['backbone'])}"
    return (
        _PAGE.replace("__TITLE__", title)
        .replace("__NAMES__", names)
        .replace("__OPEN_VOCAB__", open_vocab)
        .replace("__INFO__", json.dumps(info).replace("</", "<\\/"))
    )


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>__TITLE__</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 2em; max-width: 70em; color: #222; }
  form > * { margin: .3em 0; display: block; }
  #labels { width: 40em; max-width: 100%; }
  #error { color: #b00020; font-weight: bold; min-height: 1.2em; }
  #status { color: #555; min-height: 1.2em; }
  #overlay { max-width: 100%; border: 1px solid #ccc; display: none; }
  table { border-collapse: collapse; margin-top: 1em; }
  td, th { padding: .2em .8em; border-bottom: 1px solid #eee; text-align: left; }
  td.area { text-align: right; font-variant-numeric: tabular-nums; }
  .swatch { display: inline-block; width: 1em; height: 1em; border: 1px solid #000;
            vertical-align: middle; }
</style>
</head>
<body>
<h1>__TITLE__</h1>
<p>Trained classes: __NAMES__</p>
<form id="form">
  <input type="file" id="image" name="image" accept="image/*">
  <input type="text" id="labels" name="labels"
         placeholder="labels, comma-separated (empty: all trained classes); old=new renames">
  __OPEN_VOCAB__
  <button type="submit" id="run">Segment</button>
</form>
<div id="status"></div>
<div id="error" role="alert"></div>
<img id="overlay" alt="segmentation overlay">
<table id="areas"></table>
<script>
const info = __INFO__;
const form = document.getElementById("form");
const statusLine = document.getElementById("status");
const errorLine = document.getElementById("error");
const overlay = document.getElementById("overlay");
const table = document.getElementById("areas");
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  errorLine.textContent = "";
  const file = document.getElementById("image").files[0];
  if (!file) { errorLine.textContent = "Choose an image first."; return; }
  if (file.size > info.max_bytes) {
    const size = (n) => `${(n / 1e6).toFixed(1)} MB (${n.toLocaleString("en-US")} bytes)`;
    errorLine.textContent = `The file is ${size(file.size)}: the limit is ${size(info.max_bytes)}.`;
    return;
  }
  const body = new FormData();
  body.append("image", file);
  body.append("labels", document.getElementById("labels").value);
  const openVocab = document.getElementById("open-vocab");
  body.append("open_vocab", openVocab && openVocab.checked ? "true" : "false");
  statusLine.textContent = "Segmenting…";
  const started = performance.now();
  let answer;
  try {
    const response = await fetch("api/predict", { method: "POST", body });
    answer = await response.json();
    if (!response.ok) throw new Error(answer.error || `error ${response.status}`);
  } catch (problem) {
    statusLine.textContent = "";
    errorLine.textContent = problem.message;
    return;
  }
  overlay.src = answer.overlay;
  overlay.style.display = "block";
  overlay.dataset.width = answer.width;
  overlay.dataset.height = answer.height;
  table.replaceChildren();
  const head = table.insertRow();
  for (const text of ["", "class", "area"]) {
    const cell = document.createElement("th"); cell.textContent = text; head.appendChild(cell);
  }
  for (const row of answer.classes) {
    const tr = table.insertRow();
    tr.className = "class-row";
    const swatch = document.createElement("span");
    swatch.className = "swatch"; swatch.style.background = row.colour;
    tr.insertCell().appendChild(swatch);
    tr.insertCell().textContent = row.name;
    const area = tr.insertCell(); area.className = "area";
    area.textContent = (100 * row.area).toFixed(1) + " %";
  }
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  statusLine.textContent = `${answer.width} x ${answer.height} pixels, ` +
    `${answer.mode === "decoder" ? "decoder" : answer.mode + " (open vocabulary)"}, ${seconds} s`;
});
</script>
</body>
</html>
"""
