"""The xDS values every layer passes around: resource types, content-addressed resources and
snapshots, node groups, and the two-round memo tables translation reuses them through.

They sit below translation (which builds them) and above the control law, so the snapshot
cache, the sans-I/O streams and the gRPC server read the same immutable values translation
produced without any of them depending on another's implementation.
"""
