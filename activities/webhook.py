"""Webhook activity: post an incident's notice to a configured receiver (e.g. the DIC's system).

One seam for outbound HTTP notices (httpx). The playbook names a target; its address and token
come from the worker's settings and never reach a history or a log. Every attempt sends the
same notice with the same `Idempotency-Key`, so a receiver that honours it records it once.
"""

from __future__ import annotations

import hashlib
import json

import httpx
from temporalio import activity

from activities._errors import application_error
from continuity.errors import ConfigurationError, WebhookFailed
from continuity.messages import WebhookInput, WebhookResult
from continuity.settings import Settings

_TIMEOUT_S = 10.0
_EXCERPT = 200


class WebhookActivities:
    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None):
        self._targets = settings.webhooks
        self._transport = transport

    @activity.defn(name="post_webhook")
    async def post_webhook(self, inp: WebhookInput) -> WebhookResult:
        target = self._targets.get(inp.target)
        if target is None:
            known = ", ".join(sorted(self._targets)) or "none"
            raise application_error(
                ConfigurationError(
                    f"no webhook target {inp.target!r} in CONTINUITY_WEBHOOKS (known: {known})"
                )
            )
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": f"{inp.incident_id}-{inp.key}",
            "User-Agent": "continuity",
        }
        if target.token is not None:
            headers["Authorization"] = f"Bearer {target.token.get_secret_value()}"
        body = json.dumps(inp.payload, ensure_ascii=False, sort_keys=True).encode()
        try:
            async with httpx.AsyncClient(timeout=_TIMEOUT_S, transport=self._transport) as http:
                answer = await http.post(target.url, content=body, headers=headers)
        except httpx.HTTPError as e:  # no answer: retried with back-off
            raise application_error(
                WebhookFailed(f"{inp.target}: no answer ({type(e).__name__})")
            ) from None
        text = answer.text
        if answer.status_code >= 400:
            # A refusal (4xx) is the receiver's answer: retrying would not change it.
            raise application_error(
                WebhookFailed(
                    f"{inp.target}: answered {answer.status_code}: {text[:_EXCERPT]!r}",
                    retryable=answer.status_code >= 500 or answer.status_code == 429,
                ),
                status=answer.status_code,
            )
        return WebhookResult(
            status=answer.status_code,
            body_sha256=hashlib.sha256(answer.content).hexdigest(),
            body_excerpt=text[:_EXCERPT],
        )


__all__ = ["WebhookActivities"]
