"""The pytest glue: hooks, fixtures, settings, the claims board and catalogue, report and snapshots."""
