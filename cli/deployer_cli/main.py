"""`deployer`: run, plan and inspect deployments; start a sandbox.

Targets: an embedded sandbox (default), any endpoint (``--endpoint-url``, e.g. a running
``deployer sandbox``), or real AWS (``--aws``: the standard credential chain and the
deployed stack).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from deployer.errors import DeployerError
from deployer.oidc import TOKEN_HEADER
from deployer_cli import client
from deployer_cli.clicks import ClicksUnavailable, SandboxSlack, slack_user
from deployer_cli.client import Stack, StackNotFound

DEFAULT_STACK = "bbws-deployer"
DEFAULT_REGION = "af-south-1"
SUCCESS = {"SUCCEEDED", "PLANNED", "SUCCEEDED_WITH_WARNINGS"}
MARKS = {"add": "+", "change": "~", "unchanged": "="}


class UsageError(Exception):
    pass


def timestamp(text: str) -> datetime:
    """An ISO 8601 moment with its UTC offset (argparse type)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time (e.g. 2026-12-01T09:30:00+02:00)") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset; add one, e.g. {text}+00:00")
    return moment


def _default_user() -> str:
    try:
        return getpass.getuser()
    except OSError:
        return "unknown"


@contextmanager
def connect(args: argparse.Namespace) -> Iterator[Stack]:
    """The stack to talk to: real AWS, an endpoint, or a sandbox started for this command."""
    if args.aws or args.endpoint_url:
        if args.time is not None:
            raise UsageError(
                "--time sets an embedded sandbox's clock; a running sandbox takes it at `deployer sandbox`"
            )
        session = boto3.Session(region_name=args.region)
        if session.get_credentials() is None:
            raise StackNotFound(
                "no AWS credentials found; for a running sandbox export the variables `deployer sandbox` printed"
            )
        yield Stack.discover(session, args.stack_name, args.region, args.endpoint_url)
        return
    from sandbox.server import Sandbox

    _progress(args, "starting an embedded sandbox (moto) ...")
    with Sandbox(stack_name=args.stack_name, region=args.region, time=args.time) as sandbox:
        yield Stack.discover(sandbox.session(), args.stack_name, args.region, sandbox.endpoint)


def _progress(args: argparse.Namespace, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr, flush=True)


def _deploy(args: argparse.Namespace, stack: Stack, dry_run: bool) -> dict[str, Any]:
    fault = getattr(args, "inject", None)
    if fault:
        client.inject_fault(stack, fault)
    try:
        return _run_deployment(args, stack, dry_run)
    finally:
        if fault:
            client.clear_faults(stack)


def _run_via_api(args: argparse.Namespace, stack: Stack, dry_run: bool) -> dict[str, Any]:
    """As CI does it: push the commit's spec, POST /deployments signed, follow GET /deployments/{id}."""
    commit = client.push_commit_spec(stack, Path(args.spec_dir), args.env, args.commit)
    body = {
        k: v
        for k, v in {
            "environment": args.env,
            "requestedBy": args.requested_by,
            "changeTicket": args.change_ticket,
            "specVersion": commit,
            "clientToken": args.client_token or uuid.uuid4().hex,
            "scheduledFor": args.at.isoformat() if getattr(args, "at", None) else None,
            "dryRun": dry_run,
            "promotionOverride": getattr(args, "promotion_override", None),
            "emergency": getattr(args, "emergency", None),
            "releaseTag": getattr(args, "release_tag", None),
        }.items()
        if v is not None
    }
    actor = args.requested_by.removeprefix("github:")
    claims = {"environment": args.env, "sha": commit, "actor": actor, "ref": args.ref}
    token = client.ci_token(stack, claims)
    headers = {TOKEN_HEADER: token} if token else None
    started = client.api_call(stack, "POST", "/deployments", body, headers)
    verb = "started" if started["created"] else "already started by this client token"
    _progress(args, f"deployment {started['deploymentId']} {verb}: {started['statusUrl']}")
    clicks = [("approve", u) for u in getattr(args, "approve_as", None) or []]
    clicks += [("reject", u) for u in getattr(args, "reject_as", None) or []]
    if clicks and not dry_run:
        _approve(args, stack, started["executionArn"], SandboxSlack.discover(stack.endpoint_url), clicks)
    began = time.monotonic()
    view = client.api_wait(
        stack,
        started["deploymentId"],
        on_status=lambda status: _progress(args, f"  {time.monotonic() - began:6.2f}s  {status}"),
        poll_seconds=args.poll_seconds,
    )
    return {**view, "stateTransitions": None, "durationSeconds": _duration(view)}


