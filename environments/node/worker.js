'use strict';
// Flare's Node.js worker: speaks environments/PROTOCOL.md on FLARE_SOCKET.
//
// Function contract (Fission style):
//   module.exports = async (context) => ({ status: 200, headers: {}, body: 'hi' });
// context.request has method, url, path, query, headers and body (a Buffer);
// body may be a string, a Buffer, or any other value (sent as JSON).
// Invocations run concurrently; console output is attributed to its own
// invocation through AsyncLocalStorage. Standard library only.

const net = require('net');
const fs = require('fs');
const path = require('path');
const { AsyncLocalStorage } = require('async_hooks');

const current = new AsyncLocalStorage();

function frame(header, body) {
  const h = Buffer.from(JSON.stringify(header));
  const b = body ? Buffer.from(body) : Buffer.alloc(0);
  const out = Buffer.alloc(8 + h.length + b.length);
  out.writeUInt32BE(h.length, 0);
  h.copy(out, 4);
  out.writeUInt32BE(b.length, 4 + h.length);
  b.copy(out, 8 + h.length);
  return out;
}

// Bytes of one call's output sent to Flare; the rest is only counted (Flare
// keeps 1 MiB a call and says how much was dropped). Also bounds what waits
// in the socket's buffer.
const LOG_BUDGET = 1 << 20;
// Longest piece of a line held before it is sent.
const LOG_CHUNK = 16 << 10;
let sendFrame = null;

// Send console output of an invocation to Flare as it is written, a `log`
// frame per write that completes a line, so a kill takes nothing along.
function emit(logs, stream, text) {
  const data = Buffer.from(text);
  const room = Math.max(0, LOG_BUDGET - logs.sent);
  const kept = data.subarray(0, room);
  logs.sent += kept.length;
  logs.dropped += data.length - kept.length;
  if (kept.length) sendFrame({ op: 'log', id: logs.id, stream }, kept);
}

// Output written outside any call in flight (module code, a timer that
// outlives its call) is the worker's own: sent with no id, so it is never
// filed under another invocation. Its budget starts over with each call.
const stray = { id: null, sent: 0, dropped: 0, partial: { stdout: '', stderr: '' } };

for (const stream of ['stdout', 'stderr']) {
  const original = process[stream].write.bind(process[stream]);
  process[stream].write = (chunk, encoding, callback) => {
    if (!sendFrame) return original(chunk, encoding, callback);
    const call = current.getStore();
    const logs = call && !call.done ? call : stray;
    const text = logs.partial[stream] + chunk.toString();
    const end = text.lastIndexOf('\n') + 1 || (text.length >= LOG_CHUNK ? text.length : 0);
    if (end) emit(logs, stream, text.slice(0, end));
    logs.partial[stream] = text.slice(end);
    if (typeof encoding === 'function') encoding();
    else if (typeof callback === 'function') callback();
    return true;
  };
}

function finish(logs) {
  logs.done = true;
  for (const stream of ['stdout', 'stderr']) {
    if (logs.partial[stream]) emit(logs, stream, logs.partial[stream] + '\n');
    logs.partial[stream] = '';
  }
  if (logs.dropped) sendFrame({ op: 'log', id: logs.id, stream: 'stderr', dropped: logs.dropped });
  logs.dropped = 0;
}

// Sets the function's environment variables and writes its secrets
// (read-only files under /secrets) before its code is loaded.
function prepare(header) {
  for (const [name, value] of Object.entries(header.env || {})) process.env[name] = value;
  for (const entry of header.files || []) {
    const file = path.normalize(entry.path);
    if (!file.startsWith('/secrets/')) throw new Error(`a file outside /secrets: ${file}`);
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    fs.writeFileSync(file, Buffer.from(entry.data, 'base64'), { mode: 0o400 });
  }
}

function load(header) {
  const file = header.file ? path.join(header.code, header.file) : header.code;
  const mod = require(file);
  if (!header.entrypoint) {
    if (typeof mod === 'function') return mod;
    if (typeof mod.main === 'function') return mod.main;
    throw new TypeError('the module exports no function (module.exports = async (context) => ...)');
  }
  let target = mod;
  for (const part of header.entrypoint.split('.')) target = target && target[part];
  if (typeof target !== 'function') throw new TypeError(`${header.entrypoint} is not a function`);
  return target;
}

