"""What the submitter of a run controls: in a deployment, paths come from the operator.

The ServerApp writes only below the output base set where the SuperLink side starts
(``PFEDNAS_OUTPUT_BASE``, default ``./outputs``); a node reads the dataset from its
node config ``data-root`` and keeps client state only in its ``checkpoint-dir``. In a
`pfednas` simulation (``PFEDNAS_SIMULATION=1``) the run config still names them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from flwr.app import Context, RecordDict

from pfednas.app import server_app
from pfednas.app.checkpoint import CLIENT_STATE_DIR
from pfednas.app.client_app import node_settings, state_store
from pfednas.config import OUTPUT_BASE_ENV, SIMULATION_ENV, ConfigError
from pfednas.data import DataError
from pfednas.deploy.cli import _parser, _validate
from pfednas.deploy.commands import node_config

RUN = ["federation.num_clients=3", "federation.clients_per_round=3"]
ROUND = {"lineage": "run-a", "server_round": 1}


def _context(*, node: dict[str, int | str] | None = None, overrides: Sequence[str] = (),
             output_dir: str = "") -> Context:
    return Context(run_id=1, node_id=1, node_config=dict(node or {"partition-id": 0}),
                   state=RecordDict(),
                   run_config={"overrides": json.dumps([*RUN, *overrides]),
                               "output-dir": output_dir})


@pytest.fixture
def deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SIMULATION_ENV, raising=False)


@pytest.fixture
def simulation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SIMULATION_ENV, "1")


# -- the ServerApp's output ------------------------------------------------------------------
@pytest.mark.usefixtures("deployment")
@pytest.mark.parametrize("given", ["runs/a", "{base}/runs/a", "{base}"])
def test_deployed_serverapp_writes_inside_the_base(tmp_path: Path, given: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path / "base"
    monkeypatch.setenv(OUTPUT_BASE_ENV, str(base))

    out = server_app.output_dir(_context(output_dir=given.format(base=base)))

    expected = base if given == "{base}" else base / "runs" / "a"
    assert out == expected.resolve()


@pytest.mark.usefixtures("deployment")
@pytest.mark.parametrize("given", ["{outside}", "../outside", "runs/../../outside",
                                   "link/x", "/etc"])
def test_deployed_serverapp_refuses_a_folder_outside_the_base_and_writes_nothing(
        tmp_path: Path, given: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: a base holding a symbolic link that points out of it
    base, outside = tmp_path / "base", tmp_path / "outside"
    base.mkdir()
    outside.mkdir()
    (base / "link").symlink_to(outside)
    monkeypatch.setenv(OUTPUT_BASE_ENV, str(base))
    context = _context(output_dir=given.format(outside=outside))

    # Execute: the whole ServerApp, which must stop before writing anything
    with pytest.raises(ConfigError, match=f"outside this deployment's output base {base}"):
        server_app.main(None, context)  # type: ignore[arg-type]

    assert list(outside.iterdir()) == []
    assert [p.name for p in base.iterdir()] == ["link"]


@pytest.mark.usefixtures("deployment")
def test_deployed_serverapp_without_a_base_writes_under_outputs_of_its_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(OUTPUT_BASE_ENV, raising=False)
    monkeypatch.chdir(tmp_path)

    dated = server_app.output_dir(_context())
    with pytest.raises(ConfigError, match="output base"):
        server_app.output_dir(_context(output_dir=str(tmp_path / "elsewhere")))

    assert dated.is_relative_to(tmp_path / "outputs") and dated != tmp_path / "outputs"


@pytest.mark.usefixtures("simulation")
def test_simulated_serverapp_writes_where_the_run_config_says(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(OUTPUT_BASE_ENV, str(tmp_path / "base"))

    out = server_app.output_dir(_context(output_dir=str(tmp_path / "elsewhere")))

    assert out == tmp_path / "elsewhere"


# -- a node's dataset folder ---------------------------------------------------------------
@pytest.mark.usefixtures("deployment")
def test_deployed_node_reads_the_dataset_from_its_data_root(tmp_path: Path) -> None:
    node: dict[str, int | str] = {"partition-id": 0, "data-root": str(tmp_path / "fmnist")}

    settings = node_settings(_context(node=node, overrides=["dataset=fashion_mnist"]))
    same = node_settings(_context(node=node, overrides=[
        "dataset=fashion_mnist", f"dataset.root={tmp_path / 'fmnist' / '.'}"]))
    default = node_settings(_context(overrides=["dataset=fashion_mnist"]))

    assert settings.data.root == same.data.root == str(tmp_path / "fmnist")
    assert default.data.root is None  # the dataset's environment variable or default folder


@pytest.mark.usefixtures("deployment")
@pytest.mark.parametrize("node", [{"partition-id": 0}, {"partition-id": 0, "data-root": "/srv/a"}])
def test_deployed_node_refuses_a_dataset_root_from_the_run_config(
        node: dict[str, int | str]) -> None:
    context = _context(node=node, overrides=["dataset=cifar10", "dataset.root=/home/victim"])

    with pytest.raises(DataError, match="dataset.root='/home/victim' is refused"):
        node_settings(context)


@pytest.mark.usefixtures("deployment")
def test_deployed_node_does_not_read_the_resume_folder_of_the_run_config(tmp_path: Path) -> None:
    # a folder that cannot be resumed: checking it would raise ConfigError on the node
    settings = node_settings(_context(overrides=[f"resume={tmp_path}"]))

    assert settings.resume is None


@pytest.mark.usefixtures("simulation")
def test_simulated_node_keeps_the_run_config_dataset_root() -> None:
    context = _context(node={"partition-id": 0, "data-root": "/srv/a"},
                       overrides=["dataset=cifar10", "dataset.root=/data/cifar"])

    assert node_settings(context).data.root == "/data/cifar"


# -- a node's client state -----------------------------------------------------------------
@pytest.mark.usefixtures("deployment")
def test_deployed_node_keeps_client_state_only_in_its_checkpoint_dir(tmp_path: Path) -> None:
    # Prepare: the run config names an existing folder on this machine
    output = tmp_path / "submitted"
    output.mkdir()
    plain = _context(output_dir=str(output))
    operated = _context(node={"partition-id": 0, "checkpoint-dir": str(tmp_path / "state")},
                        output_dir=str(output))

    assert state_store(plain, node_settings(plain), ROUND) is None
    store = state_store(operated, node_settings(operated), ROUND)
    assert store is not None and store.folder == tmp_path / "state" / "client-0"


@pytest.mark.usefixtures("simulation")
def test_simulated_node_keeps_client_state_in_the_run_folder(tmp_path: Path) -> None:
    context = _context(output_dir=str(tmp_path))

    store = state_store(context, node_settings(context), ROUND)

    assert store is not None and store.folder == tmp_path / CLIENT_STATE_DIR / "client-0"


# -- pfednas deploy local sets them as an operator would ----------------------------------
def test_deploy_local_gives_the_nodes_their_folders(tmp_path: Path) -> None:
    args = _parser().parse_args(["local", "nodes=2", "dataset.root=data/x", "--insecure",
                                 "--out", str(tmp_path / "run")])

    request, _ = _validate(args)

    assert request.out_dir == (tmp_path / "run").resolve()
    assert request.checkpoint_dir == request.out_dir / CLIENT_STATE_DIR
    assert request.data_root == Path("data/x").resolve()
    assert node_config(1, 2, data_root=request.data_root,
                       checkpoint_dir=request.checkpoint_dir) == (
        f'partition-id=1 num-partitions=2 data-root="{Path("data/x").resolve()}" '
        f'checkpoint-dir="{request.out_dir / CLIENT_STATE_DIR}"')
