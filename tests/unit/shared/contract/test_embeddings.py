"""An embedding job's vectors, packed by the worker and unpacked by the API."""

from __future__ import annotations

import base64
import struct

import pytest

from shared.contract.embeddings import pack_vector, unpack_vector

pytestmark = pytest.mark.unit


def test_a_vector_is_base64_of_little_endian_float32() -> None:
    # The format OpenAI's encoding_format=base64 answers, passed to clients as is.
    assert base64.b64decode(pack_vector([1.0, -2.5])) == struct.pack("<2f", 1.0, -2.5)


def test_a_packed_vector_unpacks_to_its_floats() -> None:
    vector = [0.25, -1.5, 3.0, 0.0]
    assert unpack_vector(pack_vector(vector)) == vector
    assert unpack_vector(pack_vector([])) == []
