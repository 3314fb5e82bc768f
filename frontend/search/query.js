// Running a search: what the query is (text, an example image, or "more like this"), fetching
// its pages, and showing each answer.
import { searchImage, searchSimilar, searchText } from "../api.js";
import { hideUnderstood, showQueryChip, showUnderstood } from "./chips.js";
import { clearTiles, renderTiles } from "./grid.js";
import { emptyIndexMessage, hideBanner, hideMessage, showBanner, showMessage } from "./messages.js";
import { PAGE, els, filters, levelOf, ordered, sorting, state } from "./state.js";
import { writeUrl } from "./url.js";
import { closeViewer, openViewer } from "./viewer.js";

const tileActions = { open: (r) => openViewer(ordered().indexOf(r)), addTerm: addImageTerm };

function fetchPage(offset) {
  const params = { limit: PAGE, offset, ...filters(), ...sorting() };
  // no words but a filter (a place or folder chosen): what meets it, newest first
  if (state.mode === "text" || state.mode === "none") return searchText(state.q.trim(), params);
  if (state.mode === "similar") return searchSimilar(state.similar, params);
  return searchImage(state.file, params);
}

// A new search leaves the previous answer on the page until its own first page arrives, then
// replaces tiles, chips and message together: the page never shows the results of one query
// beside the chips of another, nor an empty grid while the answer is on its way. An answer to
// a query that has since been replaced is dropped. A new answer starts at the top of the page, as
// when the grid emptied at once; `inPlace` keeps the place for a refresh of the same query.
export function search({ inPlace = false } = {}) {
  const generation = ++state.generation;
  if (state.mode === "none" && !Object.keys(filters()).length) {
    showAnswer(null);
    settle();
    showMessage(emptyIndexMessage() || "Type what you are looking for, or drop an image here.");
    return Promise.resolve();
  }
  return fetchAndShow(generation, 0, inPlace);
}

// The next page of the current answer. While a new search is on its way the offset is still the
// old answer's, so nothing is fetched then.
export function loadMore() {
  if (state.loading || !state.hasMore) return Promise.resolve();
  return fetchAndShow(state.generation, state.offset);
}

async function fetchAndShow(generation, offset, inPlace = false) {
  state.loading = true;
  els.grid.setAttribute("aria-busy", "true");
  els.main.classList.toggle("replacing", offset === 0);
  try {
    const page = await fetchPage(offset);
    if (generation !== state.generation) return;
    if (offset === 0) {
      showAnswer(page);
      if (!inPlace) window.scrollTo({ top: 0 });
    }
    state.results.push(...page.results);
    state.offset += page.results.length;
    state.hasMore = page.has_more;
    renderTiles(page.results, tileActions);
    if (state.results.length === 0 && els.sort.value && page.understood?.terms?.length) {
      showMessage("Nothing matches well enough to list by date. Sort by best match to see the nearest images.");
    } else if (state.results.length === 0) {
      showMessage(emptyIndexMessage() || "No matching images. Try other words, or clear the filters.");
    } else if (!state.results.some((r) => levelOf(r) === "strong")) {
      showMessage("No good match: nothing here looks like what you described. The nearest images are below.");
    } else {
      hideMessage();
    }
    hideBanner("error");
  } catch (error) {
    if (generation !== state.generation) return;
    if (offset === 0) showAnswer(null); // no results shown under a query they do not answer
    if (error.status === 0 || error.status >= 500) showBanner(error.message, "error");
    else showMessage(error.message);
  } finally {
    if (generation === state.generation) settle();
  }
}

function settle() {
  state.loading = false;
  els.grid.removeAttribute("aria-busy");
  els.main.classList.remove("replacing");
  els.more.hidden = !state.hasMore;
}

// Clears the previous answer and shows how this one understood the query; its tiles follow.
function showAnswer(page) {
  state.results = [];
  state.offset = 0;
  state.hasMore = false;
  clearTiles();
  if (page?.understood) showUnderstood(page.understood, setQuery);
  else hideUnderstood();
  showQueryChip(clearExample);
}

let typingTimer = 0;

// Typing searches once it pauses for a moment; the query pushes a history entry only when the
// last one is not recent, so Back skips the half-typed words.
export function commitTextSoon() {
  clearTimeout(typingTimer);
  typingTimer = setTimeout(() => commitText({ push: Date.now() - state.lastPush > 1500 }), 250);
}

// The text in the search box becomes the query (typing, Enter, or an edit through a chip); a
// search still waiting for typing to pause is overtaken.
export function commitText({ push }) {
  clearTimeout(typingTimer);
  state.q = els.q.value;
  state.mode = state.q.trim() ? "text" : "none";
  state.similar = null;
  state.file = null;
  writeUrl({ push });
  search();
}

export function setQuery(q) {
  els.q.value = q;
  commitText({ push: true });
  window.scrollTo({ top: 0 });
}

// "more like this" / "less like this" on a result: add the image as a term of the query
export function addImageTerm(id, sign) {
  const base = state.mode === "text" ? state.q.trim() : state.mode === "similar" ? `img:${state.similar}` : "";
  closeViewer();
  if (!base) setQuery(sign === "+" ? `img:${id}` : `- img:${id}`);
  else setQuery(`${base} ${sign} img:${id}`);
}

export function showSimilar(id) {
  state.mode = "similar";
  state.similar = String(id);
  writeUrl({ push: true });
  search();
  window.scrollTo({ top: 0 });
}

export function searchByFile(file) {
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

function clearExample() {
  state.mode = state.q.trim() ? "text" : "none";
  state.similar = null;
  state.file = null;
  writeUrl({ push: true });
  search();
}
