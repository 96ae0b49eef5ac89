"""Dialects: rendered commands per platform, validation before rendering, output parsing."""

from __future__ import annotations

from typing import Any

import pytest

from continuity.dialects import Dialect, dialect_for, revert_window_s
from continuity.errors import ValidationFailed
from continuity.messages import PathState, Timings
from continuity.models import CircuitPath, NextHop, Platform, RerouteMechanism, RouteChange

IFACES = {
    Platform.CISCO_IOSXE: ("Gi0/0/1", "Gi0/0/2"),
    Platform.JUNIPER_JUNOS: ("ge-0/0/1.0", "ge-0/0/2.0"),
    Platform.HUAWEI_VRP: ("GE0/0/1", "GE0/0/2"),
    Platform.FRR: ("eth1", "eth2"),
}


def change(
    platform: Platform = Platform.CISCO_IOSXE,
    *,
    circuit_id: str = "c1",
    prefix: str = "10.20.0.0/16",
    pbr: bool = False,
) -> RouteChange:
    primary_if, backup_if = IFACES[platform]
    extra = {}
    if pbr:
        extra = {
            "mechanism": RerouteMechanism.SOURCE_PBR,
            "source_prefix": "10.5.0.0/16",
            "ingress_interface": primary_if,
        }
    return RouteChange(
        circuit_id=circuit_id,
        path=CircuitPath(
            device="R",
            prefix=prefix,
            primary=NextHop(address="192.0.2.1", interface=primary_if),
            backup=NextHop(address="198.51.100.1", interface=backup_if),
            **extra,
        ),
    )


def tampered(**fields: Any) -> RouteChange:
    """A change that skipped pydantic validation, as if built with model_construct upstream."""
    values: dict[str, Any] = {
        "device": "R",
        "prefix": "10.20.0.0/16",
        "primary": NextHop.model_construct(address="192.0.2.1", interface=None),
        "backup": NextHop.model_construct(address="198.51.100.1", interface=None),
        "mechanism": RerouteMechanism.STATIC_ROUTE,
        "source_prefix": None,
        "ingress_interface": None,
    }
    circuit_id = str(fields.pop("circuit_id", "c1"))
    values.update(fields)
    return RouteChange.model_construct(
        circuit_id=circuit_id, path=CircuitPath.model_construct(**values)
    )


def ios() -> Dialect:
    return dialect_for(Platform.CISCO_IOSXE)


def junos() -> Dialect:
    return dialect_for(Platform.JUNIPER_JUNOS)


def vrp() -> Dialect:
    return dialect_for(Platform.HUAWEI_VRP)


def frr() -> Dialect:
    return dialect_for(Platform.FRR)


# --- rendering: static routes ------------------------------------------------------------


def test_iosxe_reroute_arms_timer_then_makes_before_breaking() -> None:
    plan = ios().render_apply([change()], direction="reroute", revert_s=90)
    assert plan.phases() == [
        ["configure terminal revert timer 2", "ip route 10.20.0.0 255.255.0.0 198.51.100.1", "end"],
        ["configure terminal", "no ip route 10.20.0.0 255.255.0.0 192.0.2.1", "end"],
    ]
    assert plan.make == ("ip route 10.20.0.0 255.255.0.0 198.51.100.1",)
    assert plan.break_ == ("no ip route 10.20.0.0 255.255.0.0 192.0.2.1",)
    assert plan.arm == ("configure terminal revert timer 2",)
    assert plan.commands() == [c for phase in plan.phases() for c in phase]


def test_iosxe_restore_moves_back_to_primary() -> None:
    plan = ios().render_apply([change()], direction="restore", revert_s=60)
    assert plan.commands() == [
        "configure terminal revert timer 1",
        "ip route 10.20.0.0 255.255.0.0 192.0.2.1",
        "end",
        "configure terminal",
        "no ip route 10.20.0.0 255.255.0.0 198.51.100.1",
        "end",
    ]


