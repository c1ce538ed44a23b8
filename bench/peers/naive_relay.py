"""The relay most people write first: requests + iter_lines + Response.

A baseline, not a product: no heartbeats, no disconnect handling, no DB.
Run with the same ``gunicorn -k gevent`` config as the real server.
"""
import json
import os

import requests
from flask import Flask, Response, request

app = Flask(__name__)
BASE = os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:9100/v1")
http = requests.Session()


@app.route("/api/stream", methods=["GET", "POST"])
def stream() -> Response:
    msg = (request.get_json(silent=True) or {}).get("message") or request.args.get("message", "")
    up = http.post(f"{BASE}/chat/completions", stream=True, timeout=60,
                   headers={"Authorization": f"Bearer {os.environ.get('OPENAI_API_KEY', 'x')}"},
                   json={"model": "bench", "stream": True, "messages": [{"role": "user", "content": msg}]})

    def events():
        for n, line in enumerate(up.iter_lines(), 1):
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            delta = json.loads(line[6:])["choices"][0]["delta"].get("content")
            if delta:
                yield f"id: {n}\ndata: {json.dumps({'type': 'chunk', 'content': delta, 'done': False})}\n\n"
        yield f"data: {json.dumps({'type': 'completion', 'done': True})}\n\n"

    return Response(events(), mimetype="text/event-stream")


@app.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}
