"""The chaos suite: many jobs through folders and the queue while the daemon, the broker
and the fake providers are made to fail at moments chosen by a printed seed; then the
reliability invariants are checked and printed as figures (reliability R1, R6, R12, R15,
R17, R19, R20). ``test_chaos.py`` is the CI variant; ``bench/chaos.py`` runs it longer."""
