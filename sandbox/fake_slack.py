"""A fake Slack: the Web API calls the deployer makes, and the response URLs of clicks.

It records every message posted, every update to it, and every ephemeral reply, and
``GET /messages`` returns them as JSON. It checks the bot token like Slack does
(``invalid_auth`` otherwise), so a missing or wrong secret fails here as it would there.
``PUT /outage`` with ``{"channel": C}`` makes posts to that channel fail with HTTP 503, as
during a Slack outage, until ``DELETE /outage``: how tests reach the notification DLQ.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from werkzeug.wrappers import Request, Response


@dataclass
class FakeSlack:
    bot_token: str
    team_id: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    outages: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _counter: itertools.count[int] = field(default_factory=itertools.count)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self.handle(Request(environ))(environ, start_response)

    def handle(self, request: Request) -> Response:
        if request.method == "GET" and request.path == "/messages":
            with self._lock:
                return _json(self.messages)
        if request.path == "/outage" and request.method in ("PUT", "DELETE"):
            return self._outage(request)
        if request.method == "POST" and request.path.startswith("/actions/"):
            return self._response_url(request)
        if request.method == "POST" and request.path.startswith("/api/"):
            return self._web_api(request.path.removeprefix("/api/"), request)
        return _json({"ok": False, "error": "unknown_method"}, status=404)

    def _params(self, request: Request) -> dict[str, Any]:
        if request.is_json:
            return dict(request.get_json())
        params: dict[str, Any] = request.form.to_dict()
        if isinstance(params.get("blocks"), str):
            params["blocks"] = json.loads(params["blocks"])
        return params

    def _web_api(self, method: str, request: Request) -> Response:  # noqa: PLR0911 - one answer per API method
        if request.headers.get("Authorization") != f"Bearer {self.bot_token}":
            return _json({"ok": False, "error": "invalid_auth"})
        params = self._params(request)
        with self._lock:
            if method == "auth.test":
                return _json({"ok": True, "team_id": self.team_id, "user_id": "UDEPLOYBOT"})
            if method == "chat.postMessage":
                if not params.get("channel"):
                    return _json({"ok": False, "error": "channel_not_found"})
                if params["channel"] in self.outages:
                    return _json({"ok": False, "error": "service_unavailable"}, status=503)
                ts = f"{int(time.time())}.{next(self._counter):06d}"
                message = {
                    "type": "message",
                    "channel": params["channel"],
                    "ts": ts,
                    "thread_ts": params.get("thread_ts"),
                    "reply_broadcast": bool(params.get("reply_broadcast")),
                    "text": params.get("text", ""),
                    "blocks": params.get("blocks", []),
                    "updates": [],
                }
                self.messages.append(message)
                return _json({"ok": True, "channel": params["channel"], "ts": ts})
            if method == "chat.update":
                message = self._find(params.get("channel"), params.get("ts"))
                if message is None:
                    return _json({"ok": False, "error": "message_not_found"})
                message["updates"].append({"text": message["text"], "blocks": message["blocks"]})
                message["text"], message["blocks"] = params.get("text", ""), params.get("blocks", [])
                return _json({"ok": True, "channel": message["channel"], "ts": message["ts"]})
        return _json({"ok": False, "error": "unknown_method"})

    def _outage(self, request: Request) -> Response:
        with self._lock:
            if request.method == "DELETE":
                self.outages.clear()
            else:
                self.outages.add(str((request.get_json(silent=True) or {}).get("channel", "")))
            return _json({"outages": sorted(self.outages)})

    def _response_url(self, request: Request) -> Response:
        body = request.get_json(silent=True) or {}
        with self._lock:
            self.messages.append(
                {
                    "type": "ephemeral",
                    "responseUrl": request.url,
                    "text": body.get("text", ""),
                    "responseType": body.get("response_type"),
                }
            )
        return Response("ok")

    def _find(self, channel: str | None, ts: str | None) -> dict[str, Any] | None:
        return next((m for m in self.messages if m.get("channel") == channel and m.get("ts") == ts), None)


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")
