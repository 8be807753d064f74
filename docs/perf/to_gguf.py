#!/usr/bin/env python3
"""Convert a MambaServe HF-layout checkpoint (Mamba-1 or Mamba-2) to GGUF for llama.cpp.

It writes what llama.cpp's convert_hf_to_gguf.py writes for MambaForCausalLM (arch "mamba",
llama.cpp master) and Mamba2ForCausalLM (arch "mamba2", the compilade/mamba2 branch), without
torch or transformers: numpy, plus the gguf-py package of the llama.cpp checkout whose loader
will read the file (pass its path; nothing is downloaded). Used by docs/perf/llama_cpp_compare.sh.

    python3 docs/perf/to_gguf.py --gguf-py /var/tmp/llama.cpp/gguf-py \
        --model /tmp/mamba-bench-models/130m-bfloat16 --outtype bf16 --out m.bf16.gguf

What follows convert_hf_to_gguf.py, step by step:
  * hparams: context_length 2**20, embedding_length, feed_forward_length 0, head_count 0,
    block_count, ssm.{conv_kernel, inner_size, state_size, time_step_rank}, rms eps,
    ssm.dt_b_c_rms (Mamba-1; true only for falcon_mamba), ssm.group_count (Mamba-2,
    time_step_rank = number of heads), file_type.
  * tensors: names through gguf-py's TensorNameMap; A = -exp(A_log); Mamba-2 dt_bias becomes
    ssm_dt.bias, A and D get a trailing unit dimension, the gated norm is [n_groups, d_inner /
    n_groups]; conv1d [d, 1, k] -> [d, k] (the loader wants 2-D; convert_hf_to_gguf.py squeezes
    its tensors); lm_head is left out when it equals the embedding (tied).
  * types: 1-D tensors, *_norm.weight, conv1d and every non-".weight" tensor in F32; the other
    matrices in the chosen type (bf16 via gguf-py's round-to-nearest-even, lossless from a
    bf16 checkpoint; f32 exact; q8_0 with convert_hf_to_gguf.py's fallback to F16 for a
    matrix whose rows are not a multiple of 32 -- llama-quantize instead refuses the whole
    file when dt_proj has 48 columns, as in the 130m shape).
  * vocabulary: the gpt2 BPE model from tokenizer.json as AutoTokenizer exposes it (ids without
    a token become "[PAD<i>]", UNUSED; added special tokens CONTROL; other added tokens
    USER_DEFINED; the rest NORMAL), tokenizer.ggml.pre "olmo" (the GPT-NeoX tokenizer's
    pre-tokenizer hash matches "mpt" and then "olmo" in get_vocab_base_pre; the last match wins;
    llama.cpp treats both alike), merges and special ids through gguf-py's SpecialVocab.
    The vocabulary is padded up to pad_vocab_size_multiple (8 for Mamba-1, 16 for Mamba-2)
    like the original, but never beyond the embedding's rows (llama.cpp requires the token
    count to equal them; real Mamba-2 configs already say 50288, ours may not).
"""

import argparse
import json
import struct
import sys
import types
from pathlib import Path


def load_gguf_py(path):
    sys.path.insert(0, str(Path(path).resolve()))
    try:
        import sentencepiece  # noqa: F401  (gguf/vocab.py imports it; the gpt2 path never uses it)
    except ImportError:
        stub = types.ModuleType("sentencepiece")
        stub.SentencePieceProcessor = object
        sys.modules["sentencepiece"] = stub
    import gguf
    return gguf


