// The search page: a query box (text, example image or "more like this"), filters kept in the URL,
// a grid of results that loads more as you scroll, and a larger view for one result.
import { formatBytes, formatDate, getFolders, getStatus, searchImage, searchSimilar, searchText } from "./api.js";

const PAGE = 40;
const $ = (id) => document.getElementById(id);
const els = {
  form: $("search-form"), q: $("q"), file: $("file"), folder: $("folder"), after: $("after"), before: $("before"),
  clear: $("clear-filters"), banner: $("banner"), chip: $("query-chip"), message: $("message"), grid: $("results"),
  sentinel: $("sentinel"), more: $("more"), viewer: $("viewer"), drop: $("drop"), chips: $("chips"),
  weakGrid: $("results-weak"), noneGrid: $("results-none"), weakDivider: $("divider-weak"),
  noneDivider: $("divider-none"),
};
const LEVELS = ["strong", "weak", "none"];

const state = {
  mode: "none", // "text" | "similar" | "image" | "none"
  q: "",
  similar: null,
  file: null,
  results: [],
  offset: 0,
  hasMore: false,
  loading: false,
  generation: 0, // bumps on every new search; stale responses are dropped
  lastChange: undefined,
  lastPush: 0,
  status: null,
};

function filters() {
  const f = {};
  if (els.folder.value) f.folder = els.folder.value;
  if (els.after.value) f.taken_after = els.after.value;
  if (els.before.value) f.taken_before = els.before.value;
  return f;
}

// --- URL <-> state ---------------------------------------------------------------------------

function readUrl() {
  const params = new URLSearchParams(location.search);
  state.q = params.get("q") || "";
  state.similar = params.get("similar");
  els.q.value = state.q;
  els.after.value = params.get("after") || "";
  els.before.value = params.get("before") || "";
  const folder = params.get("folder") || "";
  if (folder && ![...els.folder.options].some((o) => o.value === folder)) {
    els.folder.add(new Option(folder, folder));
  }
  els.folder.value = folder;
  state.mode = state.similar ? "similar" : state.q.trim() ? "text" : "none";
}

function writeUrl({ push }) {
  const params = new URLSearchParams();
  if (state.mode === "text" && state.q.trim()) params.set("q", state.q);
  if (state.mode === "similar" && state.similar) params.set("similar", state.similar);
  if (els.folder.value) params.set("folder", els.folder.value);
  if (els.after.value) params.set("after", els.after.value);
  if (els.before.value) params.set("before", els.before.value);
  const url = params.toString() ? `/?${params}` : "/";
  if (url === location.pathname + location.search) return;
  if (push) history.pushState(null, "", url);
  else history.replaceState(null, "", url);
  state.lastPush = Date.now();
}

// --- searching -------------------------------------------------------------------------------

function fetchPage(offset) {
  const params = { limit: PAGE, offset, ...filters() };
  if (state.mode === "text") return searchText(state.q.trim(), params);
  if (state.mode === "similar") return searchSimilar(state.similar, params);
  if (state.mode === "image") return searchImage(state.file, params);
  return Promise.resolve(null);
}

async function search() {
  const generation = ++state.generation;
  state.results = [];
  state.offset = 0;
  state.hasMore = false;
  for (const grid of [els.grid, els.weakGrid, els.noneGrid]) grid.replaceChildren();
  els.weakDivider.hidden = true;
  els.noneDivider.hidden = true;
  els.chips.hidden = true;
  showChip();
  if (state.mode === "none") {
    showMessage(emptyIndexMessage() || "Type what you are looking for, or drop an image here.");
    return;
  }
  await loadMore(generation);
}

async function loadMore(generation = state.generation) {
  if (state.loading && generation === state.generation && state.offset > 0) return;
  state.loading = true;
  els.grid.setAttribute("aria-busy", "true");
  try {
    const page = await fetchPage(state.offset);
    if (generation !== state.generation || !page) return;
    state.results.push(...page.results);
    state.offset += page.results.length;
    state.hasMore = page.has_more;
    renderTiles(page.results);
    if (page.understood && page.offset === 0) showUnderstood(page.understood);
    if (state.results.length === 0) {
      showMessage(emptyIndexMessage() || "No matching images. Try other words, or clear the filters.");
    } else if (!state.results.some((r) => levelOf(r) === "strong")) {
      showMessage("No good match: nothing here looks like what you described. The nearest images are below.");
    } else {
      hideMessage();
    }
    hideBanner("error");
  } catch (error) {
    if (generation !== state.generation) return;
    if (error.status === 0 || error.status >= 500) showBanner(error.message, "error");
    else showMessage(error.message);
  } finally {
    if (generation === state.generation) {
      state.loading = false;
      els.grid.removeAttribute("aria-busy");
      els.more.hidden = !state.hasMore;
    }
  }
}

