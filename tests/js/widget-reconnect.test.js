'use strict';
// The widget's reply surviving a network drop, Stop and a server shutdown (issue 11), without a DOM:
// streamWithFetch against a fake fetch that plays the server's /api/stream, GET /api/streams/<id> (re-attach with
// Last-Event-ID) and POST /api/streams/<id>/stop. The waits are the test's, so the backoff is checked, not slept.
// Run: node --test tests/js/
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');

const BuppleChat = require(path.join(__dirname, '..', '..', 'bupple_flask', 'static', 'bupple-chat.js'));
const { createReply, streamWithFetch, streamWithEventSource, replyOutcome, eventSeq } = BuppleChat;
const { sse, chunk, completion, fakeFetch, stream, piecesResponse, until, FakeEventSource } = require('./support/streams.js');

const SID = 'a'.repeat(32);
const OTHER = 'b'.repeat(32);
const id = (n, sid = SID) => `${sid}:${n}`;
const status = (extra = {}) => ({ type: 'status', message: 'Starting...', stream_id: SID, conversation_id: 'conv-1', resumable: true, ...extra });
const json = (body, statusCode = 200) => new Response(JSON.stringify(body), { status: statusCode, headers: { 'content-type': 'application/json' } });
const networkDown = () => { throw new TypeError('Failed to fetch'); };
const never = () => new Promise(() => {});

/**
 * A server played by the test: `routes` answer each request by method and path ('POST /api/stream',
 * 'GET /api/streams/<id>', 'POST /api/streams/<id>/stop'); an array answers its calls in turn.
 */
function server(routes) {
  const seen = {};
  return fakeFetch((init, url) => {
    const key = `${init.method} ${url}`;
    const route = routes[key];
    assert.ok(route, `unexpected request ${key}`);
    const n = seen[key] = (seen[key] || 0) + 1;
    const answer = Array.isArray(route) ? route[Math.min(n, route.length) - 1] : route;
    return answer(init);
  });
}

/** A reply over fetch with re-attach and stop URLs; `waits` records each wait asked for (resolved at once by default). */
function start(fetch, { wait, now, body = { message: 'Hello' }, reconnect } = {}) {
  const log = [];
  const waits = [];
  const reply = createReply('Hello', (name, detail, r) => log.push([name, r.content, detail]));
  streamWithFetch(reply, {
    url: '/api/stream', body, fetch, now, reconnect,
    headers: { 'Content-Type': 'application/json', Accept: 'text/event-stream', 'X-CSRFToken': 'tok' },
    streamUrl: (sid) => `/api/streams/${sid}`,
    stopUrl: (sid) => `/api/streams/${sid}/stop`,
    wait: (ms) => { waits.push(ms); return wait ? wait(ms) : Promise.resolve(); },
  });
  return { reply, log, waits, names: () => log.map((e) => e[0]), chunks: () => log.filter((e) => e[0] === 'chunk').map((e) => e[2].content) };
}

/** The POST's live body: status and two chunks, then the network breaks. */
function breaksAfterTwoChunks(holder, statusExtra = {}, ids = [id(0), id(1), id(2)]) {
  return (init) => {
    const body = holder.post = stream(init);
    body.push(sse(ids[0], status(statusExtra)) + sse(ids[1], chunk('One ', 1)) + sse(ids[2], chunk('two ', 2)));
    setTimeout(() => body.fail(new TypeError('network error')), 5);
    return body.response;
  };
}

test('event ids: <stream_id>:<n> with resume on, plain n with resume off', () => {
  assert.equal(eventSeq(id(12)), 12);
  assert.equal(eventSeq('7'), 7);
  assert.equal(eventSeq(''), null);
  assert.equal(eventSeq('x'), null);
});

