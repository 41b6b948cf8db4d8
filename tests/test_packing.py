"""A message's arrays packed as one Flower object: the same arrays back, byte for byte, after
Flower's own serialization; a fraction of the objects; a layout that does not add up refused."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.supercore.inflatable.inflatable_object import (
    get_all_nested_objects,
    get_object_tree,
    iterate_object_tree,
)
from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents

from pfednas.packing import (
    ARRAYS,
    LAYOUT,
    PACKED_KEY,
    PACKED_STYPE,
    PackingError,
    array_record,
    pack,
)

RNG = np.random.default_rng(0)
# float32 kernels and biases, a BatchNorm's int64 counter (0-d), an empty array, a float64
ARRAYS_OF_A_MODEL = [RNG.standard_normal((16, 3, 3, 3)).astype(np.float32),
                     RNG.standard_normal(16).astype(np.float32), np.array(7, np.int64),
                     np.zeros((0, 4), np.float32), RNG.standard_normal((2, 5))]


def content(arrays: list[np.ndarray]) -> RecordDict:
    return RecordDict({"config": ConfigRecord({"server_round": 3}),
                       ARRAYS: ArrayRecord(numpy_ndarrays=arrays),
                       "metrics": MetricRecord({"num_examples": 10})})


def through_flower(record: RecordDict) -> RecordDict:
    """``record`` deflated into Flower's objects and inflated from them, as it travels."""
    contents = {oid: obj.deflate() for oid, obj in get_all_nested_objects(record).items()}
    back = inflate_object_from_contents(record.object_id, contents)
    assert isinstance(back, RecordDict)
    return back


def fields(record: ArrayRecord) -> list[tuple[str, str, tuple[int, ...], str, bytes]]:
    return [(k, a.dtype, tuple(a.shape), a.stype, a.data) for k, a in record.items()]


def objects(record: RecordDict) -> int:
    return sum(1 for _ in iterate_object_tree(get_object_tree(record)))


def test_packed_arrays_come_back_byte_for_byte_after_flowers_serialization() -> None:
    plain = content(ARRAYS_OF_A_MODEL)

    packed = through_flower(pack(plain))
    unpacked = array_record(packed)

    assert unpacked is not None
    assert fields(unpacked) == fields(plain[ARRAYS])  # type: ignore[arg-type]
    for got, sent in zip(unpacked.to_numpy_ndarrays(), ARRAYS_OF_A_MODEL, strict=True):
        assert got.dtype == sent.dtype and got.shape == sent.shape
        np.testing.assert_array_equal(got, sent)
    assert packed["config"] == plain["config"] and packed["metrics"] == plain["metrics"]


def test_a_models_arrays_travel_as_a_handful_of_objects_instead_of_two_per_array() -> None:
    # the smallest MobileNetV3 subnet's update: 94 arrays
    arrays = [RNG.standard_normal((16, 3, 3)).astype(np.float32) for _ in range(94)]

    assert objects(content(arrays)) == 2 * 94 + 4  # each array and its chunk; 3 records, content
    assert objects(pack(content(arrays))) <= 7


def test_content_without_arrays_is_left_as_it_is_and_a_plain_record_read_as_it_is() -> None:
    bare = RecordDict({"config": ConfigRecord({"a": 1})})
    empty = RecordDict({ARRAYS: ArrayRecord()})
    plain = content(ARRAYS_OF_A_MODEL)

    assert pack(bare) is bare and pack(empty) is empty
    packed = pack(plain)
    assert pack(packed) is packed  # a message sent twice is packed once
    assert array_record(bare) is None
    assert array_record(plain) is plain[ARRAYS]


def packed_with(**layout: Any) -> RecordDict:
    """A packed copy of the model's arrays with ``layout``'s fields replaced."""
    packed = pack(content(ARRAYS_OF_A_MODEL))
    fields = {**dict(packed[LAYOUT]), **layout}  # type: ignore[arg-type]
    packed[LAYOUT] = ConfigRecord(fields)
    return packed


def lengths() -> list[int]:
    return list(pack(content(ARRAYS_OF_A_MODEL))[LAYOUT]["lengths"])  # type: ignore[index]


@pytest.mark.parametrize(("broken", "message"), [
    (lambda: packed_with(lengths=[*lengths()[:-1], lengths()[-1] + 1]), "do not add up"),
    (lambda: packed_with(lengths=[-1, *lengths()[1:-1], lengths()[-1] + lengths()[0] + 1]),
     "do not add up"),
    (lambda: packed_with(keys=["0", "0", "2", "3", "4"]), "twice"),
    (lambda: packed_with(keys=["0", "1"]), "differ in length"),
    (lambda: packed_with(ndims=[4, 1, 0, 2, 3]), "shapes do not add up"),
    (lambda: packed_with(dims=[16, 3, 3, 3, 16, -1, 4, 2, 5]), "shapes do not add up"),
    (lambda: packed_with(lengths=[True] * 5), "not a list of int"),
    (lambda: packed_with(dtypes="float32"), "not a list of str"),
    (lambda: RecordDict({LAYOUT: ConfigRecord({"keys": []})}), "without a packed"),
    (lambda: RecordDict({ARRAYS: ArrayRecord(numpy_ndarrays=[np.zeros(2)]),
                         LAYOUT: pack(content(ARRAYS_OF_A_MODEL))[LAYOUT]}), "holds one"),
    (lambda: RecordDict({ARRAYS: ArrayRecord({PACKED_KEY: Array(
        dtype="uint8", shape=(0,), stype="numpy.ndarray", data=b"")}),
        LAYOUT: ConfigRecord({"keys": []})}), "holds one"),
], ids=["lengths-over", "length-negative", "key-twice", "lists-differ", "ndims-over",
        "dim-negative", "bool-not-int", "str-not-list", "layout-alone", "not-packed",
        "wrong-stype"])
def test_a_packed_record_that_does_not_add_up_is_refused_with_what_is_wrong(
        broken: Any, message: str) -> None:
    with pytest.raises(PackingError, match=message):
        array_record(broken())


def test_the_packed_array_says_what_it_is() -> None:
    packed = pack(content(ARRAYS_OF_A_MODEL))[ARRAYS]

    assert list(packed.keys()) == [PACKED_KEY]  # type: ignore[union-attr]
    assert packed[PACKED_KEY].stype == PACKED_STYPE  # type: ignore[index]