// Results without a judgement (a query of only dates and folders) count as strong: they meet it.
function levelOf(r) {
  return LEVELS.includes(r.match) ? r.match : "strong";
}

// strong matches first, then weak, then the rest: the order of the sections on the page
function ordered() {
  return LEVELS.flatMap((level) => state.results.filter((r) => levelOf(r) === level));
}

function renderTiles(results) {
  const grids = { strong: els.grid, weak: els.weakGrid, none: els.noneGrid };
  results.forEach((r) => {
    const li = document.createElement("li");
    li.className = "tile";
    li.dataset.path = r.path;
    li.dataset.id = r.id;
    li.dataset.match = levelOf(r);
    const button = document.createElement("button");
    button.type = "button";
    button.title = `${r.path}\nscore ${r.score?.toFixed(3) ?? "–"} · ${levelOf(r)} match`;
    button.addEventListener("click", () => openViewer(ordered().indexOf(r)));
    const img = document.createElement("img");
    img.loading = "lazy";
    img.decoding = "async";
    img.src = r.thumbnail_url;
    img.alt = r.path;
    img.width = r.width;
    img.height = r.height;
    const caption = document.createElement("span");
    caption.className = "caption";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = r.path.split("/").pop();
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = r.score == null ? "" : r.score.toFixed(3);
    caption.append(name, score);
    button.append(img, caption);
    const acts = document.createElement("span");
    acts.className = "acts";
    for (const [sign, label, cls] of [["+", "More like this", "more-like"], ["-", "Less like this", "less-like"]]) {
      const act = document.createElement("button");
      act.type = "button";
      act.className = cls;
      act.title = label;
      act.setAttribute("aria-label", `${label}: ${r.path}`);
      act.textContent = sign === "+" ? "+" : "−";
      act.addEventListener("click", () => addImageTerm(r.id, sign));
      acts.append(act);
    }
    li.append(button, acts);
    grids[levelOf(r)].append(li);
  });
  els.weakDivider.hidden = els.weakGrid.children.length === 0;
  els.noneDivider.hidden = els.noneGrid.children.length === 0;
}

// --- the query as understood: terms and filters as chips --------------------------------------

// The query the chips' positions refer to (the API reads the trimmed text).
function sentQuery() {
  return state.mode === "text" ? state.q.trim() : "";
}

function showUnderstood(understood) {
  const terms = understood.terms || [];
  const filters = understood.filters || {};
  const simple = terms.length === 1 && terms[0].text != null && terms[0].weight === 1;
  if (state.mode !== "text" || (simple && !filters.dates && !filters.folders)) {
    els.chips.hidden = true;
    return;
  }
  const chips = [];
  for (const t of terms) {
    const chip = makeChip(t.weight < 0 ? "chip term term-negative" : "chip term");
    if (t.weight < 0) chip.append("without ");
    if (t.image_id != null) {
      const img = document.createElement("img");
      img.src = `/api/images/${t.image_id}/thumbnail`;
      img.alt = "";
      chip.append(img, `image #${t.image_id}`);
    } else {
      chip.append(t.text ?? t.upload ?? "");
    }
    if (Math.abs(t.weight) !== 1) {
      const weight = document.createElement("span");
      weight.className = "weight";
      weight.textContent = ` ×${Math.abs(t.weight)}`;
      chip.append(weight);
    }
    if (t.start != null) chip.append(removeButton(t.start, t.end, "Remove this term"));
    chips.push(chip);
  }
  for (const d of filters.dates || []) {
    const chip = makeChip("chip filter date");
    chip.append(`taken ${d.taken_after === d.taken_before ? d.taken_after : `${d.taken_after} – ${d.taken_before}`}`);
    chip.title = `from "${d.words}"`;
    chip.append(removeButton(d.start, d.end, "Remove this date"));
    chips.push(chip);
  }
  for (const f of filters.folders || []) {
    const chip = makeChip("chip filter folder");
    chip.append(`in ${f.folder}/`);
    chip.title = `from "${f.words}"`;
    chip.append(removeButton(f.start, f.end, "Remove this folder"));
    chips.push(chip);
  }
  els.chips.replaceChildren(...chips);
  els.chips.hidden = chips.length === 0;
}

function makeChip(className) {
  const chip = document.createElement("span");
  chip.className = className;
  return chip;
}

