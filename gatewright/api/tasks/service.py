"""Building the task API's job runner for the application (called from ``app.create_app``)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from gatewright.api.tasks.codec import TaskApiCodec
from gatewright.core.ids import random_hex
from gatewright.core.jobs import Jobs
from gatewright.core.pipeline import Gateway
from gatewright.outbound.guard import AddressGuard
from gatewright.outbound.webhooks import WebhookSender, load_or_create_secret
from gatewright.settings import Settings


async def open_jobs(settings: Settings, gateway: Gateway, engine: AsyncEngine | None) -> Jobs:
    """Tasks are durable in the store when there is one (platform on), in memory otherwise;
    starting claims and resumes what an earlier process left unfinished."""
    sender = WebhookSender(
        lambda: load_or_create_secret(settings.webhook_secret, settings.data_dir),
        guard=AddressGuard(settings.outbound_allow.split(",")),
    )
    jobs = Jobs(
        gateway,
        TaskApiCodec(),
        owner=random_hex(8),
        engine=engine,
        sender=sender,
        single_node=engine is None or settings.single_process,
    )
    await jobs.start()
    return jobs
