"""The command line: the parser (``main``), one function per command, FIONA's verbs."""
