'use strict';
// Tests for the SSE parser that lives inside static/bupple-chat.js (one file, no copies).
// Run: node --test tests/js/
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');

const BuppleChat = require(path.join(__dirname, '..', '..', 'bupple_flask', 'static', 'bupple-chat.js'));
const { createSSEParser } = BuppleChat;

const enc = new TextEncoder();

/** Feed every chunk, optionally call end(), return what the parser reported. */
function run(chunks, { end = true, options = {} } = {}) {
  const events = [];
  const comments = [];
  const retries = [];
  const parser = createSSEParser((e) => events.push(e), {
    onComment: (c) => comments.push(c),
    onRetry: (ms) => retries.push(ms),
    ...options,
  });
  for (const c of chunks) parser.feed(c);
  if (end) parser.end();
  return { events, comments, retries, parser };
}

/** Shorthand for the fields most tests compare. */
const brief = (events) => events.map((e) => ({ type: e.type, data: e.data, id: e.id }));

/** Every way of cutting `bytes` into two feeds, plus one byte per feed. */
function splits(bytes) {
  const out = [[bytes]];
  for (let i = 1; i < bytes.length; i++) out.push([bytes.slice(0, i), bytes.slice(i)]);
  out.push(Array.from(bytes, (b) => Uint8Array.of(b)));
  return out;
}

test('module loads in Node without a DOM and exposes the parser', () => {
  assert.equal(typeof createSSEParser, 'function');
  assert.equal(typeof BuppleChat.mount, 'function');
  assert.throws(() => BuppleChat.mount({}, {}), /DOM/);
  assert.equal(globalThis.BuppleChat, undefined, 'no global is set when loaded as a CommonJS module');
});

