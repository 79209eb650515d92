"""What the work costs: credits recorded per job and per month, capped by MonthlyCreditBudget."""

from __future__ import annotations

from datetime import UTC, datetime

from helpers import drop, jobs, make_pdf
from vlmwatch.adapters.breaker import Reason
from vlmwatch.runtime import wiring


def settle(local, clock, rounds: int = 12) -> None:
    for _ in range(rounds):
        local.step()
        clock.advance(30)


def test_each_delivered_job_records_its_credits_once_and_the_month_adds_them_up(stack, local, wire, clock):
    wire()
    drop(stack, "two-pages.pdf", make_pdf("one", "two"), "application/pdf")
    drop(stack, "note.txt", b"one element")
    settle(local, clock)
    rows = {j["key"]: j for j in jobs(stack)}
    assert rows["two-pages.pdf"]["credits_used"] == 2 and rows["note.txt"]["credits_used"] == 1
    assert rows["two-pages.pdf"]["elements_processed"] >= 1
    local.pump_stream()  # a replayed stream record delivers nothing again, and counts nothing again
    assert wiring.ledger().total() == 3


def test_a_spent_monthly_budget_holds_new_files_and_a_new_month_releases_them(stack, local, wire, clock):
    wire(MONTHLY_CREDIT_BUDGET="2", SUBMIT_DEADLINE_SECONDS=str(40 * 86400))  # files may wait out the month
    for name in ("a.txt", "b.txt"):
        drop(stack, name, b"costs one credit")
    settle(local, clock)
    assert [j["outcome"] for j in jobs(stack)] == ["completed"] * 2
    state = wiring.breaker().state(fresh=True)
    assert state.open and state.reason == Reason.BUDGET and "MonthlyCreditBudget is 2" in (state.message or "")

    drop(stack, "c.txt", b"waits for next month")
    settle(local, clock)
    (waiting,) = [j for j in jobs(stack) if j["key"] == "c.txt"]
    assert waiting["status"] == "received" and "monthly credit budget" in waiting["last_poll_error"]

    first_of_next_month = datetime(2027, 2, 1, tzinfo=UTC).timestamp()
    clock.advance(first_of_next_month - clock())
    settle(local, clock, rounds=20)
    (done,) = [j for j in jobs(stack) if j["key"] == "c.txt"]
    assert done["outcome"] == "completed"
