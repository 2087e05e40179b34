"""`small_model_threads`: one intra-op thread while a small network trains on the CPU."""

import torch

from dsflow.models.training import SMALL_MODEL_PARAMETERS, small_model_threads


def test_small_cpu_model_trains_on_one_thread_and_the_setting_is_restored():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with small_model_threads(torch.nn.Linear(4, 4), "cpu"):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        big = torch.nn.Linear(SMALL_MODEL_PARAMETERS, 1, bias=False)  # exactly the threshold: not small
        with small_model_threads(big, "cpu"):
            assert torch.get_num_threads() == 2
        try:
            with small_model_threads(torch.nn.Linear(4, 4), "cpu"):
                raise RuntimeError("boom")
        except RuntimeError:
            pass
        assert torch.get_num_threads() == 2  # restored after an error too
    finally:
        torch.set_num_threads(before)
