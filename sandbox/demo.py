"""`make demo`: a full DEV deployment in the embedded sandbox, then what it left behind.

Runs the real state machine and functions, shows the plan and every check, lists the
resources as the runbook's `aws s3api` / `aws dynamodb` commands would see them in the
DEV account, and re-runs the deployment to show that an unchanged re-run changes
nothing.
"""

from __future__ import annotations

import sys
import time
from argparse import Namespace
from typing import Any
from zoneinfo import ZoneInfo

from deployer_cli import client, main
from deployer_cli.client import Stack
from sandbox.accounts import TARGET_ACCOUNTS, account_session
from sandbox.server import Sandbox


def _section(title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 70 - len(title)), flush=True)


def show_dev_account(sandbox: Sandbox) -> None:
    """What exists in the DEV account, read directly (runbook section 4 steps 4 and 5)."""
    session = account_session(sandbox.client("sts"), TARGET_ACCOUNTS["dev"])
    s3 = session.client("s3", endpoint_url=sandbox.endpoint, region_name=sandbox.region)
    ddb = session.client("dynamodb", endpoint_url=sandbox.endpoint, region_name=sandbox.region)
    for bucket in s3.list_buckets()["Buckets"]:
        name = bucket["Name"]
        versioning = s3.get_bucket_versioning(Bucket=name).get("Status")
        block = s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]
        rules = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"]
        algorithm = rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"]
        print(f"  s3://{name}  versioning={versioning}  publicAccessBlock={all(block.values())}  sse={algorithm}")
    for name in ddb.list_tables()["TableNames"]:
        table = ddb.describe_table(TableName=name)["Table"]
        keys = ", ".join(f"{k['AttributeName']}({k['KeyType']})" for k in table["KeySchema"])
        billing = table.get("BillingModeSummary", {}).get("BillingMode")
        print(f"  dynamodb {name}  status={table['TableStatus']}  keys={keys}  billing={billing}")


def deploy(stack: Stack, label: str, env: str = "dev", **options: object) -> dict[str, Any]:
    defaults: dict[str, object] = {"requested_by": "make-demo", "change_ticket": None, "quiet": False}
    args = Namespace(env=env, spec_dir="environments", **{**defaults, **options})
    _section(label)
    result = main._deploy(args, stack, dry_run=False)
    main._print_summary(result)
    return result


def show_slack(sandbox: Sandbox, channel: str) -> None:
    """What the fake Slack recorded in a channel: notifications, and approvals with what they became."""
    for message in sandbox.slack.messages:
        if message.get("channel") != channel:
            continue
        first = message["updates"][0]["text"] if message["updates"] else message["text"]
        print(f"  {'  reply' if message.get('thread_ts') else 'posted '} : {first}")
        if message["updates"]:
            print(f"  now     : {message['text']}")


def run() -> int:
    started = time.monotonic()
    _section("starting the sandbox (moto server + the stack from template.yaml)")
    with Sandbox() as sandbox:
        # PROD deploys only inside its window (Mon-Thu 09:00-15:00 Johannesburg): the functions' clock
        # moves to its next opening, whatever day the demo runs.
        opens = sandbox.travel_to_window("prod")
        print(f"  endpoint {sandbox.endpoint}, stack {sandbox.stack_name}, logs {sandbox.log_dir}")
        print(f"  simulated time {opens.astimezone(ZoneInfo('Africa/Johannesburg')).isoformat()} (PROD's window opens)")
        stack = client.Stack.discover(sandbox.session(), sandbox.stack_name, sandbox.region, sandbox.endpoint)
        first = deploy(stack, "DEV deployment (runbook sections 3, 4 and 7)")
        _section("what is now in the DEV account (536580886816)")
        show_dev_account(sandbox)
        second = deploy(stack, "the same deployment again: nothing to change")
        # Notifications travel EventBridge -> notify function -> Slack asynchronously, as on AWS.
        sandbox.eventbridge.drain(30)
        _section("Slack notifications of both DEV deployments (fake Slack, channel #bbws-deploy-dev)")
        show_slack(sandbox, "#bbws-deploy-dev")
        sit = deploy(
            stack,
            "SIT deployment (runbook section 5): approved in Slack by sit-lead",
            env="sit",
            change_ticket="CHG-2026",
            approve_as=["sit-lead"],
            reject_as=None,
        )
        _section("the approval in Slack (fake Slack, channel C0DEPLOYSIT)")
        show_slack(sandbox, "C0DEPLOYSIT")
        _section("PROD announcement (runbook section 6 step 1): 24 hours' notice of change CHG-2026")
        at = sandbox.announce_ahead("prod", "CHG-2026", "alice")
        announced = stack.records.announcements("prod", "CHG-2026")[0]
        print(f"  announced {announced['announcedAt']} by {announced['announcedBy']['name']}")
        print(f"  window    {announced['detail']['windowText']}")
        sandbox.eventbridge.drain(30)
        show_slack(sandbox, "C0DEPLOYPROD")
        print(f"  simulated time moves to the announced window: {at.astimezone(ZoneInfo('Africa/Johannesburg'))}")
        prod = deploy(
            stack,
            "PROD deployment (runbook section 6): announced, promoted from SIT, two approvers, both regions",
            env="prod",
            change_ticket="CHG-2026",
            # Runbook section 6 step 2: the release tag the deploy workflow creates first.
            release_tag=f"v{at:%Y.%m.%d}-prod-s3-dynamodb",
            approve_as=["senior-engineer-1", "senior-engineer-2"],
            reject_as=None,
        )
        _section("the approval in Slack (fake Slack, channel C0DEPLOYPROD)")
        show_slack(sandbox, "C0DEPLOYPROD")
    _section("summary")
    for name, result in (("DEV", first), ("DEV re-run", second), ("SIT", sit), ("PROD", prod)):
        checks = result["checks"]
        passed = sum(1 for c in checks if c["passed"])
        approvers = ", ".join(a["name"] for a in result["approvals"]) or "none needed"
        print(
            f"  {name:<10} {result['status']:<10} regions {'+'.join(result['regions']):<22} "
            f"checks {passed}/{len(checks)}  mutating calls {result['mutatingCalls']:<3} approved by {approvers}"
        )
    print(f"  demo wall time {time.monotonic() - started:.1f}s")
    ok = all(r["status"] == "SUCCEEDED" for r in (first, second, sit, prod)) and second["mutatingCalls"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(run())
