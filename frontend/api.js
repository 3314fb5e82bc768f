// Talking to the Sightline API. Every failure becomes an Error with a message a person can act on.

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

async function request(url, options = {}) {
  let response;
  try {
    response = await fetch(url, options);
  } catch {
    throw new ApiError("Can't reach the Sightline server. Is it still running?", 0);
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

export function getStatus() {
  return request("/api/status").catch((error) => {
    // 503 still carries a status body saying the database is unreachable
    if (error.status === 503) return { database: error.message, images: null, failed: [], live: false };
    throw error;
  });
}

export function getFolders() {
  return request("/api/folders");
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
