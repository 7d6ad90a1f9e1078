"""A network namespace of our own with only ``lo`` up: ports never clash and nothing leaves the machine."""

from __future__ import annotations

import fcntl
import socket
import struct

from sockstates.run import unshare_net

SIOCGIFFLAGS, SIOCSIFFLAGS = 0x8913, 0x8914
IFF_UP = 0x1
_IFREQ = struct.Struct("16sH14x")


def enter_loopback_netns() -> None:
    """unshare(CLONE_NEWNET) (a user namespace too when not root), then bring up ``lo``, its only device."""
    unshare_net()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = _IFREQ.unpack(fcntl.ioctl(s, SIOCGIFFLAGS, _IFREQ.pack(b"lo", 0)))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, _IFREQ.pack(b"lo", flags | IFF_UP))
