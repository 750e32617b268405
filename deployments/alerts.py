"""A failed or crashed daily run notifies: a Prefect automation that `niftytune serve` declares
with the deployment.

The automation fires on a flow run of `daily-retrain` that ends Failed or Crashed (a crash is
what a killed or out-of-memory run becomes) and sends a notification through the Prefect
notification block named `niftytune-alerts`: Slack, Microsoft Teams, email, a webhook... whatever
the operator created in the UI (*Blocks -> +*). Without that block there is nobody to notify,
and `serve` says so instead of declaring an automation that cannot act.
"""
from __future__ import annotations

from datetime import timedelta

ALERT_BLOCK = "niftytune-alerts"
AUTOMATION_NAME = "daily-retrain failed or crashed"
FLOW_NAME = "daily-retrain"
BODY = ("Flow run {{ flow_run.name }} of daily-retrain ended {{ flow_run.state.name }}: "
        "{{ flow_run.state.message }}\nParameters: {{ flow_run.parameters }}\n{{ flow_run|ui_url }}")


def failure_automation(block_document_id):
    """The automation: any daily-retrain run entering Failed or Crashed -> one notification."""
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    return AutomationCore(
        name=AUTOMATION_NAME,
        description="Declared by `niftytune serve`: tells the operator when a daily run fails or crashes.",
        trigger=EventTrigger(
            expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
            match_related={"prefect.resource.role": "flow", "prefect.resource.name": FLOW_NAME},
            posture=Posture.Reactive, threshold=1, within=timedelta(0)),
        actions=[SendNotification(block_document_id=block_document_id,
                                  subject="niftytune: a daily-retrain run {{ flow_run.state.name }}", body=BODY)])


def declare_alerts(block_name: str = ALERT_BLOCK) -> str:
    """Create (or replace) the automation on the current Prefect server; a line for the terminal."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        blocks = [b for b in client.read_block_documents() if b.name == block_name]
        for old in client.read_automations_by_name(AUTOMATION_NAME):
            client.delete_automation(old.id)
        if not blocks:
            return (f"alerts: no notification block named {block_name!r}; create one in the Prefect UI "
                    "(Blocks -> +: Slack, email, webhook...) and restart serve to be told of failed runs")
        automation = failure_automation(blocks[0].id)
        client.create_automation(automation)
    return f"alerts: a failed or crashed run notifies through the block {block_name!r}"
