"""A bounded HTTP GET flood from one source address (the lab's ``http_flood`` tool).

hping3 cannot speak HTTP, and the usual HTTP load tools cannot bind a source address, so
this small flooder stands in for a botnet's HTTP flood (Mirai's ``http`` attack): many
parallel connections sending GET requests with random paths and user agents. It stops
after ``--requests`` requests or ``--seconds`` seconds, whichever comes first, and only
accepts a target and a source in 127.0.0.0/8.

Run as ``python -m amlhp.lab.httpflood --source A --target T --port P --requests N``.
"""

from __future__ import annotations

import argparse
import random
import socket
import threading
import time

from amlhp.lab.safety import loopback_address

USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/51.0.2704.103 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_6) AppleWebKit/601.7.7 (KHTML, like Gecko) "
    "Version/9.1.2 Safari/601.7.7",
    "Mozilla/5.0 (X11; Linux x86_64; rv:45.0) Gecko/20100101 Firefox/45.0",
)


def request(rng: random.Random, host: str) -> bytes:
    path = "/" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(8))
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {rng.choice(USER_AGENTS)}\r\n"
        "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
        "Accept-Language: en-US,en;q=0.8\r\nConnection: keep-alive\r\n\r\n"
    ).encode()


def flood(
    source: str, target: str, port: int, requests: int, seconds: float, workers: int, seed: int
) -> int:
    """Send up to ``requests`` GETs; returns how many got a response."""
    src = str(loopback_address(source))
    dst = str(loopback_address(target))
    deadline = time.monotonic() + seconds
    lock = threading.Lock()
    state = {"left": requests, "answered": 0}

    def take() -> bool:
        with lock:
            if state["left"] <= 0 or time.monotonic() > deadline:
                return False
            state["left"] -= 1
            return True

    def worker(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        while take():
            try:
                with socket.create_connection(
                    (dst, port), timeout=3, source_address=(src, 0)
                ) as sock:
                    for _ in range(rng.randint(1, 3)):  # a few requests per connection
                        sock.sendall(request(rng, dst))
                        if not sock.recv(4096):
                            break
                        with lock:
                            state["answered"] += 1
                        if not take():
                            break
            except OSError:
                continue

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return state["answered"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    answered = flood(
        args.source, args.target, args.port, args.requests, args.seconds, args.workers, args.seed
    )
    print(f"{answered} requests answered")


if __name__ == "__main__":
    main()
