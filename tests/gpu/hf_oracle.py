#!/usr/bin/env python3
"""The HF oracle (issue 18): our engines against transformers on the same random checkpoints.

For each case (tiny Mamba-1, FalconMamba and Mamba-2 presets, and the Mamba-1 preset under a rank-4
PEFT LoRA adapter) it writes the checkpoint with mamba-make-checkpoint (fp32, HF layout) and the
adapter with mamba-make-lora, has mamba-generate dump what our engines compute for a fixed prompt
of token ids (--dump-logits: the prompt's last-token logits and a greedy continuation), loads the
same directories with transformers' AutoModelForCausalLM (MambaForCausalLM, FalconMambaForCausalLM,
Mamba2ForCausalLM; fp32, TF32 off, on CUDA when available; without the mamba_ssm kernels
transformers takes its slow path itself) and peft's PeftModel (unmerged), and compares:

- last-token logits: max |ours - HF| <= atol + rtol * max |HF| (defaults 1e-3 and 1e-3: fp32 on
  both sides, different summation orders over d_inner <= 128 and 2 layers);
- the greedy continuation (N tokens, HF recomputing the whole sequence each step, no cache):
  every token must agree up to the first step where HF's top-2 margin is < 1e-3 (a near-tie may
  legitimately go either way; from there on nothing is compared).

Our tools run with MAMBA_TOOLS_LD_LIBRARY_PATH as their LD_LIBRARY_PATH when it is set (the GPU
bundle's libraries, which run_bundle.sh keeps away from Python itself).

One line per case and engine: `PASS|FAIL hf-oracle CASE ENGINE: detail`; exit 0 only if all pass,
1 on any FAIL, 2 when torch / transformers / peft cannot be imported (named on stderr).

Usage: python3 tests/gpu/hf_oracle.py --bin DIR [--engines cuda,cpu] [--work DIR]
       python3 tests/gpu/hf_oracle.py --bin DIR --engines cpu --reference torch-mamba1 \\
           --cases mamba-tiny,mamba-tiny-lora   (a rehearsal without transformers: a plain-PyTorch
                                                 Mamba-1, tests/gpu/torch_mamba_ref.py)
       python3 tests/gpu/hf_oracle.py --self-test [--bin DIR]   (the comparison code on synthetic
           dumps, standard library only; with --bin also mamba-generate's dump and its errors)
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

# Inside every preset's vocabulary (512 for the tiny ones), not all small: 12 tokens.
PROMPT = [1, 17, 42, 99, 123, 256, 311, 7, 480, 64, 5, 200]
MARGIN = 1e-3  # HF top-2 margin below which a greedy step is a near-tie: comparing stops there

# name -> (preset, with a LoRA adapter)
CASES = {
    "mamba-tiny": ("tiny", False),
    "falcon-mamba-tiny": ("falcon-tiny", False),
    "mamba2-tiny": ("mamba2-tiny", False),
    "mamba-tiny-lora": ("tiny", True),
}


class MissingDependency(RuntimeError):
    pass


# ---- the comparison (standard library only: unit-tested by --self-test) ----


def _finite(values):
    # nlohmann::json writes NaN / Inf as null.
    return [float("nan") if v is None else float(v) for v in values]


def top2_margin(row):
    """The largest logit minus the second largest (0 for a tie)."""
    a = b = -math.inf
    for v in row:
        if v > a:
            a, b = v, a
        elif v > b:
            b = v
    return a - b


def argmax(row):
    """Ties to the lowest id, as torch.argmax and our Sampler pick."""
    best = 0
    for i, v in enumerate(row):
        if v > row[best]:
            best = i
    return best


def compare(ref, dump, atol=1e-3, rtol=1e-3, margin=MARGIN):
    """ref: {"prompt_ids", "logits", "greedy_ids", "margins"} (HF's); dump: mamba-generate's
    --dump-logits JSON. Returns (ok, detail)."""
    problems = []
    if list(dump.get("prompt_ids", [])) != list(ref["prompt_ids"]):
        return False, "prompt ids differ: %s vs HF %s" % (dump.get("prompt_ids"), ref["prompt_ids"])
    ours = _finite(dump.get("logits", []))
    theirs = _finite(ref["logits"])
    if len(ours) != len(theirs):
        return False, "vocab differs: %d logits vs HF %d" % (len(ours), len(theirs))
    if not all(math.isfinite(v) for v in ours):
        return False, "non-finite logits (%d of %d)" % (
            sum(not math.isfinite(v) for v in ours), len(ours))
    scale = max(abs(v) for v in theirs) if theirs else 0.0
    tol = atol + rtol * scale
    diff = max((abs(a - b) for a, b in zip(ours, theirs)), default=0.0)
    at = max(range(len(ours)), key=lambda i: abs(ours[i] - theirs[i])) if ours else 0
    if not diff <= tol:
        problems.append("logits max|diff| %.3g > tol %.3g (at id %d: %.6g vs HF %.6g)" %
                        (diff, tol, at, ours[at], theirs[at]))
    # Greedy: token by token until HF's margin says near-tie.
    got, want, margins = list(dump.get("greedy_ids", [])), list(ref["greedy_ids"]), ref["margins"]
    checked, stop = 0, ""
    for i, w in enumerate(want):
        if margins[i] < margin:
            stop = ", then HF near-tie at step %d (margin %.2g)" % (i, margins[i])
            break
        if i >= len(got):
            problems.append("greedy: %d tokens, HF compared %d" % (len(got), len(want)))
            break
        if got[i] != w:
            problems.append("greedy step %d: %d vs HF %d (HF margin %.3g); ours %s, HF %s" %
                            (i, got[i], w, margins[i], got, want))
            break
        checked += 1
    detail = "logits max|diff| %.3g (tol %.3g, max|logit| %.3g), greedy %d/%d agree%s" % (
        diff, tol, scale, checked, len(want), stop)
    if problems:
        return False, "; ".join(problems) + " [" + detail + "]"
    return True, detail


# ---- transformers ----


def load_hf(model_dir, adapter_dir, device, reference="hf"):
    """The reference model: fp32, eval, TF32 off, the adapter unmerged."""
    if reference == "torch-mamba1":  # the rehearsal stand-in (torch_mamba_ref.py), not HF
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import torch_mamba_ref
        return torch_mamba_ref.TorchMamba1(model_dir, adapter_dir, device), \
            "torch_mamba_ref (a rehearsal stand-in, NOT transformers)"
    try:
        import torch
    except ImportError as e:
        raise MissingDependency("torch is not importable (%s)" % e)
    try:
        import transformers
        from transformers import AutoModelForCausalLM
    except ImportError as e:
        raise MissingDependency("transformers is not importable (%s): the HF oracle needs it" % e)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    if adapter_dir:
        try:
            from peft import PeftModel
        except ImportError as e:
            raise MissingDependency("peft is not importable (%s): the LoRA case needs it" % e)
        model = PeftModel.from_pretrained(model, adapter_dir)  # unmerged: W x + s B A x
    model = model.to(device).eval()
    return model, "transformers %s%s, %s" % (
        transformers.__version__, (", peft %s" % __import__("peft").__version__)
        if adapter_dir else "", type(getattr(model, "base_model", model)).__name__)


def hf_reference(model, prompt, steps, device):
    """Last-token logits of the prompt, then `steps` greedy tokens with each step's top-2
    margin (the whole sequence again each step: no cache API differences between versions)."""
    import torch
    seq = list(prompt)
    logits0, greedy, margins = None, [], []
    with torch.no_grad():
        for _ in range(steps):
            ids = torch.tensor([seq], dtype=torch.long, device=device)
            row = model(input_ids=ids, use_cache=False).logits[0, -1].float().cpu()
            if logits0 is None:
                logits0 = row.tolist()
            top = torch.topk(row, 2).values.tolist()
            margins.append(top[0] - top[1])
            # torch.argmax's tie order is not promised: the lowest id, as ours.
            nxt = int(torch.nonzero(row == row.max())[0, 0])
            greedy.append(nxt)
            seq.append(nxt)
    return {"prompt_ids": list(prompt), "logits": logits0, "greedy_ids": greedy,
            "margins": margins}


# ---- our engines ----


def run(cmd, log):
    log.write("$ %s\n" % " ".join(cmd))
    log.flush()
    env = dict(os.environ)
    if "MAMBA_TOOLS_LD_LIBRARY_PATH" in env:  # the bundle's libraries, for our tools only
        env["LD_LIBRARY_PATH"] = env["MAMBA_TOOLS_LD_LIBRARY_PATH"]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    log.write(p.stdout)
    if p.returncode != 0:
        raise RuntimeError("%s exited %d: %s" % (os.path.basename(cmd[0]), p.returncode,
                                                 (p.stdout.strip().splitlines() or [""])[-1]))


def make_case(bin_dir, work, preset, lora, log):
    model = os.path.join(work, preset)
    if not os.path.exists(os.path.join(model, "config.json")):
        run([os.path.join(bin_dir, "mamba-make-checkpoint"), "--preset", preset, "--dtype",
             "float32", "--out", model], log)
    adapter = None
    if lora:
        adapter = model + "-lora"
        if not os.path.exists(os.path.join(adapter, "adapter_config.json")):
            run([os.path.join(bin_dir, "mamba-make-lora"), "--base", model, "--out", adapter,
                 "--rank", "4"], log)
    return model, adapter


def engine_dump(bin_dir, model, adapter, engine, steps, path, log):
    cmd = [os.path.join(bin_dir, "mamba-generate"), "--model", model, "--device", engine,
           "--dtype", "float32", "--prompt-ids", ",".join(map(str, PROMPT)),
           "--max-new-tokens", str(steps), "--dump-logits", path, "--log-level", "warn"]
    if adapter:
        cmd += ["--lora", adapter]
    run(cmd, log)
    with open(path) as f:
        return json.load(f)


def main_oracle(args):
    import torch  # noqa: F401  (a clear error before any work)
    device = args.hf_device or ("cuda" if torch.cuda.is_available() else "cpu")
    engines = [e for e in args.engines.split(",") if e]
    work = args.work or tempfile.mkdtemp(prefix="mamba-hf-oracle.")
    os.makedirs(work, exist_ok=True)
    log = open(os.path.join(work, "hf_oracle.log"), "a") if not args.log else open(args.log, "a")
    print("hf-oracle: reference on %s (torch %s), engines %s, prompt %d tokens, %d greedy steps, "
          "work %s" % (device, torch.__version__, ",".join(engines), len(PROMPT), args.steps,
                       work), flush=True)
    failed = passed = 0
    for name in [c for c in args.cases.split(",") if c]:
        preset, lora = CASES[name]
        try:
            model_dir, adapter = make_case(args.bin, work, preset, lora, log)
            model, what = load_hf(model_dir, adapter, device, args.reference)
            ref = hf_reference(model, PROMPT, args.steps, device)
            del model
        except MissingDependency:
            raise
        except Exception as e:  # a reference that cannot load is this case's failure
            print("FAIL hf-oracle %s: reference: %s: %s" % (name, type(e).__name__,
                                                            str(e).splitlines()[0][:300]),
                  flush=True)
            failed += 1
            continue
        for engine in engines:
            try:
                dump = engine_dump(args.bin, model_dir, adapter, engine, args.steps,
                                   os.path.join(work, "%s.%s.json" % (name, engine)), log)
                ok, detail = compare(ref, dump, args.atol, args.rtol)
                detail += " (%s %s; %s)" % (dump.get("device"), dump.get("dtype"), what)
            except Exception as e:
                ok, detail = False, "%s: %s" % (type(e).__name__, str(e)[:300])
            print("%s hf-oracle %s %s: %s" % ("PASS" if ok else "FAIL", name, engine, detail),
                  flush=True)
            failed += 0 if ok else 1
            passed += 1 if ok else 0
    print("hf-oracle: %d passed, %d failed" % (passed, failed), flush=True)
    return 1 if failed else 0


# ---- the self-test: the comparison on synthetic dumps ----


def self_test(bin_dir=None):
    checks = 0

    def expect(cond, what):
        nonlocal checks
        checks += 1
        if not cond:
            raise AssertionError(what)

    vocab = 64
    base = [math.sin(0.7 * i) * 5 for i in range(vocab)]
    ref = {"prompt_ids": PROMPT, "logits": base, "greedy_ids": [3, 9, 9, 4],
           "margins": [0.5, 0.2, 0.1, 0.3]}
    dump = {"prompt_ids": PROMPT, "logits": [v + 1e-4 for v in base], "greedy_ids": [3, 9, 9, 4]}
    ok, detail = compare(ref, dump)
    expect(ok and "greedy 4/4 agree" in detail, "close logits, same greedy: PASS (%s)" % detail)

    far = dict(dump, logits=[v + (0.1 if i == 5 else 0) for i, v in enumerate(base)])
    ok, detail = compare(ref, far)
    expect(not ok and "at id 5" in detail, "one logit 0.1 off fails naming it (%s)" % detail)
    # The tolerance scales with the logits: 1e-3 + 1e-3 * 5 ~ 6e-3.
    expect(compare(ref, dict(dump, logits=[v + 5e-3 for v in base]))[0], "5e-3 within tolerance")
    expect(not compare(ref, dict(dump, logits=[v + 7e-3 for v in base]))[0], "7e-3 outside")

    ok, detail = compare(ref, dict(dump, greedy_ids=[3, 9, 8, 4]))
    expect(not ok and "greedy step 2" in detail, "a clear-margin greedy mismatch fails (%s)" % detail)
    tie = dict(ref, margins=[0.5, 0.2, 1e-5, 0.3])
    ok, detail = compare(tie, dict(dump, greedy_ids=[3, 9, 8, 7]))
    expect(ok and "greedy 2/4 agree" in detail and "near-tie at step 2" in detail,
           "a mismatch after an HF near-tie passes, counted (%s)" % detail)
    ok, detail = compare(ref, dict(dump, greedy_ids=[3, 9]))
    expect(not ok and "greedy: 2 tokens" in detail, "a short continuation fails (%s)" % detail)

    expect(not compare(ref, dict(dump, prompt_ids=PROMPT[:-1]))[0], "another prompt fails")
    ok, detail = compare(ref, dict(dump, logits=base[:-1]))
    expect(not ok and "vocab differs" in detail, "a vocab mismatch fails (%s)" % detail)
    ok, detail = compare(ref, dict(dump, logits=[None] + base[1:]))
    expect(not ok and "non-finite" in detail, "NaN (JSON null) fails (%s)" % detail)

    expect(top2_margin([1.0, 3.0, 2.5]) == 0.5 and top2_margin([2.0, 2.0]) == 0.0, "margins")
    expect(argmax([1.0, 3.0, 3.0]) == 1, "argmax ties to the lowest id")

    # The dump format mamba-generate writes, read back as the oracle reads it.
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "dump.json")
        with open(p, "w") as f:
            f.write(json.dumps(dict(dump, device="cpu", dtype="float32", adapter="")) + "\n")
        with open(p) as f:
            expect(compare(ref, json.load(f))[0], "a dump file round-trips")

    # Without transformers the HF part must fail clearly, not half-run.
    try:
        import transformers  # noqa: F401
        have_transformers = True
    except ImportError:
        have_transformers = False
    if not have_transformers:
        try:
            load_hf("/nonexistent", None, "cpu")
            expect(False, "load_hf without transformers raises")
        except MissingDependency as e:
            expect("not importable" in str(e), "names what is missing (%s)" % e)
    if bin_dir:  # mamba-generate's dump and its errors, on the CPU engine
        with tempfile.TemporaryDirectory() as d:
            log = open(os.path.join(d, "log"), "w")
            model, adapter = make_case(bin_dir, d, "tiny", True, log)
            gen = [os.path.join(bin_dir, "mamba-generate"), "--model", model, "--device", "cpu",
                   "--prompt-ids", "1,2,3", "--log-level", "warn"]
            p = subprocess.run(gen + ["--lora", adapter], capture_output=True, text=True)
            expect(p.returncode != 0 and "only supported with --dump-logits" in p.stderr,
                   "--lora without --dump-logits is refused (%s)" % p.stderr.strip())
            p = subprocess.run(gen + ["--dump-logits", os.path.join(d, "x.json"), "--lora",
                                      os.path.join(d, "missing")], capture_output=True, text=True)
            expect(p.returncode != 0 and "missing" in p.stderr,
                   "a missing adapter directory fails naming it (%s)" % p.stderr.strip())
            base = engine_dump(bin_dir, model, None, "cpu", 4, os.path.join(d, "b.json"), log)
            lora = engine_dump(bin_dir, model, adapter, "cpu", 4, os.path.join(d, "l.json"), log)
            expect(base["prompt_ids"] == PROMPT and len(base["logits"]) == 512 and
                   len(base["greedy_ids"]) == 4 and base["greedy_ids"][0] == argmax(base["logits"]),
                   "the dump: prompt, 512 logits, 4 greedy ids starting at the argmax")
            expect(base["adapter"] == "" and lora["adapter"] == adapter and
                   max(abs(a - b) for a, b in zip(base["logits"], lora["logits"])) > 1e-3,
                   "the adapter changes the logits")
    print("PASS hf-oracle self-test: %d checks%s" % (
        checks, "" if have_transformers else " (transformers absent: MissingDependency checked)"))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--self-test", action="store_true")
    ap.add_argument("--bin", help="directory with mamba-generate, mamba-make-checkpoint, "
                    "mamba-make-lora")
    ap.add_argument("--engines", default="cuda,cpu", help="mamba-generate --device values")
    ap.add_argument("--cases", default=",".join(CASES), help="of: " + ", ".join(CASES))
    ap.add_argument("--steps", type=int, default=16, help="greedy tokens compared")
    ap.add_argument("--atol", type=float, default=1e-3)
    ap.add_argument("--rtol", type=float, default=1e-3, help="times max |HF logit|")
    ap.add_argument("--reference", choices=["hf", "torch-mamba1"], default="hf",
                    help="torch-mamba1: tests/gpu/torch_mamba_ref.py instead of transformers, to "
                    "rehearse the plumbing without transformers (Mamba-1 cases only)")
    ap.add_argument("--hf-device", help="cuda | cpu (default: cuda when available)")
    ap.add_argument("--work", help="checkpoints and dumps (default: a new temporary directory)")
    ap.add_argument("--log", help="the tools' output (default: WORK/hf_oracle.log)")
    args = ap.parse_args()
    if args.self_test:
        return self_test(args.bin)
    if not args.bin:
        ap.error("--bin is required (or --self-test)")
    unknown = [c for c in args.cases.split(",") if c and c not in CASES]
    if unknown:
        ap.error("unknown case(s): %s" % ", ".join(unknown))
    try:
        return main_oracle(args)
    except (MissingDependency, ImportError) as e:
        print("FAIL hf-oracle: %s" % e, flush=True)
        print("hf-oracle: %s" % e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
