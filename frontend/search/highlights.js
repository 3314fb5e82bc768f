// Where the query's words are in the picture: a box over each line of text read in it that holds
// one of them (`text_match.lines`, boxes as fractions of the picture), laid over the picture as the
// view shows it: scaled to fit and centred, so the layer is placed on the picture's own rectangle.
import { $ } from "./state.js";

let shownLines = [];

export function showHighlights(r) {
  shownLines = (r.kind !== "video" && r.text_match?.lines) || [];
  const layer = $("viewer-highlights");
  layer.replaceChildren(
    ...shownLines.map((line) => {
      const [x0, y0, x1, y1] = line.box;
      const box = document.createElement("div");
      box.className = "highlight";
      box.title = line.text;
      Object.assign(box.style, {
        left: `${x0 * 100}%`,
        top: `${y0 * 100}%`,
        width: `${(x1 - x0) * 100}%`,
        height: `${(y1 - y0) * 100}%`,
      });
      return box;
    }),
  );
  layer.hidden = true; // until the picture is laid out
  if ($("viewer-img").complete) placeHighlights();
}

export function placeHighlights() {
  const layer = $("viewer-highlights");
  layer.hidden = !shownLines.length || !fitToPicture(layer);
}

// Lays `layer` over the picture's rectangle inside the <img>, which keeps its aspect ratio within a
// fixed box; false while there is no picture to lay it on.
export function fitToPicture(layer) {
  const img = $("viewer-img");
  if (img.hidden || !img.naturalWidth) return false;
  const scale = Math.min(img.clientWidth / img.naturalWidth, img.clientHeight / img.naturalHeight);
  const width = img.naturalWidth * scale;
  const height = img.naturalHeight * scale;
  Object.assign(layer.style, {
    left: `${img.offsetLeft + (img.clientWidth - width) / 2}px`,
    top: `${img.offsetTop + (img.clientHeight - height) / 2}px`,
    width: `${width}px`,
    height: `${height}px`,
  });
  return true;
}

export function initHighlights() {
  $("viewer-img").addEventListener("load", placeHighlights);
  window.addEventListener("resize", placeHighlights);
}
