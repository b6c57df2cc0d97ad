#!/usr/bin/env bash
# The dependency policy of deny.toml: licenses, bans and sources always; RustSec advisories
# whenever the advisory database (on GitHub) can be fetched from this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
cargo deny --locked check licenses bans sources
if cargo deny fetch db >/dev/null 2>&1; then
  cargo deny --locked check advisories
else
  echo "deny: the RustSec advisory database cannot be fetched from here; advisories not checked" >&2
fi
