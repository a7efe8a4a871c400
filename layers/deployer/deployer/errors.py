"""Domain errors. Each class name is the error name the state machine catches.

Lambda reports an unhandled exception as ``errorType`` = the class name, which
Step Functions surfaces as the error name that Retry and Catch match on. Renaming a
class here means changing ``statemachine/deployment.asl.json`` too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class DeployerError(Exception):
    """Base of every domain failure; never raised itself."""


class InputInvalid(DeployerError):
    """The execution input is not a valid deployment request."""


class SpecInvalid(DeployerError):
    """An environment spec file does not validate."""


class GuardrailViolation(DeployerError):
    """A spec loosens (or escapes) its target account's guardrails; nothing was called in that account."""


class SpecNotFound(DeployerError):
    """No spec is stored for the requested environment (or version)."""


class LockHeld(DeployerError):
    """Another deployment holds the environment lock."""


class LockLost(DeployerError):
    """The environment's lock is held by another deployment: this one stops before changing anything."""


class PreflightFailed(DeployerError):
    """One or more of the runbook's pre-deployment checks failed; ``checks`` holds them all."""

    def __init__(self, message: str, checks: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.checks = list(checks)


class PlanRejected(DeployerError):
    """The plan would need a destructive change, which the deployer never makes."""


class ProvisioningFailed(DeployerError):
    """A resource could not be brought to its desired state."""


class ValidationFailed(DeployerError):
    """One or more post-deployment checks failed."""


class SlackNotConfigured(DeployerError):
    """The Slack secret is missing a value the approval gate needs."""


class TransientAwsError(DeployerError):
    """An AWS call kept failing with a retryable error after botocore's retries."""


class ApprovalRejected(DeployerError):
    """An approver rejected the deployment from Slack."""


class ApprovalExpired(DeployerError):
    """No quorum of approvers decided before the approval's time ran out."""


class ApprovalNotFound(DeployerError):
    """The execution reached the plan's verification with no approval opened for it."""


class ApprovalForged(DeployerError):
    """The approval the task reported is not what the approvals store holds: no recorded quorum, another plan."""


class PlanChangedSinceApproval(DeployerError):
    """The plan computed before applying differs from the plan the approvers approved."""


class OutsideDeploymentWindow(DeployerError):
    """The deployment window is closed and does not open within the policy's maxWaitHours."""


class ScheduleRefused(DeployerError):
    """A scheduled deployment is in the past, gives too little notice, or falls outside the window."""


class NoticeTooShort(DeployerError):
    """No announcement of the deployment's change ticket gave minimumNoticeHours' notice of this time."""


class PromotionRequired(DeployerError):
    """The environment only receives a resources spec that already succeeded in its promotion source."""


class RollbackFailed(DeployerError):
    """A rollback action failed; ``actions`` holds every action with its status (re-running resumes)."""

    def __init__(self, message: str, actions: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.actions = list(actions)


class EventPublishFailed(DeployerError):
    """EventBridge refused an event the deployer published (a failed entry that is not worth retrying)."""


class NotificationFailed(DeployerError):
    """Slack did not take a notification; Lambda retries the event, then sends it to the dead-letter queue."""
