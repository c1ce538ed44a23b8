'use strict';
// The widget's streaming parts (createReply, streamWithFetch, streamWithEventSource, replyOutcome)
// driven without a DOM: a fake fetch answers with a real ReadableStream of SSE bytes.
// Run: node --test tests/js/
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');

const BuppleChat = require(path.join(__dirname, '..', '..', 'bupple_flask', 'static', 'bupple-chat.js'));
const { createReply, streamWithFetch, streamWithEventSource, replyOutcome } = BuppleChat;

const { enc, sse, chunk, completion, fakeFetch, stream, piecesResponse, until, FakeEventSource } = require('./support/streams.js');

/** Start a reply over fetch; `log` records [name, content so far] for every listener call. */
function start(fetch, text = 'Hello') {
  const log = [];
  const reply = createReply(text, (name, detail, r) => log.push([name, r.content, detail]));
  streamWithFetch(reply, { url: '/api/stream', body: { message: text, conversation_id: 'conv-1' }, headers: { Accept: 'text/event-stream' }, fetch });
  return { reply, log, names: () => log.map((e) => e[0]) };
}

test('the request: one POST of the JSON body with the headers, aborted only by Stop', async () => {
  const { fetch, calls } = fakeFetch(() => piecesResponse([enc.encode(sse(1, completion()))]));
  const { reply } = start(fetch, 'Hi there');
  await reply.promise;
  assert.equal(calls.length, 1);
  assert.equal(calls[0].url, '/api/stream');
  assert.equal(calls[0].init.method, 'POST');
  assert.deepEqual(JSON.parse(calls[0].init.body), { message: 'Hi there', conversation_id: 'conv-1' });
  assert.equal(calls[0].init.headers.Accept, 'text/event-stream');
  assert.equal(calls[0].init.signal.aborted, false, 'a finished reply does not abort its request');
});

test('chunks accumulate into the reply whatever the byte boundaries, also inside a UTF-8 character', async () => {
  const words = ['Grüße ', 'aus ', 'Köln 🌍', '!'];
  const text = sse(1, { type: 'status', message: 'Starting...' }) + ': ping\n\n'
    + words.map((w, i) => sse(i + 2, chunk(w, i + 1))).join('') + sse(9, completion({ usage: { output_tokens: 4 } }));
  const bytes = enc.encode(text);
  const globe = bytes.indexOf(0xf0); // first byte of the 4-byte 🌍
  const cuttings = {
    'one read': [bytes],
    'inside 🌍': [bytes.slice(0, globe + 1), bytes.slice(globe + 1, globe + 3), bytes.slice(globe + 3)],
    'inside ü': [bytes.slice(0, bytes.indexOf(0xc3) + 1), bytes.slice(bytes.indexOf(0xc3) + 1)],
    'one byte per read': Array.from(bytes, (b) => Uint8Array.of(b)),
    'seven bytes per read': Array.from({ length: Math.ceil(bytes.length / 7) }, (_, i) => bytes.slice(i * 7, i * 7 + 7)),
  };
  for (const [name, pieces] of Object.entries(cuttings)) {
    const { fetch } = fakeFetch(() => piecesResponse(pieces));
    const { reply, log } = start(fetch);
    const result = await reply.promise;
    assert.equal(result.status, 'done', name);
    assert.equal(result.content, 'Grüße aus Köln 🌍!', name);
    assert.doesNotMatch(result.content, /\uFFFD/, name);
    // The user sees the reply grow one chunk at a time.
    assert.deepEqual(log.filter((e) => e[0] === 'chunk').map((e) => e[1]),
      ['Grüße ', 'Grüße aus ', 'Grüße aus Köln 🌍', 'Grüße aus Köln 🌍!'], name);
    assert.deepEqual(log.filter((e) => e[0] === 'status').map((e) => e[2].message), ['Starting...'], name);
    assert.equal(reply.tokens, 4, name);
  }
});

