"""Run a single-host AFD job in a network namespace of its own, with only a loopback interface.

    python -m step3_trt.runtime.afd.netns COMMAND [ARG...]

PRRTE's out-of-band listener in `mpiexec` binds the wildcard address whatever its interface
settings (PRRTE 3.0, oob_tcp_listener.c), and torch.distributed's store and gloo open TCP
sockets too. Inside a namespace of their own nothing of the job can be reached from another
machine, or from this one, over TCP: the job talks over shared memory, its own loopback, and the
coordinator's ZeroMQ endpoint, a Unix socket in the run directory (file system, not network).

Root gets the namespace with unshare(CLONE_NEWNET); anyone else through a user namespace that
maps their own uid and gid (Linux's unprivileged user namespaces). Loopback is brought up with
SIOCSIFFLAGS, then COMMAND replaces this process (same pid, same process group).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
import sys

CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
IFREQ = struct.Struct("16sH14s")  # struct ifreq: name, flags, padding


class NamespaceError(OSError):
    """The kernel refused a private network namespace (the text says why and what to do)."""


def _unshare(flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        raise NamespaceError(err, f"unshare: {os.strerror(err)}")


def enter_private_network() -> None:
    """Move this process into a new network namespace whose loopback is up."""
    uid, gid = os.getuid(), os.getgid()
    try:
        if os.geteuid() == 0:
            _unshare(CLONE_NEWNET)
        else:
            _unshare(CLONE_NEWUSER | CLONE_NEWNET)
            for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                               ("gid_map", f"{gid} {gid} 1")):
                with open(f"/proc/self/{name}", "w") as f:
                    f.write(text)
    except (NamespaceError, OSError) as e:
        raise NamespaceError(e.errno, f"the AFD job could not get a network namespace of its "
                             f"own ({e.strerror}); run it with --shared-network to let it use "
                             f"the host's network (mpiexec then listens on every interface)") \
            from None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        name = b"lo"
        flags = IFREQ.unpack(fcntl.ioctl(s, SIOCGIFFLAGS, IFREQ.pack(name, 0, b"")))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, IFREQ.pack(name, flags | IFF_UP, b""))


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m step3_trt.runtime.afd.netns COMMAND [ARG...]", file=sys.stderr)
        return 2
    try:
        enter_private_network()
    except NamespaceError as e:
        print(f"step3-trt: error: {e.strerror}", file=sys.stderr)
        return 3
    os.execvp(argv[0], argv)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
