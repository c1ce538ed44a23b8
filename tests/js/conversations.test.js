'use strict';
// The widget behind a login, DOM-free: the conversation list's state, who is asking and the storage key
// it decides, the CSRF header on writes, the messages for 401/403/404, and the code blocks' Copy button.
// Requests go to a fake fetch that answers like the server's contract (issue 9).
// Run: node --test tests/js/
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');

const BuppleChat = require(path.join(__dirname, '..', '..', 'bupple_flask', 'static', 'bupple-chat.js'));
const {
  urls, storageKeyFor, csrfToken, withCsrf, describeHttpError, messages, resolveIdentity,
  createConversationList, conversationTitle, copyText, addCopyButtons, optionsFromDataset,
} = BuppleChat;

const json = (status, body) => new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });
const conv = (id, title, updated = '2026-11-30T12:00:00.000000+00:00') => (
  { id, title, provider: 'openai', model: 'gpt-test', created_at: updated, updated_at: updated, message_count: 2 });
const NOT_FOUND = { error: { code: 'conversation_not_found', message: 'This conversation is not available' } };

/** A fake server: `routes` maps 'METHOD path' (query included) to a Response or a function of the request. */
function fakeServer(routes) {
  const calls = [];
  const request = (url, init = {}) => {
    const method = (init.method || 'GET').toUpperCase();
    calls.push({ method, url, init, body: init.body ? JSON.parse(init.body) : undefined });
    const route = routes[`${method} ${url}`];
    if (!route) return Promise.resolve(json(404, { error: { code: 'not_found', message: 'Not Found' } }));
    return Promise.resolve(typeof route === 'function' ? route(init) : route.clone());
  };
  return { request, calls };
}
/** The widget's request wrapper, reduced to what these tests check: the CSRF header on writes. */
function withToken(request, token) {
  return (url, init = {}) => {
    init.headers = withCsrf({ Accept: 'application/json' }, init.method, token);
    return request(url, init);
  };
}

// --- URLs: derived from the endpoint, so they follow the blueprint's prefix -----------------------

test('the conversation and identity URLs are siblings of the stream endpoint, under any prefix', () => {
  const opts = { endpoint: '/assist/api/stream' };
  assert.equal(urls.conversations(opts), '/assist/api/conversations');
  assert.equal(urls.conversation(opts, 'a b/c'), '/assist/api/conversations/a%20b%2Fc');
  assert.equal(urls.me(opts), '/assist/api/me');
  assert.equal(urls.history(opts, 'x1'), '/assist/api/conversations/x1/messages');
  assert.equal(urls.delete(opts, 'x1'), '/assist/api/conversations/x1');
  // The Jinja helper passes them explicitly (url_for), which wins over the derivation.
  const given = { endpoint: '/custom/chat', conversationsEndpoint: '/c/api/conversations', meEndpoint: '/c/api/me' };
  assert.equal(urls.conversations(given), '/c/api/conversations');
  assert.equal(urls.history(given, 'x1'), '/c/api/conversations/x1/messages');
  assert.equal(urls.delete(given, 'x1'), '/c/api/conversations/x1');
  assert.equal(urls.me(given), '/c/api/me');
  assert.equal(urls.conversations({ endpoint: '/api/stream', conversationsEndpoint: false }), null);
  assert.equal(urls.me({ endpoint: '/custom/chat' }), null, 'cannot derive: no identity request');
});

test('the script tag\'s data-* attributes written by the Jinja helper become options', () => {
  const o = optionsFromDataset({
    endpoint: '/assist/api/stream', conversationsEndpoint: '/assist/api/conversations', meEndpoint: '/assist/api/me',
    identity: '9f86d081884c7d65', csrfToken: 'tok-1', markdown: 'true', conversationList: 'true',
  });
  assert.equal(o.conversationsEndpoint, '/assist/api/conversations');
  assert.equal(o.meEndpoint, '/assist/api/me');
  assert.equal(o.identity, '9f86d081884c7d65');
  assert.equal(o.csrfToken, 'tok-1');
  assert.equal(o.markdown, true);
  assert.equal(o.conversationList, true);
  assert.equal(optionsFromDataset({ identity: '' }).identity, undefined, 'an empty identity: ask /me');
  assert.equal(optionsFromDataset({ meEndpoint: 'false' }).meEndpoint, false);
});

