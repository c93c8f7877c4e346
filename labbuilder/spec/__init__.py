"""Stage 1 — the lab file as data: load (YAML with positions, JSON Schema), defaults, resolve
(semantic checks, addressing) into the model, and the one grammar for places in a lab (refs).
Pure: no Docker, no kernel."""
