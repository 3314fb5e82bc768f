// The monitoring view: what the indexer is doing, refreshed every two seconds.
import { chooseModel, formatDate, getStatus } from "./api.js";

const $ = (id) => document.getElementById(id);

function set(id, text, cls) {
  const el = $(id);
  el.textContent = text;
  el.className = `value${el.classList.contains("small") ? " small" : ""}${cls ? ` ${cls}` : ""}`;
}

function render(s) {
  const banner = $("banner");
  if (s.database && s.database !== "ok") {
    banner.textContent = `Database: ${s.database}`;
    banner.dataset.kind = "error";
    banner.hidden = false;
  } else {
    banner.hidden = true;
  }
  set("images", s.images == null ? "–" : s.images.toLocaleString());
  set("pending", String(s.pending ?? 0));
  set("failed-count", String(s.failed.length), s.failed.length ? "bad" : "ok");
  set("live", s.live ? (s.scanning ? "Live · scanning" : "Live") : "Not running", s.live ? "ok" : "off");
  set("last-change", s.last_change_at ? formatDate(s.last_change_at) : "never");
  set("throughput", s.scanning ? `${s.throughput} files/s` : "idle");
  set("model", s.model || "–");
  set("device", s.device ? `${s.device} · ${s.precision}` : "–");
  // what the CPU offers decided the precision: say it where the eye looks for the precision
  $("device").title = s.cpu ? `this CPU offers ${s.cpu}` : "";
  $("image-dir").textContent = s.image_dir || "";

  const p = s.progress;
  $("scan").hidden = !(s.scanning && p);
  if (s.scanning && p) {
    $("scan-progress").max = Math.max(1, p.total);
    $("scan-progress").value = p.done;
    $("scan-text").textContent = `${p.done} of ${p.total} files`;
  }

  renderLibrary(s);
  renderText(s.text);
  renderFaces(s.faces);
  renderModels(s.models);

  const body = $("failures").querySelector("tbody");
  body.replaceChildren(
    ...s.failed.map((f) => {
      const tr = document.createElement("tr");
      const path = document.createElement("td");
      path.className = "path";
      path.textContent = f.path;
      const reason = document.createElement("td");
      reason.textContent = f.reason;
      tr.append(path, reason);
      return tr;
    }),
  );
  $("failures").hidden = s.failed.length === 0;
  $("no-failures").hidden = s.failed.length !== 0 || s.images == null;
}

const MEDIA = [["pictures", "pictures"], ["videos", "videos"], ["live-photos", "live_photos"], ["raw-originals", "raw_originals"]];

function renderLibrary(s) {
  for (const [id, key] of MEDIA) set(id, s.media ? s.media[key].toLocaleString() : "–");
  const folders = s.folders || [];
  $("folders").replaceChildren(...folders.map(folderItem));
  $("image-dir-line").hidden = folders.length > 0; // the list says it, folder by folder
}

// A pass after the embeddings (`id`: text or faces): its counts, its bar while it reads, and one line
// made by `say(p, done, total)`. Pictures are searchable by appearance first; text and faces follow.
function renderPass(id, p, notDone, say) {
  for (const key of ["read", "waiting", notDone]) set(`${id}-${key}`, p ? p[key].toLocaleString() : "–");
  const bar = $(`${id}-progress`);
  const done = p ? p.read + p[notDone] : 0;
  const total = p ? done + p.waiting : 0;
  bar.hidden = !p || p.mode === "off" || p.waiting === 0;
  bar.max = Math.max(1, total);
  bar.value = done;
  $(`${id}-line`).textContent = p ? say(p, done.toLocaleString(), total.toLocaleString()) : "";
}

function renderText(t) {
  renderPass("text", t, "skipped", (p, done, total) => {
    if (p.mode === "off") return "Text in pictures is not read (OCR=off).";
    if (p.waiting) return `Reading the text in pictures: ${done} of ${total} (OCR=${p.mode}).`;
    return `The text of every picture is read (OCR=${p.mode}); videos are not read.`;
  });
}

