"""Profile one GatedResnet forward+backward with torch.profiler (CPU or CUDA): where the time goes.

    python -m benchmarks.profile_block --device cuda --batch 64
"""

from __future__ import annotations

import argparse

import torch

import torch_impl


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--F", type=int, default=160)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--tf32", action="store_true")
    p.add_argument("--rows", type=int, default=20)
    args = p.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    torch.backends.cudnn.benchmark = True
    dev = args.device
    block = torch_impl.GatedResnet(args.F, conv="down_shifted_conv2d").to(dev)
    x = torch.randn(args.batch, args.F, args.size, args.size, device=dev)
    cot = torch.randn_like(x)
    block.initialize(torch.randn_like(x))
    xg = x.clone().requires_grad_(True)
    params = list(block.parameters())

    def step() -> None:
        out = block(xg)
        torch.autograd.grad((out * cot).sum(), [xg, *params])

    for _ in range(5):
        step()
    acts = [torch.profiler.ProfilerActivity.CPU]
    if dev.startswith("cuda"):
        acts.append(torch.profiler.ProfilerActivity.CUDA)
        torch.cuda.synchronize()
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(5):
            step()
        if dev.startswith("cuda"):
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if dev.startswith("cuda") else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=args.rows, max_name_column_width=70))


if __name__ == "__main__":
    main()