test('named events (?events=named) and CRLF lines accumulate the same way', async () => {
  const text = (sse(1, chunk('Named ', 1), true) + sse(2, chunk('events', 2), true) + sse(3, completion(), true)).replace(/\n/g, '\r\n');
  const { fetch } = fakeFetch(() => piecesResponse([enc.encode(text)]));
  const { reply } = start(fetch);
  assert.deepEqual(await reply.promise, { status: 'done', content: 'Named events', payload: completion() });
});

test('the completion event ends the reply with its usage and finish_reason', async () => {
  const done = completion({ finish_reason: 'length', usage: { input_tokens: 7, output_tokens: 12 }, conversation_id: 'conv-9' });
  let body;
  const { fetch } = fakeFetch((init) => { body = stream(init); return body.response; });
  const { reply, names, log } = start(fetch);
  await until(() => body, 'the request');
  body.push(sse(1, chunk('Cut ', 1)) + sse(2, chunk('short', 2)));
  await until(() => reply.content === 'Cut short', 'the chunks');
  assert.equal(reply.finished, false);
  assert.equal(replyOutcome(reply).state, null, 'no outcome while streaming');
  body.push(sse(3, done) + sse(4, chunk(' and more', 3))); // nothing counts after the completion
  const result = await reply.promise;
  assert.equal(result.status, 'done');
  assert.equal(result.content, 'Cut short');
  assert.equal(result.payload.finish_reason, 'length');
  assert.deepEqual(result.payload.usage, { input_tokens: 7, output_tokens: 12 });
  assert.equal(reply.tokens, 12, 'the final count comes from usage.output_tokens');
  // The conversation id is handed over before the view ends the reply, and bupple:done comes last.
  assert.deepEqual(names(), ['chunk', 'chunk', 'conversation', 'completion', 'end', 'done']);
  assert.deepEqual(log[2][2], { conversation_id: 'conv-9' });
  assert.equal(reply.conversationId, 'conv-9');
  const shown = replyOutcome(reply);
  assert.equal(shown.state, 'done');
  assert.equal(shown.incomplete, false);
  assert.equal(shown.meta, 'openai · gpt-test · 12 tokens · stopped: length');
  assert.equal(shown.tokens, 12);
  assert.equal(shown.error, null);
  body.push(sse(5, chunk(' late', 4)));
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(reply.content, 'Cut short');
});

test('an error event ends the reply with its message and code, and nothing is sent again', async () => {
  const { fetch, calls } = fakeFetch(() => piecesResponse([enc.encode(
    sse(1, chunk('Partial', 1)) + sse(2, { type: 'error', error: 'Rate limit exceeded upstream', code: 'rate_limited', done: true }),
  )]));
  const { reply, names, log } = start(fetch);
  const result = await reply.promise;
  assert.equal(result.status, 'error');
  assert.equal(result.payload.error, 'Rate limit exceeded upstream');
  assert.equal(result.payload.code, 'rate_limited');
  assert.deepEqual(names(), ['chunk', 'end', 'error']);
  assert.equal(log[2][2].code, 'rate_limited', 'bupple:error carries the code');
  const shown = replyOutcome(reply);
  assert.deepEqual(shown.error, { message: 'Rate limit exceeded upstream', code: 'rate_limited', retry: true });
  assert.equal(shown.state, 'error');
  assert.equal(shown.keepBubble, true);
  assert.equal(shown.meta, 'Interrupted');
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(calls.length, 1, 'no automatic re-send');
});

test('an error event before any text leaves no empty bubble and hides the token count', async () => {
  const { fetch } = fakeFetch(() => piecesResponse([enc.encode(sse(1, { type: 'error', error: 'Model not found', code: 'model_not_found', done: true }))]));
  const { reply } = start(fetch);
  await reply.promise;
  const shown = replyOutcome(reply);
  assert.equal(shown.keepBubble, false);
  assert.equal(shown.tokens, null);
  assert.deepEqual(shown.error, { message: 'Model not found', code: 'model_not_found', retry: true });
});

