"""Token bucket arithmetic."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from keysat.access.ratelimit import refill, spend


def test_refill_caps_at_capacity() -> None:
    assert refill(0.0, 60, 1.0, 30) == 30.0
    assert refill(50.0, 60, 1.0, 3600) == 60.0
    assert refill(5.0, 60, 1.0, -10) == 5.0


def test_spend_and_retry_after() -> None:
    tokens, decision = spend(1.0, 1.0)
    assert decision.allowed and tokens == 0.0
    tokens, decision = spend(0.25, 1 / 60)
    assert not decision.allowed
    assert decision.retry_after == 45
    assert tokens == 0.25


@given(
    tokens=st.floats(min_value=0, max_value=100),
    capacity=st.integers(min_value=1, max_value=100),
    elapsed=st.floats(min_value=0, max_value=1e6),
)
def test_refill_never_exceeds_capacity(tokens: float, capacity: int, elapsed: float) -> None:
    value = refill(min(tokens, capacity), capacity, capacity / 60, elapsed)
    assert 0 <= value <= capacity
