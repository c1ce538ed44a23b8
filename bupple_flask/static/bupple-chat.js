/*!
 * bupple-chat.js - embeddable streaming chat widget for bupple_flask.
 * One file, no build step, no dependencies. MIT licence.
 *
 * Embed (in a Flask template, with the URLs for the blueprint's prefix, the identity and the CSRF token):
 *   {{ bupple_widget(title="Assistant") }}
 * or by hand:
 *   <div id="chat"></div>
 *   <script src="/bupple/bupple-chat.js" data-endpoint="/api/stream" data-target="#chat"></script>
 * or:
 *   <script src="/bupple/bupple-chat.js"></script>
 *   <script>BuppleChat.mount(document.querySelector('#chat'), {endpoint: '/api/stream'})</script>
 *
 * The same file also loads in Node (no DOM needed) so the SSE parser, the Markdown tokenizer,
 * the streaming parts (createReply, streamWithFetch, streamWithEventSource, replyOutcome) and
 * the conversation list's state (createConversationList) can be tested with `node --test`:
 *   const { createSSEParser, parseMarkdown } = require('./static/bupple-chat.js')
 *
 * Inside: the reply being built (createReply) is fed by one of two transports
 * (streamWithFetch: POST + streamed body; streamWithEventSource: GET fallback);
 * createView owns the DOM (createDrawer the conversation list panel), createHistory the
 * current conversation id and past messages, createConversationList the caller's conversations,
 * and mount() wires them together through short functions that share the widget's state.
 *
 * Model output is never inserted with innerHTML: plain text goes into text nodes,
 * and the optional Markdown renderer builds DOM nodes from a small token tree.
 *
 * Conversations: the server makes a conversation's id on its first message and says it in the
 * first status event (and the X-Bupple-Conversation-Id header); the widget keeps the current id in
 * localStorage under 'bupple-chat:conversation:' + endpoint URL + ':' + identity, where identity is
 * the server's opaque hash of who is asking (the identity option, else GET meEndpoint), so a
 * browser shared by two users never opens the other's conversation.
 *
 * Options (script tag: data-endpoint, data-target, data-title, data-placeholder,
 * data-welcome, data-provider, data-model, data-transport, data-theme, data-markdown,
 * data-show-mock-notice, data-persist, data-autofocus, data-history-endpoint, data-delete-endpoint,
 * data-providers-endpoint, data-conversations-endpoint, data-me-endpoint, data-identity,
 * data-csrf-token, data-conversation-list, data-streams-endpoint, data-reconnect, data-conversation-page-size, data-client-conversation-ids,
 * data-delete-on-clear, data-storage-key, data-credentials,
 * data-headers='{"Authorization":"Bearer ..."}', data-extra='{"temperature":0.2}'):
 *   endpoint          '/api/stream'   POST JSON here (GET with query string for EventSource)
 *   title, placeholder, welcome       texts
 *   headers           object or function returning one (or a Promise): e.g. auth header
 *   extra             object or function: extra fields merged into the POST body
 *                     ({"reasoning": true} asks for the model's reasoning where the server allows it:
 *                     shown collapsed under "Thinking...", never mixed into the reply)
 *   provider, model   sent with each message when set
 *   transport         'auto' (fetch streaming) | 'fetch' | 'eventsource' (GET; no custom headers)
 *   markdown          false; true renders safe Markdown (links: http/https/mailto only) with a
 *                     Copy button on code blocks (the Jinja helper and the /chat page turn it on)
 *   showMockNotice    true: asks GET <api>/providers and shows a "Demo mode" badge for the mock provider
 *   conversationList  false; true shows a conversation list (header button): switch, rename, delete, New chat
 *   conversationPageSize 20          conversations per page of the list ("Load more" asks for the next)
 *   conversationsEndpoint default: endpoint with /stream -> /conversations; or false
 *   streamsEndpoint   default: endpoint with /stream -> /streams: GET <it>/<stream_id> re-attaches a reply whose
 *                     connection broke (Last-Event-ID), POST <it>/<stream_id>/stop is Stop; false: neither
 *   reconnect         true: a reply whose connection breaks shows "Reconnecting…" and is re-attached (0.5, 1, 2,
 *                     4, 4 s apart; given up with Retry after that or 30 s, or at once when the server cannot
 *                     resume it), with every chunk shown once; false: the reply fails at once; or an object
 *                     with any of {delays: [ms...], limitMs, stopWaitMs, resendDelayMs, silenceMs} (BuppleChat.reconnectDefaults)
 *   meEndpoint        default: endpoint with /stream -> /me (asked once when identity is not given); or false
 *   identity          the server's identity hash (the Jinja helper writes it); keys the stored conversation
 *   csrfToken         sent as X-CSRFToken on every POST/PATCH/DELETE; default <meta name="csrf-token" content>
 *   historyEndpoint   default: <conversations>/{id}/messages;
 *                     a template with {id}, a base path, a function(id), or false
 *   deleteEndpoint    default: <conversations>/{id}; template, function or false
 *   providersEndpoint default: endpoint with /stream -> /providers; or false
 *   conversationId    force a conversation id; persist (true) keeps the current one in localStorage
 *   clientConversationIds false; true: the widget makes new ids itself (a custom route that takes any id)
 *   storageKey        default 'bupple-chat:conversation:' + absolute endpoint URL (+ ':' + identity)
 *   credentials       fetch credentials, default 'same-origin' ('include' also sets EventSource withCredentials)
 *   theme             'light' | 'dark' | 'auto'
 *   deleteOnClear     New chat sends DELETE for the old conversation; default true without the list, false with it
 *
 * Errors are shown in plain words: 401 "Please sign in to chat.", 403 (and Flask-WTF's 400 for a
 * missing or expired CSRF token) "You are not allowed to do that (or the page expired: reload it).",
 * 404 "This conversation is not available." (the widget then forgets that id and starts afresh).
 *
 * mount() returns {send(text), retry(), stop(), clear(), openConversation(id), refreshConversations(),
 * destroy(), conversationId, conversations, state, busy, ready, element, shadowRoot}; the element gets
 * .buppleChat = that object and receives bubbling DOM events: bupple:send, bupple:status, bupple:chunk,
 * bupple:reasoning, bupple:done, bupple:error, bupple:stop, bupple:clear, bupple:history, bupple:mock, and
 * bupple:conversation ({conversation_id, created}), bupple:switch, bupple:rename, bupple:delete,
 * bupple:reconnecting ({attempt, delay, stream_id, last_event_id}), bupple:reconnected, bupple:stopping, bupple:resend
 * (event.detail = the payload).
 * Colours: CSS custom properties --bupple-accent, --bupple-accent-fg, --bupple-bg, --bupple-fg,
 * --bupple-muted, --bupple-border, --bupple-surface, --bupple-user-bg, --bupple-user-fg,
 * --bupple-assistant-bg, --bupple-assistant-fg, --bupple-error, --bupple-error-bg,
 * --bupple-code-bg, --bupple-code-fg, --bupple-radius, --bupple-height, --bupple-font.
 */
