"""The command line: one module per verb group; imports the stages lazily so `--help` is fast."""
