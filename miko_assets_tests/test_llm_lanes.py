"""`Lanes`: per-provider worker pools that take work while the batch is still adding to it."""

from __future__ import annotations

import asyncio

from miko_assets.llm.lanes import Lanes


def test_lanes_bound_each_provider_and_tell_when_the_last_round_is_in_flight() -> None:
    events: list[str] = []
    running = {"a": 0, "b": 0}
    peak = {"a": 0, "b": 0}

    async def work(item: tuple[str, int]) -> None:
        provider, n = item
        running[provider] += 1
        peak[provider] = max(peak[provider], running[provider])
        events.append(f"start {provider}{n}")
        await asyncio.sleep(0.01)
        running[provider] -= 1
        events.append(f"end {provider}{n}")

    async def main() -> None:
        lanes = Lanes({"a": 2, "b": 1}.__getitem__, work, lambda: events.append("drained"))
        for n in range(5):
            lanes.put("a", ("a", n))
        await asyncio.sleep(0.015)  # work starts before the last items are put
        assert "drained" not in events and any(e.startswith("end") for e in events)
        lanes.put("b", ("b", 0))
        lanes.put("a", ("a", 5))
        await lanes.join()

    asyncio.run(main())

    assert peak == {"a": 2, "b": 1}
    assert sorted(e for e in events if e.startswith("end")) == sorted(
        [f"end a{n}" for n in range(6)] + ["end b0"]
    )
    # Once, as the last of the 7 items is taken (the other 6 have started), before it finishes.
    assert events.count("drained") == 1
    drained = events.index("drained")
    assert sum(e.startswith("start") for e in events[:drained]) == 6
    assert events[drained + 1].startswith("start")


def test_lanes_with_nothing_left_to_take_are_drained_at_join() -> None:
    calls: list[str] = []

    async def main() -> None:
        lanes: Lanes[int] = Lanes(lambda _: 4, lambda _: asyncio.sleep(0), lambda: calls.append("drained"))
        await lanes.join()

    asyncio.run(main())
    assert calls == ["drained"]
