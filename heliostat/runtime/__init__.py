"""The running control plane: wires policy, views, snapshots and servers together (I/O)."""
