// The duplicates view: each group of exact or near copies side by side, with what a person needs
// to choose which to keep. Sightline never deletes anything; this page only shows.
import { formatBytes, formatDate, getDuplicates, getFolders } from "./api.js";

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
    const params = { threshold: $("threshold").value, limit: PAGE, offset };
    if ($("folder").value) params.folder = $("folder").value;
    const body = await getDuplicates(params);
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

// the threshold and folder live in the URL, so a view of the duplicates is a bookmark
function keepInUrl() {
  const params = new URLSearchParams();
  if ($("threshold").value !== "0.95") params.set("threshold", $("threshold").value);
  if ($("folder").value) params.set("folder", $("folder").value);
  const query = params.toString();
  history.replaceState(null, "", query ? `?${query}` : location.pathname);
}

async function fillFolders(chosen) {
  try {
    const { folders } = await getFolders();
    $("folder").append(
      ...folders.map((f) => {
        const option = document.createElement("option");
        option.value = f.path;
        option.textContent = `${f.path} (${f.images})`;
        return option;
      }),
    );
  } catch {
    // the groups' own request says what is wrong
  }
  if (chosen && ![...$("folder").options].some((o) => o.value === chosen)) {
    $("folder").append(new Option(chosen, chosen)); // named in the URL, not (yet) indexed
  }
  $("folder").value = chosen;
}

$("dup-form").addEventListener("submit", (event) => {
  event.preventDefault();
  keepInUrl();
  load(true);
});
$("folder").addEventListener("change", () => {
  keepInUrl();
  load(true);
});
$("more").addEventListener("click", () => load(false));

const start = new URLSearchParams(location.search);
if (start.get("threshold")) $("threshold").value = start.get("threshold");
fillFolders(start.get("folder") || "").then(() => load(true));
