#!/usr/bin/env bash
# Prepare this machine for datarun's tests: an OpenSSH server binary, an unprivileged
# login user, a Python with the harness's libraries that this user can run, GNU time (the
# measurement test's outside reference), Debian's chromium (the site's pages are
# checked in a real browser, headless), and Slurm with munge (a single-node Slurm).
#
# Run as root before pytest (`make test`, .ci/run). Idempotent, and quiet when all is
# there already. The tests start their own sshd processes on 127.0.0.1; this script only
# installs what they need and starts no service.
set -euo pipefail

TEST_USER="datarun-test"
HOST_PYTHON="/opt/datarun-test-python"
HOST_PACKAGES=(numpy pandas scikit-learn psutil joblib)

say() { echo "setup-test-env: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
    [ -x /usr/sbin/sshd ] || say "not root: cannot install openssh-server (the SSH tests will skip)"
    id "$TEST_USER" >/dev/null 2>&1 || say "not root: cannot create the user $TEST_USER (tests needing it will skip)"
    [ -x "$HOST_PYTHON/bin/python" ] || say "not root: cannot create $HOST_PYTHON (tests needing it will skip)"
    command -v chromium >/dev/null 2>&1 || say "not root: cannot install chromium (the browser tests will skip)"
    [ -x /usr/bin/time ] || say "not root: cannot install GNU time (tests/test_harness_measure.py will skip)"
    say "not root: tests/test_slurm_executor.py will skip (a single-node Slurm needs root)"
    exit 0
fi

if [ ! -x /usr/sbin/sshd ]; then
    say "installing openssh-server"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends openssh-server openssh-client >/dev/null
    # The package's service is not needed: the tests run their own sshd on free ports.
    if command -v systemctl >/dev/null 2>&1; then
        systemctl disable --now ssh >/dev/null 2>&1 || true
    fi
fi

if ! command -v chromium >/dev/null 2>&1; then
    say "installing chromium"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

# Slurm and munge: tests/test_slurm_executor.py starts a single-node Slurm of its own (its
# own config, keys and ports under a temporary folder, daemons stopped by PID). The
# packages' services are not started (no systemd here; policy-rc.d refuses them anyway).
if ! command -v slurmctld >/dev/null 2>&1 || ! command -v slurmd >/dev/null 2>&1 \
        || ! command -v munged >/dev/null 2>&1 || ! command -v sbatch >/dev/null 2>&1; then
    say "installing slurmctld, slurmd, slurm-client and munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi

# GNU time: tests/test_harness_measure.py checks the harness's CPU and memory figures
# against `/usr/bin/time -v`, the one outside tool that measures the same work.
if [ ! -x /usr/bin/time ]; then
    say "installing GNU time"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends time >/dev/null
fi

# sshd refuses to start without its privilege-separation folder.
install -d -m 0755 /run/sshd

if ! id "$TEST_USER" >/dev/null 2>&1; then
    say "creating the user $TEST_USER"
    useradd -m -s /bin/sh "$TEST_USER"
fi
# With `UsePAM no` a locked account ('!' in /etc/shadow) is refused; '*' is unlocked
# but has no password, so only the tests' keys log in.
if [ "$(getent shadow "$TEST_USER" | cut -d: -f2)" != "*" ]; then
    usermod -p '*' "$TEST_USER"
fi

# The organiser's venv lives under /root, which the test user cannot read: give the host
# side its own interpreter with the harness's libraries.
if ! "$HOST_PYTHON/bin/python" -c "import numpy, pandas, sklearn, psutil, joblib" >/dev/null 2>&1; then
    say "creating $HOST_PYTHON with ${HOST_PACKAGES[*]}"
    if [ ! -x "$HOST_PYTHON/bin/python" ]; then
        if ! /usr/bin/python3 -c "import ensurepip" >/dev/null 2>&1; then
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq >/dev/null
            apt-get install -y -qq python3-venv >/dev/null
        fi
        /usr/bin/python3 -m venv "$HOST_PYTHON"
    fi
    "$HOST_PYTHON/bin/python" -m pip install -q --disable-pip-version-check "${HOST_PACKAGES[@]}"
    chmod -R a+rX "$HOST_PYTHON"
fi
