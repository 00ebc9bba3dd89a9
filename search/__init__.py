"""The search engine, one sub-package per question (see README, "Development"): training/
(one config trained and scored), study/ (what a study file means), store/ (where state
lives), engine/ (how a search runs), retrain and ablation, reporting/ (how finished state is
shown) and perf/ (how fast). No click here except ``cli_args`` and ``cli_setup``, the option
layer of cli.py and how it runs."""