def test_junos_reroute_uses_exclusive_check_and_confirmed_commit() -> None:
    plan = junos().render_apply([change(Platform.JUNIPER_JUNOS)], direction="reroute", revert_s=600)
    assert plan.commands() == [
        "configure exclusive",
        "set routing-options static route 10.20.0.0/16 next-hop 198.51.100.1",
        "delete routing-options static route 10.20.0.0/16 next-hop 192.0.2.1",
        "commit check",
        "commit confirmed 10",
        "exit configuration-mode",
    ]
    assert len(plan.phases()) == 1  # one atomic commit: nothing to wait for in between


def test_vrp_reroute_commits_a_trial_in_seconds() -> None:
    plan = vrp().render_apply([change(Platform.HUAWEI_VRP)], direction="reroute", revert_s=90.2)
    assert plan.commands() == [
        "system-view",
        "ip route-static 10.20.0.0 16 198.51.100.1",
        "undo ip route-static 10.20.0.0 16 192.0.2.1",
        "commit trial 91",
        "return",
    ]


def test_frr_reroute_has_no_timer_and_makes_before_breaking() -> None:
    plan = frr().render_apply([change(Platform.FRR)], direction="reroute", revert_s=600)
    assert plan.arm == ()
    assert plan.phases() == [
        ["configure terminal", "ip route 10.20.0.0/16 198.51.100.1", "end"],
        ["configure terminal", "no ip route 10.20.0.0/16 192.0.2.1", "end"],
    ]
    assert frr().native_auto_revert is False


def test_render_apply_batch_keeps_every_make_before_any_break() -> None:
    changes = [change(Platform.FRR), change(Platform.FRR, circuit_id="c2", prefix="10.30.0.0/16")]
    first, second = frr().render_apply(changes, direction="reroute", revert_s=60).phases()
    assert first == [
        "configure terminal",
        "ip route 10.20.0.0/16 198.51.100.1",
        "ip route 10.30.0.0/16 198.51.100.1",
        "end",
    ]
    assert second == [
        "configure terminal",
        "no ip route 10.20.0.0/16 192.0.2.1",
        "no ip route 10.30.0.0/16 192.0.2.1",
        "end",
    ]


def test_render_apply_with_make_done_sends_only_the_break() -> None:
    half = [PathState(circuit_id="c1", primary_present=True, backup_present=True)]
    plan = ios().render_apply(
        [change()], direction="reroute", revert_s=60, present=half, armed=True
    )
    assert plan.commands() == [
        "configure terminal",
        "no ip route 10.20.0.0 255.255.0.0 192.0.2.1",
        "end",
    ]


def test_render_apply_with_change_in_place_sends_nothing() -> None:
    done = [PathState(circuit_id="c1", primary_present=False, backup_present=True)]
    for platform in Platform:
        plan = dialect_for(platform).render_apply(
            [change(platform)], direction="reroute", revert_s=120, present=done
        )
        assert plan.commands() == [], platform


def test_iosxe_render_apply_unarmed_retry_arms_again() -> None:
    half = [PathState(circuit_id="c1", primary_present=True, backup_present=True)]
    plan = ios().render_apply([change()], direction="reroute", revert_s=60, present=half)
    assert plan.commands()[0] == "configure terminal revert timer 1"


# --- rendering: policy routes -------------------------------------------------------------


def test_iosxe_pbr_reroute_attaches_route_map_and_restore_removes_it() -> None:
    c = change(pbr=True)
    assert ios().render_apply([c], direction="reroute", revert_s=60).commands() == [
        "configure terminal revert timer 1",
        "ip access-list extended CT-c1",
        "permit ip 10.5.0.0 0.0.255.255 any",
        "exit",
        "route-map CT-c1 permit 10",
        "match ip address CT-c1",
        "set ip next-hop 198.51.100.1",
        "exit",
        "interface Gi0/0/1",
        "ip policy route-map CT-c1",
        "exit",
        "end",
    ]
    assert ios().render_apply([c], direction="restore", revert_s=60).commands() == [
        "configure terminal revert timer 1",
        "interface Gi0/0/1",
        "no ip policy route-map CT-c1",
        "exit",
        "no route-map CT-c1",
        "no ip access-list extended CT-c1",
        "end",
    ]


