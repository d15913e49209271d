import torch
from reward_factories import rankings_jsonl

# Tiny models run fastest on one thread, and the CPUs are shared with other test runs.
torch.set_num_threads(1)

__all__ = ["rankings_jsonl"]
