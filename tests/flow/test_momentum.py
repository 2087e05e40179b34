"""`optimizer=momentum` is the WoW paper's heavy ball, v <- g + m v; x <- x - tau v, exactly."""

import torch


def test_the_momentum_config_is_the_papers_heavy_ball_recurrence():
    from hydra import compose as hydra_compose, initialize_config_module
    from hydra.utils import instantiate

    with initialize_config_module("dsflow.configs", version_base=None):
        cfg = hydra_compose("config", ["optimizer=momentum", "optimizer.lr=0.3", "optimizer.momentum=0.8"])
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 3, generator=g, dtype=torch.float64)
    x = torch.randn(5, 3, generator=g, dtype=torch.float64).requires_grad_()
    opt = instantiate(cfg.optimizer)([x])
    ref, v = x.detach().clone(), torch.zeros(5, 3, dtype=torch.float64)
    for _ in range(6):  # a quadratic with a curvature that changes the gradient every step
        opt.zero_grad()
        (((x - a) ** 2).sum() + (x ** 4).sum()).backward()
        opt.step()
        grad = 2 * (ref - a) + 4 * ref ** 3
        v = grad + 0.8 * v
        ref = ref - 0.3 * v
        torch.testing.assert_close(x.detach(), ref, rtol=1e-13, atol=1e-13)
