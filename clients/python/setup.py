"""Builds the package with its gRPC stubs generated from the project's .proto files.

The .proto files are read from ``HOLDERS_PROTO_DIR`` or ``../../proto`` (this folder's
place in the repository); the stubs land in ``holders_client/_pb`` of the build, with
their imports made relative so that they live inside the package. The runtime needs
grpcio and protobuf at least as new as the generator that wrote the stubs.
"""

import os
import re
from importlib.metadata import version

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = "holders/v1/holders.proto"


def proto_root() -> str:
    root = os.environ.get("HOLDERS_PROTO_DIR") or os.path.join(HERE, "..", "..", "proto")
    if not os.path.exists(os.path.join(root, PROTO)):
        raise SystemExit(
            f"{PROTO} not found under {root}: build from the repository's clients/python, "
            "or set HOLDERS_PROTO_DIR to the folder holding holders/v1/holders.proto"
        )
    return root


def generate(out: str) -> None:
    import grpc_tools
    from grpc_tools import protoc

    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    os.makedirs(out, exist_ok=True)
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{proto_root()}",
            f"-I{well_known}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            PROTO,
        ]
    )
    if code != 0:
        raise SystemExit(f"grpc_tools.protoc failed on {PROTO} (exit {code})")
    for folder in (out, os.path.join(out, "holders"), os.path.join(out, "holders", "v1")):
        open(os.path.join(folder, "__init__.py"), "a").close()
    # protoc writes absolute imports (`from holders.v1 import holders_pb2`); inside the
    # package they must be relative.
    for name in ("holders_pb2_grpc.py",):
        path = os.path.join(out, "holders", "v1", name)
        with open(path) as f:
            text = f.read()
        text = re.sub(r"^from holders\.v1 import ", "from . import ", text, flags=re.M)
        with open(path, "w") as f:
            f.write(text)


class BuildWithStubs(build_py):
    def run(self) -> None:
        super().run()
        generate(os.path.join(self.build_lib, "holders_client", "_pb"))


def requirements() -> list:
    try:
        tools, pb = version("grpcio-tools"), version("protobuf")
    except Exception:  # metadata only (no build): no floor known
        return ["grpcio", "protobuf", "googleapis-common-protos>=1.56"]
    major = int(pb.split(".")[0])
    # googleapis-common-protos: google.rpc.RetryInfo, the retry hint of RESOURCE_EXHAUSTED.
    return [f"grpcio>={tools}", f"protobuf>={pb},<{major + 1}", "googleapis-common-protos>=1.56"]


setup(cmdclass={"build_py": BuildWithStubs}, install_requires=requirements())