def _duration(view: dict[str, Any]) -> float | None:
    if not (view.get("startedAt") and view.get("finishedAt")):
        return None
    started, finished = (datetime.fromisoformat(view[k]) for k in ("startedAt", "finishedAt"))
    return round((finished - started).total_seconds(), 3)


def _run_deployment(args: argparse.Namespace, stack: Stack, dry_run: bool) -> dict[str, Any]:
    if getattr(args, "via_api", False):
        return _run_via_api(args, stack, dry_run)
    rollback_to = getattr(args, "rollback_to", None)
    # A rollback deploys the target deployment's pinned spec; a deployment pushes the local file.
    version = None if rollback_to else client.push_spec(stack, Path(args.spec_dir), args.env)
    request = client.build_request(
        args.env,
        args.requested_by,
        args.change_ticket,
        dry_run,
        version,
        scheduledFor=getattr(args, "at", None),
        promotionOverride=getattr(args, "promotion_override", None),
        emergency=getattr(args, "emergency", None),
        releaseTag=getattr(args, "release_tag", None),
        rollbackTo=rollback_to,
    )
    clicks = [("approve", u) for u in getattr(args, "approve_as", None) or []]
    clicks += [("reject", u) for u in getattr(args, "reject_as", None) or []]
    slack = SandboxSlack.discover(stack.endpoint_url) if clicks else None
    arn = client.start(stack, request)
    _progress(args, f"deployment {arn.rsplit(':', 1)[1]} started")
    started = time.monotonic()
    interactive = not clicks and sys.stdin.isatty() and stack.endpoint_url is not None
    if not dry_run and (clicks or interactive):
        _approve(args, stack, arn, slack, clicks)
    client.wait(stack, arn, on_state=lambda state: _progress(args, f"  {time.monotonic() - started:6.2f}s  {state}"))
    return client.summary(stack, arn)


def _approve(
    args: argparse.Namespace, stack: Stack, arn: str, slack: SandboxSlack | None, clicks: list[tuple[str, str]]
) -> None:
    """Click the approval for the given users, or ask on the terminal who clicks."""
    approval = client.open_approval(stack, arn)
    if approval is None:
        return  # ended before any approval was needed (no approval policy, or an earlier failure)
    _progress(args, f"approval {approval.approval_id} posted to Slack channel {approval.channel}")
    spec, _ = stack.specs.get(approval.environment)
    if not clicks:
        try:
            slack = SandboxSlack.discover(stack.endpoint_url)
        except ClicksUnavailable as exc:
            _progress(args, str(exc))
            return
    assert slack is not None
    while (stack.approvals.get(approval.approval_id) or approval).status == "PENDING":
        if clicks:
            action, user = clicks.pop(0)
        else:
            answer = input("approve/reject as USER (e.g. 'approve sit-lead'), blank to wait for Slack: ").split()
            if len(answer) != 2 or answer[0] not in ("approve", "reject"):
                return
            action, user = answer
        user_id, name = slack_user(spec, user)
        result = slack.click(approval, user_id, name, action)
        _progress(args, f"  {action} as {name}: {result.get('outcome')} - {result.get('message')}")
        if not clicks and not sys.stdin.isatty():
            return


def _print_summary(result: dict[str, Any]) -> None:
    transitions = result.get("stateTransitions")
    print(
        f"{result['environment']} deployment {result['deploymentId']}: {result['status']}"
        + (f" ({result['error']})" if result.get("error") else "")
        + f" in {result['durationSeconds']}s"
        + (f", {transitions} state transitions" if transitions is not None else "")
    )
    if result.get("cause"):
        print(f"  {result['cause']}")
    plan = result["plan"]
    if plan.get("summary"):
        print(plan["summary"])
    for resource in plan["resources"]:
        print(f"  {MARKS[resource['action']]} {resource['kind']} {resource['name']} ({resource['region']})")
        for change in resource.get("changes", []):
            print(f"      {change['field']}: {json.dumps(change['before'])} -> {json.dumps(change['after'])}")
    print(f"Mutating calls to target resources: {result['mutatingCalls']}")
    for vote in result.get("approvals", []):
        print(f"  {vote['decision']} by {vote['name']} ({vote['user']}) at {vote['at']}")
    for title, checks in (("Preflight", result["preflight"]), ("Checks", result["checks"])):
        if checks:
            failed = sum(1 for c in checks if not c["passed"])
            print(f"{title}: {len(checks) - failed} passed, {failed} failed")
            for c in checks:
                mark = "ok  " if c["passed"] else "FAIL"
                print(f"  {mark} {c['region']:<10} {c['resource']:<28} {c['name']:<26} {c['detail']}")


