"""The corrected PPO and RLHF-REINFORCE losses (droidft/methods/online_losses.py) against
mlx-lm-lora 5.10's, on hand-made scores: the bugs they fix are visible in the gradients."""

import mlx.core as mx
import pytest

from droidft.methods.online_losses import ppo_loss, rlhf_reinforce_logp_loss


def _ppo_grads(loss_fn, chosen, rejected, ref_chosen, ref_rejected):
    masks = mx.ones((len(chosen), 1)) * 5

    def total(c, r):
        return loss_fn(policy_chosen_score=c, policy_rejected_score=r, reference_chosen_score=ref_chosen,
                       reference_rejected_score=ref_rejected, chosen_masks=masks, rejected_masks=masks,
                       beta=0.1, epsilon=0.2)[0]

    return mx.grad(total, argnums=(0, 1))(chosen, rejected)


def test_ppo_pushes_every_chosen_answer_up_and_every_rejected_one_down():
    from mlx_lm_lora.trainer.ppo_trainer import ppo_loss as stock

    # two judged pairs at the reference; in the second the policy happens to like the rejected one more
    chosen, rejected = mx.array([-10.0, -14.0]), mx.array([-12.0, -11.0])
    d_chosen, d_rejected = _ppo_grads(ppo_loss, chosen, rejected, chosen, rejected)
    assert mx.all(d_chosen < 0).item() and mx.all(d_rejected > 0).item()  # descent: chosen up, rejected down
    s_chosen, _ = _ppo_grads(stock, chosen, rejected, chosen, rejected)
    assert s_chosen[1].item() > 0  # mlx-lm-lora pushes the second pair's chosen answer down


def test_ppo_kl_penalty_is_never_negative():
    from mlx_lm_lora.trainer.ppo_trainer import ppo_loss as stock

    scores, ref, masks = mx.array([-20.0, -25.0]), mx.array([-10.0, -11.0]), mx.ones((2, 1))
    args = dict(policy_chosen_score=scores, policy_rejected_score=scores, reference_chosen_score=ref,
                reference_rejected_score=ref, chosen_masks=masks, rejected_masks=masks, beta=0.1, epsilon=0.2)
    assert ppo_loss(**args)[3]["kl_penalty"].item() > 0
    assert stock(**args)[3]["kl_penalty"].item() < 0  # less likely than the reference = "negative KL"


def test_rlhf_advantage_is_held_constant():
    from mlx_lm_lora.trainer.rlhf_reinforce_trainer import _rlhf_reinforce_logp_loss as stock

    logps = mx.full((2, 6), -2.0)
    masks = mx.ones((2, 6), dtype=mx.bool_)
    rewards = mx.zeros((2,))  # no reward, policy == reference: nothing to learn

    def grad(loss_fn):
        return mx.grad(lambda lp: loss_fn(lp, mx.stop_gradient(lp), rewards, masks, 0.1)[0])(logps)

    assert mx.all(grad(rlhf_reinforce_logp_loss) == 0).item()
    assert mx.all(grad(stock) < 0).item()  # mlx-lm-lora reinforces every sampled token anyway
    good = mx.grad(lambda lp: rlhf_reinforce_logp_loss(lp, logps, mx.array([1.0, 0.0]), masks, 0.1)[0])(logps)
    assert mx.all(good[0] < 0).item() and mx.all(good[1] == 0).item()
    _, tokens, metrics = rlhf_reinforce_logp_loss(logps, logps, mx.array([1.0, 0.0]), masks, 0.1)
    assert tokens.item() == 12 and metrics["rewards"].item() == pytest.approx(0.5)
