// One person: every picture of theirs with the face marked, and what to do about a face that is
// not theirs: split it out into a person of its own, move it to someone else, or say it is no face.
import { changeFace, changePerson, getPeople, getPerson } from "../api.js";
import { count, displayName, nameEditor } from "./name.js";

const $ = (id) => document.getElementById(id);

let hooks = null;
let current = null; // the person shown

// `hooks`: notify(text, link), fail(text)
export function initPerson(given) {
  hooks = given;
  $("person-hide").addEventListener("click", async () => {
    if (!current) return;
    try {
      const saved = await changePerson(current.id, { hidden: !current.hidden });
      hooks.notify(saved.hidden ? `${displayName(saved)} is hidden from the list and from results.` : "Shown again.");
      render(saved, await others(saved.id));
    } catch (e) {
      hooks.fail(e.message);
    }
  });
}

export async function showPerson(id) {
  const [person, rest] = await Promise.all([getPerson(id), others(id)]);
  render(person, rest);
}

// everyone a face could be moved to (hidden people too: they are still people)
async function others(id) {
  try {
    const { people } = await getPeople({ hidden: true });
    return people.filter((p) => p.id !== id);
  } catch {
    return [];
  }
}

function render(person, rest) {
  current = person;
  const name = displayName(person);
  document.title = `Sightline · ${name}`;
  $("person-title").textContent = `The pictures of ${name}`;
  $("person-cover").hidden = !person.cover_url;
  if (person.cover_url) $("person-cover").src = person.cover_url;
  const edited = (saved, message) => {
    hooks.notify(message || `Saved: ${saved.name}.`);
    if (saved.id !== person.id) location.hash = `#person-${saved.id}`; // merged into another
    else showPerson(saved.id).catch((e) => hooks.fail(e.message));
  };
  $("person-name").replaceChildren(nameEditor(person, edited, { heading: true }));
  const faces = person.faces === person.pictures ? "" : ` · ${count(person.faces, "face")}`;
  $("person-counts").textContent = `${count(person.pictures, "picture")}${faces}${person.hidden ? " · hidden" : ""}`;
  const search = $("person-search");
  search.hidden = !person.name;
  if (person.name) search.href = `/?q=${encodeURIComponent(`person:"${person.name}"`)}`;
  $("person-hide").textContent = person.hidden ? "Show this person" : "Hide this person";
  $("person-empty").hidden = person.items.length > 0;
  $("faces").replaceChildren(...person.items.map((item) => faceItem(person, item, rest)));
}

function faceItem(person, item, rest) {
  const li = document.createElement("li");
  li.className = "face-item";
  li.dataset.faceId = item.face_id;
  li.dataset.path = item.path;

  const link = document.createElement("a");
  link.className = "face-frame";
  link.href = `/api/images/${item.image_id}/file`;
  link.target = "_blank";
  link.rel = "noopener";
  link.title = `Open ${item.path}`;
  const frame = document.createElement("span");
  frame.className = "picture";
  const img = document.createElement("img");
  img.alt = item.path;
  img.loading = "lazy";
  const box = document.createElement("span");
  box.className = "face-box";
  const [x0, y0, x1, y1] = item.box;
  Object.assign(box.style, {
    left: `${x0 * 100}%`,
    top: `${y0 * 100}%`,
    width: `${(x1 - x0) * 100}%`,
    height: `${(y1 - y0) * 100}%`,
  });
  // The picture keeps its shape inside the square: the frame is made its size, so the box, in
  // fractions of the picture, lands on the face.
  img.addEventListener("load", () => {
    const ratio = img.naturalWidth / img.naturalHeight;
    const [w, h] = ratio >= 1 ? [100, 100 / ratio] : [100 * ratio, 100];
    Object.assign(frame.style, { width: `${w}%`, height: `${h}%`, left: `${(100 - w) / 2}%`, top: `${(100 - h) / 2}%` });
    li.classList.add("loaded");
  });
  img.src = `/api/images/${item.image_id}/thumbnail`;
  frame.append(img, box);
  link.append(frame);

  const path = document.createElement("p");
  path.className = "face-path";
  path.textContent = item.path;

  const acts = document.createElement("div");
  acts.className = "face-acts";
  const notThem = button(person.name ? `Not ${person.name}` : "Not this person", "not-person");
  notThem.title = "Take this face out into a person of its own";
  notThem.addEventListener("click", () =>
    act(li, { person_id: null }, (face) => ["Moved out into a new person.", face.person_id]),
  );
  const move = document.createElement("select");
  move.className = "move-to";
  move.setAttribute("aria-label", `Move this face in ${item.path} to another person`);
  move.append(new Option("Move to…", ""));
  for (const p of rest) {
    const label = p.name || `Unnamed person #${p.id}`;
    move.append(new Option(`${label} (${count(p.pictures, "picture")})${p.hidden ? ", hidden" : ""}`, p.id));
  }
  move.disabled = rest.length === 0;
  move.addEventListener("change", () => {
    if (!move.value) return;
    const to = rest.find((p) => p.id === Number(move.value));
    act(li, { person_id: Number(move.value) }, () => [`Moved to ${displayName(to)}.`, to.id]);
  });
  const notFace = button("Not a face", "not-face");
  notFace.title = "What was found here is no face";
  notFace.addEventListener("click", () => act(li, { not_a_face: true }, () => ["Marked as not a face.", null]));
  acts.append(notThem, move, notFace);

  li.append(link, path, acts);
  return li;
}

function button(text, className) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = className;
  b.textContent = text;
  return b;
}

// Sends a face's correction, then shows the person again without that face; `said(face)` gives the
// line to tell the user and the person the face went to (a link to them).
async function act(li, change, said) {
  for (const control of li.querySelectorAll("button, select")) control.disabled = true;
  try {
    const face = await changeFace(li.dataset.faceId, change);
    const [text, to] = said(face);
    const next = li.nextElementSibling || li.previousElementSibling;
    const focusPath = next?.dataset.path;
    await showPerson(current.id);
    hooks.notify(text, to == null ? null : { href: `#person-${to}`, text: "Open them" });
    const again = focusPath && [...document.querySelectorAll("#faces .face-item")].find((x) => x.dataset.path === focusPath);
    (again?.querySelector("button") || $("notice")).focus();
  } catch (e) {
    hooks.fail(e.message);
    for (const control of li.querySelectorAll("button, select")) control.disabled = false;
  }
}
