"""Benchmark: the ELF closure of every ELF file under a tree (default /usr).

Prints ELF objects per second and peak memory. Target (issue 3): at least
500 objects per second on one core.

    python benchmarks/closure.py [--root /] [--under /usr] [--limit N]
"""

from __future__ import annotations

import argparse
import os
import resource
import time

from slimmer.loader import Loader
from slimmer.rootfs import RootFS


def elf_files(root: str, under: str, limit: int | None) -> list[str]:
    found = []
    top = os.path.join(root, under.lstrip("/"))
    for directory, _, names in os.walk(top):
        for name in names:
            path = os.path.join(directory, name)
            try:
                if not os.path.isfile(path) or os.path.islink(path):
                    continue
                with open(path, "rb") as handle:
                    head = handle.read(18)
            except OSError:
                continue
            if head[:4] == b"\x7fELF" and head[16] in (2, 3):
                found.append("/" + os.path.relpath(path, root) if root != "/" else path)
                if limit and len(found) >= limit:
                    return found
    return sorted(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="/")
    parser.add_argument("--under", default="/usr")
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()

    files = elf_files(args.root, args.under, args.limit)
    loader = Loader(RootFS(args.root))
    start = time.perf_counter()
    cpu_start = time.process_time()
    closure = loader.closure(files)
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    objects = sum(len(m.objects) for m in closure.link_maps)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"inputs             {len(files)} ELF files under {args.under}")
    print(f"link maps          {len(closure.link_maps)} ({len(closure.skipped)} skipped)")
    print(f"objects resolved   {objects} ({len(closure.files)} distinct files)")
    print(f"missing libraries  {len(closure.missing)}")
    print(f"wall               {wall:.2f} s   cpu {cpu:.2f} s")
    print(f"objects per second {objects / wall:.0f}   (inputs per second {len(files) / wall:.0f})")
    print(f"peak memory        {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
