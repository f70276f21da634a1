"""Python client of the ERC-20 holders query-service (proto ``holders.v1``).

>>> from holders_client import HoldersClient
>>> with HoldersClient("localhost:50051") as c:
...     top = c.top_holders(10)
"""

from .client import CSV_HEADER, Engineering, Finality, HoldersClient
from .errors import HoldersError
from .models import Holder, Holders, Token, Transfer, TransferEvent

__all__ = [
    "CSV_HEADER",
    "Engineering",
    "Finality",
    "Holder",
    "Holders",
    "HoldersClient",
    "HoldersError",
    "Token",
    "Transfer",
    "TransferEvent",
]
