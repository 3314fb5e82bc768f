// The larger view of one result: the image, its facts, and stepping through the results in the
// order the page shows them.
import { formatBytes, formatDate } from "../api.js";
import { $, els, ordered, state } from "./state.js";

let current = -1;
let actions = null;

export function openViewer(index) {
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

export function closeViewer() {
  if (els.viewer.open) els.viewer.close();
}

async function step(delta) {
  const next = current + delta;
  if (next >= state.results.length && state.hasMore) await actions.loadMore();
  if (next >= 0 && next < state.results.length) openViewer(next);
}

// The view's buttons act on the search, which lives in query.js; it is passed in rather than
// imported because query.js opens this view.
export function initViewer({ loadMore, addTerm, similar }) {
  actions = { loadMore };
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
    if (e.key === "ArrowRight") step(1);
    if (e.key === "ArrowLeft") step(-1);
  });
}
