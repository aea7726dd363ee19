"""The versioned JSON schema of a group's results (the seed's study), and its validator."""

from __future__ import annotations

import json
from importlib import resources

import jsonschema

__all__ = ["SCHEMA_VERSION", "load_schema", "validate_results"]

SCHEMA_VERSION = "1.1"


def load_schema() -> dict:
    return json.loads(resources.files("gimbal.divergence").joinpath("schemas/results.schema.json").read_text(encoding="utf-8"))


def validate_results(payload: dict) -> None:
    """Raise ``jsonschema.ValidationError`` when ``payload`` (as JSON-decoded) breaks the schema."""
    jsonschema.validate(payload, load_schema())
