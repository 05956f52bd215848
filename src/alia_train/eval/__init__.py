"""`alia-eval`: lm-evaluation-harness on a run's checkpoints, scores in RUN_DIR/evals.jsonl.

The pieces: `task_sets` (named sets, configs/eval/), `checkpoints` (which checkpoints, checked),
`hf_model` (the checkpoint as a transformers model, in this process), `harness` (lm-eval's
task index, datasets, evaluation, results as rows), `results` (evals.jsonl appends, what is
scored already, the run-directory lock), `wandb_log` (scores to W&B at their step) and `runner`
(the loop). `tasks/` holds the shipped lm-eval task `alia_langid` (built by `langid_items`).
The checkpoint is read through alia_train.convert, which the command (cli/eval.py) passes in.
"""

from alia_train.eval.errors import EvalError
from alia_train.eval.runner import EvalOptions, EvalSummary, run_eval

__all__ = ["EvalError", "EvalOptions", "EvalSummary", "run_eval"]
