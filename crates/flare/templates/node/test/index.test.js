'use strict';
// Tests for index.js: npm test
const test = require('node:test');
const assert = require('node:assert');
const handler = require('..');

// The context Flare's worker passes, built from a method and a URL path.
function context(method, url) {
  const parsed = new URL(url, 'http://localhost');
  return {
    request: {
      method,
      url,
      path: parsed.pathname,
      query: Object.fromEntries(parsed.searchParams),
      headers: {},
      body: Buffer.alloc(0),
    },
  };
}

test('greets by name and logs it', async (t) => {
  const log = t.mock.method(console, 'log', () => {});
  const response = await handler(context('GET', '/?name=ada'));
  assert.strictEqual(response.status, 200);
  assert.strictEqual(response.body, 'Hello, ada!\n');
  assert.deepStrictEqual(log.mock.calls[0].arguments, ['greeting ada']);
});

test('greets the world by default', async (t) => {
  t.mock.method(console, 'log', () => {});
  assert.strictEqual((await handler(context('GET', '/'))).body, 'Hello, world!\n');
  assert.strictEqual((await handler(context('GET', '/?name='))).body, 'Hello, world!\n');
});

test('decodes the name', async (t) => {
  t.mock.method(console, 'log', () => {});
  const response = await handler(context('GET', '/?name=Ada%20L+B'));
  assert.strictEqual(response.body, 'Hello, Ada L B!\n');
});

test('greets a POST too', async (t) => {
  const log = t.mock.method(console, 'log', () => {});
  const response = await handler(context('POST', '/?name=ada'));
  assert.strictEqual(response.status, 200);
  assert.strictEqual(response.body, 'Hello, ada!\n');
  assert.deepStrictEqual(log.mock.calls[0].arguments, ['greeting ada']);
});
