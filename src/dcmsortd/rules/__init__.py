"""The classification engine: classifyRules.json loaded, checked, compiled and evaluated. Pure."""
