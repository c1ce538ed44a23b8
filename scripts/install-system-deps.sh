#!/usr/bin/env bash
# Installs what the test-suite needs outside Python: Debian's chromium (Playwright drives it,
# no browser download) and, into an ignored folder, the `vue` npm package for the Vue example test and the
# `ai` package (with react, react-dom, @ai-sdk/react and esbuild) for the useChat tests of /api/chat.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  echo "installing Debian chromium (for the browser tests)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

if ! command -v node >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null
fi

if [ ! -f tests/.vendor/node_modules/vue/dist/vue.esm-browser.js ]; then
  echo "installing vue (npm) into tests/.vendor for the Vue example test"
  mkdir -p tests/.vendor
  npm install --silent --no-audit --no-fund --prefix tests/.vendor vue@3 >/dev/null
fi

if [ ! -f tests/.vendor/node_modules/ai/dist/index.js ] || [ ! -f tests/.vendor/node_modules/@ai-sdk/react/package.json ]; then
  echo "installing ai, @ai-sdk/react, react, react-dom, esbuild (npm) into tests/.vendor for the useChat tests"
  mkdir -p tests/.vendor
  npm install --silent --no-audit --no-fund --prefix tests/.vendor ai@7 @ai-sdk/react@4 react@19 react-dom@19 esbuild >/dev/null
fi
