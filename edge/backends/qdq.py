"""INT8 QDQ models on ONNX Runtime's CPU: signed activations re-expressed as unsigned.

The INT8 file (``crystal-train export --int8``) has symmetric signed activations: every
activation ``QuantizeLinear``/``DequantizeLinear`` pair uses an ``int8`` zero point 0, the
form TensorRT's explicit quantization requires. ONNX Runtime's x86 kernels with VNNI
run unsigned-activation x signed-weight (U8S8) convolutions; a signed-activation file
runs 2-3x slower there. The two forms are the same function:

    Q_s8(x) = clamp(round(x / s) + z, -128, 127)
    Q_u8(x) = clamp(round(x / s) + z + 128, 0, 255) = Q_s8(x) + 128
    DQ_u8(q + 128; s, z + 128) = s (q - z) = DQ_s8(q; s, z)

so adding 128 to every activation zero point (int8 -> uint8; a byte's top bit flipped)
changes no value. :func:`as_uint8_activations` does this on the serialised model with a
minimal schema of the ONNX protobuf (the fields it reads and writes; every other field is
kept as an unknown field), so the edge runtime needs no ``onnx`` package. Weight
zero points (weights are initializers) stay int8.
"""

from __future__ import annotations

from typing import Any

INT8, UINT8 = 3, 2  # onnx.TensorProto.DataType

_SCHEMA: Any = None


def _field(msg: Any, name: str, number: int, ftype: int, *, repeated: bool = False,
           type_name: str | None = None, packed: bool = False) -> None:
    f = msg.field.add(name=name, number=number, type=ftype, label=3 if repeated else 1)
    if type_name:
        f.type_name = type_name
    if packed:
        f.options.packed = True


def _schema() -> dict[str, Any]:
    """Message classes of the subset of ``onnx.proto`` used here (proto2, own pool)."""
    global _SCHEMA
    if _SCHEMA is not None:
        return _SCHEMA
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fd = descriptor_pb2.FileDescriptorProto(name="crystal_qdq_subset.proto",
                                            package="crystal_qdq", syntax="proto2")
    F = descriptor_pb2.FieldDescriptorProto
    t = fd.message_type.add(name="TensorProto")
    _field(t, "data_type", 2, F.TYPE_INT32)
    _field(t, "int32_data", 5, F.TYPE_INT32, repeated=True, packed=True)
    _field(t, "name", 8, F.TYPE_STRING)
    _field(t, "raw_data", 9, F.TYPE_BYTES)
    n = fd.message_type.add(name="NodeProto")
    _field(n, "input", 1, F.TYPE_STRING, repeated=True)
    _field(n, "output", 2, F.TYPE_STRING, repeated=True)
    _field(n, "op_type", 4, F.TYPE_STRING)
    tt = fd.message_type.add(name="TensorType")
    _field(tt, "elem_type", 1, F.TYPE_INT32)
    ty = fd.message_type.add(name="TypeProto")
    _field(ty, "tensor_type", 1, F.TYPE_MESSAGE, type_name=".crystal_qdq.TensorType")
    vi = fd.message_type.add(name="ValueInfoProto")
    _field(vi, "name", 1, F.TYPE_STRING)
    _field(vi, "type", 2, F.TYPE_MESSAGE, type_name=".crystal_qdq.TypeProto")
    g = fd.message_type.add(name="GraphProto")
    _field(g, "node", 1, F.TYPE_MESSAGE, repeated=True, type_name=".crystal_qdq.NodeProto")
    _field(g, "initializer", 5, F.TYPE_MESSAGE, repeated=True,
           type_name=".crystal_qdq.TensorProto")
    _field(g, "value_info", 13, F.TYPE_MESSAGE, repeated=True,
           type_name=".crystal_qdq.ValueInfoProto")
    m = fd.message_type.add(name="ModelProto")
    _field(m, "graph", 7, F.TYPE_MESSAGE, type_name=".crystal_qdq.GraphProto")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    get = getattr(message_factory, "GetMessageClass", None)
    if get is None:  # protobuf < 4.22
        factory = message_factory.MessageFactory(pool)
        get = factory.GetPrototype
    _SCHEMA = {"ModelProto": get(pool.FindMessageTypeByName("crystal_qdq.ModelProto"))}
    return _SCHEMA


def activation_zero_points(graph: Any) -> tuple[set[str], set[str]]:
    """``(zero-point initializer names, quantized tensor names)`` of the activations: the
    zero points of every ``QuantizeLinear`` and of every ``DequantizeLinear`` whose input
    is not an initializer, and the outputs of the ``QuantizeLinear`` nodes."""
    inits = {t.name for t in graph.initializer}
    zps: set[str] = set()
    tensors: set[str] = set()
    for node in graph.node:
        if node.op_type == "QuantizeLinear":
            tensors.update(node.output)
            if len(node.input) > 2:
                zps.add(node.input[2])
        elif node.op_type == "DequantizeLinear" and node.input[0] not in inits:
            if len(node.input) > 2:
                zps.add(node.input[2])
    return zps, tensors


def as_uint8_activations(model_bytes: bytes) -> tuple[bytes, int]:
    """The serialised model with every int8 activation zero point made uint8 (+128).

    Returns ``(bytes, number of zero points changed)``; 0 (and the input unchanged)
    for a model without int8 activations.
    """
    from google.protobuf.message import DecodeError

    model = _schema()["ModelProto"]()
    try:
        model.ParseFromString(model_bytes)
    except DecodeError:  # not a model: ONNX Runtime names the problem when it loads it
        return model_bytes, 0
    zps, tensors = activation_zero_points(model.graph)
    changed = 0
    for t in model.graph.initializer:
        if t.name not in zps or t.data_type != INT8:
            continue
        t.data_type = UINT8
        if t.raw_data:
            t.raw_data = bytes(b ^ 0x80 for b in t.raw_data)
        else:
            t.int32_data[:] = [int(v) + 128 for v in t.int32_data]
        changed += 1
    if not changed:
        return model_bytes, 0
    for v in model.graph.value_info:
        if v.name in tensors and v.type.tensor_type.elem_type == INT8:
            v.type.tensor_type.elem_type = UINT8
    return model.SerializeToString(), changed