const table = [
  {
    name: 'LF line endings',
    input: 'data: hello\n\ndata: world\n\n',
    events: [{ type: 'message', data: 'hello', id: '' }, { type: 'message', data: 'world', id: '' }],
  },
  {
    name: 'CR line endings',
    input: 'data: hello\r\rdata: world\r\r',
    events: [{ type: 'message', data: 'hello', id: '' }, { type: 'message', data: 'world', id: '' }],
  },
  {
    name: 'CRLF line endings',
    input: 'data: hello\r\n\r\ndata: world\r\n\r\n',
    events: [{ type: 'message', data: 'hello', id: '' }, { type: 'message', data: 'world', id: '' }],
  },
  {
    name: 'mixed line endings in one stream',
    input: 'data: a\r\ndata: b\rdata: c\n\r\n',
    events: [{ type: 'message', data: 'a\nb\nc', id: '' }],
  },
  {
    name: 'multi-line data is joined with LF',
    input: 'data: line one\ndata: line two\ndata:\ndata: line four\n\n',
    events: [{ type: 'message', data: 'line one\nline two\n\nline four', id: '' }],
  },
  {
    name: 'comments (heartbeats) are ignored',
    input: ': ping\n\n:another\ndata: x\n: ping in the middle\n\n: ping\n\n',
    events: [{ type: 'message', data: 'x', id: '' }],
    comments: ['ping', 'another', 'ping in the middle', 'ping'],
  },
  {
    name: 'event: and id: fields; the last id is kept for later events',
    input: 'id: 1\nevent: chunk\ndata: {"a":1}\n\ndata: plain\n\nid: 7\nevent: completion\ndata: end\n\n',
    events: [
      { type: 'chunk', data: '{"a":1}', id: '1' },
      { type: 'message', data: 'plain', id: '1' },
      { type: 'completion', data: 'end', id: '7' },
    ],
  },
  {
    name: 'event type is reset after each dispatch',
    input: 'event: status\ndata: a\n\ndata: b\n\n',
    events: [{ type: 'status', data: 'a', id: '' }, { type: 'message', data: 'b', id: '' }],
  },
  {
    name: 'id containing NUL is ignored',
    input: 'id: 5\ndata: a\n\nid: bad\u0000id\ndata: b\n\n',
    events: [{ type: 'message', data: 'a', id: '5' }, { type: 'message', data: 'b', id: '5' }],
  },
  {
    name: 'an empty id: resets the last event id',
    input: 'id: 5\ndata: a\n\nid\ndata: b\n\n',
    events: [{ type: 'message', data: 'a', id: '5' }, { type: 'message', data: 'b', id: '' }],
  },
  {
    name: 'retry: sets the reconnection time, non-digits are ignored, no event is dispatched',
    input: 'retry: 3000\n\nretry: 12x\nretry: -5\nretry:\n\nretry: 0\n\n',
    events: [],
    retries: [3000, 0],
  },
  {
    name: 'a field without colon has an empty value',
    input: 'data\n\ndata\ndata\n\n',
    events: [{ type: 'message', data: '', id: '' }, { type: 'message', data: '\n', id: '' }],
  },
  {
    name: 'only one leading space is stripped from the value',
    input: 'data:no space\n\ndata: one space\n\ndata:  two spaces\n\ndata:\ttab\n\n',
    events: [
      { type: 'message', data: 'no space', id: '' },
      { type: 'message', data: 'one space', id: '' },
      { type: 'message', data: ' two spaces', id: '' },
      { type: 'message', data: '\ttab', id: '' },
    ],
  },
  {
    name: 'colons after the first belong to the value',
    input: 'data: {"url":"http://x"}\n\n',
    events: [{ type: 'message', data: '{"url":"http://x"}', id: '' }],
  },
  {
    name: 'unknown fields are ignored; a block without data dispatches nothing',
    input: 'foo: bar\n\nevent: status\n\nid: 3\n\ndata: x\n\n',
    events: [{ type: 'message', data: 'x', id: '3' }],
  },
  {
    name: 'field names are case-sensitive',
    input: 'Data: nope\nDATA: nope\ndata: yes\n\n',
    events: [{ type: 'message', data: 'yes', id: '' }],
  },
  {
    name: 'a leading BOM is stripped once',
    input: '\ufeffdata: a\n\n',
    events: [{ type: 'message', data: 'a', id: '' }],
  },
  {
    name: 'blank lines between events do not create events',
    input: '\n\n\ndata: a\n\n\n\n',
    events: [{ type: 'message', data: 'a', id: '' }],
  },
  {
    name: 'the bupple_flask stream shape',
    input:
      'retry: 3000\n\n' +
      'id: 1\ndata: {"type":"status","message":"Starting...","stream_id":"s1"}\n\n' +
      ': ping\n\n' +
      'id: 2\ndata: {"type":"chunk","content":"Hel","role":"assistant","done":false,"tokens":1}\n\n' +
      'id: 3\ndata: {"type":"chunk","content":"lo","role":"assistant","done":false,"tokens":2}\n\n' +
      'id: 4\ndata: {"type":"completion","content":"","done":true,"finish_reason":"stop"}\n\n',
    events: [
      { type: 'message', data: '{"type":"status","message":"Starting...","stream_id":"s1"}', id: '1' },
      { type: 'message', data: '{"type":"chunk","content":"Hel","role":"assistant","done":false,"tokens":1}', id: '2' },
      { type: 'message', data: '{"type":"chunk","content":"lo","role":"assistant","done":false,"tokens":2}', id: '3' },
      { type: 'message', data: '{"type":"completion","content":"","done":true,"finish_reason":"stop"}', id: '4' },
    ],
    comments: ['ping'],
    retries: [3000],
  },
];

