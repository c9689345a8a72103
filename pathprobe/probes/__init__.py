"""Samplers that run beside the load: client, network, server, hop headers."""
