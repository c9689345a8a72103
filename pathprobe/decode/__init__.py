"""Pure decoders of what the probes read: hop timing headers, pcap files, TCP flows.

No sockets, no subprocesses: analysis imports these without importing the probes.
"""
