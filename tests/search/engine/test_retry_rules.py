"""Which lost or interrupted trials are continued, and from which checkpoint folder: on a
real Optuna study in memory, with the coordination and resume code the workers run."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from search.engine.coordination import (
    MAX_INTERRUPTED_NO_PROGRESS,
    MAX_NO_PROGRESS,
    NO_PROGRESS_ATTR,
    PROGRESS_ATTR,
    RESUMED_AT_ATTR,
    RETRY_ATTR,
    retry_lost_trial,
)
from search.engine.resume import _lost_folder


def _study() -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.create_study()


def _lost(study: optuna.Study, *, retry_of=None, started=None, progress=None, unstarted=0):
    """A trial that ran (suggested x), then its worker died: FAIL, as the heartbeat leaves it."""
    if retry_of is None:
        trial = study.ask()
    else:
        study.enqueue_trial(
            {"x": 0.5}, user_attrs={RETRY_ATTR: retry_of, NO_PROGRESS_ATTR: unstarted}
        )
        trial = study.ask()
    trial.suggest_float("x", 0, 1)
    if started is not None:
        study._storage.set_trial_system_attr(trial._trial_id, RESUMED_AT_ATTR, started)
    if progress is not None:
        study._storage.set_trial_system_attr(trial._trial_id, PROGRESS_ATTR, progress)
    study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    return study._storage.get_trial(trial._trial_id)


def _retries_of(study: optuna.Study, number: int) -> list:
    return [t for t in study.get_trials() if t.user_attrs.get(RETRY_ATTR) == number]


def test_a_lost_trial_is_retried_once_even_if_found_lost_twice():
    study = _study()
    lost = _lost(study, started=[0, 0], progress=[2, 0])
    retry_lost_trial(study, lost)
    retry_lost_trial(study, lost, interrupted=True)  # e.g. interrupted, then killed
    assert len(_retries_of(study, lost.number)) == 1


@pytest.mark.parametrize(
    "started, progress, before, interrupted, continued",
    [
        ([2, 0], [3, 5], 5, False, True),  # made progress: continued, however many before
        ([2, 0], [2, 0], 0, False, True),  # killed before its next checkpoint: once more
        ([2, 0], [2, 0], MAX_NO_PROGRESS, False, False),  # again and again: a crash loop
        ([2, 0], [2, 0], MAX_NO_PROGRESS, True, True),  # stopped by a signal: lost nothing
        # ... but stopped every time before saving anything: not forever
        ([2, 0], [2, 0], MAX_NO_PROGRESS + MAX_INTERRUPTED_NO_PROGRESS, True, False),
        ([2, 0], [3, 0], 9, True, True),  # it saved something: the count starts again
        (None, None, 0, False, True),  # died before it took its checkpoint over
    ],
)
def test_a_lost_retry_is_continued_only_if_it_could_still_get_somewhere(
    started, progress, before, interrupted, continued
):
    study = _study()
    first = _lost(study, started=[0, 0], progress=[2, 0])
    retry = _lost(
        study, retry_of=first.number, started=started, progress=progress, unstarted=before
    )
    retry_lost_trial(study, retry, interrupted=interrupted)
    assert bool(_retries_of(study, retry.number)) == continued


@pytest.mark.parametrize("resumed", [False, True], ids=["never started", "resumed, saved nothing"])
def test_retries_that_save_nothing_stop_after_two_in_a_row(resumed):
    study = _study()
    number = _lost(study, started=[0, 0], progress=[1, 0]).number
    chain = 0
    where = {"started": [1, 0], "progress": [1, 0]} if resumed else {}
    for unstarted in range(5):
        lost = _lost(study, retry_of=number, unstarted=unstarted, **where)
        retry_lost_trial(study, lost)
        if not _retries_of(study, lost.number):
            break
        (nxt,) = _retries_of(study, lost.number)
        study._storage.set_trial_state_values(
            nxt._trial_id, TrialState.FAIL
        )  # drop the waiting one
        number, chain = lost.number, chain + 1
    assert chain == MAX_NO_PROGRESS


def test_a_retry_finds_the_folder_up_the_chain_of_retries_that_never_started(tmp_path):
    study = _study()
    first = _lost(study, started=[0, 0], progress=[2, 0])
    dead = _lost(study, retry_of=first.number)  # died before renaming trial-0
    (tmp_path / f"trial-{first.number}").mkdir()
    assert _lost_folder(tmp_path, study, dead.number) == tmp_path / f"trial-{first.number}"
    assert _lost_folder(tmp_path, study, None) is None
