"""Conversions between library types and proto messages, shared by the services."""

from __future__ import annotations

from orbithash.model_facts import ModelFacts
from orbithash_api.v1 import orbithash_pb2 as pb


def model_info(facts: ModelFacts) -> pb.ModelInfo:
    return pb.ModelInfo(
        name=facts.name, version=facts.version, bits=facts.bits, class_names=list(facts.class_names),
        input_size=facts.input_size, mean=list(facts.mean), std=list(facts.std), method=facts.method,
        backbone=facts.backbone,
    )


def facts_from_info(info: pb.ModelInfo) -> ModelFacts:
    return ModelFacts(
        name=info.name, version=info.version, bits=info.bits, class_names=tuple(info.class_names),
        input_size=info.input_size, mean=tuple(info.mean), std=tuple(info.std),  # type: ignore[arg-type]
        method=info.method, backbone=info.backbone,
    )
