// The larger view of one result: the picture or video (media.js), its facts, and stepping
// through the results in the order the page shows them.
import { formatBytes, formatDate, formatDuration } from "../api.js";
import { initFaces, showFaces } from "./faces.js";
import { initHighlights, showHighlights } from "./highlights.js";
import { initMedia, showMedia, stopMedia } from "./media.js";
import { $, els, ordered, state } from "./state.js";

let current = -1;
let actions = null;

const DATE_LABELS = { exif: "Taken", created: "Recorded", modified: "Modified" };

export function openViewer(index) {
  const r = ordered()[index];
  if (!r) return;
  current = index;
  showMedia(r);
  showHighlights(r);
  showFaces(r);
  $("viewer-path").textContent = r.path;
  $("viewer-original").href = r.url;
  $("viewer-raw").hidden = !r.original_url;
  if (r.original_url) $("viewer-raw").href = r.original_url;
  $("viewer-facts").replaceChildren(
    ...facts(r).flatMap(([k, v]) => {
      const dt = document.createElement("dt");
      dt.textContent = k;
      const dd = document.createElement("dd");
      dd.append(v);
      return [dt, dd];
    }),
  );
  $("viewer-prev").disabled = index === 0;
  $("viewer-next").disabled = index >= state.results.length - 1 && !state.hasMore;
  if (!els.viewer.open) els.viewer.showModal();
}

// [label, text or element] for each fact the result has
function facts(r) {
  return [
    ["Title", r.title || ""],
    ["Description", r.description || ""],
    ["Score", r.score == null ? "" : r.score.toFixed(3)],
    ["Match", r.match || ""],
    ["Words", matchedWords(r.text_match)],
    ["Length", r.duration == null ? "" : formatDuration(r.duration)],
    ["Matched at", r.second == null ? "" : formatDuration(r.second)],
    ["Size", formatBytes(r.size)],
    ["Dimensions", `${r.width} × ${r.height}`],
    [DATE_LABELS[r.date_source] || "Modified", formatDate(r.taken_at)],
    ["Camera", r.camera || ""],
    ["Place", r.place?.label || ""],
    ["GPS", position(r.latitude, r.longitude)],
    ["Keywords", (r.keywords || []).join(", ")],
    ["Rating", stars(r.rating)],
  ].filter(([, v]) => v);
}

// The query's words the picture's own words hold, and where: "cafe luna (text in the picture)"
const PLACES = { name: "name", keywords: "keywords", title: "title", description: "description", ocr: "text in the picture, read by OCR" };
function matchedWords(found) {
  if (!found) return "";
  return `${found.words.join(" ")} (${found.where.map((w) => PLACES[w] || w).join(", ")})`;
}

// Coordinates as text: the page works offline, so there are no map tiles to show them on.
function position(lat, lon) {
  if (lat == null || lon == null) return "";
  const half = (v, plus, minus) => `${Math.abs(v).toFixed(5)}° ${v < 0 ? minus : plus}`;
  return `${half(lat, "N", "S")}, ${half(lon, "E", "W")}`;
}

// XMP ratings: 1 to 5 stars, 0 unrated, -1 rejected
function stars(rating) {
  if (rating == null || rating === 0) return "";
  if (rating < 0) return "Rejected";
  const n = Math.min(5, rating);
  const span = document.createElement("span");
  span.setAttribute("aria-label", `${n} of 5 stars`);
  span.textContent = "★".repeat(n) + "☆".repeat(5 - n);
  return span;
}

export function closeViewer() {
  if (els.viewer.open) els.viewer.close();
}

async function step(delta) {
  const next = current + delta;
  if (next >= state.results.length && state.hasMore) await actions.loadMore();
  if (next >= 0 && next < state.results.length) openViewer(next);
}

// The view's buttons act on the search, which lives in query.js; it is passed in rather than
// imported because query.js opens this view. `person(name)` searches for a person's pictures.
export function initViewer({ loadMore, addTerm, similar, person }) {
  actions = { loadMore };
  initMedia();
  initHighlights();
  initFaces((name) => {
    els.viewer.close();
    person(name);
  });
  els.viewer.addEventListener("close", stopMedia); // Esc, ×, the backdrop, or a new search
  $("viewer-close").addEventListener("click", () => els.viewer.close());
  $("viewer-prev").addEventListener("click", () => step(-1));
  $("viewer-next").addEventListener("click", () => step(1));
  els.viewer.addEventListener("click", (e) => {
    if (e.target === els.viewer) els.viewer.close(); // a click on the backdrop
  });
  $("viewer-less").addEventListener("click", () => addTerm(ordered()[current].id, "-"));
  $("viewer-similar").addEventListener("click", () => {
    const r = ordered()[current];
    els.viewer.close();
    similar(r.id);
  });
  document.addEventListener("keydown", (e) => {
    if (!els.viewer.open) return;
    if (e.target === $("viewer-video")) return; // a focused player seeks with the arrows
    if (e.key === "ArrowRight") step(1);
    if (e.key === "ArrowLeft") step(-1);
  });
}
