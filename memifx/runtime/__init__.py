"""The dataplane runtime: one object that owns interfaces, pipelines and
their worker processes (memifx/runtime/dataplane.py).  The CLI commands and
the management agent both build a Dataplane."""
from memifx.runtime.dataplane import Dataplane
from memifx.runtime.errors import DataplaneError
from memifx.runtime.pipeline import KINDS, Kind

__all__ = ["Dataplane", "DataplaneError", "KINDS", "Kind"]
