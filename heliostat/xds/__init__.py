"""xDS: translate views into Envoy resources (`translate`), store snapshots (`cache`), run the
sans-I/O ADS protocol (`protocol`, SotW and delta) and serve it over gRPC (`grpc`)."""
