"""The path a GPU run takes, on the CPU: ``privacy.kernels triton`` (Triton's interpreter) against
``privacy.kernels torch``, through whole training steps and one evaluation.

Same seed, same batches: every loss term, the gradient of every net after a step, and the
four-setting metrics must agree within float tolerance. The Triton kernels reorder reductions
(BatchNorm statistics, SSIM windows, triplet distances), so exact equality is not expected:
the first step's losses within 1e-5 relative, later steps' within 1e-3 (Adam turns float noise in
near-zero gradients into parameter changes of the learning rate's size), gradients within 1e-2
relative to each net's gradient norm, ranks and mAP within one query's worth, PSNR within 1e-2 dB
and SSIM within 1e-3.
"""
import math

import pytest
import torch

from torchreid_privacy import bridge, kernels

STEPS = 2
# mosaic (the default desensitizer), generators with BatchNorm+LeakyReLU, batch-hard triplet, SSIM/PSNR
FUSED_IN_THIS_RUN = {"mosaic", "bn_leaky_relu", "batch_hard_triplet", "ssim_psnr"}


def _run(tiny_cfg, backend):
    from torchreid_privacy.builder import build_privacy_engine

    engine = build_privacy_engine(tiny_cfg("privacy.mode", "joint", "privacy.kernels", backend,
                                           "privacy.generator.num_downs", "3", "privacy.decoder.num_downs", "3"))
    report = kernels.backend_report()
    loader = iter(engine.train_loader)
    losses, grads = [], {}
    engine.set_model_mode("train")
    for _ in range(STEPS):
        losses.append(engine.forward_backward(next(loader)))
    for name, net in bridge.engine_models(engine).items():
        grads[name] = torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])
    metrics = engine.evaluate(engine.val_target)
    metrics["queries"] = len(engine.test_loader[engine.val_target]["query"].dataset)
    kernels.set_kernel_mode(None)
    return report, losses, grads, metrics


def test_triton_path_on_cpu_matches_torch(tiny_cfg):
    torch.manual_seed(0)
    rep_t, loss_t, grad_t, met_t = _run(tiny_cfg, "triton")
    torch.manual_seed(0)
    rep_r, loss_r, grad_r, met_r = _run(tiny_cfg, "torch")
    assert FUSED_IN_THIS_RUN <= {op for op, b in rep_t.items() if b == "triton"}, rep_t
    assert set(rep_r.values()) == {"torch"}
    for step, (a, b) in enumerate(zip(loss_t, loss_r)):
        assert a.keys() == b.keys()
        for k in a:
            tol = 1e-5 if step == 0 else 1e-3
            assert math.isclose(a[k], b[k], rel_tol=tol, abs_tol=tol), (step, k, a[k], b[k])
    assert grad_t.keys() == grad_r.keys() and {"model", "generator", "decoder", "disc_op", "disc_pr"} <= set(grad_t)
    for name in grad_t:
        scale = grad_r[name].norm().item() + 1e-12
        assert (grad_t[name] - grad_r[name]).norm().item() / scale < 1e-2, name
    queries = met_r["queries"]
    for setting, r in met_r["rank"].items():
        assert abs(met_t["rank"][setting]["R1"] - r["R1"]) <= 1.0 / queries + 1e-9, setting
        assert met_t["rank"][setting]["mAP"] == pytest.approx(r["mAP"], abs=1.0 / queries)
    for pair, m in met_r["image"].items():
        assert met_t["image"][pair]["psnr"] == pytest.approx(m["psnr"], abs=1e-2), pair
        assert met_t["image"][pair]["ssim"] == pytest.approx(m["ssim"], abs=1e-3), pair
