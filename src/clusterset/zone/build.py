"""Build the clusterset zone as wire answers, one fragment per imported service.

A change costs what it changes. Each service's answers (its A/AAAA/SRV names,
endpoint names and glue, and its unified-zone name) form one fragment, built
from that service's inputs only: its ServiceImport, its MCS slices, the local
Service, its health track and the probe verdicts on it. A build given the
previous state compares every service's inputs with those its fragment was
built from (level-based: the inputs of the new view, never the events that led
there) and rebuilds only the fragments whose inputs differ; the others keep
their prebuilt answers (the same objects). What every answer depends on
(settings, the asking cluster, cluster properties, expired sources) rebuilds everything
when it changes, and a build without `previous` is the full rebuild (cold
start, and the server's periodic resync).

Time: a local-first answer may depend on `now` (hysteresis). A fragment whose
output depends on `now` is rebuilt every time; one that was eligible only from
a given time on is reused only from that time on (see `_timing`).

The name grammar (relative to the zone; KEP-1645 DNS specification 1.0.0,
with the [DECISION]s of docs/dns-schema.md):

    dns-version                          TXT "1.0.0"
    svc, pod, <ns>.svc                   exist (NODATA) when the namespace exists locally
    <svc>.<ns>.svc                       A/AAAA: ClusterSetIP -> spec.ips;
                                         Headless -> ready endpoints of every cluster
                                         SRV (bare): every port, deduplicated by (target, port)
    _<port>._<proto>.<svc>.<ns>.svc      SRV for a named port
    <hostname>.<clusterid>.<svc>.<ns>.svc  A/AAAA of one ready endpoint of a Headless service
    <clusterid>.<svc>.<ns>.svc           MUST NOT exist (SPEC 2.3.4/2.4.4): NXDOMAIN
    apex                                 SOA, NS ns.dns.<zone> (+ glue when addresses are known)

Every name absent from the result is NXDOMAIN; every name present but
without the asked type is NODATA.

tests/zone_records.py renders the same grammar through dnspython: the oracle the
tests compare these bytes with. Pure: no I/O, no clock.
"""

from __future__ import annotations

import dataclasses
import functools
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from clusterset.model.ids import ClusterId, ServiceKey
from clusterset.model.objects import EndpointSlice, ImportType, ServiceImport, ServicePort
from clusterset.model.state import ImportedView, Track
from clusterset.zone import policy
from clusterset.zone.encode import (
    AAAA,
    NS,
    RR,
    SOA,
    SRV,
    TXT,
    A,
    NameProblem,
    Prebuilt,
    Rotation,
    address,
    labels_wire,
    name_from_text,
    prebuild,
)
from clusterset.zone.settings import ZoneSettings

Answers = dict[bytes, Prebuilt | Rotation]
TrackKey = tuple[ServiceKey, ClusterId]
_SRV3 = struct.Struct("!HHH")
_FAR_PAST = float("-inf")
_NONE: frozenset[ClusterId] = frozenset()
_TYPE_WIRE = {t: t.to_bytes(2, "big") for t in (A, NS, SOA, TXT, AAAA, SRV)}


@dataclass(frozen=True, slots=True)
class Fragment:
    """What one service contributed to the zone, and the inputs it was built from."""

    inputs: tuple[object, ...]
    keys: tuple[bytes, ...]  # answer keys (wire name + type) in ZoneState.answers
    names: tuple[bytes, ...]
    explain: policy.Selection | None
    explain_unified: policy.Selection | None
    tracks: Mapping[TrackKey, Track]
    wake_at: float | None
    warnings: tuple[str, ...]
    volatile: bool  # the output depends on `now`: never reused
    valid_from: float  # reused only when now >= this (a hysteresis window that closed)


