"""The Temporal payload converter: compact histories that decode to the same values, old and new."""

from __future__ import annotations

import json

from continuity.incidents import prepare_incident
from continuity.messages import (
    ChangeStepInput,
    DeviceStepResult,
    Evidence,
    StepClaim,
    StepTimings,
    Timings,
)
from continuity.models import (
    ChangeState,
    Decision,
    IncidentKind,
    PartState,
    TranscriptRef,
    inventory_sha256,
)
from continuity.temporal import data_converter
from lab.gear.network import generate_inventory
from playbooks import kon_tum_2a

converter = data_converter.payload_converter


def _round_trip(value: object) -> tuple[bytes, object]:
    (payload,) = converter.to_payloads([value])
    (back,) = converter.from_payloads([payload], [type(value)])
    return payload.data, back


def test_defaults_are_left_out_and_come_back() -> None:
    res = DeviceStepResult(
        state=ChangeState.CONFIRMED,
        commands=["configure confirm", "write memory"],
        transcripts=[TranscriptRef(id="tr-1", sha256="0" * 64, step="confirm", attempt=1)],
        parts={"c1": PartState.BACKUP},
        verified=True,
    )
    data, back = _round_trip(res)
    assert back == res
    body = json.loads(data)
    # What differs from the defaults travels; defaults ("detail": "", "kept": {}, ...) do not.
    assert set(body) == {"state", "commands", "transcripts", "parts", "verified"}


def test_nested_default_models_are_left_out() -> None:
    inp = ChangeStepInput(
        incident_id="INC-1",
        change_id="chg-1",
        claim=StepClaim(kind="decision", decision=Decision.CONFIRM, by="op"),
        timings=StepTimings.of(Timings()),
        known=Evidence(),
    )
    data, back = _round_trip(inp)
    assert back == inp
    body = json.loads(data)
    assert "known" not in body and "release_lock" not in body
    assert body["claim"] == {"kind": "decision", "decision": "confirm", "by": "op"}


def test_a_non_default_value_equal_to_nothing_is_kept() -> None:
    # A field whose value is falsy but not its default must travel (release_lock defaults True).
    inp = ChangeStepInput(
        incident_id="INC-1",
        change_id="chg-1",
        claim=StepClaim(kind="order", by="do"),
        timings=StepTimings.of(Timings()),
        release_lock=False,
    )
    data, back = _round_trip(inp)
    assert json.loads(data)["release_lock"] is False
    assert back == inp


def test_an_incident_input_round_trips_with_its_inventory_and_playbook() -> None:
    inv = generate_inventory(20, circuits_per_device=2, policy_routes=True)
    inp = prepare_incident(
        spec=kon_tum_2a.build(),
        inventory=inv,
        incident_id="INC-1",
        kind=IncidentKind.SABOTAGE,
        area=inv.areas[0].id,
        description="cáp bị cắt",
        declared_by="do-1",
        timings=Timings(),
    )
    data, back = _round_trip(inp)
    assert back == inp
    assert back.inventory_sha256 == inventory_sha256(back.inventory)
    # The inventory's unset next-hop interfaces and the like no longer travel.
    assert len(data) < 0.85 * len(inp.model_dump_json().encode())


def test_full_payloads_recorded_before_decode_the_same() -> None:
    # Histories recorded before the compact converter carry every field; they still decode.
    res = DeviceStepResult(state=ChangeState.AWAITING_CONFIRMATION, detail="x", verified=True)
    full = res.model_dump_json().encode()
    (payload,) = converter.to_payloads([res])
    payload.data = full
    (back,) = converter.from_payloads([payload], [DeviceStepResult])
    assert back == res


def test_api_responses_keep_every_field() -> None:
    res = DeviceStepResult(state=ChangeState.CONFIRMED)
    assert "detail" in json.loads(res.model_dump_json())


def test_step_timings_carry_only_what_differs_from_the_defaults() -> None:
    """600 device steps at 200 devices carried 69 KB of default durations in the history."""
    data, back = _round_trip(StepTimings.of(Timings()))
    assert back == StepTimings.of(Timings()) and json.loads(data) == {}
    short = StepTimings.of(Timings(confirm_window_s=300))
    data, back = _round_trip(short)
    assert back == short and back.lease_s == 300 + 30 + 120 + 60 + 4 * 120
    assert json.loads(data) == {"confirm_window_s": 300.0, "lease_s": 990.0}
    # An input recorded before the defaults, with every duration, decodes the same.
    full = short.model_dump(mode="json")
    assert set(full) == set(StepTimings.model_fields)
    (old,) = converter.from_payloads([converter.to_payloads([full])[0]], [StepTimings])
    assert old == short