test('a dropped stream is re-attached from the last event shown, and what is replayed is not shown twice', async () => {
  const held = {};
  const { fetch, calls } = server({
    'POST /api/stream': breaksAfterTwoChunks(held),
    // The server replays from an older point than asked: the widget still shows each chunk once.
    [`GET /api/streams/${SID}`]: () => piecesResponse([
      new TextEncoder().encode(sse(id(1), chunk('One ', 1)) + sse(id(2), chunk('two ', 2)) + sse(id(3), chunk('three', 3)) + sse(id(4), completion())),
    ]),
  });
  const { reply, names, waits, log, chunks } = start(fetch);
  const result = await reply.promise;
  assert.equal(result.status, 'done');
  assert.equal(result.content, 'One two three');
  assert.deepEqual(chunks(), ['One ', 'two ', 'three'], 'every chunk once, in order');
  assert.equal(calls.length, 2);
  const get = calls[1];
  assert.equal(get.url, `/api/streams/${SID}`);
  assert.equal(get.init.method, 'GET');
  assert.equal(get.init.headers['Last-Event-ID'], id(2), 'the last event applied');
  assert.equal(get.init.headers.Accept, 'text/event-stream');
  assert.equal(get.init.headers['Content-Type'], undefined);
  assert.equal(get.init.body, undefined);
  assert.deepEqual(waits, [500]);
  const reconnecting = log.find((e) => e[0] === 'reconnecting');
  assert.deepEqual(reconnecting[2], { attempt: 1, delay: 500, stream_id: SID, last_event_id: id(2) });
  assert.deepEqual(names(), ['conversation', 'status', 'chunk', 'chunk', 'reconnecting', 'reconnected', 'chunk', 'completion', 'end', 'done']);
});

test('a drop before any event re-attaches by the X-Bupple-Stream-Id header, without Last-Event-ID', async () => {
  const { fetch, calls } = server({
    'POST /api/stream': (init) => {
      const body = stream(init, { 'x-bupple-stream-id': SID });
      setTimeout(() => body.fail(new TypeError('network error')), 5);
      return body.response;
    },
    [`GET /api/streams/${SID}`]: () => piecesResponse([new TextEncoder().encode(sse(id(0), status()) + sse(id(1), chunk('All', 1)) + sse(id(2), completion()))]),
  });
  const { reply } = start(fetch);
  assert.equal((await reply.promise).content, 'All');
  assert.equal(calls[1].init.headers['Last-Event-ID'], undefined, 'from the start');
});

test('backoff: 0.5, 1, 2, 4, 4 s between attempts, then it gives up with Retry and keeps the text', async () => {
  const held = {};
  const unavailable = () => json({ error: { code: 'unavailable', message: 'busy' } }, 503);
  const { fetch, calls } = server({
    'POST /api/stream': breaksAfterTwoChunks(held),
    [`GET /api/streams/${SID}`]: [networkDown, unavailable, networkDown, unavailable, networkDown],
  });
  const { reply, waits, names } = start(fetch);
  const result = await reply.promise;
  assert.deepEqual(waits, [500, 1000, 2000, 4000, 4000]);
  assert.equal(calls.length, 6, 'one POST, five re-attaches, nothing more');
  assert.equal(result.status, 'error');
  assert.equal(result.content, 'One two ');
  assert.equal(result.payload.code, 'stream_interrupted');
  assert.equal(result.payload.error, 'The connection was lost and could not be restored.');
  assert.equal(names().filter((n) => n === 'reconnecting').length, 5);
  const shown = replyOutcome(reply);
  assert.equal(shown.keepBubble, true);
  assert.equal(shown.meta, 'Interrupted');
  assert.equal(shown.error.retry, true, 'the Retry button');
});

test('it gives up once the stream has been missing for 30 s, whatever the attempts left', async () => {
  let clock = 0;
  const held = {};
  const { fetch, calls } = server({ 'POST /api/stream': breaksAfterTwoChunks(held), [`GET /api/streams/${SID}`]: networkDown });
  const { reply, waits } = start(fetch, { now: () => clock, wait: (ms) => { clock += ms + 10_000; return Promise.resolve(); } });
  const result = await reply.promise;
  assert.deepEqual(waits, [500, 1000, 2000], 'the third failure came 33.5 s after the drop');
  assert.equal(calls.length, 4);
  assert.match(result.payload.error, /could not be restored/);
});

