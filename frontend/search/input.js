// Everything that starts a search: the search box, the filters, an example image (picked,
// dropped or pasted), Back and Forward, and scrolling to the end of the results.
import { commitText, commitTextSoon, loadMore, search, searchByFile } from "./query.js";
import { els, state } from "./state.js";
import { readUrl, writeUrl } from "./url.js";

export function initInput() {
  els.q.addEventListener("input", commitTextSoon);
  els.form.addEventListener("submit", (e) => {
    e.preventDefault();
    commitText({ push: true });
  });

  for (const input of [els.folder, els.after, els.before, els.place, els.sort]) {
    input.addEventListener("change", () => {
      writeUrl({ push: true });
      search();
    });
  }
  els.clear.addEventListener("click", () => {
    els.folder.value = "";
    els.after.value = "";
    els.before.value = "";
    els.place.value = "";
    writeUrl({ push: true });
    search();
  });

  els.file.addEventListener("change", () => {
    searchByFile(els.file.files[0]);
    els.file.value = "";
  });

  // dragenter and dragleave fire for every element crossed; the overlay stays until the last leave
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
    if (els.viewer.open) return; // its own keys (viewer.js)
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
}
