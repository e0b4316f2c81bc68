"""The student refuses to train on a subset of the partitions it needs."""

from __future__ import annotations

import pytest

from miko_assets.sarcasm.readiness import LISTED_PER_STAGE, PartitionsNotReady, check_readiness, require_ready

REQUIRED = ["mmsd2-train-0000", "mmsd2-train-0001", "mmsd2-test-0000"]


def test_all_materialized_is_ready() -> None:
    stages = {"sarcasm_dataset": REQUIRED, "intentions": [*REQUIRED, "other-0000"]}
    readiness = require_ready(REQUIRED, stages)
    assert readiness.ready and readiness.missing == {}
    assert "all 3 partitions are materialized" in readiness.message


def test_missing_partitions_are_refused_with_a_message_listing_them() -> None:
    stages = {
        "captions": REQUIRED,
        "key_info": REQUIRED[:2],
        "intentions": REQUIRED[:1],
    }
    with pytest.raises(PartitionsNotReady) as refused:
        require_ready(REQUIRED, stages)
    message = str(refused.value)
    assert message.startswith("sarcasm_student refuses to train: 2 of its 3 required partitions")
    assert "  key_info: 1 missing: mmsd2-test-0000\n" in message
    assert "  intentions: 2 missing: mmsd2-test-0000, mmsd2-train-0001\n" in message
    assert "captions" not in message
    assert check_readiness(REQUIRED, stages).missing == {
        "key_info": ["mmsd2-test-0000"],
        "intentions": ["mmsd2-test-0000", "mmsd2-train-0001"],
    }


def test_long_lists_are_cut_with_a_count_and_nothing_selected_is_refused() -> None:
    required = [f"mmsd2-train-{i:04d}" for i in range(LISTED_PER_STAGE + 5)]
    readiness = check_readiness(required, {"intentions": []})
    assert not readiness.ready
    assert f"intentions: {LISTED_PER_STAGE + 5} missing:" in readiness.message
    assert "and 5 more" in readiness.message
    assert f"mmsd2-train-{LISTED_PER_STAGE:04d}" not in readiness.message

    with pytest.raises(PartitionsNotReady, match="no partitions are selected"):
        require_ready([], {"intentions": REQUIRED})