test('new events after a re-attach start the count afresh', async () => {
  const held = {};
  const { fetch } = server({
    'POST /api/stream': breaksAfterTwoChunks(held),
    [`GET /api/streams/${SID}`]: [
      (init) => { const b = stream(init); b.push(sse(id(3), chunk('three ', 3))); setTimeout(() => b.fail(new TypeError('again')), 5); return b.response; },
      () => piecesResponse([new TextEncoder().encode(sse(id(4), chunk('four', 4)) + sse(id(5), completion()))]),
    ],
  });
  const { reply, waits, chunks } = start(fetch);
  assert.equal((await reply.promise).content, 'One two three four');
  assert.deepEqual(waits, [500, 500]);
  assert.deepEqual(chunks(), ['One ', 'two ', 'three ', 'four']);
});

for (const code of ['stream_not_found', 'resume_unavailable']) {
  test(`a 404 ${code} to the re-attach gives up at once, with Retry`, async () => {
    const held = {};
    const { fetch, calls } = server({
      'POST /api/stream': breaksAfterTwoChunks(held),
      [`GET /api/streams/${SID}`]: () => json({ error: { code, message: 'gone' } }, 404),
    });
    const { reply, waits } = start(fetch);
    const result = await reply.promise;
    assert.equal(calls.length, 2);
    assert.deepEqual(waits, [500]);
    assert.equal(result.payload.resume, code);
    assert.equal(result.payload.error, 'The connection was lost and the reply can no longer be resumed.');
    assert.equal(replyOutcome(reply).error.retry, true);
    assert.equal(result.content, 'One two ');
  });
}

test('a re-attach answered 401 ends the reply with "sign in", without Retry', async () => {
  const held = {};
  const { fetch } = server({ 'POST /api/stream': breaksAfterTwoChunks(held), [`GET /api/streams/${SID}`]: () => json({ error: 'login' }, 401) });
  const { reply } = start(fetch);
  await reply.promise;
  assert.deepEqual(replyOutcome(reply).error, { message: 'Please sign in to chat.', code: 'unauthorized', retry: false });
});

const notResumable = {
  'status resumable: false (the log is down)': [{ resumable: false }, undefined, {}],
  'plain event ids (resume off)': [{ resumable: undefined }, ['0', '1', '2'], {}],
  'X-Bupple-Resume: unavailable': [{ resumable: undefined }, undefined, { 'x-bupple-resume': 'unavailable' }],
};
for (const [name, [statusExtra, ids, headers]] of Object.entries(notResumable)) {
  test(`no re-attach when the server cannot resume: ${name}`, async () => {
    const { fetch, calls } = server({
      'POST /api/stream': (init) => {
        const body = stream(init, headers);
        const [a, b, c] = ids || [id(0), id(1), id(2)];
        body.push(sse(a, status(statusExtra)) + sse(b, chunk('One ', 1)) + sse(c, chunk('two ', 2)));
        setTimeout(() => body.fail(new TypeError('network error')), 5);
        return body.response;
      },
    });
    const { reply, waits, names } = start(fetch);
    const result = await reply.promise;
    assert.equal(calls.length, 1);
    assert.deepEqual(waits, []);
    assert.ok(!names().includes('reconnecting'));
    assert.equal(result.payload.error, 'The connection was lost before the reply was complete.');
    assert.equal(replyOutcome(reply).error.retry, true, 'Retry at once');
  });
}

