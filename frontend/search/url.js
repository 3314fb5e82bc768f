// The query and filters live in the URL, so a search is a bookmark and Back returns to the last one.
import { els, state } from "./state.js";

export function readUrl() {
  const params = new URLSearchParams(location.search);
  state.q = params.get("q") || "";
  state.similar = params.get("similar");
  els.q.value = state.q;
  els.after.value = params.get("after") || "";
  els.before.value = params.get("before") || "";
  for (const [select, name] of [[els.folder, "folder"], [els.place, "place"]]) {
    const value = params.get(name) || "";
    if (value && ![...select.options].some((o) => o.value === value)) select.add(new Option(value, value));
    select.value = value;
  }
  els.sort.value = ["newest", "oldest"].includes(params.get("sort")) ? params.get("sort") : "";
  state.mode = state.similar ? "similar" : state.q.trim() ? "text" : "none";
}

export function writeUrl({ push }) {
  const params = new URLSearchParams();
  if (state.mode === "text" && state.q.trim()) params.set("q", state.q);
  if (state.mode === "similar" && state.similar) params.set("similar", state.similar);
  if (els.folder.value) params.set("folder", els.folder.value);
  if (els.after.value) params.set("after", els.after.value);
  if (els.before.value) params.set("before", els.before.value);
  if (els.place.value) params.set("place", els.place.value);
  if (els.sort.value) params.set("sort", els.sort.value);
  const url = params.toString() ? `/?${params}` : "/";
  if (url === location.pathname + location.search) return;
  if (push) history.pushState(null, "", url);
  else history.replaceState(null, "", url);
  state.lastPush = Date.now();
}