def read_safetensors(model_dir, np):
    """name -> float32 numpy array (memory-mapped where possible)."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    out = {}
    for f in files:
        path = model_dir / f
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        base = 8 + n
        raw = np.memmap(path, dtype=np.uint8, mode="r")
        for name, info in header.items():
            if name == "__metadata__":
                continue
            begin, end = info["data_offsets"]
            buf = raw[base + begin: base + end]
            shape = tuple(info["shape"])
            dt = info["dtype"]
            if dt == "F32":
                arr = buf.view(np.float32).reshape(shape)
            elif dt == "F16":
                arr = buf.view(np.float16).reshape(shape).astype(np.float32)
            elif dt == "BF16":
                arr = (buf.view(np.uint16).astype(np.uint32) << 16).view(np.float32).reshape(shape)
            else:
                raise SystemExit(f"unsupported safetensors dtype {dt} for {name}")
            out[name] = arr
    return out


def vocab_from_tokenizer_json(path, vocab_size, gguf):
    tok = json.loads(path.read_text(encoding="utf-8"))
    reverse = {i: t for t, i in tok["model"]["vocab"].items()}
    added = {a["id"]: a for a in tok.get("added_tokens", [])}
    for i, a in added.items():
        reverse[i] = a["content"]
    assert max(reverse) < vocab_size, "tokenizer has ids beyond the vocabulary"
    tokens, toktypes = [], []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            toktypes.append(gguf.TokenType.UNUSED)
            continue
        t = reverse[i]
        if i in added:
            looks_special = t in ("<pad>", "<mask>", "<2mass>", "[@BOS@]") or (
                t.startswith("<|") and t.endswith("|>"))
            if added[i].get("special") or looks_special:
                toktypes.append(gguf.TokenType.CONTROL)
            else:
                t = t.replace("\u2581", " ")
                toktypes.append(gguf.TokenType.USER_DEFINED)
        else:
            toktypes.append(gguf.TokenType.NORMAL)
        tokens.append(t)
    return tokens, toktypes


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gguf-py", required=True, help="path to a llama.cpp checkout's gguf-py")
    ap.add_argument("--model", required=True, type=Path, help="HF-layout checkpoint directory")
    ap.add_argument("--tokenizer", type=Path, help="tokenizer.json (default: the model's)")
    ap.add_argument("--outtype", choices=["f32", "bf16", "q8_0"], default="bf16")
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()

    gguf = load_gguf_py(args.gguf_py)
    import numpy as np

    cfg = json.loads((args.model / "config.json").read_text())
    archs = cfg.get("architectures") or []
    is_mamba2 = "Mamba2ForCausalLM" in archs or cfg.get("model_type") == "mamba2"
    if is_mamba2 and not hasattr(gguf.MODEL_ARCH, "MAMBA2"):
        raise SystemExit("this gguf-py has no MAMBA2 (use the compilade/mamba2 branch's)")
    arch = gguf.MODEL_ARCH.MAMBA2 if is_mamba2 else gguf.MODEL_ARCH.MAMBA

    def hp(keys, default=None):
        for k in keys:
            if k in cfg:
                return cfg[k]
        if default is None:
            raise SystemExit(f"config.json has none of {keys}")
        return default

    d_model = hp(["hidden_size", "d_model", "dim"])
    n_layer = hp(["n_layers", "num_hidden_layers", "n_layer", "num_layers"])
    d_conv = hp(["conv_kernel", "d_conv"], 4)
    d_inner = hp(["intermediate_size", "d_inner"], 2 * d_model)
    d_state = hp(["state_size", "d_state"], 128 if is_mamba2 else 16)
    eps = hp(["layer_norm_epsilon", "rms_norm_eps"], 1e-5)
    assert d_inner == 2 * d_model, "convert_hf_to_gguf.py only accepts expand 2"

    tensors = read_safetensors(args.model, np)
    emb_name = next(n for n in tensors if n.endswith(("embeddings.weight", "embedding.weight")))
    n_rows = tensors[emb_name].shape[0]

    ftype = {"f32": gguf.LlamaFileType.ALL_F32, "bf16": gguf.LlamaFileType.MOSTLY_BF16,
             "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[args.outtype]
    w = gguf.GGUFWriter(path=None, arch=gguf.MODEL_ARCH_NAMES[arch])
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(args.model.name)
    w.add_context_length(2**20)
    w.add_embedding_length(d_model)
    w.add_feed_forward_length(0)
    w.add_head_count(0)
    w.add_block_count(n_layer)
    w.add_ssm_conv_kernel(d_conv)
    w.add_ssm_inner_size(d_inner)
    w.add_ssm_state_size(d_state)
    if is_mamba2:
        head_dim = hp(["head_dim"], 64)
        n_group = hp(["n_groups"], 1)
        assert d_inner % head_dim == 0
        w.add_ssm_time_step_rank(d_inner // head_dim)
        w.add_ssm_group_count(n_group)
        w.add_layer_norm_rms_eps(eps)
    else:
        dt_rank = hp(["time_step_rank", "dt_rank"], -(d_model // -16))
        w.add_ssm_time_step_rank(dt_rank)
        w.add_layer_norm_rms_eps(eps)
        w.add_ssm_dt_b_c_rms(cfg.get("model_type") == "falcon_mamba")
    w.add_file_type(ftype)

    # Vocabulary (MambaModel.set_vocab / Mamba2Model.set_vocab -> _set_vocab_gpt2).
    pad = cfg.get("pad_vocab_size_multiple", 16 if is_mamba2 else 8)
    vocab_size = -(cfg["vocab_size"] // -pad) * pad
    vocab_size = min(vocab_size, n_rows)
    tok_path = args.tokenizer or (args.model / "tokenizer.json")
    tokens, toktypes = vocab_from_tokenizer_json(tok_path, vocab_size, gguf)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("olmo")
    w.add_token_list(tokens)
    w.add_token_types(toktypes)
    tok_dir = tok_path.parent
    special = gguf.SpecialVocab(tok_dir, load_merges=True, n_vocab=len(tokens))
    special._try_load_from_config_json(args.model)  # the model's bos/eos ids when not in tok_dir
    special.add_to_gguf(w)

    # Tensors (modify_tensors + prepare_tensors).
    tmap = gguf.get_tensor_name_map(arch, n_layer)
    emb = None
    for name in sorted(tensors, key=lambda n: (n != emb_name, n)):
        data = np.asarray(tensors[name], dtype=np.float32)
        hf = name
        if hf.startswith(("model.backbone", "model.lm_head")):
            hf = hf.removeprefix("model.")
        if hf.endswith(".dt_bias"):
            hf = hf.rpartition(".dt_bias")[0] + ".dt_proj.bias"
        new = tmap.get_name(hf, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise SystemExit(f"cannot map tensor {name}")
        if hf.endswith(".A_log"):
            data = -np.exp(data)
        if new == "output.weight":
            if emb is not None and np.array_equal(emb, data):
                continue
        if new == "token_embd.weight":
            emb = data
        base = new.rsplit(".", 1)[0] if new.endswith((".weight", ".bias")) else new
        if is_mamba2:
            if base.endswith((".ssm_a", ".ssm_d")):
                data = data.reshape(*data.shape, 1)
            elif base.endswith(".ssm_norm"):
                n_group = hp(["n_groups"], 1)
                data = data.reshape(n_group, d_inner // n_group)
            else:
                data = data.squeeze()
        elif base.endswith(".ssm_conv1d") and data.ndim == 3:
            data = data.reshape(data.shape[0], data.shape[-1])
        n_dims = data.ndim
        if n_dims <= 1 or new.endswith("_norm.weight") or base.endswith(".ssm_conv1d") \
                or not new.endswith(".weight"):
            qtype = gguf.GGMLQuantizationType.F32
        elif ftype == gguf.LlamaFileType.ALL_F32:
            qtype = gguf.GGMLQuantizationType.F32
        elif ftype == gguf.LlamaFileType.MOSTLY_BF16:
            qtype = gguf.GGMLQuantizationType.BF16
        else:
            qtype = gguf.GGMLQuantizationType.Q8_0
        try:
            q = gguf.quants.quantize(np.ascontiguousarray(data), qtype)
        except gguf.QuantError:  # rows not a multiple of 32 (dt_proj of 130m: 48): F16, as
            qtype = gguf.GGMLQuantizationType.F16  # convert_hf_to_gguf.py falls back
            q = gguf.quants.quantize(np.ascontiguousarray(data), qtype)
        w.add_tensor(new, q, raw_dtype=qtype)

    w.write_header_to_file(path=args.out)
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=False)
    w.close()
    print(f"wrote {args.out} ({gguf.MODEL_ARCH_NAMES[arch]}, {args.outtype}, vocab {len(tokens)})")


if __name__ == "__main__":
    main()