test('a resumable stream that goes silent (no byte, no heartbeat) is taken for lost and re-attached', async () => {
  const held = {};
  const { fetch, calls } = server({
    'POST /api/stream': (init) => {
      held.post = stream(init);
      held.post.push(sse(id(0), status()) + sse(id(1), chunk('Before ', 1)));
      return held.post.response; // then nothing: a connection that died without a word
    },
    [`GET /api/streams/${SID}`]: () => piecesResponse([new TextEncoder().encode(sse(id(2), chunk('after', 2)) + sse(id(3), completion()))]),
  });
  const { reply, names } = start(fetch, { reconnect: { silenceMs: 40 } });
  const result = await reply.promise;
  assert.equal(result.content, 'Before after');
  assert.equal(calls[0].init.signal.aborted, true, 'the silent request is let go');
  assert.equal(calls[1].init.headers['Last-Event-ID'], id(1));
  assert.ok(names().includes('reconnecting'));
});

test('a stream that cannot be re-attached is not given up for its silence', async () => {
  const held = {};
  const { fetch, calls } = server({
    'POST /api/stream': (init) => {
      held.post = stream(init);
      held.post.push(sse('0', status({ resumable: undefined })) + sse('1', chunk('Thinking long ', 1)));
      return held.post.response;
    },
  });
  const { reply } = start(fetch, { reconnect: { silenceMs: 20 } });
  await until(() => reply.chunks === 1, 'the first chunk');
  await new Promise((r) => setTimeout(r, 120)); // six silences long: an observation window, not a wait for state
  assert.equal(reply.finished, false);
  assert.equal(calls[0].init.signal.aborted, false);
  held.post.push(sse('2', chunk('done', 2)) + sse('3', completion()));
  assert.equal((await reply.promise).content, 'Thinking long done');
});

/** A POST whose stream stays open: the test pushes to held.post. */
function liveStream(held) {
  return (init) => {
    held.post = stream(init);
    held.post.push(sse(id(0), status()) + sse(id(1), chunk('word1 ', 1)));
    return held.post.response;
  };
}

test('Stop asks the server to stop, and its stopped completion ends the reply with the text shown', async () => {
  const held = {};
  const { fetch, calls } = server({
    'POST /api/stream': liveStream(held),
    [`POST /api/streams/${SID}/stop`]: () => json({ stream_id: SID, status: 'stopping' }),
  });
  const { reply, names } = start(fetch, { wait: never });
  await until(() => reply.chunks === 1, 'the first chunk');
  reply.requestStop();
  await until(() => calls.length === 2, 'the stop request');
  const stop = calls[1];
  assert.equal(stop.init.method, 'POST');
  assert.equal(stop.init.headers['X-CSRFToken'], 'tok', 'a write carries the CSRF token');
  assert.equal(stop.init.headers['Content-Type'], undefined);
  assert.equal(stop.init.body, undefined);
  assert.equal(reply.finished, false, 'the server has the last word');
  held.post.push(sse(id(2), chunk('word2 ', 2)) + sse(id(3), completion({ finish_reason: 'stopped', stopped: true })));
  const result = await reply.promise;
  assert.equal(result.status, 'stopped');
  assert.equal(result.content, 'word1 word2 ', 'what the server generated before it stopped, as it stores it');
  assert.equal(result.payload.finish_reason, 'stopped');
  assert.deepEqual(names(), ['conversation', 'status', 'chunk', 'stopping', 'chunk', 'completion', 'end', 'stop']);
  const shown = replyOutcome(reply);
  assert.equal(shown.state, 'stopped');
  assert.equal(shown.meta, 'Stopped');
  assert.equal(shown.error, null);
  assert.equal(calls[0].init.signal.aborted, true, 'nothing more is read');
  assert.equal(calls.length, 2, 'one stop request');
});

