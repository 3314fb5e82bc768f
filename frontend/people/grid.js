// Everyone found, most pictures first: a card per person with their face, name (edited in place)
// and counts; two selected people can be merged, and anyone hidden or shown again.
import { changePerson, mergePeople } from "../api.js";
import { count, displayName, nameEditor } from "./name.js";

const $ = (id) => document.getElementById(id);

let people = [];
const selected = new Set();
let hooks = null;

// `hooks`: reload() fetches the list again, notify(text, link) says what was done
export function initGrid(given) {
  hooks = given;
  $("merge").addEventListener("click", merge);
  $("clear-selection").addEventListener("click", () => {
    selected.clear();
    for (const box of document.querySelectorAll(".person .pick-person input")) box.checked = false;
    updateSelection();
  });
}

export function showPeople(list) {
  people = list;
  for (const id of [...selected]) if (!people.some((p) => p.id === id)) selected.delete(id);
  $("people").replaceChildren(...people.map(card));
  updateSelection();
}

export function isBusy() {
  return selected.size > 0 || Boolean(document.querySelector("#people .name-input:not([hidden])"));
}

function card(person) {
  const li = document.createElement("li");
  li.className = person.hidden ? "person is-hidden" : "person";
  li.dataset.personId = person.id;
  const name = person.name || `unnamed person #${person.id}`; // for the labels of its controls

  const pick = document.createElement("label");
  pick.className = "pick-person";
  pick.title = "Select to merge";
  const box = document.createElement("input");
  box.type = "checkbox";
  box.checked = selected.has(person.id);
  box.setAttribute("aria-label", `Select ${name} to merge`);
  box.addEventListener("change", () => {
    if (box.checked) selected.add(person.id);
    else selected.delete(person.id);
    updateSelection();
  });
  pick.append(box);

  const cover = document.createElement("a");
  cover.className = "cover-link";
  cover.href = `#person-${person.id}`;
  cover.setAttribute("aria-label", `Open the pictures of ${name}`);
  const img = document.createElement("img");
  img.className = "cover";
  img.alt = "";
  img.loading = "lazy";
  if (person.cover_url) img.src = person.cover_url;
  cover.append(img);

  const counts = document.createElement("p");
  counts.className = "counts";
  const faces = person.faces === person.pictures ? "" : ` · ${count(person.faces, "face")}`;
  counts.textContent = `${count(person.pictures, "picture")}${faces}`;

  const acts = document.createElement("div");
  acts.className = "person-acts";
  if (person.hidden) {
    const tag = document.createElement("span");
    tag.className = "tag";
    tag.textContent = "Hidden";
    acts.append(tag);
  }
  const hide = document.createElement("button");
  hide.type = "button";
  hide.className = "link hide-toggle";
  hide.textContent = person.hidden ? "Show" : "Hide";
  hide.setAttribute("aria-label", `${person.hidden ? "Show" : "Hide"} ${name}`);
  hide.addEventListener("click", () => setHidden(person, !person.hidden));
  acts.append(hide);

  const edited = (saved, message) => {
    hooks.notify(message || `Saved: ${saved.name}.`);
    hooks.reload();
  };
  li.append(pick, cover, nameEditor(person, edited), counts, acts);
  return li;
}

async function setHidden(person, hidden) {
  try {
    await changePerson(person.id, { hidden });
    const name = displayName(person);
    hooks.notify(hidden ? `${name} is hidden: “Show hidden people” lists them again.` : `${name} is shown again.`);
    await hooks.reload();
  } catch (e) {
    hooks.fail(e.message);
  }
}

// Who remains when two people are merged: a named one (of two, the one with more pictures, whose
// name stays), else the one with more pictures.
function mergePlan() {
  const [a, b] = [...selected].map((id) => people.find((p) => p.id === id));
  const more = a.pictures >= b.pictures ? a : b;
  const kept = a.name && b.name ? more : a.name ? a : b.name ? b : more;
  return { kept, gone: kept === a ? b : a };
}

function updateSelection() {
  for (const li of document.querySelectorAll("#people .person")) {
    li.classList.toggle("selected", selected.has(Number(li.dataset.personId)));
    li.classList.remove("keeps");
  }
  const button = $("merge");
  const hint = $("merge-hint");
  $("merge-bar").hidden = selected.size === 0;
  button.disabled = true;
  button.textContent = "Merge";
  if (selected.size === 1) {
    hint.textContent = "Select one more person: the one who is the same.";
  } else if (selected.size > 2) {
    hint.textContent = "Select only two people to merge them.";
  } else if (selected.size === 2) {
    const { kept, gone } = mergePlan();
    button.disabled = false;
    button.textContent = kept.name
      ? `Merge into ${kept.name}`
      : `Merge into the one with ${count(kept.pictures, "picture")}`;
    hint.textContent = kept.name
      ? gone.name
        ? `(“${gone.name}” is no longer a name: their pictures join ${kept.name})`
        : ""
      : "(the other's pictures join them)";
    document.querySelector(`#people .person[data-person-id="${kept.id}"]`)?.classList.add("keeps");
  }
}

async function merge() {
  const plan = mergePlan();
  $("merge").disabled = true;
  try {
    const kept = await mergePeople(plan.gone.id, plan.kept.id);
    selected.clear();
    hooks.notify(`Merged: ${displayName(kept)} has ${count(kept.pictures, "picture")} now.`);
    await hooks.reload();
  } catch (e) {
    hooks.fail(e.message);
    updateSelection();
  }
}
