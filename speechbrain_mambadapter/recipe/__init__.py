"""What the recipes share: the Brain base class, data preparation, optimisers and schedules,
metrics, DDP helpers and the graph-mode switch. The recipes' own logic (forward, loss, metrics,
data pipeline) lives in each recipe's ``train.py``."""
