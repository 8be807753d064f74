"""A plain-PyTorch Mamba-1 forward (transformers' MambaMixer slow path, written out) with PEFT LoRA
applied unmerged: the stand-in reference for rehearsing tests/gpu/hf_oracle.py where transformers
and peft are absent (`hf_oracle.py --reference torch-mamba1`). It is not the oracle: it only proves
the oracle's plumbing (checkpoints, dumps, the comparison) and our reading of the HF names and of
PEFT's scaling on a machine with PyTorch alone. Mamba-1 layout only (model_type mamba), fp32.
"""

import json
import os
import struct
import types

_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}


def load_safetensors(path):
    import torch
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        raw = bytearray(data[8 + n + a:8 + n + b])
        dtype = getattr(torch, _DTYPES[t["dtype"]])
        out[name] = torch.frombuffer(raw, dtype=dtype).reshape(t["shape"]).float() if raw else \
            torch.zeros(t["shape"])
    return out


class TorchMamba1:
    """model(input_ids=[1, T] tensor).logits -> [1, T, vocab], as a transformers model answers."""

    def __init__(self, model_dir, adapter_dir=None, device="cpu"):
        with open(os.path.join(model_dir, "config.json")) as f:
            self.cfg = json.load(f)
        if self.cfg.get("model_type") != "mamba":
            raise ValueError("torch_mamba_ref handles model_type mamba only, not %s" %
                             self.cfg.get("model_type"))
        w = {}
        for name in sorted(os.listdir(model_dir)):
            if name.endswith(".safetensors"):
                w.update(load_safetensors(os.path.join(model_dir, name)))
        self.w = {k: v.to(device) for k, v in w.items()}
        self.lora, self.scale = {}, 1.0
        if adapter_dir:
            with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
                ac = json.load(f)
            if ac.get("rank_pattern") or ac.get("alpha_pattern") or ac.get("use_rslora"):
                raise ValueError("torch_mamba_ref: only a uniform r and lora_alpha")
            self.scale = ac["lora_alpha"] / ac["r"]
            prefix = "base_model.model."
            for k, v in load_safetensors(
                    os.path.join(adapter_dir, "adapter_model.safetensors")).items():
                self.lora[k[len(prefix):] if k.startswith(prefix) else k] = v.to(device)

    def _linear(self, x, key):
        y = x @ self.w[key + ".weight"].T
        if key + ".bias" in self.w:
            y = y + self.w[key + ".bias"]
        a = self.lora.get(key + ".lora_A.weight")
        if a is not None:  # PEFT's unmerged LoRA: W x + s * B (A x)
            y = y + (x @ a.T) @ self.lora[key + ".lora_B.weight"].T * self.scale
        return y

    def _rms(self, x, weight):
        eps = self.cfg.get("layer_norm_epsilon", 1e-5)
        return x * (x.pow(2).mean(-1, keepdim=True) + eps).rsqrt() * weight

    def __call__(self, input_ids, use_cache=False):
        import torch
        import torch.nn.functional as F
        ids = input_ids[0]
        emb = self.w["backbone.embeddings.weight"]
        h = emb[ids]
        a = self.lora.get("backbone.embeddings.lora_embedding_A")
        if a is not None:  # PEFT's Embedding: B (A^T one-hot), scaled
            h = h + a.T[ids] @ self.lora["backbone.embeddings.lora_embedding_B"].T * self.scale
        T = ids.shape[0]
        n = self.cfg["state_size"]
        r = self.cfg["time_step_rank"]
        for i in range(self.cfg["num_hidden_layers"]):
            p = "backbone.layers.%d." % i
            m = p + "mixer."
            xz = self._linear(self._rms(h, self.w[p + "norm.weight"]), m + "in_proj")
            e = xz.shape[-1] // 2
            x, z = xz[:, :e], xz[:, e:]
            cw = self.w[m + "conv1d.weight"][:, 0, :]  # [e, k]
            k = cw.shape[1]
            xp = torch.cat([torch.zeros(k - 1, e, device=x.device), x], 0)
            x = sum(xp[j:j + T] * cw[:, j] for j in range(k))
            if m + "conv1d.bias" in self.w:
                x = x + self.w[m + "conv1d.bias"]
            x = F.silu(x)
            dbc = self._linear(x, m + "x_proj")
            dt, B, C = dbc[:, :r], dbc[:, r:r + n], dbc[:, r + n:]
            dt = F.softplus(self._linear(dt, m + "dt_proj"))
            A = -torch.exp(self.w[m + "A_log"])  # [e, n]
            s = torch.zeros(e, n, device=x.device)
            ys = []
            for t in range(T):
                s = s * torch.exp(dt[t][:, None] * A) + (dt[t] * x[t])[:, None] * B[t][None, :]
                ys.append(s @ C[t])
            y = (torch.stack(ys) + x * self.w[m + "D"]) * F.silu(z)
            h = h + self._linear(y, m + "out_proj")
        h = self._rms(h, self.w["backbone.norm_f.weight"])
        head = self.w.get("lm_head.weight", emb)
        logits = h @ head.T
        if "lm_head.lora_A.weight" in self.lora:
            logits = logits + (h @ self.lora["lm_head.lora_A.weight"].T) @ \
                self.lora["lm_head.lora_B.weight"].T * self.scale
        return types.SimpleNamespace(logits=logits[None])

    def to(self, device):
        self.w = {k: v.to(device) for k, v in self.w.items()}
        self.lora = {k: v.to(device) for k, v in self.lora.items()}
        return self

    def eval(self):
        return self
