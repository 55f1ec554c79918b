"""Sparkplug B (spBv1.0): protobuf payloads, metrics of a batch report, node life cycle.

``sparkplug_b.proto`` is the Eclipse Tahu definition; ``sparkplug_b_pb2.py`` is generated
from it (see the header of the .proto) and committed, so the runtime needs only
``protobuf``.
"""
