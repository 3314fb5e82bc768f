// The People page (docs/people.md): everyone Sightline found in the pictures, to name, merge and
// hide (people/grid.js), and one person's pictures to correct (people/person.js), at #person-ID.
import { getPeople, getStatus } from "./api.js";
import { initGrid, isBusy, showPeople } from "./people/grid.js";
import { count } from "./people/name.js";
import { initPerson, showPerson } from "./people/person.js";

const $ = (id) => document.getElementById(id);

let noticeAt = 0;

function notify(text, link = null) {
  noticeAt = Date.now();
  const notice = $("notice");
  notice.replaceChildren(text);
  if (link) {
    const a = document.createElement("a");
    a.href = link.href;
    a.textContent = link.text;
    notice.append(" ", a);
  }
  notice.hidden = false;
  $("banner").hidden = true;
}

function fail(text) {
  const banner = $("banner");
  banner.textContent = text;
  banner.dataset.kind = "error";
  banner.hidden = false;
}

const showingHidden = () => $("show-hidden").checked;

let generation = 0;

async function reload() {
  const mine = ++generation;
  try {
    const { people } = await getPeople({ hidden: showingHidden() });
    if (mine !== generation) return;
    $("banner").hidden = true;
    showPeople(people);
    const hidden = people.filter((p) => p.hidden).length;
    $("summary").textContent = people.length
      ? `${count(people.length, "person")}${hidden ? `, ${hidden} of them hidden` : ""}`.replace("persons", "people")
      : "";
    $("empty").hidden = people.length > 0;
    if (!people.length) $("empty").textContent = await emptyMessage();
  } catch (e) {
    if (mine === generation) fail(e.message);
  }
}

async function emptyMessage() {
  if (showingHidden()) return "No people yet.";
  try {
    const status = await getStatus();
    if (status.faces?.mode === "off") return "Faces are off on this server (FACES=off): no one is looked for.";
    if (status.faces?.waiting) return "No people yet: Sightline is still looking for faces in your pictures.";
  } catch {
    // the list's own request says what is wrong
  }
  return "No people yet. Sightline looks for faces once your pictures are indexed; the Status page shows how far it is.";
}

// #person-ID: that person's pictures; otherwise the list
let routed = false;
async function route() {
  const id = /^#person-(\d+)$/.exec(location.hash)?.[1];
  $("list-view").hidden = Boolean(id);
  $("person-view").hidden = !id;
  if (id) {
    try {
      await showPerson(Number(id));
      window.scrollTo({ top: 0 });
      if (routed) $("back").focus({ preventScroll: true }); // from the list: the keyboard starts here
    } catch (e) {
      fail(e.status === 404 ? `No such person (any more): person ${id} may have been merged into another.` : e.message);
    }
  } else {
    document.title = "Sightline · People";
    await reload();
  }
  routed = true;
}

// While the faces pass runs, the list grows: say so, and show the newcomers when it is done
// (unless the user is in the middle of something).
let waiting = 0;
async function pollFaces() {
  try {
    const faces = (await getStatus()).faces;
    const now = faces?.waiting || 0;
    const line = $("faces-progress");
    line.hidden = now === 0;
    line.textContent = `Still looking for faces: ${count(now, "picture")} to go.`;
    if (now !== waiting && !$("list-view").hidden && !isBusy()) reload();
    waiting = now;
  } catch {
    // the page's own requests report an unreachable server
  }
}

$("show-hidden").addEventListener("change", () => {
  const url = new URL(location.href);
  if (showingHidden()) url.searchParams.set("hidden", "1");
  else url.searchParams.delete("hidden");
  history.replaceState(null, "", url);
  reload();
});
$("back").addEventListener("click", (e) => {
  e.preventDefault();
  history.pushState(null, "", location.pathname + location.search);
  $("notice").hidden = true;
  route();
});
window.addEventListener("hashchange", () => {
  if (Date.now() - noticeAt > 500) $("notice").hidden = true; // a line about what led here stays
  route();
});

$("show-hidden").checked = new URLSearchParams(location.search).has("hidden");
initGrid({ reload, notify, fail });
initPerson({ notify, fail });
await route();
await pollFaces();
setInterval(pollFaces, 4000);
