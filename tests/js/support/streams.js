'use strict';
// Shared by the widget's streaming tests: server events as the blueprint writes them, and a fake fetch whose
// response bodies are real ReadableStreams the test writes to (aborting the request's signal errors them).
const assert = require('node:assert/strict');

const enc = new TextEncoder();

/** One server event as the Flask blueprint writes it (with `event:` when named). */
function sse(id, payload, named = false) {
  return (named ? `event: ${payload.type}\n` : '') + `id: ${id}\ndata: ${JSON.stringify(payload)}\n\n`;
}
const chunk = (content, tokens) => ({ type: 'chunk', content, role: 'assistant', done: false, tokens });
const completion = (extra = {}) => ({
  type: 'completion', content: '', role: 'assistant', done: true, finish_reason: 'stop',
  usage: { input_tokens: 5, output_tokens: 3 }, provider: 'openai', model: 'gpt-test', conversation_id: 'conv-1', ...extra,
});

/**
 * A fake fetch. Each call gets a response from `respond(init, url)`: a Response or a rejection.
 * stream() makes a body the test writes to; like a real fetch, aborting the signal errors it.
 */
function fakeFetch(respond) {
  const calls = [];
  const fetch = (url, init) => {
    calls.push({ url, init });
    return Promise.resolve().then(() => respond(init, url));
  };
  return { fetch, calls };
}
function stream(init, headers = {}) {
  let controller;
  const body = new ReadableStream({ start(c) { controller = c; } });
  init.signal.addEventListener('abort', () => {
    try { controller.error(new DOMException('The operation was aborted.', 'AbortError')); } catch { /* closed */ }
  });
  return {
    response: new Response(body, { status: 200, headers: { 'content-type': 'text/event-stream; charset=utf-8', ...headers } }),
    push: (bytes) => controller.enqueue(typeof bytes === 'string' ? enc.encode(bytes) : bytes),
    close: () => controller.close(),
    fail: (err) => controller.error(err),
  };
}
/** A complete response whose body arrives in exactly these byte pieces. */
function piecesResponse(pieces) {
  const body = new ReadableStream({
    start(c) { for (const p of pieces) c.enqueue(p); c.close(); },
  });
  return new Response(body, { status: 200, headers: { 'content-type': 'text/event-stream' } });
}

async function until(predicate, what) {
  for (let i = 0; i < 200; i++) {
    if (predicate()) return;
    await new Promise((r) => setTimeout(r, 2));
  }
  assert.fail(`timed out waiting for ${what}`);
}

/** A fake EventSource: the test dispatches events; close() is recorded. */
class FakeEventSource {
  constructor(url, init) {
    this.url = url;
    this.init = init;
    this.closed = false;
    this.readyState = 0;
    this.listeners = {};
    FakeEventSource.last = this;
  }
  addEventListener(type, fn) { (this.listeners[type] = this.listeners[type] || []).push(fn); }
  close() { this.closed = true; this.readyState = 2; }
  dispatch(type, data, lastEventId = '') {
    const evt = data === undefined ? { type } : { type, data: JSON.stringify(data), lastEventId };
    if (type === 'message' && this.onmessage) this.onmessage(evt);
    for (const fn of this.listeners[type] || []) fn(evt);
  }
}

module.exports = { enc, sse, chunk, completion, fakeFetch, stream, piecesResponse, until, FakeEventSource };