@dataclass(slots=True)
class ZoneState:
    """One zone generation: the lookups the query path reads, and what the next build reuses.

    Never mutated after `build` returns; the next build copies the mappings.
    """

    zone: str
    origin: bytes
    serial: int
    soa_ttl: int
    soa_fixed: bytes  # SOA serial, refresh, retry, expire, minimum (packed)
    # Names that exist, as dict keys: a dict copies with one memcpy-like clone, a set
    # re-inserts every entry (the copy is most of an edit's cost at fleet size).
    names: dict[bytes, None]
    answers: Answers
    base: Fragment  # apex, dns-version, svc/pod and the namespaces
    fragments: dict[ServiceKey, Fragment]
    globals: tuple[object, ...]  # inputs every fragment depends on
    tracks: dict[TrackKey, Track] = field(default_factory=dict)
    wakes: dict[ServiceKey, float] = field(default_factory=dict)
    warned: dict[ServiceKey, tuple[str, ...]] = field(default_factory=dict)
    lease_wake: float | None = None
    rebuilt: int = 0  # fragments built by this build (the rest were reused)
    # Warnings of what this build built (the zone's own ones when they changed): what the
    # server logs, so a fleet's standing warnings are not logged again at every edit.
    new_warnings: list[str] = field(default_factory=list)

    @property
    def wake_at(self) -> float | None:
        """The earliest time an answer may change by itself (hysteresis, lease expiry)."""
        times = list(self.wakes.values())
        if self.lease_wake is not None:
            times.append(self.lease_wake)
        return min(times) if times else None

    @property
    def warnings(self) -> list[str]:
        out = list(self.base.warnings)
        for key in sorted(self.warned):
            out.extend(self.warned[key])
        return out

    @property
    def explain(self) -> dict[ServiceKey, policy.Selection]:
        return {k: f.explain for k, f in self.fragments.items() if f.explain is not None}

    @property
    def explain_unified(self) -> dict[ServiceKey, policy.Selection]:
        return {
            k: f.explain_unified for k, f in self.fragments.items() if f.explain_unified is not None
        }


class _Builder:
    """Records of one fragment, accumulated in the order the oracle (tests/zone_records.py)
    adds them."""

    __slots__ = ("answers", "names", "rotations", "ttl", "warnings")

    def __init__(self, ttl: int) -> None:
        self.ttl = ttl
        self.names: dict[bytes, None] = {}  # an ordered set
        self.answers: dict[bytes, tuple[list[RR], list[RR]]] = {}
        self.rotations: dict[bytes, list[list[RR]]] = {}
        self.warnings: list[str] = []

    def exist(self, name: bytes) -> None:
        self.names[name] = None

    def answer(self, name: bytes, rdtype: int) -> tuple[list[RR], list[RR]]:
        key = name + _TYPE_WIRE[rdtype]
        got = self.answers.get(key)
        if got is None:
            got = self.answers[key] = ([], [])
        return got

    def add(self, name: bytes, rdtype: int, rr: RR) -> None:
        self.names[name] = None
        self.answer(name, rdtype)[0].append(rr)

    def address(self, name: bytes, ip: str, *, exist: bool = True) -> None:
        rdtype, packed = address(ip)
        rr = (name, rdtype, self.ttl, (), packed)
        if exist:
            self.add(name, rdtype, rr)
        else:
            self.answer(name, rdtype)[0].append(rr)

    def attempt(self, what: str, fn: Callable[[], None]) -> None:
        """Names longer than 255 octets or labels over 63 cannot exist: warn and go on."""
        try:
            fn()
        except NameProblem as exc:
            self.warnings.append(f"{what}: cannot be named in DNS ({exc.__class__.__name__})")

    def finish(self) -> Answers:
        out: Answers = {}
        for key, (answer, additional) in self.answers.items():
            qname, qtype = key[:-2], int.from_bytes(key[-2:], "big")
            orders = self.rotations.get(key)
            if orders:
                out[key] = Rotation([prebuild(qname, qtype, o, additional) for o in orders])
            else:
                out[key] = prebuild(qname, qtype, answer, additional)
        return out