function removeButton(start, end, label) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "link remove";
  button.textContent = "×";
  button.setAttribute("aria-label", label);
  button.addEventListener("click", () => {
    const q = sentQuery();
    setQuery(tidy(q.slice(0, start) + " " + q.slice(end)));
  });
  return button;
}

// After a piece is cut out: single spaces, and no operator left dangling at either end.
function tidy(q) {
  return q.replace(/\s+/g, " ").trim().replace(/^\+\s*/, "").replace(/\s[+-]$/, "").trim();
}

function setQuery(q) {
  els.q.value = q;
  clearTimeout(typingTimer);
  commitText({ push: true });
  window.scrollTo({ top: 0 });
}

// "more like this" / "less like this" on a result: add the image as a term of the query
function addImageTerm(id, sign) {
  const base = state.mode === "text" ? state.q.trim() : state.mode === "similar" ? `img:${state.similar}` : "";
  if (els.viewer.open) els.viewer.close();
  if (!base) setQuery(sign === "+" ? `img:${id}` : `- img:${id}`);
  else setQuery(`${base} ${sign} img:${id}`);
}

// --- messages and banners --------------------------------------------------------------------

function showMessage(text) {
  els.message.textContent = text;
  els.message.hidden = false;
}

function hideMessage() {
  els.message.hidden = true;
}

function showBanner(text, kind) {
  els.banner.textContent = text;
  els.banner.dataset.kind = kind;
  els.banner.hidden = false;
}

function hideBanner(kind) {
  if (!kind || els.banner.dataset.kind === kind) els.banner.hidden = true;
}

function emptyIndexMessage() {
  const s = state.status;
  if (!s || s.images !== 0) return null;
  if (s.scanning) return "Indexing has started; results appear as images are indexed.";
  return `No images are indexed yet. Put photos in ${s.image_dir} (or set IMAGE_DIR) and they appear here by themselves.`;
}

function showChip() {
  if (state.mode === "similar") {
    els.chip.textContent = "";
    els.chip.append("Images like ");
    const link = document.createElement("a");
    link.href = `/api/images/${state.similar}/file`;
    link.target = "_blank";
    link.textContent = `#${state.similar}`;
    els.chip.append(link);
  } else if (state.mode === "image") {
    els.chip.textContent = `Images like ${state.file?.name || "the pasted image"}`;
  } else {
    els.chip.hidden = true;
    return;
  }
  const clear = document.createElement("button");
  clear.type = "button";
  clear.className = "link";
  clear.textContent = "×";
  clear.setAttribute("aria-label", "Clear");
  clear.addEventListener("click", () => {
    state.mode = state.q.trim() ? "text" : "none";
    state.similar = null;
    state.file = null;
    writeUrl({ push: true });
    search();
  });
  els.chip.append(" ", clear);
  els.chip.hidden = false;
}

// --- the larger view -------------------------------------------------------------------------

let current = -1;

function openViewer(index) {
  const r = ordered()[index];
  if (!r) return;
  current = index;
  $("viewer-img").src = r.url;
  $("viewer-img").alt = r.path;
  $("viewer-path").textContent = r.path;
  $("viewer-original").href = r.url;
  const facts = [
    ["Score", r.score == null ? "" : r.score.toFixed(3)],
    ["Match", r.match || ""],
    ["Size", formatBytes(r.size)],
    ["Dimensions", `${r.width} × ${r.height}`],
    [r.date_source === "exif" ? "Taken" : "Modified", formatDate(r.taken_at)],
    ["Camera", r.camera || ""],
  ].filter(([, v]) => v);
  $("viewer-facts").replaceChildren(
    ...facts.flatMap(([k, v]) => {
      const dt = document.createElement("dt");
      dt.textContent = k;
      const dd = document.createElement("dd");
      dd.textContent = v;
      return [dt, dd];
    }),
  );
  $("viewer-prev").disabled = index === 0;
  $("viewer-next").disabled = index >= state.results.length - 1 && !state.hasMore;
  if (!els.viewer.open) els.viewer.showModal();
}

async function step(delta) {
  const next = current + delta;
  if (next >= state.results.length && state.hasMore) await loadMore();
  if (next >= 0 && next < state.results.length) openViewer(next);
}

$("viewer-close").addEventListener("click", () => els.viewer.close());
$("viewer-prev").addEventListener("click", () => step(-1));
$("viewer-next").addEventListener("click", () => step(1));
els.viewer.addEventListener("click", (e) => {
  if (e.target === els.viewer) els.viewer.close(); // a click on the backdrop
});
$("viewer-less").addEventListener("click", () => addImageTerm(ordered()[current].id, "-"));
$("viewer-similar").addEventListener("click", () => {
  const r = ordered()[current];
  els.viewer.close();
  state.mode = "similar";
  state.similar = String(r.id);
  writeUrl({ push: true });
  search();
  window.scrollTo({ top: 0 });
});

