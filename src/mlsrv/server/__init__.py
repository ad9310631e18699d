"""The model server: lifecycle (source, manager, policy, monitor), DataPlane and the REST/gRPC frontends."""
