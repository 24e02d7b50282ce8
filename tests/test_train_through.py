"""Training goes through the publication channel (``privacy.publish.train_through``).

``tests/test_publish.py`` checks ``through_channel`` itself; here the engine's training step is run
with the setting on and off, on the same batch from the same initial weights: on, the step
publishes P (one JPEG round per step) and G's gradient comes back through the differentiable
stand-in; off, neither happens, and G's gradient differs.
"""
import pytest
import torch

from torchreid_privacy.publish import PublishChannel
from torchreid_privacy.publish import through as through_module

MODES = {"joint": ["privacy.mode", "joint"],  # _joint_step: C sees P as published
         "sealed": ["privacy.mode", "joint", "privacy.recovery", "sealed"]}  # sealed_step: C (and A)


def _one_step(tiny_cfg, monkeypatch, mode, train_through):
    """G's gradient after one training step, the loss terms, and what the channel saw."""
    from torchreid_privacy.builder import build_privacy_engine

    torch.manual_seed(0)
    engine = build_privacy_engine(tiny_cfg(*MODES[mode], "privacy.publish.train_through", str(train_through).lower()))
    engine.set_model_mode("train")
    torch.manual_seed(1)
    batch = next(iter(engine.train_loader))
    seen = {"publish": 0, "stand_in": 0, "backward": 0}
    publish, stand_in = PublishChannel.publish, through_module.differentiable_channel

    def counted_publish(self, x01):
        seen["publish"] += 1
        return publish(self, x01)

    def counted_stand_in(x01, channel):
        seen["stand_in"] += 1
        y = stand_in(x01, channel)
        if y.requires_grad:  # G's gradient passes through here on its way back from C's loss

            def backward(grad):
                seen["backward"] += 1
                return grad

            y.register_hook(backward)
        return y

    with monkeypatch.context() as patch:  # undone after the step: the next call counts afresh
        patch.setattr(PublishChannel, "publish", counted_publish)
        patch.setattr(through_module, "differentiable_channel", counted_stand_in)
        torch.manual_seed(2)
        out = engine.forward_backward(batch)
    grad = torch.cat([p.grad.flatten() for p in engine.nets["generator"].parameters() if p.grad is not None])
    return grad, out, seen


@pytest.mark.parametrize("mode", sorted(MODES))
def test_the_training_step_sees_p_as_published_and_g_learns_through_the_channel(tiny_cfg, monkeypatch, mode):
    on, on_out, on_seen = _one_step(tiny_cfg, monkeypatch, mode, True)
    again, again_out, _ = _one_step(tiny_cfg, monkeypatch, mode, True)
    off, off_out, off_seen = _one_step(tiny_cfg, monkeypatch, mode, False)
    assert on_seen == {"publish": 1, "stand_in": 1, "backward": 1}, on_seen  # the engine applies the channel
    assert off_seen == {"publish": 0, "stand_in": 0, "backward": 0}, off_seen  # ... only when asked to
    # the same setting twice gives the same gradient to the bit: the difference below is the channel's
    assert torch.equal(on, again) and on_out == again_out
    assert on.shape == off.shape and on.abs().sum() > 0 and off.abs().sum() > 0
    rel = float((on - off).norm() / off.norm())
    assert rel > 0.1, f"G's gradient with and without the channel differs by {rel:.2e} (relative; measured: about 1)"
    assert on_out["reid_p"] != off_out["reid_p"]  # C scored the JPEG, not the float P
    assert on_out["rec_p"] == off_out["rec_p"]  # L1(P, M) stays on the raw output: the same P
