// The line in place of results (nothing found, nothing indexed yet) and the banner above them.
import { els, state } from "./state.js";

export function showMessage(text) {
  els.message.textContent = text;
  els.message.hidden = false;
}

export function hideMessage() {
  els.message.hidden = true;
}

export function showBanner(text, kind) {
  els.banner.textContent = text;
  els.banner.dataset.kind = kind;
  els.banner.hidden = false;
}

export function hideBanner(kind) {
  if (!kind || els.banner.dataset.kind === kind) els.banner.hidden = true;
}

export function emptyIndexMessage() {
  const s = state.status;
  if (!s || s.images !== 0) return null;
  if (s.scanning) {
    const p = s.progress || { done: 0, total: 0 };
    return `Indexing ${p.done} of ${p.total} files; results appear as images are indexed.`;
  }
  return `No images are indexed yet. Put photos in ${s.image_dir} (or set IMAGE_DIR) and they appear here by themselves.`;
}
