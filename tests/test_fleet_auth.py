"""The Fleet gateway's node authentication: Flower 1.41's SuperNode signature, checked on
the headers alone (issue 61, finding 3). Headers are made by Flower's own SuperNode code."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key
from flwr.common import constant
from flwr.supercore import constant as supercore
from flwr.supercore.protobuf.client import ProtobufRequestContext
from flwr.supernode.node_auth_http_interceptor import NodeAuthHttpInterceptor

from pfednas.deploy import fleet_auth
from pfednas.deploy.certs import NodeKey, node_key_paths, write_node_key, write_node_keys
from pfednas.deploy.fleet_auth import RELOAD_S, RegisteredKeys, signer


def signed(key: NodeKey) -> dict[str, str]:
    """The authentication headers Flower 1.41's SuperNode adds to a call, by its own code."""
    private = load_ssh_private_key(key.private.read_bytes(), None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    request = httpx.Request("POST", "https://superlink/")
    NodeAuthHttpInterceptor(private, private.public_key()).intercept(
        ProtobufRequestContext("Call", None, request),  # type: ignore[arg-type]
        lambda context: httpx.Response(200))
    return {k: v for k, v in request.headers.items() if k.startswith("flwr-")}


def raw(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode(), v.encode()) for k, v in headers.items()]


def test_the_gateway_checks_the_headers_and_window_of_flower_1_41() -> None:
    # the names and the window restated in fleet_auth (importing flwr costs the gateway 29 MB)
    restated = (fleet_auth.PUBLIC_KEY_HEADER, fleet_auth.SIGNATURE_HEADER,
                fleet_auth.TIMESTAMP_HEADER, fleet_auth.TIMESTAMP_TOLERANCE_S,
                fleet_auth.CLOCK_SKEW_S)
    flower = (supercore.FLEET_HTTP_PUBLIC_KEY_HEADER.encode(),
              supercore.FLEET_HTTP_SIGNATURE_HEADER.encode(), constant.TIMESTAMP_HEADER.encode(),
              constant.TIMESTAMP_TOLERANCE, constant.SYSTEM_TIME_TOLERANCE)
    assert restated == flower


def test_a_registered_node_signed_call_is_known_by_its_key_file(tmp_path: Path) -> None:
    # Prepare
    keys = write_node_keys(tmp_path / "keys", 2)

    # Execute
    found = [signer(raw(signed(key)), RegisteredKeys(tmp_path / "keys")) for key in keys]

    # Assert
    assert [f.name if f else None for f in found] == ["node-0", "node-1"]


def test_forged_stale_and_unregistered_signatures_are_refused(tmp_path: Path) -> None:
    # Prepare: node 0 registered; a stranger's key outside the folder; node 0's headers
    # with the stranger's signature, with its timestamp 306 s old or 6 s ahead, without
    # its signature, with a signature that is not base64
    node = write_node_keys(tmp_path / "keys", 1)[0]
    stranger = write_node_key(node_key_paths(tmp_path / "elsewhere", 7))
    keys = RegisteredKeys(tmp_path / "keys")
    good = signed(node)
    sent = dt.datetime.fromisoformat(good["flwr-timestamp"])
    cases = {
        "unregistered": (signed(stranger), None),
        "forged": ({**good, "flwr-signature": signed(stranger)["flwr-signature"]}, None),
        "stale": (good, sent + dt.timedelta(seconds=306)),
        "ahead": (good, sent - dt.timedelta(seconds=6)),
        "unsigned": ({k: v for k, v in good.items() if k != "flwr-signature"}, None),
        "not base64": ({**good, "flwr-signature": "not base64!"}, None),
    }

    # Execute
    found = {name: signer(raw(headers), keys, now) for name, (headers, now) in cases.items()}
    inside = [signer(raw(good), keys, sent + dt.timedelta(seconds=s)) for s in (-4, 0, 304)]

    # Assert: each refused as Flower's SuperLink refuses it; inside the window, accepted
    assert found == dict.fromkeys(cases)
    assert [f.name if f else None for f in inside] == ["node-0"] * 3


def test_a_key_registered_while_the_gateway_runs_is_taken_without_a_restart(
        tmp_path: Path) -> None:
    # Prepare: the gateway reads node 0's key; node 1's is added afterwards
    write_node_keys(tmp_path / "keys", 1)
    keys = RegisteredKeys(tmp_path / "keys")
    late = write_node_keys(tmp_path / "keys", 1, start=1)[0]

    # Execute: node 1 calls at once, and again after RELOAD_S
    at_once = signer(raw(signed(late)), keys)
    time.sleep(RELOAD_S)
    later = signer(raw(signed(late)), keys)

    # Assert: the folder is re-read at most every RELOAD_S, then node 1 is known
    assert at_once is None
    assert later is not None and later.name == "node-1"
    assert len(keys) == 2
