"""Gives every Step Functions execution a name, which moto 5.2.5 does not when none is given.

On AWS, StartExecution without ``name`` runs under a generated UUID, and that name is
``$$.Execution.Name`` and the last part of the execution ARN. moto's ASL interpreter
leaves the name None (the ARN ends in ``:None`` and ``$$.Execution.Name`` is null), so a
console-style start would break every state that uses it. This fills the name in
before moto sees the request, as AWS would.
"""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

START_EXECUTION = "AWSStepFunctions.StartExecution"


def name_unnamed_execution(environ: dict[str, Any]) -> None:
    if environ.get("HTTP_X_AMZ_TARGET") != START_EXECUTION:
        return
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = json.loads(environ["wsgi.input"].read(length) or b"{}")
    if not body.get("name"):
        body["name"] = str(uuid.uuid4())
    raw = json.dumps(body).encode()
    environ["wsgi.input"] = io.BytesIO(raw)
    environ["CONTENT_LENGTH"] = str(len(raw))
