import pytest
from hypothesis import given
from hypothesis import strategies as st

import evtdsl as evt
from evtdsl.ir import dims as D

M, K = evt.dim("M"), evt.dim("K")


def test_printing_and_eval():
    e = evt.cdiv(M, 16) * 2 + K // 64
    assert str(e) == "cdiv(M, 16) * 2 + K // 64"
    assert e.eval({"M": 33, "K": 130}) == 3 * 2 + 2
    assert str(M - (K + 1)) == "M - (K + 1)"
    assert str(evt.min(M, 64)) == "min(M, 64)"
    assert evt.cdiv(33, 16) == 3 and evt.max(3, 4) == 4


def test_symbolic_equality():
    assert D.provably_equal(K // 64 * 2, 2 * (K // 64))
    assert D.provably_equal(evt.cdiv(M * 16, 16), M)
    assert not D.provably_equal(K // 64, K // 32)
    assert D.counterexample(K // 64, K // 32) is not None
    assert D.counterexample(M + M, 2 * M) is None


def test_symbolic_size_has_no_truth_value():
    with pytest.raises(TypeError, match="no truth value"):
        bool(M + 1)


@given(st.integers(1, 10_000), st.integers(1, 512))
def test_cdiv_matches_ceil(m, b):
    assert D.cdiv(M, b).eval({"M": m}) == -(-m // b)


def test_printing_keeps_needed_brackets():
    assert str(M * (K // 64)) == "M * (K // 64)"
    assert str(M * K // 64) == "M * K // 64"
    assert str(M + (K + 1)) == "M + (K + 1)"
    env = {"M": 5, "K": 100}
    for e in (M * (K // 64), M * K // 64, M - (K - 1), M + (K % 7) * 3):
        assert eval(str(e).replace("cdiv", "evt.cdiv"), {"M": M, "K": K, "evt": evt}).eval(env) == e.eval(env)
