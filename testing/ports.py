import socket


def free_port() -> int:
    """A loopback port nothing listens on now (the kernel's pick), for a process about to be started."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
