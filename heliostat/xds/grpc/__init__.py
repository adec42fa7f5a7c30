"""The gRPC side of xDS: the grpc.aio ADS/LRS servicer, its metrics and the stream registry.

The only part of `heliostat.xds` that does I/O; it adapts `heliostat.xds.protocol` streams to
grpc.aio and records what gateways report back (LRS).
"""
