"""Corrected losses for two of mlx-lm-lora 5.10's online trainers, swapped in at the loss
boundary (as preference.cpo_loss is for CPO); the trainers, their metrics and everything
around them stay mlx-lm-lora's.

- PPO (`ppo_trainer.ppo_loss`, passed as the trainer's `loss_fn`): mlx-lm-lora takes the
  advantage from the policy's own log-probabilities (chosen minus rejected, normalised over
  the batch), so the judge only orders each pair and about half of the chosen answers get a
  negative advantage and are pushed down; and its "KL penalty" is beta x the mean
  log-ratio to the reference, which can go negative and is minimised by making every sampled
  answer less likely. On the demo that collapses the policy (sampled reward 0.19 -> 0.00).
  Here the advantage is the judge's verdict (+1 chosen, -1 rejected) and the penalty is
  beta x 0.5 x log-ratio^2 (a non-negative KL estimate); the clipped ratio objective against
  the reference is unchanged.
- RLHF-REINFORCE (`rlhf_reinforce_trainer._rlhf_reinforce_logp_loss`): REINFORCE's gradient is
  advantage x grad log pi with the advantage held constant; mlx-lm-lora differentiates through
  the advantage's KL part as well, which adds beta x log pi x grad log pi: with log pi about -30
  for a short answer it reinforces every sampled answer several times more strongly than its
  reward. Here the advantage is `stop_gradient(reward - beta x KL)`, as its docstring says.
"""

from __future__ import annotations

import mlx.core as mx


def ppo_loss(policy_chosen_score, policy_rejected_score, reference_chosen_score, reference_rejected_score,
             chosen_masks, rejected_masks, beta: float = 0.1, epsilon: float = 0.2):
    chosen_log_ratios = policy_chosen_score - reference_chosen_score
    rejected_log_ratios = policy_rejected_score - reference_rejected_score
    chosen_ratios, rejected_ratios = mx.exp(chosen_log_ratios), mx.exp(rejected_log_ratios)
    # advantage +1 for the judge's choice, -1 for the other: PPO-clip on each side
    chosen_losses = -mx.minimum(chosen_ratios, mx.clip(chosen_ratios, 1.0 - epsilon, 1.0 + epsilon))
    rejected_losses = -mx.minimum(-rejected_ratios, -mx.clip(rejected_ratios, 1.0 - epsilon, 1.0 + epsilon))
    policy_loss = mx.mean(chosen_losses) + mx.mean(rejected_losses)
    kl_penalty = beta * 0.5 * (mx.mean(chosen_log_ratios ** 2) + mx.mean(rejected_log_ratios ** 2))
    ratios = mx.concatenate([chosen_ratios, rejected_ratios])
    chosen_reward = beta * chosen_log_ratios
    rejected_reward = beta * rejected_log_ratios
    metrics = {
        "policy_loss": policy_loss, "kl_penalty": kl_penalty,
        "advantages_mean": mx.array(0.0),  # +1 and -1 for every pair
        "ratios_mean": mx.mean(ratios),
        "clip_fraction": mx.mean((mx.abs(ratios - 1.0) > epsilon).astype(mx.float32)),
        "policy_chosen_logps": mx.mean(policy_chosen_score),
        "policy_rejected_logps": mx.mean(policy_rejected_score),
        "reference_chosen_logps": mx.mean(reference_chosen_score),
        "reference_rejected_logps": mx.mean(reference_rejected_score),
        "accuracies": mx.mean((chosen_reward > rejected_reward).astype(mx.float32)),
        "margins": mx.mean(chosen_reward - rejected_reward),
        "chosen_logits_mean": mx.mean(policy_chosen_score),
        "rejected_logits_mean": mx.mean(policy_rejected_score),
    }
    reward = mx.stack([mx.mean(chosen_reward), mx.mean(rejected_reward)])
    return policy_loss + kl_penalty, reward, chosen_masks.sum() + rejected_masks.sum(), metrics


@mx.compile
def rlhf_reinforce_logp_loss(policy_log_probs, ref_log_probs, rewards, masks, beta: float):
    policy_log_probs = mx.where(masks, policy_log_probs.astype(mx.float32), 0)
    ref_log_probs = mx.where(masks, mx.stop_gradient(ref_log_probs.astype(mx.float32)), 0)
    kl_penalty = (policy_log_probs - ref_log_probs).sum(axis=-1)
    advantages = mx.stop_gradient(rewards.astype(mx.float32) - beta * kl_penalty)
    token_count = masks.sum()
    loss = -(advantages * policy_log_probs.sum(axis=-1)).sum() / mx.maximum(token_count, 1)
    metrics = {
        "rewards": mx.mean(rewards),
        "kl_penalty": mx.mean(kl_penalty),
        "advantages": mx.mean(advantages),
        "policy_logps": mx.sum(policy_log_probs) / mx.maximum(token_count, 1),
        "ref_logps": mx.sum(ref_log_probs) / mx.maximum(token_count, 1),
    }
    return loss, token_count, metrics