// --- the stored conversation: one key per identity ------------------------------------------------

test('the stored conversation is keyed per identity: another user on the same browser gets another key', () => {
  const opts = { endpoint: 'https://shop.example/assist/api/stream?events=named' };
  const erin = storageKeyFor(opts, 'a1b2c3d4e5f60718');
  const frank = storageKeyFor(opts, 'ffeeddccbbaa9988');
  assert.equal(erin, 'bupple-chat:conversation:https://shop.example/assist/api/stream:a1b2c3d4e5f60718');
  assert.notEqual(erin, frank);
  assert.equal(storageKeyFor(opts, null), 'bupple-chat:conversation:https://shop.example/assist/api/stream', 'no identity: the key as before');
  assert.equal(storageKeyFor({ ...opts, storageKey: 'mine' }, 'a1b2'), 'mine:a1b2', 'a custom key gets the identity too');
});

test('who is asking: the identity option, else GET /me; a 401 means nothing stored is opened', async () => {
  assert.deepEqual(await resolveIdentity({ endpoint: '/api/stream', identity: 'abc123abc123abcd' }, null),
    { identity: 'abc123abc123abcd', error: null, known: true });

  const signedIn = fakeServer({ 'GET /api/me': json(200, { identity: '0123456789abcdef', anonymous: false }) });
  assert.deepEqual(await resolveIdentity({ endpoint: '/api/stream' }, signedIn.request),
    { identity: '0123456789abcdef', error: null, known: true });
  assert.equal(signedIn.calls.length, 1);

  const signedOut = fakeServer({ 'GET /api/me': json(401, { error: { code: 'unauthorized', message: 'Sign in to use the chat' } }) });
  const who = await resolveIdentity({ endpoint: '/api/stream' }, signedOut.request);
  assert.equal(who.identity, null);
  assert.equal(who.known, true, 'known: no key without an identity, so no conversation is restored');
  assert.equal(who.error.error, 'Please sign in to chat.');

  const older = fakeServer({}); // a server without /me: 404
  assert.deepEqual(await resolveIdentity({ endpoint: '/api/stream' }, older.request), { identity: null, error: null, known: false });
  assert.deepEqual(await resolveIdentity({ endpoint: '/custom' }, older.request), { identity: null, error: null, known: false });
  assert.equal(older.calls.length, 1, 'no /me to derive from a custom endpoint: not asked');
});

// --- CSRF -----------------------------------------------------------------------------------------

test('the CSRF token comes from the option or <meta name="csrf-token"> and goes on writes only', () => {
  const meta = { getAttribute: (name) => (name === 'content' ? 'meta-token' : null) };
  const doc = { querySelector: (sel) => (sel === 'meta[name="csrf-token"]' ? meta : null) };
  assert.equal(csrfToken({ csrfToken: 'option-token' }, doc), 'option-token');
  assert.equal(csrfToken({}, doc), 'meta-token');
  assert.equal(csrfToken({}, { querySelector: () => null }), null);
  assert.equal(csrfToken({}, undefined), null);
  for (const method of ['POST', 'PATCH', 'DELETE', 'put', 'post']) {
    assert.equal(withCsrf({}, method, 't')['X-CSRFToken'], 't', method);
  }
  for (const method of ['GET', 'HEAD', undefined]) {
    assert.deepEqual(withCsrf({ Accept: 'x' }, method, 't'), { Accept: 'x' }, String(method));
  }
  assert.deepEqual(withCsrf({ 'x-csrftoken': 'own' }, 'POST', 't'), { 'x-csrftoken': 'own' }, 'a header the page set wins');
  assert.deepEqual(withCsrf({}, 'POST', null), {}, 'no token: no header');
});

test('every write of the conversation list carries X-CSRFToken; reads do not', async () => {
  const server = fakeServer({
    'GET /api/conversations?limit=20': json(200, { conversations: [conv('c1', 'One')], next_cursor: null }),
    'PATCH /api/conversations/c1': json(200, conv('c1', 'Renamed')),
    'DELETE /api/conversations/c1': json(200, { conversation_id: 'c1', deleted: true }),
  });
  const list = createConversationList({ endpoint: '/api/stream', conversationPageSize: 20 }, withToken(server.request, 'csrf-1'));
  await list.refresh();
  await list.rename('c1', 'Renamed');
  await list.remove('c1');
  assert.deepEqual(server.calls.map((c) => [c.method, c.init.headers['X-CSRFToken']]),
    [['GET', undefined], ['PATCH', 'csrf-1'], ['DELETE', 'csrf-1']]);
});

