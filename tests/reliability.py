"""The reliability report: the fuzz, fault and kill suites count what they checked here, and ``make test``
prints one line of it at the end (``reliability: N fuzz cases, F faults, K kills, L lost records, C crashes``).

A count is added only after its check passed, so the line says what was verified in this session of pytest;
a failed check shows up as a pytest failure and as one more crash.
"""

from __future__ import annotations

from collections import Counter

TALLY: Counter[str] = Counter()


def fuzz_case(n: int = 1) -> None:
    """One generated input went through a real entry point and ended as it should."""
    TALLY["fuzz"] += n


def fault(name: str) -> None:
    """One injected fault ended with a readable store, the right status and nothing complete lost."""
    TALLY["faults"] += 1
    TALLY[f"fault:{name}"] += 1


def kill(name: str) -> None:
    """One ``kill -9`` scenario recovered: listed correctly, resumed, every step once, the adapter loads."""
    TALLY["kills"] += 1
    TALLY[f"kill:{name}"] += 1


def lost(n: int) -> None:
    """Records that were complete before a fault and are missing after it (each suite adds what it counted)."""
    TALLY["lost"] += n


def crash() -> None:
    """An exception other than the package's own error, or a dead worker, where none may happen."""
    TALLY["crashes"] += 1


def summary() -> str | None:
    if not any(TALLY[k] for k in ("fuzz", "faults", "kills", "crashes")):
        return None
    return (f"reliability: {TALLY['fuzz']:,} fuzz cases, {TALLY['faults']} faults, {TALLY['kills']} kills, "
            f"{TALLY['lost']} lost records, {TALLY['crashes']} crashes")
