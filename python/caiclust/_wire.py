"""How calls and results travel between the parent and the workers.

Pickle protocol 5 with out-of-band buffers: a numpy array's data is never
copied into the pickle; it follows it in the payload, and the receiver
unpickles views of the payload (writable: a ``bytearray``). The layout,
shared with the core's Python worker (``python_worker.py``)::

    pickle                                   (no out-of-band buffers)
    "CCB5" | u32 n | u64 pickle_len | n x u64 buffer_len | pickle | buffers

Functions and classes are pickled by reference where the worker can import
them, and by value (cloudpickle) where it cannot: anything defined in
``__main__`` (the workers never run the user's script), lambdas and local
functions.
"""

import pickle

MAGIC = b"CCB5"
PROTOCOL = 5


def dumps(obj):
    """The payload for ``obj`` (bytes)."""
    buffers = []
    try:
        main = pickle.dumps(obj, protocol=PROTOCOL, buffer_callback=buffers.append)
        by_value = b"__main__" in main
    except (pickle.PicklingError, AttributeError, TypeError):
        # A lambda, a local function, or something only cloudpickle takes.
        by_value = True
    if by_value:
        buffers = []
        main = _cloudpickle().dumps(obj, protocol=PROTOCOL, buffer_callback=buffers.append)
    return pack(main, buffers)


def pack(main, buffers):
    if not buffers:
        return main
    raws = [b.raw() for b in buffers]
    head = [MAGIC, len(raws).to_bytes(4, "little"), len(main).to_bytes(8, "little")]
    head += [r.nbytes.to_bytes(8, "little") for r in raws]
    return b"".join(head + [main] + raws)


def loads(data):
    """The object in a payload (``bytes``, ``bytearray`` or a memoryview)."""
    if data[:4] != MAGIC:
        return pickle.loads(data)
    view = memoryview(data)
    n = int.from_bytes(view[4:8], "little")
    lens = [int.from_bytes(view[8 + 8 * i:16 + 8 * i], "little") for i in range(n + 1)]
    off = 8 + 8 * (n + 1)
    main = view[off:off + lens[0]]
    off += lens[0]
    buffers = []
    for size in lens[1:]:
        buffers.append(view[off:off + size])
        off += size
    return pickle.loads(main, buffers=buffers)


def _cloudpickle():
    try:
        import cloudpickle
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise pickle.PicklingError(
            "this call needs cloudpickle (it uses something defined in __main__, "
            "a lambda or a local function): pip install cloudpickle") from exc
    return cloudpickle
