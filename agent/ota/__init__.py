"""Signed over-the-air model updates.

Workstation side: ``edge-registry`` (a TUF repository of model versions, ``repository.py`` on
``tuf_repository.py``, and ``registry_cli.py``) and ``edge-fleet`` (the fleet's update state from
the broker, ``fleet_cli.py``).
Device side: the updater (``updater.py``; start-up recovery in ``startup.py``, fetching in
``fetch.py``, the trial in ``trial.py``, state and events in ``reporting.py``) with its store of versioned model directories
(``store.py``), its crash-safe journal (``journal.py``), resumable downloads (``download.py``)
and the candidate self-test (``selftest.py``).

The contract between the two sides lives in ``versions.py`` (version order, rollout buckets)
and ``targets.py`` (what a target's signed custom metadata says).
"""
