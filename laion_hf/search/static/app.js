// The search page: talks to /index-info and /knn-service, renders the result grid.
"use strict";

const $ = (id) => document.getElementById(id);
let indices = {};

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function describe(name) {
  const info = indices[name];
  if (!info) return "";
  const recall = Object.entries(info.indices).map(([m, e]) => `${m} recall@10 ${e.recall_at_10.toFixed(3)}`).join(", ");
  return `${info.rows.toLocaleString()} rows · ${info.model} · ${recall}`;
}

function updateSafety() {
  const info = indices[$("indice").value];
  const safe = $("safe-mode");
  safe.disabled = !info || !info.safety;
  if (info && !info.safety) safe.checked = false;
  $("safe-limit").textContent = info && info.safety ? `(hides punsafe > ${info.safe_limit})` : "(no punsafe scores in this index)";
  setStatus(describe($("indice").value));
}

async function loadIndices() {
  const response = await fetch("/index-info");
  indices = await response.json();
  const select = $("indice");
  select.innerHTML = "";
  for (const name of Object.keys(indices)) {
    const option = document.createElement("option");
    option.value = option.textContent = name;
    select.appendChild(option);
  }
  updateSafety();
}

function number(text) {
  return text.trim() === "" ? null : Number(text);
}

function scoreLine(row) {
  const parts = [["score", row.score]];
  for (const column of ["similarity", "punsafe", "pwatermark", "aesthetic"]) {
    if (row[column] !== undefined && row[column] !== null) parts.push([column, row[column]]);
  }
  return parts;
}

function render(results) {
  const grid = $("results");
  grid.innerHTML = "";
  for (const row of results) {
    const card = document.createElement("figure");
    card.className = "result";
    card.dataset.key = row.key ?? "";
    const thumb = document.createElement("div");
    thumb.className = "thumb";
    const image = document.createElement("img");
    image.loading = "lazy";
    image.alt = row.caption ?? "";
    image.src = row.image;
    image.onerror = () => { thumb.innerHTML = `<span class="missing">image unavailable</span>`; };
    thumb.appendChild(image);
    const caption = document.createElement("figcaption");
    caption.className = "caption";
    const link = document.createElement("a");
    link.href = row.url ?? "#";
    link.target = "_blank";
    link.rel = "noreferrer noopener";
    link.textContent = row.caption ?? "";
    caption.appendChild(link);
    const scores = document.createElement("div");
    scores.className = "scores";
    for (const [name, value] of scoreLine(row)) {
      const span = document.createElement("span");
      span.className = name;
      if (name === "punsafe" && value > (indices[$("indice").value]?.safe_limit ?? 0.45)) span.classList.add("unsafe");
      span.textContent = `${name} ${Number(value).toFixed(3)}`;
      scores.appendChild(span);
    }
    if (row.language) {
      const span = document.createElement("span");
      span.textContent = row.language;
      scores.appendChild(span);
    }
    card.append(thumb, caption, scores);
    grid.appendChild(card);
  }
}

async function search(query) {
  const request = {
    indice_name: $("indice").value,
    modality: $("modality").value,
    num_images: Number($("num").value),
    use_safety_model: $("safe-mode").checked,
    language: $("language").value.trim() || null,
    min_aesthetic: number($("min-aesthetic").value),
    ...query,
  };
  setStatus("searching…");
  const started = performance.now();
  const response = await fetch("/knn-service", {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify(request),
  });
  const payload = await response.json();
  if (!response.ok) {
    $("results").innerHTML = "";
    setStatus(payload.error, true);
    return;
  }
  render(payload);
  const seconds = ((performance.now() - started) / 1000).toFixed(2);
  setStatus(`${payload.length} results in ${seconds} s · ${describe($("indice").value)}`);
}

$("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  search({text: $("query").value});
});

$("image-input").addEventListener("change", () => {
  const file = $("image-input").files[0];
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => search({image: String(reader.result).split(",", 2)[1]});
  reader.readAsDataURL(file);
});

$("indice").addEventListener("change", updateSafety);
for (const id of ["safe-mode", "modality", "num"]) {
  $(id).addEventListener("change", () => { if ($("query").value.trim()) search({text: $("query").value}); });
}

loadIndices().catch((error) => setStatus(`cannot reach the server: ${error}`, true));
