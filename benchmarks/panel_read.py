"""Time one column slice read from a scratch file of column panels, for a same-run control of two source trees.

Usage (alternate the trees yourself, a fresh process each):

    git worktree add /tmp/base BASELINE
    for r in 1 2 3; do for tree in /tmp/base .; do
        PYTHONPATH=$tree/src python benchmarks/panel_read.py
    done; done > panel_read.jsonl

The first call writes ``--path`` (``--cells`` x ``--genes`` random float32 in panels of 64
columns, 4 GiB by default); every call then reads columns 0 to ``--columns`` three times on 2
threads, as the approximate search reads its column slices of a matrix that lives in a scratch
file (a file just written is mostly in the page cache, as the pipeline's scratch files are).
``--rows``: three passes over the whole file in blocks of 4096 rows instead, as the projection
of the approximate search and the gene graph read it.
Prints one JSON line: the tree, the three times, their median and a digest of the slice.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np

import sccr
from sccr._engine.execution import Execution, executing
from sccr._engine.matrix import PanelFile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", type=Path, default=Path("/tmp/sccr-panels.f32"))
    parser.add_argument("--cells", type=int, default=1_000_000)
    parser.add_argument("--genes", type=int, default=1024)
    parser.add_argument("--columns", type=int, default=512)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--rows", action="store_true", help="time passes over row blocks instead of a column slice")
    args = parser.parse_args()
    shape = (args.cells, args.genes)
    if not args.path.exists():
        store, rng = PanelFile(args.path, shape), np.random.default_rng(0)
        for start in range(0, args.genes, store.width):
            store.write_columns(start, rng.random((args.cells, min(store.width, args.genes - start)), dtype=np.float32))
        store.close()
    store = PanelFile(args.path, shape, readonly=True)

    def blocks():
        """The reads timed, block by block as they are drawn."""
        if args.rows:
            yield from (block for _, block in store.row_blocks(4096))
        else:
            yield store.columns(0, args.columns)

    seconds = []
    with executing(Execution(n_jobs=args.n_jobs)):
        for _ in range(3):
            start = time.perf_counter()
            for _ in blocks():
                pass
            seconds.append(round(time.perf_counter() - start, 3))
        digest = hashlib.sha256()  # of what the same reads return, outside the timing
        for block in blocks():
            digest.update(block.tobytes())
    tree = Path(sccr.__file__).resolve().parents[2]
    what = "row blocks" if args.rows else f"columns 0-{args.columns}"
    print(
        json.dumps(
            {
                "tree": str(tree),
                "read": what,
                "seconds": seconds,
                "median": sorted(seconds)[1],
                "digest": digest.hexdigest()[:16],
            }
        )
    )
    store.close()


if __name__ == "__main__":
    main()
