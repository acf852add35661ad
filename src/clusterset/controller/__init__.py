"""L3: orchestration of sources, reconcile and sinks."""