def build(
    view: ImportedView,
    settings: ZoneSettings,
    *,
    serial: int,
    previous: ZoneState | None = None,
) -> ZoneState:
    """The zone as `view.cluster` sees it, reusing `previous` where the inputs are the same."""
    origin = name_from_text(settings.zone.lower())
    lease_wake = None
    if settings.source_leases and view.leases:
        view, lease_wake = expire_leases(view)
    unified_root = _unified_root(settings)
    me = view.cluster
    # A unified zone at or under our own zone could give two services the same name;
    # fragments would then not be independent: always build such a zone whole.
    shared = unified_root is not None and unified_root.endswith(origin)
    glob: tuple[object, ...] = (settings, me, view.properties, view.expired, shared)
    base_builder = _Builder(settings.ttl)
    svc_root = _base(base_builder, view, settings, origin, serial)
    base = _fragment((), base_builder, None, None, (), False, _FAR_PAST)
    base_answers = base_builder.finish()
    soa_fixed = struct.pack("!IIIII", serial & 0xFFFFFFFF, 7200, 1800, 86400, settings.ttl)

    reuse = previous is not None and not shared and previous.globals == glob
    if previous is not None and reuse:
        state = ZoneState(
            zone=settings.zone.lower(),
            origin=origin,
            serial=serial,
            soa_ttl=min(300, settings.ttl),
            soa_fixed=soa_fixed,
            names=previous.names.copy(),
            answers=previous.answers.copy(),
            base=base,
            fragments=previous.fragments.copy(),
            globals=glob,
            tracks=dict(previous.tracks),
            wakes=dict(previous.wakes),
            warned=dict(previous.warned),
            lease_wake=lease_wake,
        )
        _drop(state, previous.base, None)
    else:
        state = ZoneState(
            zone=settings.zone.lower(),
            origin=origin,
            serial=serial,
            soa_ttl=min(300, settings.ttl),
            soa_fixed=soa_fixed,
            names={},
            answers={},
            base=base,
            fragments={},
            globals=glob,
            lease_wake=lease_wake,
        )
    state.names.update(dict.fromkeys(base.names))
    state.answers.update(base_answers)
    if not reuse or previous is None or previous.base.warnings != base.warnings:
        state.new_warnings.extend(base.warnings)

    failing: dict[ServiceKey, frozenset[ClusterId]] = {}
    for k, c in view.probe_failed:
        failing[k] = failing.get(k, _NONE) | {c}
    fragments = state.fragments
    namespaces = view.namespaces
    slices_of, local_of, track_of = view.slices.get, view.local_services.get, view.tracks.get
    has_local = bool(view.local_services)
    asker = me if view.tracks else None  # tracks are kept per (service, asking cluster)
    present = 0
    now = view.now
    # The per-service loop runs for every service at every build: keep it to a few dict
    # lookups (ServiceKey hashes are not cached) and identity-first tuple compares.
    for key, imp in view.imports.items():
        if key.namespace not in namespaces:
            # KEP: a service is imported only where its namespace exists (CoreDNS checks too).
            continue
        present += 1
        slices = slices_of(key, ())
        inputs = (
            imp,
            slices,
            local_of(key) if has_local else None,
            track_of((key, asker)) if asker is not None else None,
            failing.get(key, _NONE) if failing else _NONE,
        )
        old = fragments.get(key)
        if old is not None:
            if old.inputs == inputs and not old.volatile and now >= old.valid_from:
                continue
            _drop(state, old, key)
        state.rebuilt += 1
        frag, answers = _service_fragment(
            view, imp, slices, settings, svc_root, unified_root, inputs
        )
        fragments[key] = frag
        state.answers.update(answers)
        state.names.update(dict.fromkeys(frag.names))
        state.tracks.update(frag.tracks)
        if frag.wake_at is not None:
            state.wakes[key] = frag.wake_at
        if frag.warnings:
            state.warned[key] = frag.warnings
            state.new_warnings.extend(frag.warnings)
    if len(fragments) != present:  # services gone (or their namespace): drop their answers
        for key in [k for k in fragments if k not in view.imports or k.namespace not in namespaces]:
            _drop(state, fragments.pop(key), key)
    return state


