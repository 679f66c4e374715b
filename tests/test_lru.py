"""The library's one bounded cache: it keeps the most recently used values only, and says which."""

from __future__ import annotations

from introspect.lru import Lru


def test_lru_drops_the_least_recently_used():
    lru: Lru[str, int] = Lru(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1
    lru.put("c", 3)
    assert (lru.get("a"), lru.get("b"), lru.get("c")) == (1, None, 3)
    assert len(lru) == 2


def test_get_or_make_makes_a_value_once_while_it_is_kept():
    lru: Lru[int, str] = Lru(1)
    made: list[int] = []

    def make(key: int) -> str:
        made.append(key)
        return str(key)

    assert lru.get_or_make(1, lambda: make(1)) == "1"
    assert lru.get_or_make(1, lambda: make(1)) == "1"
    assert lru.get_or_make(2, lambda: make(2)) == "2"  # drops 1
    assert lru.get_or_make(1, lambda: make(1)) == "1"
    assert made == [1, 2, 1]


def test_asking_whether_a_key_is_kept_is_not_a_use():
    lru: Lru[str, int] = Lru(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert "a" in lru
    lru.put("c", 3)
    assert "a" not in lru
    assert ("b" in lru, "c" in lru) == (True, True)


def test_find_looks_values_up_by_what_they_cover_and_counts_as_a_use():
    lru: Lru[int, range] = Lru(2)
    lru.put(0, range(0, 10))
    lru.put(10, range(10, 20))
    assert lru.find(lambda covered: 5 in covered) == range(0, 10)
    assert lru.find(lambda covered: 25 in covered) is None
    lru.put(20, range(20, 30))  # drops 10..20, used least recently
    assert (0 in lru, 10 in lru, 20 in lru) == (True, False, True)


def test_a_capacity_of_zero_keeps_nothing():
    lru: Lru[str, int] = Lru(0)
    lru.put("a", 1)
    assert (lru.get("a"), len(lru)) == (None, 0)
    assert lru.get_or_make("a", lambda: 2) == 2
    assert len(lru) == 0
