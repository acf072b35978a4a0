"""pytest hooks only: options, configuration and wiring (placeholder until the foundation lands)."""

from __future__ import annotations