def service(
    view: ImportedView, key: ServiceKey, settings: ZoneSettings
) -> tuple[Fragment, Answers] | None:
    """The fragment `build` makes for `key` alone, and its answers; None when the zone has
    none (not imported, or its namespace is missing).

    A fragment depends only on its service's inputs and the globals (module docstring), so
    this is what the server holds for the service, at the cost of one service: what the
    pre-flight check and the admission webhook read.
    """
    imp = view.imports.get(key)
    if imp is None or key.namespace not in view.namespaces:
        return None
    if settings.source_leases and view.leases:
        view, _ = expire_leases(view)
    svc_root = labels_wire(["svc"], name_from_text(settings.zone.lower()))
    slices = view.slices.get(key, ())
    return _service_fragment(view, imp, slices, settings, svc_root, _unified_root(settings), ())


def _unified_root(settings: ZoneSettings) -> bytes | None:
    if not settings.unified_zone:
        return None
    return labels_wire(["svc"], name_from_text(settings.unified_zone.lower()))


def _drop(state: ZoneState, frag: Fragment, key: ServiceKey | None) -> None:
    """Take one fragment's contribution out of the (copied) mappings of `state`."""
    for k in frag.keys:
        del state.answers[k]
    names = state.names
    for n in frag.names:
        names.pop(n, None)
    for t in frag.tracks:
        state.tracks.pop(t, None)
    if key is not None:
        state.wakes.pop(key, None)
        state.warned.pop(key, None)


def _fragment(
    inputs: tuple[object, ...],
    b: _Builder,
    main: policy.Selection | None,
    unified: policy.Selection | None,
    tracks: tuple[tuple[TrackKey, Track], ...],
    volatile: bool,
    valid_from: float,
) -> Fragment:
    wakes = [s.wake_at for s in (main, unified) if s is not None and s.wake_at is not None]
    return Fragment(
        inputs=inputs,
        keys=tuple(b.answers),
        names=tuple(b.names),
        explain=main,
        explain_unified=unified,
        tracks=dict(tracks),
        wake_at=min(wakes) if wakes else None,
        warnings=tuple(b.warnings),
        volatile=volatile,
        valid_from=valid_from,
    )


def _base(
    b: _Builder, view: ImportedView, settings: ZoneSettings, origin: bytes, serial: int
) -> bytes:
    """Apex SOA and NS (+ glue), dns-version, svc, pod and the namespaces; returns svc."""
    ttl = settings.ttl
    ns_name = labels_wire(["ns", "dns"], origin)
    hostmaster = labels_wire(["hostmaster"], origin)
    fixed = struct.pack("!IIIII", serial & 0xFFFFFFFF, 7200, 1800, 86400, ttl)
    b.add(origin, SOA, (origin, SOA, min(300, ttl), (ns_name, hostmaster), fixed))
    b.add(origin, NS, (origin, NS, ttl, (ns_name,), b""))
    b.exist(ns_name)  # our SOA MNAME and NS target exists even without glue addresses
    glue = b.answer(origin, NS)[1]
    for addr in settings.ns_addresses:
        rdtype, packed = address(addr)
        rr = (ns_name, rdtype, ttl, (), packed)
        b.add(ns_name, rdtype, rr)
        glue.append(rr)
    version = labels_wire(["dns-version"], origin)
    txt = settings.version.encode()
    b.add(version, TXT, (version, TXT, settings.version_ttl, (), bytes([len(txt)]) + txt))
    svc_root = labels_wire(["svc"], origin)
    b.exist(svc_root)
    b.exist(labels_wire(["pod"], origin))
    for ns in view.namespaces:
        b.attempt(f"namespace {ns}", functools.partial(_exist, b, [ns], svc_root))
    return svc_root


def _exist(b: _Builder, labels: list[str], parent: bytes) -> None:
    b.exist(labels_wire(labels, parent))


