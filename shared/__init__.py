"""Code both services share: the event contract, topology, settings, logging and connections.

Nothing here performs I/O at import time, and nothing here imports a service.
"""
