'use strict';
// Tests for the safe Markdown tokenizer/renderer and the pure helpers in static/bupple-chat.js.
// The renderer is driven with a tiny fake document that refuses innerHTML, so the
// tests prove that model text only ever becomes text nodes or whitelisted elements.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');

const STATIC = path.join(__dirname, '..', '..', 'bupple_flask', 'static');
const BuppleChat = require(path.join(STATIC, 'bupple-chat.js'));
const { parseMarkdown, parseInline, renderMarkdown, safeUrl, urls, describeHttpError } = BuppleChat;

// --- a fake document: just what renderMarkdown may use ------------------------------------

const ALLOWED_TAGS = new Set(['p', 'br', 'strong', 'em', 'del', 'code', 'pre', 'a', 'ul', 'ol', 'li', 'blockquote', 'hr']);

class FakeNode {
  constructor(nodeName) { this.nodeName = nodeName; this.childNodes = []; this.attributes = {}; }
  appendChild(child) {
    if (child.nodeName === '#fragment') { for (const c of child.childNodes) this.appendChild(c); child.childNodes = []; return child; }
    this.childNodes.push(child); return child;
  }
  setAttribute(name, value) {
    if (/^on/i.test(name)) throw new Error(`event handler attribute ${name} set`);
    this.attributes[name] = String(value);
  }
  getAttribute(name) { return name in this.attributes ? this.attributes[name] : null; }
  set innerHTML(_) { throw new Error('innerHTML used'); }
  set outerHTML(_) { throw new Error('outerHTML used'); }
  insertAdjacentHTML() { throw new Error('insertAdjacentHTML used'); }
}

const fakeDoc = {
  createElement(tag) {
    if (!ALLOWED_TAGS.has(tag)) throw new Error(`unexpected element <${tag}>`);
    return new FakeNode(tag);
  },
  createTextNode(text) { const n = new FakeNode('#text'); n.data = String(text); return n; },
  createDocumentFragment() { return new FakeNode('#fragment'); },
};

const esc = (s) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
function html(node) {
  if (node.nodeName === '#text') return esc(node.data);
  const inner = node.childNodes.map(html).join('');
  if (node.nodeName === '#fragment') return inner;
  const attrs = Object.keys(node.attributes).sort().map((k) => ` ${k}="${esc(node.attributes[k])}"`).join('');
  if (node.nodeName === 'br' || node.nodeName === 'hr') return `<${node.nodeName}${attrs}>`;
  return `<${node.nodeName}${attrs}>${inner}</${node.nodeName}>`;
}
const md = (text) => html(renderMarkdown(text, fakeDoc));
function findAll(node, name, out = []) {
  if (node.nodeName === name) out.push(node);
  for (const c of node.childNodes) findAll(c, name, out);
  return out;
}
const LINK = (href, text) => `<a href="${esc(href)}" rel="noopener noreferrer" target="_blank">${text}</a>`;

// --- safeUrl --------------------------------------------------------------------------------

test('safeUrl: only absolute http, https and mailto URLs pass', () => {
  const ok = ['http://example.com', 'https://example.com/a?b=c#d', 'HTTPS://EXAMPLE.COM', 'mailto:someone@example.com', 'https://example.com/path_(x)', '<https://example.com>'];
  for (const u of ok) assert.ok(safeUrl(u), u);
  assert.equal(safeUrl('  https://example.com  '), 'https://example.com');
  const bad = [
    'javascript:alert(1)', 'JavaScript:alert(1)', ' javascript:alert(1)', 'java\tscript:alert(1)', 'java\nscript:alert(1)',
    'javascript\u0000:alert(1)', 'data:text/html,<script>alert(1)</script>', 'vbscript:msgbox(1)', 'file:///etc/passwd',
    '/relative/path', 'relative', '//evil.example.com', '#fragment', 'http:evil.com', 'https:///nohost', 'http://exa mple.com',
    'https://example.com/\u2028x', 'ftp://example.com', 'mailto:', '', null, undefined, 42, 'https://' + 'a'.repeat(3000),
  ];
  for (const u of bad) assert.equal(safeUrl(u), null, JSON.stringify(u));
});

// --- rendering: text stays text ------------------------------------------------------------

