"""Judging files: tolerances, the sweep (one answer to "which grids does it serve"), a user's file, drift, the gate."""
