"""A message's arrays as one Flower object: the deployed round's per-request cost.

Flower 1.41 sends every ``Array`` of a message as objects of their own (the array and its
chunk), and a deployment's Fleet API moves each object with an HTTP request of its own,
signed by the node and verified by the SuperLink. A FedAvg message of the smallest MobileNetV3
subnet holds 94 arrays: 191 objects. Packed, a message's arrays travel as one ``Array`` of
their ``.npy`` bytes end to end (Flower chunks it at 5 MiB) beside a ``ConfigRecord`` that
says, for each array, its key, dtype, shape, stype and length: 6 objects.

Unpacked, the same ``ArrayRecord`` comes back, each ``Array`` byte for byte and nothing
decoded, so the reply gate judges a packed reply's arrays exactly as it judges a plain one's;
a packed record that does not add up is a :class:`PackingError` (the gate: an unreadable
reply). Pure functions; the ClientApp and the strategies' send and receive are their users.
"""

from __future__ import annotations

from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

ARRAYS = "arrays"  # the content's array record, packed or not
LAYOUT = "arrays_layout"  # beside a packed one: what each array was
PACKED_KEY = "packed"
PACKED_STYPE = "pfednas.packed"  # the stype of the one array that carries them all
_INT_FIELDS = ("ndims", "dims", "lengths")
_STR_FIELDS = ("keys", "dtypes", "stypes")


class PackingError(ValueError):
    """A packed array record whose layout does not describe its bytes."""


def pack(content: RecordDict) -> RecordDict:
    """``content`` with its array record packed into one array (the same object where it has
    none, an empty one, or is packed already)."""
    record = content.get(ARRAYS)
    if not isinstance(record, ArrayRecord) or len(record) == 0 or LAYOUT in content:
        return content
    arrays = list(record.values())
    layout = ConfigRecord({
        "keys": list(record.keys()),
        "dtypes": [a.dtype for a in arrays],
        "stypes": [a.stype for a in arrays],
        "ndims": [len(a.shape) for a in arrays],
        "dims": [int(d) for a in arrays for d in a.shape],
        "lengths": [len(a.data) for a in arrays],
    })
    data = b"".join(a.data for a in arrays)
    out = RecordDict({key: value for key, value in content.items() if key != ARRAYS})
    out[ARRAYS] = ArrayRecord({PACKED_KEY: Array(dtype="uint8", shape=(len(data),),
                                                 stype=PACKED_STYPE, data=data)})
    out[LAYOUT] = layout
    return out


def array_record(content: RecordDict) -> ArrayRecord | None:
    """The array record of ``content`` as it was before :func:`pack` (a plain one as it is;
    None without one). Raises :class:`PackingError` where a packed one does not add up."""
    record = content.get(ARRAYS)
    if LAYOUT not in content:
        return record if isinstance(record, ArrayRecord) else None
    layout = content.get(LAYOUT)
    if not isinstance(layout, ConfigRecord) or not isinstance(record, ArrayRecord):
        raise PackingError(f"{LAYOUT} without a packed {ARRAYS} record")
    if list(record.keys()) != [PACKED_KEY] or record[PACKED_KEY].stype != PACKED_STYPE:
        raise PackingError(f"a packed {ARRAYS} record holds one {PACKED_STYPE!r} array")
    data = record[PACKED_KEY].data
    fields = _fields(layout)
    keys, count = fields["keys"], len(fields["keys"])
    if any(len(fields[name]) != count for name in (*_STR_FIELDS, "ndims", "lengths")):
        raise PackingError("the layout's lists differ in length")
    if len(set(keys)) != count:
        raise PackingError("the layout names an array twice")
    if any(n < 0 for n in fields["ndims"]) or sum(fields["ndims"]) != len(fields["dims"]) \
            or any(d < 0 for d in fields["dims"]):
        raise PackingError("the layout's shapes do not add up")
    if any(n < 0 for n in fields["lengths"]) or sum(fields["lengths"]) != len(data):
        raise PackingError(f"the layout's lengths do not add up to the {len(data)} bytes")
    arrays: dict[str, Array] = {}
    dims, offset = fields["dims"], 0
    for i, key in enumerate(keys):
        ndim, length = fields["ndims"][i], fields["lengths"][i]
        shape, dims = tuple(dims[:ndim]), dims[ndim:]
        arrays[key] = Array(dtype=fields["dtypes"][i], shape=shape, stype=fields["stypes"][i],
                            data=data[offset:offset + length])
        offset += length
    return ArrayRecord(arrays)


def _fields(layout: ConfigRecord) -> dict[str, list]:
    fields: dict[str, list] = {}
    for name in (*_STR_FIELDS, *_INT_FIELDS):
        value = layout.get(name)
        kind = str if name in _STR_FIELDS else int
        if not isinstance(value, list) or not all(
                isinstance(v, kind) and not isinstance(v, bool) for v in value):
            raise PackingError(f"the layout's {name!r} is not a list of {kind.__name__}")
        fields[name] = value
    return fields