for (const row of table) {
  test(`table: ${row.name} (string input)`, () => {
    const r = run([row.input]);
    assert.deepEqual(brief(r.events), row.events);
    if (row.comments) assert.deepEqual(r.comments, row.comments);
    if (row.retries) assert.deepEqual(r.retries, row.retries);
  });
  test(`table: ${row.name} (bytes, every split point and byte by byte)`, () => {
    for (const chunks of splits(enc.encode(row.input))) {
      const r = run(chunks);
      assert.deepEqual(brief(r.events), row.events, `split into ${chunks.map((c) => c.length).join('+')} bytes`);
      if (row.comments) assert.deepEqual(r.comments, row.comments);
      if (row.retries) assert.deepEqual(r.retries, row.retries);
    }
  });
  test(`table: ${row.name} (strings, every split point)`, () => {
    for (let i = 1; i < row.input.length; i++) {
      const r = run([row.input.slice(0, i), row.input.slice(i)]);
      assert.deepEqual(brief(r.events), row.events, `split at ${i}`);
    }
  });
}

test('CRLF split across feeds: CR at the end of one feed, LF at the start of the next', () => {
  const { events } = run(['data: a\r', '\n\r', '\ndata: b\r', '\n', '\r', '\n']);
  assert.deepEqual(brief(events), [
    { type: 'message', data: 'a', id: '' },
    { type: 'message', data: 'b', id: '' },
  ]);
});

test('a lone CR at the end of a feed ends the line at once (no wait for the next feed)', () => {
  const events = [];
  const p = createSSEParser((e) => events.push(e));
  p.feed('data: a\r\r');
  assert.equal(events.length, 1, 'dispatched without waiting for a possible LF');
  p.feed('\ndata: b\n\n'); // this LF belongs to the CR before it: no extra blank line
  assert.deepEqual(events.map((e) => e.data), ['a', 'b']);
});

test('CR then LF in the next feed is one line break, CR then CR is two', () => {
  const ev1 = run(['data: a\r', '\ndata: b\r\r']).events;
  assert.deepEqual(ev1.map((e) => e.data), ['a\nb']);
  const ev2 = run(['data: a\r', '\rdata: b\r\r']).events;
  assert.deepEqual(ev2.map((e) => e.data), ['a', 'b']);
});

test('a line split across feeds', () => {
  const { events } = run(['da', 'ta: hel', 'lo wor', 'ld\n', '\n']);
  assert.deepEqual(events.map((e) => e.data), ['hello world']);
  const named = run(['ev', 'ent: chu', 'nk\ndata: x\n\n']).events;
  assert.equal(named[0].type, 'chunk');
});

test('multi-byte UTF-8 characters split across feeds byte by byte', () => {
  for (const text of ['é', '😀', 'naïve café — 日本語 😀👍🏽', '\u{10FFFF}']) {
    const bytes = enc.encode(`data: ${text}\n\n`);
    for (const chunks of splits(bytes)) {
      const { events } = run(chunks);
      assert.equal(events.length, 1);
      assert.equal(events[0].data, text, `${JSON.stringify(text)} split into ${chunks.map((c) => c.length).join('+')}`);
    }
  }
});

test('an emoji split in the middle of a JSON chunk payload', () => {
  const line = enc.encode('id: 9\ndata: {"type":"chunk","content":"ok 😀!","tokens":3}\n\n');
  const cut = line.indexOf(0xf0) + 2; // inside the 4-byte sequence
  const { events } = run([line.slice(0, cut), line.slice(cut)]);
  assert.deepEqual(JSON.parse(events[0].data), { type: 'chunk', content: 'ok 😀!', tokens: 3 });
  assert.equal(events[0].id, '9');
});

test('ArrayBuffer and typed-array views are accepted', () => {
  const bytes = enc.encode('data: buf\n\n');
  const padded = new Uint8Array(bytes.length + 4);
  padded.set(bytes, 2);
  assert.equal(run([bytes.buffer]).events[0].data, 'buf');
  assert.equal(run([new DataView(padded.buffer, 2, bytes.length)]).events[0].data, 'buf');
});

test('invalid UTF-8 becomes U+FFFD instead of throwing', () => {
  const { events } = run([Uint8Array.of(0x64, 0x61, 0x74, 0x61, 0x3a, 0x20, 0xff, 0x41, 0x0a, 0x0a)]);
  assert.equal(events[0].data, '\ufffdA');
});

