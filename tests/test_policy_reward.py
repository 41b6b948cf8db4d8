"""PerFedRLNAS maths: REINFORCE gradients, rewards (eqs. 8-9), a two-armed toy problem."""

from __future__ import annotations

import numpy as np
import pytest

from pfednas.nas.policy import (
    PolicyOptimizer,
    PolicyState,
    argmax_indices,
    entropy,
    log_prob_gradient,
    probabilities,
    reinforce_update,
)
from pfednas.nas.reward import Outcome, round_rewards, simulated_round_time


def test_log_prob_gradient_matches_hand_computed_values() -> None:
    logits = np.array([0.0, np.log(3.0), 0.0, 0.0, 0.0])  # dims of sizes 2 and 3
    sizes = [2, 3]

    grad = log_prob_gradient(logits, sizes, [1, 0])

    # dim 0: p = (1/4, 3/4), chosen 1 -> (-1/4, 1/4); dim 1: p = 1/3 each, chosen 0
    np.testing.assert_allclose(grad, [-0.25, 0.25, 2 / 3, -1 / 3, -1 / 3])


def test_log_prob_gradient_equals_autograd() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    sizes = [3, 2, 4]
    logits = rng.normal(size=sum(sizes))
    choice = [2, 0, 1]
    t = torch.tensor(logits, requires_grad=True)
    logp = sum(torch.log_softmax(seg, 0)[k]
               for seg, k in zip(torch.split(t, sizes), choice, strict=True))
    logp.backward()

    np.testing.assert_allclose(log_prob_gradient(logits, sizes, choice), t.grad.numpy(),
                               atol=1e-12)


def test_sgd_update_moves_logits_by_lr_times_reward_times_gradient() -> None:
    state = PolicyState.uniform([2])

    new = reinforce_update(state, [2], [0], reward=0.5, opt=PolicyOptimizer("sgd", lr=2.0))

    np.testing.assert_allclose(new.logits, [0.5, -0.5])  # 2 * 0.5 * (1 - 0.5, 0 - 0.5)
    assert new.steps == 1


def test_adam_first_step_moves_each_logit_by_about_lr() -> None:
    state = PolicyState.uniform([2])

    new = reinforce_update(state, [2], [0], reward=0.01, opt=PolicyOptimizer("adam", lr=0.5))

    np.testing.assert_allclose(new.logits, [0.5, -0.5], atol=1e-5)


def test_probabilities_start_uniform_and_argmax_prefers_first_on_ties() -> None:
    state = PolicyState.uniform([3, 2])

    probs = probabilities(state.logits, [3, 2])

    np.testing.assert_allclose(probs[0], [1 / 3] * 3)
    assert argmax_indices(state.logits, [3, 2]) == [0, 0]
    assert entropy(state.logits, [3, 2]) == pytest.approx(np.log(3) + np.log(2))


@pytest.mark.parametrize("kind,lr", [("sgd", 1.0), ("adam", 0.05)])
def test_policy_concentrates_on_the_better_arm(kind: str, lr: float) -> None:
    rng = np.random.default_rng(0)
    opt = PolicyOptimizer(kind, lr=lr)
    state, history = PolicyState.uniform([2]), {}
    means = (0.6, 0.8)  # arm 1 is better
    for _ in range(300):
        p = probabilities(state.logits, [2])[0]
        arm = int(rng.choice(2, p=p))
        acc = means[arm] + rng.normal(0, 0.05)
        rewards, history = round_rewards({0: Outcome(acc, 1.0)}, {**history, 1: 0.7}, 0.0)
        state = reinforce_update(state, [2], [arm], rewards[0], opt)

    assert probabilities(state.logits, [2])[0][1] > 0.9


def test_rewards_of_a_constructed_round() -> None:
    history = {7: 0.5}
    outcomes = {0: Outcome(0.9, 10.0), 1: Outcome(0.6, 30.0), 2: Outcome(0.0, 0.0, True)}

    rewards, new_history = round_rewards(outcomes, history, lambda_time=0.01)

    baseline = (0.5 + 0.9 + 0.6) / 3  # latest accuracy of every client seen, this round's in
    assert new_history == {7: 0.5, 0: 0.9, 1: 0.6}
    assert rewards[0] == pytest.approx(0.9 - baseline)
    assert rewards[1] == pytest.approx(0.6 - baseline - 0.01 * (30 - 10))
    # eq. 9: over budget -> Acc 0, RT = the round's max, phi = 1
    assert rewards[2] == pytest.approx(0.0 - baseline - 0.01 * (30 - 10) - 1.0)


def test_simulated_round_time() -> None:
    rt = simulated_round_time(compute_seconds=2.0, speed_factor=3.0, bytes_moved=25_000_000,
                              bandwidth_bps=100e6)

    assert rt == pytest.approx(6.0 + 2.0)


def test_a_deployments_baseline_limits_what_one_claimed_accuracy_does_to_the_others() -> None:
    # Prepare: the review's case (issue 43, finding 6): three honest clients, and a silo
    # claiming val_accuracy 1.0
    from pfednas.nas.reward import Outcome, round_rewards

    honest = {0: Outcome(0.60, 10.0), 1: Outcome(0.52, 10.0), 2: Outcome(0.68, 10.0)}
    liar = {3: Outcome(1.0, 10.0)}

    # Execute: the paper's mean baseline and a deployment's median, with and without the claim
    mean_before, _ = round_rewards(honest, {}, 0.0)
    mean_after, _ = round_rewards({**honest, **liar}, {}, 0.0)
    median_before, _ = round_rewards(honest, {}, 0.0, robust=True)
    median_after, _ = round_rewards({**honest, **liar}, {}, 0.0, robust=True)

    # Assert: the claim moves each honest reward by (1.0 - 0.60) / 4 = 0.10 through the mean,
    # by half the gap between two honest neighbours (0.04) through the median
    for cid in honest:
        assert mean_before[cid] - mean_after[cid] == pytest.approx(0.10)
        assert median_before[cid] - median_after[cid] == pytest.approx(0.04)