function renderFaces(f) {
  renderPass("faces", f, "failed", (p, done, total) => {
    if (p.mode === "off") return "Faces are not looked for (FACES=off).";
    if (p.waiting) return `Finding faces: ${done} of ${total}.`;
    return "Every picture and video has been looked at for faces.";
  });
}

const plural = (n, word) => `${n.toLocaleString()} ${word}${n === 1 ? "" : "s"}`;

function folderItem(f) {
  const li = document.createElement("li");
  li.dataset.label = f.label;
  if (f.label) {
    const name = document.createElement("strong");
    name.textContent = f.label;
    li.append(name, " ");
  }
  const path = document.createElement("span");
  path.className = "path";
  path.textContent = f.path;
  const watch = document.createElement("span");
  watch.className = "watch";
  if (f.watch === "live") {
    watch.textContent = "watched live";
  } else {
    watch.textContent = "polled every SCAN_INTERVAL";
    watch.title = "File events do not arrive from this folder (a network mount, or WATCH=poll): it is rescanned.";
  }
  const facts = document.createElement("div");
  facts.className = "off";
  facts.append(watch, ` · ${plural(f.files, "file")}`);
  if (f.sidecars) facts.append(` · ${plural(f.sidecars, "sidecar")}`);
  const skipped = Object.entries(f.skipped || {});
  if (skipped.length) {
    const span = document.createElement("span");
    span.className = "skipped";
    span.textContent = `skipped: ${skipped.map(([ext, n]) => `${n} ${ext}`).join(", ")}`;
    facts.append(" · ", span);
  }
  li.append(path, facts);
  return li;
}

let current = null; // the models part of the last status
let chosen = null; // the model this page asked to build, until searches use it

function renderModels(models) {
  current = models || null;
  const building = models && models.building;
  $("building").hidden = !building;
  if (!building) {
    if (models && chosen && models.active.name === chosen) {
      $("model-message").className = "ok";
      $("model-message").textContent = `Searches now use ${chosen}.`;
      chosen = null;
    }
    return;
  }
  let text = `Building ${building.name}: ${building.done} of ${building.total} images.`;
  if (building.error) text = `Cannot build ${building.name}: ${building.error}`;
  else if (building.switch_requested) text += " Switching now, as asked.";
  else text += ` Searches use ${models.active.name} until it has them all.`;
  $("building-text").textContent = text;
  $("building-progress").max = Math.max(1, building.total);
  $("building-progress").value = building.done;
  $("switch-now").disabled = Boolean(building.switch_requested || building.error);
}

async function choose(model, switchNow) {
  const message = $("model-message");
  const keeping = model === (current && current.active.name);
  const cancelling = keeping && Boolean(current.building);
  try {
    const models = await chooseModel(model, switchNow);
    chosen = keeping ? null : model;
    message.className = "off";
    if (cancelling) message.textContent = `Build cancelled; searches keep using ${model}.`;
    else if (keeping) message.textContent = `${model} is already in use.`;
    else if (switchNow) message.textContent = `Switching searches to ${model} now.`;
    else message.textContent = `Building ${model} beside the current model.`;
    $("model-name").value = "";
    renderModels(models);
  } catch (error) {
    message.className = "bad";
    message.textContent = error.message;
  }
}

$("model-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const model = $("model-name").value.trim();
  if (model) choose(model, false);
});
$("switch-now").addEventListener("click", () => current && current.building && choose(current.building.name, true));
$("cancel-build").addEventListener("click", () => current && choose(current.active.name, false));

async function refresh() {
  try {
    render(await getStatus());
  } catch (error) {
    const banner = $("banner");
    banner.textContent = error.message;
    banner.dataset.kind = "error";
    banner.hidden = false;
  }
}

refresh();
setInterval(refresh, 2000);
