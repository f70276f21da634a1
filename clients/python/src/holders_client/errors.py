"""The one exception a call raises: the gRPC status code and the server's message."""

from __future__ import annotations

import grpc


class HoldersError(Exception):
    """A call the query-service refused or could not answer.

    ``code`` is the gRPC status (``grpc.StatusCode.INVALID_ARGUMENT`` names the field in
    ``details``; ``UNAVAILABLE`` is worth retrying; ``UNAUTHENTICATED``: no valid API key;
    ``RESOURCE_EXHAUSTED``: a rate limit, the expensive lane or the stream limit is full,
    retry after ``retry_after`` seconds), ``details`` the server's message.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str,
        method: str = "",
        retry_after: "float | None" = None,
    ) -> None:
        self.code = code
        self.details = details
        self.method = method
        self.retry_after = retry_after
        where = f"{method}: " if method else ""
        super().__init__(f"{where}{code.name}: {details}")

    @classmethod
    def from_rpc(cls, error: grpc.RpcError, method: str = "") -> "HoldersError":
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = error.details() if hasattr(error, "details") else str(error)
        return cls(code or grpc.StatusCode.UNKNOWN, details or "", method, _retry_after(error))


def _retry_after(error: grpc.RpcError) -> "float | None":
    """The delay of a ``google.rpc.RetryInfo`` in the status details, in seconds."""
    trailers = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailers or ():
        if key != "grpc-status-details-bin":
            continue
        from google.protobuf import any_pb2, duration_pb2  # noqa: F401  (protobuf ships them)
        from google.rpc import status_pb2, error_details_pb2  # type: ignore[import-not-found]

        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            info = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None
