"""The `prefixlm-log` callback: one JSON line per training event in the run directory."""

import json
import os


class RunLog:
    def __init__(self):
        self.path = None

    def _write(self, event):
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(event) + "\n")

    def on_train_begin(self, info):
        self.path = os.path.join(info["out"], "prefixlm-log.jsonl")
        keys = ("family", "family_options", "block_size", "global_batch", "optimizer_steps", "world_size")
        trainable = sum(p.numel() for p in info["model"].parameters() if p.requires_grad)
        self._write({"event": "begin", "trainable_parameters": trainable, **{k: info[k] for k in keys}})

    def on_log(self, metrics):
        if "train/loss" in metrics:
            self._write({"event": "log", "step": metrics["step"], "loss": metrics["train/loss"]})

    def on_train_end(self, info):
        self._write({"event": "end", "steps": info["steps"], "out": info["out"]})
