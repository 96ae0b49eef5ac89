"""Circuit rules: one state per circuit from its parts, and which paths share device lines."""

from __future__ import annotations

import pytest

from continuity.circuits import circuit_state, dedupe, path_key
from continuity.models import (
    CircuitPath,
    CircuitState,
    NextHop,
    PartState,
    RerouteMechanism,
    RouteChange,
)

P = PartState


def static(prefix: str = "10.1.0.0/24", *, device: str = "r1") -> CircuitPath:
    return CircuitPath(
        device=device,
        prefix=prefix,
        primary=NextHop(address="10.255.0.1"),
        backup=NextHop(address="10.254.0.1"),
    )


def pbr(prefix: str = "10.1.0.0/24") -> CircuitPath:
    return CircuitPath(
        device="r1",
        prefix=prefix,
        primary=NextHop(address="10.255.0.1"),
        backup=NextHop(address="10.254.0.1"),
        mechanism=RerouteMechanism.SOURCE_PBR,
        source_prefix="10.9.0.0/24",
        ingress_interface="Gi0/0/3",
    )


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        ([], CircuitState.ON_PRIMARY),
        ([P.PRIMARY], CircuitState.ON_PRIMARY),
        ([P.PRIMARY, P.PRIMARY], CircuitState.ON_PRIMARY),
        ([P.BACKUP, P.BACKUP], CircuitState.ON_BACKUP),
        ([P.BACKUP_UNCONFIRMED], CircuitState.ON_BACKUP_UNCONFIRMED),
        ([P.BACKUP, P.BACKUP_UNCONFIRMED], CircuitState.ON_BACKUP_UNCONFIRMED),
        ([P.APPLYING, P.PRIMARY], CircuitState.MOVING),
        ([P.APPLYING, P.BACKUP], CircuitState.MOVING),
        ([P.RETURNING, P.BACKUP], CircuitState.RETURNING),
        ([P.RETURNING, P.APPLYING], CircuitState.RETURNING),
        ([P.UNKNOWN], CircuitState.NEEDS_ATTENTION),
        ([P.UNKNOWN, P.APPLYING], CircuitState.NEEDS_ATTENTION),
        ([P.UNKNOWN, P.RETURNING, P.BACKUP], CircuitState.NEEDS_ATTENTION),
        ([P.PRIMARY, P.BACKUP], CircuitState.NEEDS_ATTENTION),
        ([P.PRIMARY, P.BACKUP_UNCONFIRMED], CircuitState.NEEDS_ATTENTION),
    ],
    ids=lambda v: ("+".join(v) or "none") if isinstance(v, list) else str(v),
)
def test_circuit_state_from_parts_is_the_one_expected(
    parts: list[PartState], expected: CircuitState
):
    assert circuit_state(parts) is expected


def test_circuit_state_covers_every_circuit_state():
    seen = {
        circuit_state(parts)
        for parts in (
            [],
            [P.APPLYING],
            [P.BACKUP_UNCONFIRMED],
            [P.BACKUP],
            [P.RETURNING],
            [P.UNKNOWN],
        )
    }
    assert seen == set(CircuitState)


def test_circuit_state_accepts_a_generator():
    assert circuit_state(s for s in [P.BACKUP, P.BACKUP]) is CircuitState.ON_BACKUP


def test_path_key_same_static_route_equal_for_two_circuits():
    assert path_key(static(), "a") == path_key(static(), "b")


def test_path_key_static_route_differs_by_prefix_or_next_hop():
    other_hop = static().model_copy(update={"backup": NextHop(address="10.254.9.1")})
    keys = {path_key(static(), "a"), path_key(static("10.2.0.0/24"), "a"), path_key(other_hop, "a")}
    assert len(keys) == 3


def test_path_key_policy_routes_never_shared():
    assert path_key(pbr(), "a") != path_key(pbr(), "b")
    assert path_key(pbr(), "a") != path_key(static(), "a")


def test_dedupe_shared_route_keeps_first_circuit():
    changes = [
        RouteChange(circuit_id="a", path=static()),
        RouteChange(circuit_id="b", path=static()),
        RouteChange(circuit_id="c", path=static("10.2.0.0/24")),
        RouteChange(circuit_id="d", path=pbr()),
        RouteChange(circuit_id="e", path=pbr()),
    ]
    assert [c.circuit_id for c in dedupe(changes)] == ["a", "c", "d", "e"]
