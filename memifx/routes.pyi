"""Type stubs for memifx.routes (a compiled module)."""
from collections.abc import Sequence

from memifx.fib import Fib

Buffer = bytes | bytearray | memoryview

PARSE_ERRORS: dict[int, str]


def load_routes(fib: Fib, data: Buffer, names: Sequence[str | bytes] = ...) -> int: ...
def parse_routes(fib: Fib, data: Buffer, names: Sequence[str | bytes] = ...) -> bytes: ...
