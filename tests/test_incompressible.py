"""grpyc/_incompressible.py: proving that deflate cannot shrink a sample.

`cannot_shrink` may only ever say what zlib's sampling deflater would say
(`grpyc.framing._sample_shrinks`), so the verdicts of "auto" compression
stay zlib's. These tests check that on data of many kinds, and on data
built to sit just above the entropy bound, where a wrong proof would show.
"""

import base64
import os
import random
import zlib

import pytest

from grpyc import framing
from grpyc._incompressible import LONGEST_SAMPLE, cannot_shrink

FRACTION = 1 - framing._AUTO_MIN_SAVING  # what "auto" asks of a sample


def _rates_incompressible(sample: bytes) -> bool:
    return cannot_shrink(memoryview(sample), FRACTION)


def _zlib_rates_incompressible(sample: bytes) -> bool:
    return not framing._sample_shrinks(memoryview(sample))


def test_framing_samples_no_more_than_it_rates():
    assert framing._AUTO_SAMPLE_SIZE <= LONGEST_SAMPLE


def test_random_and_compressed_data_are_rated_without_zlib():
    rng = random.Random(7)
    samples = [rng.randbytes(1024) for _ in range(100)]
    samples += [zlib.compress(rng.randbytes(8192), 9)[:1024] for _ in range(50)]
    rated = [_rates_incompressible(sample) for sample in samples]
    # A 3-byte sequence occurs twice in ~3 % of random samples: zlib rates those.
    assert sum(rated) >= 0.9 * len(samples)
    assert all(_zlib_rates_incompressible(sample) for sample in samples)


def _record_repeats(period: int) -> bytes:
    record = random.Random(period).randbytes(period)
    return (record * (1024 // period + 1))[:1024]


@pytest.mark.parametrize(
    "sample",
    [
        bytes(1024),
        (b"the quick brown fox jumps over the lazy dog " * 30)[:1024],
        _record_repeats(300),  # high entropy per byte, yet deflate matches the records
        _record_repeats(600),
        base64.b64encode(random.Random(1).randbytes(768)),  # 6 bits a byte: Huffman shrinks it
        random.Random(2).randbytes(512).hex().encode(),
        bytes(random.Random(3).choices(range(16), k=1024)),
    ],
    ids=["zeros", "text", "records-300", "records-600", "base64", "hex", "16-symbols"],
)
def test_data_zlib_shrinks_is_never_rated_incompressible(sample):
    assert not _zlib_rates_incompressible(sample)
    assert not _rates_incompressible(sample)


def test_no_sample_near_the_bound_is_rated_incompressible_when_zlib_shrinks_it():
    # Bytes drawn from 100-200 symbols carry 6.6-7.6 bits each: around the
    # 7.2 bits a byte above which no code saves 10 %, where a wrong proof shows.
    rng = random.Random(11)
    rated = 0
    for _ in range(400):
        alphabet = rng.sample(range(256), rng.randint(100, 200))
        weights = [1 + 0.6 * rng.random() for _ in alphabet]
        sample = bytes(rng.choices(alphabet, weights, k=1024))
        if _rates_incompressible(sample):
            rated += 1
            assert _zlib_rates_incompressible(sample)
    assert 50 <= rated <= 350  # both verdicts occur: the test reaches the bound


def test_a_sequence_seen_twice_leaves_the_verdict_to_zlib():
    sample = bytearray(random.Random(5).randbytes(1024))
    assert _rates_incompressible(bytes(sample))  # no 3-byte sequence twice yet
    sample[900:903] = sample[100:103]
    assert not _rates_incompressible(bytes(sample))


@pytest.mark.parametrize("size", [0, 2, LONGEST_SAMPLE + 1])
def test_samples_it_does_not_rate(size):
    assert not _rates_incompressible(os.urandom(size))


def test_a_sample_not_of_bytes_is_left_to_zlib():
    words = memoryview(random.Random(6).randbytes(1024)).cast("H")
    assert not cannot_shrink(words, FRACTION)


def test_auto_skips_random_data_and_compresses_text_as_before():
    noise = random.Random(8).randbytes(8192)
    assert framing.deflate(noise, "auto") == (noise, False)
    text = (b"the quick brown fox jumps over the lazy dog " * 200)[:8192]
    packed, compressed = framing.deflate(text, "auto")
    assert compressed and zlib.decompress(packed) == text
