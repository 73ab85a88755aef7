"""Series and study completion: which completions are due (pure), the events journal, and
the hooks run for each event (subprocesses in threads, outside the sorting path)."""
