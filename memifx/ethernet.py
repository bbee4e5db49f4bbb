"""Ethernet addresses as operators write them: XX:XX:XX:XX:XX:XX (the CLI's
mac= and --neighbor, the agent's documents)."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import TypeGuard        # 3.10+; memifx runs on 3.9 too

_MAC_TEXT = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


def is_mac(text: object) -> TypeGuard[str]:
    """Whether ``text`` is a MAC address written as six hex pairs."""
    return isinstance(text, str) and _MAC_TEXT.match(text) is not None
