"""CIFAR-10-shaped files of random pixels and labels, in the layout pfednas reads locally.

    python benchmarks/make_fake_cifar.py DIR                 # DIR/cifar-10-batches-py, full size
    python benchmarks/make_fake_cifar.py DIR --per-batch 100 # small, for a dry run
    PFEDNAS_CIFAR_DIR=DIR python benchmarks/bench_gpu.py --preset paper --rounds 2

For timing a ``dataset=cifar10`` run on a machine without CIFAR-10 or a network (a lent GPU
machine): the python-pickle layout of the official ``cifar-10-python.tar.gz``
(``src/pfednas/data/cifar.py``): five ``data_batch_*`` files and ``test_batch``, each a
pickled dict of ``b"data"`` (N x 3072 uint8, channel-major) and ``b"labels"``, and
``batches.meta``. Full size is 5 x 10,000 training and 10,000 test images of 32x32x3, as the
real set. The pixels and labels are uniform random (seeded): a run's speed does not depend on
them, its accuracies mean nothing.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import numpy as np

FOLDER = "cifar-10-batches-py"
CLASSES = 10


def write_batch(path: Path, rng: np.random.Generator, n: int, name: str) -> None:
    batch = {
        b"batch_label": name.encode(),
        b"data": rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8),
        b"labels": [int(label) for label in rng.integers(0, CLASSES, n)],
    }
    with path.open("wb") as fh:
        pickle.dump(batch, fh, protocol=4)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help=f"the folder to write {FOLDER}/ into")
    parser.add_argument("--per-batch", type=int, default=10_000,
                        help="images in each of the six batch files (10,000 as the real set)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    folder = args.root / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    for i in range(1, 6):
        write_batch(folder / f"data_batch_{i}", rng, args.per_batch, f"training batch {i} of 5")
    write_batch(folder / "test_batch", rng, args.per_batch, "testing batch 1 of 1")
    meta = {b"label_names": [b"class%d" % i for i in range(CLASSES)],
            b"num_cases_per_batch": args.per_batch, b"num_vis": 3 * 32 * 32}
    with (folder / "batches.meta").open("wb") as fh:
        pickle.dump(meta, fh, protocol=4)
    print(f"{folder}: 5 x {args.per_batch} training and {args.per_batch} test images of random "
          "pixels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
