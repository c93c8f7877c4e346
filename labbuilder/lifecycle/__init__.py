"""Sequencing effects over a lab's life: up, down, status, diff, reset (diff → repairs → apply),
and the per-lab lock that serialises them."""
