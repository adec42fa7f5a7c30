"""xDS: translate views into Envoy resources, cache snapshots, serve ADS (SotW and delta)."""
