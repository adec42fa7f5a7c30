"""Snapshot storage: immutable, content-addressed snapshots per node group, and node identity.

Pure data and bookkeeping, no I/O: the publisher fills the store, the streams read from it.
"""
