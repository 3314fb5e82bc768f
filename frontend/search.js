// The search page: a query box (text, example image or "more like this"), filters kept in the URL,
// a grid of results that loads more as you scroll, and a larger view for one result. The parts
// are in search/; this wires them together and keeps the page up to date with the indexer.
import { getFolders, getPlaces, getStatus } from "./api.js";
import { initInput } from "./search/input.js";
import { emptyIndexMessage, hideBanner, showBanner, showMessage } from "./search/messages.js";
import { addImageTerm, loadMore, search, setQuery, showSimilar } from "./search/query.js";
import { PAGE, els, state } from "./search/state.js";
import { readUrl } from "./search/url.js";
import { initViewer } from "./search/viewer.js";

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
      search({ inPlace: true }); // new or changed images: refresh the first page
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

// The places where pictures were taken, by kind (countries, then regions, cities, localities).
async function loadPlaces() {
  try {
    const { places } = await getPlaces();
    const selected = els.place.value;
    const groups = { country: "Countries", region: "Regions", city: "Cities", locality: "Neighbourhoods and towns" };
    for (const [kind, label] of Object.entries(groups)) {
      const group = document.createElement("optgroup");
      group.label = label;
      for (const p of places.filter((p) => p.kind === kind)) group.append(new Option(`${p.name} (${p.images})`, p.name));
      if (group.children.length) els.place.append(group);
    }
    // a place from the URL that the list now holds keeps only the list's option
    for (const o of [...els.place.options]) {
      if (o.parentElement === els.place && o.value && [...els.place.options].some((x) => x !== o && x.value === o.value)) o.remove();
    }
    els.place.value = selected;
  } catch {
    // the place list is a convenience; search works without it
  }
}

const searchPerson = (name) => setQuery(`person:"${name}"`);
initViewer({ loadMore, addTerm: addImageTerm, similar: showSimilar, person: searchPerson });
initInput();
readUrl();
await Promise.all([pollStatus(), loadFolders(), loadPlaces()]);
search();
setInterval(pollStatus, 3000);