function toResponse(result) {
  result = result || {};
  const status = result.status || 200;
  const headers = Object.entries(result.headers || {}).map(([k, v]) => [String(k), String(v)]);
  let body = result.body;
  const has = (name) => headers.some(([k]) => k.toLowerCase() === name);
  if (body === undefined || body === null) body = Buffer.alloc(0);
  else if (Buffer.isBuffer(body)) {
    if (!has('content-type')) headers.push(['content-type', 'application/octet-stream']);
  } else if (typeof body === 'string') {
    body = Buffer.from(body);
    if (!has('content-type')) headers.push(['content-type', 'text/plain; charset=utf-8']);
  } else {
    body = Buffer.from(JSON.stringify(body));
    if (!has('content-type')) headers.push(['content-type', 'application/json']);
  }
  return { status, headers, body };
}

// The sandbox's only way out is Flare's egress proxy on a Unix socket:
// forward a loopback port to it and point the usual proxy variables there
// (Node's own fetch ignores them; a proxy agent or http.request to the
// proxy uses them).
function forwardEgress(socketPath, then) {
  const server = net.createServer((client) => {
    const upstream = net.createConnection(socketPath);
    const end = () => { client.destroy(); upstream.destroy(); };
    client.on('error', end);
    upstream.on('error', end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  server.listen(0, '127.0.0.1', () => {
    const url = `http://127.0.0.1:${server.address().port}`;
    for (const name of ['HTTP_PROXY', 'HTTPS_PROXY', 'http_proxy', 'https_proxy']) process.env[name] = url;
    // The sandbox's own loopback is reached directly.
    process.env.NO_PROXY = process.env.no_proxy = 'localhost,127.0.0.1,::1';
    server.unref();
    then();
  });
}

function main() {
  const socket = net.createConnection(process.env.FLARE_SOCKET);
  let fn = null;
  let buffer = Buffer.alloc(0);
  const send = (header, body) => socket.write(frame(header, body));
  sendFrame = send;

  socket.on('connect', () => send({ op: 'ready', runtime: `node ${process.version}` }));
  socket.on('close', () => process.exit(0));
  socket.on('error', () => process.exit(1));
  socket.on('data', (chunk) => {
    buffer = Buffer.concat([buffer, chunk]);
    for (;;) {
      if (buffer.length < 4) return;
      const hlen = buffer.readUInt32BE(0);
      if (buffer.length < 8 + hlen) return;
      const blen = buffer.readUInt32BE(4 + hlen);
      if (buffer.length < 8 + hlen + blen) return;
      const header = JSON.parse(buffer.subarray(4, 4 + hlen).toString());
      const body = Buffer.from(buffer.subarray(8 + hlen, 8 + hlen + blen));
      buffer = buffer.subarray(8 + hlen + blen);
      handle(header, body);
    }
  });

  function handle(header, body) {
    switch (header.op) {
      case 'specialize':
        if (fn) return send({ op: 'error', message: 'already specialized' });
        try {
          prepare(header);
          fn = load(header);
          send({ op: 'specialized' });
        } catch (e) {
          send({ op: 'error', message: `cannot load the function: ${e && e.message}` });
        }
        return;
      case 'invoke': {
        const logs = { id: header.id, sent: 0, dropped: 0, partial: { stdout: '', stderr: '' } };
        stray.sent = 0;
        current.run(logs, async () => {
          try {
            if (!fn) throw new Error('worker is not specialized');
            const url = new URL(header.path, 'http://localhost');
            const request = {
              method: header.method,
              url: header.path,
              path: url.pathname,
              query: Object.fromEntries(url.searchParams),
              headers: Object.fromEntries(header.headers.map(([k, v]) => [k.toLowerCase(), v])),
              body,
            };
            const response = toResponse(await fn({ request }));
            finish(logs);
            send({ op: 'response', id: header.id, status: response.status, headers: response.headers }, response.body);
          } catch (e) {
            emit(logs, 'stderr', String((e && e.stack) || e) + '\n');
            finish(logs);
            send({ op: 'error', id: header.id, message: String((e && e.message) || e) });
          }
        });
        return;
      }
      case 'health':
        return send({ op: 'ok' });
      case 'shutdown':
        return process.exit(0);
      default:
        return send({ op: 'error', id: header.id, message: `unknown op ${header.op}` });
    }
  }
}

if (process.env.FLARE_EGRESS_SOCKET) forwardEgress(process.env.FLARE_EGRESS_SOCKET, main);
else main();