def test_junos_pbr_reroute_builds_filter_based_forwarding() -> None:
    c = change(Platform.JUNIPER_JUNOS, pbr=True)
    plan = junos().render_apply([c], direction="reroute", revert_s=60)
    assert list(plan.make) == [
        "set firewall family inet filter CT-c1 term prio from source-address 10.5.0.0/16",
        "set firewall family inet filter CT-c1 term prio then routing-instance CT-c1",
        "set firewall family inet filter CT-c1 term default then accept",
        "set routing-instances CT-c1 instance-type forwarding",
        "set routing-instances CT-c1 routing-options static route 0.0.0.0/0 next-hop 198.51.100.1",
        "set interfaces ge-0/0/1 unit 0 family inet filter input CT-c1",
    ]
    assert list(junos().render_apply([c], direction="restore", revert_s=60).break_) == [
        "delete interfaces ge-0/0/1 unit 0 family inet filter input CT-c1",
        "delete firewall family inet filter CT-c1",
        "delete routing-instances CT-c1",
    ]


def test_vrp_pbr_reroute_redirects_with_a_traffic_policy() -> None:
    from continuity.dialects.huawei_vrp import acl_number

    c = change(Platform.HUAWEI_VRP, pbr=True)
    acl = acl_number("c1")
    assert 3000 <= acl <= 3999
    plan = vrp().render_apply([c], direction="reroute", revert_s=60)
    assert plan.commands() == [
        "system-view",
        f"acl number {acl}",
        "rule 5 permit ip source 10.5.0.0 0.0.255.255",
        "quit",
        "traffic classifier CT-c1",
        f"if-match acl {acl}",
        "quit",
        "traffic behavior CT-c1",
        "redirect ip-nexthop 198.51.100.1",
        "quit",
        "traffic policy CT-c1",
        "classifier CT-c1 behavior CT-c1",
        "quit",
        "interface GE0/0/1",
        "traffic-policy CT-c1 inbound",
        "quit",
        "commit trial 60",
        "return",
    ]
    assert list(vrp().render_apply([c], direction="restore", revert_s=60).break_) == [
        "interface GE0/0/1",
        "undo traffic-policy CT-c1 inbound",
        "quit",
        "undo traffic policy CT-c1",
        "undo traffic behavior CT-c1",
        "undo traffic classifier CT-c1",
        f"undo acl number {acl}",
    ]


def test_frr_pbr_reroute_uses_pbr_map_and_nexthop_group() -> None:
    c = change(Platform.FRR, pbr=True)
    assert frr().render_apply([c], direction="reroute", revert_s=60).commands() == [
        "configure terminal",
        "nexthop-group CT-c1",
        "nexthop 198.51.100.1",
        "exit",
        "pbr-map CT-c1 seq 10",
        "match src-ip 10.5.0.0/16",
        "set nexthop-group CT-c1",
        "exit",
        "interface eth1",
        "pbr-policy CT-c1",
        "exit",
        "end",
    ]
    assert frr().render_apply([c], direction="restore", revert_s=60).commands() == [
        "configure terminal",
        "interface eth1",
        "no pbr-policy CT-c1",
        "exit",
        "no pbr-map CT-c1",
        "no nexthop-group CT-c1",
        "end",
    ]


# --- confirm and rollback -----------------------------------------------------------------


def test_render_confirm_persists_where_commit_is_not_persistent() -> None:
    assert ios().render_confirm() == ["configure confirm", "write memory"]
    assert junos().render_confirm() == ["configure exclusive", "commit", "exit configuration-mode"]
    assert vrp().render_confirm() == ["system-view", "commit", "return", "save"]
    assert frr().render_confirm() == ["write memory"]


def test_render_rollback_aborts_on_device_or_inverts_on_junos_and_frr() -> None:
    assert ios().render_rollback([change()], "reroute") == ["configure revert now"]
    # Junos: inverse lines under a plain commit, never `rollback 1` (see the dialect).
    assert junos().render_rollback([change(Platform.JUNIPER_JUNOS)], "reroute") == [
        "configure exclusive",
        "set routing-options static route 10.20.0.0/16 next-hop 192.0.2.1",
        "delete routing-options static route 10.20.0.0/16 next-hop 198.51.100.1",
        "commit",
        "exit configuration-mode",
    ]
    assert vrp().render_rollback([change(Platform.HUAWEI_VRP)], "reroute") == ["abort trial"]
    assert frr().render_rollback([change(Platform.FRR)], "reroute") == [
        "configure terminal",
        "ip route 10.20.0.0/16 192.0.2.1",
        "end",
        "configure terminal",
        "no ip route 10.20.0.0/16 198.51.100.1",
        "end",
    ]


