"""Step Functions' service integrations run as the execution's role, which moto 5.2.5 does not do.

On AWS a Task's Lambda invocation or PutEvents is made with the state machine's role (or the
task's ``Credentials``). moto's ASL interpreter signs every one with the same fixed key
(``moto.stepfunctions.parser.asl.utils.boto_client.boto_client_for`` passes
``aws_access_key_id="ak"`` to ``boto3.client``), so IAM could not tell one state machine from
another. This stands in for ``boto3`` in that one module: each client is signed with a key that
``sandbox.iam`` maps to the role ``boto_client_for`` was given (its ``state_credentials``, read
from the caller's frame, since moto passes it to nothing else). Every module of the interpreter
calls that one function, so nothing else is patched, and nothing of moto is copied.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
from collections.abc import Callable
from typing import Any

import boto3

MODULE = "moto.stepfunctions.parser.asl.utils.boto_client"


def role_key(role_arn: str) -> str:
    """The access key that stands for a role's executions (20 characters, like AWS's)."""
    return "ASIASFN" + hashlib.sha256(role_arn.encode()).hexdigest()[:13].upper()


class _SignAsExecutionRole:
    """What ``boto3`` is to moto's ``boto_client`` module while installed."""

    def __init__(self, register: Callable[[str, str], None]) -> None:
        self.register = register

    def client(self, *args: Any, **kwargs: Any) -> Any:
        credentials = sys._getframe(1).f_locals.get("state_credentials")  # boto_client_for's argument
        role_arn = getattr(credentials, "role_arn", None)
        if role_arn:
            key = role_key(role_arn)
            self.register(key, role_arn)
            kwargs["aws_access_key_id"] = key
        return boto3.client(*args, **kwargs)


def install(register: Callable[[str, str], None]) -> None:
    """From now on, moto's interpreter signs each integration with its execution role's key (register(key, role))."""
    importlib.import_module(MODULE).boto3 = _SignAsExecutionRole(register)


def uninstall() -> None:
    importlib.import_module(MODULE).boto3 = boto3
