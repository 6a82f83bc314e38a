import subprocess
import sys

from stripesync import __version__


def test_version_flag_prints_the_version():
    out = subprocess.run(
        [sys.executable, "-m", "stripesync", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0
    assert out.stdout.strip() == f"stripesync {__version__}"
