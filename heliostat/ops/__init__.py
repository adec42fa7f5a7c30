"""Operator tools over a running heliostat (status, explain) and over policy files (diff)."""
