// Who is in the picture of the larger view: a "People" row with each face's crop and name (a named
// person searches for them, an unnamed one leads to the People page), and the faces' boxes over the
// picture: while the pointer is on it, while a face in the row is pointed at or focused, or always
// with "Show faces" (a touch screen has no hover).
import { fitToPicture } from "./highlights.js";
import { $ } from "./state.js";

let faces = [];
let pinned = false; // "Show faces", kept from one picture to the next
let onPerson = null;

// `searchPerson(name)` searches for the pictures of a named person.
export function initFaces(searchPerson) {
  onPerson = searchPerson;
  $("viewer-img").addEventListener("load", placeFaces);
  window.addEventListener("resize", placeFaces);
  $("viewer-faces-toggle").addEventListener("click", () => {
    pinned = !pinned;
    showPinned();
  });
}

export function showFaces(r) {
  faces = r.people || [];
  $("viewer-people").hidden = faces.length === 0;
  $("viewer-people-list").replaceChildren(...faces.map(entry));
  // a video's faces are those of one frame, which the player moves away from
  const boxes = r.kind === "video" ? [] : faces.map(box);
  $("viewer-faces").replaceChildren(...boxes);
  $("viewer-faces-toggle").hidden = boxes.length === 0;
  showPinned();
  $("viewer-faces").hidden = true; // until the picture is laid out
  if ($("viewer-img").complete) placeFaces();
}

function placeFaces() {
  const layer = $("viewer-faces");
  layer.hidden = !layer.children.length || !fitToPicture(layer);
}

function showPinned() {
  const toggle = $("viewer-faces-toggle");
  toggle.setAttribute("aria-pressed", String(pinned));
  toggle.textContent = pinned ? "Hide faces" : "Show faces";
  $("viewer-faces").classList.toggle("on", pinned);
}

const label = (face) => face.name || "Unnamed person";

function box(face) {
  const el = document.createElement("div");
  el.className = "viewer-face";
  el.dataset.faceId = face.face_id;
  const [x0, y0, x1, y1] = face.box;
  Object.assign(el.style, {
    left: `${x0 * 100}%`,
    top: `${y0 * 100}%`,
    width: `${(x1 - x0) * 100}%`,
    height: `${(y1 - y0) * 100}%`,
  });
  const tag = document.createElement("span");
  tag.className = "face-label";
  tag.textContent = label(face);
  el.append(tag);
  return el;
}

// One face in the row: a button that searches for a named person, a link to an unnamed person on
// the People page, or only the face where it belongs to no one (too small or unclear to group).
function entry(face) {
  let el;
  if (face.name) {
    el = document.createElement("button");
    el.type = "button";
    el.title = `Search for pictures of ${face.name}`;
    el.addEventListener("click", () => onPerson(face.name));
  } else if (face.person_id != null) {
    el = document.createElement("a");
    el.href = `/people#person-${face.person_id}`;
    el.title = "Name them on the People page";
  } else {
    el = document.createElement("span");
    el.title = "A face too small or unclear to tell who it is";
  }
  el.className = face.name ? "person-chip" : "person-chip unnamed";
  el.dataset.faceId = face.face_id;
  const img = document.createElement("img");
  img.src = `/api/faces/${face.face_id}/thumbnail`;
  img.alt = "";
  const name = document.createElement("span");
  name.textContent = label(face);
  el.append(img, name);
  for (const [type, on] of [["mouseenter", true], ["focus", true], ["mouseleave", false], ["blur", false]]) {
    el.addEventListener(type, () => light(on ? face.face_id : null));
  }
  const li = document.createElement("li");
  li.append(el);
  return li;
}

// Brings out the box of one face (null: none)
function light(faceId) {
  const layer = $("viewer-faces");
  layer.classList.toggle("lighting", faceId != null);
  for (const el of layer.children) el.classList.toggle("lit", Number(el.dataset.faceId) === faceId);
}
