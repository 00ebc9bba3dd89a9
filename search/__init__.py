"""The search engine: config, data, training, study files, Optuna search, MLflow tracking,
retrain, ablations and reports. No click here: ``cli.py`` is the command line."""
