"""Synthetic run directories for the report tests: metrics.jsonl records shaped like the
trainer's (per-language losses whose token-weighted mean is the overall loss), optionally a
resume that logs some steps again, mixture.json and config.yaml."""

from __future__ import annotations

import json
import math
from pathlib import Path

LANGS = {"es": 0.30, "ca": 0.25, "eu": 0.15, "gl": 0.10, "en": 0.15, "code": 0.05}


def train_record(step: int, offset: float = 0.0, gpu: bool = False, interval: int = 2) -> dict:
    rec = {"kind": "train", "step": step}
    lang_loss = {lang: 8.0 - math.log1p(step) * (0.5 + i / 10) + offset for i, lang in enumerate(LANGS)}
    lang_tokens = {lang: int(1024 * interval * share) + step % 7 for lang, share in LANGS.items()}
    total = sum(lang_tokens.values())
    rec.update({
        "loss": sum(lang_loss[lang] * lang_tokens[lang] for lang in LANGS) / total,
        "lr": 3e-3 * min(1.0, step / 10),
        "grad_norm": 1.0 / (1 + step / 10) + offset,
        "tokens_per_sec": 5000.0 + 10 * step,
        "consumed_samples": 8 * step,
        "consumed_tokens": 1024 * step,
        "step_time": 0.2 + step / 1000,
    })
    for lang in LANGS:
        rec[f"loss/{lang}"] = lang_loss[lang]
        rec[f"tokens/{lang}"] = lang_tokens[lang]
    if gpu:
        rec.update({"tflops_per_gpu": 400.0 + step, "mfu": 0.40 + step / 1000, "peak_mem_gb": 60.5})
    return rec


def valid_record(step: int, offset: float = 0.0) -> dict:
    rec = {"kind": "valid", "step": step}
    for i, lang in enumerate(LANGS):
        loss = 8.2 - math.log1p(step) * (0.45 + i / 10) + offset
        rec[f"loss/{lang}"] = loss
        rec[f"ppl/{lang}"] = math.exp(loss)
    rec["loss"] = sum(rec[f"loss/{lang}"] for lang in LANGS) / len(LANGS)
    rec["ppl"] = math.exp(rec["loss"])
    return rec


def records(first: int, last: int, interval: int = 2, eval_interval: int = 6, offset: float = 0.0, gpu: bool = False) -> list[dict]:
    out = []
    for step in range(first, last + 1):
        if step % interval == 0:
            out.append(train_record(step, offset, gpu, interval))
        if eval_interval and step % eval_interval == 0:
            out.append(valid_record(step, offset))
    return out


def write_metrics(run_dir: Path, recs: list[dict], tail: str = "") -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "metrics.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for rec in recs:
            f.write(json.dumps(rec) + "\n")
        f.write(tail)
    return path


CONFIG_YAML = """run:
  dir: {dir}
  name: synthetic
model:
  name: tiny
  num_layers: 4
  hidden_size: 128
  ffn_hidden_size: 352
  num_attention_heads: 4
  num_query_groups: 2
parallel:
  tp: 1
  pp: 1
  cp: 1
  vpp: null
optim:
  lr: 0.003
  min_lr: 0.0003
  warmup_steps: 10
  decay_style: cosine
  weight_decay: 0.1
  clip_grad: 1.0
train:
  steps: {steps}
  global_batch_size: 8
  micro_batch_size: 4
  seq_length: 128
  eval_interval: 6
  eval_iters: 2
data:
  sources: []
  multipliers: {{es: 2.0, ca: 2.0, eu: 2.0, gl: 2.0, code: 0.5}}
logging:
  interval: 2
"""


def make_run(run_dir: Path, recs: list[dict], steps: int = 20, mixture: bool = True, config: bool = True, tail: str = "") -> Path:
    write_metrics(run_dir, recs, tail)
    if mixture:
        (run_dir / "mixture.json").write_text(json.dumps({"planned_shares": LANGS}))
    if config:
        (run_dir / "config.yaml").write_text(CONFIG_YAML.format(dir=run_dir, steps=steps))
    return run_dir
