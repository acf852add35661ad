from clusterset.server.holder import ZoneHolder

BATCH: int

class Receiver:
    def __init__(self, fd: int) -> None: ...  # a second call raises RuntimeError
    def serve(
        self, holder: ZoneHolder, rcodes: list[int], /
    ) -> tuple[list[tuple[bytes, tuple[str, int] | tuple[str, int, int, int]]], int, int, int]: ...
    def close(self) -> None: ...
