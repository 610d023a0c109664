"""Azure Resource Manager: the router other surfaces plug into, resource groups, async operations.

The names below are the extension API that server.py's docstring documents; surfaces import them
from ``quickstart.localcloud.arm`` so the module layout behind them can change.
"""

from .resource_groups import LOCATIONS, ResourceGroups
from .responses import (
    ArmError,
    arm_error,
    arm_json,
    check_tags,
    json_body,
    still_running,
    utc_now_iso,
)
from .router import ArmRouter

__all__ = [
    "LOCATIONS",
    "ArmError",
    "ArmRouter",
    "ResourceGroups",
    "arm_error",
    "arm_json",
    "check_tags",
    "json_body",
    "still_running",
    "utc_now_iso",
]