test('end(): a final event without the trailing blank line is discarded (as the spec says)', () => {
  const r1 = run(['data: complete\n\ndata: partial\n']);
  assert.deepEqual(r1.events.map((e) => e.data), ['complete']);
  const r2 = run(['data: complete\n\ndata: no newline at all']);
  assert.deepEqual(r2.events.map((e) => e.data), ['complete']);
});

test('end(): a truncated multi-byte character at the very end does not throw', () => {
  const bytes = enc.encode('data: a\n\ndata: 😀');
  const { events } = run([bytes.slice(0, bytes.length - 2)]);
  assert.deepEqual(events.map((e) => e.data), ['a']);
});

test('end() with flushOnEnd: true dispatches the unterminated final event', () => {
  const r = run(['data: complete\n\nid: 4\ndata: partial'], { options: { flushOnEnd: true } });
  assert.deepEqual(brief(r.events), [
    { type: 'message', data: 'complete', id: '' },
    { type: 'message', data: 'partial', id: '4' },
  ]);
});

test('without end(), an unterminated event is kept waiting', () => {
  const r = run(['data: a\n\ndata: b\n'], { end: false });
  assert.deepEqual(r.events.map((e) => e.data), ['a']);
  r.parser.feed('\n');
  assert.deepEqual(r.events.map((e) => e.data), ['a', 'b']);
});

test('the parser can be reused after end(); lastEventId survives', () => {
  const events = [];
  const p = createSSEParser((e) => events.push(e));
  p.feed('id: 12\ndata: one\n\ndata: half');
  p.end();
  assert.equal(p.lastEventId, '12');
  p.feed(enc.encode('data: two\n\n'));
  p.end();
  assert.deepEqual(events.map((e) => [e.data, e.lastEventId]), [['one', '12'], ['two', '12']]);
});

test('retry is exposed on the parser', () => {
  const { parser } = run(['retry: 2500\n\n'], { end: false });
  assert.equal(parser.retry, 2500);
});

test('feed() returns the parser for chaining; onEvent is required', () => {
  const events = [];
  const p = createSSEParser((e) => events.push(e));
  p.feed('data: a\n').feed('\n').end();
  assert.equal(events.length, 1);
  assert.throws(() => createSSEParser(), TypeError);
});

test('a long stream of small random feeds gives the same events as one feed', () => {
  let text = 'retry: 3000\n\n';
  for (let i = 1; i <= 200; i++) {
    const eol = ['\n', '\r', '\r\n'][i % 3];
    text += `: ping${eol}id: ${i}${eol}event: chunk${eol}data: {"n":${i},"s":"é😀\\u00e9"}${eol}data: second line${eol}${eol}`;
  }
  const bytes = enc.encode(text);
  const expected = brief(run([text]).events);
  assert.equal(expected.length, 200);
  let seed = 42;
  const rand = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
  for (let round = 0; round < 20; round++) {
    const chunks = [];
    for (let i = 0; i < bytes.length;) {
      const n = 1 + Math.floor(rand() * 40);
      chunks.push(bytes.slice(i, i + n));
      i += n;
    }
    assert.deepEqual(brief(run(chunks).events), expected);
  }
});

test('a large stream is parsed in linear time', () => {
  const one = 'id: 1\ndata: {"type":"chunk","content":"word ","tokens":1}\n\n';
  const text = one.repeat(50000); // ~3 MB
  const bytes = enc.encode(text);
  const started = process.hrtime.bigint();
  let count = 0;
  const p = createSSEParser(() => { count++; });
  for (let i = 0; i < bytes.length; i += 1000) p.feed(bytes.subarray(i, i + 1000));
  p.end();
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  assert.equal(count, 50000);
  assert.ok(ms < 3000, `took ${ms} ms`);
});
