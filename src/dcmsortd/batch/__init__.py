"""Runs over files already on disk: import, dry run, the catch-up walk and ``classify``."""