test('Stop aborts the fetch and ends the reply as stopped, keeping the partial text', async () => {
  let body;
  const { fetch, calls } = fakeFetch((init) => { body = stream(init); return body.response; });
  const { reply, names, log } = start(fetch);
  await until(() => body, 'the request');
  body.push(sse(1, chunk('word1 ', 1)) + sse(2, chunk('word2 ', 2)));
  await until(() => reply.chunks === 2, 'two chunks');
  reply.stop();
  assert.equal(calls[0].init.signal.aborted, true, 'the request is aborted so the server stops the upstream');
  const result = await reply.promise;
  assert.deepEqual(result, { status: 'stopped', content: 'word1 word2 ', payload: null });
  assert.deepEqual(names(), ['chunk', 'chunk', 'end', 'stop']);
  assert.deepEqual(log[3][2], { content: 'word1 word2 ' });
  const shown = replyOutcome(reply);
  assert.equal(shown.state, 'stopped');
  assert.equal(shown.status, 'Stopped.');
  assert.equal(shown.meta, 'Stopped');
  assert.equal(shown.incomplete, true);
  assert.equal(shown.error, null, 'Stop is not an error');
  await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(names(), ['chunk', 'chunk', 'end', 'stop'], 'the abort is not reported as a network error');
  reply.stop();
  assert.equal(names().length, 4, 'a second Stop does nothing');
});

test('Stop before the request went out: no request is made', async () => {
  const { fetch, calls } = fakeFetch(() => piecesResponse([]));
  const { reply } = start(fetch);
  reply.stop();
  assert.equal((await reply.promise).status, 'stopped');
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(calls.length, 0);
  assert.equal(replyOutcome(reply).keepBubble, false);
});

test('fetch rejects (server unreachable): a network error the user can retry', async () => {
  const { fetch } = fakeFetch(() => { throw new TypeError('Failed to fetch'); });
  const { reply, names } = start(fetch);
  const result = await reply.promise;
  assert.equal(result.status, 'error');
  assert.equal(result.payload.code, 'network_error');
  assert.match(result.payload.error, /could not reach the chat server/);
  assert.equal(result.payload.detail, 'Failed to fetch');
  assert.deepEqual(names(), ['end', 'error']);
  const shown = replyOutcome(reply);
  assert.equal(shown.error.retry, true);
  assert.equal(shown.keepBubble, false);
});

test('the stream breaks mid-reply: interrupted, with the text so far kept', async () => {
  let body;
  const { fetch } = fakeFetch((init) => { body = stream(init); return body.response; });
  const { reply } = start(fetch);
  await until(() => body, 'the request');
  body.push(sse(1, chunk('Half a ', 1)));
  body.push(enc.encode(sse(2, chunk('sentence', 2))).slice(0, 20)); // an event cut off by the failure
  await until(() => reply.content === 'Half a ', 'the first chunk');
  body.fail(new TypeError('network error'));
  const result = await reply.promise;
  assert.equal(result.status, 'error');
  assert.equal(result.content, 'Half a ');
  assert.equal(result.payload.code, 'stream_interrupted');
  assert.equal(result.payload.error, 'The connection was lost before the reply was complete.');
  const shown = replyOutcome(reply);
  assert.equal(shown.keepBubble, true);
  assert.equal(shown.incomplete, true);
  assert.equal(shown.meta, 'Interrupted');
  assert.equal(shown.error.code, 'stream_interrupted');
});

test('the stream ends without a completion event: interrupted, not done', async () => {
  const { fetch } = fakeFetch(() => piecesResponse([enc.encode(sse(1, chunk('Never finished', 1)) + 'data: {"type":"chu')]));
  const { reply } = start(fetch);
  const result = await reply.promise;
  assert.equal(result.status, 'error');
  assert.equal(result.content, 'Never finished');
  assert.equal(result.payload.code, 'stream_interrupted');
  assert.equal(result.payload.error, 'The connection closed before the reply was complete.');
});

test('an HTTP error with a JSON body shows the server\'s message and code', async () => {
  const { fetch } = fakeFetch(() => new Response(JSON.stringify({ error: { code: 'invalid_request', message: 'message must not be empty' } }),
    { status: 400, headers: { 'content-type': 'application/json' } }));
  const { reply, names } = start(fetch);
  const result = await reply.promise;
  assert.equal(result.status, 'error');
  assert.equal(result.payload.status, 400);
  assert.deepEqual(replyOutcome(reply).error, { message: 'message must not be empty', code: 'invalid_request', retry: true });
  assert.deepEqual(names(), ['end', 'error']);
});