def _report(args: argparse.Namespace, result: dict[str, Any]) -> int:
    """Print the outcome (one JSON object with --json); the exit status says whether it succeeded."""
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        _print_summary(result)
    return 0 if result["status"] in SUCCESS else 1


def cmd_run(args: argparse.Namespace) -> int:
    if getattr(args, "via_api", False) and (getattr(args, "inject", None) or args.time):
        raise UsageError("--via-api is CI's path; --inject and --time are embedded-sandbox options")
    if args.aws and getattr(args, "inject", None):
        # Refused before anything is contacted: faults exist only in a sandbox.
        raise UsageError("--inject is for sandbox game days only; it is refused against real AWS")
    with connect(args) as stack:
        return _report(args, _deploy(args, stack, args.dry_run))


def cmd_announce(args: argparse.Namespace) -> int:
    """Announce the window a change ticket's deployment will apply in (runbook section 6, step 1)."""
    with connect(args) as stack:
        if args.via_api:
            body = {
                "environment": args.env,
                "changeTicket": args.change_ticket,
                "scheduledFor": args.at.isoformat(),
                "requestedBy": args.requested_by,
            }
            claims = {"environment": args.env, "actor": args.requested_by.removeprefix("github:"), "ref": args.ref}
            token = client.ci_token(stack, claims)
            answer = client.api_call(stack, "POST", "/announcements", body, {TOKEN_HEADER: token} if token else None)
        else:
            answer = client.announce(
                stack,
                Path(args.spec_dir),
                args.env,
                change_ticket=args.change_ticket,
                at=args.at,
                requested_by=args.requested_by,
            )
    if args.json:
        print(json.dumps(answer, indent=2, sort_keys=True))
    else:
        print(f"{args.env} change {args.change_ticket} announced: {answer['windowText']}")
        print(f"  announcement {answer['announcementId']}, announced at {answer['announcedAt']}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    """Deploy again what an earlier successful deployment deployed, through the same approvals."""
    with connect(args) as stack:
        args.rollback_to = args.to or client.last_known_good(stack, args.env)
        _progress(args, f"rolling {args.env} back to deployment {args.rollback_to}")
        return _report(args, _deploy(args, stack, dry_run=False))


def cmd_plan(args: argparse.Namespace) -> int:
    args.dry_run = True
    return cmd_run(args)


def cmd_status(args: argparse.Namespace) -> int:
    with connect(args) as stack:
        return _report(args, client.summary(stack, args.execution_arn))


def cmd_vote(args: argparse.Namespace) -> int:
    with connect(args) as stack:
        approval = stack.approvals.get(args.approval_id)
        if approval is None:
            print(f"deployer: no approval {args.approval_id}", file=sys.stderr)
            return 2
        spec, _ = stack.specs.get(approval.environment)
        user_id, name = slack_user(spec, args.as_user)
        result = SandboxSlack.discover(stack.endpoint_url).click(approval, user_id, name, args.action)
    print(
        json.dumps(result)
        if args.json
        else f"{args.action} as {name}: {result.get('outcome')} - {result.get('message')}"
    )
    return 0 if result.get("status") == 200 and result.get("outcome") in ("recorded", "approved", "rejected") else 1


def cmd_faults(args: argparse.Namespace) -> int:
    from sandbox.faults import CATALOGUE

    faults = [f.describe() for f in CATALOGUE]
    if args.json:
        print(json.dumps(faults, indent=2))
    else:
        for f in faults:
            print(f"{f['name']:<34} {f['criterion']:<24} -> {f['expected']:<24} {', '.join(f['environments'])}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    with connect(args) as stack:
        print(client.report(stack, args.execution_arn))
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    with connect(args) as stack:
        records = stack.records.history(args.env, args.limit)
    if args.json:
        print(json.dumps(records, indent=2, default=str))
        return 0
    if not records:
        print(f"no deployments of {args.env} yet")
    for r in records:
        plan = r.get("plan", {})
        print(
            f"{r['startedAt']}  {r['deploymentId']:<44} {r.get('status', '?'):<10} {r.get('error') or '':<18} "
            f"by {r.get('requestedBy', '?'):<16} {plan.get('summary', '')}"
        )
    return 0


def cmd_guardrails(args: argparse.Namespace) -> int:
    """The guardrails the deployed stack enforces, as its deployments API reports them."""
    from deployer.guardrails import Guardrails

    with connect(args) as stack:
        document = client.api_call(stack, "GET", "/guardrails")
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print("\n".join(Guardrails.model_validate(document).describe()))
    return 0


def cmd_unlock(args: argparse.Namespace) -> int:
    """Release a dead deployment's lock, through the API: refused while its execution runs; recorded and announced."""
    with connect(args) as stack:
        answer = client.api_call(stack, "POST", f"/environments/{args.env}/unlock", {"reason": args.reason})
    if args.json:
        print(json.dumps(answer))
    else:
        print(f"{answer['environment']}: released the lock of deployment {answer['released']} ({answer['reason']})")
    return 0


def cmd_sandbox(args: argparse.Namespace) -> int:
    from sandbox.server import Sandbox

    sandbox = Sandbox(port=args.port, stack_name=args.stack_name, region=args.region, time=args.time)
    if args.slack_signing_secret:
        sandbox.slack_signing_secret = args.slack_signing_secret
    with sandbox:
        info = sandbox.describe()
        print(json.dumps(info), flush=True)
        creds = info["credentials"]
        print(
            "\n# use it from another shell:\n"
            f"export AWS_ACCESS_KEY_ID={creds['accessKeyId']} AWS_SECRET_ACCESS_KEY={creds['secretAccessKey']} "
            f"AWS_REGION={info['region']}\n"
            f"deployer run --env dev --endpoint-url {info['endpoint']}",
            file=sys.stderr,
            flush=True,
        )
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deployer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    target = argparse.ArgumentParser(add_help=False)
    where = target.add_mutually_exclusive_group()
    where.add_argument("--endpoint-url", help="AWS endpoint (e.g. a running `deployer sandbox`)")
    where.add_argument("--aws", action="store_true", help="real AWS: standard credential chain, deployed stack")
    target.add_argument("--stack-name", default=DEFAULT_STACK)
    target.add_argument("--region", default=os.environ.get("AWS_REGION", DEFAULT_REGION))
    target.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    target.add_argument("--quiet", action="store_true", help="no progress on stderr")
    target.add_argument("--time", type=timestamp, help="embedded sandbox: the wall-clock time its functions see")

    deployment = argparse.ArgumentParser(add_help=False)
    deployment.add_argument("--env", required=True, help="environment: the name of environments/<env>.yaml")
    deployment.add_argument("--requested-by", default=_default_user())
    deployment.add_argument("--change-ticket")
    deployment.add_argument("--spec-dir", default="environments", help="where <env>.yaml is read from")
    deployment.add_argument("--approve-as", action="append", metavar="USER", help="approve as this approver (sandbox)")
    deployment.add_argument("--reject-as", action="append", metavar="USER", help="reject as this approver (sandbox)")
    deployment.add_argument(
        "--emergency",
        metavar="REASON",
        help="apply without the policy's notice: its extra approvals, announced in its incident channel",
    )

    run = sub.add_parser("run", parents=[target, deployment], help="run one deployment and wait for its outcome")
    run.add_argument("--dry-run", action="store_true", help="stop after the plan")
    run.add_argument("--inject", metavar="FAULT", help="sandbox game day: make this fault happen (deployer faults)")
    run.add_argument("--at", type=timestamp, help="announce now, deploy at this ISO 8601 time (scheduledFor)")
    run.add_argument("--promotion-override", metavar="REASON", help="deploy a spec the promotion source never ran")
    run.add_argument(
        "--release-tag",
        metavar="TAG",
        help="the release tag of the commit deployed, v<YYYY.MM.DD>-<env>-<name> (PROD requires one)",
    )
    api = run.add_argument_group("through the deployments API, as CI does (SigV4-signed)")
    api.add_argument("--via-api", action="store_true", help="start and follow the deployment through the API")
    api.add_argument("--commit", default="HEAD", help="deploy the spec as it is in this git commit (default HEAD)")
    api.add_argument(
        "--ref",
        default="refs/heads/main",
        help="sandbox: the git ref the minted CI token names (CI sends GitHub's token in $DEPLOYER_OIDC_TOKEN)",
    )
    api.add_argument("--client-token", help="idempotency token: a retry with the same token never deploys twice")
    api.add_argument("--poll-seconds", type=float, default=2.0, help="how often to ask the API for the status")
    run.set_defaults(func=cmd_run)

    back = sub.add_parser(
        "rollback", parents=[target, deployment], help="roll an environment back to its last known good deployment"
    )
    back.add_argument("--to", metavar="DEPLOYMENT_ID", help="this deployment instead of the last known good one")
    back.set_defaults(func=cmd_rollback)

    for action in ("approve", "reject"):
        vote = sub.add_parser(action, parents=[target], help=f"{action} an approval as USER (a sandbox's Slack click)")
        vote.add_argument("approval_id")
        vote.add_argument("--as", dest="as_user", required=True, metavar="USER", help="Slack user id or approver name")
        vote.set_defaults(func=cmd_vote, action=action)

    _add_announce_command(sub, target)

    plan = sub.add_parser("plan", parents=[target, deployment], help="plan a deployment without applying it")
    plan.set_defaults(func=cmd_plan)

    _add_inspection_commands(sub, target)
    return parser


def _add_announce_command(sub: Any, target: argparse.ArgumentParser) -> None:
    """`deployer announce`: a change's window, announced ahead (runbook section 6 step 1)."""
    notice = sub.add_parser(
        "announce", parents=[target], help="announce the window a change ticket's deployment will apply in"
    )
    notice.add_argument("--env", required=True, help="environment: the name of environments/<env>.yaml")
    notice.add_argument("--change-ticket", required=True, help="the change the deployment will name")
    notice.add_argument("--at", type=timestamp, required=True, help="the window's start (ISO 8601 with an offset)")
    notice.add_argument("--requested-by", default=_default_user())
    notice.add_argument("--spec-dir", default="environments", help="where <env>.yaml is read from")
    notice.add_argument("--via-api", action="store_true", help="through the deployments API (POST /announcements)")
    notice.add_argument("--ref", default="refs/heads/main", help="sandbox: the git ref the minted CI token names")
    notice.set_defaults(func=cmd_announce)


def _add_inspection_commands(sub: Any, target: argparse.ArgumentParser) -> None:
    """Commands that look at deployments or serve a sandbox, rather than deploy."""
    status = sub.add_parser("status", parents=[target], help="the outcome of one deployment")
    status.add_argument("execution_arn")
    status.set_defaults(func=cmd_status)

    faults = sub.add_parser("faults", help="the sandbox's game-day faults (for run --inject)")
    faults.add_argument("--json", action="store_true", help="a JSON array of the faults")
    faults.set_defaults(func=cmd_faults)

    report = sub.add_parser("report", parents=[target], help="a deployment's incident report (markdown)")
    report.add_argument("execution_arn")
    report.set_defaults(func=cmd_report)

    hist = sub.add_parser("history", parents=[target], help="recent deployments of an environment")
    hist.add_argument("--env", required=True)
    hist.add_argument("--limit", type=int, default=20)
    hist.set_defaults(func=cmd_history)

    unlock = sub.add_parser("unlock", parents=[target], help="release the lock a dead deployment left (audited)")
    unlock.add_argument("--env", required=True)
    unlock.add_argument("--reason", required=True, help="why (kept and announced in Slack)")
    unlock.set_defaults(func=cmd_unlock)

    rails = sub.add_parser("guardrails", parents=[target], help="each target account's rules, deployed with the stack")
    rails.set_defaults(func=cmd_guardrails)

    box = sub.add_parser("sandbox", help="serve a sandbox until interrupted")
    box.add_argument("--port", type=int, default=4566)
    box.add_argument("--stack-name", default=DEFAULT_STACK)
    box.add_argument("--region", default=DEFAULT_REGION)
    box.add_argument("--slack-signing-secret", help="the fake Slack app's signing secret (default: random)")
    box.add_argument("--time", type=timestamp, help="the wall-clock time the functions see (ticking on from it)")
    box.set_defaults(func=cmd_sandbox)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (
        DeployerError,
        StackNotFound,
        ClicksUnavailable,
        UsageError,
        client.FaultsUnavailable,
        client.ApiRefused,
        client.AnnouncementRefused,
    ) as exc:
        print(f"deployer: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except (ClientError, BotoCoreError) as exc:
        print(f"deployer: AWS error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
