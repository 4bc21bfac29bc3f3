#!/usr/bin/env bash
# The whole test suite: lint, type-check and build, then every test tier in order.
set -euo pipefail
cd "$(dirname "$0")/.."
npm run lint
npm run build
node --test --test-concurrency=2 --test-reporter=spec \
  $(find dist/src dist/test -name '*.test.js' | sort)
