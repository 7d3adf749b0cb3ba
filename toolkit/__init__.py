"""What all the tooling shares: names, logging, processes, the embedded servers.

Imports only the shipped app (chalicelib), never the local stack, deploy,
operate or measure folders above it (make lint checks it).
"""