test('HTML in model output is rendered as text, never as elements', () => {
  const payload = '<img src=x onerror=alert(1)>';
  assert.equal(md(payload), '<p>&lt;img src=x onerror=alert(1)&gt;</p>');
  assert.equal(md('<script>alert(1)</script> and <b>bold</b>'), '<p>&lt;script&gt;alert(1)&lt;/script&gt; and &lt;b&gt;bold&lt;/b&gt;</p>');
  assert.equal(md('`<img src=x onerror=alert(1)>`'), '<p><code>&lt;img src=x onerror=alert(1)&gt;</code></p>');
  assert.equal(md('```html\n<img src=x onerror=alert(1)>\n```'), '<pre class="md-pre" data-lang="html"><code class="language-html">&lt;img src=x onerror=alert(1)&gt;</code></pre>');
  assert.equal(md('**<img src=x onerror=alert(1)>**'), '<p><strong>&lt;img src=x onerror=alert(1)&gt;</strong></p>');
});

test('links: safe schemes become <a rel="noopener noreferrer">, others become plain text', () => {
  assert.equal(md('[docs](https://example.com/docs)'), `<p>${LINK('https://example.com/docs', 'docs')}</p>`);
  assert.equal(md('[mail](mailto:a@example.com)'), `<p>${LINK('mailto:a@example.com', 'mail')}</p>`);
  assert.equal(md('[click](javascript:alert(1))'), '<p>click</p>');
  assert.equal(md('[click](JAVASCRIPT:alert(1))'), '<p>click</p>');
  assert.equal(md('[click]( javascript:alert(1) )'), '<p>click</p>');
  assert.equal(md('[click](data:text/html;base64,PHNjcmlwdD4=)'), '<p>click</p>');
  assert.equal(md('[rel](/local/page)'), '<p>rel</p>');
  assert.equal(md('[t](https://example.com "a title")'), `<p>${LINK('https://example.com', 't')}</p>`);
  assert.equal(md('[a "quote"](https://example.com/?q="x")'), `<p>${LINK('https://example.com/?q="x"', 'a &quot;quote&quot;')}</p>`);
  assert.equal(md('[**bold** link](https://example.com)'), `<p>${LINK('https://example.com', '<strong>bold</strong> link')}</p>`);
  assert.equal(md('[outer [inner](https://b.example)](https://a.example)'), `<p>${LINK('https://a.example', 'outer inner')}</p>`, 'no nested anchors');
  assert.equal(md('![alt text](https://example.com/i.png)'), `<p>${LINK('https://example.com/i.png', 'alt text')}</p>`, 'images are not loaded');
  assert.equal(md('![x](javascript:alert(1))'), '<p>x</p>');
  assert.equal(md('<https://example.com/a>'), `<p>${LINK('https://example.com/a', 'https://example.com/a')}</p>`);
  assert.equal(md('<javascript:alert(1)>'), '<p>&lt;javascript:alert(1)&gt;</p>');
});

test('bare URLs are linked without trailing punctuation', () => {
  assert.equal(md('See https://example.com/a.'), `<p>See ${LINK('https://example.com/a', 'https://example.com/a')}.</p>`);
  assert.equal(md('(see https://en.wikipedia.org/wiki/Foo_(bar))'), `<p>(see ${LINK('https://en.wikipedia.org/wiki/Foo_(bar)', 'https://en.wikipedia.org/wiki/Foo_(bar)')})</p>`);
  assert.equal(md('(https://example.com)'), `<p>(${LINK('https://example.com', 'https://example.com')})</p>`);
  assert.equal(md('xhttps://example.com'), '<p>xhttps://example.com</p>', 'not inside a word');
  assert.equal(md('javascript://example.com/%0aalert(1)'), '<p>javascript://example.com/%0aalert(1)</p>');
});

test('every rendered link passes safeUrl and has rel="noopener noreferrer"', () => {
  const nasty = [
    '[a](javascript:alert(1))', '[a](jav&#x09;ascript:alert(1))', '[a](<javascript:alert(1)>)', '[a](https://ok.example)',
    '[a](http://ok.example) [b](vbscript:x) <https://c.example> https://d.example/x',
  ].join('\n\n');
  const anchors = findAll(renderMarkdown(nasty, fakeDoc), 'a');
  assert.equal(anchors.length, 4);
  for (const a of anchors) {
    assert.ok(safeUrl(a.getAttribute('href')), a.getAttribute('href'));
    assert.equal(a.getAttribute('rel'), 'noopener noreferrer');
  }
});

