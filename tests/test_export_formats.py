"""Writing a network as TorchScript or ONNX: what the export costs (issue 63 item 5).

The export's time goes to the tracers (PyTorch's ``torch.jit.trace`` and ``torch.export``)
and to the forward passes they and the check make. These tests hold what keeps it short:
the network runs forward once to be traced and once to be checked, on one torch thread
(a batch of one to sixteen small images gains nothing from more, and on a loaded machine
each operation waits for its threads), and a standalone subnet's traced graph holds no
view of its own weights for each operation.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pfednas.edge.formats import export
from pfednas.edge.runtime import FORMATS
from pfednas.edge.spec import sample_inputs
from pfednas.search import TaskShape, get_space
from pfednas.search.ops import nested

TASK = TaskShape(num_classes=10, in_channels=1, image_size=8)
SMALL = {
    "darts_s2": {"channels": 4, "layers": 3, "steps": 2, "multiplier": 2},
    "mobilenetv3": {"base_widths": [8, 16], "width_mults": [0.5, 1.0], "depths": [1, 2],
                    "kernels": [3, 5], "expand_ratios": [2, 3], "resolution_scales": [1.0],
                    "stem_width": 8, "head_width": 32, "stem_stride": 1,
                    "stage_strides": [1, 2], "stage_se": [False, True],
                    "stage_acts": ["relu", "hswish"]},
    "vit": {},
}


def small_net(space_name: str) -> torch.nn.Module:
    space = get_space(space_name, **SMALL[space_name])
    torch.manual_seed(0)
    return space.build_net(space.net_config(space.max_arch(), TASK), TASK).eval()


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
@pytest.mark.slow
def test_the_export_runs_the_network_twice_on_one_thread(fmt: str, tmp_path: Path) -> None:
    # Prepare: a hook that records, per forward pass, how many torch threads it ran on
    net = small_net("darts_s2")
    threads: list[int] = []
    net.register_forward_hook(lambda *_: threads.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    torch.set_num_threads(2)

    # Execute
    try:
        check = export(net, fmt, tmp_path / f"m{FORMATS[fmt]}", sample_inputs(TASK, 4))
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)

    # Assert: traced once, checked once (the file against PyTorch on the sample), on one
    # thread; the caller's thread count is restored
    assert check["same_classes"] and check["samples"] == 4
    assert threads == [1, 1]
    assert after == 2


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
@pytest.mark.parametrize("space_name", sorted(SMALL))
def test_every_space_exports_to_every_format(space_name: str, fmt: str,
                                             tmp_path: Path) -> None:
    # Prepare: the smallest network of the space
    space = get_space(space_name, **SMALL[space_name])
    torch.manual_seed(0)
    net = space.build_net(space.net_config(space.min_arch(), TASK), TASK)

    # Execute
    check = export(net, fmt, tmp_path / f"m{FORMATS[fmt]}", sample_inputs(TASK, 4))

    # Assert: the file computes the network's logits
    assert check["same_classes"] and check["max_abs_logit_diff"] < 1e-4


def test_a_full_size_nested_part_is_the_tensor_itself() -> None:
    # Prepare
    weight = torch.randn(8, 4, 5, 5)

    # Execute
    full, part = nested(weight, (8, 4, 5, 5)), nested(weight, (6, 4, 3, 3))

    # Assert: the full shape adds nothing to a traced graph; a smaller one is still the
    # nested view (prefix of the channels, centre of the kernel)
    assert full is weight
    assert part.shape == (6, 4, 3, 3) and part.data_ptr() == weight[0, 0, 1, 1].data_ptr()


@pytest.mark.parametrize("space_name", sorted(SMALL))
def test_a_standalone_subnets_traced_graph_holds_no_views_of_its_weights(
        space_name: str) -> None:
    # Prepare
    net = small_net(space_name)
    x = torch.from_numpy(sample_inputs(TASK, 2))

    # Execute
    program = torch.export.export(net, (x,))

    # Assert: no alias nodes (one per weight, bias and BatchNorm buffer used before)
    targets = [str(node.target) for node in program.graph.nodes if node.op == "call_function"]
    assert "aten.alias.default" not in targets
    assert targets.count("aten.conv2d.default") > 0
