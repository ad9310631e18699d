"""Client side: one Client over pluggable transports (REST, gRPC), the load generator and A/B tests."""
