// The real `ai` package's client code (DefaultChatTransport + readUIMessageStream, what useChat runs)
// reading POST /api/chat. Driven by tests/test_ai_sdk.py; prints one JSON line with what it saw.
// Usage: node ai_sdk_client.mjs <base url> <chat id> <"abort"|"read"|"regenerate"> <body extras JSON> <earlier messages JSON>
// ("regenerate": the request useChat's regenerate() sends once it dropped the last answer)
// with CHAT_COOKIE in the environment: the visitor's cookie (its anonymous identity).
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const entry = path.join(here, '..', '.vendor', 'node_modules', 'ai', 'dist', 'index.js');
const { DefaultChatTransport, readUIMessageStream } = await import(pathToFileURL(entry).href);

const [base, chatId, mode, extra, earlier] = process.argv.slice(2);
const transport = new DefaultChatTransport({
  api: `${base}/api/chat`, body: JSON.parse(extra || '{}'), headers: { cookie: process.env.CHAT_COOKIE || '' },
});
const controller = new AbortController();
const messages = [...JSON.parse(earlier || '[]'), { id: 'u1', role: 'user', parts: [{ type: 'text', text: 'Why is the sky blue?' }] }];
const seen = { chunks: [], message: null, error: null, aborted: false };
try {
  const chunks = await transport.sendMessages({
    chatId, messages, abortSignal: controller.signal,
    trigger: mode === 'regenerate' ? 'regenerate-message' : 'submit-message',
    messageId: mode === 'regenerate' ? 'a-dropped' : undefined,
  });
  const recorded = chunks.pipeThrough(new TransformStream({
    transform(chunk, out) {
      seen.chunks.push(chunk);
      out.enqueue(chunk);
      if (mode === 'abort' && chunk.type === 'text-delta') {
        seen.aborted = true;
        controller.abort();
      }
    },
  }));
  for await (const message of readUIMessageStream({ stream: recorded, onError: (e) => { seen.error = String(e.message || e); } })) {
    seen.message = message;
  }
} catch (e) {
  seen.error = seen.error || `${e.name}: ${e.message}`;
}
process.stdout.write(JSON.stringify(seen) + '\n');
