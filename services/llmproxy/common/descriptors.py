"""Descriptor sets of our APIs, built from the generated stubs.

Envoy's gRPC-JSON transcoder and `grpcurl -protoset` both read a FileDescriptorSet. Building
it from the imported modules (rather than running protoc again) means it always matches the
stubs the services run.
"""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor

from llmproxy._gen.authz.v1 import authz_pb2
from llmproxy._gen.fault.v1 import fault_pb2
from llmproxy._gen.health.v1 import health_pb2
from llmproxy._gen.ratelimit.v1 import ratelimit_pb2
from llmproxy._gen.router.v1 import anthropic_pb2, chat_pb2, openai_pb2, router_pb2

API_FILES: tuple[FileDescriptor, ...] = (
    openai_pb2.DESCRIPTOR,
    anthropic_pb2.DESCRIPTOR,
    router_pb2.DESCRIPTOR,
    chat_pb2.DESCRIPTOR,
    ratelimit_pb2.DESCRIPTOR,
    authz_pb2.DESCRIPTOR,
    health_pb2.DESCRIPTOR,
    fault_pb2.DESCRIPTOR,
)


def descriptor_set(files: Iterable[FileDescriptor] = API_FILES) -> descriptor_pb2.FileDescriptorSet:
    """The files and every file they import, dependencies first, each once."""
    result = descriptor_pb2.FileDescriptorSet()
    seen: set[str] = set()

    def add(file: FileDescriptor) -> None:
        if file.name in seen:
            return
        seen.add(file.name)
        for dependency in file.dependencies:
            add(dependency)
        file.CopyToProto(result.file.add())

    for file in files:
        add(file)
    return result
