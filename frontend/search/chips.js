// How the query was understood, as chips: its terms and the filters read from its words, each
// removable; and, for a search by example, a chip naming the example.
import { getPeople } from "../api.js";
import { els, sentQuery, state } from "./state.js";

// `edit(q)` searches for the query with a chip's words cut out.
export function showUnderstood(understood, edit) {
  const terms = understood.terms || [];
  const filters = understood.filters || {};
  const simple = terms.length === 1 && terms[0].text != null && terms[0].weight === 1;
  const narrowed = filters.dates || filters.folders || filters.places || filters.text || filters.people;
  if (state.mode !== "text" || (simple && !narrowed)) {
    els.chips.hidden = true;
    return;
  }
  // The positions are in the query this answer is for: by the time a chip is clicked the box
  // may hold a newer one, still on its way.
  const q = sentQuery();
  const remove = (start, end, label) =>
    removeButton(label, () => edit(tidy(q.slice(0, start) + " " + q.slice(end))));
  const chips = [];
  for (const t of terms) {
    const chip = makeChip(t.weight < 0 ? "chip term term-negative" : "chip term");
    if (t.weight < 0) chip.append("without ");
    if (t.image_id != null) {
      const img = document.createElement("img");
      img.src = `/api/images/${t.image_id}/thumbnail`;
      img.alt = "";
      chip.append(img, `image #${t.image_id}`);
    } else {
      chip.append(t.text ?? t.upload ?? "");
    }
    if (Math.abs(t.weight) !== 1) {
      const weight = document.createElement("span");
      weight.className = "weight";
      weight.textContent = ` ×${Math.abs(t.weight)}`;
      chip.append(weight);
    }
    if (t.start != null) chip.append(remove(t.start, t.end, "Remove this term"));
    chips.push(chip);
  }
  for (const p of filters.people || []) {
    const chip = makeChip(p.exclude ? "chip filter with-person person-negative" : "chip filter with-person");
    const face = document.createElement("img");
    face.alt = "";
    face.hidden = true;
    coverOf(p.person_id).then((url) => {
      if (url) {
        face.src = url;
        face.hidden = false;
      }
    });
    chip.append(face, `${p.exclude ? "without" : "with"} ${p.name}`);
    chip.title = `${p.exclude ? "pictures without" : "pictures of"} ${p.name}, from "${p.words}"`;
    chip.append(remove(p.start, p.end, `Remove ${p.name}`));
    chips.push(chip);
  }
  for (const d of filters.dates || []) {
    const chip = makeChip("chip filter date");
    chip.append(`taken ${d.taken_after === d.taken_before ? d.taken_after : `${d.taken_after} – ${d.taken_before}`}`);
    chip.title = `from "${d.words}"`;
    chip.append(remove(d.start, d.end, "Remove this date"));
    chips.push(chip);
  }
  for (const f of filters.folders || []) {
    const chip = makeChip("chip filter folder");
    chip.append(`in ${f.folder}/`);
    chip.title = `from "${f.words}"`;
    chip.append(remove(f.start, f.end, "Remove this folder"));
    chips.push(chip);
  }
  for (const p of filters.places || []) {
    const chip = makeChip("chip filter place");
    chip.append(`in ${p.place}`);
    chip.title = `taken there, from "${p.words}"`;
    chip.append(remove(p.start, p.end, "Remove this place"));
    chips.push(chip);
  }
  for (const t of filters.text || []) {
    const chip = makeChip(t.exclude ? "chip filter text text-negative" : "chip filter text");
    chip.append(`${t.exclude ? "not saying" : "saying"} “${t.text}”`);
    chip.title = "names, keywords, title, description or text in the picture";
    chip.append(remove(t.start, t.end, "Remove this text filter"));
    chips.push(chip);
  }
  els.chips.replaceChildren(...chips);
  els.chips.hidden = chips.length === 0;
}

export function hideUnderstood() {
  els.chips.hidden = true;
}

// `clear()` drops the example and goes back to the text query, if any.
export function showQueryChip(clear) {
  if (state.mode === "similar") {
    els.chip.textContent = "";
    els.chip.append("Images like ");
    const link = document.createElement("a");
    link.href = `/api/images/${state.similar}/file`;
    link.target = "_blank";
    link.textContent = `#${state.similar}`;
    els.chip.append(link);
  } else if (state.mode === "image") {
    els.chip.textContent = `Images like ${state.file?.name || "the pasted image"}`;
  } else {
    els.chip.hidden = true;
    return;
  }
  const button = document.createElement("button");
  button.type = "button";
  button.className = "link";
  button.textContent = "×";
  button.setAttribute("aria-label", "Clear");
  button.addEventListener("click", clear);
  els.chip.append(" ", button);
  els.chip.hidden = false;
}

// A person's face for their chip: the People list's covers, asked for once (and again for a person
// the list did not have yet).
const covers = new Map();
let asking = null;
async function coverOf(id) {
  if (!covers.has(id)) {
    asking ??= getPeople({ hidden: true })
      .then(({ people }) => {
        for (const p of people) covers.set(p.id, p.cover_url);
      })
      .catch(() => {})
      .finally(() => {
        asking = null;
      });
    await asking;
    if (!covers.has(id)) covers.set(id, null);
  }
  return covers.get(id);
}

function makeChip(className) {
  const chip = document.createElement("span");
  chip.className = className;
  return chip;
}

function removeButton(label, onClick) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "link remove";
  button.textContent = "×";
  button.setAttribute("aria-label", label);
  button.addEventListener("click", onClick);
  return button;
}

// After a piece is cut out: single spaces, and no operator left dangling at either end.
function tidy(q) {
  return q.replace(/\s+/g, " ").trim().replace(/^\+\s*/, "").replace(/\s[+-]$/, "").trim();
}
