"""What QEMU user emulation costs an arm64 node, against the same work natively.

    .venv/bin/python benchmarks/bench_arm64.py [--cpus 1] [--repeats 3] [--qemu-cpu C] [--json F]

Runs one script in the x86-64 executor image (``localhost/pfednas:latest``) and in the
arm64 one (``localhost/pfednas:latest-arm64``, under QEMU), each container limited to
``--cpus`` CPUs, ``--repeats`` times, after ``scripts/containers/build-images.sh`` and
``build-images.sh --platform linux/arm64``. The script times, in a fresh process:

* ``import_torch``: ``import torch`` (a cold ClientApp pays it for every message);
* ``train_min`` / ``train_max``: one epoch of SGD (batch 32, one thread) over 256 digits-
  shaped samples, on the smallest and on the largest subnet of the digits search space
  (the MobileNetV3 space a deployed node trains on digits);
* ``infer_min``: 200 forward passes of one sample on the smallest subnet.

Each figure's median over the repeats, and the emulated ÷ native ratio: dividing an
emulated node's time by it estimates the same node on an arm64 core as fast as this
machine's. The arm64 executor sees an arm64 core's ``/proc/cpuinfo`` (as in
``scripts/containers/arm64-node.yml``); ``--qemu-cpu`` sets the CPU QEMU emulates
(``QEMU_CPU``: ``max``, its default, or a model such as ``cortex-a72``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONTAINERS = REPO / "scripts" / "containers"
IMAGES = {"amd64": "localhost/pfednas:latest", "arm64": "localhost/pfednas:latest-arm64"}
FIGURES = ("import_torch", "train_min", "train_max", "infer_min")

SCRIPT = r"""
import json, platform, time
tic = time.perf_counter()
import torch
out = {"import_torch": time.perf_counter() - tic, "machine": platform.machine()}
torch.set_num_threads(1)
from pfednas.config import compose, settings_from_cfg
from pfednas.methods import seeded_supernet
from pfednas.settings import task_shape
settings = settings_from_cfg(compose(["dataset=digits"]))
task = task_shape(settings)
space = seeded_supernet(settings).space
generator = torch.Generator().manual_seed(0)
x = torch.randn(256, task.in_channels, task.image_size, task.image_size, generator=generator)
y = torch.randint(0, task.num_classes, (256,), generator=generator)
for name, arch in (("min", space.min_arch()), ("max", space.max_arch())):
    net = seeded_supernet(settings).extract(arch)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    net.train()
    tic = time.perf_counter()
    for start in range(0, 256, 32):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x[start:start + 32]), y[start:start + 32])
        loss.backward()
        optimizer.step()
    out[f"train_{name}"] = time.perf_counter() - tic
    if name == "min":
        net.eval()
        with torch.no_grad():
            tic = time.perf_counter()
            for i in range(200):
                net(x[i:i + 1])
        out["infer_min"] = time.perf_counter() - tic
print(json.dumps(out))
"""


def run_once(arch: str, cpus: float, qemu_cpu: str | None) -> dict[str, float | str]:
    command = ["podman", "run", "--rm", "--pull=never", "--cpus", str(cpus),
               "--platform", f"linux/{arch}", "--entrypoint", "python"]
    if arch == "arm64" and os.uname().machine != "aarch64":
        command += ["-v", f"{CONTAINERS / 'arm64-cpuinfo'}:/proc/cpuinfo:ro"]
        if qemu_cpu:
            command += ["-e", f"QEMU_CPU={qemu_cpu}"]
    env = dict(os.environ, CONTAINERS_CONF=str(CONTAINERS / "containers.conf"))
    done = subprocess.run([*command, IMAGES[arch], "-c", SCRIPT], capture_output=True,
                          text=True, timeout=1800, check=False, env=env)
    if done.returncode != 0:
        sys.exit(f"bench_arm64: the {arch} run failed: {done.stderr.strip()[-500:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpus", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--qemu-cpu", help="QEMU_CPU for the arm64 runs (default: QEMU's)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    runs: dict[str, list[dict[str, float | str]]] = {arch: [] for arch in IMAGES}
    for _ in range(args.repeats):  # interleaved, so that a change of load hits both
        for arch in IMAGES:
            runs[arch].append(run_once(arch, args.cpus, args.qemu_cpu))
    medians = {arch: {f: statistics.median(float(r[f]) for r in rs) for f in FIGURES}
               for arch, rs in runs.items()}
    print(f"cpus {args.cpus:g}, QEMU_CPU {args.qemu_cpu or '(default)'}, "
          f"median of {args.repeats} (s)")
    print(f"{'figure':<14}{'x86-64':>10}{'arm64 (QEMU)':>14}{'ratio':>8}")
    for figure in FIGURES:
        native, emulated = medians["amd64"][figure], medians["arm64"][figure]
        print(f"{figure:<14}{native:>10.2f}{emulated:>14.2f}{emulated / native:>8.1f}")
    if args.json:
        args.json.write_text(json.dumps({"cpus": args.cpus, "qemu_cpu": args.qemu_cpu,
                                         "runs": runs,
                                         "medians": medians}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