def _service_fragment(
    view: ImportedView,
    imp: ServiceImport,
    slices: tuple[EndpointSlice, ...],
    settings: ZoneSettings,
    svc_root: bytes,
    unified_root: bytes | None,
    inputs: tuple[object, ...],
) -> tuple[Fragment, Answers]:
    b = _Builder(settings.ttl)
    sels: list[policy.Selection | None] = [None, None]

    def main() -> None:
        _service(b, view, imp, slices, settings, svc_root, sels)

    def unified() -> None:
        assert unified_root is not None
        _unified(b, view, imp, slices, unified_root, sels)

    key = imp.key
    b.attempt(f"ServiceImport {key}", main)
    if unified_root is not None:
        b.attempt(f"ServiceImport {key} in {settings.unified_zone}", unified)
    volatile, valid_from = _timing(view, imp, settings, sels)
    tracks = tuple(t for s in sels if s is not None for t in s.tracks.items())
    frag = _fragment(inputs, b, sels[0], sels[1], tracks, volatile, valid_from)
    return frag, b.finish()


def _timing(
    view: ImportedView,
    imp: ServiceImport,
    settings: ZoneSettings,
    sels: list[policy.Selection | None],
) -> tuple[bool, float]:
    """Whether the selections depend on `now`, else from when on they hold (policy.py).

    Only local-first reads the clock: a new or flipped health track starts at `now`, and
    inside a hysteresis window the answer waits (wake_at is set). Outside both, a healthy
    local copy is preferred only once now >= since + hysteresis; an unhealthy one never is.
    """
    valid_from = _FAR_PAST
    for sel in sels:
        if sel is None or not sel.tracks:
            continue
        if sel.wake_at is not None:
            return True, valid_from
        for tk, out in sel.tracks.items():
            if out != view.tracks.get(tk):
                return True, valid_from
            if out.healthy:
                hysteresis = policy.options(imp, settings.default_policy).hysteresis
                valid_from = max(valid_from, out.since + hysteresis)
    return False, valid_from