// --- input -----------------------------------------------------------------------------------

let typingTimer = 0;

els.q.addEventListener("input", () => {
  clearTimeout(typingTimer);
  typingTimer = setTimeout(() => {
    commitText({ push: Date.now() - state.lastPush > 1500 });
  }, 250);
});

els.form.addEventListener("submit", (e) => {
  e.preventDefault();
  clearTimeout(typingTimer);
  commitText({ push: true });
});

function commitText({ push }) {
  state.q = els.q.value;
  state.mode = state.q.trim() ? "text" : "none";
  state.similar = null;
  state.file = null;
  writeUrl({ push });
  search();
}

for (const input of [els.folder, els.after, els.before]) {
  input.addEventListener("change", () => {
    writeUrl({ push: true });
    search();
  });
}

els.clear.addEventListener("click", () => {
  els.folder.value = "";
  els.after.value = "";
  els.before.value = "";
  writeUrl({ push: true });
  search();
});

function searchByFile(file) {
  if (!file) return;
  if (!file.type.startsWith("image/")) {
    showMessage(`${file.name || "That file"} is not an image.`);
    return;
  }
  state.mode = "image";
  state.file = file;
  state.similar = null;
  writeUrl({ push: true });
  search();
}

els.file.addEventListener("change", () => {
  searchByFile(els.file.files[0]);
  els.file.value = "";
});

let dragDepth = 0;
window.addEventListener("dragenter", (e) => {
  if (![...(e.dataTransfer?.types || [])].includes("Files")) return;
  dragDepth += 1;
  els.drop.hidden = false;
});
window.addEventListener("dragleave", () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (dragDepth === 0) els.drop.hidden = true;
});
window.addEventListener("dragover", (e) => e.preventDefault());
window.addEventListener("drop", (e) => {
  e.preventDefault();
  dragDepth = 0;
  els.drop.hidden = true;
  searchByFile(e.dataTransfer?.files?.[0]);
});
window.addEventListener("paste", (e) => {
  const item = [...(e.clipboardData?.items || [])].find((i) => i.type.startsWith("image/"));
  if (item) {
    e.preventDefault();
    searchByFile(item.getAsFile());
  }
});

document.addEventListener("keydown", (e) => {
  if (els.viewer.open) {
    if (e.key === "ArrowRight") step(1);
    if (e.key === "ArrowLeft") step(-1);
    return;
  }
  const typing = ["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement?.tagName);
  if (e.key === "/" && !typing) {
    e.preventDefault();
    els.q.focus();
    els.q.select();
  }
});

window.addEventListener("popstate", () => {
  readUrl();
  search();
});

els.more.addEventListener("click", () => loadMore());
new IntersectionObserver((entries) => {
  if (entries.some((e) => e.isIntersecting) && state.hasMore && !state.loading) loadMore();
}, { rootMargin: "600px" }).observe(els.sentinel);

// --- keeping up with the indexer -------------------------------------------------------------

async function pollStatus() {
  try {
    const s = await getStatus();
    state.status = s;
    hideBanner("error");
    if (s.database && s.database !== "ok") {
      showBanner(`The database is unreachable: ${s.database}`, "error");
    } else if (s.scanning) {
      const p = s.progress || { done: 0, total: 0 };
      showBanner(`Indexing your images: ${p.done} of ${p.total} files so far. Search covers what is indexed.`, "scan");
    } else {
      hideBanner("scan");
    }
    const changed = state.lastChange !== undefined && s.last_change_at !== state.lastChange;
    state.lastChange = s.last_change_at;
    if (changed && state.mode !== "none" && state.results.length <= PAGE && !els.viewer.open) {
      search(); // new or changed images: refresh the first page in place
    } else if (state.mode === "none" && state.results.length === 0) {
      showMessage(emptyIndexMessage() || "Type what you are looking for, or drop an image here.");
    }
  } catch (error) {
    showBanner(error.message, "error");
  }
}

async function loadFolders() {
  try {
    const { folders } = await getFolders();
    const selected = els.folder.value;
    for (const f of folders) {
      if (![...els.folder.options].some((o) => o.value === f.path)) {
        els.folder.add(new Option(`${f.path} (${f.images})`, f.path));
      }
    }
    els.folder.value = selected;
  } catch {
    // the folder list is a convenience; search works without it
  }
}

readUrl();
await Promise.all([pollStatus(), loadFolders()]);
search();
setInterval(pollStatus, 3000);
