"""heliostat: an xDS control plane for global LLM inference."""
