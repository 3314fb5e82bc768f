// Talking to the Sightline API. Every failure becomes an Error with a message a person can act on.

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

// When the server has an API_TOKEN, every API call carries it. The page asks for it once, when a
// call answers 401, keeps it in localStorage and asks again if the server stops accepting it. The
// server answers such calls with an HttpOnly cookie that lets <img> tags load images (they cannot
// send headers); see api/security.py.
const TOKEN_KEY = "sightline-token";
let asking = null; // one dialog at a time, however many calls are waiting for it

function storedToken() {
  try {
    return localStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return ""; // storage disabled: the token then lives only as long as the page
  }
}

let pageToken = storedToken();

function keepToken(token) {
  pageToken = token;
  try {
    localStorage.setItem(TOKEN_KEY, token);
  } catch {
    // keep it for this page only
  }
}

function askForToken(wrong) {
  if (!asking) {
    asking = showTokenDialog(wrong).finally(() => {
      asking = null;
    });
  }
  return asking;
}

function showTokenDialog(wrong) {
  return new Promise((resolve) => {
    const dialog = document.createElement("dialog");
    dialog.id = "token-dialog";
    dialog.className = "token";
    const form = document.createElement("form");
    form.method = "dialog";
    const title = document.createElement("h2");
    title.textContent = "This Sightline needs an access token";
    const hint = document.createElement("p");
    hint.id = "token-hint";
    hint.className = wrong ? "bad" : "off";
    hint.textContent = wrong
      ? "That token was not accepted. Enter the API_TOKEN the server was started with."
      : "Enter the API_TOKEN the server was started with. This browser remembers it.";
    const input = document.createElement("input");
    input.id = "token";
    input.type = "password";
    input.required = true;
    input.autocomplete = "current-password";
    input.setAttribute("aria-label", "Access token");
    const button = document.createElement("button");
    button.type = "submit";
    button.textContent = "Continue";
    form.append(title, hint, input, button);
    dialog.append(form);
    // the page cannot do anything without the token, so Esc does not dismiss the question
    dialog.addEventListener("cancel", (e) => e.preventDefault());
    form.addEventListener("submit", () => {
      keepToken(input.value.trim());
      dialog.remove();
      resolve();
    });
    document.body.append(dialog);
    dialog.showModal();
    input.focus();
  });
}

async function request(url, options = {}, retried = false) {
  const sentToken = pageToken;
  const headers = new Headers(options.headers || {});
  if (sentToken) headers.set("Authorization", `Bearer ${sentToken}`);
  let response;
  try {
    response = await fetch(url, { ...options, headers });
  } catch {
    throw new ApiError("Can't reach the Sightline server. Is it still running?", 0);
  }
  if (response.status === 401 && !retried) {
    // another call may already have got a newer token while this one was on its way
    if (pageToken === sentToken) await askForToken(Boolean(sentToken));
    return request(url, options, pageToken === sentToken);
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const detail = body && typeof body.detail === "string" ? body.detail : `HTTP ${response.status}`;
    throw new ApiError(detail, response.status);
  }
  return body;
}

export function searchText(q, params) {
  return request(`/api/search?${new URLSearchParams({ q, ...params })}`);
}

export function searchSimilar(id, params) {
  return request(`/api/images/${encodeURIComponent(id)}/similar?${new URLSearchParams(params)}`);
}

export function searchImage(file, params) {
  const form = new FormData();
  form.append("file", file, file.name || "pasted-image");
  return request(`/api/search/image?${new URLSearchParams(params)}`, { method: "POST", body: form });
}

export function getImage(id) {
  return request(`/api/images/${encodeURIComponent(id)}`);
}

// whether a video plays now or is being converted for browsers; asking starts the conversion
export function getPlayback(playUrl) {
  return request(`${playUrl}/status`);
}

export function getStatus() {
  return request("/api/status").catch((error) => {
    // 503 still carries a status body saying the database is unreachable
    if (error.status === 503) return { database: error.message, images: null, failed: [], live: false };
    throw error;
  });
}

// Build `model` beside the one in use; with switchNow, searches use it as soon as the indexer starts on it.
export function chooseModel(model, switchNow = false) {
  return request("/api/model", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ model, switch_now: switchNow }),
  });
}

export function getDuplicates(params) {
  return request(`/api/duplicates?${new URLSearchParams(params)}`);
}

export function getFolders() {
  return request("/api/folders");
}

export function getPlaces() {
  return request("/api/places");
}

// People (docs/people.md): the list, one person with their pictures, and the corrections.
export function getPeople({ hidden = false } = {}) {
  return request(hidden ? "/api/people?hidden=true" : "/api/people");
}

export function getPerson(id) {
  return request(`/api/people/${encodeURIComponent(id)}`);
}

function send(url, method, body) {
  return request(url, { method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
}

// `change`: {name} and/or {hidden}
export function changePerson(id, change) {
  return send(`/api/people/${encodeURIComponent(id)}`, "PATCH", change);
}

// `id` becomes part of `into`, which remains
export function mergePeople(id, into) {
  return send(`/api/people/${encodeURIComponent(id)}/merge`, "POST", { into });
}

// `change`: {person_id: ID} (move), {person_id: null} (out into a new person) or {not_a_face: true}
export function changeFace(faceId, change) {
  return send(`/api/faces/${encodeURIComponent(faceId)}`, "PATCH", change);
}

export function formatBytes(n) {
  if (n == null) return "";
  const units = ["B", "kB", "MB", "GB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i += 1;
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export function formatDate(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

// a video's length or a second in it, to the nearest second as players write it: 0:08, 1:02:03
export function formatDuration(seconds) {
  if (seconds == null || !Number.isFinite(seconds)) return "";
  const whole = Math.round(seconds);
  const [h, m, s] = [Math.floor(whole / 3600), Math.floor((whole % 3600) / 60), whole % 60];
  const pad = (n) => String(n).padStart(2, "0");
  return h ? `${h}:${pad(m)}:${pad(s)}` : `${m}:${pad(s)}`;
}
