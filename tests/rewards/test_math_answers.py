"""math-verify scoring for DeepMath / MATH500 / AIME rows: right answers score 1 in any thread, within a time bound."""

import random
import threading

import pytest

from sspo_verl.rewards import compute_score, math_answers, settings
from sspo_verl.rewards.verifier_pool import close_pools

SRC = "HuggingFaceH4/MATH-500"
KNOWN = [
    ("... so the answer is \\boxed{\\frac{5}{6}}.", "\\frac{5}{6}", 1.0),
    ("\\boxed{0.5}", "\\frac{1}{2}", 1.0),
    ("\\boxed{4}", "4", 1.0),
    ("\\boxed{5}", "4", 0.0),
    ("\\boxed{\\frac{5}{7}}", "\\frac{5}{6}", 0.0),
    ("no answer here", "24", 0.0),
    ("The answer is $\\frac{1}{2}$.", "0.5", 1.0),  # no \\boxed: math-verify reads the response's tail
    ("\\boxed{3} first, then I changed my mind: \\boxed{\\{1, 2\\}}", "\\{1,2\\}", 1.0),  # the last \\boxed counts
]


@pytest.mark.parametrize("response,truth,score", KNOWN)
def test_known_cases(response, truth, score):
    assert compute_score(SRC, response, truth)["score"] == score


def test_right_answers_score_one_in_threads():
    """verl scores in threads (run_in_executor); math-verify's own timeout (signal.alarm) raised there and the
    old catch-all turned every answer into 0."""
    results = [None] * len(KNOWN)

    def score(i, response, truth):
        results[i] = compute_score(SRC, response, truth)["score"]

    threads = [threading.Thread(target=score, args=(i, r, t)) for i, (r, t, _) in enumerate(KNOWN)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [s for _, _, s in KNOWN]


def test_malformed_outputs_score_zero_without_errors(fresh_error_budget):
    rng = random.Random(1)
    alphabet = "\\{}$^_()[]frac boxed 0123456789+-*/=\n"
    for _ in range(200):
        junk = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        result = compute_score(SRC, junk, "24")
        assert result["score"] in (0.0, 1.0) and result["scorer_error"] == 0.0, junk
    assert fresh_error_budget.errors == 0


@pytest.mark.parametrize("response", ["\\boxed{9^{9^{9^{9}}}}", "\\boxed{(x+1)^{100000}}"])
def test_an_answer_that_runs_too_long_times_out_and_scores_zero(monkeypatch, response, fresh_error_budget):
    monkeypatch.setenv(settings.TIMEOUT_ENV, "0.5")
    try:
        result = compute_score(SRC, response, "\\frac{1}{2}")
        assert result == {"score": 0.0, "acc": 0.0, "acc_tolerant": 0.0, "timeout": 1.0, "scorer_error": 0.0}
        assert fresh_error_budget.timeouts == 1 and fresh_error_budget.errors == 0
        # the worker survived its soft timeout and still scores
        assert compute_score(SRC, "\\boxed{0.5}", "\\frac{1}{2}")["score"] == 1.0
        assert math_answers.pool().killed == 0 and math_answers.pool().started == 1
    finally:
        close_pools()


def test_an_answer_the_parser_chokes_on_is_malformed_not_an_error(fresh_error_budget, caplog):
    """math-verify raises SympifyError reading Arabic-Indic digits: that is the answer's fault, logged once."""
    for _ in range(3):
        assert compute_score(SRC, "so the answer is \u0661\u0668", "18") == {
            "score": 0.0, "acc": 0.0, "acc_tolerant": 0.0, "timeout": 0.0, "scorer_error": 0.0}
    assert fresh_error_budget.unreadable == 3 and fresh_error_budget.errors == 0
    logged = [r.getMessage() for r in caplog.records if "could not read" in r.getMessage()]
    assert len(logged) == 1 and "SympifyError" in logged[0]


def test_an_unreadable_reference_is_a_counted_error_with_its_cause(fresh_error_budget, caplog):
    for _ in range(2):
        assert compute_score(SRC, "\\boxed{4}", "")["scorer_error"] == 1.0
    assert fresh_error_budget.errors == 2
    assert [r.getMessage() for r in caplog.records].count(next(r.getMessage() for r in caplog.records)) == 1
    assert "reference answer is empty" in caplog.text


@pytest.mark.parametrize("breakage,message", [
    ("sys.modules['math_verify'] = None", r"math rewards need math-verify .*pip install 'sspo-verl\[math\]'"),
    ("import math_verify; math_verify.parse = lambda *a, **k: []", r"self-test failed .*LaTeX parser is broken"),
])
def test_a_broken_math_verify_stops_the_run(monkeypatch, breakage, message):
    """A worker that cannot import math-verify, or whose parser is broken (every answer would score 0), is a
    RewardSetupError on the first answer, never a 0."""
    from sspo_verl.rewards.errors import RewardSetupError

    monkeypatch.setattr(math_answers, "WORKER", [*math_answers.WORKER[:1], "-c",
                                                 f"import sys; {breakage}\n"
                                                 "from sspo_verl.rewards import math_worker, verifier_pool\n"
                                                 "sys.exit(verifier_pool.serve(math_worker.setup))"])
    try:
        with pytest.raises(RewardSetupError, match=message):
            compute_score(SRC, "\\boxed{4}", "4")
    finally:
        close_pools()