def test_render_inverse_commits_plainly_without_a_timer() -> None:
    assert junos().render_inverse([change(Platform.JUNIPER_JUNOS)], "reroute") == [
        "configure exclusive",
        "set routing-options static route 10.20.0.0/16 next-hop 192.0.2.1",
        "delete routing-options static route 10.20.0.0/16 next-hop 198.51.100.1",
        "commit",
        "exit configuration-mode",
    ]
    inverse = vrp().render_inverse([change(Platform.HUAWEI_VRP)], "reroute")
    assert inverse[-2:] == ["commit", "return"]
    assert ios().render_inverse([change()], "reroute")[0] == "configure terminal"


# --- timers -----------------------------------------------------------------------------


def test_revert_units_round_up_to_each_platforms_unit() -> None:
    assert ios().revert_units(1) == 1
    assert ios().revert_units(60) == 1
    assert ios().revert_units(60.5) == 2
    assert junos().revert_units(7201) == 121  # Junos goes past IOS-XE's 120 min
    assert vrp().revert_units(5) == 60
    assert vrp().revert_units(600.1) == 601
    assert frr().revert_units(600) is None
    assert ios().armed_revert_s(61) == 120.0
    assert vrp().armed_revert_s(61) == 61.0


def test_revert_units_beyond_platform_range_refused() -> None:
    with pytest.raises(ValidationFailed):
        ios().revert_units(121 * 60)
    with pytest.raises(ValidationFailed):
        vrp().revert_units(65536)
    with pytest.raises(ValidationFailed):
        ios().render_apply([change()], direction="reroute", revert_s=3 * 3600)


def test_revert_window_is_confirm_plus_verify_plus_margin() -> None:
    t = Timings(confirm_window_s=600, verify_timeout_s=30, revert_margin_s=120)
    assert revert_window_s(t) == 750


# --- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize("platform", list(Platform))
@pytest.mark.parametrize(
    "fields",
    [
        {"prefix": "10.0.0.0/8; reload"},
        {"prefix": "10.20.0.1/16"},  # host bits set
        {"prefix": "10.020.0.0/16"},  # non-canonical
        {"prefix": "10.20.0.0/16\nreload"},
        {"backup": NextHop.model_construct(address="198.51.100.1 ; reload", interface=None)},
        {"primary": NextHop.model_construct(address="192.0.2.1\nreload", interface=None)},
        {"circuit_id": "c1\nreload"},
    ],
    ids=["injected", "host-bits", "non-canonical", "newline", "hop-injected", "hop-newline", "id"],
)
def test_render_apply_bad_value_raises_validation_failed(
    platform: Platform, fields: dict[str, object]
) -> None:
    with pytest.raises(ValidationFailed):
        dialect_for(platform).render_apply([tampered(**fields)], direction="reroute", revert_s=60)


@pytest.mark.parametrize(
    ("platform", "interface"),
    [
        (Platform.CISCO_IOSXE, "Gi0/0/1\nreload"),
        (Platform.CISCO_IOSXE, "ge-0/0/1.0"),  # a Junos name on IOS-XE
        (Platform.JUNIPER_JUNOS, "Gi0/0/1"),
        (Platform.HUAWEI_VRP, "GE0/0/1 ; reload"),
        (Platform.FRR, "eth1/0"),  # no slashes in Linux names
        (Platform.FRR, "averyveryverylongname0"),
    ],
)
def test_render_apply_pbr_bad_interface_raises_validation_failed(
    platform: Platform, interface: str
) -> None:
    bad = tampered(
        mechanism=RerouteMechanism.SOURCE_PBR,
        source_prefix="10.5.0.0/16",
        ingress_interface=interface,
    )
    with pytest.raises(ValidationFailed):
        dialect_for(platform).render_apply([bad], direction="reroute", revert_s=60)


def test_render_apply_pbr_circuit_id_unfit_for_object_names_refused() -> None:
    bad = tampered(
        circuit_id="c1.v2",
        mechanism=RerouteMechanism.SOURCE_PBR,
        source_prefix="10.5.0.0/16",
        ingress_interface="Gi0/0/1",
    )
    with pytest.raises(ValidationFailed):
        ios().render_apply([bad], direction="reroute", revert_s=60)


