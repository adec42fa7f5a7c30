"""Transport security for the xDS port: mTLS credentials and node identity."""
