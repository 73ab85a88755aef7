"""The classification engine: classifyRules.json loaded, checked, compiled and evaluated.
Pure but for ``load_rules``/``default_rules``, which read the file they are given."""
