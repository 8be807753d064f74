#!/usr/bin/env python3
"""Writes the torch-saved golden files that tests/engine/pytorch_bin_test.cc reads.

Run with Debian 12's python3-torch (torch 1.13.1): /usr/bin/python3 make_golden.py
Values are small integers / 4 (exact in every dtype) so the C++ test can recompute them:
element i of a tensor named with seed s is ((i * 7 + s) % 23 - 11) / 4.
"""
import collections
import os

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def values(shape, seed, dtype):
    n = 1
    for d in shape:
        n *= d
    i = torch.arange(n, dtype=torch.int64)
    return (((i * 7 + seed) % 23 - 11).to(torch.float64) / 4).to(dtype).reshape(shape)


def save(obj, name, **kw):
    torch.save(obj, os.path.join(HERE, name), **kw)


class Evil:
    """Unpickling this runs a command: the reader must refuse it by name, never run it."""

    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return (self.fn, (self.arg,))


def main():
    # A plain dict of fresh contiguous tensors: what WritePytorchBin writes byte for byte.
    save({"a": values([2, 3], 1, torch.float32),
          "b": values([4], 2, torch.float16),
          "c": values([3, 1, 2], 3, torch.bfloat16),
          "scalar": values([], 4, torch.float32)}, "plain_dict.bin")

    # A module's state_dict (an OrderedDict with _metadata, set by BUILD), tied and shared
    # storages, a view at a non-zero storage offset, fp16 and bf16, a Parameter.
    lin = torch.nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.copy_(values([2, 3], 5, torch.float32))
        lin.bias.copy_(values([2], 6, torch.float32))
    sd = lin.state_dict()
    sd["tied"] = sd["weight"]                       # the same tensor object twice
    base = values([10], 7, torch.bfloat16)
    sd["view"] = base[3:7]                          # storage offset 3 of 10
    sd["row"] = sd["weight"][1]                     # shares weight's storage, offset 3
    sd["half"] = values([2, 2], 8, torch.float16)
    sd["param"] = torch.nn.Parameter(values([3], 9, torch.float32), requires_grad=False)
    save(sd, "state_dict.bin")

    # Refused: the legacy format, a non-contiguous tensor, int64, code execution.
    save({"a": values([2, 3], 1, torch.float32)}, "legacy.bin",
         _use_new_zipfile_serialization=False)
    save({"t": values([2, 3], 1, torch.float32).t()}, "transposed.bin")
    save({"ids": torch.arange(4)}, "int64.bin")
    save({"x": Evil(os.system, "echo pwned")}, "os_system.bin")
    save({"x": Evil(eval, "1+1")}, "builtins_eval.bin")


if __name__ == "__main__":
    main()
