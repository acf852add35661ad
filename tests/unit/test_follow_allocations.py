"""`run --workers`: one process allocates ClusterSetIPs, the others serve what it wrote.

Issue 20 item 3: each worker allocated from its own history, so two services whose keys
hash to the same slot, seen in opposite orders by two workers, got opposite addresses;
clients saw both answers about half and half.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
from pathlib import Path

from clusterset.controller.manifest import ClusterSetFeed
from clusterset.model.ids import ClusterId, ServiceKey
from clusterset.model.objects import IPFamily
from clusterset.reconcile import allocate
from tests.unit.test_manifest_state import cluster_property, exported

SMALL = {IPFamily.IPV4: ipaddress.IPv4Network("10.250.0.0/29")}  # 6 slots: collisions abound
MEMBER2 = ClusterId("member2")


def colliding() -> tuple[str, str]:
    """Two service names that hash to the same slot, the first sorting after the second
    (so a process that sees both at once gives the slot to the second)."""
    slot: dict[str, str] = {}
    for i in itertools.count():
        name = f"svc{i}"
        (ip,) = allocate.allocate(
            [(ServiceKey("default", name), (IPFamily.IPV4,))], cidrs=SMALL, previous={}
        )[ServiceKey("default", name)]
        if ip in slot:
            return name, slot[ip]
        slot[ip] = name
    raise AssertionError("unreachable")


def ips(f: ClusterSetFeed) -> dict[str, tuple[str, ...]]:
    imports = f.observe().desired.clusters[MEMBER2].imports
    return {k.name: imp.ips for k, imp in imports.items()}


def world(tmp_path: Path, names: list[str]) -> Path:
    root = tmp_path / "clusters"
    (root / "member1").mkdir(parents=True)
    (root / "member2").mkdir()
    (root / "member2" / "id.yaml").write_text(cluster_property("member2"))
    write(root, names)
    return root


def write(root: Path, names: list[str]) -> None:
    (root / "member1" / "svc.yaml").write_text("---\n".join(exported(n) for n in names))


def test_a_lagging_follower_serves_the_allocators_addresses(tmp_path: Path) -> None:
    later, earlier = colliding()
    state = tmp_path / "alloc.json"
    root = world(tmp_path, [later])
    allocator = ClusterSetFeed(root, cidrs=SMALL, state_file=state)
    follower = ClusterSetFeed(root, cidrs=SMALL, state_file=state, follow=True)
    first = ips(allocator)  # `later` takes the slot both hash to
    write(root, [later, earlier])
    decided = ips(allocator)
    assert decided[later] == first[later]
    written = state.stat()
    # The follower saw nothing until now: both services at once. Allocating itself, it gave
    # the slot to `earlier` (sorted first): the opposite of the allocator.
    assert ips(follower) == decided
    assert follower.lacking[MEMBER2] == []
    assert state.stat() == written  # a follower never writes


def test_a_follower_serves_a_new_service_only_once_the_allocator_wrote_it(
    tmp_path: Path,
) -> None:
    later, earlier = colliding()
    state = tmp_path / "alloc.json"
    root = world(tmp_path, [later])
    allocator = ClusterSetFeed(root, cidrs=SMALL, state_file=state)
    ips(allocator)
    follower = ClusterSetFeed(root, cidrs=SMALL, state_file=state, follow=True)

    async def scenario() -> dict[str, tuple[str, ...]]:
        stop = asyncio.Event()
        views = follower.views(MEMBER2, stop=stop)
        first = await anext(views)
        assert {k.name for k in first.imports} == {later}
        write(root, [later, earlier])
        # The folder changed; the allocator has not looked yet: no view from the follower.
        nothing = asyncio.ensure_future(anext(views))
        done, _ = await asyncio.wait({nothing}, timeout=1.0)
        assert not done, "a view with an address the allocator never gave"
        assert follower.lacking[MEMBER2] == [ServiceKey("default", earlier)]
        await asyncio.to_thread(ips, allocator)  # the allocator's pass writes the file
        async with asyncio.timeout(5):
            view = await nothing
        stop.set()
        await views.aclose()
        return {k.name: imp.ips for k, imp in view.imports.items()}

    served = asyncio.run(scenario())
    assert served == ips(allocator)
