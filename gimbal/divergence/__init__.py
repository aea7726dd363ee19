"""The seed's divergence study of the GIMBAL model: groups 1-8, their runner and the report book."""

from .groups import GROUPS, PROFILES, GroupFailed, group_desc, resolve_settings, run_group

__all__ = ["GROUPS", "PROFILES", "GroupFailed", "group_desc", "resolve_settings", "run_group"]