test('the renderer re-checks hrefs of hand-made tokens', () => {
  const blocks = [{ type: 'paragraph', children: [{ type: 'link', href: 'javascript:alert(1)', children: [{ type: 'text', text: 'x' }] }] }];
  assert.equal(html(renderMarkdown(blocks, fakeDoc)), '<p>x</p>');
  const unknown = [{ type: 'script', children: [] }, { type: 'paragraph', children: [{ type: 'html', text: '<b>' }] }];
  assert.equal(html(renderMarkdown(unknown, fakeDoc)), '<p></p>');
});

// --- rendering: Markdown features ------------------------------------------------------------

test('emphasis, strong, strikethrough, inline code', () => {
  assert.equal(md('*em* _em_ **strong** __strong__ ***both*** ~~gone~~'),
    '<p><em>em</em> <em>em</em> <strong>strong</strong> <strong>strong</strong> <strong><em>both</em></strong> <del>gone</del></p>');
  assert.equal(md('*a **b** c*'), '<p><em>a <strong>b</strong> c</em></p>');
  assert.equal(md('snake_case_name and 2 * 3 * 4 and a*'), '<p>snake_case_name and 2 * 3 * 4 and a*</p>');
  assert.equal(md('** not bold **'), '<p>** not bold **</p>');
  assert.equal(md('`code` and ``a ` b`` and `` `x` ``'), '<p><code>code</code> and <code>a ` b</code> and <code>`x`</code></p>');
  assert.equal(md('`*not em*` \\*escaped\\*'), '<p><code>*not em*</code> *escaped*</p>');
  assert.equal(md('unclosed `tick and *star'), '<p>unclosed `tick and *star</p>');
});

test('paragraphs and line breaks', () => {
  assert.equal(md('one\ntwo\n\nthree'), '<p>one<br>two</p><p>three</p>');
  assert.equal(md('a\r\nb\r\rc'), '<p>a<br>b</p><p>c</p>');
  assert.equal(md(''), '');
  assert.equal(md('   \n\n  '), '');
});

test('fenced code blocks, including an unclosed fence while streaming', () => {
  assert.equal(md('```python\ndef f():\n    return "<x>"\n```\nafter'),
    '<pre class="md-pre" data-lang="python"><code class="language-python">def f():\n    return &quot;&lt;x&gt;&quot;</code></pre><p>after</p>');
  assert.equal(md('text\n```\nstill streaming\n  indented'), '<p>text</p><pre class="md-pre"><code>still streaming\n  indented</code></pre>');
  assert.equal(md('~~~\n```\n~~~'), '<pre class="md-pre"><code>```</code></pre>');
  assert.equal(md('````\n```\ninner\n```\n````'), '<pre class="md-pre"><code>```\ninner\n```</code></pre>');
  assert.equal(md('```js" onmouseover="x\ncode\n```'), '<pre class="md-pre" data-lang="js"><code class="language-js">code</code></pre>', 'language is sanitised');
});

test('lists: bullets, ordered with start, nested, loose, lazy continuation', () => {
  assert.equal(md('- a\n- b\n* c'), '<ul><li>a</li><li>b</li><li>c</li></ul>');
  assert.equal(md('Steps:\n1. one\n2. two'), '<p>Steps:</p><ol><li>one</li><li>two</li></ol>');
  assert.equal(md('3) three\n4) four'), '<ol start="3"><li>three</li><li>four</li></ol>');
  assert.equal(md('- a\n  - a1\n  - a2\n- b'), '<ul><li>a<ul><li>a1</li><li>a2</li></ul></li><li>b</li></ul>');
  assert.equal(md('1. a\n   - x\n2. b'), '<ol><li>a<ul><li>x</li></ul></li><li>b</li></ol>');
  assert.equal(md('- a\n\n- b'), '<ul><li>a</li><li>b</li></ul>');
  assert.equal(md('- a\ncontinued'), '<ul><li>a<br>continued</li></ul>');
  assert.equal(md('- a\n\n  more of a\n- b'), '<ul><li>a<p>more of a</p></li><li>b</li></ul>');
  assert.equal(md('- item with `code` and [link](https://example.com)'), `<ul><li>item with <code>code</code> and ${LINK('https://example.com', 'link')}</li></ul>`);
  assert.equal(md('- code:\n\n  ```\n  x = 1\n  ```'), '<ul><li>code:<pre class="md-pre"><code>x = 1</code></pre></li></ul>');
  assert.equal(md('-not a list\n*not either*'), '<p>-not a list<br><em>not either</em></p>');
});

