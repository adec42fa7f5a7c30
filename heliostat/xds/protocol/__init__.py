"""The sans-I/O xDS protocol: SotW and delta stream state machines, their events, type URLs.

Nothing here touches a socket; the gRPC adapter in `heliostat.xds.grpc` feeds these objects
requests and sends what they answer, so the protocol is tested without a server.
"""