test('an HTTP error without a JSON body gets a readable message from the status', async () => {
  const { fetch } = fakeFetch(() => new Response('<h1>Bad Gateway</h1>', { status: 502, headers: { 'content-type': 'text/html' } }));
  const { reply } = start(fetch);
  await reply.promise;
  assert.deepEqual(replyOutcome(reply).error, {
    message: 'The chat server had a problem (HTTP 502). Please try again.', code: 'http_502', retry: true,
  });
});

test('a 200 that is not an event stream is an error, not an empty reply', async () => {
  const { fetch } = fakeFetch(() => new Response('<html>login</html>', { status: 200, headers: { 'content-type': 'text/html' } }));
  const { reply } = start(fetch);
  const result = await reply.promise;
  assert.equal(result.status, 'error');
  assert.equal(result.payload.code, 'bad_response');
  assert.match(result.payload.error, /text\/html/);
});

test('EventSource: named events build the reply and the completion closes the source', async () => {
  const reply = createReply('Hi');
  streamWithEventSource(reply, { url: '/api/stream?message=Hi&events=named', withCredentials: true, EventSource: FakeEventSource });
  const es = FakeEventSource.last;
  assert.deepEqual(es.init, { withCredentials: true });
  es.dispatch('chunk', chunk('Via ', 1));
  es.dispatch('message', chunk('GET', 2));
  assert.equal(es.closed, false);
  es.dispatch('completion', completion());
  assert.equal(es.closed, true, 'closed, or the browser would reconnect and ask again');
  assert.equal((await reply.promise).content, 'Via GET');
});

test('EventSource: a connection error closes the source (no automatic re-send) and is reported', async () => {
  const reply = createReply('Hi');
  streamWithEventSource(reply, { url: '/api/stream?message=Hi', EventSource: FakeEventSource });
  const es = FakeEventSource.last;
  es.dispatch('error');
  assert.equal(es.closed, true);
  const result = await reply.promise;
  assert.equal(result.payload.code, 'network_error');

  const second = createReply('Hi');
  streamWithEventSource(second, { url: '/api/stream?message=Hi', EventSource: FakeEventSource });
  FakeEventSource.last.dispatch('error', { type: 'error', error: 'Upstream timed out', code: 'upstream_timeout', done: true });
  assert.deepEqual(replyOutcome(second).error, { message: 'Upstream timed out', code: 'upstream_timeout', retry: true });
});

test('reasoning events build reply.reasoning, never the reply text', () => {
  const seen = [];
  const reply = createReply('q', (name) => seen.push(name));
  reply.handle({ type: 'reasoning', content: 'Think ', tokens: 1 });
  reply.handle({ type: 'reasoning', content: 'twice.', tokens: 2 });
  reply.handle(chunk('Answer', 3));
  reply.handle(completion());
  assert.equal(reply.reasoning, 'Think twice.');
  assert.equal(reply.content, 'Answer');
  assert.deepEqual(seen.slice(0, 3), ['reasoning', 'reasoning', 'chunk']);
  assert.equal(replyOutcome(reply).declined, null);
});

test('a declined completion is told to the user, for the prompt and for the reply', () => {
  const blocked = createReply('q');
  blocked.handle(completion({ finish_reason: 'SAFETY', declined: { reason: 'SAFETY', stage: 'prompt' } }));
  assert.equal(replyOutcome(blocked).declined, 'The provider declined to answer this message (SAFETY).');
  assert.equal(replyOutcome(blocked).keepBubble, true);
  const refused = createReply('q');
  refused.handle(chunk("I can't help with that.", 1));
  refused.handle(completion({ finish_reason: 'refusal', declined: { reason: 'refusal', stage: 'response' } }));
  assert.equal(replyOutcome(refused).declined, 'The provider declined to continue this reply (refusal).');
  assert.match(replyOutcome(refused).meta, /stopped: refusal/);
});
