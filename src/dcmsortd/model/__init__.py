"""Shared types of every stage: errors, an arrival notice, one image's values, JSON text. Pure."""
