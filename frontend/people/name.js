// A person's name, edited in place: click it (or "Add a name"), type, Enter saves, Escape leaves it
// as it was. What goes wrong is said in one line under the field; a name another person already
// has comes with the offer to merge the two, which is what such a name means.
import { changePerson, getPeople, mergePeople } from "../api.js";

export const displayName = (person) => person.name || "Unnamed person";

// `done(person, message)` is called with the person as the server has them once a name is saved or
// a merge is made (then the person who remains, and a line to tell the user).
export function nameEditor(person, done, { heading = false } = {}) {
  const box = document.createElement("div");
  box.className = heading ? "name-edit heading" : "name-edit";
  const button = document.createElement("button");
  button.type = "button";
  button.className = person.name ? "name" : "name unnamed";
  button.textContent = person.name || "Add a name";
  button.title = person.name ? "Click to rename" : "Click to name this person";
  button.setAttribute("aria-label", person.name ? `${person.name}: rename` : `Add a name for person ${person.id}`);
  const input = document.createElement("input");
  input.type = "text";
  input.className = "name-input";
  input.maxLength = 100;
  input.placeholder = "Name";
  input.autocomplete = "off";
  input.setAttribute("aria-label", person.name ? `New name for ${person.name}` : `Name of person ${person.id}`);
  input.hidden = true;
  const error = document.createElement("p");
  error.className = "field-error";
  error.setAttribute("role", "alert");
  error.hidden = true;
  error.id = `name-error-${person.id}-${heading ? "h" : "c"}`;
  input.setAttribute("aria-describedby", error.id);
  box.append(button, input, error);

  let busy = false;
  const open = () => {
    input.value = person.name || "";
    button.hidden = true;
    input.hidden = false;
    input.focus();
    input.select();
  };
  const close = () => {
    input.hidden = true;
    error.hidden = true;
    button.hidden = false;
    button.focus();
  };
  const say = (...parts) => {
    error.replaceChildren(...parts);
    error.hidden = false;
  };

  async function save() {
    const name = input.value.replace(/\s+/g, " ").trim();
    if (name === (person.name || "")) return close();
    if (!name) return say("A name cannot be empty: type one, or press Escape to leave it as it was.");
    busy = true;
    input.setAttribute("aria-busy", "true");
    try {
      const saved = await changePerson(person.id, { name });
      done(saved, null);
    } catch (e) {
      if (e.status === 409) await offerMerge(name, e);
      else say(e.message);
    } finally {
      busy = false;
      input.removeAttribute("aria-busy");
    }
  }

  // Someone else has the name: this person is them (or the name is a mistake).
  async function offerMerge(name, conflict) {
    const other = await personNamed(name, conflict.message);
    if (!other) return say(conflict.message);
    const merge = document.createElement("button");
    merge.type = "button";
    merge.className = "merge-offer";
    merge.textContent = `Merge with ${other.name}`;
    merge.addEventListener("click", async () => {
      merge.disabled = true;
      try {
        const kept = await mergePeople(person.id, other.id);
        done(kept, `Merged into ${kept.name}: ${count(kept.pictures, "picture")} now.`);
      } catch (e) {
        merge.disabled = false;
        say(e.message);
      }
    });
    say(`“${other.name}” is already someone else's name. `, merge);
  }

  button.addEventListener("click", open);
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      if (!busy) save();
    } else if (e.key === "Escape") {
      e.preventDefault();
      e.stopPropagation();
      close();
    }
  });
  // Leaving the field unchanged puts the name back; a change or an error waits for Enter or Escape
  // (or the merge button beside it).
  input.addEventListener("blur", () => {
    setTimeout(() => {
      if (!input.hidden && error.hidden && !busy && input.value.trim() === (person.name || "")) {
        input.hidden = true;
        button.hidden = false;
      }
    });
  });
  return box;
}

// The person who has `name` (hidden ones too); the conflict's message names their id as a fallback.
async function personNamed(name, message) {
  const wanted = name.toLowerCase();
  try {
    const { people } = await getPeople({ hidden: true });
    const found = people.find((p) => (p.name || "").toLowerCase() === wanted);
    if (found) return found;
  } catch {
    // fall back on the message
  }
  const id = /person (\d+)/.exec(message)?.[1];
  return id ? { id: Number(id), name } : null;
}

export function count(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}
