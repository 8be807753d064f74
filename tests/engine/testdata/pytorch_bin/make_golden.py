#!/usr/bin/env python3
"""Writes the torch-saved golden files that tests/engine/pytorch_bin_test.cc reads.

Run with Debian 12's python3-torch (torch 1.13.1): /usr/bin/python3 make_golden.py
Values are small integers / 4 (exact in every dtype) so the C++ test can recompute them:
element i of a tensor named with seed s is ((i * 7 + s) % 23 - 11) / 4.
"""
import collections
import json
import os
import zipfile

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

    # Protocol 4 (SHORT_BINUNICODE, MEMOIZE, FRAME, STACK_GLOBAL) instead of torch's default 2.
    save({"a": values([2, 3], 1, torch.float32)}, "protocol4.bin", pickle_protocol=4)
    # The same archive rewritten by Python's zipfile with newer torch's extra entries (byteorder,
    # .data/serialization_id) under "archive/": no data descriptors, no 64-byte alignment.
    rezip("protocol4.bin", "rezipped.bin", zipfile.ZIP_STORED, b"little")
    rezip("protocol4.bin", "big_endian.bin", zipfile.ZIP_STORED, b"big")
    rezip("protocol4.bin", "deflated.bin", zipfile.ZIP_DEFLATED, b"little")

    # A tiny model directory as mamba_ssm's save_pretrained writes it: its config.json and the
    # state dict, lm_head.weight tied to backbone.embedding.weight (one tensor, saved twice).
    torch.manual_seed(0)
    d, e, n, r, k, v = 8, 16, 4, 1, 4, 16
    sd = collections.OrderedDict()
    sd["backbone.embedding.weight"] = torch.randn(v, d) * 0.5
    m = "backbone.layers.0.mixer."
    sd[m + "A_log"] = torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(e, 1)
    sd[m + "D"] = torch.ones(e) + 0.1 * torch.randn(e)
    sd[m + "in_proj.weight"] = torch.randn(2 * e, d) * 0.3
    sd[m + "conv1d.weight"] = torch.randn(e, 1, k) * 0.3
    sd[m + "conv1d.bias"] = torch.randn(e) * 0.1
    sd[m + "x_proj.weight"] = torch.randn(r + 2 * n, e) * 0.3
    sd[m + "dt_proj.weight"] = torch.randn(e, r) * 0.3
    sd[m + "dt_proj.bias"] = torch.randn(e) * 0.1 - 2
    sd[m + "out_proj.weight"] = torch.randn(d, e) * 0.3
    sd["backbone.layers.0.norm.weight"] = 1 + 0.1 * torch.randn(d)
    sd["backbone.norm_f.weight"] = 1 + 0.1 * torch.randn(d)
    sd["lm_head.weight"] = sd["backbone.embedding.weight"]
    sd._metadata = collections.OrderedDict({"": {"version": 1}})
    model = os.path.join(HERE, "tiny_mamba_ssm")
    os.makedirs(model, exist_ok=True)
    torch.save(sd, os.path.join(model, "pytorch_model.bin"))
    with open(os.path.join(model, "config.json"), "w") as f:
        json.dump({"d_model": d, "n_layer": 1, "vocab_size": v, "ssm_cfg": {"d_state": n},
                   "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True,
                   "pad_vocab_size_multiple": 8}, f, indent=2)
        f.write("\n")


def rezip(src, dst, compression, byteorder):
    with zipfile.ZipFile(os.path.join(HERE, src)) as z:
        entries = [(i.filename.split("/", 1)[1], z.read(i)) for i in z.infolist()]
    with zipfile.ZipFile(os.path.join(HERE, dst), "w", compression) as z:
        for name, data in entries:
            z.writestr("archive/" + name, data)
        z.writestr("archive/byteorder", byteorder)
        z.writestr("archive/.data/serialization_id", b"0123456789")


if __name__ == "__main__":
    main()
