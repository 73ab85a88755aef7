"""The graph of references between rules: cycles to reject, and who reads the types.

Nodes are rule positions; an edge ``a -> b`` means rule ``a`` has a ``rule``/``notrule``
entry naming rule ``b``. Both walks are iterative, so a long chain of references cannot
exhaust the interpreter's stack.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

Edges = Mapping[int, Sequence[int]]


def find_cycles(edges: Edges) -> list[tuple[int, ...]]:
    """Every distinct reference cycle met by a depth-first walk, each as the path around it.

    Each cycle starts at its earliest rule; every rule that lies on some cycle is in at
    least one of those returned.
    """
    state: dict[int, int] = {}  # 1: on the current path, 2: finished
    seen: set[frozenset[int]] = set()
    cycles: list[tuple[int, ...]] = []
    for start in sorted(edges):
        if start in state:
            continue
        path: list[int] = [start]
        pending: list[Iterator[int]] = [iter(edges.get(start, ()))]
        state[start] = 1
        while pending:
            target = next(pending[-1], None)
            if target is None:
                state[path.pop()] = 2
                pending.pop()
            elif state.get(target) == 1:
                cycle = path[path.index(target):]
                if frozenset(cycle) not in seen:
                    seen.add(frozenset(cycle))
                    first = cycle.index(min(cycle))
                    cycles.append(tuple(cycle[first:] + cycle[:first]))
            elif target not in state:
                state[target] = 1
                path.append(target)
                pending.append(iter(edges.get(target, ())))
    return sorted(cycles)


def reads_types(direct: Iterable[int], edges: Edges) -> frozenset[int]:
    """The rules that read ``ClassifyType`` themselves (``direct``) or through a reference."""
    readers = set(direct)
    referrers: dict[int, list[int]] = {}
    for source, targets in edges.items():
        for target in targets:
            referrers.setdefault(target, []).append(source)
    queue = list(readers)
    while queue:
        for source in referrers.get(queue.pop(), ()):
            if source not in readers:
                readers.add(source)
                queue.append(source)
    return frozenset(readers)
