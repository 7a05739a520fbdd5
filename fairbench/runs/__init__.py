"""The run folder, ``<runs-dir>/<run_id>/``: one home for writing (:mod:`.store`), owning
(:mod:`.lease`), reading (:mod:`.record`, :mod:`.catalog`), resuming (:mod:`.checkpoint`), its
lifecycle under ``--force`` (:mod:`.lifecycle`) and a suite job's state (:mod:`.job_state`).

It holds config.json (the run id is its hash), environment.json, status.json (running | done |
failed | incomplete), history.json, metrics.json, predictions_{val,test}.csv, checkpoint.pt
(selected weights), predictions_test-epoch<N>.csv (other rules' epochs), last.pt (resume state)
and evaluations/<dataset>-<split>/; docs/results-files.md describes each file.
"""