test('Stop aborts the fetch only after the server answered the stop, and at once if it cannot stop it', async () => {
  for (const [answer, waitFor] of [[json({ status: 'stopping' }), 'the wait for the completion'], [json({ error: { code: 'stream_not_found' } }, 404), 'nothing']]) {
    const held = {};
    let answerStop;
    const { fetch, calls } = server({
      'POST /api/stream': liveStream(held),
      [`POST /api/streams/${SID}/stop`]: () => new Promise((r) => { answerStop = r; }),
    });
    const { reply, waits } = start(fetch);
    await until(() => reply.chunks === 1, 'the first chunk');
    reply.requestStop();
    await until(() => answerStop, 'the stop request');
    await new Promise((r) => setTimeout(r, 10));
    assert.equal(calls[0].init.signal.aborted, false, 'the stop reaches the server before the abort');
    answerStop(answer);
    const result = await reply.promise;
    assert.deepEqual({ status: result.status, content: result.content }, { status: 'stopped', content: 'word1 ' }, waitFor);
    assert.equal(calls[0].init.signal.aborted, true);
    assert.deepEqual(waits, answer.ok ? [2000] : [], waitFor);
  }
});

test('a second Stop, and Stop before the stream id is known, end the reply at once', async () => {
  const held = {};
  const { fetch, calls } = server({ 'POST /api/stream': liveStream(held), [`POST /api/streams/${SID}/stop`]: never });
  const twice = start(fetch);
  await until(() => twice.reply.chunks === 1, 'the first chunk');
  twice.reply.requestStop();
  await until(() => calls.length === 2, 'the stop request (never answered)');
  twice.reply.requestStop();
  assert.equal((await twice.reply.promise).status, 'stopped');
  assert.equal(calls[0].init.signal.aborted, true);

  const early = server({ 'POST /api/stream': (init) => stream(init).response });
  const first = start(early.fetch);
  first.reply.requestStop();
  assert.equal((await first.reply.promise).status, 'stopped');
  await new Promise((r) => setTimeout(r, 10));
  assert.ok(early.calls.every((c) => c.url === '/api/stream'), 'no stream id: nothing to stop on the server');
});

test('Stop while reconnecting tells the server and ends the reply without re-attaching', async () => {
  const held = {};
  let resume;
  const { fetch, calls } = server({
    'POST /api/stream': breaksAfterTwoChunks(held),
    [`POST /api/streams/${SID}/stop`]: () => json({ status: 'stopping' }),
  });
  const { reply, names } = start(fetch, { wait: () => new Promise((r) => { resume = r; }) });
  await until(() => names().includes('reconnecting'), 'the drop');
  reply.requestStop();
  const result = await reply.promise;
  assert.equal(result.status, 'stopped');
  assert.equal(result.content, 'One two ');
  resume();
  await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(calls.map((c) => `${c.init.method} ${c.url}`), ['POST /api/stream', `POST /api/streams/${SID}/stop`]);
});

test('leaving a reply (another conversation, the widget closed) stops it on the server too', async () => {
  const held = {};
  const { fetch, calls } = server({ 'POST /api/stream': liveStream(held), [`POST /api/streams/${SID}/stop`]: () => json({ status: 'stopping' }) });
  const { reply } = start(fetch);
  await until(() => reply.chunks === 1, 'the first chunk');
  reply.stop();
  assert.equal(calls[0].init.signal.aborted, true);
  await until(() => calls.length === 2, 'the stop request');
  assert.equal(calls[1].url, `/api/streams/${SID}/stop`);
  assert.equal(calls[1].init.keepalive, true, 'sent even if the page goes away');
});

/** A POST that answers with status, a chunk and the server's shutdown error, in the stream `sid`. */
function shutdown(sid, text) {
  return () => piecesResponse([new TextEncoder().encode(
    sse(id(0, sid), status({ stream_id: sid, conversation_id: 'conv-new' })) + sse(id(1, sid), chunk(text, 1))
    + sse(id(2, sid), { type: 'error', error: 'The server is restarting.', code: 'server_shutdown', retryable: true, done: true }),
  )]);
}

