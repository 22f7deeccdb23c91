"""Host-side tools (CPython 3.11+): local AWS IoT stand-in, provisioning, deploy, flash, bench."""
