"""`apflow ...` with the test executors of tests/support.py registered (test_sleep,
test_journal, ...), for the HTTP tests that need a real server on a real port:

    python tests/api/server_process.py serve --port 8123 [--no-scheduler]

Everything else is the real command line: settings from APFLOW_* and APFLOW_HOME.
"""

from __future__ import annotations

import support  # noqa: F401  (registers the test executors)

from apflow_server.cli.main import main

if __name__ == "__main__":
    main()
