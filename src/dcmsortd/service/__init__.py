"""Running the sorter: settings, the worker pipeline, the daemon, its pid file and detaching."""
