"""L0: frozen value types the core reasons about. Stdlib only; no I/O."""
