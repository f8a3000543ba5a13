// Every call the console makes goes through the same /v1 API as the CLI,
// with the token the user signed in with. The token lives in this tab's
// session storage only: never in a URL, a cookie or local storage.

const KEY = 'flare.token';
const NAMESPACE = 'flare.namespace';

export const session = {
  token: () => sessionStorage.getItem(KEY),
  namespace: () => sessionStorage.getItem(NAMESPACE) || 'default',
  signIn(token) {
    sessionStorage.setItem(KEY, token);
  },
  setNamespace(namespace) {
    sessionStorage.setItem(NAMESPACE, namespace);
  },
  signOut() {
    sessionStorage.removeItem(KEY);
    sessionStorage.removeItem(NAMESPACE);
  },
};

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// `path` with the chosen namespace added, for namespaced resources.
export function scoped(path) {
  const separator = path.includes('?') ? '&' : '?';
  return `${path}${separator}namespace=${encodeURIComponent(session.namespace())}`;
}

// Fetches `path` with the token; throws ApiError with the API's own
// message on an error status.
export async function call(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const token = session.token();
  if (token) headers.set('authorization', `Bearer ${token}`);
  const response = await fetch(path, {
    ...options,
    headers,
    credentials: 'omit',
    cache: 'no-store',
    referrerPolicy: 'no-referrer',
  });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      message = body.message || body.error?.message || message;
    } catch {
      // Not JSON: the status line says enough.
    }
    throw new ApiError(response.status, message);
  }
  return response;
}

export async function json(path, options) {
  const response = await call(path, options);
  return response.json();
}

// Calls `onEntry` with each JSON line of a streaming NDJSON response until
// `signal` aborts or the server ends it.
export async function follow(path, signal, onEntry) {
  const response = await call(path, { signal });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffered += value;
    let newline;
    while ((newline = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, newline).trim();
      buffered = buffered.slice(newline + 1);
      if (line) onEntry(JSON.parse(line));
    }
  }
}
