"""The server's own text-frame encoder, read back by wsproto as a client would."""

from __future__ import annotations

import pytest
from wsproto.connection import Connection, ConnectionType
from wsproto.events import TextMessage

from chat.hypercorn_hooks import text_frame


def read_back(data: bytes) -> list[str]:
    client = Connection(ConnectionType.CLIENT)
    client.receive_data(data)
    texts = []
    for event in client.events():
        assert isinstance(event, TextMessage), event
        assert event.message_finished
        texts.append(event.data)
    return texts


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 200_000])
def test_every_length_encoding_reads_back_exactly(length: int) -> None:
    text = "x" * length
    frame = text_frame(text)
    assert read_back(frame) == [text]
    assert frame[0] == 0x81  # final text frame
    assert frame[1] & 0x80 == 0  # a server never masks


def test_the_length_counts_utf8_bytes_not_characters() -> None:
    text = "ü✓" * 30  # 60 characters, 150 bytes: the 2-byte length form
    assert read_back(text_frame(text)) == [text]


def test_frames_written_back_to_back_read_back_in_order() -> None:
    texts = ["a", "b" * 300, "", "c" * 70_000]
    assert read_back(b"".join(map(text_frame, texts))) == texts