test('headings, blockquotes and rules', () => {
  assert.equal(md('# Title\n## Sub ##\ntext'), '<p aria-level="3" class="md-h md-h1" role="heading">Title</p><p aria-level="4" class="md-h md-h2" role="heading">Sub</p><p>text</p>');
  assert.equal(md('#not a heading'), '<p>#not a heading</p>');
  assert.equal(md('> quoted *text*\n> more\n\nafter'), '<blockquote><p>quoted <em>text</em><br>more</p></blockquote><p>after</p>');
  assert.equal(md('a\n\n---\n\nb\n***'), '<p>a</p><hr><p>b</p><hr>');
});

test('parseMarkdown and parseInline are pure (no document needed)', () => {
  assert.deepEqual(parseInline('a **b** [c](https://x.example)'), [
    { type: 'text', text: 'a ' },
    { type: 'strong', children: [{ type: 'text', text: 'b' }] },
    { type: 'text', text: ' ' },
    { type: 'link', href: 'https://x.example', children: [{ type: 'text', text: 'c' }] },
  ]);
  assert.deepEqual(parseMarkdown('```\nx\n```'), [{ type: 'code', lang: '', text: 'x' }]);
  assert.deepEqual(parseMarkdown(null), []);
});

test('pathological input is parsed quickly (rendering runs once per frame while streaming)', () => {
  const inputs = [
    '*a '.repeat(5000), '_a '.repeat(5000), '**a '.repeat(4000), '`a '.repeat(5000), '['.repeat(10000),
    '[a]('.repeat(3000), '> '.repeat(3000) + 'x', '- '.repeat(3000) + 'x', ' '.repeat(3000) + '- x\n'.repeat(2000),
    '~~a '.repeat(4000), 'http://a.example/'.repeat(1000), '<https://'.repeat(2000), '\\'.repeat(10000),
  ];
  for (const input of inputs) {
    const started = process.hrtime.bigint();
    renderMarkdown(input, fakeDoc);
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    assert.ok(ms < 1000, `${JSON.stringify(input.slice(0, 12))}... took ${ms} ms`);
  }
});

// --- URL helpers and error bodies -----------------------------------------------------------

test('history, delete and providers URLs are derived from the endpoint', () => {
  const opts = { endpoint: '/api/stream' };
  assert.equal(urls.history(opts, 'abc'), '/api/conversations/abc/messages');
  assert.equal(urls.delete(opts, 'abc'), '/api/conversations/abc');
  assert.equal(urls.providers(opts), '/api/providers');
  assert.equal(urls.history({ endpoint: 'https://h.example/x/api/stream/?events=named' }, 'a b/c'), 'https://h.example/x/api/conversations/a%20b%2Fc/messages');
  assert.equal(urls.providers({ endpoint: '/chat/stream?x=1' }), '/chat/providers');
  assert.equal(urls.history({ endpoint: '/api/chat' }, 'abc'), null, 'cannot derive: no history');
  assert.equal(urls.providers({ endpoint: '/api/chat' }), null);
  assert.equal(urls.history(opts, null), null);
});

