// The results: one grid per match level (strong, weak, none), each with a divider above it
// that shows only when its grid has tiles.
import { formatDuration } from "../api.js";
import { els, levelOf } from "./state.js";

const grids = () => ({ strong: els.grid, weak: els.weakGrid, none: els.noneGrid });

export function clearTiles() {
  for (const grid of Object.values(grids())) grid.replaceChildren();
  els.weakDivider.hidden = true;
  els.noneDivider.hidden = true;
}

// `open(r)` shows a result in the larger view; `addTerm(id, sign)` adds it to the query.
export function renderTiles(results, { open, addTerm }) {
  const byLevel = grids();
  results.forEach((r) => {
    const li = document.createElement("li");
    li.className = "tile";
    li.dataset.path = r.path;
    li.dataset.id = r.id;
    li.dataset.match = levelOf(r);
    const button = document.createElement("button");
    button.type = "button";
    const where = r.place ? `\n${r.place.label}` : "";
    button.title = `${r.path}${where}\nscore ${r.score?.toFixed(3) ?? "–"} · ${levelOf(r)} match`;
    button.addEventListener("click", () => open(r));
    const img = document.createElement("img");
    img.loading = "lazy";
    img.decoding = "async";
    img.src = r.thumbnail_url;
    img.alt = r.path;
    img.width = r.width;
    img.height = r.height;
    img.style.objectPosition = facesInView(r.people);
    const caption = document.createElement("span");
    caption.className = "caption";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = r.path.split("/").pop();
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = r.score == null ? "" : r.score.toFixed(3);
    caption.append(name);
    if (r.place) {
      const city = document.createElement("span");
      city.className = "where";
      city.textContent = r.place.city;
      caption.append(city);
    }
    caption.append(score);
    button.append(img, ...badges(r), caption);
    const acts = document.createElement("span");
    acts.className = "acts";
    for (const [sign, label, cls] of [["+", "More like this", "more-like"], ["-", "Less like this", "less-like"]]) {
      const act = document.createElement("button");
      act.type = "button";
      act.className = cls;
      act.title = label;
      act.setAttribute("aria-label", `${label}: ${r.path}`);
      act.textContent = sign === "+" ? "+" : "−";
      act.addEventListener("click", () => addTerm(r.id, sign));
      acts.append(act);
    }
    li.append(button, acts);
    byLevel[levelOf(r)].append(li);
  });
  els.weakDivider.hidden = els.weakGrid.children.length === 0;
  els.noneDivider.hidden = els.noneGrid.children.length === 0;
}

// Over the thumbnail (a JPEG for every format, and for a video the frame that matched): what the
// tile is beyond a picture, shown in short and spoken in full.
function badges(r) {
  const made = [];
  const badge = (cls, text, spoken) => {
    const span = document.createElement("span");
    span.className = `badge ${cls}`;
    const shown = document.createElement("span");
    shown.setAttribute("aria-hidden", "true");
    shown.textContent = text;
    const sr = document.createElement("span");
    sr.className = "sr";
    sr.textContent = spoken;
    span.append(shown, sr);
    made.push(span);
  };
  if (r.kind === "video") {
    const length = formatDuration(r.duration);
    badge("duration", length || "video", length ? `video, ${length} long` : "video");
    if (r.second != null) badge("at", `at ${formatDuration(r.second)}`, `matched at ${formatDuration(r.second)}`);
  } else if (r.kind === "live") {
    badge("live", "LIVE", "Live Photo");
  }
  if (r.text_match) {
    const words = r.text_match.words.join(" ");
    badge("text", `“${words}”`, `its own words say ${words} (${r.text_match.where.join(", ")})`);
  }
  if (made.length === 0) return [];
  const box = document.createElement("span");
  box.className = "badges";
  box.append(...made);
  return [box];
}

// The square tile crops a picture: keep its faces in it. (With object-position p%, the point p% of
// the way across the picture lands p% of the way across the tile, so it is always in view.)
function facesInView(people) {
  if (!people?.length) return "";
  const middle = (i) => people.reduce((sum, f) => sum + (f.box[i] + f.box[i + 2]) / 2, 0) / people.length;
  return `${(middle(0) * 100).toFixed(1)}% ${(middle(1) * 100).toFixed(1)}%`;
}