def _weight(n: int) -> int:
    """CoreDNS SRV weight: floor(100 / n) over the entries before de-duplication, at least 1."""
    return max(1, 100 // n) if n else 100


def _srv(b: _Builder, owner: bytes, targets: list[tuple[bytes, int, tuple[str, ...]]]) -> None:
    """SRV records for `targets`, deduplicated by (target, port), with A/AAAA glue."""
    weight = _weight(len(targets))
    ttl = b.ttl
    seen: set[tuple[bytes, int]] = set()
    glue_seen: set[tuple[bytes, str]] = set()
    if not targets:
        return
    b.names[owner] = None
    answer, additional = b.answer(owner, SRV)
    pack = _SRV3.pack
    for target, port, addrs in targets:
        if (target, port) not in seen:
            seen.add((target, port))
            answer.append((owner, SRV, ttl, (), pack(0, weight, port) + target))
        # Glue is de-duplicated by (target, address), not by SRV: two endpoints sharing a
        # hostname give one SRV and both addresses (CoreDNS does the same).
        for a in addrs:
            if (target, a) not in glue_seen:
                glue_seen.add((target, a))
                rdtype, packed = address(a)
                additional.append((target, rdtype, ttl, (), packed))


def _port_owner(port: ServicePort, svc_name: bytes) -> bytes | None:
    """`_<port>._<proto>.<svc>...`; unnamed ports have no SRV name (SPEC 2.3.2)."""
    if not port.name:
        return None
    return labels_wire(["_" + port.name, "_" + port.protocol.value], svc_name)


def _service(
    b: _Builder,
    view: ImportedView,
    imp: ServiceImport,
    slices: tuple[EndpointSlice, ...],
    settings: ZoneSettings,
    svc_root: bytes,
    sels: list[policy.Selection | None],
) -> None:
    name = labels_wire([imp.name, imp.namespace], svc_root)
    sel = sels[0] = policy.select(view, imp, slices, default=settings.default_policy)
    if imp.type is ImportType.HEADLESS:
        _headless(b, name, sel)
        return
    b.exist(name)
    # `failover: endpoints` selects remote endpoints instead of the ClusterSetIP.
    addrs = sel.addresses or tuple(dict.fromkeys(e.address for e in sel.endpoints))
    for ip in addrs:
        b.address(name, ip)
    _rotate(b, name, sel)
    # No address: the names exist (NODATA), but SRV would point at a target that does not resolve.
    _srv(b, name, [(name, p.port, addrs) for p in imp.ports for _ in addrs])
    for port in imp.ports:
        owner = _port_owner(port, name)
        if owner is None:
            continue
        b.exist(owner)
        same = [p for p in imp.ports if _port_owner(p, name) == owner]
        _srv(b, owner, [(name, p.port, addrs) for p in same for _ in addrs])


def _headless(b: _Builder, name: bytes, sel: policy.Selection) -> None:
    """Headless: ready endpoints of every selected cluster; none -> NXDOMAIN (SPEC 2.4.1)."""
    if not sel.endpoints:
        return
    b.exist(name)
    seen: set[str] = set()
    # (target, port, address) for SRV; one entry per address x port.
    entries: list[tuple[bytes, ServicePort, str]] = []
    for ep in sel.endpoints:
        target: bytes | None = None
        if ep.cluster:
            target = labels_wire([endpoint_hostname(ep.hostname, ep.address), ep.cluster], name)
            b.address(target, ep.address)
        if ep.address not in seen:
            seen.add(ep.address)
            b.address(name, ep.address)
        if target is not None:
            entries.extend((target, p, ep.address) for p in ep.ports)
    _rotate(b, name, sel)
    _srv(b, name, [(t, p.port, (a,)) for t, p, a in entries])
    owner_of: dict[ServicePort, bytes | None] = {}
    owners: dict[bytes, list[tuple[bytes, int, tuple[str, ...]]]] = {}
    for t, p, a in entries:
        if p not in owner_of:
            owner_of[p] = _port_owner(p, name)
        owner = owner_of[p]
        if owner is not None:
            owners.setdefault(owner, []).append((t, p.port, (a,)))
    for owner, group in owners.items():
        _srv(b, owner, group)


def _unified(
    b: _Builder,
    view: ImportedView,
    imp: ServiceImport,
    slices: tuple[EndpointSlice, ...],
    unified_root: bytes,
    sels: list[policy.Selection | None],
) -> None:
    """`<svc>.<ns>.svc.<unified_zone>` A/AAAA, always local-first (the name pods already use)."""
    name = labels_wire([imp.name, imp.namespace], unified_root)
    sel = sels[1] = policy.select(
        view, imp, slices, default=policy.LOCAL_FIRST, force=policy.LOCAL_FIRST
    )
    addresses = sel.addresses or tuple(dict.fromkeys(e.address for e in sel.endpoints))
    for ip in addresses:
        b.address(name, ip, exist=False)  # not in our zone: only answered, never NXDOMAIN
    _rotate(b, name, sel)


def _rotate(b: _Builder, name: bytes, sel: policy.Selection) -> None:
    """Record the alternative answer orders of `name` (round-robin among equals)."""
    if not sel.rotations:
        return
    for rdtype in (A, AAAA):
        key = name + _TYPE_WIRE[rdtype]
        base = b.answers.get(key)
        if base is None:
            continue
        by_addr = {rr[4]: rr for rr in base[0]}
        b.rotations[key] = [
            [by_addr[p] for p in (address(a)[1] for a in order) if p in by_addr]
            for order in sel.rotations
        ]


def endpoint_hostname(hostname: str, address: str) -> str:
    """Precedence of SPEC 2.1: the hostname field, else the dashed address (CoreDNS rule).

    An IPv6 form ending in '-' gets a '0' so that the label does not end in a dash
    (as CoreDNS's kubernetes plugin does).
    """
    if hostname:
        return hostname.lower()
    if ":" in address:
        dashed = address.replace(":", "-")
        return dashed + "0" if dashed.endswith("-") else dashed
    return address.replace(".", "-")


def expire_leases(view: ImportedView) -> tuple[ImportedView, float | None]:
    """Sources whose lease lapsed are expired; also when the next live lease will lapse."""
    expired = {c for c, until in view.leases.items() if view.now > until}
    live = [until for c, until in view.leases.items() if c not in expired]
    wake = min(live) if live else None
    return dataclasses.replace(view, expired=view.expired | frozenset(expired)), wake
