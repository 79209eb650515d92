"""MaxInFlight: a plan's concurrency limit becomes work that waits on its row, not 429s."""

from __future__ import annotations

from helpers import drop, jobs
from vlmwatch.core.lifecycle import IN_FLIGHT
from vlmwatch.runtime import wiring


def in_flight(stack) -> int:
    return sum(j["status"] in IN_FLIGHT for j in jobs(stack))


def test_no_more_than_max_in_flight_executions_run_and_every_file_completes(stack, local, wire, emulator, clock):
    wire(MAX_IN_FLIGHT="2", POLL_BASE_SECONDS="5", POLL_CAP_SECONDS="5")
    for i in range(7):
        drop(stack, f"capped/{i}.txt", f"file {i}".encode())
    local.pump_ingest()
    assert len(emulator.executions) == 2 and in_flight(stack) == 2
    waiting = [j for j in jobs(stack) if j["status"] == "received"]
    assert len(waiting) == 5 and all("MaxInFlight" in j["last_poll_error"] for j in waiting)

    peak = 0
    for _ in range(40):
        clock.advance(5)
        local.step()
        peak = max(peak, in_flight(stack))
        if all(j["status"] == "delivered" for j in jobs(stack)):
            break
    assert peak <= 2
    assert [j["outcome"] for j in jobs(stack)] == ["completed"] * 7
    assert len(emulator.executions) == 7  # one each: waiting never cost an extra execution
    assert wiring.slots().used() == 0  # every slot given back


def test_a_leaked_slot_is_recounted_by_the_sweeper(stack, local, wire, emulator, clock):
    wire(MAX_IN_FLIGHT="1", POLL_BASE_SECONDS="5", POLL_CAP_SECONDS="5")
    slots = wiring.slots()
    assert slots.take()  # a submitter that died after taking its slot, before its claim
    drop(stack, "after-a-crash.txt", b"waits for the recount")
    local.pump_ingest()
    assert jobs(stack)[0]["status"] == "received"
    for _ in range(30):
        clock.advance(30)
        local.step()
    assert jobs(stack)[0]["outcome"] == "completed"
