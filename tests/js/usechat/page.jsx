// A small useChat page (React + @ai-sdk/react), bundled offline by esbuild for tests/test_ai_sdk.py.
import { useChat } from '@ai-sdk/react';
import { DefaultChatTransport } from 'ai';
import { useState } from 'react';
import { createRoot } from 'react-dom/client';

function Chat() {
  const [input, setInput] = useState('');
  const { messages, sendMessage, regenerate, status, stop, error } = useChat({
    transport: new DefaultChatTransport({ api: '/api/chat' }),
  });
  const busy = status === 'streaming' || status === 'submitted';
  return (
    <div>
      {messages.map((m) => (
        <div key={m.id} data-testid={`message-${m.role}`}>
          {m.parts.map((p, i) => (p.type === 'text' ? <span key={i}>{p.text}</span> : null))}
        </div>
      ))}
      <span data-testid="status">{status}</span>
      {error && <p role="alert" data-testid="error">{error.message}</p>}
      <form onSubmit={(e) => { e.preventDefault(); sendMessage({ text: input }); setInput(''); }}>
        <input data-testid="input" value={input} onChange={(e) => setInput(e.target.value)} />
        <button data-testid="send" disabled={busy}>Send</button>
        <button type="button" data-testid="stop" disabled={!busy} onClick={() => stop()}>Stop</button>
        <button type="button" data-testid="regenerate" disabled={busy} onClick={() => regenerate()}>Regenerate</button>
      </form>
    </div>
  );
}

createRoot(document.getElementById('root')).render(<Chat />);
