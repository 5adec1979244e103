#!/usr/bin/env python3
"""PyTorch + PEFT side of rora's step benchmark (`examples/src/bin/step_bench.rs`).

Times the same training steps as the Rust binary — forward, backward and an AdamW step,
float32, on the CPU — and prints one JSON object on stdout:

- `linear-768x768`, `linear-768x3072`: one linear layer over 4,096 tokens whose input
  requires grad (as inside a network); `y.mean()` is the loss.
  - `lora`: PEFT LoRA r=8, alpha=16, dropout 0 on the layer (only A and B train);
  - `rora`: the same plus RoRA's Cl (dropout 0.1 on the frozen branch's output, by a
    forward hook on PEFT's `base_layer`) and Tr (`λ·(‖U_kᵀB‖² + ‖A V_k‖²)`, k=8, λ=1);
  - `dora`: PEFT LoRA with `use_dora=True` (DoRA's magnitude vector trains too);
  - `full`: the plain `nn.Linear`, weight and bias trainable.
- `matmul`: a plain `[4096, 768] x [768, 768]` product (no autodiff), the GEMM rate.
- `minilm`: a MiniLM-L6-sized `BertForSequenceClassification` (6 layers, hidden 384,
  12 heads, ffn 1536, vocab 30522, random weights unless `--checkpoint`), batch 32 ×
  length 64 (no padding), dropout 0.1 everywhere (HF's defaults), cross-entropy on 2
  labels. `lora`: PEFT r=8/alpha=16 on query and value, task SEQ_CLS (the classifier is
  trained too: `modules_to_save`); `rora`: plus Cl and Tr on every adapted layer; `full`:
  every parameter trains.

Run by the Rust binary as a subprocess, so that both sides are measured back to back in
one invocation; it also runs alone:

    python3 examples/scripts/peft_step_bench.py --cases linear-768x768 --methods lora

When torch, transformers or peft cannot be imported it prints
`{"available": false, "reason": ...}` and exits 0.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--cases",
        default="matmul,linear-768x768,linear-768x3072,minilm",
        help="comma-separated: matmul, linear-<in>x<out>, minilm",
    )
    p.add_argument("--methods", default="lora,rora,full", help="comma-separated: lora, rora, dora, full")
    p.add_argument("--iters", type=int, default=15, help="timed steps per case (median reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--minilm-iters", type=int, default=None, help="timed steps for minilm (default --iters)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--checkpoint", default=None, help="HF BERT folder for minilm (default: random weights)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def unavailable(reason):
    print(json.dumps({"available": False, "reason": reason}))
    sys.exit(0)


def main():
    args = parse_args()
    try:
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
        import peft
        import transformers
        from peft import LoraConfig, get_peft_model
        from transformers import BertConfig, BertForSequenceClassification
    except Exception as e:  # ImportError, or a broken install
        unavailable(f"{type(e).__name__}: {e}")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    transformers.logging.set_verbosity_error()

    def timed(step, iters):
        for _ in range(args.warmup):
            step()
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            step()
            times.append((time.perf_counter() - t0) * 1e3)
        return times

    def rora_parts(model, lam=1.0, k=8, p=0.1):
        """Cl hooks on every PEFT base layer and the Tr penalty closure."""
        terms = []
        for module in model.modules():
            if isinstance(module, peft.tuners.lora.LoraLayer) and hasattr(module, "base_layer"):
                base = module.base_layer
                base.register_forward_hook(
                    lambda mod, inp, out: F.dropout(out, p=p, training=mod.training)
                )
                w0 = base.weight.detach()  # [out, in]
                u, _, vh = torch.linalg.svd(w0, full_matrices=False)
                uk = u[:, :k].contiguous()  # [out, k]
                vk = vh[:k, :].T.contiguous()  # [in, k]
                a = module.lora_A["default"].weight  # [r, in]
                b = module.lora_B["default"].weight  # [out, r]
                terms.append((uk, vk, a, b))

        def penalty():
            total = 0.0
            for uk, vk, a, b in terms:
                total = total + (uk.T @ b).pow(2).sum() + (a @ vk).pow(2).sum()
            return lam * total

        return penalty

    results = []
    cases = [c for c in args.cases.split(",") if c]
    methods = [m for m in args.methods.split(",") if m]
    for case in cases:
        for method in methods:
            torch.manual_seed(args.seed)
            if case.startswith("linear-"):
                d_in, d_out = (int(v) for v in case[len("linear-"):].split("x"))

                class One(nn.Module):
                    def __init__(self):
                        super().__init__()
                        self.lin = nn.Linear(d_in, d_out)

                    def forward(self, x):
                        return self.lin(x)

                model = One()
                penalty = None
                if method in ("lora", "rora", "dora"):
                    model = get_peft_model(
                        model,
                        LoraConfig(
                            r=args.rank,
                            lora_alpha=16,
                            lora_dropout=0.0,
                            target_modules=["lin"],
                            use_dora=method == "dora",
                        ),
                    )
                    if method == "rora":
                        penalty = rora_parts(model)
                model.train()
                x = torch.randn(args.tokens, d_in, requires_grad=True)
                params = [q for q in model.parameters() if q.requires_grad]
                opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)

                def step():
                    opt.zero_grad(set_to_none=True)
                    x.grad = None
                    loss = model(x).mean()
                    if penalty is not None:
                        loss = loss + penalty()
                    loss.backward()
                    opt.step()

                iters = args.iters
            elif case == "minilm":
                if args.checkpoint:
                    model = BertForSequenceClassification.from_pretrained(
                        args.checkpoint, num_labels=2, attn_implementation="sdpa"
                    )
                else:
                    cfg = BertConfig(
                        vocab_size=30522,
                        hidden_size=384,
                        num_hidden_layers=6,
                        num_attention_heads=12,
                        intermediate_size=1536,
                        max_position_embeddings=512,
                        hidden_dropout_prob=0.1,
                        attention_probs_dropout_prob=0.1,
                        num_labels=2,
                    )
                    model = BertForSequenceClassification(cfg)
                penalty = None
                if method in ("lora", "rora", "dora"):
                    model = get_peft_model(
                        model,
                        LoraConfig(
                            use_dora=method == "dora",
                            task_type="SEQ_CLS",
                            r=args.rank,
                            lora_alpha=16,
                            lora_dropout=0.0,
                            target_modules=["query", "value"],
                        ),
                    )
                    if method == "rora":
                        penalty = rora_parts(model)
                model.train()
                g = torch.Generator().manual_seed(args.seed)
                ids = torch.randint(1000, 30000, (args.batch, args.seq_len), generator=g)
                mask = torch.ones(args.batch, args.seq_len, dtype=torch.long)
                labels = torch.randint(0, 2, (args.batch,), generator=g)
                params = [q for q in model.parameters() if q.requires_grad]
                opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)

                def step():
                    opt.zero_grad(set_to_none=True)
                    logits = model(input_ids=ids, attention_mask=mask).logits
                    loss = F.cross_entropy(logits, labels)
                    if penalty is not None:
                        loss = loss + penalty()
                    loss.backward()
                    opt.step()

                iters = args.minilm_iters or args.iters
            elif case == "matmul":
                # The plain [tokens, 768] x [768, 768] product, no autodiff: the GEMM rate.
                xm = torch.randn(args.tokens, 768)
                wm = torch.randn(768, 768)
                model, opt = nn.Module(), None

                def step():
                    torch.mm(xm, wm)

                iters = args.iters
            else:
                print(f"unknown case {case}", file=sys.stderr)
                sys.exit(2)
            trainable = sum(q.numel() for q in model.parameters() if q.requires_grad)
            times = timed(step, iters)
            results.append(
                {
                    "case": case,
                    "method": method,
                    "median_ms": statistics.median(times),
                    "min_ms": min(times),
                    "times_ms": times,
                    "trainable_params": trainable,
                }
            )
            print(
                f"[peft] {case} {method}: median {statistics.median(times):.1f} ms",
                file=sys.stderr,
                flush=True,
            )
            del model, opt

    print(
        json.dumps(
            {
                "available": True,
                "versions": {
                    "python": platform.python_version(),
                    "torch": torch.__version__,
                    "peft": peft.__version__,
                    "transformers": transformers.__version__,
                },
                "threads": torch.get_num_threads(),
                "interop_threads": torch.get_num_interop_threads(),
                "mkldnn": torch.backends.mkldnn.is_available(),
                "blas": torch.__config__.show().split("BLAS_INFO=")[1].split(",")[0]
                if "BLAS_INFO=" in torch.__config__.show()
                else None,
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
