// A Vue 3 chat component for bupple_flask: plain ES module, no build step.
//
// It reads the server's Server-Sent Events with the SAME code the widget uses,
// window.BuppleChat.createReply + streamWithFetch from /bupple/bupple-chat.js (load that file with a
// classic <script> tag before this module; see index.html). The reply's text is copied into reactive
// state and shown with {{ }} text interpolation, which Vue escapes: model output is never rendered as HTML.
//
// So it behaves as the widget does: a connection that drops
// mid-reply shows "Reconnecting…" and is re-attached (GET /api/streams/<id> with Last-Event-ID), each chunk
// shown once; Stop asks the server to stop the stream (POST /api/streams/<id>/stop) and keeps the text shown.
//
// Behind a login it does what the widget does, with the widget's helpers: the server makes a new
// conversation's id (the first status event says it), the current id is kept per identity
// (GET /api/me's opaque hash), and every write sends the CSRF token of <meta name="csrf-token">.
import { ref, computed, watch, nextTick, onMounted, onBeforeUnmount } from 'vue';

function lib() {
  const BuppleChat = globalThis.BuppleChat;
  if (!BuppleChat || typeof BuppleChat.streamWithFetch !== 'function') {
    throw new Error('Load /bupple/bupple-chat.js with a <script> tag before ChatComponent.js');
  }
  return BuppleChat;
}

function readStorage(key) {
  try { return localStorage.getItem(key); } catch { return null; }
}
function writeStorage(key, value) {
  try { value ? localStorage.setItem(key, value) : localStorage.removeItem(key); } catch { /* storage disabled */ }
}

let nextId = 0;

