"""Tooling around the kit, kept out of the teaching package: timing (``bench``), the bench
tables (``report``) and profile tuning (``tune_profile``). Runs from a checkout of the kit."""
