// What the search page shows and the elements it shows it in, shared by the page's modules.

export const PAGE = 40;
export const LEVELS = ["strong", "weak", "none"];

export const $ = (id) => document.getElementById(id);

export const els = {
  form: $("search-form"), q: $("q"), file: $("file"), folder: $("folder"), after: $("after"), before: $("before"),
  place: $("place"), sort: $("sort"),
  clear: $("clear-filters"), banner: $("banner"), chip: $("query-chip"), message: $("message"), grid: $("results"),
  sentinel: $("sentinel"), more: $("more"), viewer: $("viewer"), drop: $("drop"), chips: $("chips"),
  weakGrid: $("results-weak"), noneGrid: $("results-none"), weakDivider: $("divider-weak"),
  noneDivider: $("divider-none"), main: document.querySelector("main"),
};

export const state = {
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

export function filters() {
  const f = {};
  if (els.folder.value) f.folder = els.folder.value;
  if (els.after.value) f.taken_after = els.after.value;
  if (els.before.value) f.taken_before = els.before.value;
  if (els.place.value) f.place = els.place.value;
  return f;
}

// Sorted by date, a search lists its strong matches newest or oldest first.
export function sorting() {
  return els.sort.value ? { sort: "date", order: els.sort.value } : {};
}

// Results without a judgement (a query of only dates and folders) count as strong: they meet it.
export function levelOf(r) {
  return LEVELS.includes(r.match) ? r.match : "strong";
}

// strong matches first, then weak, then the rest: the order of the sections on the page
export function ordered() {
  return LEVELS.flatMap((level) => state.results.filter((r) => levelOf(r) === level));
}

// The query the chips' positions refer to (the API reads the trimmed text).
export function sentQuery() {
  return state.mode === "text" ? state.q.trim() : "";
}
