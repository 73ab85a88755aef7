"""Bulk runs over files already on disk: import, dry run and the catch-up walk."""
