"""The zoo's entry point: ``python run.py method=... data=... net=... trainer=...`` (installed: ``zoo-run``).

Every error prints as one paragraph naming the key or file and the fix (``zoo.app.errors.describe``) and
exits with 1; set ``HYDRA_FULL_ERROR=1`` for the traceback. A run stopped by SIGTERM or SIGINT exits
with 143 or 130 after one line naming its last checkpoint and the command that resumes it
(``zoo.app.resume.Interrupted``); Ctrl-C before training (while torch imports, say) ends with one line
and 130 too. Path values (``ckpt=``, ``resume=``, ``hydra.run.dir=``, ...) are quoted for Hydra's
parser first, so a path holding ``=``, spaces or non-ASCII letters is read as given
(``zoo.app.command_line``). The configs are the checkout's ``conf/`` or, installed from a wheel, the
``conf`` package (``zoo.app.configs``); ``hydra.searchpath=[file://my_confs]`` adds a user's own.
What the run prints, its error paragraph included, is kept in the run folder's ``run.log`` as plain text
(``zoo.app.terminal_log``).
"""

from __future__ import annotations

import os
import sys

USER_FULL_ERROR = "ZOO_USER_HYDRA_FULL_ERROR"
"""The user's ``HYDRA_FULL_ERROR``, kept while the zoo sets Hydra's to 1 to format errors itself."""


def main() -> None:
    """``run`` with Ctrl-C at any moment (imports included) said in one line, exit code 130."""
    try:
        run()
    except KeyboardInterrupt:
        print("interrupted by SIGINT outside training (nothing to resume from this step)", file=sys.stderr, flush=True)
        sys.exit(130)


def run() -> None:
    """Hydra's main with Hydra's errors re-raised (``HYDRA_FULL_ERROR=1`` inside) and said in one paragraph.

    The imports are here, not at the top, so that ``main`` catches a Ctrl-C during their seconds.
    """
    os.environ.setdefault(USER_FULL_ERROR, os.environ.get("HYDRA_FULL_ERROR", "0"))
    os.environ["HYDRA_FULL_ERROR"] = "1"
    from zoo.app import terminal_log

    terminal_log.install()  # first: Hydra's and Lightning's log handlers keep the streams they find
    import hydra
    from omegaconf import DictConfig

    from zoo.app import batch_size
    from zoo.app.command_line import quote_paths
    from zoo.app.configs import hydra_config_path
    from zoo.app.resume import Interrupted
    from zoo.app.run_folder import Escalated
    from zoo.app.sweep_names import record_swept_keys, register

    @hydra.main(config_path=hydra_config_path(), config_name="config", version_base="1.3")
    def hydra_main(cfg: DictConfig) -> float | None:
        from zoo.app.train import main as train

        return train(cfg)

    sys.argv[1:] = quote_paths(sys.argv[1:])
    register()
    batch_size.register()
    record_swept_keys(sys.argv[1:])
    try:
        hydra_main()
    except Interrupted as stop:
        print(stop, file=sys.stderr, flush=True)
        sys.exit(stop.exit_code)
    except Escalated as escalated:
        fail(escalated.error)
    except Exception as error:
        fail(error)
    finally:
        terminal_log.stop()


def fail(error: Exception) -> None:
    """Print ``error`` as one paragraph and exit with 1 (or re-raise it under the user's ``HYDRA_FULL_ERROR=1``)."""
    if os.environ[USER_FULL_ERROR] == "1":
        raise error
    from zoo.app.errors import describe

    print(f"error: {describe(error, sys.argv[1:])}\n(set HYDRA_FULL_ERROR=1 for the traceback)", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
    main()