// --- messages -------------------------------------------------------------------------------------

test('401, 403, a CSRF failure and a conversation\'s 404 are said in plain words', () => {
  const unauthorized = describeHttpError(401, JSON.stringify({ error: { code: 'unauthorized', message: 'Sign in to use the chat' } }));
  assert.equal(unauthorized.error, 'Please sign in to chat.');
  assert.equal(unauthorized.code, 'unauthorized');
  assert.equal(unauthorized.retryable, false, 'retrying does not sign anyone in');
  const forbidden = describeHttpError(403, JSON.stringify({ error: { code: 'forbidden', message: 'Forbidden' } }));
  assert.equal(forbidden.error, 'You are not allowed to do that (or the page expired: reload it).');
  assert.equal(forbidden.retryable, false);
  // Flask-WTF's CSRFProtect answers 400 "The CSRF token is missing." (the blueprint writes it as JSON).
  const csrf = describeHttpError(400, JSON.stringify({ error: { code: 'bad_request', message: 'The CSRF token is missing.' } }));
  assert.equal(csrf.error, messages.forbidden);
  assert.equal(csrf.code, 'csrf_failed');
  assert.equal(describeHttpError(400, '<p>The CSRF token has expired.</p>').error, 'The request failed (HTTP 400).', 'only a readable message is trusted');
  const gone = describeHttpError(404, JSON.stringify(NOT_FOUND));
  assert.equal(gone.error, 'This conversation is not available.');
  assert.equal(gone.code, 'conversation_not_found');
  assert.equal(describeHttpError(404, '', 'conversation').error, messages.notAvailable, 'a conversation URL\'s 404');
  assert.equal(describeHttpError(404, '').error, 'The chat endpoint was not found (HTTP 404).', 'not a conversation: the endpoint is wrong');
  assert.equal(describeHttpError(400, JSON.stringify({ error: { code: 'invalid_request', message: 'message is required' } })).retryable, undefined);
});

// --- the conversation list ------------------------------------------------------------------------

test('the list loads the newest page, then older pages through next_cursor, without repeating one', async () => {
  const server = fakeServer({
    'GET /api/conversations?limit=2': json(200, { conversations: [conv('c3', 'Three'), conv('c2', 'Two')], next_cursor: 'cur 1' }),
    'GET /api/conversations?limit=2&cursor=cur%201': json(200, { conversations: [conv('c2', 'Two'), conv('c1', 'One')], next_cursor: null }),
  });
  const changes = [];
  const list = createConversationList({ endpoint: '/api/stream', conversationPageSize: 2 }, server.request,
    (l) => changes.push([l.loading, l.items.map((c) => c.id).join(',')]));
  assert.equal(list.loaded, false);
  await list.refresh();
  assert.deepEqual(list.items.map((c) => c.id), ['c3', 'c2']);
  assert.equal(list.nextCursor, 'cur 1');
  await list.loadMore();
  assert.deepEqual(list.items.map((c) => c.id), ['c3', 'c2', 'c1'], 'c2 moved between pages: shown once');
  assert.equal(list.nextCursor, null);
  await list.loadMore();
  assert.equal(server.calls.length, 2, 'no next_cursor: nothing more to ask');
  assert.deepEqual(changes, [[true, ''], [false, 'c3,c2'], [true, 'c3,c2'], [false, 'c3,c2,c1']]);
  // A refresh starts again from the newest page.
  await list.refresh();
  assert.deepEqual(list.items.map((c) => c.id), ['c3', 'c2']);
});

test('a refresh wins over an older page still on its way', async () => {
  let releaseOld;
  const server = fakeServer({
    'GET /api/conversations?limit=20': () => json(200, { conversations: [conv('new', 'New')], next_cursor: null }),
  });
  const slow = (url, init) => (url.includes('cursor=')
    ? new Promise((r) => { releaseOld = () => r(json(200, { conversations: [conv('stale', 'Stale')], next_cursor: null })); })
    : server.request(url, init));
  const list = createConversationList({ endpoint: '/api/stream', conversationPageSize: 20 }, slow);
  list.nextCursor = 'old';
  const older = list.loadMore();
  await list.refresh();
  releaseOld();
  await older;
  assert.deepEqual(list.items.map((c) => c.id), ['new']);
  assert.equal(list.loading, false);
});

