"""Keep the cycle collector from holding the GIL over the zone (issue 23, "no stall").

A collection of the whole heap visits every tracked object with the GIL held: at
10 clusters x 2,000 services x 10 endpoints (1.4M objects) that is ~0.7 s in which no
UDP query is answered. The zone and the model are long-lived and an old zone holds no
reference cycle (reference counting frees it when the next one is installed), so the
heap is frozen at each install (ZoneHolder.swap), thawed and collected whole only once the
heap has grown by a quarter (holder.FULL_COLLECT_GROWTH); collections otherwise visit only what
was allocated since:

- `collect_young` runs before each compile: it frees the cyclic garbage made since the
  last install (the view of an edit: ~3 ms at that size) before it could be frozen;
- automatic full collections are left to it (`configure`): one that fires in the middle
  of a full rebuild would visit the half-built zone (~40 ms at that size).

Cost: a cycle that is alive at an install and becomes garbage later waits for the next
growth-triggered full collection.
"""

from __future__ import annotations

import gc

# Young collections as CPython's defaults (700 allocations, 10 of them); an automatic
# full one only after a million young ones, i.e. never between two compiles.
THRESHOLDS = (700, 10, 1_000_000)


def configure() -> None:
    """Leave full collections to `collect_young`, at a moment when little is unfrozen."""
    gc.set_threshold(*THRESHOLDS)


def collect_young() -> int:
    """Collect what is not frozen (made since the last install); objects freed."""
    return gc.collect()
