"""Presenting labs to people: tables, the graph page, the render script, kubectl-shaped objects.
Pure: takes models, plans and readings, returns text."""