test('a server shutdown asks the question once more by itself, in the same conversation', async () => {
  const { fetch, calls } = server({
    'POST /api/stream': [shutdown(SID, 'Half an'), () => piecesResponse([new TextEncoder().encode(
      sse(id(0, OTHER), status({ stream_id: OTHER, conversation_id: 'conv-new' })) + sse(id(1, OTHER), chunk('A whole ', 1))
      + sse(id(2, OTHER), chunk('answer', 2)) + sse(id(3, OTHER), completion({ conversation_id: 'conv-new' })),
    )])],
  });
  const { reply, waits, names } = start(fetch, { body: { message: 'Hello' } });
  const result = await reply.promise;
  assert.equal(result.status, 'done');
  assert.equal(result.content, 'A whole answer', 'the new reply, not glued to the cut one');
  assert.equal(calls.length, 2);
  assert.deepEqual(JSON.parse(calls[1].init.body), { message: 'Hello', conversation_id: 'conv-new' }, 'the conversation the server made');
  assert.deepEqual(waits, [1000]);
  assert.equal(calls[0].init.signal.aborted, true, 'the cut stream is let go');
  assert.ok(names().includes('resend'));
  assert.ok(!names().includes('error'));
});

test('a second server shutdown is the user\'s to Retry', async () => {
  const { fetch, calls } = server({ 'POST /api/stream': [shutdown(SID, 'Half'), shutdown(OTHER, 'Again half')] });
  const { reply } = start(fetch);
  const result = await reply.promise;
  assert.equal(calls.length, 2, 'once by itself, not more');
  assert.equal(result.status, 'error');
  assert.equal(result.payload.code, 'server_shutdown');
  assert.equal(result.content, 'Again half', 'the text that was kept');
  assert.deepEqual(replyOutcome(reply).error, { message: 'The server is restarting.', code: 'server_shutdown', retry: true });
});

test('EventSource on a resumable stream: the browser\'s reconnect re-attaches, replayed events are skipped', async () => {
  const seen = [];
  const reply = createReply('Hi', (name) => seen.push(name));
  streamWithEventSource(reply, { url: '/api/stream?message=Hi', EventSource: FakeEventSource });
  const es = FakeEventSource.last;
  es.dispatch('status', status(), id(0));
  es.dispatch('chunk', chunk('One ', 1), id(1));
  es.dispatch('error');
  assert.equal(es.closed, false, 'the browser reconnects with Last-Event-ID');
  assert.ok(seen.includes('reconnecting'));
  es.dispatch('open');
  es.dispatch('chunk', chunk('One ', 1), id(1));
  es.dispatch('chunk', chunk('two', 2), id(2));
  es.dispatch('completion', completion(), id(3));
  assert.equal((await reply.promise).content, 'One two');
  assert.ok(seen.includes('reconnected'));

  const closed = createReply('Hi');
  streamWithEventSource(closed, { url: '/api/stream?message=Hi', EventSource: FakeEventSource });
  const gone = FakeEventSource.last;
  gone.dispatch('status', status(), id(0));
  gone.readyState = 2; // the browser gave up (the server answered the reconnect with an error)
  gone.dispatch('error');
  assert.equal((await closed.promise).payload.code, 'stream_interrupted');
});

test('EventSource: Stop closes the source and POSTs the stop endpoint with the CSRF token', async () => {
  const { fetch, calls } = server({ [`POST /api/streams/${SID}/stop`]: () => json({ status: 'stopping' }) });
  const reply = createReply('Hi');
  streamWithEventSource(reply, { url: '/api/stream?message=Hi', EventSource: FakeEventSource, fetch,
    stopUrl: (sid) => `/api/streams/${sid}/stop`, stopHeaders: Promise.resolve({ 'X-CSRFToken': 'tok' }) });
  const es = FakeEventSource.last;
  es.dispatch('status', status(), id(0));
  es.dispatch('chunk', chunk('Some', 1), id(1));
  reply.requestStop();
  assert.equal(es.closed, true);
  assert.deepEqual(await reply.promise, { status: 'stopped', content: 'Some', payload: null });
  await until(() => calls.length === 1, 'the stop request');
  assert.equal(calls[0].init.method, 'POST');
  assert.equal(calls[0].init.headers['X-CSRFToken'], 'tok');
  assert.equal(calls[0].init.keepalive, true);
});
