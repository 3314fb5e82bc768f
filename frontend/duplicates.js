// The duplicates view: each group of exact or near copies side by side, with what a person needs
// to choose which to keep. Sightline never deletes anything; this page only shows.
import { formatBytes, formatDate, getDuplicates } from "./api.js";

const $ = (id) => document.getElementById(id);
const PAGE = 20;
let offset = 0;

function figure(image) {
  const fig = document.createElement("figure");
  fig.className = "dup-image";
  const link = document.createElement("a");
  link.href = image.url;
  link.target = "_blank";
  const img = document.createElement("img");
  img.src = image.thumbnail_url;
  img.alt = image.path;
  img.loading = "lazy";
  link.append(img);
  const caption = document.createElement("figcaption");
  const path = document.createElement("div");
  path.className = "path";
  path.textContent = image.path;
  const facts = document.createElement("div");
  facts.className = "facts";
  facts.textContent = [
    formatBytes(image.size),
    `${image.width}×${image.height}`,
    formatDate(image.taken_at),
    `similarity ${image.similarity.toFixed(3)}`,
  ].filter(Boolean).join(" · ");
  caption.append(path, facts);
  fig.append(link, caption);
  return fig;
}

function group(g) {
  const section = document.createElement("section");
  section.className = "dup-group";
  section.dataset.kind = g.kind;
  const title = document.createElement("h2");
  title.textContent = `${g.kind === "exact" ? "Exact copies" : "Near-duplicates"} · ${g.count} images`;
  const row = document.createElement("div");
  row.className = "dup-row";
  row.append(...g.images.map(figure));
  section.append(title, row);
  return section;
}

async function load(reset) {
  if (reset) {
    offset = 0;
    $("groups").replaceChildren();
  }
  const banner = $("banner");
  try {
    const body = await getDuplicates({ threshold: $("threshold").value, limit: PAGE, offset });
    banner.hidden = true;
    $("summary").textContent = body.total_groups
      ? `${body.total_groups} groups, ${body.images_in_groups} images`
      : "No duplicates at this similarity.";
    $("groups").append(...body.groups.map(group));
    offset += body.groups.length;
    $("more").hidden = !body.has_more;
  } catch (error) {
    banner.textContent = error.message;
    banner.dataset.kind = "error";
    banner.hidden = false;
  }
}

$("dup-form").addEventListener("submit", (event) => {
  event.preventDefault();
  load(true);
});
$("more").addEventListener("click", () => load(false));
load(true);
