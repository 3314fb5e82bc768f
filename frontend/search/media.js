// What the larger view shows of a result: a picture (or, for a format browsers cannot show, the
// JPEG the server makes of it), a video from the second a search matched (or, for a codec not every
// browser plays, the H.264 the server makes of it), or a Live Photo's still with a button that
// plays its motion in place.
import { getPlayback } from "../api.js";
import { $ } from "./state.js";

let shown = null; // the result in the view
let playingMotion = false;
let asked = 0; // counts what the player was asked for, so that a wait for an earlier one gives up
const ASK_AGAIN_MS = 700; // while a video is being converted: often enough for its progress

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
    whenPlayable(r, "this video").then((url) => {
      if (!url) return;
      // A media fragment starts the player at the matched frame: no waiting for its metadata,
      // and the rest of the video is still there to scrub back to.
      video.src = r.second == null ? url : `${url}#t=${r.second}`;
      play(video);
    });
  } else {
    img.src = r.preview_url || r.url;
    img.alt = r.path;
    showStill();
  }
}

// Lets go of the file, so that a closed view or the next result does not go on playing or
// downloading it.
export function stopMedia() {
  asked += 1;
  $("viewer-video-note").hidden = true;
  const video = $("viewer-video");
  video.pause();
  video.removeAttribute("src");
  video.removeAttribute("poster");
  video.load();
  $("viewer-media-error").hidden = true;
  playingMotion = false;
}

// The URL to play, once the server has it: the file itself, or the H.264 it makes of one whose
// codec (HEVC, what iPhones record) not every browser plays. While it makes it, the view says so.
// null: the view moved on, or the server cannot make it (the view then says why).
async function whenPlayable(r, what) {
  const seen = ++asked;
  const note = $("viewer-video-note");
  for (;;) {
    let playback;
    try {
      playback = await getPlayback(r.play_url);
    } catch (error) {
      if (seen === asked) cannotPlay(`${error.message} `);
      return null;
    }
    if (seen !== asked) return null;
    if (playback.state === "ready") {
      note.hidden = true;
      return playback.url;
    }
    const done = playback.progress ? ` (${Math.round(playback.progress * 100)} %)` : "";
    note.textContent = `Preparing ${what} for this browser${done}…`;
    note.hidden = false;
    await new Promise((resolve) => setTimeout(resolve, ASK_AGAIN_MS));
    if (seen !== asked) return null;
  }
}

function showStill() {
  asked += 1;
  $("viewer-video-note").hidden = true;
  const video = $("viewer-video");
  video.pause();
  video.hidden = true;
  $("viewer-img").hidden = false;
  playingMotion = false;
  $("viewer-live").textContent = "▶ Play Live Photo";
}

// The still stays until the motion can play (it may have to be converted first).
function playMotion() {
  playingMotion = true;
  $("viewer-live").textContent = "■ Show still";
  whenPlayable(shown, "this Live Photo's motion").then((url) => {
    if (!url) return;
    const video = $("viewer-video");
    video.controls = false; // a Live Photo plays through, as on the phone
    video.poster = $("viewer-img").src;
    video.src = url;
    video.hidden = false;
    $("viewer-img").hidden = true;
    play(video);
  });
}

// play() rejects when the browser holds back autoplay or a newer source replaces this one; the
// controls, and the error event for a file it cannot play, cover both.
function play(video) {
  video.play().catch(() => {});
}

// A file the server cannot read or convert, or that this browser cannot play after all (a codec
// the server took for playable): say so and offer the file, rather than leave an empty black box.
function cannotPlay(why) {
  const message = $("viewer-media-error");
  const link = document.createElement("a");
  link.href = playingMotion ? shown.motion_url : shown.url;
  link.download = "";
  link.textContent = "Download it";
  message.replaceChildren(why, link, " to watch it.");
  message.hidden = false;
  if (playingMotion) showStill();
}

function failedToPlay() {
  const video = $("viewer-video");
  if (!shown || !video.getAttribute("src")) return; // stopMedia() emptied it
  const what = playingMotion ? "this Live Photo's motion" : "this video";
  cannotPlay(`This browser cannot play ${what} (its format or codec). `);
}

export function initMedia() {
  const video = $("viewer-video");
  $("viewer-live").addEventListener("click", () => (playingMotion ? showStill() : playMotion()));
  video.addEventListener("ended", () => {
    if (playingMotion) showStill();
  });
  video.addEventListener("error", failedToPlay);
}
