"""TCP and UDP sockets over IPv4 loopback: the inet half of sockstates (``--types tcp,udp``)."""