(function (root, factory) {
  'use strict';
  var api = factory(root);
  var isCommonJS = typeof module === 'object' && module !== null && typeof module.exports === 'object';
  if (isCommonJS) module.exports = api;
  if (root && (root.document || !isCommonJS)) root.BuppleChat = api;
  if (root && root.document) api._autoMount();
}(typeof globalThis !== 'undefined' ? globalThis : (typeof self !== 'undefined' ? self : this), function (root) {
  'use strict';

  var VERSION = '0.1.0';

  // ---------------------------------------------------------------------------
  // SSE parser (WHATWG "event stream interpretation"), streaming and DOM-free.
  // ---------------------------------------------------------------------------

  /**
   * createSSEParser(onEvent, options?) -> { feed(chunk), end(), reset(), lastEventId, retry }
   *
   * feed() takes Uint8Array / ArrayBuffer (decoded with a streaming UTF-8
   * TextDecoder, so a character split across reads is kept whole) or string.
   * Lines end with LF, CR or CRLF, also when the CRLF is split across feeds.
   * onEvent receives {type, data, id, lastEventId}; type is the `event:` field
   * or "message". Options: onComment(text), onRetry(ms), flushOnEnd (bool).
   *
   * end(): the stream is over. As in the spec (and in browsers' EventSource),
   * an event that was not terminated by a blank line is DISCARDED, unless
   * options.flushOnEnd is true, in which case it is dispatched.
   */
  function createSSEParser(onEvent, options) {
    if (typeof onEvent !== 'function') throw new TypeError('createSSEParser: onEvent must be a function');
    var opts = options || {};
    var decoder = null;
    var line = '';          // unterminated line carried over between feeds
    var pendingCR = false;  // last feed ended with CR: swallow a leading LF
    var started = false;    // a leading BOM was looked at
    var data = '';
    var eventType = '';
    var idBuffer = '';
    var parser = { lastEventId: '', retry: null, feed: feed, end: end, reset: reset };

    function reset() {
      decoder = null; line = ''; pendingCR = false; started = false;
      data = ''; eventType = '';
    }

    function decode(chunk, last) {
      if (typeof chunk === 'string') return chunk;
      if (chunk == null) return '';
      if (!decoder) {
        if (typeof TextDecoder === 'undefined') throw new Error('TextDecoder is not available');
        decoder = new TextDecoder('utf-8'); // strips one leading BOM itself
        started = true;
      }
      var bytes = chunk instanceof Uint8Array ? chunk
        : ArrayBuffer.isView(chunk) ? new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength)
          : new Uint8Array(chunk);
      return decoder.decode(bytes, { stream: !last });
    }

    function feed(chunk) {
      var text = decode(chunk, false);
      if (text) push(text);
      return parser;
    }

    function push(text) {
      if (!started) {
        started = true;
        if (text.charCodeAt(0) === 0xFEFF) text = text.slice(1);
      }
      var n = text.length;
      var i = 0;
      if (pendingCR) {
        pendingCR = false;
        if (n > 0 && text.charCodeAt(0) === 10) i = 1;
      }
      var nextLF = -2;
      var nextCR = -2;
      while (i < n) {
        if (nextLF !== -1 && nextLF < i) nextLF = text.indexOf('\n', i);
        if (nextCR !== -1 && nextCR < i) nextCR = text.indexOf('\r', i);
        var stop = nextLF === -1 ? nextCR : (nextCR === -1 ? nextLF : Math.min(nextLF, nextCR));
        if (stop === -1) {
          line += text.slice(i);
          return;
        }
        var current = line + text.slice(i, stop);
        line = '';
        i = stop + 1;
        if (stop === nextCR) {
          if (i < n) {
            if (text.charCodeAt(i) === 10) i++;
          } else {
            pendingCR = true;
          }
        }
        processLine(current);
      }
    }

    function processLine(l) {
      if (l === '') { dispatch(); return; }
      if (l.charCodeAt(0) === 58) { // ':' comment (heartbeat)
        if (opts.onComment) opts.onComment(l.charCodeAt(1) === 32 ? l.slice(2) : l.slice(1));
        return;
      }
      var colon = l.indexOf(':');
      var field = l;
      var value = '';
      if (colon !== -1) {
        field = l.slice(0, colon);
        value = l.slice(colon + 1);
        if (value.charCodeAt(0) === 32) value = value.slice(1);
      }
      switch (field) {
        case 'data': data += value + '\n'; break;
        case 'event': eventType = value; break;
        case 'id': if (value.indexOf('\u0000') === -1) idBuffer = value; break;
        case 'retry':
          if (/^[0-9]+$/.test(value)) {
            parser.retry = parseInt(value, 10);
            if (opts.onRetry) opts.onRetry(parser.retry);
          }
          break;
        default: break; // unknown fields are ignored
      }
    }

    function dispatch() {
      parser.lastEventId = idBuffer;
      if (data === '') { eventType = ''; return; }
      var payload = data.charCodeAt(data.length - 1) === 10 ? data.slice(0, -1) : data;
      var evt = { type: eventType || 'message', data: payload, id: idBuffer, lastEventId: idBuffer };
      data = '';
      eventType = '';
      onEvent(evt);
    }

    function end() {
      var rest = decoder ? decode(new Uint8Array(0), true) : '';
      if (rest) push(rest);
      if (opts.flushOnEnd) {
        if (line !== '') { var l = line; line = ''; processLine(l); }
        dispatch();
      }
      reset();
      return parser;
    }

    return parser;
  }

  // ---------------------------------------------------------------------------
  // Safe Markdown: a pure tokenizer (parseMarkdown) and a DOM builder
  // (renderMarkdown) that only uses createElement / createTextNode.
  // ---------------------------------------------------------------------------

  /** Returns the URL if it is an absolute http(s) or mailto URL without spaces or control characters, else null. */
  function safeUrl(url) {
    if (typeof url !== 'string') return null;
    url = url.trim();
    if (url.charAt(0) === '<' && url.charAt(url.length - 1) === '>') url = url.slice(1, -1);
    if (!url || url.length > 2048) return null;
    if (/[\s\u0000-\u001f\u007f-\u009f\u200b-\u200f\u2028\u2029\ufeff]/.test(url)) return null;
    var m = /^([a-zA-Z][a-zA-Z0-9+.-]*):/.exec(url);
    if (!m) return null;
    var scheme = m[1].toLowerCase();
    if (scheme === 'http' || scheme === 'https') return /^https?:\/\/[^\/?#]/i.test(url) ? url : null;
    if (scheme === 'mailto') return url.length > 7 ? url : null;
    return null;
  }

  var FENCE_RE = /^( {0,3})(`{3,}|~{3,})[ \t]*([^`\s]*)[^`]*$/;
  var HEADING_RE = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
  var HR_RE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
  var QUOTE_RE = /^ {0,3}> ?(.*)$/;
  var LIST_RE = /^( *)([-*+]|\d{1,9}[.)])(?:([ \t]+)(.*))?$/;
  var BLANK_RE = /^[ \t]*$/;

  function expandTabs(l) {
    return l.indexOf('\t') === -1 ? l : l.replace(/^[ \t]+/, function (ws) { return ws.replace(/\t/g, '    '); });
  }
  function indentOf(l) { var m = /^ */.exec(l); return m[0].length; }
  function isOrdered(marker) { return marker.charAt(0) >= '0' && marker.charAt(0) <= '9'; }

  function startsBlock(l) {
    return FENCE_RE.test(l) || HEADING_RE.test(l) || HR_RE.test(l) || QUOTE_RE.test(l) || isListItem(l);
  }
  function isListItem(l) {
    var m = LIST_RE.exec(l);
    return !!(m && m[1].length <= 3 && m[3] !== undefined && m[4] !== '' && !HR_RE.test(l));
  }

  /** parseMarkdown(text) -> array of block tokens (pure, DOM-free). */
  function parseMarkdown(src) {
    var text = String(src == null ? '' : src).replace(/\r\n?/g, '\n');
    return parseBlocks(text.split('\n').map(expandTabs), 0);
  }

  function parseBlocks(lines, depth) {
    var blocks = [];
    var para = null;
    var i = 0;
    var m;
    function flush() {
      if (para) {
        blocks.push({ type: 'paragraph', children: parseInline(para.join('\n')) });
        para = null;
      }
    }
    while (i < lines.length) {
      var l = lines[i];
      if (BLANK_RE.test(l)) { flush(); i++; continue; }
      if ((m = FENCE_RE.exec(l)) && !(m[2].charAt(0) === '`' && m[3].indexOf('`') !== -1)) {
        flush();
        var fence = m[2];
        var indent = m[1].length;
        var body = [];
        i++;
        while (i < lines.length) {
          var c = /^ {0,3}(`{3,}|~{3,})[ \t]*$/.exec(lines[i]);
          if (c && c[1].charAt(0) === fence.charAt(0) && c[1].length >= fence.length) { i++; break; }
          var bl = lines[i];
          var strip = Math.min(indent, indentOf(bl));
          body.push(bl.slice(strip));
          i++;
        }
        blocks.push({ type: 'code', lang: m[3].replace(/[^\w+#.-]/g, ''), text: body.join('\n') });
        continue;
      }
      if ((m = HEADING_RE.exec(l))) {
        flush();
        blocks.push({ type: 'heading', level: m[1].length, children: parseInline(m[2] || '') });
        i++;
        continue;
      }
      if (HR_RE.test(l)) { flush(); blocks.push({ type: 'hr' }); i++; continue; }
      if (QUOTE_RE.test(l) && depth < 8) {
        flush();
        var inner = [];
        while (i < lines.length && (m = QUOTE_RE.exec(lines[i]))) { inner.push(m[1]); i++; }
        blocks.push({ type: 'blockquote', children: parseBlocks(inner, depth + 1) });
        continue;
      }
      if (isListItem(l) && depth < 8) {
        flush();
        var res = parseList(lines, i, depth);
        blocks.push(res.block);
        i = res.next;
        continue;
      }
      if (!para) para = [];
      para.push(l.replace(/^ +/, ''));
      i++;
    }
    flush();
    return blocks;
  }

  function parseList(lines, i, depth) {
    var first = LIST_RE.exec(lines[i]);
    var ordered = isOrdered(first[2]);
    var block = { type: 'list', ordered: ordered, start: ordered ? parseInt(first[2], 10) : 1, items: [] };
    var baseIndent = first[1].length;
    while (i < lines.length) {
      var m = LIST_RE.exec(lines[i]);
      if (!(m && isListItem(lines[i]) && isOrdered(m[2]) === ordered && Math.abs(m[1].length - baseIndent) <= 1)) break;
      var contentIndent = m[1].length + m[2].length + Math.min(m[3].length, 4);
      var itemLines = [m[4]];
      i++;
      while (i < lines.length) {
        var l = lines[i];
        if (BLANK_RE.test(l)) {
          var j = i;
          while (j < lines.length && BLANK_RE.test(lines[j])) j++;
          if (j < lines.length && indentOf(lines[j]) >= contentIndent) {
            for (; i < j; i++) itemLines.push('');
            continue;
          }
          break;
        }
        var ind = indentOf(l);
        if (ind >= contentIndent) { itemLines.push(l.slice(contentIndent)); i++; continue; }
        if (isListItem(l) && ind > baseIndent + 1) { itemLines.push(l.slice(Math.min(ind, contentIndent))); i++; continue; }
        if (!startsBlock(l)) { itemLines.push(l.replace(/^ +/, '')); i++; continue; } // lazy continuation
        break;
      }
      block.items.push(parseBlocks(itemLines, depth + 1));
      // blank lines between two items of the same list
      var k = i;
      while (k < lines.length && BLANK_RE.test(lines[k])) k++;
      if (k > i && k < lines.length) {
        var n = LIST_RE.exec(lines[k]);
        if (n && isListItem(lines[k]) && isOrdered(n[2]) === ordered && Math.abs(n[1].length - baseIndent) <= 1) { i = k; continue; }
      }
    }
    return { block: block, next: i };
  }

  var ESCAPABLE = '!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~';
  function isSpace(ch) { return ch === undefined || ch === '' || /\s/.test(ch); }
  function isAlnum(ch) { return !!ch && /[A-Za-z0-9\u00C0-\uFFFF]/.test(ch); }

  /** parseInline(text) -> array of inline tokens: text, br, code, strong, em, del, link. */
  function parseInline(s, depth) {
    depth = depth || 0;
    var out = [];
    var text = '';
    var i = 0;
    var n = s.length;
    var failed = {}; // "no closer for this delimiter at or after index X"
    function flush() { if (text) { out.push({ type: 'text', text: text }); text = ''; } }
    function runLength(at, ch) { var k = at; while (k < n && s.charAt(k) === ch) k++; return k - at; }
    function findCloser(from, ch, len) {
      var key = ch + len;
      var code = ch === '`';
      if (failed[key] !== undefined && from >= failed[key]) return -1;
      var j = from;
      while (j < n) {
        j = s.indexOf(ch, j);
        if (j === -1) break;
        var r = runLength(j, ch);
        if (r === len && (code || (!isSpace(s.charAt(j - 1)) && (ch !== '_' || !isAlnum(s.charAt(j + r)))))) return j;
        j += r;
      }
      failed[key] = failed[key] === undefined ? from : Math.min(failed[key], from);
      return -1;
    }
    while (i < n) {
      var ch = s.charAt(i);
      var m;
      if (ch === '\\' && i + 1 < n) {
        var nx = s.charAt(i + 1);
        if (ESCAPABLE.indexOf(nx) !== -1) { text += nx; i += 2; continue; }
        if (nx === '\n') { flush(); out.push({ type: 'br' }); i += 2; continue; }
      }
      if (ch === '\n') {
        text = text.replace(/ +$/, '');
        flush();
        out.push({ type: 'br' });
        i++;
        while (s.charAt(i) === ' ') i++;
        continue;
      }
      if (ch === '`') {
        var run = runLength(i, '`');
        var close = findCloser(i + run, '`', run);
        if (close !== -1 && close > i + run) {
          var code = s.slice(i + run, close).replace(/\n/g, ' ');
          if (code.length > 2 && code.charAt(0) === ' ' && code.charAt(code.length - 1) === ' ' && /[^ ]/.test(code)) code = code.slice(1, -1);
          flush();
          out.push({ type: 'code', text: code });
          i = close + run;
          continue;
        }
        text += s.slice(i, i + run);
        i += run;
        continue;
      }
      if ((ch === '*' || ch === '_' || ch === '~') && depth < 16) {
        var len = runLength(i, ch);
        var opens = !isSpace(s.charAt(i + len)) && (ch !== '_' || !isAlnum(s.charAt(i - 1)));
        var okLen = ch === '~' ? len === 2 : len <= 3;
        if (opens && okLen) {
          var closer = findCloser(i + len + 1, ch, len);
          if (closer !== -1) {
            var inner = parseInline(s.slice(i + len, closer), depth + 1);
            var node;
            if (ch === '~') node = { type: 'del', children: inner };
            else if (len === 1) node = { type: 'em', children: inner };
            else if (len === 2) node = { type: 'strong', children: inner };
            else node = { type: 'strong', children: [{ type: 'em', children: inner }] };
            flush();
            out.push(node);
            i = closer + len;
            continue;
          }
        }
        text += s.slice(i, i + len);
        i += len;
        continue;
      }
      if (ch === '[' || (ch === '!' && s.charAt(i + 1) === '[')) {
        var link = parseLink(s, ch === '!' ? i + 1 : i);
        if (link) {
          flush();
          var label = ch === '!' ? [{ type: 'text', text: s.slice(link.labelStart, link.labelEnd) || link.url }]
            : stripLinks(parseInline(s.slice(link.labelStart, link.labelEnd), depth + 1));
          var href = safeUrl(link.url);
          if (href) out.push({ type: 'link', href: href, children: label });
          else for (var q = 0; q < label.length; q++) out.push(label[q]);
          i = link.end;
          continue;
        }
      }
      if (ch === '<' && (m = /^<((?:https?:\/\/|mailto:)[^\s<>]+)>/i.exec(s.slice(i, i + 2100)))) {
        var auto = safeUrl(m[1]);
        flush();
        out.push(auto ? { type: 'link', href: auto, children: [{ type: 'text', text: m[1] }] } : { type: 'text', text: m[0] });
        i += m[0].length;
        continue;
      }
      if ((ch === 'h' || ch === 'H') && s.substr(i, 4).toLowerCase() === 'http' && !isAlnum(s.charAt(i - 1)) && (m = /^https?:\/\/[^\s<>"]+/i.exec(s.slice(i, i + 2100)))) {
        var url = trimUrl(m[0]);
        var bare = safeUrl(url);
        if (bare) {
          flush();
          out.push({ type: 'link', href: bare, children: [{ type: 'text', text: url }] });
          i += url.length;
          continue;
        }
      }
      text += ch;
      i++;
    }
    flush();
    return mergeText(out);
  }

  function mergeText(nodes) {
    var out = [];
    for (var i = 0; i < nodes.length; i++) {
      var prev = out[out.length - 1];
      if (prev && prev.type === 'text' && nodes[i].type === 'text') out[out.length - 1] = { type: 'text', text: prev.text + nodes[i].text };
      else out.push(nodes[i]);
    }
    return out;
  }

  function trimUrl(url) {
    for (;;) {
      var last = url.charAt(url.length - 1);
      if (/[.,;:!?'"*_~]/.test(last)) { url = url.slice(0, -1); continue; }
      if (last === ')' && (url.split('(').length - 1) < (url.split(')').length - 1)) { url = url.slice(0, -1); continue; }
      return url;
    }
  }

  function parseLink(s, at) {
    // [label](url "title") with nested brackets in the label and balanced parentheses in the url
    var depth = 0;
    var j = at;
    var limit = Math.min(s.length, at + 1000);
    for (; j < limit; j++) {
      var c = s.charAt(j);
      if (c === '\\') { j++; continue; }
      if (c === '[') depth++;
      else if (c === ']') { depth--; if (depth === 0) break; }
      else if (c === '\n' && s.charAt(j + 1) === '\n') return null;
    }
    if (depth !== 0 || j >= limit || s.charAt(j + 1) !== '(') return null;
    var labelEnd = j;
    var k = j + 2;
    var paren = 0;
    var ulimit = Math.min(s.length, k + 2100);
    var urlStart = k;
    while (k < ulimit && s.charAt(k) === ' ') { k++; urlStart = k; }
    var url;
    if (s.charAt(k) === '<') {
      var gt = s.indexOf('>', k);
      if (gt === -1 || gt >= ulimit) return null;
      url = s.slice(k + 1, gt);
      k = gt + 1;
    } else {
      for (; k < ulimit; k++) {
        var d = s.charAt(k);
        if (d === '(') paren++;
        else if (d === ')') { if (paren === 0) break; paren--; }
        else if (/\s/.test(d)) break;
      }
      url = s.slice(urlStart, k);
    }
    // optional title
    var t = /^\s+(?:"[^"]*"|'[^']*'|\([^)]*\))?\s*/.exec(s.slice(k, ulimit));
    if (t) k += t[0].length;
    if (s.charAt(k) !== ')') return null;
    return { labelStart: at + 1, labelEnd: labelEnd, url: url, end: k + 1 };
  }

  function stripLinks(nodes) {
    var out = [];
    for (var i = 0; i < nodes.length; i++) {
      var node = nodes[i];
      if (node.type === 'link') out.push.apply(out, stripLinks(node.children));
      else if (node.children) out.push({ type: node.type, children: stripLinks(node.children) });
      else out.push(node);
    }
    return out;
  }

  /**
   * renderMarkdown(textOrBlocks, doc) -> DocumentFragment built with DOM calls only.
   * `doc` defaults to the global document; tests can pass a tiny fake.
   */
  function renderMarkdown(src, doc) {
    doc = doc || root.document;
    var blocks = typeof src === 'string' || src == null ? parseMarkdown(src) : src;
    var frag = doc.createDocumentFragment();
    appendBlocks(frag, blocks, doc);
    return frag;
  }

  function el(doc, tag, cls) {
    var e = doc.createElement(tag);
    if (cls) e.setAttribute('class', cls);
    return e;
  }

  function appendBlocks(parent, blocks, doc) {
    for (var i = 0; i < blocks.length; i++) {
      var b = blocks[i];
      var e;
      switch (b.type) {
        case 'paragraph':
          e = el(doc, 'p');
          appendInlines(e, b.children, doc);
          break;
        case 'heading':
          e = el(doc, 'p', 'md-h md-h' + b.level);
          e.setAttribute('role', 'heading');
          e.setAttribute('aria-level', String(Math.min(6, b.level + 2)));
          appendInlines(e, b.children, doc);
          break;
        case 'code':
          e = el(doc, 'pre', 'md-pre');
          var code = el(doc, 'code', b.lang ? 'language-' + b.lang : null);
          code.appendChild(doc.createTextNode(b.text));
          e.appendChild(code);
          if (b.lang) e.setAttribute('data-lang', b.lang);
          break;
        case 'hr':
          e = el(doc, 'hr');
          break;
        case 'blockquote':
          e = el(doc, 'blockquote');
          appendBlocks(e, b.children, doc);
          break;
        case 'list':
          e = el(doc, b.ordered ? 'ol' : 'ul');
          if (b.ordered && b.start !== 1) e.setAttribute('start', String(b.start));
          for (var j = 0; j < b.items.length; j++) {
            var li = el(doc, 'li');
            var item = b.items[j];
            if (item.length && item[0].type === 'paragraph') {
              appendInlines(li, item[0].children, doc);
              appendBlocks(li, item.slice(1), doc);
            } else {
              appendBlocks(li, item, doc);
            }
            e.appendChild(li);
          }
          break;
        default:
          continue;
      }
      parent.appendChild(e);
    }
  }

  function appendInlines(parent, nodes, doc) {
    for (var i = 0; i < nodes.length; i++) {
      var node = nodes[i];
      var e;
      switch (node.type) {
        case 'text': parent.appendChild(doc.createTextNode(node.text)); continue;
        case 'br': parent.appendChild(el(doc, 'br')); continue;
        case 'code':
          e = el(doc, 'code');
          e.appendChild(doc.createTextNode(node.text));
          break;
        case 'strong': case 'em': case 'del':
          e = el(doc, node.type);
          appendInlines(e, node.children, doc);
          break;
        case 'link':
          var href = safeUrl(node.href); // checked again: tokens may come from elsewhere
          if (!href) { appendInlines(parent, node.children, doc); continue; }
          e = el(doc, 'a');
          e.setAttribute('href', href);
          e.setAttribute('rel', 'noopener noreferrer');
          e.setAttribute('target', '_blank');
          appendInlines(e, node.children, doc);
          break;
        default: continue;
      }
      parent.appendChild(e);
    }
  }

  // ---------------------------------------------------------------------------
  // URL helpers (pure)
  // ---------------------------------------------------------------------------

  function splitQuery(url) {
    var q = url.search(/[?#]/);
    return q === -1 ? [url, ''] : [url.slice(0, q), url.slice(q)];
  }
  /** '/api/stream' + '/providers' -> '/api/providers'; null when the endpoint does not end with /stream. */
  function siblingUrl(endpoint, suffix) {
    var base = splitQuery(String(endpoint || ''))[0];
    if (!/\/stream\/?$/.test(base)) return null;
    return base.replace(/\/stream\/?$/, suffix);
  }
  function fromTemplate(tpl, id) {
    if (typeof tpl === 'function') return tpl(id);
    var enc = encodeURIComponent(id);
    if (tpl.indexOf('{id}') !== -1) return tpl.split('{id}').join(enc);
    if (tpl.indexOf(':id') !== -1) return tpl.split(':id').join(enc);
    return tpl.replace(/\/+$/, '') + '/' + enc + '/messages';
  }
  /** History URL: option historyEndpoint (template with {id}, base path, or function), else derived from the endpoint. */
  function historyUrl(opts, id) {
    if (!id || opts.historyEndpoint === false) return null;
    if (opts.historyEndpoint) return fromTemplate(opts.historyEndpoint, id);
    var one = conversationUrl(opts, id);
    return one ? one + '/messages' : null;
  }
  function deleteUrl(opts, id) {
    if (!id || opts.deleteEndpoint === false) return null;
    if (opts.deleteEndpoint) {
      if (typeof opts.deleteEndpoint === 'function') return opts.deleteEndpoint(id);
      var enc = encodeURIComponent(id);
      var tpl = opts.deleteEndpoint;
      return tpl.indexOf('{id}') !== -1 ? tpl.split('{id}').join(enc) : tpl.replace(/\/+$/, '') + '/' + enc;
    }
    if (opts.historyEndpoint) {
      var h = historyUrl(opts, id);
      return h ? splitQuery(h)[0].replace(/\/messages\/?$/, '') : null;
    }
    return conversationUrl(opts, id);
  }
  /** The conversation list: option conversationsEndpoint, else endpoint with /stream -> /conversations. */
  function conversationsUrl(opts) {
    if (opts.conversationsEndpoint === false) return null;
    if (opts.conversationsEndpoint) return splitQuery(String(opts.conversationsEndpoint))[0].replace(/\/+$/, '');
    return siblingUrl(opts.endpoint, '/conversations');
  }
  /** One conversation (GET, PATCH, DELETE): the list URL + '/' + id. */
  function conversationUrl(opts, id) {
    var base = conversationsUrl(opts);
    return base && id ? base + '/' + encodeURIComponent(id) : null;
  }
  /** Who is asking (the identity hash that keys the stored conversation): meEndpoint, else /stream -> /me. */
  function meUrl(opts) {
    if (opts.meEndpoint === false) return null;
    return opts.meEndpoint || siblingUrl(opts.endpoint, '/me');
  }
  /** url + ?k=v&... for the set values. */
  function withQuery(url, params) {
    var parts = [];
    for (var k in params) if (params[k] != null && params[k] !== '') parts.push(encodeURIComponent(k) + '=' + encodeURIComponent(String(params[k])));
    if (!parts.length) return url;
    return url + (url.indexOf('?') === -1 ? '?' : '&') + parts.join('&');
  }
  /** A reply's stream (GET re-attaches, + '/stop' POST stops it): streamsEndpoint, else /stream -> /streams. */
  function streamUrl(opts, streamId) {
    if (opts.streamsEndpoint === false || !streamId) return null;
    var base = opts.streamsEndpoint ? splitQuery(String(opts.streamsEndpoint))[0].replace(/\/+$/, '') : siblingUrl(opts.endpoint, '/streams');
    return base ? base + '/' + encodeURIComponent(streamId) : null;
  }
  function providersUrl(opts) {
    if (opts.providersEndpoint === false) return null;
    return opts.providersEndpoint || siblingUrl(opts.endpoint, '/providers');
  }
  /** GET URL for the EventSource transport: endpoint + query (message, conversation_id, provider, model, extra). */
  function eventSourceUrl(endpoint, fields) {
    var parts = [];
    for (var k in fields) {
      if (!Object.prototype.hasOwnProperty.call(fields, k)) continue;
      var v = fields[k];
      if (v === undefined || v === null) continue;
      if (typeof v === 'object') v = JSON.stringify(v);
      parts.push(encodeURIComponent(k) + '=' + encodeURIComponent(String(v)));
    }
    if (!parts.length) return endpoint;
    var hash = '';
    var h = endpoint.indexOf('#');
    if (h !== -1) { hash = endpoint.slice(h); endpoint = endpoint.slice(0, h); }
    var sep = endpoint.indexOf('?') === -1 ? '?' : (/[?&]$/.test(endpoint) ? '' : '&');
    return endpoint + sep + parts.join('&') + hash;
  }
  var SIGN_IN = 'Please sign in to chat.';
  var FORBIDDEN = 'You are not allowed to do that (or the page expired: reload it).';
  var NOT_AVAILABLE = 'This conversation is not available.';

  /** {code, message} from an error body ({"error":{"code","message"}}, {"error": "text"}, {"message"}) or null. */
  function errorBody(bodyText) {
    try {
      var json = JSON.parse(bodyText);
      var e = json && json.error;
      if (e && typeof e === 'object') return { message: e.message || '', code: e.code || '', retryAfter: e.retry_after };
      if (typeof e === 'string') return { message: e, code: json.code || '' };
      if (json && typeof json.message === 'string') return { message: json.message, code: '' };
    } catch (_) { /* not JSON */ }
    return null;
  }

  /**
   * Readable message from a non-2xx response body. 401, 403 (and Flask-WTF's 400 for a missing or
   * expired CSRF token) and a conversation's 404 get the widget's own words; context 'conversation'
   * says the URL was a conversation's, so its 404 means "not yours or gone". A 429 (a limit) carries
   * retry_after from the Retry-After header or the body.
   */
  function describeHttpError(status, bodyText, context, retryAfterHeader) {
    var body = errorBody(bodyText) || { message: '', code: '' };
    var message = body.message;
    var code = body.code || 'http_' + status;
    var retryable = true;
    if (status === 401) { message = SIGN_IN; code = body.code || 'unauthorized'; retryable = false; }
    else if (status === 403 || (status === 400 && /csrf/i.test(message))) {
      message = FORBIDDEN; code = status === 403 ? (body.code || 'forbidden') : 'csrf_failed'; retryable = false;
    } else if (status === 404 && (code === 'conversation_not_found' || context === 'conversation')) {
      message = NOT_AVAILABLE; code = 'conversation_not_found';
    }
    if (!message) {
      if (status === 404) message = 'The chat endpoint was not found (HTTP 404).';
      else if (status === 429) message = 'Too many requests. Please wait a moment and try again.';
      else if (status >= 500) message = 'The chat server had a problem (HTTP ' + status + '). Please try again.';
      else message = 'The request failed (HTTP ' + status + ').';
    }
    var out = { type: 'error', error: String(message), code: String(code), status: status, done: true };
    if (!retryable) out.retryable = false;
    var retryAfter = status === 429 ? parseFloat(retryAfterHeader) || body.retryAfter || null : null; // a limit's Retry-After
    if (retryAfter) out.retry_after = retryAfter;
    return out;
  }

  function uuid() {
    var c = root.crypto;
    if (c && typeof c.randomUUID === 'function') {
      try { return c.randomUUID(); } catch (_) { /* insecure context */ }
    }
    var b = new Uint8Array(16);
    if (c && typeof c.getRandomValues === 'function') c.getRandomValues(b);
    else for (var i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    var hex = [];
    for (var j = 0; j < 16; j++) hex.push((b[j] + 0x100).toString(16).slice(1));
    return hex.slice(0, 4).join('') + '-' + hex.slice(4, 6).join('') + '-' + hex.slice(6, 8).join('') + '-' + hex.slice(8, 10).join('') + '-' + hex.slice(10).join('');
  }

  // ---------------------------------------------------------------------------
  // Behind a login, DOM-free: CSRF header, who is asking, the stored conversation's key,
  // JSON requests that never throw, and the conversation list's state.
  // ---------------------------------------------------------------------------

  var WRITE_METHODS = /^(POST|PUT|PATCH|DELETE)$/i;

  /** The CSRF token: option csrfToken, else <meta name="csrf-token" content="..."> (Flask-WTF's convention). */
  function csrfToken(opts, doc) {
    if (opts.csrfToken) return String(opts.csrfToken);
    var meta = doc && typeof doc.querySelector === 'function' ? doc.querySelector('meta[name="csrf-token"]') : null;
    var value = meta && meta.getAttribute('content');
    return value || null;
  }
  /** Adds X-CSRFToken to the headers of a write (POST, PUT, PATCH, DELETE) unless the caller set one. */
  function withCsrf(headers, method, token) {
    if (!token || !WRITE_METHODS.test(method || 'GET')) return headers;
    for (var k in headers) if (k.toLowerCase() === 'x-csrftoken') return headers;
    headers['X-CSRFToken'] = token;
    return headers;
  }

  /**
   * Where the current conversation id is kept: 'bupple-chat:conversation:' + endpoint URL + ':' + identity,
   * so that one browser shared by two users never opens the other's conversation. Without an
   * identity (a server without /me), the key without it (as before identities existed).
   */
  function storageKeyFor(opts, identity) {
    var base = opts.storageKey || ('bupple-chat:conversation:' + splitQuery(absoluteUrl(opts.endpoint))[0]);
    return identity ? base + ':' + identity : base;
  }

  /**
   * fetchJSON(request, url, init, context) -> Promise of {ok, status, data, error}; never rejects.
   * error is describeHttpError's payload (or a network error); an aborted request has aborted: true.
   */
  function fetchJSON(request, url, init, context) {
    return Promise.resolve().then(function () { return request(url, init || {}); }).then(function (res) {
      return res.text().then(function (text) {
        if (!res.ok) return { ok: false, status: res.status, data: null, error: describeHttpError(res.status, text, context) };
        try { return { ok: true, status: res.status, data: text ? JSON.parse(text) : null, error: null }; }
        catch (_) { return { ok: false, status: res.status, data: null, error: { type: 'error', error: 'The server did not answer with JSON.', code: 'bad_response' } }; }
      });
    }, function (err) {
      var aborted = !!(err && err.name === 'AbortError');
      return { ok: false, status: 0, data: null, aborted: aborted,
        error: aborted ? null : { type: 'error', error: 'Network error: could not reach the chat server.', code: 'network_error' } };
    });
  }

  /**
   * resolveIdentity(opts, request) -> Promise of {identity, error, known}.
   * The identity option (the Jinja helper writes it), else GET meEndpoint. known is false when
   * there is no /me to ask (an older or custom server): the widget then keys storage without one.
   * A 401 or any other failure: identity null, known true, so no stored conversation is opened.
   */
  function resolveIdentity(opts, request) {
    if (opts.identity) return Promise.resolve({ identity: String(opts.identity), error: null, known: true });
    var url = meUrl(opts);
    if (!url || typeof request !== 'function') return Promise.resolve({ identity: null, error: null, known: false });
    return fetchJSON(request, url, { cache: 'no-store' }).then(function (r) {
      if (r.ok && r.data && r.data.identity) return { identity: String(r.data.identity), error: null, known: true };
      if (r.status === 404) return { identity: null, error: null, known: false };
      return { identity: null, error: r.error, known: true };
    });
  }

  function validConversation(c) { return !!(c && typeof c === 'object' && typeof c.id === 'string' && c.id); }
  /** The list after a later page: appended, without ids already shown. */
  function mergeConversations(items, page) {
    var seen = {};
    var out = items.slice();
    items.forEach(function (c) { seen[c.id] = true; });
    page.forEach(function (c) { if (validConversation(c) && !seen[c.id]) { seen[c.id] = true; out.push(c); } });
    return out;
  }
  /** What the list shows for a conversation's title. */
  function conversationTitle(c) {
    var t = c && typeof c.title === 'string' ? c.title.replace(/\s+/g, ' ').trim() : '';
    return t || 'New conversation';
  }
  /** '14:05' today, else 'Nov 30' (or with the year when not this year). */
  function conversationWhen(iso, now) {
    var d = new Date(iso);
    if (!iso || isNaN(d.getTime())) return '';
    now = now || new Date();
    var sameDay = d.toDateString() === now.toDateString();
    try {
      if (sameDay) return d.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
      var o = { month: 'short', day: 'numeric' };
      if (d.getFullYear() !== now.getFullYear()) o.year = 'numeric';
      return d.toLocaleDateString(undefined, o);
    } catch (_) { return d.toISOString().slice(0, 10); }
  }

  /**
   * createConversationList(opts, request, onChange) -> the caller's conversations, newest first:
   *   {items, nextCursor, loading, loaded, error, refresh(), loadMore(), rename(id, title), remove(id), drop(id), find(id)}
   * refresh() loads the first page again, loadMore() the next (next_cursor); rename and remove
   * resolve with {ok, error}. onChange(list) is called after every change, for the view to draw it.
   */
  function createConversationList(opts, request, onChange) {
    var seq = 0;
    var kept = null; // a conversation just made here, which the server may not list yet
    var list = { items: [], nextCursor: null, loading: false, loaded: false, error: null };
    function changed() { if (onChange) onChange(list); }
    function load(cursor) {
      var mine = ++seq; // a refresh wins over an older page still on its way
      list.loading = true;
      changed();
      var url = withQuery(conversationsUrl(opts), { limit: opts.conversationPageSize, cursor: cursor });
      return fetchJSON(request, url, { cache: 'no-store' }).then(function (r) {
        if (mine !== seq) return list;
        list.loading = false;
        list.error = r.ok ? null : r.error;
        if (r.ok) {
          var page = r.data && Array.isArray(r.data.conversations) ? r.data.conversations : [];
          if (kept && page.some(function (c) { return c && c.id === kept.id; })) kept = null; // listed now
          list.items = mergeConversations(cursor ? list.items : (kept ? [kept] : []), page);
          list.nextCursor = (r.data && r.data.next_cursor) || null;
          list.loaded = true;
        }
        changed();
        return list;
      });
    }
    list.refresh = function () { return load(null); };
    /** Show a conversation the widget just made until the server lists it (its row is written beside the stream). */
    list.keep = function (conversation) {
      kept = conversation;
      if (!list.find(conversation.id)) { list.items = [conversation].concat(list.items); changed(); }
    };
    list.loadMore = function () { return list.nextCursor && !list.loading ? load(list.nextCursor) : Promise.resolve(list); };
    list.find = function (id) { for (var i = 0; i < list.items.length; i++) if (list.items[i].id === id) return list.items[i]; return null; };
    list.drop = function (id) {
      if (kept && kept.id === id) kept = null;
      var before = list.items.length;
      list.items = list.items.filter(function (c) { return c.id !== id; });
      if (list.items.length !== before) changed();
    };
    list.rename = function (id, title) { return renameConversation(list, opts, request, id, title, changed); };
    list.remove = function (id) {
      return fetchJSON(request, conversationUrl(opts, id), { method: 'DELETE' }, 'conversation').then(function (r) {
        if (r.ok || (r.error && r.error.code === 'conversation_not_found')) list.drop(id); // gone either way
        return { ok: r.ok, error: r.error };
      });
    };
    return list;
  }

  /** PATCH the title (1..200 characters after trimming); the list shows the server's answer. */
  function renameConversation(list, opts, request, id, title, changed) {
    title = String(title == null ? '' : title).trim();
    if (!title || title.length > 200) {
      return Promise.resolve({ ok: false, error: { type: 'error', error: 'A title has 1 to 200 characters.', code: 'invalid_title' } });
    }
    var init = { method: 'PATCH', body: JSON.stringify({ title: title }) };
    return fetchJSON(request, conversationUrl(opts, id), init, 'conversation').then(function (r) {
      if (r.ok && validConversation(r.data)) {
        list.items = list.items.map(function (c) { return c.id === id ? r.data : c; });
        changed();
      } else if (r.error && r.error.code === 'conversation_not_found') {
        list.drop(id);
      }
      return { ok: r.ok, error: r.error };
    });
  }

  /** Copy text: the async clipboard API, else a hidden textarea and execCommand('copy'). Resolves true or false. */
  function copyText(text, env) {
    env = env || root;
    var clip = env.navigator && env.navigator.clipboard;
    var fallback = function () { return copyWithSelection(text, env.document); };
    if (clip && typeof clip.writeText === 'function') {
      try { return clip.writeText(text).then(function () { return true; }, fallback); } catch (_) { /* fall back */ }
    }
    return Promise.resolve().then(fallback);
  }
  function copyWithSelection(text, doc) {
    if (!doc || !doc.body || typeof doc.execCommand !== 'function') return false;
    var area = doc.createElement('textarea');
    area.value = text;
    area.setAttribute('readonly', '');
    area.setAttribute('style', 'position:fixed;top:0;left:0;opacity:0;pointer-events:none');
    doc.body.appendChild(area);
    var ok = false;
    try { area.select(); ok = !!doc.execCommand('copy'); } catch (_) { ok = false; }
    doc.body.removeChild(area);
    return ok;
  }
  /** A Copy button on each code block in `container`; its label is CSS (data-label), so textContent stays the reply. */
  function addCopyButtons(container, doc, env) {
    var pres = container.querySelectorAll('pre');
    for (var i = 0; i < pres.length; i++) {
      if (pres[i].querySelector('button.copy')) continue;
      pres[i].appendChild(copyButton(pres[i], doc, env));
    }
  }
  function copyButton(pre, doc, env) {
    var btn = h(doc, 'button', { type: 'button', 'class': 'copy', 'data-testid': 'copy-code', 'data-label': 'Copy', 'aria-label': 'Copy code' });
    btn.addEventListener('click', function () {
      var code = pre.querySelector('code');
      var scope = typeof btn.getRootNode === 'function' ? btn.getRootNode() : doc;
      var focused = scope && scope.activeElement === btn; // the fallback's textarea takes the focus
      copyText(code ? code.textContent : '', env).then(function (ok) {
        btn.setAttribute('data-label', ok ? 'Copied' : 'Copy failed');
        btn.setAttribute('aria-label', ok ? 'Code copied' : 'Copy failed');
        if (focused && typeof btn.focus === 'function') try { btn.focus(); } catch (_) { /* ignore */ }
        setTimeout(function () { btn.setAttribute('data-label', 'Copy'); btn.setAttribute('aria-label', 'Copy code'); }, 1500);
      });
    });
    return btn;
  }

  // ---------------------------------------------------------------------------
  // Streaming, DOM-free: the reply being built and the two transports that feed it.
  // mount() wires them to the view; Node tests drive them with a fake fetch.
  // ---------------------------------------------------------------------------

  /** The n of an event id: '<stream_id>:<n>' (resume on) or '<n>' (resume off); null for none or another form. */
  function eventSeq(id) {
    var m = typeof id === 'string' ? /^(?:[^:]*:)?(\d+)$/.exec(id) : null;
    return m ? parseInt(m[1], 10) : null;
  }

  /**
   * createReply(text, listener?) -> reply
   *   reply.handle(payload, sseType, id?) applies one parsed server event (status | chunk | reasoning | completion |
   *                                   error); an event whose id is at or below the last one applied is a replay
   *                                   (after a re-attach) and is skipped, so no chunk is ever shown twice
   *   reply.fail(err)                 ends it as 'error' ({error, code, ...}): transport failures
   *   reply.stop()                    ends it as 'stopped' at once, keeping the partial text, and aborts the transport
   *   reply.requestStop()             the user's Stop: the transport asks the server to stop (reply.onStop) and the
   *                                   server's completion (finish_reason "stopped") ends it; a second Stop, or a
   *                                   transport that cannot ask, ends it at once
   *   reply.promise                   resolves once with {status: 'done'|'error'|'stopped', content, payload}
   *   reply.onClose(result)           set by the transport: called first when the reply ends
   *   reply.learnConversation(id)     the server said which conversation this is (status event, header, completion)
   *   reply.learnStream(id)           the server said which stream this is (status event, X-Bupple-Stream-Id)
   * listener(name, detail, reply) is told 'conversation' ({conversation_id}, once per new id), 'status', 'chunk',
   * 'completion' (before the end), 'end' (the reply is final), then 'done' | 'error' | 'stop', so that DOM
   * listeners of those see the final view. Transports also tell it 'reconnecting' ({attempt, delay}),
   * 'reconnected', 'stopping' and 'resend' (a server shutdown: the question is asked again, the text starts over).
   */
  function createReply(text, listener) {
    var notify = listener || function () {};
    var resolve;
    var reply = {
      text: text,
      content: '',
      reasoning: '',    // the model's thinking, when the server streams it: never part of content
      declined: null,   // {reason, stage} when the provider refused or blocked the reply
      tokens: 0,
      chunks: 0,
      gotEvent: false,  // decides between "could not connect" and "connection lost"
      finished: false,
      result: null,
      payload: null,    // the completion or error payload
      conversationId: null,
      streamId: null,   // the server's id of this reply's stream: where to re-attach and what to stop
      resumable: null,  // the status event's `resumable`: false says a lost connection cannot be re-attached
      lastEventId: '',  // the id of the last event applied (Last-Event-ID when re-attaching)
      lastSeq: -1,      // its n
      stopping: false,  // the server was asked to stop; its stopped completion (or the abort) ends the reply
      resent: false,    // asked again once after a server shutdown
      onClose: null,
      onStop: null,           // set by a transport that can ask the server to stop
      onServerShutdown: null, // set by a transport that can ask the question again
      promise: new Promise(function (r) { resolve = r; }),
      handle: handle,
      fail: fail,
      stop: stop,
      requestStop: requestStop,
      notify: function (name, detail) { if (!reply.finished) notify(name, detail, reply); },
      learnConversation: learnConversation,
      learnStream: function (id) { if (typeof id === 'string' && id && !reply.streamId) reply.streamId = id; }
    };

    function learnConversation(id) {
      if (reply.finished || typeof id !== 'string' || !id || id === reply.conversationId) return;
      reply.conversationId = id;
      notify('conversation', { conversation_id: id }, reply);
    }
    /** true for an event shown already: its n is at or below the last applied (a re-attach replays from there). */
    function isReplay(id) {
      var seq = eventSeq(id);
      if (seq === null) return false;
      if (seq <= reply.lastSeq) return true;
      reply.lastSeq = seq;
      reply.lastEventId = id;
      return false;
    }

    function handle(payload, sseType, id) {
      if (reply.finished || !payload || typeof payload !== 'object' || isReplay(id)) return;
      var type = payload.type || (sseType !== 'message' ? sseType : null);
      reply.gotEvent = true;
      if (type === 'status') {
        learnConversation(payload.conversation_id);
        reply.learnStream(payload.stream_id);
        if (typeof payload.resumable === 'boolean') reply.resumable = payload.resumable;
        notify('status', payload, reply);
      } else if (type === 'chunk') {
        if (typeof payload.content === 'string') reply.content += payload.content;
        reply.chunks++;
        reply.tokens = typeof payload.tokens === 'number' ? payload.tokens : reply.chunks;
        notify('chunk', payload, reply);
      } else if (type === 'reasoning') {
        if (typeof payload.content === 'string') reply.reasoning += payload.content;
        notify('reasoning', payload, reply);
      } else if (type === 'completion') {
        complete(payload);
      } else if (type === 'error') {
        var err = { type: 'error', error: payload.error || payload.message || 'The reply failed.', code: payload.code || 'error', done: true };
        for (var k in payload) if (!(k in err)) err[k] = payload[k];
        if (!resendAfterShutdown(err)) fail(err);
      }
    }
    function complete(payload) {
      if (payload.declined && typeof payload.declined === 'object') reply.declined = payload.declined;
      if (typeof payload.content === 'string' && payload.content) reply.content += payload.content;
      var usage = payload.usage || {};
      if (typeof usage.output_tokens === 'number') reply.tokens = usage.output_tokens;
      learnConversation(payload.conversation_id);
      notify('completion', payload, reply);
      if (payload.finish_reason === 'stopped' || payload.stopped === true) end('stopped', payload, 'stop', { content: reply.content, payload: payload });
      else end('done', payload, 'done', payload);
    }
    /**
     * The server was shutting down (a deploy): the reply's upstream died with its worker and cannot be re-attached,
     * so the question is asked once more by itself (the text starts over); a second shutdown is the user's to Retry.
     */
    function resendAfterShutdown(err) {
      if (err.code !== 'server_shutdown' || err.retryable === false || reply.resent || !reply.onServerShutdown) return false;
      reply.resent = true;
      reply.content = ''; reply.reasoning = ''; reply.declined = null; reply.tokens = 0; reply.chunks = 0;
      reply.streamId = null; reply.resumable = null; reply.lastEventId = ''; reply.lastSeq = -1;
      notify('resend', err, reply);
      reply.onServerShutdown(err);
      return true;
    }
    function fail(err) { end('error', err, 'error', err); }
    function stop() { end('stopped', null, 'stop', { content: reply.content }); }
    function requestStop() {
      if (reply.finished) return;
      if (reply.stopping || !reply.onStop) { stop(); return; }
      reply.stopping = true;
      notify('stopping', { stream_id: reply.streamId }, reply);
      reply.onStop();
    }
    function end(result, payload, name, detail) {
      if (reply.finished) return;
      reply.finished = true;
      reply.result = result;
      reply.payload = payload || null;
      if (reply.onClose) try { reply.onClose(result); } catch (_) { /* already closed */ }
      notify('end', reply.payload, reply);
      resolve({ status: result, content: reply.content, payload: reply.payload });
      notify(name, detail, reply);
    }
    return reply;
  }

  /** The footer under a finished reply: provider · model, tokens, an unusual finish reason. */
  function metaParts(info) {
    var parts = [];
    if (info.provider) parts.push(info.provider + (info.model ? ' · ' + info.model : ''));
    else if (info.model) parts.push(info.model);
    var usage = info.usage || {};
    if (typeof usage.output_tokens === 'number') parts.push(usage.output_tokens + (usage.output_tokens === 1 ? ' token' : ' tokens'));
    if (info.finish_reason && info.finish_reason !== 'stop' && info.finish_reason !== 'end_turn') parts.push('stopped: ' + info.finish_reason);
    return parts;
  }

  /** The notice under a reply the provider declined ({reason, stage}), or null. */
  function declinedText(declined) {
    if (!declined || typeof declined !== 'object') return null;
    var reason = declined.reason ? ' (' + String(declined.reason) + ')' : '';
    return declined.stage === 'prompt'
      ? 'The provider declined to answer this message' + reason + '.'
      : 'The provider declined to continue this reply' + reason + '.';
  }

  /** What the view shows for a finished reply (pure, so tests can check what the user sees). */
  function replyOutcome(reply) {
    var result = reply.result;
    var payload = reply.payload || {};
    // A failed or stopped reply without any text leaves no empty bubble behind.
    var keep = result === 'done' || !!reply.content;
    var meta = !keep ? [] : result === 'done' ? metaParts(payload) : [result === 'stopped' ? 'Stopped' : 'Interrupted'];
    return {
      state: result,
      keepBubble: keep,
      incomplete: keep && result !== 'done',
      meta: meta.join(' · '),
      tokens: keep ? reply.tokens : null,
      status: result === 'stopped' ? 'Stopped.' : '',
      declined: result === 'done' ? declinedText(reply.declined) : null,
      error: result !== 'error' ? null : withWait(
        { message: payload.error || 'Something went wrong.', code: payload.code || 'error', retry: payload.retryable !== false }, payload)
    };
  }
  /** A 429 from the server's limits carries the seconds to wait (shown counting down). */
  function withWait(error, payload) {
    if (payload.status === 429 && payload.retry_after) error.retryAfter = payload.retry_after;
    return error;
  }

  /** The fields sent with a message (POST body, or query string for EventSource). */
  function requestFields(opts, text, conversationId) {
    var body = {};
    var extra = typeof opts.extra === 'function' ? opts.extra() : opts.extra;
    if (extra) for (var k in extra) body[k] = extra[k];
    body.message = text;
    if (conversationId) body.conversation_id = conversationId; // none: the server starts a conversation
    if (opts.provider) body.provider = opts.provider;
    if (opts.model) body.model = opts.model;
    return body;
  }

  /** 'fetch' | 'eventsource' | null for the transport option ('auto' prefers streaming fetch). */
  function pickTransport(setting) {
    var hasFetch = typeof root.fetch === 'function';
    var hasES = typeof root.EventSource === 'function';
    var streams = typeof root.ReadableStream === 'function' && hasFetch && root.Response && 'body' in root.Response.prototype;
    if (setting === 'eventsource' ? hasES : (setting !== 'fetch' && !streams && hasES)) return 'eventsource';
    return hasFetch ? 'fetch' : null;
  }

  function sseHandler(reply) {
    return function (evt) {
      var payload;
      try { payload = JSON.parse(evt.data); } catch (_) { return; }
      reply.handle(payload, evt.type, evt.lastEventId);
    };
  }

  var LOST = 'The connection closed before the reply was complete.';
  var CUT = 'The connection was lost before the reply was complete.';
  var GAVE_UP = 'The connection was lost and could not be restored.';
  var GONE = 'The connection was lost and the reply can no longer be resumed.';

  /**
   * A lost connection is re-attached after each of these waits (ms) in turn, so there are as many attempts,
   * and not once the stream has been missing for limitMs; Stop waits stopWaitMs for the server's stopped
   * completion before it aborts; a reply cut by a server shutdown is asked again after resendDelayMs. A resumable
   * stream from which nothing (not even the server's `: ping` heartbeat, every 15 s by default) came for silenceMs
   * is taken for lost (a connection that died without a word, as a phone changing network leaves it).
   */
  var RECONNECT = { delays: [500, 1000, 2000, 4000, 4000], limitMs: 30000, stopWaitMs: 2000, resendDelayMs: 1000, silenceMs: 45000 };

  function noop() {}
  function newController() { return typeof root.AbortController === 'function' ? new root.AbortController() : null; }
  /** A copy of headers without Content-Type (a GET or an empty POST), with `extra` over it. */
  function headersFor(headers, extra) {
    var out = {};
    for (var k in headers) if (k.toLowerCase() !== 'content-type') out[k] = headers[k];
    for (var e in extra) out[e] = extra[e];
    return out;
  }
  function settings(given, defaults) {
    var out = {};
    for (var k in defaults) out[k] = given && given[k] != null ? given[k] : defaults[k];
    return out;
  }

  /**
   * streamWithFetch(reply, request): POST the message, read the event stream into the reply.
   * request: {url, body (object), headers (object or Promise of one), credentials, fetch?,
   *   streamUrl?(streamId): GET to re-attach (without it a lost connection ends the reply),
   *   stopUrl?(streamId): POST that stops the stream on the server, reconnect? (RECONNECT's fields),
   *   wait?(ms) -> Promise and now?() -> ms (tests)}.
   * A stream that breaks before its final event is re-attached with Last-Event-ID set to the last event
   * applied, after RECONNECT's waits, and given up (an error with Retry) after their number or limitMs, or at
   * once when the server says it cannot resume (status `resumable: false`, a 404). Stop asks the server to stop,
   * then aborts. A server shutdown's error asks the question once more. Every failure ends the reply readably.
   */
  function streamWithFetch(reply, request) {
    var link = fetchLink(reply, request);
    reply.onClose = link.close;
    if (request.stopUrl) reply.onStop = link.stop;
    reply.onServerShutdown = link.resend;
    Promise.resolve(request.headers).then(function (headers) {
      link.headers = headers || {};
      if (!reply.finished) link.post();
    }, function (err) {
      reply.fail({ type: 'error', error: 'Could not prepare the request: ' + (err && err.message || err), code: 'headers_failed', done: true });
    });
  }

  /** The fetch transport's state: one request at a time (its generation), re-attaching, stopping, resending. */
  function fetchLink(reply, request) {
    var link = { reply: reply, request: request, headers: {}, controller: null, generation: 0, attempts: 0,
      droppedAt: null, stopSent: false, parser: createSSEParser(sseHandler(reply)),
      doFetch: request.fetch || function (url, init) { return root.fetch(url, init); },
      cfg: settings(request.reconnect, RECONNECT),
      wait: request.wait || function (ms) { return new Promise(function (r) { setTimeout(r, ms); }); },
      now: request.now || function () { return Date.now(); } };
    link.post = function () { postMessage(link); };
    link.lost = function (error) { lostStream(link, error); };
    link.progressed = function () { link.attempts = 0; link.droppedAt = null; };
    link.stop = function () { stopOnServer(link, reply, request); };
    link.resend = function () { resendLater(link, reply); };
    link.close = function (result) { closeLink(link, reply, request, result); };
    return link;
  }

  /** One request; a newer one (or the reply's end) makes everything of an older one ignored. */
  function openRequest(link, url, init, first) {
    var reply = link.reply;
    var gen = ++link.generation;
    if (link.controller) link.controller.abort();
    if (link.watch) clearInterval(link.watch);
    var controller = link.controller = newController();
    init.credentials = link.request.credentials;
    init.cache = 'no-store';
    init.signal = controller ? controller.signal : undefined;
    link.parser.reset();
    var current = function () { return gen === link.generation && !reply.finished; };
    var heard = watchSilence(link, current);
    Promise.resolve().then(function () { return link.doFetch(url, init); }).then(function (res) {
      return current() ? readResponse(link, reply, res, current, first, heard) : null;
    }).then(function (state) {
      if (state === 'ended' && current()) link.lost({ type: 'error', error: LOST, code: 'stream_interrupted', done: true });
    }, function (err) { if (current()) brokenRequest(link, err); });
  }
  /** The message's POST (again, after a server shutdown: in the conversation the server named). */
  function postMessage(link) {
    var body = {};
    for (var k in link.request.body) body[k] = link.request.body[k];
    if (link.reply.conversationId) body.conversation_id = link.reply.conversationId;
    openRequest(link, link.request.url, { method: 'POST', headers: link.headers, body: JSON.stringify(body) }, true);
  }
  /** The request failed or its body broke: never connected (a network error), or a lost stream. */
  function brokenRequest(link, err) {
    var reply = link.reply;
    var silent = link.silent && link.silent === link.controller;
    if (err && err.name === 'AbortError' && !silent) { reply.stop(); return; }
    var detail = silent ? 'nothing came for ' + link.cfg.silenceMs + ' ms' : String(err && err.message || err);
    if (!reply.gotEvent && !reply.streamId) {
      reply.fail({ type: 'error', error: 'Network error: could not reach the chat server. Check your connection and try again.', code: 'network_error', done: true, detail: detail });
    } else link.lost({ type: 'error', error: CUT, code: 'stream_interrupted', done: true, detail: detail });
  }
  /** The stream ended or broke before its final event: re-attach after the next wait, or give up. */
  function lostStream(link, error) {
    var reply = link.reply;
    var cfg = link.cfg;
    if (reply.stopping) { reply.stop(); return; }
    if (!canResume(reply, link.request)) { reply.fail(error); return; }
    if (link.droppedAt === null) link.droppedAt = link.now();
    if (link.attempts >= cfg.delays.length || link.now() - link.droppedAt >= cfg.limitMs) {
      error.error = GAVE_UP;
      reply.fail(error);
      return;
    }
    var delay = cfg.delays[link.attempts++];
    reply.notify('reconnecting', { attempt: link.attempts, delay: delay, stream_id: reply.streamId, last_event_id: reply.lastEventId });
    var gen = link.generation;
    link.wait(delay).then(function () { if (gen === link.generation && !reply.finished) reattach(link); });
  }
  /** GET the stream again from after the last event applied. */
  function reattach(link) {
    var reply = link.reply;
    var headers = headersFor(link.headers, { Accept: 'text/event-stream' });
    if (reply.lastEventId) headers['Last-Event-ID'] = reply.lastEventId;
    openRequest(link, link.request.streamUrl(reply.streamId), { method: 'GET', headers: headers }, false);
  }

  /**
   * Whether a lost stream can be re-attached: a re-attach URL, the stream's id, and a server that did not say
   * no (status `resumable: false`, or a plain event id 'n', which is what resume off sends).
   */
  function canResume(reply, request) {
    if (!request.streamUrl || !reply.streamId || reply.resumable === false) return false;
    return reply.resumable === true || !/^\d+$/.test(reply.lastEventId);
  }

  /** One response: an error status, or the event stream read into the reply. Resolves 'ended' when the body ends. */
  function readResponse(link, reply, res, current, first, heard) {
    if (!res.ok) {
      return res.text().then(null, function () { return ''; }).then(function (t) { refused(link, reply, res, t, first); return 'refused'; });
    }
    reply.learnConversation(res.headers.get('x-bupple-conversation-id'));
    reply.learnStream(res.headers.get('x-bupple-stream-id'));
    if (/unavailable/i.test(res.headers.get('x-bupple-resume') || '')) reply.resumable = false;
    var ctype = (res.headers.get('content-type') || '').toLowerCase();
    if (ctype.indexOf('text/event-stream') === -1) {
      return res.text().then(function (t) {
        reply.fail({ type: 'error', error: 'The server did not answer with an event stream (content type "' + (ctype || 'none') + '").', code: 'bad_response', done: true, detail: t.slice(0, 200) });
      });
    }
    if (!first) reply.notify('reconnected', { stream_id: reply.streamId });
    var parser = link.parser;
    if (!res.body || typeof res.body.getReader !== 'function') {
      return res.text().then(function (t) { parser.feed(t); parser.end(); return 'ended'; });
    }
    var reader = res.body.getReader();
    heard(false);
    function pump() {
      return reader.read().then(function (r) {
        heard(r.done);
        if (!current()) { if (!r.done) reader.cancel().catch(noop); return null; }
        if (r.done) { parser.end(); return 'ended'; }
        var before = reply.lastSeq;
        parser.feed(r.value);
        if (reply.lastSeq > before) link.progressed(); // new events: the next drop starts a fresh count
        return pump();
      });
    }
    return pump();
  }

  /**
   * While a resumable stream is asked for and read: no answer, or no byte, for silenceMs aborts the request as
   * silent (a lost stream, then re-attached). Returns what the reader calls on each read. A stream that cannot be re-attached is not watched:
   * a long silence there (heartbeats off, a model thinking) is no reason to give up on it.
   */
  function watchSilence(link, current) {
    var ms = link.cfg.silenceMs;
    var controller = link.controller;
    if (!ms || !controller || typeof setInterval !== 'function') return noop;
    var last = link.now();
    var timer = link.watch = setInterval(function () {
      if (!current()) { clearInterval(timer); return; }
      if (!canResume(link.reply, link.request) || link.now() - last <= ms) return;
      clearInterval(timer);
      link.silent = controller;
      controller.abort();
    }, Math.max(ms / 3, 10));
    return function (done) { last = link.now(); if (done || !current()) clearInterval(timer); };
  }

  /**
   * A non-2xx answer. To the POST: the reply fails with the server's words. To a re-attach: a 404 (stream gone,
   * someone else's, resume off) or a 401/403 ends it at once; anything else (5xx, 429) is another drop.
   */
  function refused(link, reply, res, text, first) {
    var err = describeHttpError(res.status, text, null, res.headers.get('Retry-After'));
    if (first || res.status === 401 || res.status === 403) { reply.fail(err); return; }
    var lostErr = { type: 'error', error: GONE, code: 'stream_interrupted', done: true, resume: err.code, status: res.status };
    if (res.status === 404 || res.status === 410) reply.fail(lostErr);
    else { lostErr.error = CUT; link.lost(lostErr); }
  }

  /** The server's stop endpoint (once per reply), with the stream's headers (its CSRF token). */
  function sendStop(link, reply, request) {
    if (link.stopSent || !request.stopUrl || !reply.streamId) return null;
    link.stopSent = true;
    var init = { method: 'POST', headers: headersFor(link.headers, { Accept: 'application/json' }), credentials: request.credentials, cache: 'no-store', keepalive: true };
    var url = request.stopUrl(reply.streamId);
    return Promise.resolve().then(function () { return link.doFetch(url, init); });
  }
  /**
   * The user's Stop: POST the stop endpoint, then the server ends the stream with its stopped completion (the
   * text shown is the text stored); if that does not come within stopWaitMs, or the server cannot stop it (no
   * stream id yet, an error, no connection), the fetch is aborted and the reply ends here as stopped.
   */
  function stopOnServer(link, reply, request) {
    var asked = link.droppedAt === null ? sendStop(link, reply, request) : null;
    if (!asked) { sendStop(link, reply, request); reply.stop(); return; }
    asked.then(function (res) {
      if (!res || !res.ok) { reply.stop(); return null; }
      return link.wait(link.cfg.stopWaitMs).then(function () { reply.stop(); });
    }, function () { reply.stop(); });
  }
  /** A server shutdown: the old stream is over (nothing of it counts any more); POST the question again soon. */
  function resendLater(link, reply) {
    var gen = ++link.generation;
    if (link.controller) link.controller.abort();
    link.attempts = 0;
    link.droppedAt = null;
    link.stopSent = false;
    link.wait(link.cfg.resendDelayMs).then(function () { if (gen === link.generation && !reply.finished) link.post(); });
  }
  /** The reply ended: nothing more is read. Stopped (also by switching conversations): tell the server, abort. */
  function closeLink(link, reply, request, result) {
    link.generation++;
    if (link.watch) clearInterval(link.watch);
    if (result !== 'stopped') return;
    var asked = sendStop(link, reply, request);
    if (asked) asked.catch(noop);
    if (link.controller) link.controller.abort();
  }

  /** POST the stop endpoint, best effort (the EventSource transport: no request of its own to abort). */
  function stopByFetch(request, streamId) {
    var doFetch = request.fetch || (typeof root.fetch === 'function' ? function (url, init) { return root.fetch(url, init); } : null);
    if (!doFetch) return;
    var url = request.stopUrl(streamId);
    Promise.resolve(request.stopHeaders).then(function (headers) {
      return doFetch(url, { method: 'POST', headers: headersFor(headers || {}, { Accept: 'application/json' }), credentials: request.credentials, cache: 'no-store', keepalive: true });
    }).catch(noop);
  }

  /**
   * streamWithEventSource(reply, request): GET the stream with EventSource (no custom headers).
   * request: {url (with the query string), withCredentials, EventSource?, reconnect?, stopUrl?(streamId), stopHeaders?
   * (object or Promise), fetch?}. Stop (or leaving the reply) closes it and POSTs stopUrl, so that a stream the
   * server keeps for a re-attach is stopped, not left. The EventSource is closed
   * when the reply ends, and at a connection error, so the browser never reconnects and re-sends; except when
   * the server said the stream is resumable: then the browser's own reconnect (with Last-Event-ID) re-attaches,
   * replayed events are skipped, and it is given up after RECONNECT's number of attempts or limitMs.
   */
  function streamWithEventSource(reply, request) {
    var es;
    var EventSourceClass = request.EventSource || root.EventSource;
    try { es = new EventSourceClass(request.url, { withCredentials: !!request.withCredentials }); }
    catch (e) { reply.fail({ type: 'error', error: 'Could not open the event stream: ' + e.message, code: 'network_error', done: true }); return; }
    reply.onClose = function (result) {
      es.close();
      if (result === 'stopped' && request.stopUrl && reply.streamId) stopByFetch(request, reply.streamId);
    };
    var cfg = settings(request.reconnect, RECONNECT);
    var drop = { attempts: 0, since: null };
    var handler = sseHandler(reply);
    es.onmessage = handler;
    ['status', 'chunk', 'reasoning', 'completion'].forEach(function (name) { es.addEventListener(name, handler); });
    es.addEventListener('open', function () { if (drop.since !== null) { drop.since = null; drop.attempts = 0; reply.notify('reconnected', {}); } });
    es.addEventListener('error', function (evt) {
      if (reply.finished) return;
      if (typeof evt.data === 'string') { handler(evt); return; } // a server "event: error"
      if (reply.resumable === true && request.reconnect !== false && es.readyState !== 2 && drop.attempts < cfg.delays.length
          && (drop.since === null || Date.now() - drop.since < cfg.limitMs)) {
        if (drop.since === null) drop.since = Date.now();
        reply.notify('reconnecting', { attempt: ++drop.attempts, stream_id: reply.streamId, last_event_id: reply.lastEventId });
        return;
      }
      es.close();
      reply.fail(reply.gotEvent
        ? { type: 'error', error: drop.attempts ? GAVE_UP : LOST, code: 'stream_interrupted', done: true }
        : { type: 'error', error: 'Could not connect to the chat server (the request was refused or the network failed).', code: 'network_error', done: true });
    });
  }

  // ---------------------------------------------------------------------------
  // The widget
  // ---------------------------------------------------------------------------

  var CSS = [
    ':host{all:initial;display:block;height:var(--bupple-height,560px);min-height:280px;contain:content;',
    'font-family:var(--bupple-font,ui-sans-serif,system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif);}',
    ':host([hidden]){display:none}',
    '*,*::before,*::after{box-sizing:border-box}',
    '.bc{--_accent:var(--bupple-accent,#4f46e5);--_accent-fg:var(--bupple-accent-fg,#fff);--_bg:var(--bupple-bg,#fff);',
    '--_fg:var(--bupple-fg,#111827);--_muted:var(--bupple-muted,#6b7280);--_border:var(--bupple-border,#e5e7eb);',
    '--_surface:var(--bupple-surface,#f9fafb);--_user-bg:var(--bupple-user-bg,var(--_accent));--_user-fg:var(--bupple-user-fg,var(--_accent-fg));',
    '--_bot-bg:var(--bupple-assistant-bg,#f3f4f6);--_bot-fg:var(--bupple-assistant-fg,var(--_fg));',
    '--_err:var(--bupple-error,#b91c1c);--_err-bg:var(--bupple-error-bg,#fef2f2);--_err-border:var(--bupple-error-border,#fecaca);',
    '--_code-bg:var(--bupple-code-bg,#0f172a);--_code-fg:var(--bupple-code-fg,#e2e8f0);--_radius:var(--bupple-radius,18px);',
    '--_badge-bg:var(--bupple-badge-bg,#fef3c7);--_badge-fg:var(--bupple-badge-fg,#92400e);--_focus:var(--bupple-focus,var(--_accent));',
    'display:flex;flex-direction:column;height:100%;width:100%;min-width:0;overflow:hidden;background:var(--_bg);color:var(--_fg);',
    'border:1px solid var(--_border);border-radius:var(--bupple-frame-radius,14px);font-size:15px;line-height:1.5;',
    '-webkit-font-smoothing:antialiased;text-align:left;}',
    '.bc[data-theme="dark"]{--_bg:var(--bupple-bg,#0b1020);--_fg:var(--bupple-fg,#e5e7eb);--_muted:var(--bupple-muted,#9ca3af);',
    '--_border:var(--bupple-border,#1f2937);--_surface:var(--bupple-surface,#111827);--_bot-bg:var(--bupple-assistant-bg,#1f2937);',
    '--_err:var(--bupple-error,#fca5a5);--_err-bg:var(--bupple-error-bg,#3b0d0d);--_err-border:var(--bupple-error-border,#7f1d1d);',
    '--_badge-bg:var(--bupple-badge-bg,#422006);--_badge-fg:var(--bupple-badge-fg,#fde68a);--_accent:var(--bupple-accent,#6366f1)}',
    '@media (prefers-color-scheme:dark){.bc[data-theme="auto"]{--_bg:var(--bupple-bg,#0b1020);--_fg:var(--bupple-fg,#e5e7eb);',
    '--_muted:var(--bupple-muted,#9ca3af);--_border:var(--bupple-border,#1f2937);--_surface:var(--bupple-surface,#111827);',
    '--_bot-bg:var(--bupple-assistant-bg,#1f2937);--_err:var(--bupple-error,#fca5a5);--_err-bg:var(--bupple-error-bg,#3b0d0d);',
    '--_err-border:var(--bupple-error-border,#7f1d1d);--_badge-bg:var(--bupple-badge-bg,#422006);--_badge-fg:var(--bupple-badge-fg,#fde68a);',
    '--_accent:var(--bupple-accent,#6366f1)}}',
    '.sr{position:absolute!important;width:1px;height:1px;padding:0;margin:-1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap;border:0}',
    'button{font:inherit;color:inherit;cursor:pointer;-webkit-tap-highlight-color:transparent}',
    'button:disabled{cursor:default;opacity:.45}',
    ':focus-visible{outline:2px solid var(--_focus);outline-offset:2px}',
    // header
    '.hd{display:flex;align-items:center;gap:8px;flex-wrap:wrap;padding:10px 12px 10px 16px;border-bottom:1px solid var(--_border);background:var(--_bg)}',
    '.title{margin:0;font-size:15px;font-weight:650;letter-spacing:-.01em;display:flex;align-items:center;gap:8px;min-width:0}',
    '.dot{width:8px;height:8px;border-radius:50%;background:#10b981;box-shadow:0 0 0 3px rgba(16,185,129,.18);flex:none}',
    '.badge{font-size:11.5px;font-weight:600;line-height:1;padding:5px 8px;border-radius:999px;background:var(--_badge-bg);color:var(--_badge-fg);white-space:nowrap}',
    '.spacer{flex:1}',
    '.ghost{display:inline-flex;align-items:center;gap:6px;border:1px solid var(--_border);background:transparent;border-radius:999px;',
    'padding:6px 12px 6px 10px;font-size:13px;font-weight:550;min-height:32px}',
    '.ghost:hover:not(:disabled){background:var(--_surface)}',
    '.ghost svg{width:14px;height:14px}',
    // messages
    '.msgs{flex:1;min-height:0;overflow-y:auto;overscroll-behavior:contain;padding:16px 14px 8px;display:flex;flex-direction:column;gap:10px;scroll-behavior:auto}',
    '.empty{margin:auto;text-align:center;color:var(--_muted);font-size:14px;padding:24px 12px;max-width:320px}',
    '.empty strong{display:block;color:var(--_fg);font-size:16px;margin-bottom:4px;font-weight:650}',
    '.row{display:flex;flex-direction:column;max-width:100%;animation:bc-in .18s ease-out}',
    '.row.user{align-items:flex-end}',
    '.row.assistant,.row.err{align-items:flex-start}',
    '.bubble{max-width:min(85%,680px);padding:9px 14px;border-radius:var(--_radius);overflow-wrap:anywhere;word-break:break-word;min-width:0}',
    '.user .bubble{background:var(--_user-bg);color:var(--_user-fg);border-bottom-right-radius:6px;white-space:pre-wrap}',
    '.assistant .bubble{background:var(--_bot-bg);color:var(--_bot-fg);border-bottom-left-radius:6px;white-space:pre-wrap}',
    '.assistant .bubble.md{white-space:normal}',
    '.assistant .bubble[data-incomplete="true"]{border:1px dashed var(--_border)}',
    '.meta{font-size:11.5px;color:var(--_muted);margin:3px 6px 0;display:flex;gap:6px;align-items:center;flex-wrap:wrap}',
    '.typing{display:inline-flex;gap:4px;align-items:center;height:1.5em;padding:0 2px}',
    '.typing i{width:6px;height:6px;border-radius:50%;background:currentColor;opacity:.35;animation:bc-blink 1.2s infinite ease-in-out}',
    '.typing i:nth-child(2){animation-delay:.15s}.typing i:nth-child(3){animation-delay:.3s}',
    '.caret{display:inline-block;width:.5em;height:1em;vertical-align:-.12em;margin-left:1px;background:currentColor;opacity:.45;border-radius:1px;animation:bc-caret 1s steps(2) infinite}',
    // markdown
    '.md p{margin:0 0 .6em}.md>:last-child{margin-bottom:0}',
    '.md ul,.md ol{margin:0 0 .6em;padding-left:1.35em}.md li{margin:.15em 0}.md li>ul,.md li>ol{margin:.15em 0}',
    '.md code{font-family:var(--bupple-mono,ui-monospace,SFMono-Regular,Menlo,Consolas,monospace);font-size:.88em;background:rgba(127,127,127,.16);padding:.1em .35em;border-radius:5px}',
    '.md pre{position:relative;margin:.4em 0 .7em;padding:10px 12px;background:var(--_code-bg);color:var(--_code-fg);border-radius:10px;overflow-x:auto;font-size:13px;line-height:1.45;white-space:pre}',
    '.md pre code{background:none;padding:0;font-size:inherit;border-radius:0;color:inherit}',
    '.md pre[data-lang]::before{content:attr(data-lang);position:absolute;top:4px;right:8px;font-size:10.5px;opacity:.55;font-family:var(--bupple-font,system-ui,sans-serif)}',
    '.md a{color:var(--_accent);text-decoration:underline;text-underline-offset:2px}',
    '.md blockquote{margin:0 0 .6em;padding:.1em 0 .1em .8em;border-left:3px solid var(--_border);color:var(--_muted)}.md blockquote>:last-child,.md li>:last-child{margin-bottom:0}',
    '.md hr{border:0;border-top:1px solid var(--_border);margin:.7em 0}',
    '.md .md-h{font-weight:700;margin:.2em 0 .4em}.md .md-h1{font-size:1.15em}.md .md-h2{font-size:1.08em}',
    '.copy{position:absolute;top:4px;right:6px;font-size:11px;padding:2px 8px;border-radius:6px;border:1px solid rgba(255,255,255,.2);background:#1e293b;color:inherit;opacity:0;transition:opacity .15s}',
    '.copy::after{content:attr(data-label)}',
    '.md pre:hover .copy,.copy:focus-visible{opacity:1}.md pre:hover::before,.md pre:focus-within::before{opacity:0!important}',
    // error row
    '.err .box{max-width:min(92%,680px);display:flex;align-items:flex-start;gap:10px;flex-wrap:wrap;padding:10px 12px;border-radius:12px;',
    'background:var(--_err-bg);color:var(--_err);border:1px solid var(--_err-border);font-size:14px}',
    '.err .msg{flex:1 1 180px;min-width:0;overflow-wrap:anywhere}',
    '.err .ico{flex:none;font-weight:700}',
    '.retry{border:1px solid currentColor;background:transparent;border-radius:999px;padding:3px 12px;font-size:13px;font-weight:600;color:var(--_err);min-height:28px}',
    '.retry:hover{background:rgba(185,28,28,.08)}',
    // status bar
    '.bar{display:flex;align-items:center;gap:8px;min-height:22px;padding:2px 16px;font-size:12px;color:var(--_muted)}',
    '.status{flex:1;min-width:0;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}',
    '.tokens{font-variant-numeric:tabular-nums;white-space:nowrap}',
    // reasoning ("Thinking...") and a declined reply
    '.think{max-width:min(92%,680px);margin:0 0 4px;font-size:13px;color:var(--_muted)}',
    '.think summary{cursor:pointer;user-select:none}',
    '.think-text{white-space:pre-wrap;margin:4px 0 0;padding:6px 10px;border-left:3px solid var(--_border);overflow-wrap:anywhere}',
    '.declined{max-width:min(92%,680px);margin-top:4px;font-size:13px;color:var(--_err)}',
    // composer
    '.composer{display:flex;align-items:flex-end;gap:8px;padding:8px 10px 10px;border-top:1px solid var(--_border);background:var(--_bg)}',
    'textarea{flex:1;min-width:0;resize:none;border:1px solid var(--_border);border-radius:14px;padding:10px 14px;background:var(--_surface);',
    'color:var(--_fg);font:inherit;font-size:16px;line-height:1.4;max-height:160px;min-height:44px;overflow-y:auto;outline:none;transition:border-color .15s,box-shadow .15s}',
    'textarea::placeholder{color:var(--_muted)}',
    'textarea:focus{border-color:var(--_accent);box-shadow:0 0 0 3px color-mix(in srgb,var(--_accent) 22%,transparent)}',
    '.icon{flex:none;width:44px;height:44px;border-radius:50%;border:0;display:inline-flex;align-items:center;justify-content:center;transition:transform .1s,background .15s}',
    '.icon:active:not(:disabled){transform:scale(.94)}',
    '.icon svg{width:20px;height:20px}',
    '.send{background:var(--_accent);color:var(--_accent-fg)}',
    '.stop{background:var(--_fg);color:var(--_bg)}',
    // the conversation list: an overlay panel over the messages, 360 px wide widgets included
    '.main{position:relative;flex:1;min-height:0;display:flex;flex-direction:column}',
    '.tog{padding:6px 9px}',
    '.scrim{position:absolute;inset:0;background:rgba(15,23,42,.28);z-index:2}',
    '.drawer{position:absolute;top:0;bottom:0;left:0;z-index:3;width:min(320px,calc(100% - 40px));display:flex;flex-direction:column;',
    'background:var(--_bg);border-right:1px solid var(--_border);box-shadow:4px 0 18px rgba(15,23,42,.12);animation:bc-slide .16s ease-out}',
    '.dh{display:flex;align-items:center;gap:6px;padding:10px 10px 8px 14px;border-bottom:1px solid var(--_border)}',
    '.dh h3{margin:0;font-size:14px;font-weight:650}',
    '.dstatus{margin:0;padding:0 14px;font-size:13px;color:var(--_muted)}.dstatus:not(:empty){padding:8px 14px}',
    '.convs{list-style:none;margin:0;padding:4px 6px;overflow-y:auto;flex:1;min-height:0}',
    '.conv{display:flex;align-items:center;gap:2px;border-radius:10px;min-height:44px;padding:2px}',
    '.conv:hover,.conv:focus-within{background:var(--_surface)}',
    '.conv.current{background:color-mix(in srgb,var(--_accent) 12%,transparent)}',
    '.pick{flex:1;min-width:0;display:flex;flex-direction:column;align-items:flex-start;border:0;background:none;text-align:left;padding:5px 8px;border-radius:8px}',
    '.ct{max-width:100%;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;font-size:14px}',
    '.cw{font-size:11.5px;color:var(--_muted)}',
    '.mini{flex:none;width:32px;height:32px;display:inline-flex;align-items:center;justify-content:center;border:0;background:none;border-radius:8px;color:var(--_muted)}',
    '.mini:hover{background:var(--_border);color:var(--_fg)}.mini svg{width:16px;height:16px}',
    '.ren{flex:1;min-width:0;font:inherit;font-size:14px;padding:7px 9px;border:1px solid var(--_accent);border-radius:8px;background:var(--_bg);color:var(--_fg)}',
    '.conv .q{flex:1;min-width:0;font-size:13px;padding:0 6px;overflow-wrap:anywhere}',
    '.danger{border:0;border-radius:999px;padding:5px 12px;font-size:13px;font-weight:600;background:var(--_err);color:#fff;min-height:32px}',
    '.more{margin:6px auto 10px}',
    '@keyframes bc-slide{from{transform:translateX(-12px);opacity:0}to{transform:none;opacity:1}}',
    '@media (hover:none){.copy{opacity:1}.md pre[data-lang]::before{display:none}}',
    '[hidden]{display:none!important}',
    '@keyframes bc-blink{0%,80%,100%{opacity:.25;transform:translateY(0)}40%{opacity:.8;transform:translateY(-2px)}}',
    '@keyframes bc-caret{to{opacity:0}}',
    '@keyframes bc-in{from{opacity:0;transform:translateY(4px)}to{opacity:1;transform:none}}',
    '@media (prefers-reduced-motion:reduce){.row,.typing i,.caret,.drawer{animation:none}}',
    '@media (max-width:420px){.hd{padding:8px 10px 8px 12px}.msgs{padding:12px 10px 6px}.bubble{max-width:90%}.bar{padding:2px 12px}',
    '.composer{padding:6px 8px 8px}.ghost .lbl{display:none}.ghost{padding:6px 9px}.badge{order:3}}'
  ].join('\n');

  var SVG_NS = 'http://www.w3.org/2000/svg';
  var ICONS = {
    send: { d: 'M4.4 19.6 20.5 12.6a.7.7 0 0 0 0-1.2L4.4 4.4a.7.7 0 0 0-1 .8L5.6 12l-2.2 6.8a.7.7 0 0 0 1 .8ZM5.6 12H12', stroke: true },
    stop: { d: 'M7 7h10v10H7z', fill: true },
    plus: { d: 'M12 5v14M5 12h14', stroke: true },
    list: { d: 'M4 6h16M4 12h16M4 18h10', stroke: true },
    edit: { d: 'M4 20h4L19 9l-4-4L4 16v4ZM13 7l4 4', stroke: true },
    trash: { d: 'M4 7h16M9 7V4h6v3M6 7l1 13h10l1-13M10 11v6M14 11v6', stroke: true },
    close: { d: 'M6 6l12 12M18 6 6 18', stroke: true }
  };

  function icon(doc, name) {
    var spec = ICONS[name];
    var svg = doc.createElementNS(SVG_NS, 'svg');
    svg.setAttribute('viewBox', '0 0 24 24');
    svg.setAttribute('aria-hidden', 'true');
    svg.setAttribute('focusable', 'false');
    var p = doc.createElementNS(SVG_NS, 'path');
    p.setAttribute('d', spec.d);
    if (spec.fill) { p.setAttribute('fill', 'currentColor'); }
    else {
      p.setAttribute('fill', 'none');
      p.setAttribute('stroke', 'currentColor');
      p.setAttribute('stroke-width', '2');
      p.setAttribute('stroke-linecap', 'round');
      p.setAttribute('stroke-linejoin', 'round');
    }
    svg.appendChild(p);
    return svg;
  }

  function h(doc, tag, attrs, children) {
    var e = doc.createElement(tag);
    if (attrs) {
      for (var k in attrs) {
        if (!Object.prototype.hasOwnProperty.call(attrs, k)) continue;
        var v = attrs[k];
        if (v === null || v === undefined || v === false) continue;
        if (k === 'text') e.textContent = v;
        else if (k === 'className') e.className = v;
        else e.setAttribute(k, v === true ? '' : String(v));
      }
    }
    if (children) for (var i = 0; i < children.length; i++) if (children[i]) e.appendChild(children[i]);
    return e;
  }

  var DEFAULTS = {
    endpoint: '/api/stream',
    title: 'Chat',
    placeholder: 'Type a message…',
    welcome: 'Ask anything. Replies stream in as they are written.',
    headers: null,
    extra: null,
    provider: null,
    model: null,
    transport: 'auto',          // 'auto' | 'fetch' | 'eventsource'
    markdown: false,
    showMockNotice: true,
    historyEndpoint: null,      // template with {id}, base path, function(id) or false
    deleteEndpoint: null,
    providersEndpoint: null,
    conversationsEndpoint: null, // default: endpoint with /stream -> /conversations
    streamsEndpoint: null,      // default: endpoint with /stream -> /streams (re-attach, stop); false: neither
    reconnect: true,            // re-attach a reply whose connection broke; false: the reply fails at once
    meEndpoint: null,           // default: endpoint with /stream -> /me
    identity: null,             // the server's identity hash; unset: GET meEndpoint
    csrfToken: null,            // unset: <meta name="csrf-token">
    conversationList: false,    // the conversation list panel
    conversationPageSize: 20,
    conversationId: null,       // force a conversation id
    clientConversationIds: false, // true: the widget makes new conversation ids (custom routes that take any id)
    persist: true,              // keep conversation_id in localStorage (per identity)
    storageKey: null,
    credentials: 'same-origin', // fetch credentials; EventSource uses withCredentials when 'include'
    theme: 'light',             // 'light' | 'dark' | 'auto'
    deleteOnClear: null,        // New chat deletes the old conversation; default: true without the list
    autofocus: false
  };

  var instances = [];

  function readStorage(key) {
    try { return root.localStorage ? root.localStorage.getItem(key) : null; } catch (_) { return null; }
  }
  function writeStorage(key, value) {
    try {
      if (!root.localStorage) return;
      if (value) root.localStorage.setItem(key, value); else root.localStorage.removeItem(key);
    } catch (_) { /* private mode or disabled storage */ }
  }

  function absoluteUrl(url) {
    try { return new URL(url, root.location && root.location.href).href; } catch (_) { return String(url); }
  }

  /**
   * createHistory(opts, request) -> {id, restore(key, legacyKey), remember(id), forget(deleteOnServer), load(), abort()}
   * The current conversation: its id (kept in localStorage under a key per identity when opts.persist;
   * restore() reads it once the identity is known), its past messages (GET the history URL) and, when
   * asked, deleting it on the server (New chat with deleteOnClear).
   * request(url, init) is fetch with the widget's headers and credentials.
   */
  function createHistory(opts, request) {
    var storageKey = null;
    var pending = null; // AbortController of the history request
    var history = {
      id: opts.conversationId || null,
      /** key: where this identity's conversation is kept (null: keep nothing); legacyKey: a key to clear. */
      restore: function (key, legacyKey) {
        storageKey = opts.persist ? key : null;
        if (opts.persist && legacyKey && legacyKey !== key) writeStorage(legacyKey, null); // whoever's it was
        if (!history.id && storageKey) history.id = readStorage(storageKey) || null;
        return history.id;
      },
      remember: function (id) {
        history.id = id;
        if (storageKey) writeStorage(storageKey, id);
      },
      /** null when there is nothing to load, else a Promise of {messages, error, stale} (never rejects). */
      load: function () {
        var url = historyUrl(opts, history.id);
        if (!url || typeof root.fetch !== 'function') return null;
        var controller = typeof root.AbortController === 'function' ? new root.AbortController() : null;
        pending = controller;
        var forId = history.id;
        var init = { cache: 'no-store', signal: controller ? controller.signal : undefined };
        return fetchJSON(request, url, init, 'conversation').then(function (r) {
          if (pending === controller) pending = null;
          if (forId !== history.id || r.aborted) return { messages: null, error: null, stale: true }; // switched meanwhile
          var msgs = Array.isArray(r.data) ? r.data : r.data && r.data.messages;
          return { messages: Array.isArray(msgs) ? msgs : null, error: r.error, stale: false };
        });
      },
      abort: function () { if (pending) try { pending.abort(); } catch (_) { /* ignore */ } },
      /** Forget the id (New chat); with deleteOnServer, also DELETE the conversation (best effort). */
      forget: function (deleteOnServer) {
        var old = history.id;
        var url = old && deleteOnServer ? deleteUrl(opts, old) : null;
        if (url && typeof root.fetch === 'function') {
          request(url, { method: 'DELETE', keepalive: true }).catch(function () { /* best effort */ });
        }
        history.id = null;
        if (storageKey) writeStorage(storageKey, null);
        return old;
      }
    };
    return history;
  }

  /**
   * createDrawer(doc, uid, actions) -> the conversation list panel, an overlay over the messages:
   *   {panel, scrim, toggle, render(list, currentId), open(), close(), isOpen()}
   * actions: openConversation(id), renameConversation(id, title) and deleteConversation(id) (Promises of
   * {ok, error}), moreConversations(), listShown(), clear(). Titles are user text: text nodes only.
   */
  function createDrawer(doc, uid, actions) {
    var ui = { list: null, currentId: null, editing: null, confirming: null, focus: null, note: '' };
    var toggle = h(doc, 'button', { type: 'button', 'class': 'ghost tog', 'data-testid': 'conversations-toggle', 'aria-expanded': 'false', 'aria-controls': uid + '-convs', 'aria-label': 'Conversations', title: 'Your conversations' }, [icon(doc, 'list')]);
    var newBtn = h(doc, 'button', { type: 'button', 'class': 'ghost', 'data-testid': 'conversation-new' }, [icon(doc, 'plus'), h(doc, 'span', { text: 'New chat' })]);
    var closeBtn = h(doc, 'button', { type: 'button', 'class': 'mini', 'data-testid': 'conversations-close', 'aria-label': 'Close the conversation list', title: 'Close (Esc)' }, [icon(doc, 'close')]);
    var status = h(doc, 'p', { 'class': 'dstatus', 'data-testid': 'conversations-status', role: 'status', 'aria-live': 'polite' });
    var ul = h(doc, 'ul', { 'class': 'convs', 'data-testid': 'conversations', 'aria-labelledby': uid + '-convs-title' });
    var more = h(doc, 'button', { type: 'button', 'class': 'ghost more', 'data-testid': 'conversations-more', hidden: true, text: 'Load more' });
    var head = h(doc, 'div', { 'class': 'dh' }, [h(doc, 'h3', { id: uid + '-convs-title', text: 'Conversations' }), h(doc, 'span', { 'class': 'spacer' }), newBtn, closeBtn]);
    var panel = h(doc, 'aside', { 'class': 'drawer', id: uid + '-convs', 'data-testid': 'conversation-panel', 'aria-labelledby': uid + '-convs-title', hidden: true }, [head, status, ul, more]);
    var scrim = h(doc, 'div', { 'class': 'scrim', 'aria-hidden': 'true', hidden: true });
    var drawer = {
      panel: panel, scrim: scrim, toggle: toggle,
      isOpen: function () { return !panel.hidden; },
      open: function () { setOpen(true); actions.listShown(); focusFirst(); },
      close: function (refocus) { setOpen(false); if (refocus) toggle.focus(); },
      render: function (list, currentId) { ui.list = list; ui.currentId = currentId; draw(); }
    };
    var rows = { doc: doc, ui: ui, actions: actions, redraw: function () { draw(); }, drawer: drawer };

    function setOpen(on) {
      panel.hidden = !on;
      scrim.hidden = !on;
      toggle.setAttribute('aria-expanded', on ? 'true' : 'false');
      if (!on) { ui.editing = null; ui.confirming = null; }
      var behind = panel.parentNode ? panel.parentNode.children : [];
      for (var i = 0; i < behind.length; i++) { // what the panel covers is out of the tab order meanwhile
        if (behind[i] === panel || behind[i] === scrim) continue;
        if (on) behind[i].setAttribute('inert', ''); else behind[i].removeAttribute('inert');
      }
    }
    function focusFirst() {
      var current = ul.querySelector('[aria-current="true"]') || ul.querySelector('.pick');
      (current || newBtn).focus();
    }
    function draw() {
      while (ul.firstChild) ul.removeChild(ul.firstChild);
      var list = ui.list || { items: [] };
      list.items.forEach(function (c) { ul.appendChild(conversationRow(rows, c)); });
      status.textContent = ui.note || listStatus(list);
      ul.setAttribute('aria-busy', list.loading ? 'true' : 'false');
      more.hidden = !list.nextCursor;
      more.disabled = !!list.loading;
      applyFocus(ul, ui);
    }
    toggle.addEventListener('click', function () { if (drawer.isOpen()) drawer.close(true); else drawer.open(); });
    closeBtn.addEventListener('click', function () { drawer.close(true); });
    scrim.addEventListener('click', function () { drawer.close(false); });
    newBtn.addEventListener('click', function () { drawer.close(false); actions.clear(); });
    more.addEventListener('click', function () { actions.moreConversations(); });
    panel.addEventListener('keydown', function (e) { drawerKey(e, drawer, ul); });
    return drawer;
  }

  function listStatus(list) {
    if (list.error) return list.error.error;
    if (list.loading && !list.items.length) return 'Loading…';
    if (list.loaded && !list.items.length) return 'No conversations yet.';
    return '';
  }
  /** Escape closes the panel; the arrow keys move between conversations. */
  function drawerKey(e, drawer, ul) {
    if (e.key === 'Escape') { e.preventDefault(); drawer.close(true); return; }
    if (e.key !== 'ArrowDown' && e.key !== 'ArrowUp') return;
    var picks = Array.prototype.slice.call(ul.querySelectorAll('.pick'));
    var at = picks.indexOf(e.target);
    if (at === -1) return;
    e.preventDefault();
    var next = picks[at + (e.key === 'ArrowDown' ? 1 : -1)];
    if (next) next.focus();
  }
  /** After a redraw, focus goes where the user's action left it (ui.focus = {id, testid}). */
  function applyFocus(ul, ui) {
    var want = ui.focus;
    ui.focus = null;
    if (!want) return;
    var items = ul.querySelectorAll('li');
    for (var i = 0; i < items.length; i++) {
      if (items[i].getAttribute('data-conversation-id') !== want.id) continue;
      var el = items[i].querySelector('[data-testid="' + want.testid + '"]');
      if (el) { el.focus(); if (el.select) el.select(); }
      return;
    }
  }

  /** One conversation: open / rename / delete buttons, or the rename input, or the delete confirmation. */
  function conversationRow(rows, c) {
    var doc = rows.doc;
    var ui = rows.ui;
    var current = c.id === ui.currentId;
    var li = h(doc, 'li', { 'class': 'conv' + (current ? ' current' : ''), 'data-testid': 'conversation', 'data-conversation-id': c.id });
    if (ui.editing === c.id) li.appendChild(renameInput(rows, c));
    else if (ui.confirming === c.id) confirmDelete(rows, c).forEach(function (e) { li.appendChild(e); });
    else plainRow(rows, c, current).forEach(function (e) { li.appendChild(e); });
    return li;
  }
  function plainRow(rows, c, current) {
    var doc = rows.doc;
    var title = conversationTitle(c);
    var pick = h(doc, 'button', { type: 'button', 'class': 'pick', 'data-testid': 'conversation-open', 'aria-current': current ? 'true' : null },
      [h(doc, 'span', { 'class': 'ct', 'data-testid': 'conversation-title', text: title }), h(doc, 'span', { 'class': 'cw', text: conversationWhen(c.updated_at) })]);
    var rename = h(doc, 'button', { type: 'button', 'class': 'mini', 'data-testid': 'conversation-rename', 'aria-label': 'Rename: ' + title, title: 'Rename' }, [icon(doc, 'edit')]);
    var del = h(doc, 'button', { type: 'button', 'class': 'mini', 'data-testid': 'conversation-delete', 'aria-label': 'Delete: ' + title, title: 'Delete' }, [icon(doc, 'trash')]);
    pick.addEventListener('click', function () { rows.actions.openConversation(c.id); rows.drawer.close(false); });
    rename.addEventListener('click', function () { setMode(rows, 'editing', c.id, 'conversation-title-input'); });
    del.addEventListener('click', function () { setMode(rows, 'confirming', c.id, 'conversation-delete-confirm'); });
    return [pick, rename, del];
  }
  function setMode(rows, mode, id, focusTestId) {
    rows.ui.editing = mode === 'editing' ? id : null;
    rows.ui.confirming = mode === 'confirming' ? id : null;
    rows.ui.note = '';
    rows.ui.focus = { id: id, testid: focusTestId };
    rows.redraw();
  }
  function renameInput(rows, c) {
    var doc = rows.doc;
    var input = h(doc, 'input', { type: 'text', 'class': 'ren', 'data-testid': 'conversation-title-input', maxlength: '200', 'aria-label': 'New title for: ' + conversationTitle(c) });
    input.value = c.title || '';
    var done = false;
    function finish(save) {
      if (done) return;
      done = true;
      var title = input.value.trim();
      if (!save || !title || title === (c.title || '')) { setMode(rows, 'plain', c.id, 'conversation-rename'); return; }
      input.disabled = true;
      rows.actions.renameConversation(c.id, title).then(function (r) {
        rows.ui.editing = null;
        rows.ui.note = r.ok ? '' : r.error.error;
        rows.ui.focus = { id: c.id, testid: 'conversation-rename' };
        rows.redraw();
      });
    }
    input.addEventListener('keydown', function (e) {
      if (e.key === 'Enter') { e.preventDefault(); finish(true); }
      else if (e.key === 'Escape') { e.preventDefault(); e.stopPropagation(); finish(false); }
    });
    input.addEventListener('blur', function () { finish(true); });
    return input;
  }
  function confirmDelete(rows, c) {
    var doc = rows.doc;
    var question = h(doc, 'span', { 'class': 'q', text: 'Delete “' + conversationTitle(c) + '”?' });
    var yes = h(doc, 'button', { type: 'button', 'class': 'danger', 'data-testid': 'conversation-delete-confirm', text: 'Delete' });
    var no = h(doc, 'button', { type: 'button', 'class': 'ghost', 'data-testid': 'conversation-delete-cancel', text: 'Cancel' });
    no.addEventListener('click', function () { setMode(rows, 'plain', c.id, 'conversation-delete'); });
    yes.addEventListener('click', function () {
      yes.disabled = true;
      rows.actions.deleteConversation(c.id).then(function (r) {
        rows.ui.confirming = null;
        rows.ui.note = r.ok ? '' : r.error.error;
        if (!r.ok) rows.ui.focus = { id: c.id, testid: 'conversation-delete' };
        rows.redraw();
        if (r.ok) focusAfterDelete(rows);
      });
    });
    return [question, yes, no];
  }
  function focusAfterDelete(rows) {
    var pick = rows.drawer.panel.querySelector('.pick') || rows.drawer.panel.querySelector('[data-testid="conversation-new"]');
    if (pick) pick.focus();
  }

  /**
   * createView(doc, target, opts, actions) -> the widget's DOM and everything that touches it.
   * actions: {send(text), stop(), clear(), retry()}, called from the composer and the buttons, and with
   * opts.conversationList the drawer's (see createDrawer); view.drawer is then the conversation list panel.
   */
  function createView(doc, target, opts, actions) {
    var shadow = target.shadowRoot || (target.attachShadow ? target.attachShadow({ mode: 'open' }) : null);
    var host = shadow || target;
    while (host.firstChild) host.removeChild(host.firstChild);
    if (shadow && 'adoptedStyleSheets' in shadow && typeof root.CSSStyleSheet === 'function') {
      try {
        var sheet = new root.CSSStyleSheet();
        sheet.replaceSync(CSS);
        shadow.adoptedStyleSheets = [sheet];
      } catch (_) { host.appendChild(h(doc, 'style', { text: CSS })); }
    } else {
      host.appendChild(h(doc, 'style', { text: CSS }));
    }

    var uid = 'bc' + Math.random().toString(36).slice(2, 8);
    var titleEl = h(doc, 'h2', { 'class': 'title', id: uid + '-title' }, [h(doc, 'span', { 'class': 'dot', 'aria-hidden': 'true' }), h(doc, 'span', { text: opts.title })]);
    var badge = h(doc, 'span', { 'class': 'badge', 'data-testid': 'mock-notice', hidden: true, title: 'Replies come from the built-in offline mock provider, not from a real model.', text: 'Demo mode: offline mock provider' });
    var newBtn = h(doc, 'button', { type: 'button', 'class': 'ghost', 'data-testid': 'new-chat', 'aria-label': 'New chat', title: 'Start a new conversation' }, [icon(doc, 'plus'), h(doc, 'span', { 'class': 'lbl', text: 'New chat' })]);
    var drawer = opts.conversationList ? createDrawer(doc, uid, actions) : null;
    var header = h(doc, 'div', { 'class': 'hd' }, [drawer && drawer.toggle, titleEl, badge, h(doc, 'span', { 'class': 'spacer' }), newBtn]);

    var emptyEl = h(doc, 'div', { 'class': 'empty' }, [h(doc, 'strong', { text: opts.title }), h(doc, 'span', { text: opts.welcome })]);
    var list = h(doc, 'div', { 'class': 'msgs', 'data-testid': 'messages', role: 'log', 'aria-live': 'off', 'aria-label': 'Conversation', tabindex: '0' }, [emptyEl]);

    var statusEl = h(doc, 'span', { 'class': 'status', 'data-testid': 'status', role: 'status', 'aria-live': 'polite' });
    var tokensEl = h(doc, 'span', { 'class': 'tokens', 'data-testid': 'tokens', 'data-count': '0', 'aria-live': 'off', hidden: true });
    var bar = h(doc, 'div', { 'class': 'bar' }, [statusEl, tokensEl]);

    var inputLabel = h(doc, 'label', { 'class': 'sr', 'for': uid + '-input', text: 'Message' });
    var hint = h(doc, 'span', { 'class': 'sr', id: uid + '-hint', text: 'Press Enter to send, Shift+Enter for a new line, Escape to stop a reply.' });
    var input = h(doc, 'textarea', { id: uid + '-input', rows: '1', 'data-testid': 'input', placeholder: opts.placeholder, 'aria-describedby': uid + '-hint', autocomplete: 'off', enterkeyhint: 'send' });
    var stopBtn = h(doc, 'button', { type: 'button', 'class': 'icon stop', 'data-testid': 'stop', 'aria-label': 'Stop generating', title: 'Stop (Esc)', hidden: true }, [icon(doc, 'stop')]);
    var sendBtn = h(doc, 'button', { type: 'submit', 'class': 'icon send', 'data-testid': 'send', 'aria-label': 'Send message', title: 'Send (Enter)', disabled: true }, [icon(doc, 'send')]);
    var form = h(doc, 'form', { 'class': 'composer', novalidate: true }, [inputLabel, hint, input, stopBtn, sendBtn]);

    var main = h(doc, 'div', { 'class': 'main' }, [list, bar, form, drawer && drawer.scrim, drawer && drawer.panel]);
    var rootEl = h(doc, 'div', { 'class': 'bc', part: 'container', 'data-state': 'idle', 'data-theme': opts.theme, role: 'region', 'aria-labelledby': uid + '-title' }, [header, main]);
    host.appendChild(rootEl);

    var errorRow = null;
    var raf = root.requestAnimationFrame ? root.requestAnimationFrame.bind(root) : function (f) { return setTimeout(f, 16); };
    var caf = root.cancelAnimationFrame ? root.cancelAnimationFrame.bind(root) : clearTimeout;

    var view = {
      state: 'idle',
      destroyed: false,
      shadow: shadow,
      badge: badge,
      drawer: drawer,
      setState: function (s) {
        view.state = s;
        rootEl.setAttribute('data-state', s);
        var busy = s === 'streaming';
        stopBtn.hidden = !busy;
        sendBtn.hidden = busy;
        updateSendEnabled();
        list.setAttribute('aria-busy', busy ? 'true' : 'false');
      },
      setStatus: function (text) { statusEl.textContent = text || ''; },
      setTokens: function (n, final) {
        if (n == null) { tokensEl.hidden = true; tokensEl.textContent = ''; tokensEl.setAttribute('data-count', '0'); return; }
        tokensEl.hidden = false;
        tokensEl.setAttribute('data-count', String(n));
        tokensEl.setAttribute('data-final', final ? 'true' : 'false');
        tokensEl.textContent = n + (n === 1 ? ' token' : ' tokens');
      },
      setHistoryState: function (s) { rootEl.setAttribute('data-history', s); },
      /** 'reconnecting' (shown on the status bar and the reply), 'stopping' or 'connected'. */
      setConnection: function (s) { rootEl.setAttribute('data-connection', s); },
      focusInside: function () { return shadow ? !!shadow.activeElement : rootEl.contains(doc.activeElement); },
      focusInput: function () {
        if (view.destroyed) return;
        try { input.focus({ preventScroll: true }); } catch (_) { input.focus(); }
      },
      autofocus: function () { try { input.focus(); } catch (_) { /* ignore */ } },
      scrollToBottom: scrollToBottom,
      addUserRow: addUserRow,
      startReply: startReply,
      showHistory: showHistory,
      showError: showError,
      removeErrorRow: removeErrorRow,
      /** Retry replaces the failed reply rather than leaving it above the new one. */
      removeFailedReply: function () {
        var rows = list.querySelectorAll('.row.assistant');
        var last = rows[rows.length - 1];
        if (last && last.getAttribute('data-result') === 'error') last.parentNode.removeChild(last);
      },
      reset: function () {
        errorRow = null;
        while (list.firstChild) list.removeChild(list.firstChild);
        list.appendChild(emptyEl);
        view.setStatus('');
        view.setTokens(null);
        view.setState('idle');
      },
      destroy: function () {
        view.destroyed = true;
        while (host.firstChild) host.removeChild(host.firstChild);
        if (shadow && 'adoptedStyleSheets' in shadow) try { shadow.adoptedStyleSheets = []; } catch (_) { /* ignore */ }
      }
    };

    function updateSendEnabled() { sendBtn.disabled = view.state === 'streaming' || !input.value.trim(); }
    function nearBottom() { return list.scrollHeight - list.scrollTop - list.clientHeight < 48; }
    function scrollToBottom() { list.scrollTop = list.scrollHeight; }
    function hideEmpty() { if (emptyEl.parentNode) emptyEl.parentNode.removeChild(emptyEl); }

    function addUserRow(text, before) {
      hideEmpty();
      var bubble = h(doc, 'div', { 'class': 'bubble', 'data-testid': 'message-user' });
      bubble.appendChild(doc.createTextNode(text));
      var row = h(doc, 'div', { 'class': 'row user', 'data-role': 'user' }, [h(doc, 'span', { 'class': 'sr', text: 'You said:' }), bubble]);
      list.insertBefore(row, before || null);
      return row;
    }
    function addAssistantRow(before) {
      hideEmpty();
      var bubble = h(doc, 'div', { 'class': 'bubble' + (opts.markdown ? ' md' : ''), 'data-testid': 'message-assistant', 'aria-live': 'polite', 'aria-atomic': 'true' });
      var meta = h(doc, 'div', { 'class': 'meta', 'data-testid': 'message-meta', hidden: true });
      var row = h(doc, 'div', { 'class': 'row assistant', 'data-role': 'assistant' }, [h(doc, 'span', { 'class': 'sr', text: 'Assistant said:' }), bubble, meta]);
      list.insertBefore(row, before || null);
      return { row: row, bubble: bubble, meta: meta, textNode: null, deco: null, think: null };
    }
    /** The collapsed "Thinking..." section above a reply: the model's reasoning, expandable, apart from the text. */
    function setReasoning(rv, text, thinking) {
      if (!rv.think) {
        var body = h(doc, 'div', { 'class': 'think-text', 'data-testid': 'reasoning-text' });
        var summary = h(doc, 'summary', { 'data-testid': 'reasoning-summary' });
        rv.think = h(doc, 'details', { 'class': 'think', 'data-testid': 'reasoning' }, [summary, body]);
        rv.row.insertBefore(rv.think, rv.bubble);
      }
      rv.think.firstChild.textContent = thinking ? 'Thinking…' : 'Thoughts';
      if (rv.think.lastChild.textContent !== text) rv.think.lastChild.textContent = text;
    }
    function setDeclined(rv, text) {
      if (!text) return;
      var note = h(doc, 'div', { 'class': 'declined', 'data-testid': 'declined', role: 'note', text: text });
      rv.row.insertBefore(note, rv.meta);
    }
    function setMeta(rv, text) {
      rv.meta.textContent = text;
      rv.meta.hidden = !text;
    }
    function renderContent(rv, content, streaming) {
      var b = rv.bubble;
      if (rv.deco && rv.deco.parentNode) rv.deco.parentNode.removeChild(rv.deco);
      rv.deco = null;
      if (opts.markdown) {
        while (b.firstChild) b.removeChild(b.firstChild);
        b.appendChild(renderMarkdown(content, doc));
        if (!streaming) addCopyButtons(b, doc, root);
      } else {
        if (!rv.textNode || rv.textNode.parentNode !== b) {
          while (b.firstChild) b.removeChild(b.firstChild);
          rv.textNode = doc.createTextNode('');
          b.appendChild(rv.textNode);
        }
        if (rv.textNode.data !== content) rv.textNode.data = content;
      }
      if (streaming && !content) {
        rv.deco = h(doc, 'span', { 'class': 'typing', 'aria-hidden': 'true' }, [h(doc, 'i'), h(doc, 'i'), h(doc, 'i')]);
        b.appendChild(rv.deco);
      } else if (streaming) {
        var caret = rv.deco = h(doc, 'span', { 'class': 'caret', 'aria-hidden': 'true' });
        var last = b.lastChild;
        if (opts.markdown && last && last.nodeType === 1 && /^(P|LI|UL|OL)$/.test(last.nodeName)) {
          while (last.lastChild && last.lastChild.nodeType === 1 && /^(LI|UL|OL)$/.test(last.lastChild.nodeName)) last = last.lastChild;
          last.appendChild(caret);
        } else b.appendChild(caret);
      }
    }
    /** The bubble of a streaming reply: typing dots, then the text as it grows, then the outcome. */
    function startReply() {
      var rv = addAssistantRow();
      rv.bubble.setAttribute('aria-busy', 'true');
      renderContent(rv, '', true);
      scrollToBottom();
      var frame = null;
      var timer = null;
      var paintCost = 0;
      var ended = false;
      function paint(reply, streaming) {
        var stick = nearBottom();
        var t0 = Date.now();
        renderContent(rv, reply.content, streaming);
        paintCost = Date.now() - t0;
        view.setTokens(reply.tokens, !streaming);
        if (stick) scrollToBottom();
      }
      return {
        setStreamId: function (id) { rv.row.setAttribute('data-stream-id', id); },
        reason: function (reply) { if (!ended) setReasoning(rv, reply.reasoning, true); },
        // At most one paint per animation frame. Markdown re-parses the whole reply on each
        // paint, so for very long replies the paints are spaced out to keep the page responsive.
        update: function (reply) {
          if (frame !== null || timer || ended) return;
          function inNextFrame() {
            frame = raf(function () { frame = null; if (!ended) paint(reply, true); });
          }
          var wait = paintCost > 6 ? Math.min(paintCost * 3, 400) : 0;
          if (wait) timer = setTimeout(function () { timer = null; if (!ended) inNextFrame(); }, wait);
          else inNextFrame();
        },
        end: function (reply, outcome) {
          ended = true;
          if (frame !== null) { caf(frame); frame = null; }
          if (timer) { clearTimeout(timer); timer = null; }
          if (!outcome.keepBubble) {
            if (rv.row.parentNode) rv.row.parentNode.removeChild(rv.row);
            return;
          }
          paint(reply, false);
          if (reply.reasoning) setReasoning(rv, reply.reasoning, false);
          setDeclined(rv, outcome.declined);
          rv.bubble.setAttribute('aria-busy', 'false');
          if (outcome.incomplete) rv.bubble.setAttribute('data-incomplete', 'true');
          setMeta(rv, outcome.meta);
          rv.row.setAttribute('data-result', outcome.state);
        }
      };
    }

    /** Past messages go above anything already sent in this session. */
    function showHistory(msgs) {
      var anchor = list.firstChild === emptyEl ? null : list.firstChild;
      var shown = 0;
      msgs.forEach(function (m) {
        if (!m || typeof m.content !== 'string') return;
        if (m.role === 'user') { addUserRow(m.content, anchor); shown++; }
        else if (m.role === 'assistant') {
          var rv = addAssistantRow(anchor);
          renderContent(rv, m.content, false);
          rv.bubble.setAttribute('aria-live', 'off');
          if (m.metadata && typeof m.metadata.reasoning === 'string' && m.metadata.reasoning) setReasoning(rv, m.metadata.reasoning, false);
          setDeclined(rv, declinedText(m.metadata && m.metadata.declined));
          setMeta(rv, metaParts(m.metadata || {}).join(' · '));
          rv.row.setAttribute('data-history', 'true');
          shown++;
        }
      });
      if (shown) scrollToBottom();
    }

    function showError(error) {
      removeErrorRow();
      hideEmpty();
      var msg = h(doc, 'div', { 'class': 'msg', 'data-testid': 'error', 'data-code': error.code, role: 'alert', text: error.message });
      var children = [h(doc, 'span', { 'class': 'ico', 'aria-hidden': 'true', text: '!' }), msg];
      if (error.retry) {
        var retry = h(doc, 'button', { type: 'button', 'class': 'retry', 'data-testid': 'retry', text: 'Retry', 'aria-label': 'Retry the last message' });
        retry.addEventListener('click', function () { actions.retry(); });
        children.push(retry);
      }
      errorRow = h(doc, 'div', { 'class': 'row err', 'data-role': 'error' }, [h(doc, 'div', { 'class': 'box' }, children)]);
      if (error.retryAfter > 0) countDown(errorRow, msg, children[2], Math.ceil(error.retryAfter));
      list.appendChild(errorRow);
      scrollToBottom();
    }
    /** The server's 429 (a limit): "Try again in N s", counting down; Retry waits for it. */
    function countDown(row, msg, retry, seconds) {
      var wait = h(doc, 'span', { 'class': 'wait', 'data-testid': 'retry-countdown' });
      msg.appendChild(wait);
      if (retry) retry.disabled = true;
      function tick() {
        if (row !== errorRow) return; // replaced by another error, or removed
        wait.textContent = seconds > 0 ? ' Try again in ' + seconds + ' s.' : ' You can try again now.';
        if (seconds <= 0) { if (retry) retry.disabled = false; return; }
        seconds--;
        setTimeout(tick, 1000);
      }
      tick();
    }
    function removeErrorRow() {
      if (errorRow && errorRow.parentNode) errorRow.parentNode.removeChild(errorRow);
      errorRow = null;
    }

    // --- composer and keyboard ------------------------------------------------
    function autosize() {
      input.style.height = 'auto';
      input.style.height = Math.min(input.scrollHeight + 2, 160) + 'px';
    }
    function submitFromInput() {
      var text = input.value;
      if (!text.trim() || view.state === 'streaming') return;
      input.value = '';
      autosize();
      updateSendEnabled();
      actions.send(text);
      view.focusInput();
    }
    form.addEventListener('submit', function (e) { e.preventDefault(); submitFromInput(); });
    input.addEventListener('input', function () { autosize(); updateSendEnabled(); });
    input.addEventListener('keydown', function (e) {
      if (e.key === 'Enter' && !e.shiftKey && !e.altKey && !e.isComposing && e.keyCode !== 229) {
        e.preventDefault();
        submitFromInput();
      } else if (e.key === 'Escape' && view.state === 'streaming') {
        e.preventDefault();
        actions.stop();
      }
    });
    stopBtn.addEventListener('click', function () { actions.stop(); view.focusInput(); });
    newBtn.addEventListener('click', function () { actions.clear(); view.focusInput(); });
    list.addEventListener('keydown', function (e) {
      if (e.key === 'Escape' && view.state === 'streaming') { e.preventDefault(); actions.stop(); }
    });

    return view;
  }

  // ---------------------------------------------------------------------------
  // mount(): the widget's state `w` ({doc, target, opts, history, view, list, active, ...}),
  // shared by the short functions below.
  // ---------------------------------------------------------------------------

  function mergeOptions(userOptions) {
    var opts = {};
    var key;
    for (key in DEFAULTS) opts[key] = DEFAULTS[key];
    if (userOptions) for (key in userOptions) if (userOptions[key] !== undefined) opts[key] = userOptions[key];
    if (!opts.endpoint) opts.endpoint = DEFAULTS.endpoint;
    if (opts.conversationList && !conversationsUrl(opts)) opts.conversationList = false;
    if (opts.deleteOnClear == null) opts.deleteOnClear = !opts.conversationList; // the list keeps old conversations
    return opts;
  }

  function mount(target, userOptions) {
    if (!root.document) throw new Error('BuppleChat.mount needs a browser DOM');
    var doc = root.document;
    if (typeof target === 'string') target = doc.querySelector(target);
    if (!target || target.nodeType !== 1) throw new TypeError('BuppleChat.mount: a target element is required');
    if (target.buppleChat && typeof target.buppleChat.destroy === 'function') target.buppleChat.destroy();
    var opts = mergeOptions(userOptions);
    var w = { doc: doc, target: target, opts: opts, destroyed: false, active: null, lastUserText: null,
      restored: false, identityReady: null, list: null, api: null };
    w.request = function (url, init) { return widgetRequest(w, url, init); };
    w.history = createHistory(opts, w.request);
    w.view = createView(doc, target, opts, viewActions(w));
    if (opts.conversationList) w.list = createConversationList(opts, w.request, function () { drawList(w); });
    target.setAttribute('data-bupple-chat', '');
    var api = w.api = createApi(w);
    target.buppleChat = api;
    instances.push(api);
    api.ready = boot(w);
    // After /me: on a page that set no cookie, two first requests at once would each get a new anonymous identity.
    w.identityReady.then(function () { checkMockProvider(w); });
    if (opts.autofocus) w.view.autofocus();
    return api;
  }

  function viewActions(w) {
    return {
      send: function (text) { w.api.send(text); },
      stop: function () { w.api.stop(); },
      clear: function () { w.api.clear(); },
      retry: function () { w.api.retry(); },
      openConversation: function (id) { openConversation(w, id); w.view.focusInput(); },
      renameConversation: function (id, title) { return renameFromList(w, id, title); },
      deleteConversation: function (id) { return deleteFromList(w, id); },
      moreConversations: function () { return w.list.loadMore(); },
      listShown: function () { refreshList(w); } // another tab may have changed it: one GET per opening
    };
  }

  function emit(w, name, detail) {
    if (w.destroyed) return;
    var ev;
    try { ev = new root.CustomEvent('bupple:' + name, { detail: detail, bubbles: true, composed: true }); }
    catch (_) { ev = w.doc.createEvent('CustomEvent'); ev.initCustomEvent('bupple:' + name, true, false, detail); }
    w.target.dispatchEvent(ev);
  }

  /** The headers option (object, function, or Promise of one) over `base`. */
  function userHeaders(opts, base) {
    var out = {};
    var k;
    for (k in base) out[k] = base[k];
    var extraHeaders = typeof opts.headers === 'function' ? opts.headers() : opts.headers;
    return Promise.resolve(extraHeaders).then(function (hs) {
      if (hs) for (k in hs) if (hs[k] != null) out[k] = String(hs[k]);
      return out;
    });
  }
  /** fetch for the JSON side requests (me, history, conversations, providers): headers, CSRF on writes, credentials. */
  function widgetRequest(w, url, init) {
    var base = { Accept: 'application/json' };
    if (init.body != null) base['Content-Type'] = 'application/json';
    return userHeaders(w.opts, base).then(function (headers) {
      init.headers = withCsrf(headers, init.method, csrfToken(w.opts, w.doc));
      init.credentials = w.opts.credentials;
      return root.fetch(url, init);
    });
  }

  /** Who is asking decides which stored conversation opens (never another identity's); then its history. */
  function boot(w) {
    w.identityReady = resolveIdentity(w.opts, typeof root.fetch === 'function' ? w.request : null).then(function (who) {
      if (w.destroyed) return who;
      var key = who.known && !who.identity ? null : storageKeyFor(w.opts, who.identity);
      w.history.restore(key, who.identity ? storageKeyFor(w.opts, null) : null);
      w.restored = true;
      if (who.error && (who.error.status === 401 || who.error.status === 403)) showProblem(w, who.error);
      if (w.history.id) w.target.setAttribute('data-conversation-id', w.history.id);
      drawList(w);
      return who;
    });
    return w.identityReady.then(function () { return !w.destroyed && w.history.id ? loadHistory(w) : null; });
  }

  function showProblem(w, error) {
    w.view.showError({ message: error.error, code: error.code, retry: false });
  }

  function rememberConversation(w, id) {
    w.history.remember(id);
    w.target.setAttribute('data-conversation-id', id);
    drawList(w);
  }
  /** The server named this reply's conversation: a new one when the widget had none. */
  function adoptConversation(w, id) {
    if (id === w.history.id) return;
    var isNew = !w.history.id;
    rememberConversation(w, id);
    if (isNew && w.list) w.list.keep({ id: id, title: w.lastUserText, updated_at: new Date().toISOString() });
    emit(w, 'conversation', { conversation_id: id, created: isNew });
    listChanged(w);
  }
  /** The conversation is gone or not the caller's (404): forget it here too. */
  function dropConversation(w, id) {
    if (!id) return;
    if (w.list) w.list.drop(id);
    if (w.history.id !== id) return;
    w.history.forget(false);
    w.target.removeAttribute('data-conversation-id');
    drawList(w);
  }

  // --- a reply: the model in createReply, its bubble in the view, the bytes from a transport ---
  function sendMessage(w, text) {
    if (w.destroyed) return Promise.resolve(nothingSent('destroyed'));
    text = text == null ? '' : String(text);
    if (!text.trim()) return Promise.resolve(nothingSent('empty'));
    if (w.view.state === 'streaming') return Promise.resolve(nothingSent('busy'));
    w.lastUserText = text;
    w.view.addUserRow(text);
    if (w.restored) return startReply(w, text);
    w.view.setState('streaming'); // who is asking is known a few milliseconds later
    return w.identityReady.then(function () { return w.destroyed ? nothingSent('destroyed') : startReply(w, text); });
  }
  function nothingSent(status) { return { status: status, content: '', payload: null }; }

  function startReply(w, text) {
    var view = w.view;
    view.removeErrorRow();
    if (!w.history.id && w.opts.clientConversationIds) rememberConversation(w, uuid());
    var bubble = view.startReply();
    var reply = createReply(text, function (name, detail) { onReplyEvent(w, reply, bubble, name, detail); });
    w.active = reply;
    view.setState('streaming');
    view.setStatus('Connecting…');
    view.setTokens(0);
    emit(w, 'send', { message: text, conversation_id: w.history.id });
    sendOver(w, reply, requestFields(w.opts, text, w.history.id));
    return reply.promise;
  }
  function sendOver(w, reply, fields) {
    var opts = w.opts;
    var transport = pickTransport(opts.transport);
    if (transport === 'eventsource') {
      streamWithEventSource(reply, { url: eventSourceUrl(opts.endpoint, fields), withCredentials: opts.credentials === 'include',
        reconnect: opts.reconnect ? undefined : false, credentials: opts.credentials,
        stopUrl: streamUrl(opts, 'x') ? function (id) { return streamUrl(opts, id) + '/stop'; } : null,
        stopHeaders: userHeaders(opts, {}).then(function (hs) { return withCsrf(hs, 'POST', csrfToken(opts, w.doc)); }) });
    } else if (transport === 'fetch') {
      var headers = userHeaders(opts, { 'Content-Type': 'application/json', Accept: 'text/event-stream' }).then(function (hs) {
        return withCsrf(hs, 'POST', csrfToken(opts, w.doc));
      });
      var hasStreams = !!streamUrl(opts, 'x');
      streamWithFetch(reply, { url: opts.endpoint, body: fields, headers: headers, credentials: opts.credentials,
        reconnect: opts.reconnect && typeof opts.reconnect === 'object' ? opts.reconnect : undefined,
        streamUrl: hasStreams && opts.reconnect ? function (id) { return streamUrl(opts, id); } : null,
        stopUrl: hasStreams ? function (id) { return streamUrl(opts, id) + '/stop'; } : null });
    } else {
      reply.fail({ type: 'error', error: 'This browser cannot stream replies (no fetch or EventSource).', code: 'unsupported', done: true, retryable: false });
    }
  }
  function onReplyEvent(w, reply, bubble, name, detail) {
    if (w.destroyed) return; // its DOM is gone
    if (name === 'conversation') {
      adoptConversation(w, detail.conversation_id);
    } else if (name === 'status') {
      w.view.setStatus(detail.message || '');
      if (detail.stream_id) bubble.setStreamId(detail.stream_id);
      emit(w, 'status', detail);
    } else if (name === 'chunk') {
      if (reply.chunks === 1) w.view.setStatus('Replying…'); // the server's "Starting..." is over
      bubble.update(reply);
      emit(w, 'chunk', detail);
    } else if (name === 'reasoning') {
      if (!reply.chunks) w.view.setStatus('Thinking…'); // the model thinks before it answers
      bubble.reason(reply);
      emit(w, 'reasoning', detail);
    } else if (name === 'reconnecting' || name === 'reconnected' || name === 'stopping' || name === 'resend') {
      onConnection(w, reply, bubble, name, detail);
    } else if (name === 'end') {
      endReply(w, reply, bubble);
    } else if (name !== 'completion') {
      emit(w, name, detail); // done | error | stop
    }
  }
  /** A lost connection being re-attached, Stop waiting for the server, a question asked again after a shutdown. */
  function onConnection(w, reply, bubble, name, detail) {
    var reconnecting = name === 'reconnecting';
    w.view.setConnection(reconnecting ? 'reconnecting' : name === 'stopping' ? 'stopping' : 'connected');
    if (reconnecting) w.view.setStatus('Reconnecting…');
    else if (name === 'stopping') w.view.setStatus('Stopping…');
    else if (name === 'resend') { w.view.setStatus('The server restarted: asking again…'); bubble.update(reply); }
    else w.view.setStatus(reply.chunks ? 'Replying…' : '');
    emit(w, name, detail);
  }
  function endReply(w, reply, bubble) {
    var view = w.view;
    var outcome = replyOutcome(reply);
    var hadFocus = view.focusInside();
    bubble.end(reply, outcome);
    view.setTokens(outcome.tokens, true);
    view.setStatus(outcome.status);
    view.setConnection('connected');
    if (w.active === reply) w.active = null;
    view.setState(outcome.state);
    if (outcome.error) {
      if (outcome.error.code === 'conversation_not_found') dropConversation(w, w.history.id);
      view.showError({ message: outcome.error.message, code: outcome.error.code, retry: outcome.error.retry && w.lastUserText != null, retryAfter: outcome.error.retryAfter });
    }
    if (outcome.keepBubble) listChanged(w); // a new title, a later updated_at
    if (hadFocus) view.focusInput();
  }

  // --- history and the conversation list -----------------------------------
  function loadHistory(w) {
    var pending = w.history.load();
    if (!pending) return Promise.resolve(null);
    var forId = w.history.id;
    w.view.setHistoryState('loading');
    return pending.then(function (r) {
      if (w.destroyed || r.stale) return null;
      w.view.setHistoryState('loaded');
      if (r.error) {
        if (r.error.code === 'conversation_not_found') dropConversation(w, forId);
        if (r.error.code === 'conversation_not_found' || r.error.retryable === false) showProblem(w, r.error);
        return null;
      }
      if (r.messages) showPastMessages(w, forId, r.messages);
      return r.messages;
    });
  }
  function showPastMessages(w, forId, msgs) {
    w.view.showHistory(msgs);
    if (w.lastUserText === null) {
      for (var i = msgs.length - 1; i >= 0; i--) if (msgs[i] && msgs[i].role === 'user') { w.lastUserText = msgs[i].content; break; }
    }
    emit(w, 'history', { conversation_id: forId, messages: msgs });
  }
  /** Stop what is going on and empty the view, for another conversation or a new one. */
  function resetConversation(w) {
    if (w.active) w.active.stop();
    w.history.abort();
    w.lastUserText = null;
    w.view.reset();
  }
  function openConversation(w, id) {
    if (w.destroyed || !id || id === w.history.id) return Promise.resolve(null);
    resetConversation(w);
    rememberConversation(w, id);
    emit(w, 'switch', { conversation_id: id });
    return loadHistory(w);
  }
  function startNewChat(w, deleteOld) {
    resetConversation(w);
    var old = w.history.forget(deleteOld);
    if (deleteOld && old && w.list) w.list.drop(old);
    w.target.removeAttribute('data-conversation-id');
    drawList(w);
    emit(w, 'clear', { conversation_id: old });
  }
  function renameFromList(w, id, title) {
    return w.list.rename(id, title).then(function (r) {
      if (r.ok) emit(w, 'rename', { conversation_id: id, title: String(title).trim() });
      return r;
    });
  }
  function deleteFromList(w, id) {
    return w.list.remove(id).then(function (r) {
      var gone = r.ok || (r.error && r.error.code === 'conversation_not_found');
      if (gone && id === w.history.id) startNewChat(w, false);
      if (r.ok) emit(w, 'delete', { conversation_id: id });
      return r;
    });
  }
  function drawList(w) { if (w.list && !w.destroyed) w.view.drawer.render(w.list, w.history.id); }
  function refreshList(w) { return w.list.refresh(); }
  /** The list is out of date: reload it now if it is on screen (else it is when next opened). */
  function listChanged(w) {
    if (w.list && w.view.drawer.isOpen()) refreshList(w);
  }

  function checkMockProvider(w) {
    var url = providersUrl(w.opts);
    if (!w.opts.showMockNotice || !url || typeof root.fetch !== 'function') return;
    fetchJSON(w.request, url, { cache: 'no-store' }).then(function (r) {
      var data = r.data;
      if (!r.ok || !data || w.destroyed) return;
      var list = Array.isArray(data.providers) ? data.providers : [];
      var name = w.opts.provider || data['default'];
      var entry = null;
      for (var i = 0; i < list.length; i++) if (list[i] && list[i].name === name) entry = list[i];
      var isMock = w.opts.provider ? !!(entry && entry.mock) : (name === 'mock' || !!(entry && entry.mock));
      w.view.badge.hidden = !isMock;
      if (isMock) emit(w, 'mock', { provider: name });
    });
  }

  // --- public API ----------------------------------------------------------
  function createApi(w) {
    return {
      element: w.target,
      shadowRoot: w.view.shadow,
      options: w.opts,
      version: VERSION,
      /** Send a message; resolves with {status: 'done'|'error'|'stopped'|'busy'|'empty', content, payload}. */
      send: function (text) { return sendMessage(w, text); },
      /** Send the last user message again (used by the Retry button). Never called automatically. */
      retry: function () { return retryLast(w); },
      /** Stop the reply being streamed: the server is asked to stop it (its stopped completion ends it), then the
       * request is aborted; a second stop() ends it at once. The partial text stays, marked stopped. */
      stop: function () { if (w.active) w.active.requestStop(); },
      /** Start a new conversation (the server makes its id on the first message); deleteOnClear deletes the old one. */
      clear: function () { startNewChat(w, w.opts.deleteOnClear); },
      /** Show another of the caller's conversations (its history is loaded). */
      openConversation: function (id) { return openConversation(w, id); },
      /** Reload the conversation list (conversationList only). */
      refreshConversations: function () { return w.list ? refreshList(w) : Promise.resolve(null); },
      /** Remove the widget and stop everything it was doing. */
      destroy: function () { destroyWidget(w); },
      get conversationId() { return w.history.id; },
      get conversations() { return w.list ? w.list.items.slice() : null; },
      get state() { return w.view.state; },
      get busy() { return w.view.state === 'streaming'; },
      /** Promise that settles when the identity and the history request (if any) are done. */
      ready: null
    };
  }
  function retryLast(w) {
    if (w.destroyed || w.view.state === 'streaming' || w.lastUserText == null) return Promise.resolve(nothingSent('busy'));
    w.view.removeFailedReply();
    var hadFocus = w.view.focusInside();
    var p = startReply(w, w.lastUserText);
    if (hadFocus) w.view.focusInput();
    return p;
  }
  function destroyWidget(w) {
    if (w.destroyed) return;
    if (w.active) w.active.stop();
    w.history.abort();
    w.destroyed = true;
    w.view.destroy();
    w.target.removeAttribute('data-bupple-chat');
    w.target.removeAttribute('data-conversation-id');
    if (w.target.buppleChat === w.api) try { delete w.target.buppleChat; } catch (_) { w.target.buppleChat = undefined; }
    var idx = instances.indexOf(w.api);
    if (idx !== -1) instances.splice(idx, 1);
  }

  // ---------------------------------------------------------------------------
  // <script data-endpoint=... data-target=...> auto-mount
  // ---------------------------------------------------------------------------

  function parseBool(v, dflt) {
    if (v === undefined || v === null) return dflt;
    return !/^(false|0|no|off)$/i.test(String(v).trim());
  }
  function parseJSONAttr(v) {
    if (!v) return undefined;
    try { return JSON.parse(v); } catch (_) { return undefined; }
  }

  function urlOrFalse(v) { return v === 'false' ? false : (v || undefined); }

  /** Options read from a script tag's data-* attributes. */
  function optionsFromDataset(ds) {
    return {
      endpoint: ds.endpoint || undefined,
      title: ds.title || undefined,
      placeholder: ds.placeholder || undefined,
      welcome: ds.welcome || undefined,
      provider: ds.provider || undefined,
      model: ds.model || undefined,
      transport: ds.transport || undefined,
      theme: ds.theme || undefined,
      markdown: parseBool(ds.markdown, undefined),
      showMockNotice: parseBool(ds.showMockNotice, undefined),
      persist: parseBool(ds.persist, undefined),
      autofocus: parseBool(ds.autofocus, undefined),
      historyEndpoint: urlOrFalse(ds.historyEndpoint),
      deleteEndpoint: urlOrFalse(ds.deleteEndpoint),
      providersEndpoint: urlOrFalse(ds.providersEndpoint),
      conversationsEndpoint: urlOrFalse(ds.conversationsEndpoint),
      streamsEndpoint: urlOrFalse(ds.streamsEndpoint),
      reconnect: parseBool(ds.reconnect, undefined),
      meEndpoint: urlOrFalse(ds.meEndpoint),
      identity: ds.identity || undefined,
      csrfToken: ds.csrfToken || undefined,
      conversationList: parseBool(ds.conversationList, undefined),
      conversationPageSize: ds.conversationPageSize ? parseInt(ds.conversationPageSize, 10) || undefined : undefined,
      clientConversationIds: parseBool(ds.clientConversationIds, undefined),
      deleteOnClear: parseBool(ds.deleteOnClear, undefined),
      storageKey: ds.storageKey || undefined,
      credentials: ds.credentials || undefined,
      headers: parseJSONAttr(ds.headers),
      extra: parseJSONAttr(ds.extra)
    };
  }

  function autoMount() {
    var doc = root.document;
    var script = doc && doc.currentScript;
    if (!script || !script.dataset || !(script.hasAttribute('data-endpoint') || script.hasAttribute('data-target'))) return;
    var selector = script.getAttribute('data-target');
    var done = false;
    function attempt(final) {
      if (done) return;
      var target = selector ? doc.querySelector(selector) : null;
      if (!target) {
        if (!final) return;
        if (selector && typeof console !== 'undefined') console.warn('[bupple-chat] target ' + selector + ' not found; mounting after the script tag');
        target = doc.createElement('div');
        if (script.parentNode) script.parentNode.insertBefore(target, script.nextSibling);
        else doc.body.appendChild(target);
      }
      done = true;
      mount(target, optionsFromDataset(script.dataset));
    }
    if (doc.readyState === 'loading') {
      attempt(false);
      if (!done) doc.addEventListener('DOMContentLoaded', function () { attempt(true); });
    } else {
      attempt(true);
    }
  }

  return {
    version: VERSION,
    mount: mount,
    instances: instances,
    createSSEParser: createSSEParser,
    createReply: createReply,
    eventSeq: eventSeq,
    reconnectDefaults: RECONNECT,
    replyOutcome: replyOutcome,
    streamWithFetch: streamWithFetch,
    streamWithEventSource: streamWithEventSource,
    parseMarkdown: parseMarkdown,
    parseInline: parseInline,
    renderMarkdown: renderMarkdown,
    safeUrl: safeUrl,
    optionsFromDataset: optionsFromDataset,
    urls: {
      history: historyUrl,
      delete: deleteUrl,
      providers: providersUrl,
      conversations: conversationsUrl,
      conversation: conversationUrl,
      stream: streamUrl,
      me: meUrl,
      eventSource: eventSourceUrl
    },
    describeHttpError: describeHttpError,
    messages: { signIn: SIGN_IN, forbidden: FORBIDDEN, notAvailable: NOT_AVAILABLE },
    csrfToken: csrfToken,
    withCsrf: withCsrf,
    storageKeyFor: storageKeyFor,
    fetchJSON: fetchJSON,
    resolveIdentity: resolveIdentity,
    createConversationList: createConversationList,
    conversationTitle: conversationTitle,
    conversationWhen: conversationWhen,
    copyText: copyText,
    addCopyButtons: addCopyButtons,
    uuid: uuid,
    _autoMount: autoMount
  };
}));
