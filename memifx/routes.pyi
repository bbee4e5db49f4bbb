"""Type stubs for memifx.routes (a compiled module)."""
from collections.abc import Sequence

from _typeshed import ReadableBuffer

from memifx.fib import Fib

PARSE_ERRORS: dict[int, str]


def load_routes(fib: Fib, data: ReadableBuffer, names: Sequence[str | bytes] = ...) -> int: ...
def parse_routes(fib: Fib, data: ReadableBuffer, names: Sequence[str | bytes] = ...) -> bytes: ...