test('rename sends the trimmed title and shows the server\'s answer; bad titles never leave the browser', async () => {
  const server = fakeServer({
    'GET /api/conversations?limit=20': json(200, { conversations: [conv('c1', 'Old'), conv('c2', 'Other')], next_cursor: null }),
    'PATCH /api/conversations/c1': (init) => json(200, conv('c1', JSON.parse(init.body).title)),
  });
  const list = createConversationList({ endpoint: '/api/stream', conversationPageSize: 20 }, server.request);
  await list.refresh();
  assert.deepEqual(await list.rename('c1', '  Trip to Lyon  '), { ok: true, error: null });
  assert.deepEqual(server.calls[1].body, { title: 'Trip to Lyon' });
  assert.deepEqual(list.items.map((c) => c.title), ['Trip to Lyon', 'Other'], 'renamed in place');
  for (const bad of ['   ', 'x'.repeat(201)]) {
    const r = await list.rename('c1', bad);
    assert.equal(r.ok, false);
    assert.equal(r.error.code, 'invalid_title');
  }
  assert.equal(server.calls.length, 2);
});

test('delete removes the row; a conversation that is gone (404) leaves the list too, with the plain message', async () => {
  const server = fakeServer({
    'GET /api/conversations?limit=20': json(200, { conversations: [conv('c1', 'Mine'), conv('c2', 'Gone')], next_cursor: null }),
    'DELETE /api/conversations/c1': json(200, { conversation_id: 'c1', deleted: true }),
    'DELETE /api/conversations/c2': json(404, NOT_FOUND),
    'PATCH /api/conversations/c3': json(404, NOT_FOUND),
  });
  const list = createConversationList({ endpoint: '/api/stream', conversationPageSize: 20 }, server.request);
  await list.refresh();
  assert.deepEqual(await list.remove('c1'), { ok: true, error: null });
  const gone = await list.remove('c2');
  assert.equal(gone.ok, false);
  assert.equal(gone.error.error, 'This conversation is not available.');
  assert.deepEqual(list.items, []);
  list.items = [conv('c3', 'Renamed elsewhere')];
  assert.equal((await list.rename('c3', 'New name')).error.error, messages.notAvailable);
  assert.deepEqual(list.items, []);
});

test('a list request that fails says why, and keeps what was shown', async () => {
  let signedIn = true;
  const server = fakeServer({
    'GET /api/conversations?limit=20': () => (signedIn
      ? json(200, { conversations: [conv('c1', 'Kept')], next_cursor: null })
      : json(401, { error: { code: 'unauthorized', message: 'Sign in to use the chat' } })),
  });
  const list = createConversationList({ endpoint: '/api/stream', conversationPageSize: 20 }, server.request);
  await list.refresh();
  signedIn = false;
  await list.refresh();
  assert.equal(list.error.error, 'Please sign in to chat.');
  assert.deepEqual(list.items.map((c) => c.id), ['c1']);
  const offline = createConversationList({ endpoint: '/api/stream' }, () => Promise.reject(new TypeError('Failed to fetch')));
  await offline.refresh();
  assert.equal(offline.error.code, 'network_error');
});

test('titles: the server\'s, else "New conversation"; whitespace collapsed', () => {
  assert.equal(conversationTitle(conv('c', null)), 'New conversation');
  assert.equal(conversationTitle(conv('c', '  two\n lines ')), 'two lines');
  assert.equal(conversationTitle(conv('c', '<b>kept as text</b>')), '<b>kept as text</b>');
});

// --- Copy on code blocks --------------------------------------------------------------------------

