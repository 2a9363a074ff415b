"""Senders of verification codes: the console (default) and an HTTP webhook."""

import sys
from typing import Protocol, TextIO

import aiohttp

from plauder.protocol.errors import ErrorCode
from plauder.server.errors import ServiceError


class CodeSender(Protocol):
    """Delivers a verification code to the owner of a phone number."""

    async def send_code(self, number: str, code: str) -> None:
        """Deliver the code or raise ServiceError."""
        ...

    async def close(self) -> None:
        """Release resources."""
        ...


class ConsoleSender:
    """Prints codes on the server's standard output: for trying plauder out."""

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out or sys.stdout

    async def send_code(self, number: str, code: str) -> None:
        """Print the code where the operator sees it."""
        print(f"plauder: verification code for {number}: {code}", file=self._out, flush=True)

    async def close(self) -> None:
        """Nothing to release."""


class HttpSender:
    """POSTs {"number": ..., "code": ...} as JSON to an SMS gateway's URL."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self._url = url
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def send_code(self, number: str, code: str) -> None:
        """POST the code; a failure becomes an `unavailable` error for the client."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.post(self._url, json={"number": number, "code": code}) as r:
                if r.status >= 300:
                    raise ServiceError(
                        ErrorCode.UNAVAILABLE, f"the code could not be sent (gateway {r.status})"
                    )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ServiceError(ErrorCode.UNAVAILABLE, "the code could not be sent") from exc

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
