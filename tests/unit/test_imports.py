"""What importing the package and its CLI costs, and the lazy NotFittedError."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest


def test_the_cli_imports_no_numeric_library():
    # `ensemble --help`, a usage error and a Ray job's driver start in ~0.2 s;
    # scikit-learn alone took ~1.5 s (it came in with NotFittedError).
    code = (
        "import sys, ensemble, ensemble.cli, ensemble.exceptions\n"
        "heavy = ('sklearn', 'scipy', 'numpy', 'pandas', 'ray', 'torch', 'pyarrow')\n"
        "print(','.join(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""


def test_not_fitted_error_is_ours_and_scikit_learns():
    from sklearn.exceptions import NotFittedError as SkNotFitted

    import ensemble
    from ensemble.exceptions import EnsembleError, NotFittedError

    assert ensemble.NotFittedError is NotFittedError
    assert issubclass(NotFittedError, EnsembleError)
    assert issubclass(NotFittedError, SkNotFitted)
    assert issubclass(NotFittedError, ValueError)  # as scikit-learn's is
    err = pickle.loads(pickle.dumps(NotFittedError("not fitted")))
    assert type(err) is NotFittedError and str(err) == "not fitted"
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        from ensemble import exceptions

        exceptions.Nope  # noqa: B018


def test_threads_asking_at_once_get_one_not_fitted_error():
    # Made on first use: two classes would make `except NotFittedError` miss.
    code = (
        "import threading\n"
        "from ensemble import exceptions\n"
        "go, got = threading.Barrier(8), []\n"
        "def ask():\n"
        "    go.wait()\n"
        "    got.append(exceptions.NotFittedError)\n"
        "ts = [threading.Thread(target=ask) for _ in range(8)]\n"
        "[t.start() for t in ts]\n"
        "[t.join() for t in ts]\n"
        "print(len(got), len({id(c) for c in got}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["8", "1"]
