"""Reports from the history alone: the timeline and the 2c dossier of an incident, rendered
offline from its recorded history, with no server and no database.

The history is replayed with the current workflow code (what `audit replay` checks), and the
incident's status is read where its reports were written: when the run scheduled
`write_reports`, and after every signal it handled while that activity ran (the stored copy
was rendered from the status query at one of those moments). The inventory snapshot and the
attesting keys come from the history's first event. Same renderer, same facts: the stored copy
and the re-rendered one are equal, byte for byte, when their formats are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.worker import (
    ExecuteWorkflowInput,
    HandleSignalInput,
    Interceptor,
    Replayer,
    StartActivityInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

from continuity.errors import ValidationFailed
from continuity.messages import IncidentInput
from continuity.models import IncidentStatus
from continuity.report import ReportContext, render_markdown
from continuity.temporal import data_converter, incident_input
from workflows._common import WRITE_REPORTS


@dataclass
class HistoryFacts:
    """What an incident's history says, read back by replaying it."""

    input: IncidentInput
    # The status each time the reports may have been rendered from it (see the module's
    # docstring); empty when the history ends before its reports were written.
    at_reports: list[IncidentStatus] = field(default_factory=list)
    last: IncidentStatus | None = None  # where the history ends

    @property
    def status(self) -> IncidentStatus:
        """The status the reports are rendered from: as at the reports, else where it ends."""
        if self.at_reports:
            return self.at_reports[0]
        if self.last is None:
            raise ValidationFailed("the history holds no incident status to report")
        return self.last

    def render(self, form: str, lang: str) -> str:
        return render_markdown(
            self.status, form=form, lang=lang, context=ReportContext.of(self.input)
        )

    def matches(self, text: str, form: str, lang: str) -> bool:
        """Whether `text` is the report rendered at one of the moments it could have been."""
        ctx = ReportContext.of(self.input)
        return any(
            render_markdown(s, form=form, lang=lang, context=ctx) == text
            for s in self.at_reports or ([self.last] if self.last else [])
        )


class _Capture(Interceptor):
    """Reads the workflow's status (JSON: nothing of the sandbox leaks out) at the moments the
    module's docstring names."""

    def __init__(self) -> None:
        self.at_reports: list[str] = []
        self.last: str | None = None

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        capture = self
        reporting = [False]

        def snapshot() -> str | None:
            status = getattr(workflow.instance(), "status", None)
            return status().model_dump_json() if callable(status) else None

        class Outbound(WorkflowOutboundInterceptor):
            def start_activity(self, input: StartActivityInput) -> Any:
                if input.activity == WRITE_REPORTS:
                    reporting[0] = True
                    if (s := snapshot()) is not None:
                        capture.at_reports.append(s)
                return super().start_activity(input)

        class Inbound(WorkflowInboundInterceptor):
            def init(self, outbound: WorkflowOutboundInterceptor) -> None:
                super().init(Outbound(outbound))

            async def handle_signal(self, input: HandleSignalInput) -> None:
                await super().handle_signal(input)
                if reporting[0] and (s := snapshot()) is not None:
                    capture.at_reports.append(s)
                capture.last = snapshot() or capture.last

            async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
                try:
                    return await super().execute_workflow(input)
                finally:
                    capture.last = snapshot() or capture.last

        return Inbound


async def history_facts(history: WorkflowHistory) -> HistoryFacts:
    """Replay `history` and read its status; a history that does not replay is refused."""
    from workflows import REPLAY_WORKFLOWS

    if not history.events:
        raise ValidationFailed(f"{history.workflow_id}: the history holds no events")
    inp: IncidentInput = incident_input(history.events[0], history.workflow_id)
    capture = _Capture()
    replayer = Replayer(
        workflows=REPLAY_WORKFLOWS,
        data_converter=data_converter,
        interceptors=[capture],
        # A thousand-device history replays one activation for seconds: no deadlock in that.
        debug_mode=True,
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    if result.replay_failure is not None:
        failure = result.replay_failure
        raise ValidationFailed(
            f"{history.workflow_id}: does not replay: {type(failure).__name__}: {failure}"
        )
    return HistoryFacts(
        input=inp,
        at_reports=[IncidentStatus.model_validate_json(s) for s in capture.at_reports],
        last=IncidentStatus.model_validate_json(capture.last) if capture.last else None,
    )


__all__ = ["HistoryFacts", "history_facts"]
