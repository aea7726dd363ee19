"""The versioned JSON schema of a group's results (the seed's study), and its validator.

The schema is derived from :class:`~gimbal.divergence.results.GroupResult`; the shipped file is that derivation
(:func:`~gimbal.divergence.results.write_schema` rewrites it).
"""

from __future__ import annotations

import jsonschema

from .results import SCHEMA_VERSION, shipped_schema

__all__ = ["SCHEMA_VERSION", "load_schema", "validate_results"]


def load_schema() -> dict:
    return shipped_schema()


def validate_results(payload: dict) -> None:
    """Raise ``jsonschema.ValidationError`` when ``payload`` (as JSON-decoded) breaks the schema."""
    jsonschema.validate(payload, load_schema())
