"""The difference between what is applied and what is desired, as an ordered
list of operations.

Only what changed is touched: an interface whose only change is its rx mode
gets ``set_rx_mode``, a router whose only change is its routes gets
``set_routes`` (the FIB changes in place), everything else that changed is
removed and added again, and anything equal is left alone, traffic and all.

Dependencies give the order: a pipeline is removed before any interface it
uses (including one that is being replaced: the pipeline goes, then comes
back on the new interface), and added after all its interfaces::

    remove_pipeline -> remove_interface -> add_interface -> set_rx_mode
        -> set_routes -> add_pipeline

Items keep the order of the document within each step, so plans repeat.
"""
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Set, Union

from memifx.agent.config import Config, Pipeline, Spec

ORDER = ("remove_pipeline", "remove_interface", "add_interface", "set_rx_mode",
         "set_routes", "add_pipeline")


@dataclass(frozen=True)
class Op:
    """One step: ``action`` (one of ORDER), the item's ``section`` and
    ``name``, and ``item``: the desired spec (interfaces) or Pipeline
    (pipelines); None for a removal."""
    action: str
    section: str
    name: str
    item: Union[Spec, Pipeline, None] = None

    @property
    def spec(self) -> Spec:
        """``item`` of an interface operation (add_interface, set_rx_mode)."""
        if not isinstance(self.item, dict):
            raise TypeError("%s carries no interface spec" % self)
        return self.item

    @property
    def pipeline(self) -> Pipeline:
        """``item`` of a pipeline operation (add_pipeline, set_routes)."""
        if not isinstance(self.item, Pipeline):
            raise TypeError("%s carries no pipeline" % self)
        return self.item

    @property
    def key(self) -> str:
        """The item's id in /state: section/name."""
        return "%s/%s" % (self.section, self.name)

    def __str__(self) -> str:
        return "%s %s" % (self.action, self.key)


RX_MODE_KEYS = ("rx-mode", "quiet-us")


def _without(spec: Mapping[str, str], keys: Sequence[str]) -> Dict[str, str]:
    return {k: v for k, v in spec.items() if k not in keys}


def plan(applied: Optional[Config], desired: Config) -> List[Op]:
    """Operations that take ``applied`` (a Config of what runs now) to
    ``desired``, in dependency order."""
    applied = applied or Config()
    steps: Dict[str, List[Op]] = {a: [] for a in ORDER}
    replaced: Set[str] = set()         # interfaces removed (and maybe added again)
    for name, spec in applied.interfaces.items():
        new = desired.interfaces.get(name)
        if new is None:
            steps["remove_interface"].append(Op("remove_interface", "interfaces", name))
            replaced.add(name)
        elif new != spec:
            if _without(new, RX_MODE_KEYS) == _without(spec, RX_MODE_KEYS):
                steps["set_rx_mode"].append(Op("set_rx_mode", "interfaces", name, new))
            else:
                steps["remove_interface"].append(Op("remove_interface", "interfaces", name))
                replaced.add(name)
    for name, spec in desired.interfaces.items():
        if name not in applied.interfaces or name in replaced:
            steps["add_interface"].append(Op("add_interface", "interfaces", name, spec))

    for name, pipe in applied.pipelines.items():
        want = desired.pipelines.get(name)
        rebuild = want is None or bool(replaced.intersection(pipe.interfaces))
        if want is not None and not rebuild and want != pipe:
            if want.without_routes() == pipe.without_routes():
                steps["set_routes"].append(Op("set_routes", want.section, name, want))
            else:
                rebuild = True
        if rebuild:
            steps["remove_pipeline"].append(Op("remove_pipeline", pipe.section, name))
            if want is not None:
                steps["add_pipeline"].append(Op("add_pipeline", want.section, name, want))
    for name, pipe in desired.pipelines.items():
        if name not in applied.pipelines:
            steps["add_pipeline"].append(Op("add_pipeline", pipe.section, name, pipe))
    # additions in the document's order, whatever made them necessary
    order = list(desired.pipelines)
    steps["add_pipeline"].sort(key=lambda op: order.index(op.name))
    return [op for a in ORDER for op in steps[a]]