def test_render_apply_pbr_without_source_refused() -> None:
    bad = tampered(mechanism=RerouteMechanism.SOURCE_PBR, ingress_interface="Gi0/0/1")
    with pytest.raises(ValidationFailed):
        ios().render_apply([bad], direction="reroute", revert_s=60)


def test_render_apply_unknown_direction_refused() -> None:
    with pytest.raises(ValidationFailed):
        ios().render_apply([change()], direction="sideways", revert_s=60)  # type: ignore[arg-type]


def test_dialect_for_unknown_platform_refused() -> None:
    with pytest.raises(ValidationFailed):
        dialect_for("nokia_sros")


def test_vrp_two_pbr_circuits_on_one_acl_number_refused() -> None:
    from continuity.dialects.huawei_vrp import acl_number

    ids = [f"c{i}" for i in range(200)]
    seen: dict[int, str] = {}
    pair = None
    for cid in ids:
        n = acl_number(cid)
        if n in seen:
            pair = (seen[n], cid)
            break
        seen[n] = cid
    assert pair is not None
    changes = [change(Platform.HUAWEI_VRP, circuit_id=cid, pbr=True) for cid in pair]
    with pytest.raises(ValidationFailed):
        vrp().render_apply(changes, direction="reroute", revert_s=60)


# --- parsing ------------------------------------------------------------------------------


def outputs(d: Dialect, routes: str, config: str = "", pending: str = "") -> dict[str, str]:
    out = {d.route_command: routes, d.config_command: config}
    if d.pending_command:
        out[d.pending_command] = pending
    return out


def test_iosxe_parse_state_reads_ecmp_and_config() -> None:
    routes = (
        "S        10.20.0.0/16 [1/0] via 198.51.100.1\n"
        "                     [1/0] via 192.0.2.1\n"
        "S        10.30.0.0/16 [1/0] via 192.0.2.1\n"
    )
    config = "hostname R\n!\nip route 10.20.0.0 255.255.0.0 198.51.100.1\n"
    out = outputs(ios(), routes, config)
    assert ios().parse_state(out, [change()]) == [
        PathState(circuit_id="c1", primary_present=True, backup_present=True)
    ]
    assert ios().parse_config_state(out, [change()]) == [
        PathState(circuit_id="c1", primary_present=False, backup_present=True)
    ]


def test_iosxe_parse_pending_reads_archive_timer() -> None:
    assert not ios().parse_pending("No Rollback Confirmed Change pending")
    assert ios().parse_pending("Timer type: Revert\nTimer value: 2 min\nTime remaining: 97 secs")


def test_iosxe_pbr_attached_read_from_running_config() -> None:
    config = (
        "interface GigabitEthernet0/0/1\n ip address 192.0.2.2 255.255.255.252\n"
        " ip policy route-map CT-c1\n!\n"
        "route-map CT-c1 permit 10\n match ip address CT-c1\n set ip next-hop 198.51.100.1\n"
    )
    state = ios().parse_state(outputs(ios(), "", config), [change(pbr=True)])
    assert state == [PathState(circuit_id="c1", primary_present=False, backup_present=True)]


def test_junos_parse_state_reads_route_and_set_lines() -> None:
    routes = (
        "inet.0: 3 destinations, 3 routes (3 active, 0 holddown, 0 hidden)\n"
        "+ = Active Route, - = Last Active, * = Both\n\n"
        "10.20.0.0/16       *[Static/5] 00:01:02\n"
        "                    >  to 198.51.100.1 via ge-0/0/2.0\n"
    )
    config = "set routing-options static route 10.20.0.0/16 next-hop 198.51.100.1\n"
    out = outputs(junos(), routes, config)
    c = change(Platform.JUNIPER_JUNOS)
    expected = [PathState(circuit_id="c1", primary_present=False, backup_present=True)]
    assert junos().parse_state(out, [c]) == expected
    assert junos().parse_config_state(out, [c]) == expected


