"""The crash loop of crashloop.py under pytest: 50 iterations of (write storm,
SIGKILL of the cell at a random moment, restart, verify); set
METROCELL_CRASHLOOP_ITERATIONS for more, or run crashloop.py --long."""

import os

import crashloop


def test_crashloop(procs, tmp_path, metrocell_bin):
    n = int(os.environ.get("METROCELL_CRASHLOOP_ITERATIONS", "50"))
    acked, problems = crashloop.run(procs, tmp_path, metrocell_bin, n)
    assert not problems, "\n".join(problems[:20])
    assert acked >= 5 * n, "the storms acknowledged too few writes to mean anything"