test('historyEndpoint / deleteEndpoint / providersEndpoint options override the derivation', () => {
  assert.equal(urls.history({ endpoint: '/x', historyEndpoint: '/h/{id}/msgs' }, 'i d'), '/h/i%20d/msgs');
  assert.equal(urls.history({ endpoint: '/x', historyEndpoint: '/h/:id/msgs' }, 'id'), '/h/id/msgs');
  assert.equal(urls.history({ endpoint: '/x', historyEndpoint: '/convs/' }, 'id'), '/convs/id/messages');
  assert.equal(urls.history({ endpoint: '/x', historyEndpoint: (id) => `/fn/${id}` }, 'id'), '/fn/id');
  assert.equal(urls.history({ endpoint: '/api/stream', historyEndpoint: false }, 'id'), null);
  assert.equal(urls.delete({ endpoint: '/x', historyEndpoint: '/h/{id}/messages' }, 'id'), '/h/id');
  assert.equal(urls.delete({ endpoint: '/api/stream', deleteEndpoint: '/d/{id}' }, 'id'), '/d/id');
  assert.equal(urls.delete({ endpoint: '/api/stream', deleteEndpoint: '/d' }, 'id'), '/d/id');
  assert.equal(urls.delete({ endpoint: '/api/stream', deleteEndpoint: false }, 'id'), null);
  assert.equal(urls.providers({ endpoint: '/api/stream', providersEndpoint: '/p' }), '/p');
  assert.equal(urls.providers({ endpoint: '/api/stream', providersEndpoint: false }), null);
});

test('EventSource GET URL carries the message and extra fields as query parameters', () => {
  assert.equal(urls.eventSource('/api/stream', { message: 'héllo & bye', conversation_id: 'c1', provider: 'claude', model: null, opts: { t: 1 } }),
    '/api/stream?message=h%C3%A9llo%20%26%20bye&conversation_id=c1&provider=claude&opts=%7B%22t%22%3A1%7D');
  assert.equal(urls.eventSource('/api/stream?events=named', { message: 'x' }), '/api/stream?events=named&message=x');
  assert.equal(urls.eventSource('/api/stream?', { message: 'x' }), '/api/stream?message=x');
  assert.equal(urls.eventSource('/api/stream', {}), '/api/stream');
});

test('describeHttpError reads the server error body or falls back to a readable message', () => {
  assert.deepEqual(describeHttpError(400, '{"error":{"code":"invalid_request","message":"message is required"}}'),
    { type: 'error', error: 'message is required', code: 'invalid_request', status: 400, done: true });
  assert.equal(describeHttpError(429, '').error, 'Too many requests. Please wait a moment and try again.');
  assert.equal(describeHttpError(429, '').code, 'http_429');
  assert.match(describeHttpError(502, '<html>Bad gateway</html>').error, /HTTP 502/);
  assert.equal(describeHttpError(418, '{"error":"nope"}').error, 'nope');
});

test('optionsFromDataset maps data-* attributes of the script tag', () => {
  const o = BuppleChat.optionsFromDataset({ endpoint: '/e/stream', target: '#chat', markdown: 'true', showMockNotice: 'false', headers: '{"Authorization":"Bearer t"}', extra: 'not json', provider: 'claude' });
  assert.equal(o.endpoint, '/e/stream');
  assert.equal(o.markdown, true);
  assert.equal(o.showMockNotice, false);
  assert.deepEqual(o.headers, { Authorization: 'Bearer t' });
  assert.equal(o.extra, undefined);
  assert.equal(o.provider, 'claude');
  assert.equal(BuppleChat.optionsFromDataset({ markdown: '' }).markdown, true, 'a bare data-markdown attribute turns it on');
});

test('uuid() gives RFC 4122 version 4 ids', () => {
  const seen = new Set();
  for (let i = 0; i < 100; i++) {
    const id = BuppleChat.uuid();
    assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    seen.add(id);
  }
  assert.equal(seen.size, 100);
});

// --- source-level guards ----------------------------------------------------------------------

test('no HTML-string sinks in the widget or the Vue example', () => {
  const files = [path.join(STATIC, 'bupple-chat.js'), ...fs.readdirSync(path.join(STATIC, 'examples', 'vue')).map((f) => path.join(STATIC, 'examples', 'vue', f))];
  for (const file of files) {
    const code = fs.readFileSync(file, 'utf8').replace(/\/\/.*$/gm, '').replace(/\/\*[\s\S]*?\*\//g, '').replace(/<!--[\s\S]*?-->/g, '');
    for (const sink of ['innerHTML', 'outerHTML', 'insertAdjacentHTML', 'document.write', 'v-html', 'eval(', 'new Function']) {
      assert.ok(!code.includes(sink), `${path.basename(file)} uses ${sink}`);
    }
  }
});