def test_junos_parse_pending_reads_commit_list() -> None:
    pending = (
        "0   2025-01-01 10:00:00 UTC by netops via cli commit confirmed, rollback in 2mins\n"
        "1   2025-01-01 09:00:00 UTC by netops via cli\n"
    )
    assert junos().parse_pending(pending)
    assert not junos().parse_pending("0   2025-01-01 10:00:00 UTC by netops via cli\n")


def test_vrp_parse_state_skips_inactive_section_and_strips_cursor_moves() -> None:
    raw = (
        "Destination/Mask    Proto   Pre  Cost      Flags NextHop         Interface\r\n"
        "     10.20.0.0/16   Static  60   0          RD   198.51.100.1    GE0/0/2\r\n"
        "                    Static  60   0          RD   192.0.2.1       GE0/0/1\r\n"
        "Static routing table status : <Inactive>\r\n"
        "     10.30.0.0/16   Static  60   0          R    192.0.2.1       GE0/0/1\r\n"
        "  \x1b[1D"
    )
    routes = vrp().parse_routes(vrp().clean(raw))
    assert routes == {"10.20.0.0/16": {"198.51.100.1", "192.0.2.1"}}
    config = (
        "ip route-static 10.20.0.0 255.255.0.0 198.51.100.1\n"
        "ip route-static 10.30.0.0 16 192.0.2.1\n"
    )
    assert vrp().parse_config_routes(config) == {
        "10.20.0.0/16": {"198.51.100.1"},
        "10.30.0.0/16": {"192.0.2.1"},
    }
    assert vrp().parse_pending("Trial status: running, remaining 57 seconds")
    assert not vrp().parse_pending("Trial status: none")


def test_frr_parse_state_ignores_inactive_next_hops() -> None:
    routes = (
        "S>* 10.20.0.0/16 [1/0] via 198.51.100.1, eth2, weight 1, 00:00:05\n"
        "  *                    via 192.0.2.1, eth1, weight 1, 00:00:05\n"
        "S   10.30.0.0/16 [1/0] via 192.0.2.1 inactive\n"
    )
    assert frr().parse_routes(routes) == {"10.20.0.0/16": {"198.51.100.1", "192.0.2.1"}}
    config = "frr version 8.4.4\nhostname R\nip route 10.30.0.0/16 192.0.2.1\n!\nend\n"
    assert frr().parse_config_routes(config) == {"10.30.0.0/16": {"192.0.2.1"}}


# --- session handling -------------------------------------------------------------------


def test_prompts_match_every_mode_and_not_output() -> None:
    assert ios().is_prompt("R#") and ios().is_prompt("R(config-if)#")
    assert not ios().is_prompt("S        10.20.0.0/16 [1/0] via 198.51.100.1")
    assert junos().is_prompt("netops@R> ") and junos().is_prompt("netops@R# ")
    assert vrp().is_prompt("<R>") and vrp().is_prompt("[~R]")
    assert vrp().is_prompt("[*R-acl-adv-3001]")
    assert frr().is_prompt("R(config-pbr-map)#")
    assert not junos().is_prompt("set routing-options static route 10.20.0.0/16 next-hop 1.2.3.4")


def test_is_failure_ignores_removal_of_what_is_absent() -> None:
    assert ios().is_failure("% Invalid input detected at '^' marker.")
    assert not ios().is_failure("%No matching route to delete")
    assert vrp().is_failure("Error: Unrecognized command found at '^' position.")
    assert not vrp().is_failure("Error: The route does not exist.")
    assert not frr().is_failure("% Refusing to remove a non-existent route")
    assert junos().is_failure("error: configuration database locked by: netops")
    assert junos().is_busy("error: configuration database locked by: netops")
    assert not junos().is_failure("warning: statement not found")


def test_interactive_answers_yes_no_questions() -> None:
    save = "Warning: The current configuration will be written to the device. Continue? [Y/N]:"
    assert vrp().answer_for(save) == "Y"
    assert (
        vrp().answer_for(
            "Warning: Uncommitted configurations found. "
            "Are you sure to commit them before exiting? "
            "[Y(yes)/N(no)/C(cancel)]:"
        )
        == "N"
    )
    assert junos().answer_for("Exit with uncommitted changes? [yes,no] (yes) ") == "yes"
    assert ios().answer_for("R#") is None
