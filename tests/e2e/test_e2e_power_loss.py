"""Power loss, end to end, 5 rounds per version (power_loss_chain.py): SIGKILL while charging; restart
with the EV still plugged in -> the same transaction resumes; SIGKILL; the EV leaves meanwhile ->
Ended / StopTransaction with PowerLoss. Every transaction starts and ends once, 2.0.1 seqNos are
contiguous, 1.6 messages carry the CSMS's transactionId, the register never goes backwards."""

from __future__ import annotations

import pytest
from power_loss_chain import run_chain

ROUNDS = 5


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_e2e_power_loss_resume_then_end_five_rounds(version: str) -> None:
    figures = await run_chain(version, ROUNDS)
    assert figures.problems == []
    assert figures.transactions == ROUNDS
    assert figures.resumed == ROUNDS
    assert figures.ended_power_loss == ROUNDS
