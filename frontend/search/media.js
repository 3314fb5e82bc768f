// What the larger view shows of a result: a picture (or, for a format browsers cannot show, the
// JPEG the server makes of it), a video from the second a search matched, or a Live Photo's still
// with a button that plays its motion in place.
import { $ } from "./state.js";

let shown = null; // the result in the view
let playingMotion = false;

export function showMedia(r) {
  stopMedia();
  shown = r;
  const img = $("viewer-img");
  const video = $("viewer-video");
  $("viewer-live").hidden = !r.motion_url;
  if (r.kind === "video") {
    img.hidden = true;
    img.removeAttribute("src");
    video.hidden = false;
    video.controls = true;
    video.poster = r.thumbnail_url; // the matched frame, until the player has its own
    // A media fragment starts the player at the matched frame: no waiting for its metadata, and
    // the rest of the video is still there to scrub back to.
    video.src = r.second == null ? r.url : `${r.url}#t=${r.second}`;
    play(video);
  } else {
    img.src = r.preview_url || r.url;
    img.alt = r.path;
    showStill();
  }
}

// Lets go of the file, so that a closed view or the next result does not go on playing or
// downloading it.
export function stopMedia() {
  const video = $("viewer-video");
  video.pause();
  video.removeAttribute("src");
  video.removeAttribute("poster");
  video.load();
  $("viewer-media-error").hidden = true;
  playingMotion = false;
}

function showStill() {
  const video = $("viewer-video");
  video.pause();
  video.hidden = true;
  $("viewer-img").hidden = false;
  playingMotion = false;
  $("viewer-live").textContent = "▶ Play Live Photo";
}

function playMotion() {
  const video = $("viewer-video");
  video.controls = false; // a Live Photo plays through, as on the phone
  video.poster = $("viewer-img").src;
  video.src = shown.motion_url;
  video.hidden = false;
  $("viewer-img").hidden = true;
  playingMotion = true;
  $("viewer-live").textContent = "■ Show still";
  play(video);
}

// play() rejects when the browser holds back autoplay or a newer source replaces this one; the
// controls, and the error event for a file it cannot play, cover both.
function play(video) {
  video.play().catch(() => {});
}

// HEVC, what iPhones record, plays in Safari but not in most other browsers: say so and offer
// the file, rather than leave an empty black box.
function cannotPlay() {
  const video = $("viewer-video");
  if (!shown || !video.getAttribute("src")) return; // stopMedia() emptied it
  const message = $("viewer-media-error");
  const link = document.createElement("a");
  link.href = playingMotion ? shown.motion_url : shown.url;
  link.download = "";
  link.textContent = "Download it";
  const what = playingMotion ? "this Live Photo's motion" : "this video";
  message.replaceChildren(`This browser cannot play ${what} (its format or codec). `, link, " to watch it.");
  message.hidden = false;
  if (playingMotion) showStill();
}

export function initMedia() {
  const video = $("viewer-video");
  $("viewer-live").addEventListener("click", () => (playingMotion ? showStill() : playMotion()));
  video.addEventListener("ended", () => {
    if (playingMotion) showStill();
  });
  video.addEventListener("error", cannotPlay);
}
