"""The chaos suite: many jobs through folders and the queue while the daemon, the broker
and the fake providers are made to fail at moments chosen by a printed seed; then the
reliability invariants are checked and printed as figures (reliability R1, R6, R12, R15,
R17, R19, R20). With ``cluster=N`` the same run has N daemons share one PostgreSQL journal,
and daemons are also paused past their leases and the database restarted.
``test_chaos.py`` is the CI variant; ``tests/chaos/long_run.py`` runs it longer."""
