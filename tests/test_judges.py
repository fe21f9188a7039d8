"""Judges of the online methods without training: reward functions, a model's probabilities,
and a person through the store (the worker's wait, deadlines, fallbacks, who may judge)."""

import math
import threading
import time

import pytest

from droidft import judges, rewards, store
from droidft.judges import HumanJudge, ModelJudge, Pair, RewardJudge, StopWaiting
from droidft.security import AccessDenied

FRUITS = "apple|fig|kiwi|plum"


def test_reward_judge_prefers_the_higher_reward_and_skips_ties():
    judge = RewardJudge(rewards.resolve(["droidft_demo_reward"]))
    verdicts = judge.compare([
        Pair("Name three fruits.", "I like tea.", "apple, fig and kiwi.", FRUITS),
        Pair("Name three fruits.", "apple, fig and kiwi.", "blorp.", FRUITS),
        Pair("Name three fruits.", "I like tea.", "Yes.", FRUITS),  # both 0: no preference
    ])
    assert [v.preferred for v in verdicts] == [1, 0, None]
    assert verdicts[0].scores == (0.0, 1.0) and verdicts[0].judge == "reward"
    weighted = RewardJudge(rewards.resolve(["droidft_demo_reward", "answer_similarity"]), [2.0, 0.0])
    assert weighted.compare([Pair("q", "apple, fig and kiwi.", "x", FRUITS)])[0].scores[0] == 2.0


def test_model_judge_reads_probabilities_in_both_orders(demo_model):
    from mlx_lm import load

    model, tokenizer = load(str(demo_model))
    judge = ModelJudge(model, tokenizer)
    first, second = "apple, fig and kiwi.", "I do not know."
    p = judge.prob_first("Name three fruits.", first, second)
    q = judge.prob_first("Name three fruits.", second, first)
    assert 0.0 < p < 1.0 and 0.0 < q < 1.0
    verdict, = judge.compare([Pair("Name three fruits.", first, second)])
    expected = 0.5 * (p + 1 - q)  # position bias cancels: swapping the pair swaps the verdict
    assert verdict.scores[0] == pytest.approx(10 * expected, rel=1e-4)
    assert verdict.preferred == (0 if expected > 0.5 else 1)
    swapped, = judge.compare([Pair("Name three fruits.", second, first)])
    assert swapped.preferred == 1 - verdict.preferred
    with pytest.raises(KeyError):  # a prompt with other placeholders is refused by format
        ModelJudge(model, tokenizer, "{nope}").prob_first("q", "a", "b")


def _decide_when_pending(run_id, choices, by="owner"):
    """A person in another tab: waits for the pairs and picks `choices` in order."""
    def act():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pending = judges.open_pairs(run_id)
            if len(pending) == len(choices):
                for row, choice in zip(pending, choices):
                    if choice != "leave":
                        assert judges.submit(row["id"], choice, "owner", {}, who="test")
                return
            time.sleep(0.05)

    thread = threading.Thread(target=act)
    thread.start()
    return thread


def test_human_judge_waits_for_a_person_and_gives_the_rest_to_the_fallback():
    fallback = RewardJudge(rewards.resolve(["droidft_demo_reward"]))
    judge = HumanJudge("r1", timeout=3.0, fallback=fallback, step=lambda: 7, log=lambda m: None)
    pairs = [Pair("Name three fruits.", "x", "y", FRUITS),
             Pair("Name three fruits.", "a", "b", FRUITS),
             Pair("Name three fruits.", "I like tea.", "apple, fig and kiwi.", FRUITS)]
    person = _decide_when_pending("r1", [1, None, "leave"])
    started = time.monotonic()
    verdicts = judge.compare(pairs)
    person.join()
    assert time.monotonic() - started < 10  # the deadline ended the wait
    assert [v.preferred for v in verdicts] == [1, None, 1]
    assert [v.judge for v in verdicts] == ["human", "reward (fallback)", "reward (fallback)"]
    rows = store.judgments(run_id="r1")
    assert [r["status"] for r in rows] == ["decided", "skipped", "expired"]
    assert rows[0]["choice"] == 1 and rows[0]["step"] == 7 and rows[0]["decided_by"] == "owner · test"
    assert judge.decided == 1 and judge.timed_out == 1
    # too late: an expired pair cannot be decided any more
    assert not judges.submit(rows[2]["id"], 0, "owner", {})


def test_human_judge_without_fallback_skips_and_a_stop_ends_the_wait():
    judge = HumanJudge("r2", timeout=0.5, fallback=None, log=lambda m: None)
    verdict, = judge.compare([Pair("p", "a", "b")])
    assert verdict.preferred is None and all(math.isnan(s) for s in verdict.scores)
    stopping = HumanJudge("r3", timeout=600, should_stop=lambda: True, log=lambda m: None)
    with pytest.raises(StopWaiting):
        stopping.compare([Pair("p", "a", "b")])
    assert [r["status"] for r in store.judgments(run_id="r3")] == ["cancelled"]
    assert judges.open_pairs("r3") == []


def test_who_may_judge_is_checked_where_the_choice_is_recorded(monkeypatch):
    ids = store.add_judgments("r4", 1, [("p", "a", "b")] * 3, time.time() + 60)
    assert judges.may_judge(None, {}) and judges.may_judge("viewer", {})  # local mode: the owner's machine
    monkeypatch.setenv("DROIDFT_LAN", "1")
    assert judges.may_judge("owner", {}) and not judges.may_judge("viewer", {})
    assert not judges.may_judge(None, {"viewers_may_judge": True})
    with pytest.raises(AccessDenied, match="Only the owner"):
        judges.submit(ids[0], 0, "viewer", {"viewers_may_judge": False})
    with pytest.raises(AccessDenied):
        judges.submit(ids[0], 0, None, {"viewers_may_judge": True})
    assert [r["status"] for r in store.judgments(ids=ids)] == ["pending"] * 3
    assert judges.submit(ids[0], 1, "viewer", {"viewers_may_judge": True}, who="10.0.0.7")
    assert judges.submit(ids[1], 0, "owner", {})
    with pytest.raises(ValueError, match="choice"):
        judges.submit(ids[2], 2, "owner", {})
    assert not judges.submit(ids[0], 0, "owner", {})  # decided once, and only once
    row = store.judgments(ids=[ids[0]])[0]
    assert (row["choice"], row["decided_by"]) == (1, "viewer · 10.0.0.7")
    store.delete_run("r4")
    assert store.judgments(run_id="r4") == []
