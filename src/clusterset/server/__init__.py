"""L3: DNS network I/O around the pure `zone.wire.respond`."""
