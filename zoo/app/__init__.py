"""The application: what ``run.py`` uses, on top of the library (``zoo``'s other packages).

Composing configs (``configs``) and checking them (``config_checks``, ``config_ranges``), building and
fitting a run (``train``), the tasks on a checkpoint (``tasks``), resuming (``resume``) and the run folder
(``run_folder``), studies (``study``, ``studies/``), errors said in one paragraph (``errors``), the logged
hyperparameters (``hparams``), the terminal summary (``report``) and the terminal's output kept in the run
folder's ``run.log`` (``terminal_log``). Nothing in the library imports it
(an import-linter contract in the suite); a notebook imports the library, ``run.py`` this.
"""
