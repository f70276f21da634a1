"""The one exception a call raises: the gRPC status code and the server's message."""

from __future__ import annotations

import grpc


class HoldersError(Exception):
    """A call the query-service refused or could not answer.

    ``code`` is the gRPC status (``grpc.StatusCode.INVALID_ARGUMENT`` names the field in
    ``details``; ``UNAVAILABLE`` is worth retrying), ``details`` the server's message.
    """

    def __init__(self, code: grpc.StatusCode, details: str, method: str = "") -> None:
        self.code = code
        self.details = details
        self.method = method
        where = f"{method}: " if method else ""
        super().__init__(f"{where}{code.name}: {details}")

    @classmethod
    def from_rpc(cls, error: grpc.RpcError, method: str = "") -> "HoldersError":
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = error.details() if hasattr(error, "details") else str(error)
        return cls(code or grpc.StatusCode.UNKNOWN, details or "", method)
