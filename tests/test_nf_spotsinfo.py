"""SpotsInfo.bin bit layout (xreduce.nf.spotsinfo) against the rule written out bit by bit."""
import numpy as np
import pytest

from xreduce.nf.spotsinfo import (lit_bit, n_words, pack_lit, read_spots_info, unpack_lit,
                                  write_spots_info)


def _pack_by_rule(lit):
    """MIDAS's rule, one bit at a time: word[k / 32] |= 1 << (k % 32)."""
    words = np.zeros(-(-lit.size // 32), np.uint32)
    for k in np.flatnonzero(lit.ravel()):
        words[k // 32] |= np.uint32(1) << np.uint32(k % 32)
    return words


def test_pack_follows_midas_rule_and_round_trips(tmp_path):
    rng = np.random.default_rng(3)
    lit = rng.random((2, 5, 7, 9)) < 0.2
    words = pack_lit(lit)
    np.testing.assert_array_equal(words, _pack_by_rule(lit))
    np.testing.assert_array_equal(unpack_lit(words, lit.shape), lit)
    for idx in [(0, 0, 0, 0), (1, 4, 6, 8), (1, 2, 3, 4)]:
        assert lit_bit(words, lit.shape, *idx) == lit[idx]
    write_spots_info(tmp_path / "SpotsInfo.bin", words)
    assert (tmp_path / "SpotsInfo.bin").read_bytes() == words.astype("<u4").tobytes()
    np.testing.assert_array_equal(read_spots_info(tmp_path / "SpotsInfo.bin", lit.shape), words)


def test_size_mismatch_is_refused(tmp_path):
    words = np.zeros(n_words((1, 2, 3, 4)), np.uint32)
    write_spots_info(tmp_path / "s.bin", words)
    with pytest.raises(ValueError, match="need"):
        read_spots_info(tmp_path / "s.bin", (2, 2, 3, 4))
    with pytest.raises(ValueError, match="words"):
        unpack_lit(words[:-1] if words.size > 1 else np.zeros(5, np.uint32), (1, 2, 3, 4))
    with pytest.raises(ValueError, match="shape"):
        n_words((1, 0, 3, 4))
