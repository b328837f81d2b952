"""Reading an answer's body under a cap that holds after decompression, for both transports.

HTTP libraries unpack gzip for you, and a 100 KB gzip answer can unpack to 100 MiB before anyone
looks at its length. So the transports read the raw bytes and decode them here, never producing
more than the cap allows: a body that would pass it is refused the moment it does.
"""

from __future__ import annotations

import zlib

from airflow_provider_eachlabs.exceptions import EachlabsError, EachlabsResponseError

# Only what the decoder below reads is asked for (libraries add br or zstd when they are installed).
ACCEPT_ENCODING = "gzip, deflate"
READ_CHUNK_BYTES = 64 * 1024


class BodyTooLarge(EachlabsError):
    """Raised by ``BodyReader``; the transport turns it into the request's own oversize error."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"larger than the {limit} byte limit")


class BodyReader:
    """Decode chunks of a body as they arrive, refusing it once the decoded size passes ``limit``."""

    def __init__(self, content_encoding: str | None, limit: int) -> None:
        encoding = (content_encoding or "identity").strip().lower()
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0
        if encoding in ("", "identity"):
            self._decoder = None
        elif encoding in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._decoder = zlib.decompressobj(32 + zlib.MAX_WBITS)
        else:
            raise EachlabsResponseError(
                f"the answer uses a content encoding that was not asked for: {encoding!r}"
            )

    def feed(self, chunk: bytes) -> None:
        room = self._limit - self._size
        if self._decoder is None:
            data = chunk
        else:
            try:
                # At most one byte past the cap is ever produced, however well the input packs.
                data = self._decoder.decompress(chunk, room + 1)
            except zlib.error as error:
                raise EachlabsResponseError(f"the answer's compressed body is corrupt ({error})") from None
        if len(data) > room:
            raise BodyTooLarge(self._limit)
        self._chunks.append(data)
        self._size += len(data)

    def content(self) -> bytes:
        return b"".join(self._chunks)
