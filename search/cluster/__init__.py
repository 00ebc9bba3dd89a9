"""Running a study on a SLURM cluster: the batch scripts (a job array of workers, a final
retrain after them, an MLflow server job) and their submission. Above the engine: it
calls ``cli.py search`` through the scripts; the engine never imports it."""

from search.cluster.scripts import SlurmOptions
from search.cluster.submission import submit, time_limit_seconds, write_scripts

__all__ = ["SlurmOptions", "submit", "time_limit_seconds", "write_scripts"]
