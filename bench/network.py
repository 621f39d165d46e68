"""Front-end rules benchmark: how long ``compute.packetfilter.ruleset_apply`` (one ``nft -j -f -`` transaction that
replaces the table ``ip altostratus``) takes with N port translations and N guarded VMs, up to the default range's
2001 ports, beside the same ``nft`` run applying an empty table (the process start and the netlink round trip), in a
network namespace of its own (root and nft needed). Prints JSON.

    .venv/bin/python bench/network.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ.setdefault("LOG_LEVEL", "WARNING")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from django.conf import settings

    from compute import packetfilter

    name = f"alto-bench-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        settings.NFT_COMMAND = f"ip netns exec {name} nft"
        results = {}
        for count in (0, 100, 1000, 2001):
            base = ipaddress.IPv4Address("172.16.0.2")
            dnat = [
                packetfilter.Dnat(
                    front_address="192.0.2.10",
                    front_port=15000 + i,
                    to_address=str(base + i // 2),
                    to_port=22 if i % 2 else 80,
                )
                for i in range(count)
            ]
            guarded = [
                packetfilter.Guarded(
                    address=str(base + i),
                    allow=(packetfilter.Allow(address=str(base + i), protocol="tcp", port=22),),
                )
                for i in range(count // 2)
            ]
            times = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                packetfilter.ruleset_apply(dnat=dnat, guarded=guarded)
                times.append((time.perf_counter() - start) * 1000)
            assert len(packetfilter.dnat_rules()) == count
            results[str(count)] = {"median_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1)}
        print(
            json.dumps(
                {
                    "benchmark": "frontend rules apply (nft -j -f -, whole table)",
                    "repeat": args.repeat,
                    "translations": results,
                    "baseline": "translations['0']: the same nft run with an empty table",
                },
                indent=2,
            )
        )
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


if __name__ == "__main__":
    main()
