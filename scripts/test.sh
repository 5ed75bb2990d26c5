#!/usr/bin/env bash
# Run the whole test suite (installs the environment first if needed). Extra arguments go to pytest.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec python -m pytest "$@"
