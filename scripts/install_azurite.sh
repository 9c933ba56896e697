#!/usr/bin/env bash
# Installs the Azurite Blob emulator (npm) for the Azure tests. (filled in by the Azure work)
exit 0
