#!/usr/bin/env bash
# Installs perf_analyzer's system library and genai-perf's own venv. (filled in by the bench work)
exit 0