export default {
  name: 'ChatComponent',
  props: {
    endpoint: { type: String, default: '/api/stream' },
    title: { type: String, default: 'Vue chat' },
    provider: { type: String, default: '' },
    model: { type: String, default: '' },
    headers: { type: Object, default: () => ({}) },
    extra: { type: Object, default: () => ({}) },
    csrfToken: { type: String, default: '' }, // default: <meta name="csrf-token" content="...">
  },
  emits: ['chunk', 'done', 'error'],

  setup(props, { emit }) {
    const BuppleChat = lib();
    const opts = { endpoint: props.endpoint, storageKey: `bupple-vue:conversation:${props.endpoint}` };
    let storageKey = null; // known once the server said who is asking

    const messages = ref([]); // { id, role, content, state: 'done'|'streaming'|'stopped'|'error', meta }
    const draft = ref('');
    const busy = ref(false);
    const status = ref('');
    const tokens = ref(null);
    const error = ref(null); // { message, code }
    const conversationId = ref('');
    const listEl = ref(null);
    const inputEl = ref(null);
    let active = null; // the reply being streamed
    let lastText = null;

    const canSend = computed(() => !busy.value && draft.value.trim().length > 0);
    const tokenLabel = computed(() => (tokens.value == null ? '' : `${tokens.value} ${tokens.value === 1 ? 'token' : 'tokens'}`));

    // Keep the newest text in view while it streams in.
    watch(
      () => { const last = messages.value[messages.value.length - 1]; return [messages.value.length, last && last.content, error.value]; },
      async () => { await nextTick(); const el = listEl.value; if (el) el.scrollTop = el.scrollHeight; },
    );

    /** Headers for a request; writes (POST, DELETE) carry the CSRF token. */
    function headersFor(method, base) {
      const token = BuppleChat.csrfToken({ csrfToken: props.csrfToken }, document);
      return BuppleChat.withCsrf({ ...base, ...props.headers }, method, token);
    }
    function request(url, init) {
      return fetch(url, { ...init, headers: headersFor(init.method, { Accept: 'application/json' }) });
    }
    function remember(id) {
      conversationId.value = id;
      if (storageKey) writeStorage(storageKey, id);
    }

    /** Who is asking (GET /api/me) decides which stored conversation is theirs; then its history. */
    async function restore() {
      const who = await BuppleChat.resolveIdentity(opts, request);
      if (who.error) error.value = { message: who.error.error, code: who.error.code };
      if (who.known && !who.identity) return;
      storageKey = BuppleChat.storageKeyFor(opts, who.identity);
      const sentFirst = conversationId.value; // a message may have gone before the answer came
      remember(sentFirst || readStorage(storageKey) || '');
      if (conversationId.value && !sentFirst) await loadHistory();
    }

    async function loadHistory() {
      const url = BuppleChat.urls.history(opts, conversationId.value);
      if (!url) return;
      try {
        const res = await request(url, {});
        if (res.status === 404) { remember(''); return; } // deleted, or not this user's
        if (!res.ok) return;
        const body = await res.json();
        const old = (body.messages || [])
          .filter((m) => (m.role === 'user' || m.role === 'assistant') && typeof m.content === 'string')
          .map((m) => ({ id: ++nextId, role: m.role, content: m.content, state: 'done', meta: metaText(m.metadata || {}) }));
        messages.value = old.concat(messages.value);
      } catch { /* history is optional */ }
    }

    function metaText(info) {
      const parts = [];
      if (info.provider) parts.push(info.model ? `${info.provider} · ${info.model}` : info.provider);
      const out = info.usage && info.usage.output_tokens;
      if (typeof out === 'number') parts.push(`${out} tokens`);
      return parts.join(' · ');
    }

    /** What the user sees of the reply being streamed, from the widget's reply model (the same events, ids, Stop). */
    function onReply(message, name, detail, reply) {
      if (name === 'conversation') remember(detail.conversation_id); // the server makes the ids: a new one comes first
      else if (name === 'status') status.value = detail.message || '';
      else if (name === 'chunk' || name === 'resend') {
        message.content = reply.content;
        tokens.value = reply.tokens;
        if (name === 'chunk') emit('chunk', detail);
        else status.value = 'The server restarted: asking again…';
      } else if (name === 'reconnecting') status.value = 'Reconnecting…';
      else if (name === 'reconnected') status.value = 'Replying…';
      else if (name === 'stopping') status.value = 'Stopping…';
      else if (name === 'end') finish(message, reply);
    }
    function finish(message, reply) {
      const shown = BuppleChat.replyOutcome(reply);
      message.content = reply.content;
      message.state = shown.state;
      message.meta = shown.state === 'done' ? metaText(reply.payload || {}) : shown.meta;
      if (!shown.keepBubble) messages.value = messages.value.filter((m) => m.id !== message.id);
      tokens.value = shown.tokens;
      if (shown.error) {
        if (shown.error.code === 'conversation_not_found') remember(''); // the next message starts a new one
        error.value = { message: shown.error.message, code: shown.error.code, retry: shown.error.retry };
        emit('error', reply.payload);
      } else if (shown.state === 'done') emit('done', reply.payload);
      busy.value = false;
      status.value = shown.status;
      active = null;
    }

    /**
     * One reply over the widget's fetch transport: a dropped connection is re-attached (Reconnecting…), each
     * chunk shown once; Stop asks the server to stop it; a server shutdown asks once more by itself.
     */
    function stream(text) {
      messages.value.push({ id: ++nextId, role: 'assistant', content: '', state: 'streaming', meta: '' });
      const message = messages.value[messages.value.length - 1]; // the reactive proxy
      busy.value = true;
      error.value = null;
      status.value = 'Connecting…';
      tokens.value = 0;
      const reply = active = BuppleChat.createReply(text, (name, detail, r) => onReply(message, name, detail, r));
      const body = { ...props.extra, message: text };
      if (conversationId.value) body.conversation_id = conversationId.value; // none: the server starts one
      if (props.provider) body.provider = props.provider;
      if (props.model) body.model = props.model;
      BuppleChat.streamWithFetch(reply, {
        url: props.endpoint,
        body,
        headers: headersFor('POST', { 'Content-Type': 'application/json', Accept: 'text/event-stream' }),
        credentials: 'same-origin',
        streamUrl: (id) => BuppleChat.urls.stream(opts, id),
        stopUrl: (id) => BuppleChat.urls.stream(opts, id) + '/stop',
      });
      return reply.promise;
    }

    function submit() {
      if (!canSend.value) return;
      const text = draft.value;
      draft.value = '';
      lastText = text;
      messages.value.push({ id: ++nextId, role: 'user', content: text, state: 'done', meta: '' });
      stream(text);
    }

    function onEnter(e) {
      if (e.shiftKey || e.isComposing) return; // Shift+Enter: new line
      e.preventDefault();
      submit();
    }

    function retry() {
      if (busy.value || lastText == null) return;
      const last = messages.value[messages.value.length - 1];
      if (last && last.role === 'assistant' && last.state === 'error') messages.value.pop(); // drop the failed partial reply
      stream(lastText);
      nextTick(() => inputEl.value && inputEl.value.focus());
    }

    function stop() {
      if (active) active.requestStop();
      nextTick(() => inputEl.value && inputEl.value.focus());
    }

    function newChat() {
      if (active) active.stop();
      const url = BuppleChat.urls.delete(opts, conversationId.value);
      if (url) request(url, { method: 'DELETE' }).catch(() => {});
      remember('');
      messages.value = [];
      error.value = null;
      tokens.value = null;
      lastText = null;
    }

    onMounted(() => { restore(); });
    onBeforeUnmount(() => { if (active) active.stop(); });

    return { messages, draft, busy, status, tokenLabel, error, listEl, inputEl, canSend, submit, onEnter, retry, stop, newChat };
  },

  template: `
    <section class="vchat" :aria-label="title">
      <header class="vchat-head">
        <h2>{{ title }}</h2>
        <button type="button" class="vchat-ghost" data-testid="new-chat" @click="newChat">New chat</button>
      </header>

      <div class="vchat-list" ref="listEl" role="log" aria-live="off" aria-label="Conversation" tabindex="0" data-testid="messages">
        <p v-if="!messages.length && !error" class="vchat-empty">Say hello. Replies stream in as they are written.</p>
        <div v-for="m in messages" :key="m.id" :class="['vchat-row', m.role]">
          <span class="vchat-sr">{{ m.role === 'user' ? 'You said:' : 'Assistant said:' }}</span>
          <div class="vchat-bubble"
               :data-testid="'message-' + m.role"
               :aria-live="m.role === 'assistant' ? 'polite' : null"
               :aria-busy="m.state === 'streaming' ? 'true' : 'false'">{{ m.content }}</div>
          <small v-if="m.meta" class="vchat-meta">{{ m.meta }}</small>
        </div>
        <div v-if="error" class="vchat-error">
          <span role="alert" data-testid="error" :data-code="error.code">{{ error.message }}</span>
          <button v-if="error.retry !== false" type="button" data-testid="retry" @click="retry">Retry</button>
        </div>
      </div>

      <div class="vchat-bar">
        <span role="status" data-testid="status">{{ status }}</span>
        <span data-testid="tokens" v-if="tokenLabel">{{ tokenLabel }}</span>
      </div>

      <form class="vchat-form" @submit.prevent="submit">
        <label for="vchat-input" class="vchat-sr">Message</label>
        <textarea id="vchat-input" ref="inputEl" v-model="draft" rows="2" data-testid="input"
                  placeholder="Type a message… (Enter sends, Shift+Enter adds a line)"
                  @keydown.enter="onEnter"></textarea>
        <button v-if="busy" type="button" class="vchat-stop" data-testid="stop" @click="stop">Stop</button>
        <button v-else type="submit" class="vchat-send" data-testid="send" :disabled="!canSend">Send</button>
      </form>
    </section>
  `,
};
