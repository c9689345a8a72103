"""Samplers that run beside the load: client, network, server (local or through a remote agent).

What they read is decoded by :mod:`pathprobe.decode` (hop headers, pcap, TCP flows).
"""