test('copyText uses the clipboard API, and falls back to a selected textarea when it is refused or absent', async () => {
  const written = [];
  assert.equal(await copyText('a', { navigator: { clipboard: { writeText: (t) => { written.push(t); return Promise.resolve(); } } } }), true);
  assert.deepEqual(written, ['a']);

  const commands = [];
  const body = { children: [], appendChild(e) { this.children.push(e); }, removeChild(e) { this.children.splice(this.children.indexOf(e), 1); } };
  const doc = {
    body,
    createElement: (tag) => ({ tag, value: '', setAttribute() {}, select() { commands.push(['select', this.value]); } }),
    execCommand: (name) => { commands.push([name]); return true; },
  };
  const refused = { writeText: () => Promise.reject(new DOMException('denied', 'NotAllowedError')) };
  assert.equal(await copyText('b', { navigator: { clipboard: refused }, document: doc }), true);
  assert.equal(await copyText('c', { navigator: {}, document: doc }), true);
  assert.deepEqual(commands, [['select', 'b'], ['copy'], ['select', 'c'], ['copy']]);
  assert.equal(body.children.length, 0, 'the textarea is removed');
  assert.equal(await copyText('d', { navigator: {}, document: { ...doc, execCommand: () => false } }), false);
  assert.equal(await copyText('e', {}), false);
});

/** A tiny DOM: elements with attributes, children, listeners and a selector for 'pre', 'code', 'button.copy'. */
class El {
  constructor(tag) { this.tagName = tag; this.attributes = {}; this.children = []; this.listeners = {}; this.text = ''; }
  setAttribute(k, v) { this.attributes[k] = String(v); }
  getAttribute(k) { return k in this.attributes ? this.attributes[k] : null; }
  appendChild(c) { this.children.push(c); return c; }
  addEventListener(type, fn) { this.listeners[type] = fn; }
  set textContent(t) { this.text = String(t); }
  get textContent() { return this.text + this.children.map((c) => c.textContent).join(''); }
  set innerHTML(_) { throw new Error('innerHTML used'); }
  all(match, out = []) { for (const c of this.children) { if (match(c)) out.push(c); c.all(match, out); } return out; }
  querySelectorAll(sel) { return this.all(matcher(sel)); }
  querySelector(sel) { return this.all(matcher(sel))[0] || null; }
}
function matcher(sel) {
  if (sel === 'button.copy') return (e) => e.tagName === 'button' && e.getAttribute('class') === 'copy';
  return (e) => e.tagName === sel;
}

test('each code block gets one Copy button that copies exactly the code, and the reply text is unchanged', async () => {
  const doc = { createElement: (tag) => new El(tag), activeElement: null };
  const bubble = new El('div');
  const codes = ['print("one")', 'rm -rf <not/html>'];
  for (const text of codes) {
    const pre = bubble.appendChild(new El('pre'));
    pre.appendChild(new El('code')).textContent = text;
  }
  const before = bubble.textContent;
  const copied = [];
  const env = { navigator: { clipboard: { writeText: (t) => { copied.push(t); return Promise.resolve(); } } } };
  addCopyButtons(bubble, doc, env);
  addCopyButtons(bubble, doc, env); // a second paint adds none
  const buttons = bubble.querySelectorAll('button.copy');
  assert.equal(buttons.length, 2);
  assert.equal(bubble.textContent, before, 'the label is CSS (data-label): the bubble\'s text stays the reply');
  assert.equal(buttons[0].getAttribute('aria-label'), 'Copy code');
  assert.equal(buttons[0].getAttribute('data-testid'), 'copy-code');
  buttons[1].listeners.click();
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(copied, ['rm -rf <not/html>']);
  assert.equal(buttons[1].getAttribute('data-label'), 'Copied');
  assert.equal(buttons[0].getAttribute('data-label'), 'Copy');
});

test('a conversation just made here stays listed until the server lists it (its row is written beside the stream)', async () => {
  let listed = [conv('old', 'Old')];
  const server = fakeServer({
    'GET /api/conversations?limit=20': () => json(200, { conversations: listed, next_cursor: null }),
  });
  const list = createConversationList({ endpoint: '/api/stream', conversationPageSize: 20 }, server.request);
  await list.refresh();
  list.keep({ id: 'new', title: 'Just asked', updated_at: '2026-12-01T00:00:00Z' });
  assert.deepEqual(list.items.map((c) => c.id), ['new', 'old']);
  await list.refresh(); // the server has not written it yet
  assert.deepEqual(list.items.map((c) => c.id), ['new', 'old']);
  listed = [conv('new', 'Just asked (server)'), conv('old', 'Old')];
  await list.refresh();
  assert.deepEqual(list.items.map((c) => c.title), ['Just asked (server)', 'Old'], 'the server\'s row replaces it');
  listed = [conv('old', 'Old')]; // deleted elsewhere: not kept any more
  await list.refresh();
  assert.deepEqual(list.items.map((c) => c.id), ['old']);
});
