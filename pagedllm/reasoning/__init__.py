"""Reasoning models' output split into their thinking and their answer (`--reasoning-parser`)."""
